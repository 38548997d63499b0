"""Shared pieces of the OpenAI-client conformance tests (Chat Completions and Responses clients).

A channel per upstream family on alice's team (``connect``), a scriptable OpenAI-compatible fake that
can send exact wire bytes (tool calls, in-stream errors, chunks after ``[DONE]``), raw SSE helpers for
what the SDK hides, and a way to read the usage rows the gateway wrote.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import orjson
import pytest

from channels_app.models import Channel, ProviderKind
from tests.conftest import Persona
from tests.fakes.fixtures import CLAUDE_API_KEY, CODEX_TOKEN, GEMINI_API_KEY
from tests.fakes.openai_upstream import FakeOpenAIUpstream, RecordedRequest, Script, _send_json, usage_object
from tests.gateway.conftest import Gateway
from usage import recorder
from usage.models import RequestLog

MODEL = "conformance-model"
UPSTREAM_MODEL = "upstream-model"
OPENAI_SECRET = "sk-openai-conformance-secret"
FAMILIES = ("openai", "claude", "gemini", "codex")


# --- a scriptable OpenAI-compatible upstream -------------------------------------------------


class ScriptedOpenAI(FakeOpenAIUpstream):
    """The fake OpenAI upstream, plus exact answers: ``raw_stream`` (SSE events) and ``raw_json``."""

    def __init__(self) -> None:
        super().__init__()
        self.raw_stream: list[bytes] | None = None
        self.raw_json: dict[str, Any] | None = None

    def reset(self) -> None:
        super().reset()
        self.raw_stream = None
        self.raw_json = None

    async def _answer(self, script: Script, recorded: RecordedRequest, send: Any) -> None:
        payload = recorded.json if isinstance(recorded.json, dict) else {}
        if script.status >= 400 or (self.raw_stream is None and self.raw_json is None):
            await super()._answer(script, recorded, send)
            return
        if payload.get("stream") and self.raw_stream is not None:
            headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for event in self.raw_stream:
                recorded.events_sent += 1
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            recorded.completed = True
            return
        recorded.completed = True
        await _send_json(send, 200, self.raw_json or {})


def chat_chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    """One OpenAI stream event (``delta`` None: a ``choices: []`` chunk)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    chunk = {"id": "chatcmpl-conf", "object": "chat.completion.chunk", "created": 1700000000, "model": UPSTREAM_MODEL}
    return b"data: " + orjson.dumps({**chunk, "choices": choices, **extra}) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def chat_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return usage_object(
        Script(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached, reasoning_tokens=reasoning)
    )


@dataclass
class Call:
    """A tool call an upstream makes, in neutral terms."""

    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def json(self) -> str:
        return json.dumps(self.arguments)


