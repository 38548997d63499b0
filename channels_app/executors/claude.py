"""Claude Messages API upstreams (``claude-api-key`` channels)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from channels_app.executors.base import Executor, UpstreamCall, UpstreamError, classify
from channels_app.executors.retry_after import header_seconds, reset_seconds
from channels_app.models import ProviderKind

if TYPE_CHECKING:
    from channels_app.scheduler import Route

ANTHROPIC_VERSION = "2023-06-01"
TOKEN_COUNTING_BETA = "token-counting-2024-11-01"
UNIFIED = "anthropic-ratelimit-unified"
_WINDOWS = ("", "-5h", "-7d", "-7d_oi")  # the overall status, then each window
_FAST_MODE_REFUSALS = (b"usage credits are required for fast mode", b"fast request rejected")


def is_first_party(base_url: str) -> bool:
    """Whether ``base_url`` is Anthropic's own API (https, default port)."""
    parts = urlsplit(base_url)
    return parts.scheme == "https" and parts.hostname == "api.anthropic.com" and parts.port in (None, 443)


class ClaudeExecutor(Executor):
    kinds = (ProviderKind.CLAUDE_API_KEY,)
    family = "claude"

    def _headers(self, route: Route, stream: bool, betas: Sequence[str]) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        headers["Accept"] = "text/event-stream" if stream else "application/json"
        if route.secret:
            headers["x-api-key"] = route.secret
            if not is_first_party(route.channel.base_url):
                # Anthropic-compatible gateways take the key as a bearer token.
                headers["Authorization"] = f"Bearer {route.secret}"
        if betas:
            headers["anthropic-beta"] = ",".join(dict.fromkeys(betas))
        return self.with_channel_headers(route, headers)

    def build(self, route: Route, body: bytes, stream: bool, *, betas: Sequence[str] = ()) -> UpstreamCall:
        return UpstreamCall(
            method="POST",
            url=f"{route.channel.base_url}/v1/messages",
            headers=self._headers(route, stream, betas),
            body=body,
            stream=stream,
            proxy_url=route.proxy_url,
            params={"beta": "true"},
        )

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        """Claude's 429s (providers spec §5.4): a rejected unified window (5 h, 7 d, or the overall
        one unless only the 7d_oi window is out) is the whole credential's, cooled until the latest
        reset of a rejected window plus 1–30 s so credentials do not all return at once; a
        fast-mode credit refusal is the request's own; anything else cools the model."""
        err = classify(status, body, headers.get("retry-after"))
        if status != 429:
            return err
        if any(phrase in body.lower() for phrase in _FAST_MODE_REFUSALS):
            err.scope = "request"
            return err
        rejected = {w for w in _WINDOWS if headers.get(f"{UNIFIED}{w}-status", "").lower() == "rejected"}
        if not rejected:
            return err
        waits = [header_seconds(headers.get("retry-after"))]
        waits += [reset_seconds(headers.get(f"{UNIFIED}{w}-reset")) for w in rejected]
        known = [w for w in waits if w is not None]
        if known:
            err.cooldown_s = max(known) + random.uniform(1, 30)
        if rejected & {"-5h", "-7d"} or ("" in rejected and "-7d_oi" not in rejected):
            err.scope = "credential"
        return err

    def count_tokens(self, route: Route, body: bytes, *, betas: Sequence[str] = ()) -> UpstreamCall | None:
        if not is_first_party(route.channel.base_url):
            return None  # only Anthropic's own API is known to count; others are estimated locally
        return UpstreamCall(
            method="POST",
            url=f"{route.channel.base_url}/v1/messages/count_tokens",
            headers=self._headers(route, False, [*betas, TOKEN_COUNTING_BETA]),
            body=body,
            stream=False,
            proxy_url=route.proxy_url,
            params={"beta": "true"},
        )
