"""Gemini generateContent upstreams: the Gemini API (``gemini-api-key``) and Vertex-compatible keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from channels_app.executors.base import Executor, UpstreamCall
from channels_app.models import ProviderKind

if TYPE_CHECKING:
    from channels_app.scheduler import Route


class GeminiExecutor(Executor):
    kinds = (ProviderKind.GEMINI_API_KEY,)
    family = "gemini"

    def model_url(self, route: Route, action: str) -> str:
        return f"{route.channel.base_url}/v1beta/models/{route.upstream_model}:{action}"

    def _call(self, route: Route, action: str, body: bytes, stream: bool) -> UpstreamCall:
        headers = {"Content-Type": "application/json"}
        if route.secret:
            headers["x-goog-api-key"] = route.secret
        return UpstreamCall(
            method="POST",
            url=self.model_url(route, action),
            headers=self.with_channel_headers(route, headers),
            body=body,
            stream=stream,
            proxy_url=route.proxy_url,
            params={"alt": "sse"} if stream else {},
        )

    def build(self, route: Route, body: bytes, stream: bool, *, betas: Sequence[str] = ()) -> UpstreamCall:
        return self._call(route, "streamGenerateContent" if stream else "generateContent", body, stream)

    def count_tokens(self, route: Route, body: bytes, *, betas: Sequence[str] = ()) -> UpstreamCall | None:
        return self._call(route, "countTokens", body, False)


class VertexKeyExecutor(GeminiExecutor):
    """Vertex-compatible endpoints reached with an API key (``vertex-api-key`` channels)."""

    kinds = (ProviderKind.VERTEX_API_KEY,)

    def model_url(self, route: Route, action: str) -> str:
        return f"{route.channel.base_url}/v1/publishers/google/models/{route.upstream_model}:{action}"
