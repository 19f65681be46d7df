"""Function names: the one rule every entry point checks before a name reaches SQL or a path.

A function belongs to a namespace (a tenant). Inside the platform it is known by its
qualified name: the bare name in the `default` namespace, `<namespace>~<name>` in any other
(`~` can appear in neither part, so the split is unambiguous). The API qualifies the names
a caller gives with the caller's namespace (api/access.py).
"""

from __future__ import annotations

import re

from wasmlet.errors import InvalidRequest

DEFAULT_NAMESPACE = "default"
SEPARATOR = "~"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9\-_.]{0,62}")
NAMESPACE_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def is_valid_bare_name(name: str) -> bool:
    return bool(NAME_RE.fullmatch(name)) and ".." not in name


def is_valid_name(name: str) -> bool:
    """A bare name, or a qualified `<namespace>~<name>`."""
    namespace, sep, bare = name.rpartition(SEPARATOR)
    if sep and not (NAMESPACE_RE.fullmatch(namespace) and namespace != DEFAULT_NAMESPACE):
        return False
    return is_valid_bare_name(bare)


def qualify(namespace: str, name: str) -> str:
    return name if namespace == DEFAULT_NAMESPACE else f"{namespace}{SEPARATOR}{name}"


def split(qualified: str) -> tuple[str, str]:
    """(namespace, bare name) of a qualified name."""
    namespace, sep, bare = qualified.rpartition(SEPARATOR)
    return (namespace, bare) if sep else (DEFAULT_NAMESPACE, bare)


def namespace_of(qualified: str) -> str:
    return split(qualified)[0]


def check_name(name: str) -> str:
    if not isinstance(name, str) or not is_valid_name(name):
        raise InvalidRequest(
            f"invalid function name {name!r}: use 1-63 characters of a-z 0-9 - _ . "
            "starting with a letter or digit",
            status=422,
        )
    return name
