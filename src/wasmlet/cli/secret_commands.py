"""`wasmlet secret` commands (filled in by the capability work)."""

from __future__ import annotations
