"""Function names: the one rule every entry point checks before a name reaches SQL or a path."""

from __future__ import annotations

import re

from wasmlet.errors import InvalidRequest

NAME_RE = re.compile(r"[a-z0-9][a-z0-9\-_.]{0,62}")


def is_valid_name(name: str) -> bool:
    return bool(NAME_RE.fullmatch(name)) and ".." not in name


def check_name(name: str) -> str:
    if not isinstance(name, str) or not is_valid_name(name):
        raise InvalidRequest(
            f"invalid function name {name!r}: use 1-63 characters of a-z 0-9 - _ . "
            "starting with a letter or digit",
            status=422,
        )
    return name
