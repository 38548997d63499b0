"""What every fake upstream shares: the script, gates, recorded requests and the ASGI plumbing.

Each fake (``claude_upstream``, ``gemini_upstream``, ``responses_upstream``) subclasses ``FakeUpstream``:
a raw ASGI app served by uvicorn on 127.0.0.1 from a background thread. Tests drive every fake the
same way, with the names ``tests.fakes.openai_upstream`` uses:

* ``fake.script`` holds how the fake answers until the test changes it; ``fake.reply(text, **fields)``
  sets its text and any other field; ``fake.reset()`` restores the default script, forgets requests and
  lets go of every held handler.
* ``fail(status, message)`` answers with the provider's error body before any stream starts;
  ``fail_midstream(after_events, ...)`` sends the provider's in-stream error event after that many events;
  ``cut_off(after_events)`` drops the connection mid-body; ``stall()`` never answers;
  ``stall_after(after_events)`` sends headers and that many events, then falls silent;
  ``hold_after_first_chunk()`` / ``hold_after_event(i)`` return a ``Gate`` the stream waits on.
* ``fake.script.responder = lambda body: {...}`` decides per request, as a model would: it gets the
  request's JSON and returns the script fields for that one answer (``tool_calls``, ``text`` …) or None.
* ``fake.requests`` / ``fake.last`` are what the fake received (method, path, query, headers, JSON body).

Token numbers are reported verbatim in each provider's own fields (``prompt_tokens`` is Claude's
``input_tokens``, Gemini's ``promptTokenCount``, Responses' ``input_tokens``); only totals are computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import secrets
import string
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import parse_qsl

import orjson

from tests.fakes.server import ThreadedServer

Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[["Script", "RecordedRequest", Send], Awaitable[None]]
Responder = Callable[[Any], "dict[str, Any] | None"]
ScriptT = TypeVar("ScriptT")  # any fake's script dataclass (each has a ``responder`` field)

DEFAULT_SIGNATURE = "ZmFrZS1zaWduYXR1cmU6AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJw=="  # valid base64


class Gate:
    """Holds upstream handlers until the test calls ``release()`` (from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._released = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        with self._lock:
            self._released = True
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            # The server's loop may already be closed when a test releases late.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    async def wait(self) -> None:
        event = asyncio.Event()
        with self._lock:
            if self._released:
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        await event.wait()


@dataclass
class ToolCall:
    """One function call the model makes; ``id`` is generated in the provider's style when None."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass
class Script:
    """How a fake answers every request until the test changes it (fields common to every provider)."""

    text: str | list[str] = "Hello from the fake upstream."  # a list gives the exact stream pieces
    reasoning: str | list[str] | None = None  # thinking / thought / reasoning-summary text
    signature: str = DEFAULT_SIGNATURE  # thinking signature, thoughtSignature, encrypted_content
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 12
    completion_tokens: int = 7
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    finish_reason: str | None = None  # in the provider's vocabulary; None = the natural one
    model: str | None = None  # the model named in replies; None echoes the request's
    known_models: list[str] | None = None  # others get the provider's 404; None accepts any
    count_tokens: int | None = None  # token-count endpoints; None counts the request's words
    chunk_delay: float = 0.0  # seconds between stream events
    gate: Gate | None = None  # a stream waits after event ``gate_after_event`` until released
    gate_after_event: int = 0  # 0 = the first event; negative counts from the end
    status: int = 200
    error: dict[str, Any] | None = None  # the provider's inner ``error`` object sent with ``status``
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers (retry-after …)
    cut_off_after: int | None = None  # stream events sent before the connection is dropped
    error_after: int | None = None  # stream events sent before the in-stream error event
    midstream_error: dict[str, Any] | None = None  # the inner error object of that event
    stall: bool = False  # never answer (until ``reset()``)
    stall_after: int | None = None  # stream events sent before the fake falls silent (until ``reset()``)
    api_key: str | None = None  # when set, any other credential gets the provider's 401
    # Decides per request, like a model would: called with the request's JSON body, it returns the
    # script fields for this one answer (``{"tool_calls": [...]}``, ``{"text": ...}``) or None.
    responder: Responder | None = None


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any  # None when the body is not JSON
    events_sent: int = 0
    completed: bool = False

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")

    @property
    def bearer(self) -> str | None:
        scheme, _, token = self.authorization.partition(" ")
        return token if scheme.lower() == "bearer" and token else None


def pieces(value: str | list[str]) -> list[str]:
    """Stream pieces of a text: a list as given, a string one word (with its leading space) each."""
    if isinstance(value, list):
        return list(value)
    return re.findall(r"\s*\S+|\s+$", value)


def joined(value: str | list[str] | None) -> str:
    if value is None:
        return ""
    return "".join(value) if isinstance(value, list) else value


def fragments(text: str, size: int) -> list[str]:
    """``text`` cut every ``size`` characters, wherever that falls (mid-key, mid-escape …)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def answering(script: ScriptT, body: Any) -> ScriptT:
    """The script for one request: ``script`` itself, or a copy with what its responder chose for ``body``."""
    responder = getattr(script, "responder", None)
    chosen = responder(body) if responder is not None else None
    return dataclasses.replace(script, **chosen) if chosen else script


def random_id(prefix: str, length: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def word_count(value: Any) -> int:
    """A deterministic stand-in for a tokenizer: words and punctuation of every string, base64 skipped."""
    if isinstance(value, str):
        return len(re.findall(r"\w+|[^\w\s]", value))
    if isinstance(value, dict):
        return sum(word_count(v) for k, v in value.items() if k not in {"data", "signature", "thoughtSignature"})
    if isinstance(value, list):
        return sum(word_count(v) for v in value)
    return 0


class FakeUpstream:
    """The ASGI app and the state a test scripts and inspects; subclasses speak one provider."""

    script_class: ClassVar[type[Script]] = Script
    name: ClassVar[str] = "fake-upstream"

    def __init__(self, *, api_key: str | None = None) -> None:
        self.default_api_key = api_key
        self.script = self._fresh_script()
        self.requests: list[RecordedRequest] = []
        self._held: list[Gate] = []
        self._server: ThreadedServer | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> Self:
        self._server = ThreadedServer(self, name=self.name).start()
        return self

    def stop(self) -> None:
        self.reset()
        if self._server is not None:
            self._server.stop()

    @property
    def url(self) -> str:
        """The server root, ``http://127.0.0.1:<port>``."""
        assert self._server is not None, "start() the fake first"
        return self._server.url

    @property
    def base_url(self) -> str:
        """What a channel's ``base_url`` is set to (the root for these providers)."""
        return self.url

    def reset(self) -> None:
        """Default script, no recorded requests, every held handler let go."""
        for gate in self._held:
            gate.release()
        if self.script.gate is not None:
            self.script.gate.release()
        self._held = []
        self.script = self._fresh_script()
        self.requests = []

    def _fresh_script(self) -> Script:
        return self.script_class(api_key=self.default_api_key)

    # --- scripting -------------------------------------------------------------------------
    def reply(self, text: str | list[str], **values: Any) -> None:
        """Answer with ``text``; ``values`` set other script fields (usage numbers, tool_calls …)."""
        self.script.text = text
        known = {f.name for f in fields(self.script)}
        for key, value in values.items():
            if key not in known:
                raise AttributeError(f"{type(self.script).__name__} has no field {key!r}")
            setattr(self.script, key, value)

    def fail(self, status: int, message: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        """Answer every request with ``status`` and the provider's error body."""
        self.script.status = status
        self.script.error = self.error_object(status, message)
        self.script.headers = dict(headers or {})

    def fail_midstream(self, after_events: int, message: str | None = None) -> None:
        """Send the provider's in-stream error event after ``after_events`` events, then end the body."""
        self.script.error_after = after_events
        self.script.midstream_error = self.midstream_error_object(message)

    def hold_after_first_chunk(self) -> Gate:
        """Make streams wait after their first event until the returned gate is released."""
        return self.hold_after_event(0)

    def hold_after_event(self, index: int) -> Gate:
        """Make streams wait after event ``index`` (negative counts from the end)."""
        self.script.gate = Gate()
        self.script.gate_after_event = index
        return self.script.gate

    def stall(self) -> None:
        """Accept requests and never answer them (until ``reset()``)."""
        self.script.stall = True

    def stall_after(self, after_events: int) -> None:
        """Send the stream's headers and ``after_events`` events, then fall silent until ``reset()``."""
        self.script.stall_after = after_events

    def cut_off(self, after_events: int) -> None:
        """Drop the connection of a stream after ``after_events`` events, mid-body."""
        self.script.cut_off_after = after_events

    @property
    def last(self) -> RecordedRequest:
        assert self.requests, f"{self.name} received no request"
        return self.requests[-1]

    # --- what a provider defines -------------------------------------------------------------
    def route(self, recorded: RecordedRequest) -> Handler | None:
        raise NotImplementedError

    def auth_error(self, script: Script, recorded: RecordedRequest) -> tuple[int, dict[str, Any]] | None:
        raise NotImplementedError

    def error_object(self, status: int, message: str | None) -> dict[str, Any]:
        """The provider's inner ``error`` object for ``status``."""
        raise NotImplementedError

    def midstream_error_object(self, message: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def error_body(self, error: dict[str, Any]) -> dict[str, Any]:
        """The whole error body around an inner ``error`` object."""
        return {"error": error}

    def response_headers(self) -> dict[str, str]:
        """Headers the provider puts on every answer (request ids …)."""
        return {}

    # --- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        recorded = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            body=body,
            json=parsed,
        )
        self.requests.append(recorded)
        await self._answer(answering(self.script, recorded.json), recorded, send)

    async def _answer(self, script: Script, recorded: RecordedRequest, send: Send) -> None:
        if script.stall:
            await self._hold()
            await self.send_error(send, 503, "stalled upstream released")
            return
        handler = self.route(recorded)
        if handler is None:
            await self.send_error(send, 404, f"Not Found: {recorded.method} {recorded.path}")
            return
        auth = self.auth_error(script, recorded)
        if auth is not None:
            await self.send_json(send, auth[0], auth[1])
            return
        if script.status >= 400:
            error = script.error or self.error_object(script.status, None)
            await self.send_json(send, script.status, self.error_body(error), script.headers)
            return
        await handler(script, recorded, send)

    async def _hold(self) -> None:
        gate = Gate()
        self._held.append(gate)
        await gate.wait()

    async def send_error(self, send: Send, status: int, message: str | None = None) -> None:
        await self.send_json(send, status, self.error_body(self.error_object(status, message)))

    async def send_json(
        self,
        send: Send,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        raw = orjson.dumps(body)
        out = {"content-type": content_type, "content-length": str(len(raw)), **self.response_headers()}
        out.update({k.lower(): v for k, v in (headers or {}).items()})
        await send({"type": "http.response.start", "status": status, "headers": _encode(out)})
        await send({"type": "http.response.body", "body": raw, "more_body": False})

    async def stream(
        self,
        script: Script,
        recorded: RecordedRequest,
        send: Send,
        events: list[bytes],
        *,
        content_type: str,
        error_frame: Callable[[int], bytes],
        closing: bytes = b"",
    ) -> None:
        """Send ``events`` one by one, honouring the script's gate, delay, cut-off and in-stream error.

        ``error_frame(i)`` is the provider's error event when it replaces event ``i``; ``closing`` ends
        a body whose framing needs a tail (Gemini's JSON array).
        """
        headers = {"content-type": content_type, "cache-control": "no-cache", **self.response_headers()}
        headers.update({k.lower(): v for k, v in script.headers.items()})
        await send({"type": "http.response.start", "status": 200, "headers": _encode(headers)})
        hold_at = script.gate_after_event % len(events) if script.gate is not None and events else None
        for index, event in enumerate(events):
            if script.stall_after is not None and index >= script.stall_after:
                await self._hold()
                return  # released by reset(): drop the connection
            if script.error_after is not None and index >= script.error_after:
                recorded.events_sent += 1  # counted before the write: a client that has read it sees it counted
                await send({"type": "http.response.body", "body": error_frame(index), "more_body": False})
                return
            if script.cut_off_after is not None and index >= script.cut_off_after:
                # Returning with the body unfinished makes uvicorn drop the connection.
                return
            recorded.events_sent += 1
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if index == hold_at and script.gate is not None:
                await script.gate.wait()
            elif script.chunk_delay:
                await asyncio.sleep(script.chunk_delay)
        if script.error_after is not None:
            await send({"type": "http.response.body", "body": error_frame(len(events)), "more_body": False})
            return
        await send({"type": "http.response.body", "body": closing, "more_body": False})
        recorded.completed = True


def _encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
