"""Calling conventions: each adapts one HTTP-shaped Invocation to a guest and back."""

from wasmlet.abi.base import Abi, Invocation, Outcome
from wasmlet.abi.core import CoreAbi
from wasmlet.abi.extism.plugin import ExtismAbi
from wasmlet.abi.otoroshi.abi import OtoroshiAbi
from wasmlet.abi.wasi_cgi import WasiCgiAbi
from wasmlet.errors import InvalidRequest

ABIS: dict[str, Abi] = {
    abi.name: abi for abi in (CoreAbi(), WasiCgiAbi(), ExtismAbi(), OtoroshiAbi())
}


def get_abi(name: str) -> Abi:
    try:
        return ABIS[name]
    except KeyError:
        known = ", ".join(sorted(ABIS))
        raise InvalidRequest(f"unknown abi {name!r}; known: {known}") from None


__all__ = ["ABIS", "Abi", "Invocation", "Outcome", "get_abi"]
