"""OpenAI-compatible upstreams (``openai-compatibility`` channels): Chat Completions and Images over HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from channels_app.executors.base import Executor, UpstreamCall
from channels_app.models import ProviderKind

if TYPE_CHECKING:
    from channels_app.scheduler import Route


class OpenAICompatExecutor(Executor):
    kinds = (ProviderKind.OPENAI_COMPATIBILITY,)
    family = "openai"

    def _headers(self, route: Route, stream: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "clirelay-openai-compat"}
        if route.secret:
            headers["Authorization"] = f"Bearer {route.secret}"
        if stream:
            headers["Accept"] = "text/event-stream"
            headers["Cache-Control"] = "no-cache"
        return self.with_channel_headers(route, headers)

    def build(self, route: Route, body: bytes, stream: bool, *, betas: Sequence[str] = ()) -> UpstreamCall:
        return UpstreamCall(
            method="POST",
            url=f"{route.channel.base_url}/chat/completions",
            headers=self._headers(route, stream),
            body=body,
            stream=stream,
            proxy_url=route.proxy_url,
        )

    def generate_images(self, route: Route, body: bytes) -> UpstreamCall | None:
        return UpstreamCall(
            method="POST",
            url=f"{route.channel.base_url}/images/generations",
            headers=self._headers(route, False),
            body=body,
            stream=False,
            proxy_url=route.proxy_url,
        )
