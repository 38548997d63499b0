"""What the Anthropic and Gemini client conformance suites share: one channel per upstream family,
the official SDK clients, raw-wire readers and exact scripts for the fake OpenAI upstream.

Import the fixtures into a test module (``from tests.gateway.conformance import *``-style, by name,
with ``# noqa: F401``): the fake upstreams are module-scoped there, the gateway is the session one.
"""

from __future__ import annotations

import base64
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from google import genai
from google.genai import types as gtypes

from channels_app import transport
from channels_app.models import Channel, ProviderKind
from tests.conftest import Persona
from tests.fakes import openai_upstream as openai_fake
from tests.fakes.fixtures import (  # noqa: F401
    CLAUDE_API_KEY,
    CODEX_TOKEN,
    GEMINI_API_KEY,
    claude_upstream,
    claude_upstream_server,
    gemini_upstream,
    gemini_upstream_server,
    responses_upstream,
    responses_upstream_server,
)
from tests.fakes.upstream import DEFAULT_SIGNATURE, ToolCall
from tests.gateway.conftest import UPSTREAM_SECRET, Gateway
from usage import recorder
from usage.models import RequestLog

MODEL = "conf-model"  # what clients ask for; each channel serves it under its own upstream name
UPSTREAM_MODEL = "upstream-model"
FAMILIES = ("openai", "claude", "gemini", "codex")
KINDS = {
    "openai": (ProviderKind.OPENAI_COMPATIBILITY, UPSTREAM_SECRET),
    "claude": (ProviderKind.CLAUDE_API_KEY, CLAUDE_API_KEY),
    "gemini": (ProviderKind.GEMINI_API_KEY, GEMINI_API_KEY),
    "codex": (ProviderKind.CODEX_API_KEY, CODEX_TOKEN),
}
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def fakes(upstream: Any, claude_upstream: Any, gemini_upstream: Any, responses_upstream: Any) -> dict[str, Any]:  # noqa: F811
    """The fake upstream of each family, reset, each accepting only its channel's credential."""
    upstream.script.api_key = UPSTREAM_SECRET
    return {"openai": upstream, "claude": claude_upstream, "gemini": gemini_upstream, "codex": responses_upstream}


Route = Callable[..., Any]


@pytest.fixture
def route(alice: Persona, fakes: dict[str, Any]) -> Route:
    """``route(family, upstream_model=..., alias=MODEL, base_url=None)``: alice's channel to that family's fake."""

    def make(family: str, upstream_model: str = UPSTREAM_MODEL, alias: str = MODEL, base_url: str = "") -> Any:
        fake = fakes[family]
        kind, secret = KINDS[family]
        Channel.objects.create(
            team=alice.team,
            kind=kind,
            name=f"fake-{family}-{alias}",
            base_url=base_url or fake.base_url,
            secret=secret,
            served_models=[{"name": upstream_model, "alias": alias}],
        )
        return fake

    return make


@pytest.fixture
def anth(gateway: Gateway, alice: Persona) -> anthropic.Anthropic:
    """alice's official Anthropic SDK client, talking to the gateway."""
    return anthropic.Anthropic(base_url=gateway.url, api_key=alice.raw_key, max_retries=0, timeout=30.0)


@pytest.fixture
def gem(gateway: Gateway, alice: Persona) -> genai.Client:
    """alice's official google-genai client, talking to the gateway (v1beta, no retries)."""
    options = gtypes.HttpOptions(
        base_url=gateway.url,
        api_version="v1beta",
        timeout=30_000,
        retry_options=gtypes.HttpRetryOptions(attempts=1),
    )
    return genai.Client(api_key=alice.raw_key, http_options=options)


@pytest.fixture
def wire(gateway: Gateway, alice: Persona) -> Iterator[Wire]:
    """Raw HTTP as alice, for what the SDKs hide (exact frames, error bodies, JSON-array streams)."""
    with httpx.Client(base_url=gateway.url, timeout=30.0) as client:
        yield Wire(client, alice.raw_key)


@pytest.fixture
def scripted_openai(monkeypatch: pytest.MonkeyPatch) -> ScriptedOpenAI:
    return ScriptedOpenAI(monkeypatch)


@pytest.fixture
def rows(gateway: Gateway) -> Callable[[], list[RequestLog]]:
    """The usage rows written so far, oldest first (the gateway idle and the recorder flushed)."""

    def read() -> list[RequestLog]:
        gateway.watch.wait_idle()
        deadline = time.monotonic() + 5
        while True:  # a stream's row is queued as its generator closes, just after the last byte
            assert recorder.flush()
            found = list(RequestLog.objects.order_by("id"))
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    return read


