"""The platform's error vocabulary: one stable code and HTTP status per kind of failure.

Every layer raises `WasmletError` (or a subclass); the API turns it into
`{"error": {"code": ..., "message": ...}}` with the matching status.
"""

from __future__ import annotations


class WasmletError(Exception):
    code = "internal"
    status = 500

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        logs: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}
        # Guest output captured before the failure, kept for the invocation record.
        self.logs = logs

    def to_body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class NotFound(WasmletError):
    code = "not_found"
    status = 404


class InvalidRequest(WasmletError):
    """Malformed input (400) or well-formed input that cannot be accepted (422)."""

    code = "invalid_request"
    status = 422


class PayloadTooLarge(WasmletError):
    code = "payload_too_large"
    status = 413


class Unauthorized(WasmletError):
    code = "unauthorized"
    status = 401


class Forbidden(WasmletError):
    code = "forbidden"
    status = 403


class GuestTrap(WasmletError):
    code = "guest_trap"
    status = 500


class GuestError(WasmletError):
    """The guest ran to completion but reported a failure."""

    code = "guest_error"
    status = 500


class Timeout(WasmletError):
    code = "timeout"
    status = 504


class MemoryLimit(WasmletError):
    code = "memory_limit"
    status = 500


class Overloaded(WasmletError):
    code = "overloaded"
    status = 503

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class Conflict(WasmletError):
    code = "conflict"
    status = 409


class RateLimited(WasmletError):
    """A key or namespace is over its request rate or concurrency quota."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class QuotaExceeded(WasmletError):
    """A namespace is at its limit of functions or stored module bytes. 429 like the rate
    limits (Google APIs answer exhausted quotas the same way), with a Retry-After that
    says: not before something is deleted or the quota raised."""

    code = "quota_exceeded"
    status = 429

    def __init__(self, message: str, *, retry_after: int = 60) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