def chat_tool_stream(calls: list[Call], usage: dict[str, Any]) -> list[bytes]:
    """An OpenAI stream announcing ``calls`` and sending each call's arguments in two fragments."""
    events = [chat_chunk({"role": "assistant", "content": None})]
    for k, call in enumerate(calls):
        head = {"index": k, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        events.append(chat_chunk({"tool_calls": [head]}))
        text = call.json
        for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
            events.append(chat_chunk({"tool_calls": [{"index": k, "function": {"arguments": piece}}]}))
    events.append(chat_chunk({}, "tool_calls"))
    events.append(chat_chunk(None, usage=usage))
    return [*events, DONE]


def chat_completion(
    content: str | None, usage: dict[str, Any], calls: list[Call] | None = None, finish: str = "stop"
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.json}} for c in calls
        ]
    return {
        "id": "chatcmpl-conf",
        "object": "chat.completion",
        "created": 1700000000,
        "model": UPSTREAM_MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


@pytest.fixture(scope="module")
def scripted_openai_server() -> Iterator[ScriptedOpenAI]:
    fake = ScriptedOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def openai_fake(scripted_openai_server: ScriptedOpenAI) -> Iterator[ScriptedOpenAI]:
    scripted_openai_server.reset()
    scripted_openai_server.script.api_key = OPENAI_SECRET
    yield scripted_openai_server
    scripted_openai_server.reset()


# --- channels ----------------------------------------------------------------------------------


Connect = Callable[..., Any]


def connect_with(alice: Persona, fakes: dict[str, Any]) -> Connect:
    """``connect(family, *upstream_models)``: a channel of that family on alice's team, and its fake.

    Without models the channel serves ``UPSTREAM_MODEL`` as ``MODEL``; given models are served under
    their own names.
    """
    kinds = {
        "openai": (ProviderKind.OPENAI_COMPATIBILITY, OPENAI_SECRET),
        "claude": (ProviderKind.CLAUDE_API_KEY, CLAUDE_API_KEY),
        "gemini": (ProviderKind.GEMINI_API_KEY, GEMINI_API_KEY),
        "codex": (ProviderKind.CODEX_API_KEY, CODEX_TOKEN),
    }

    def connect(family: str, *models: str) -> Any:
        kind, secret = kinds[family]
        served = [{"name": m} for m in models] or [{"name": UPSTREAM_MODEL, "alias": MODEL}]
        Channel.objects.create(
            team=alice.team,
            kind=kind,
            name=f"{family}-{secrets.token_hex(3)}",
            base_url=fakes[family].base_url,
            secret=secret,
            served_models=served,
        )
        return fakes[family]

    return connect


@pytest.fixture
def connect(
    gateway: Gateway,
    alice: Persona,
    openai_fake: ScriptedOpenAI,
    claude_upstream: Any,
    gemini_upstream: Any,
    responses_upstream: Any,
) -> Connect:
    fakes = {"openai": openai_fake, "claude": claude_upstream, "gemini": gemini_upstream, "codex": responses_upstream}
    return connect_with(alice, fakes)


# --- clients -----------------------------------------------------------------------------------


def sdk(gateway: Gateway, alice: Persona) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=alice.raw_key, max_retries=0, timeout=30)


def raw_post(gateway: Gateway, alice: Persona, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST ``body`` to the gateway and read the whole answer (streams included)."""
    headers = {"Authorization": f"Bearer {alice.raw_key}"}
    return httpx.post(f"{gateway.v1}{path}", json=body, headers=headers, timeout=30)


def sse_events(body: str) -> list[tuple[str | None, str]]:
    """``(event name or None, data)`` per SSE frame, comments skipped."""
    frames: list[tuple[str | None, str]] = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            frames.append((name, "\n".join(data)))
    return frames


def chat_stream_chunks(body: str) -> list[dict[str, Any]]:
    """The JSON chunks of a Chat Completions stream, asserting it ends with exactly one ``[DONE]``."""
    frames = [data for _, data in sse_events(body)]
    assert frames and frames[-1] == "[DONE]", f"stream does not end with [DONE]: {body[-300:]!r}"
    assert frames.count("[DONE]") == 1
    return [json.loads(data) for data in frames[:-1]]


def responses_events(body: str) -> list[dict[str, Any]]:
    """The payloads of a Responses stream, checking each frame's ``event:`` matches its ``type``."""
    found = []
    for name, data in sse_events(body):
        assert data != "[DONE]", "a Responses stream never ends with [DONE]"
        payload = json.loads(data)
        assert name == payload["type"]
        found.append(payload)
    return found


# --- usage rows ------------------------------------------------------------------------------


def usage_rows(gateway: Gateway, expected: int = 1, timeout: float = 10.0) -> list[RequestLog]:
    """The usage rows written so far (oldest first), once ``expected`` of them are there."""
    deadline = time.monotonic() + timeout
    while True:
        gateway.watch.wait_idle()
        recorder.flush()
        rows = list(RequestLog.objects.order_by("id"))
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def tokens_of(row: RequestLog) -> dict[str, int]:
    return {
        "input": row.input_tokens,
        "output": row.output_tokens,
        "cached": row.cached_tokens,
        "reasoning": row.reasoning_tokens,
    }


def wait_for_row(timeout: float = 10.0, **filters: Any) -> RequestLog:
    """The first usage row matching ``filters``; the request that makes it may still be finishing."""
    deadline = time.monotonic() + timeout
    while True:
        recorder.flush()
        row = RequestLog.objects.filter(**filters).first()
        if row is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert row is not None, f"no usage row matching {filters}"
    return row
