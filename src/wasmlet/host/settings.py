"""Config and secrets as guests read them: the function's own, nothing else."""

from __future__ import annotations

from wasmlet.host.context import HostContext, HostError


def _name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HostError("config and secret names are UTF-8 text") from None


def config_get(ctx: HostContext, key: bytes) -> bytes | None:
    """A value of the function's config (visible in its spec), or nothing."""
    value = ctx.spec.config.get(_name(key))
    return value.encode() if value else None


def secret(ctx: HostContext, name: str) -> str | None:
    services = ctx.services
    if services is None or services.secrets is None:
        return None
    try:
        return services.secrets.get(ctx.function, name)
    except Exception as exc:  # a key that cannot decrypt: fail the call, say nothing more
        raise HostError(f"secret {name!r} cannot be read ({exc.__class__.__name__})") from None


def secret_get(ctx: HostContext, key: bytes) -> bytes | None:
    """A secret of the function (set through the API, encrypted at rest), or nothing."""
    value = secret(ctx, _name(key))
    return value.encode() if value else None