@pytest.fixture
def png_server() -> Iterator[str]:
    """A tiny local HTTP server answering ``GET /pixel.png`` with a 1x1 PNG; yields the URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PngHandler)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/pixel.png"
    server.shutdown()
    server.server_close()


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))


PNG = _png()
PNG_B64 = base64.b64encode(PNG).decode()


class _PngHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _to_fake(target: str) -> Callable[[str], str]:
    """Sends requests for api.anthropic.com to the fake Claude upstream instead (the network is off limits)."""

    def rewrite(url: str) -> str:
        return url.replace("https://api.anthropic.com", target, 1)

    return rewrite


@pytest.fixture
def first_party_claude(route: Route) -> Iterator[Any]:
    """A Claude channel on ``https://api.anthropic.com``, whose traffic lands on the fake Claude upstream."""
    fake = route("claude", base_url="https://api.anthropic.com")
    transport.use_rewrite(_to_fake(fake.url))
    yield fake
    transport.use_rewrite(None)


# --- the raw wire ---------------------------------------------------------------------------


def sse(body: bytes) -> list[tuple[str, Any]]:
    """``(event name, decoded data)`` of every SSE frame (name "" when the frame has none)."""
    frames = []
    for raw in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = "", []
        for line in raw.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        if data:
            frames.append((name, orjson.loads(b"\n".join(data))))
    return frames


