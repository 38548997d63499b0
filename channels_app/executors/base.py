"""What every executor shares: the upstream error tree and the call it builds.

Executors raise ``UpstreamError`` carrying data (status, retryable, cool-down), so the
scheduler decides failover from data, not from string matching.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from channels_app.executors.retry_after import body_seconds, header_seconds

if TYPE_CHECKING:
    from channels_app.scheduler import Route

RETRYABLE_STATUSES = frozenset({403, 408, 429, 500, 502, 503, 504})


class UpstreamError(Exception):
    """The upstream failed; ``status`` is what the client is told."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        upstream_status: int | None = None,
        retryable: bool = False,
        cooldown_s: float | None = None,
        error_type: str = "upstream_error",
        detail: str = "",
        scope: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.upstream_status = upstream_status
        self.retryable = retryable
        self.cooldown_s = cooldown_s
        self.error_type = error_type
        self.detail = detail  # the start of the upstream's error body, for the scheduler's judgement
        # What the failure says about whom (providers spec §14.2): "" = this model on this credential;
        # "credential" = every model of the credential; "request" = the request itself, cool nothing.
        self.scope = scope


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time."""

    def __init__(self, message: str) -> None:
        super().__init__(504, message, retryable=True, error_type="timeout_error")


class UpstreamUnreachable(UpstreamError):
    """No connection could be made (refused, DNS, TLS, proxy)."""

    def __init__(self, message: str) -> None:
        super().__init__(502, message, retryable=True, error_type="upstream_unreachable")


@dataclass(slots=True)
class UpstreamCall:
    """One HTTP request to an upstream, ready to send."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool
    proxy_url: str = ""
    params: dict[str, str] = field(default_factory=dict)


def message_from_body(body: bytes) -> str:
    """The human-readable message of an upstream error body, whatever its family's shape."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return text[:500] or "(empty response)"
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
    return text[:500]


def classify(status: int, body: bytes, retry_after: str | None) -> UpstreamError:
    """Turn an upstream error response into the error the client and the scheduler see.

    Client mistakes the upstream rejected (400, 404, 413, 422) go back with their status; a
    rate limit goes back as 429; other server failures keep their status (503, 529: spec §1.4)
    except a 500, which the gateway never answers; credential failures are the gateway's
    problem, so the client sees 502 with the upstream's message.
    """
    message = message_from_body(body)
    detail = body[:_DETAIL_BYTES].decode("utf-8", "replace")
    if status in (400, 404, 409, 413, 422):
        return UpstreamError(status, message, upstream_status=status, error_type="invalid_request_error", detail=detail)
    if status == 429:
        return UpstreamError(
            429,
            message,
            upstream_status=status,
            retryable=True,
            cooldown_s=_longest(header_seconds(retry_after), body_seconds(body)),
            error_type="rate_limit_exceeded",
            detail=detail,
        )
    if status in (408, 504):
        return UpstreamError(
            504, message, upstream_status=status, retryable=True, error_type="timeout_error", detail=detail
        )
    relayed = status if 500 < status < 600 else 502
    return UpstreamError(
        relayed, message, upstream_status=status, retryable=status in RETRYABLE_STATUSES, detail=detail
    )


_DETAIL_BYTES = 2048


def _longest(*waits: float | None) -> float | None:
    known = [w for w in waits if w is not None]
    return max(known) if known else None


class Executor(ABC):
    """Builds upstream calls for one provider family.

    ``kinds`` are the channel kinds it serves, ``family`` the wire format those upstreams speak
    (a ``gateway.dialects`` module), and ``always_stream`` says the upstream is called in
    streaming mode even for non-stream clients (the answer is then aggregated).
    """

    kinds: tuple[str, ...] = ()
    family: str = ""
    always_stream: bool = False

    @abstractmethod
    def build(self, route: Route, body: bytes, stream: bool, *, betas: Sequence[str] = ()) -> UpstreamCall:
        """The HTTP request that sends ``body`` (already in this family's format) upstream."""

    def count_tokens(self, route: Route, body: bytes, *, betas: Sequence[str] = ()) -> UpstreamCall | None:
        """The upstream's own token-count call, or None when it has none (count locally)."""
        return None

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        """An error answer as the client and the scheduler see it; providers with their own quota
        signals (Claude's unified windows, Codex's usage limit) refine it."""
        return classify(status, body, headers.get("retry-after"))

    def generate_images(self, route: Route, body: bytes) -> UpstreamCall | None:
        """The upstream's OpenAI Images call for ``body`` (an images request, model rewritten), or None
        when this family has no such endpoint (Gemini draws through ``build``; others cannot draw)."""
        return None

    @staticmethod
    def with_channel_headers(route: Route, headers: dict[str, str]) -> dict[str, str]:
        """Channel-configured headers apply last (provider headers first, as config.yaml defines)."""
        headers.update(route.channel.headers)
        return headers
