"""Where guests' outbound HTTP may go: the egress policy.

Entries of an allow list are CIDRs (`127.0.0.0/8`, `::1`) or host names (`api.internal`,
`*.svc.local`).
"""

from __future__ import annotations

import ipaddress
import re

_HOST_RE = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9\-]{0,62}\.)*[a-z0-9\-]{0,63}", re.IGNORECASE)


def check_egress_entries(entries: list[str]) -> list[str]:
    """Refuse (ValueError) an entry that is neither a CIDR nor a host name (pattern)."""
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not _HOST_RE.fullmatch(entry) or len(entry) > 253:
                raise ValueError(
                    f"egress entry {entry!r} is neither a CIDR nor a host name"
                ) from None
    return entries
