"""A fake OpenAI-compatible upstream: Chat Completions in OpenAI's exact wire format, over real HTTP.

A raw ASGI app served by uvicorn on 127.0.0.1 from a background thread. Each test scripts it
through ``upstream.script`` (or the helpers ``reply``, ``fail``, ``stall``, ``cut_off``,
``hold_after_first_chunk``) and reads what the gateway sent from ``upstream.requests``;
``script.tool_calls`` adds function calls, ``script.responder`` decides per request (see upstream.py).
``reset()`` restores the default script, forgets requests and releases every held handler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.fakes.server import ThreadedServer
from tests.fakes.upstream import Gate, Responder, ToolCall, answering

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


@dataclass
class Script:
    """How the fake answers every request until the test changes it."""

    text: str = "Hello from the fake upstream."
    tool_calls: list[ToolCall] = field(default_factory=list)  # streamed after the text
    prompt_tokens: int = 12
    completion_tokens: int = 7
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    finish_reason: str | None = None  # None: "tool_calls" when there are tool calls, else "stop"
    model: str | None = None  # the model named in replies; None echoes the request's
    chunk_delay: float = 0.0  # seconds between stream events
    gate: Gate | None = None  # a stream waits after event ``gate_after_event`` until released
    gate_after_event: int = 0  # 0 = the first event; negative counts from the end (-1 = after [DONE])
    status: int = 200
    error: dict[str, Any] | None = None  # the ``error`` object sent with ``status``
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers (Retry-After …)
    cut_off_after: int | None = None  # stream events sent before the connection is dropped
    stall: bool = False  # never answer (until ``reset()``)
    api_key: str | None = None  # when set, any other bearer token gets OpenAI's 401
    responder: Responder | None = None  # per request: the script fields for that one answer (see upstream.py)


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any  # None when the body is not JSON
    # Counted before each write, so a client that has read event n knows n were handed over.
    events_sent: int = 0
    completed: bool = False  # the whole answer (every event, [DONE] included) was handed over

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")


def usage_object(script: Script) -> dict[str, Any]:
    """OpenAI's ``usage`` object, details included."""
    return {
        "prompt_tokens": script.prompt_tokens,
        "completion_tokens": script.completion_tokens,
        "total_tokens": script.prompt_tokens + script.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": script.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": script.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def error_object(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"message": message, "type": type_, "param": param, "code": code}


def content_pieces(text: str) -> list[str]:
    """The text as the content deltas of a stream, one word (with its leading space) each."""
    return re.findall(r"\s*\S+|\s+$", text)


class FakeOpenAIUpstream:
    """The ASGI app and the state a test scripts and inspects."""

    def __init__(self) -> None:
        self.script = Script()
        self.requests: list[RecordedRequest] = []
        self._held: list[Gate] = []
        self._server: ThreadedServer | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeOpenAIUpstream:
        self._server = ThreadedServer(self, name="fake-openai-upstream").start()
        return self

    def stop(self) -> None:
        self.reset()
        if self._server is not None:
            self._server.stop()

    @property
    def base_url(self) -> str:
        """What a channel's ``base_url`` is set to: the server root plus ``/v1``."""
        assert self._server is not None, "start() the fake first"
        return f"{self._server.url}/v1"

    def reset(self) -> None:
        """Default script, no recorded requests, every held handler let go."""
        for gate in self._held:
            gate.release()
        if self.script.gate is not None:
            self.script.gate.release()
        self._held = []
        self.script = Script()
        self.requests = []

    # --- scripting -------------------------------------------------------------------------
    def reply(self, text: str, **fields: Any) -> None:
        """Answer with ``text``; ``fields`` set other ``Script`` attributes (usage numbers …)."""
        known = {f.name for f in dataclasses.fields(Script)}
        for name in fields:
            if name not in known:
                raise AttributeError(f"Script has no field '{name}'")
        self.script.text = text
        for name, value in fields.items():
            setattr(self.script, name, value)

    def fail(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer every request with ``status`` and OpenAI's error body."""
        self.script.status = status
        self.script.error = error_object(message, type_, code, param)
        self.script.headers = dict(headers or {})

    def hold_after_first_chunk(self) -> Gate:
        """Make streams wait after their first event until the returned gate is released."""
        return self.hold_after_event(0)

    def hold_after_event(self, index: int) -> Gate:
        """Make streams wait after event ``index`` (-1: after ``[DONE]``, before the body ends)."""
        self.script.gate = Gate()
        self.script.gate_after_event = index
        return self.script.gate

    def stall(self) -> None:
        """Accept requests and never answer them (until ``reset()``)."""
        self.script.stall = True

    def cut_off(self, after_events: int) -> None:
        """Drop the connection of a stream after ``after_events`` events, mid-body."""
        self.script.cut_off_after = after_events

    @property
    def last(self) -> RecordedRequest:
        assert self.requests, "the fake upstream received no request"
        return self.requests[-1]

    # --- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
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
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            body=body,
            json=parsed,
        )
        self.requests.append(recorded)
        await self._answer(answering(self.script, recorded.json), recorded, send)

    async def _answer(self, script: Script, recorded: RecordedRequest, send: Any) -> None:
        if script.stall:
            gate = Gate()
            self._held.append(gate)
            await gate.wait()
            await _send_json(send, 503, {"error": error_object("stalled upstream released", "server_error")})
            return
        if (recorded.method, recorded.path) != ("POST", "/v1/chat/completions"):
            message = f"Invalid URL ({recorded.method} {recorded.path})"
            await _send_json(send, 404, {"error": error_object(message, "invalid_request_error")})
            return
        auth_error = _auth_error(script, recorded)
        if auth_error is not None:
            await _send_json(send, 401, {"error": auth_error})
            return
        if script.status >= 400:
            error = script.error or error_object("The server had an error", "server_error")
            await _send_json(send, script.status, {"error": error}, script.headers)
            return
        request_error = _request_error(recorded)
        if request_error is not None:
            await _send_json(send, 400, {"error": request_error})
            return
        payload = recorded.json
        if payload.get("stream"):
            await self._stream(script, recorded, payload, send)
        else:
            recorded.completed = True
            await _send_json(send, 200, _completion(script, payload), script.headers)

    async def _stream(self, script: Script, recorded: RecordedRequest, payload: dict[str, Any], send: Any) -> None:
        headers = [*_SSE_HEADERS, (b"x-request-id", _request_id().encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in script.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        events = _stream_events(script, payload)
        hold_at = script.gate_after_event % len(events) if script.gate is not None else None
        for index, event in enumerate(events):
            if script.cut_off_after is not None and index >= script.cut_off_after:
                # Returning with the body unfinished makes uvicorn drop the connection.
                return
            recorded.events_sent += 1
            recorded.completed = index == len(events) - 1
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if index == hold_at and script.gate is not None:
                await script.gate.wait()
            elif script.chunk_delay:
                await asyncio.sleep(script.chunk_delay)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _auth_error(script: Script, recorded: RecordedRequest) -> dict[str, Any] | None:
    if script.api_key is None:
        return None
    scheme, _, token = recorded.authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return error_object(
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "invalid_request_error",
        )
    if token != script.api_key:
        shown = f"{token[:3]}*****{token[-4:]}"
        return error_object(
            f"Incorrect API key provided: {shown}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )
    return None


def _request_error(recorded: RecordedRequest) -> dict[str, Any] | None:
    payload = recorded.json
    if not isinstance(payload, dict):
        return error_object(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
            "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. "
            "If you have trouble figuring out how to fix this, please contact us through our help center at "
            "help.openai.com.)",
            "invalid_request_error",
        )
    if not payload.get("model"):
        return error_object("you must provide a model parameter", "invalid_request_error")
    if "messages" not in payload:
        return error_object(
            "Missing required parameter: 'messages'.", "invalid_request_error", "missing_required_parameter", "messages"
        )
    return None


def _request_id() -> str:
    return f"req_{secrets.token_hex(16)}"


def _envelope(script: Script, payload: dict[str, Any], obj: str, completion_id: str, created: int) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": obj,
        "created": created,
        "model": script.model or payload["model"],
        "service_tier": "default",
        "system_fingerprint": "fp_fake0c0ffee",
    }


def _finish_reason(script: Script) -> str:
    return script.finish_reason or ("tool_calls" if script.tool_calls else "stop")


def _tool_calls(script: Script) -> list[dict[str, Any]]:
    """The script's calls as OpenAI's ``tool_calls`` entries (ids generated once per answer)."""
    return [
        {
            "id": call.id or f"call_{secrets.token_hex(12)}",
            "type": "function",
            "function": {"name": call.name, "arguments": orjson.dumps(call.arguments).decode()},
        }
        for call in script.tool_calls
    ]


def _completion(script: Script, payload: dict[str, Any]) -> dict[str, Any]:
    completion = _envelope(script, payload, "chat.completion", f"chatcmpl-{secrets.token_hex(12)}", int(time.time()))
    message: dict[str, Any] = {"role": "assistant", "content": script.text or None, "refusal": None, "annotations": []}
    if script.tool_calls:
        message["tool_calls"] = _tool_calls(script)
    completion["choices"] = [
        {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(script)}
    ]
    completion["usage"] = usage_object(script)
    return completion


def _stream_events(script: Script, payload: dict[str, Any]) -> list[bytes]:
    """Every SSE event of a streamed completion, ``data: [DONE]`` last."""
    base = _envelope(script, payload, "chat.completion.chunk", f"chatcmpl-{secrets.token_hex(12)}", int(time.time()))
    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        # With include_usage OpenAI sends ``"usage": null`` on every chunk but the last.
        return {**base, "choices": [choice], **({"usage": None} if include_usage else {})}

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [chunk({"content": piece}) for piece in content_pieces(script.text)]
    for index, call in enumerate(_tool_calls(script)):
        # OpenAI sends the id, type and name first, then the arguments in pieces.
        head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
        chunks.append(chunk({"tool_calls": [{"index": index, **head}]}))
        arguments = call["function"]["arguments"]
        for start in range(0, len(arguments), 16):
            piece = {"index": index, "function": {"arguments": arguments[start : start + 16]}}
            chunks.append(chunk({"tool_calls": [piece]}))
    chunks.append(chunk({}, _finish_reason(script)))
    if include_usage:
        chunks.append({**base, "choices": [], "usage": usage_object(script)})
    return [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


async def _send_json(send: Any, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    raw = orjson.dumps(body)
    out = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
        (b"x-request-id", _request_id().encode()),
    ]
    out += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": raw, "more_body": False})