@dataclass
class Wire:
    client: httpx.Client
    key: str

    def messages(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        """``POST /v1/messages`` as Claude clients send it."""
        sent = {"x-api-key": self.key, **ANTHROPIC_HEADERS, **(headers or {})}
        return self.client.post("/v1/messages", json=body, headers=sent)

    def gemini(self, action: str, body: dict[str, Any], *, alt_sse: bool = True, model: str = MODEL) -> httpx.Response:
        """``POST /v1beta/models/{model}:{action}`` (``?alt=sse`` for streams unless told otherwise)."""
        params = {"alt": "sse"} if action == "streamGenerateContent" and alt_sse else {}
        return self.client.post(
            f"/v1beta/models/{model}:{action}", json=body, params=params, headers={"x-goog-api-key": self.key}
        )

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.client.get(path, headers={"x-goog-api-key": self.key, **(headers or {})})


def anthropic_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return [(name, data) for name, data in sse(response.content) if name != "ping"]


def gemini_chunks(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [data for _, data in sse(response.content)]


def texts_of(chunks: list[dict[str, Any]]) -> str:
    """The visible text of Gemini chunks (thought parts excluded)."""
    return "".join(
        part.get("text", "")
        for chunk in chunks
        for candidate in chunk.get("candidates", [])
        for part in candidate.get("content", {}).get("parts", [])
        if not part.get("thought")
    )


def block_texts(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(
        data["delta"].get("text", "")
        for name, data in events
        if name == "content_block_delta" and data["delta"]["type"] == "text_delta"
    )


# --- exact scripts for the fake OpenAI upstream ----------------------------------------------


def chat_chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; without ``delta`` it is the ``choices: []`` usage chunk."""
    chunk: dict[str, Any] = {
        "id": "chatcmpl-conformance",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": UPSTREAM_MODEL,
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def chat_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


@dataclass
class ScriptedOpenAI:
    """Makes the fake OpenAI upstream stream exact chunks / answer an exact completion.

    The fake's own script knows only text; these replace its event and completion builders for the
    rest of the test (``text()`` gives them back).
    """

    monkeypatch: pytest.MonkeyPatch
    originals: tuple[Any, Any] = field(default=(openai_fake._stream_events, openai_fake._completion))

    def stream(self, chunks: list[dict[str, Any] | bytes], *, done: bool = True) -> None:
        """Stream ``chunks`` (dicts as ``data:`` JSON, bytes verbatim), then ``[DONE]``."""
        frames = [c if isinstance(c, bytes) else b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks]
        frames += [b"data: [DONE]\n\n"] if done else []
        self.monkeypatch.setattr(openai_fake, "_stream_events", lambda script, payload: frames)

    def completion(self, message: dict[str, Any], finish: str, usage: dict[str, Any]) -> None:
        body = {
            "id": "chatcmpl-conformance",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": UPSTREAM_MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": usage,
        }
        self.monkeypatch.setattr(openai_fake, "_completion", lambda script, payload: body)

    def tool_calls(self, calls: list[ToolCall], usage: dict[str, Any] | None = None) -> None:
        """Both modes answer with these calls (streamed: announce, then arguments in 5-character pieces)."""
        usage = usage or chat_usage(12, 7)
        chunks: list[dict[str, Any] | bytes] = [chat_chunk({"role": "assistant", "content": None})]
        for i, call in enumerate(calls):
            announce = {"index": i, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
            chunks.append(chat_chunk({"tool_calls": [announce]}))
            arguments = orjson.dumps(call.arguments).decode()
            chunks += [
                chat_chunk({"tool_calls": [{"index": i, "function": {"arguments": arguments[k : k + 5]}}]})
                for k in range(0, len(arguments), 5)
            ]
        chunks += [chat_chunk({}, "tool_calls"), chat_chunk(usage=usage)]
        self.stream(chunks)
        wire_calls = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": orjson.dumps(call.arguments).decode()},
            }
            for call in calls
        ]
        self.completion({"content": None, "tool_calls": wire_calls}, "tool_calls", usage)

    def text(self) -> None:
        """Back to the fake's own text script."""
        self.monkeypatch.setattr(openai_fake, "_stream_events", self.originals[0])
        self.monkeypatch.setattr(openai_fake, "_completion", self.originals[1])


# --- the family matrix: tool calls, usage, errors --------------------------------------------

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
WEATHER_ARGS = {"city": "Paris"}
WEATHER_RESULT = "22 degrees and sunny"
FINAL_TEXT = "It is 22 degrees and sunny in Paris."
# The id each family's upstream gives the call (Gemini gives none: the gateway derives one).
UPSTREAM_CALL_IDS = {
    "openai": "call_Wx4Paris0000000000000001",
    "claude": "toolu_01WeatherParis000000001",
    "gemini": None,
    "codex": "call_CodexWeatherParis00001",
}


REASONING = "The user wants the weather, so I call get_weather."
CODEX_SIGNATURE = "gAAAAABo-codex-encrypted-reasoning=="  # Codex blobs are Fernet tokens


def script_tool_call(family: str, fake: Any, scripted: ScriptedOpenAI) -> None:
    """The family's upstream answers (stream or not) with one ``get_weather`` call, after signed reasoning
    where the family has it (Claude thinking, Gemini thought parts and a signed call, Codex reasoning)."""
    call = ToolCall(WEATHER_TOOL["name"], dict(WEATHER_ARGS), UPSTREAM_CALL_IDS[family])
    if family == "openai":
        scripted.tool_calls([call])
    else:
        fake.reply("", tool_calls=[call], reasoning=REASONING)
    if family == "codex":
        fake.script.signature = CODEX_SIGNATURE


def script_text(family: str, fake: Any, scripted: ScriptedOpenAI, text: str = FINAL_TEXT) -> None:
    if family == "openai":
        scripted.text()
    fake.reply(text)
    if family != "openai":
        fake.script.tool_calls = []


def assert_upstream_got_result_paired(family: str, body: dict[str, Any], call_id: str) -> None:
    """The second request reached the upstream with the call and its result paired in the family's shape."""
    name = WEATHER_TOOL["name"]
    if family == "openai":
        messages = body["messages"]
        a = next(i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("tool_calls"))
        (call,) = messages[a]["tool_calls"]
        assert (call["id"], call["type"], call["function"]["name"]) == (call_id, "function", name)
        assert orjson.loads(call["function"]["arguments"]) == WEATHER_ARGS
        result = messages[a + 1]
        assert (result["role"], result["tool_call_id"]) == ("tool", call_id)
        assert WEATHER_RESULT in str(result["content"])
    elif family == "claude":
        messages = body["messages"]
        a = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
        thinking = {"type": "thinking", "thinking": REASONING, "signature": DEFAULT_SIGNATURE}
        assert messages[a]["content"][0] == thinking, "Claude gets its signed thinking back before the call"
        (use,) = [b for b in messages[a]["content"] if b["type"] == "tool_use"]
        assert (use["id"], use["name"], use["input"]) == (call_id, name, WEATHER_ARGS)
        (result,) = [b for b in messages[a + 1]["content"] if b["type"] == "tool_result"]
        assert result["tool_use_id"] == call_id
        assert WEATHER_RESULT in str(result["content"])
    elif family == "gemini":
        contents = body["contents"]
        m = next(i for i, c in enumerate(contents) if c["role"] == "model")
        (part,) = [p for p in contents[m]["parts"] if "functionCall" in p]
        call = part["functionCall"]
        assert (call["name"], call["args"]) == (name, WEATHER_ARGS)
        # The call's thoughtSignature went to the client and came back (through a carrier for non-Gemini clients).
        assert part.get("thoughtSignature") == DEFAULT_SIGNATURE
        (response_part,) = [p for p in contents[m + 1]["parts"] if "functionResponse" in p]
        response = response_part["functionResponse"]
        assert contents[m + 1]["role"] == "user"
        assert response["name"] == name
        assert call.get("id") == response.get("id")
        assert WEATHER_RESULT in str(response["response"])
    else:
        items = body["input"]
        c = next(i for i, item in enumerate(items) if item.get("type") == "function_call")
        reasoning = [item for item in items[:c] if item.get("type") == "reasoning"]
        assert [r["encrypted_content"] for r in reasoning] == [CODEX_SIGNATURE], "Codex gets its reasoning back"
        call = items[c]
        assert (call["call_id"], call["name"]) == (call_id, name)
        assert orjson.loads(call["arguments"]) == WEATHER_ARGS
        output = items[c + 1]
        assert (output["type"], output["call_id"]) == ("function_call_output", call_id)
        assert WEATHER_RESULT in str(output["output"])


def assert_client_call_id(family: str, seen: str) -> None:
    """The id a client sees is the upstream's own, or the gateway's ``call_`` + 24 hex for Gemini."""
    expected = UPSTREAM_CALL_IDS[family]
    if expected is None:
        assert seen.startswith("call_") and len(seen) == 29, seen
    else:
        assert seen == expected


# Usage in each family's own fields; normalised (D1.5, §4.8, R6) every family means the same numbers:
# 120 input tokens of which 100 cache reads (Claude: and 5 cache writes), 30 output tokens of which 10
# reasoning (Claude: none), 150 in all.


def script_usage(family: str, fake: Any, scripted: ScriptedOpenAI, text: str = FINAL_TEXT) -> int:
    """The upstream reports ``USAGE`` its own way; returns the reasoning tokens that family can report."""
    if family == "openai":
        fake.reply(text, prompt_tokens=120, completion_tokens=30, cached_tokens=100, reasoning_tokens=10)
        return 10
    if family == "claude":  # Anthropic's input_tokens excludes cache reads and writes: 15 + 5 written + 100 read
        fake.reply(text, prompt_tokens=15, cache_creation_tokens=5, cached_tokens=100, completion_tokens=30)
        return 0
    if family == "gemini":  # candidatesTokenCount excludes thoughts
        fake.reply(text, prompt_tokens=120, cached_tokens=100, completion_tokens=20, reasoning_tokens=10)
        return 10
    fake.reply(text, prompt_tokens=120, cached_tokens=100, completion_tokens=30, reasoning_tokens=10)
    return 10


def assert_usage_row(row: RequestLog, reasoning: int) -> None:
    assert row.status_code == 200, row.error_message
    assert (row.input_tokens, row.output_tokens, row.cached_tokens) == (120, 30, 100)
    assert (row.reasoning_tokens, row.total_tokens) == (reasoning, 150)


def fail_before_first_byte(family: str, fake: Any, status: int, message: str) -> None:
    if family == "openai":
        fake.fail(status, message, type_="rate_limit_error" if status == 429 else "invalid_request_error")
    else:
        fake.fail(status, message)


def fail_midstream(family: str, fake: Any, scripted: ScriptedOpenAI, message: str) -> int:
    """Some text, then the family's in-stream error; returns the HTTP status that error stands for."""
    if family == "openai":
        scripted.stream(
            [
                chat_chunk({"role": "assistant", "content": ""}),
                chat_chunk({"content": "Partial"}),
                chat_chunk({"content": " answer"}),
                {"error": {"message": message, "type": "server_error", "code": "server_error"}},
            ],
            done=False,
        )
        return 500
    fake.reply("Partial answer that is cut")
    if family == "claude":
        fake.fail_midstream(5, message)  # message_start, ping, block start, two text deltas
        return 529
    if family == "gemini":
        fake.fail_midstream(2, message, status=503)
        return 503
    fake.fail_midstream(6, message, code="server_is_overloaded")  # created, in_progress, item, part, 2 deltas
    return 529


def cut_off_midstream(family: str, fake: Any, scripted: ScriptedOpenAI) -> None:
    """Some text, then the upstream drops the connection without ending its stream."""
    if family == "openai":
        pieces = [chat_chunk({"content": p}) for p in ("Partial", " answer", " that", " is", " cut")]
        scripted.stream([chat_chunk({"role": "assistant", "content": ""}), *pieces, chat_chunk({}, "stop")])
        fake.cut_off(3)
        return
    fake.reply("Partial answer that is cut")
    fake.cut_off({"claude": 5, "gemini": 2, "codex": 6}[family])


CLAUDE_ONLY_FIELDS = ("context_management", "defer_loading", "eager_input_streaming", "cache_control", "betas")


def assert_no_claude_only_fields(body: Any) -> None:
    """Beta-bound Claude fields are dropped silently towards other families (D3.6)."""
    text = orjson.dumps(body).decode()
    assert not [field for field in CLAUDE_ONLY_FIELDS if f'"{field}"' in text]
