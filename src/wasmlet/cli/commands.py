"""Client commands (filled in below)."""
