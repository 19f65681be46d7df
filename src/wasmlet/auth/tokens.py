"""API key tokens: `wl_<key id>_<secret>`, shown once, stored as an argon2 hash.

The key id is public (it names the key in listings and lets the server find its row in one
lookup); the secret is 32 random bytes. argon2 (argon2-cffi) makes a stolen database useless
for recovering secrets, but costs tens of milliseconds, too much per request: after one
successful verification the process remembers a SHA-256 of the secret and compares later
presentations against it in constant time (auth/keys.py).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

PREFIX = "wl"
# Lighter than the library default (the secret has 256 bits of entropy, so the hash only
# has to make offline guessing pointless, not slow down a human-chosen password further).
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@dataclass(frozen=True, slots=True)
class Token:
    key_id: str
    secret: str

    def __str__(self) -> str:
        return f"{PREFIX}_{self.key_id}_{self.secret}"


def new_token() -> Token:
    return Token(secrets.token_hex(6), secrets.token_urlsafe(32))


def parse(raw: str) -> Token | None:
    """The token's parts, or None when it does not have the shape of a wasmlet key."""
    prefix, _, rest = raw.strip().partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or len(key_id) != 12 or not secret or len(secret) > 128:
        return None
    if not all(c in "0123456789abcdef" for c in key_id):
        return None
    return Token(key_id, secret)


def hash_secret(secret: str) -> str:
    return _HASHER.hash(secret)


def verify_secret(stored_hash: str, secret: str) -> bool:
    try:
        return _HASHER.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


def fingerprint(secret: str) -> bytes:
    """What the process keeps of a secret it has verified, for constant-time comparisons."""
    return hashlib.sha256(secret.encode()).digest()
