"""Responses-API upstreams (``codex-api-key`` channels): always streamed, aggregated for non-stream clients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from channels_app.executors.base import Executor, UpstreamCall
from channels_app.models import ProviderKind

if TYPE_CHECKING:
    from channels_app.scheduler import Route

# The Codex identity profile (providers spec R3); editable profiles arrive with the OAuth providers.
CODEX_USER_AGENT = "codex-tui/0.146.0 (Mac OS 26.5.0; arm64) iTerm.app/3.6.10 (codex-tui; 0.146.0)"


class CodexExecutor(Executor):
    kinds = (ProviderKind.CODEX_API_KEY,)
    family = "responses"
    always_stream = True

    def build(self, route: Route, body: bytes, stream: bool, *, betas: Sequence[str] = ()) -> UpstreamCall:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "User-Agent": CODEX_USER_AGENT,
        }
        if route.secret:
            headers["Authorization"] = f"Bearer {route.secret}"
        return UpstreamCall(
            method="POST",
            url=f"{route.channel.base_url}/responses",
            headers=self.with_channel_headers(route, headers),
            body=body,
            stream=True,
            proxy_url=route.proxy_url,
        )
