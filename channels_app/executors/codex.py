"""Responses-API upstreams (``codex-api-key`` channels): always streamed, aggregated for non-stream clients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from channels_app.executors.base import Executor, UpstreamCall, UpstreamError, classify
from channels_app.models import ProviderKind

if TYPE_CHECKING:
    from channels_app.scheduler import Route

# The Codex identity profile (providers spec R3); editable profiles arrive with the OAuth providers.
CODEX_USER_AGENT = "codex-tui/0.146.0 (Mac OS 26.5.0; arm64) iTerm.app/3.6.10 (codex-tui; 0.146.0)"
# Bodies that mean "this credential is out of quota or the model is full": a 429 whatever the status.
_QUOTA_BODIES = (b"usage_limit_reached", b"model is at capacity")


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

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        """A used-up plan (``usage_limit_reached``, reset in ``resets_in_seconds`` / ``resets_at``) or
        a model at capacity is a 429 whatever status carried it (providers spec §7.5)."""
        if status != 429 and any(marker in body.lower() for marker in _QUOTA_BODIES):
            status = 429
        return classify(status, body, headers.get("retry-after"))
