"""Which executor serves which channel kind."""

from __future__ import annotations

from channels_app.executors.base import Executor
from channels_app.executors.claude import ClaudeExecutor
from channels_app.executors.codex import CodexExecutor
from channels_app.executors.gemini import GeminiExecutor, VertexKeyExecutor
from channels_app.executors.openai_compat import OpenAICompatExecutor

_EXECUTORS: dict[str, Executor] = {}
for _executor in (OpenAICompatExecutor(), ClaudeExecutor(), GeminiExecutor(), VertexKeyExecutor(), CodexExecutor()):
    for _kind in _executor.kinds:
        _EXECUTORS[_kind] = _executor


def executor_for(kind: str) -> Executor | None:
    return _EXECUTORS.get(kind)


def supported_kinds() -> frozenset[str]:
    """Channel kinds the relay can send requests to."""
    return frozenset(_EXECUTORS)
