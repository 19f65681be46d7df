"""Function names: the rule every entry point applies."""

from __future__ import annotations

import pytest

from wasmlet.errors import InvalidRequest
from wasmlet.names import check_name, is_valid_name

VALID = ["a", "0", "gcd", "hello-world", "my_fn.v2", "a" * 63, "9lives", "x-", "a.b.c"]
INVALID = [
    "",
    "Gcd",  # upper case
    "GCD",
    "-lead",
    "_lead",
    ".hidden",
    "..",
    "a..b",  # traversal-shaped, even mid-name
    "../etc/passwd",
    "a/b",
    "a\\b",
    "a" * 64,  # too long
    "a\x00b",  # NUL
    "a b",
    "a\n",
    "é",
    "a:b",
    "a%2e",
]


@pytest.mark.parametrize("name", VALID)
def test_valid(name: str) -> None:
    assert is_valid_name(name)
    assert check_name(name) == name


@pytest.mark.parametrize("name", INVALID)
def test_invalid(name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(InvalidRequest) as exc:
        check_name(name)
    assert exc.value.status == 422
    assert exc.value.code == "invalid_request"
    assert repr(name) in exc.value.message


@pytest.mark.parametrize("value", [None, 7, b"gcd", ["gcd"]])
def test_non_strings_rejected(value: object) -> None:
    with pytest.raises(InvalidRequest):
        check_name(value)  # type: ignore[arg-type]
