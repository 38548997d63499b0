"""The one error type the relay raises toward a client.

Each client dialect renders a ``RelayError`` in its own envelope (``gateway/dialects``).
"""

from __future__ import annotations


class RelayError(Exception):
    """A failure to tell the client about, with the HTTP status and a machine-readable code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        error_type: str = "",
        retry_after: int | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.error_type = error_type or _default_type(status)
        self.retry_after = retry_after
        self.details = details  # extra fields for the envelope's error object (model, reset_time, group…)


def _default_type(status: int) -> str:
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "invalid_request_error",
        429: "rate_limit_exceeded",
        504: "timeout_error",
    }.get(status, "api_error" if status < 500 else "upstream_error")
