"""Claude Messages API upstreams (``claude-api-key`` channels)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from channels_app.executors.base import Executor, UpstreamCall
from channels_app.models import ProviderKind

if TYPE_CHECKING:
    from channels_app.scheduler import Route

ANTHROPIC_VERSION = "2023-06-01"
TOKEN_COUNTING_BETA = "token-counting-2024-11-01"


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
