"""`wasmlet doctor` (filled in by the crash-safety work)."""

from __future__ import annotations
