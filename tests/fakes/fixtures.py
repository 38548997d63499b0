"""pytest fixtures for the fake upstreams: each server starts once per test module, each test gets a reset one.

Use them from a conftest (or a test module) by importing the pairs you need::

    from tests.fakes.fixtures import claude_upstream, claude_upstream_server  # noqa: F401

``<name>_upstream_server`` is module-scoped (one uvicorn thread per module); ``<name>_upstream`` resets
the script and the recorded requests before and after each test, releasing held handlers. Each fake
accepts only its constant credential below (``fake.script.api_key = None`` accepts any).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import pytest

from tests.fakes.claude_upstream import FakeClaudeUpstream
from tests.fakes.gemini_upstream import FakeGeminiUpstream
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.fakes.responses_upstream import FakeResponsesUpstream
from tests.fakes.upstream import FakeUpstream

CLAUDE_API_KEY = "sk-ant-api03-fake-claude-key"
GEMINI_API_KEY = "AIzaSyFakeGeminiKey0123456789"
GEMINI_CLI_TOKEN = "ya29.fake-code-assist-access-token"
CODEX_TOKEN = "fake-codex-access-token"

__all__ = [
    "CLAUDE_API_KEY",
    "CODEX_TOKEN",
    "GEMINI_API_KEY",
    "GEMINI_CLI_TOKEN",
    "claude_upstream",
    "claude_upstream_server",
    "gemini_cli_upstream",
    "gemini_cli_upstream_server",
    "gemini_upstream",
    "gemini_upstream_server",
    "openai_upstream",
    "openai_upstream_server",
    "responses_upstream",
    "responses_upstream_server",
]


F = TypeVar("F", bound=FakeUpstream | FakeOpenAIUpstream)


def _served(fake: F) -> Iterator[F]:
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def _reset(fake: F) -> Iterator[F]:
    fake.reset()
    yield fake
    fake.reset()


@pytest.fixture(scope="module")
def claude_upstream_server() -> Iterator[FakeClaudeUpstream]:
    yield from _served(FakeClaudeUpstream(api_key=CLAUDE_API_KEY))


@pytest.fixture
def claude_upstream(claude_upstream_server: FakeClaudeUpstream) -> Iterator[FakeClaudeUpstream]:
    """The fake Anthropic Messages API (``x-api-key: CLAUDE_API_KEY``)."""
    yield from _reset(claude_upstream_server)


@pytest.fixture(scope="module")
def gemini_upstream_server() -> Iterator[FakeGeminiUpstream]:
    yield from _served(FakeGeminiUpstream(api_key=GEMINI_API_KEY))


@pytest.fixture
def gemini_upstream(gemini_upstream_server: FakeGeminiUpstream) -> Iterator[FakeGeminiUpstream]:
    """The fake Gemini API (``x-goog-api-key: GEMINI_API_KEY``)."""
    yield from _reset(gemini_upstream_server)


@pytest.fixture(scope="module")
def gemini_cli_upstream_server() -> Iterator[FakeGeminiUpstream]:
    yield from _served(FakeGeminiUpstream(api_key=GEMINI_CLI_TOKEN, code_assist=True))


@pytest.fixture
def gemini_cli_upstream(gemini_cli_upstream_server: FakeGeminiUpstream) -> Iterator[FakeGeminiUpstream]:
    """The fake Cloud Code Assist API (``Authorization: Bearer GEMINI_CLI_TOKEN``)."""
    yield from _reset(gemini_cli_upstream_server)


@pytest.fixture(scope="module")
def responses_upstream_server() -> Iterator[FakeResponsesUpstream]:
    yield from _served(FakeResponsesUpstream(api_key=CODEX_TOKEN))


@pytest.fixture
def responses_upstream(responses_upstream_server: FakeResponsesUpstream) -> Iterator[FakeResponsesUpstream]:
    """The fake Codex backend (``Authorization: Bearer CODEX_TOKEN``); ``script.mode = "openai"`` for the API."""
    yield from _reset(responses_upstream_server)


@pytest.fixture(scope="module")
def openai_upstream_server() -> Iterator[FakeOpenAIUpstream]:
    yield from _served(FakeOpenAIUpstream())


@pytest.fixture
def openai_upstream(openai_upstream_server: FakeOpenAIUpstream) -> Iterator[FakeOpenAIUpstream]:
    """The fake OpenAI-compatible Chat Completions upstream (any bearer unless ``script.api_key`` is set)."""
    yield from _reset(openai_upstream_server)
