"""Anthropic Messages SSE: the Claude upstream stream to IR events, and IR events to a Claude client stream.

Also the wire facts both directions share: error types by HTTP status, stop reasons, usage (Anthropic's
``input_tokens`` excludes cache reads and writes; the IR's includes them) and reasoning signatures
(a signature from another family travels to Claude clients as ``<family>#<blob>`` so it can be told
apart when the client sends it back). Pure: no Django, no I/O.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway import ir
from gateway.dialects.sse import SseFrames

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_STATUS_BY_TYPE = {kind: status for status, kind in ERROR_TYPES.items()} | {"api_error": 500}

_FINISH_FROM_CLAUDE: dict[str, ir.FinishReason] = {
    "end_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "stop_sequence": "stop_sequence",
    "refusal": "content_filter",
    "sensitive": "content_filter",
    "pause_turn": "pause_turn",
}
_STOP_REASON_FOR: dict[str, str] = {
    "stop": "end_turn",
    "stop_sequence": "stop_sequence",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "refusal": "refusal",
    "pause_turn": "pause_turn",
    "other": "end_turn",
}
_FAMILIES = ("openai", "responses", "claude", "gemini")


def error_type_for(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status (§1.4)."""
    kind = ERROR_TYPES.get(status)
    if kind:
        return kind
    return "api_error" if status >= 500 else "invalid_request_error"


def status_for_error_type(kind: str) -> int:
    """The HTTP status an Anthropic error ``type`` stands for (unknown types: 500)."""
    return _STATUS_BY_TYPE.get(kind, 500)


def error_envelope(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type_for(status), "message": message}}


def finish_from_claude(stop_reason: str | None, stop_sequence: str | None = None) -> ir.Finish:
    """A Claude ``stop_reason`` as the neutral finish, the native value kept."""
    native = stop_reason or ""
    reason: ir.FinishReason = _FINISH_FROM_CLAUDE.get(native, "stop" if not native else "other")
    return ir.Finish(reason=reason, native=native, stop_sequence=stop_sequence or "")


def stop_reason_for(finish: ir.Finish, saw_tool: bool) -> tuple[str, str | None]:
    """``(stop_reason, stop_sequence)`` for a Claude client; any tool block produced means ``tool_use``."""
    if saw_tool:
        return "tool_use", None
    if finish.reason == "length" and finish.native == "model_context_window_exceeded":
        return finish.native, None
    if finish.reason == "tool_calls":  # the upstream said so, but no tool block reached the client
        return "end_turn", None
    reason = _STOP_REASON_FOR.get(finish.reason, "end_turn")
    return reason, (finish.stop_sequence or None) if reason == "stop_sequence" else None


def usage_from_claude(raw: dict[str, Any]) -> ir.Usage:
    """Claude usage (input excludes the cache) as IR usage (input includes it)."""
    fresh = int(raw.get("input_tokens") or 0)
    read = int(raw.get("cache_read_input_tokens") or 0)
    write = int(raw.get("cache_creation_input_tokens") or 0)
    return ir.Usage(
        input_tokens=fresh + read + write,
        output_tokens=int(raw.get("output_tokens") or 0),
        cached_tokens=read,
        cache_write_tokens=write,
    )


def usage_to_claude(usage: ir.Usage) -> dict[str, int]:
    fresh = max(usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens, 0)
    return {
        "input_tokens": fresh,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }


def signature_for_client(signature: str, family: ir.Family | None) -> str:
    """A reasoning blob as a Claude client holds it: ours unchanged, Gemini's behind ``gemini#``.

    Codex blobs stay bare: their Fernet shape (``gAAAA…``) already tells them apart (§4.9.7).
    """
    if not signature or family in (None, "claude", "responses") or signature.startswith(f"{family}#"):
        return signature
    return f"{family}#{signature}"


def signature_family(signature: str) -> tuple[str, ir.Family | None]:
    """``(blob, family)`` of a signature a Claude client sent back (``<family>#`` prefix, else by shape)."""
    head, sep, rest = signature.partition("#")
    if sep and head in _FAMILIES:
        return rest, head  # type: ignore[return-value]
    if not signature or signature == "skip_thought_signature_validator":
        return signature, None
    if signature.startswith("gAAAA"):
        return signature, "responses"
    return signature, "claude"


def tool_name_restorer(req: ir.Request | None) -> dict[str, str]:
    """Declared tool names by a loose key, to restore names an upstream changed case or ``_`` on (§4.4.3)."""
    if req is None:
        return {}
    return {_loose(tool.name): tool.name for tool in req.tools}


def restore_name(name: str, declared: dict[str, str]) -> str:
    if not declared or name in declared.values():
        return name
    return declared.get(_loose(name), name)


def _loose(name: str) -> str:
    return name.lower().lstrip("_")


def frame(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def sse_error(status: int, message: str) -> bytes:
    """An Anthropic ``event: error`` frame."""
    return frame(b"error", error_envelope(status, message))


# --- upstream: Claude SSE -> IR events ---------------------------------------------------------


@dataclass(slots=True)
class _Block:
    kind: str
    ordinal: int = -1
    signature: str = ""
    custom: bool = False
    args: list[str] = field(default_factory=list)
    initial: str = ""


class StreamParser:
    """Claude Messages SSE bytes to IR events.

    ``req`` (optional) names the custom (freeform) tools, whose ``{"input": …}`` wrapper is removed so
    the call carries the raw input string, as the IR defines for custom calls.
    """

    def __init__(self, req: ir.Request | None = None) -> None:
        self._frames = SseFrames()
        self._blocks: dict[int, _Block] = {}
        self._tools = 0
        self._usage: dict[str, Any] = {}
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None
        self._closed = False  # message_stop or error seen
        self._custom = {t.name for t in req.tools if t.kind == "custom"} if req else set()

    def feed(self, chunk: bytes) -> list[ir.Event]:
        events: list[ir.Event] = []
        for raw in self._frames.feed(chunk):
            self._event(raw, events)
        return events

    def finish(self) -> list[ir.Event]:
        events: list[ir.Event] = []
        tail = self._frames.rest()
        if tail:
            self._event(tail, events)
        if not self._closed:
            self._closed = True
            events.append(ir.StreamError(502, "upstream stream ended before message_stop", "api_error"))
        return events

    def _event(self, raw: bytes, events: list[ir.Event]) -> None:
        if self._closed:
            return
        if raw.startswith(b"event: ") and raw.count(b"\n") == 1:  # the usual two-line shape
            line = raw[raw.index(b"\n") + 1 :]
            payload = line[5:] if line.startswith(b"data:") else b""
        else:
            payload = b"\n".join(ln[5:] for ln in raw.split(b"\n") if ln.startswith(b"data:"))
        if not payload.strip():
            return
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if isinstance(obj, dict):
            self._dispatch(obj, events)

    def _dispatch(self, obj: dict[str, Any], events: list[ir.Event]) -> None:
        kind = obj.get("type")
        if kind == "content_block_delta":
            self._delta(obj, events)
        elif kind == "content_block_start":
            self._block_start(obj, events)
        elif kind == "content_block_stop":
            self._block_stop(obj, events)
        elif kind == "message_start":
            message = obj.get("message") or {}
            self._usage = dict(message.get("usage") or {})
            usage = usage_from_claude(self._usage) if self._usage else None
            events.append(ir.Start(id=message.get("id") or "", model=message.get("model") or "", usage=usage))
        elif kind == "message_delta":
            delta = obj.get("delta") or {}
            self._stop_reason = delta.get("stop_reason") or self._stop_reason
            self._stop_sequence = delta.get("stop_sequence") or self._stop_sequence
            fresh = obj.get("usage") or {}
            self._usage.update({k: v for k, v in fresh.items() if v is not None})
            events.append(ir.UsageUpdate(usage_from_claude(self._usage)))
        elif kind == "message_stop":
            self._closed = True
            events.append(ir.End(finish_from_claude(self._stop_reason, self._stop_sequence)))
        elif kind == "error":
            self._closed = True
            error = obj.get("error") or {}
            etype = str(error.get("type") or "api_error")
            message = str(error.get("message") or "upstream error")
            events.append(ir.StreamError(status_for_error_type(etype), message, etype))

    def _delta(self, obj: dict[str, Any], events: list[ir.Event]) -> None:
        delta = obj.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            if delta.get("text"):
                events.append(ir.TextDelta(delta["text"]))
            return
        block = self._blocks.get(obj.get("index", -1))
        if kind == "thinking_delta":
            if delta.get("thinking"):
                events.append(ir.ReasoningDelta(delta["thinking"]))
        elif kind == "signature_delta" and block is not None:
            block.signature += delta.get("signature") or ""
        elif kind == "input_json_delta" and block is not None and block.kind == "tool_use":
            fragment = delta.get("partial_json") or ""
            if not fragment:
                return
            block.args.append(fragment)
            if not block.custom:
                events.append(ir.ToolCallDelta(block.ordinal, fragment))

    def _block_start(self, obj: dict[str, Any], events: list[ir.Event]) -> None:
        content = obj.get("content_block") or {}
        kind = content.get("type") or ""
        block = _Block(kind)
        self._blocks[obj.get("index", len(self._blocks))] = block
        if kind == "text" and content.get("text"):
            events.append(ir.TextDelta(content["text"]))
        elif kind == "thinking":
            block.signature = content.get("signature") or ""
            if content.get("thinking"):
                events.append(ir.ReasoningDelta(content["thinking"]))
        elif kind == "redacted_thinking":
            events.append(ir.ReasoningDone(signature=content.get("data") or "", family="claude", redacted=True))
        elif kind == "tool_use":
            block.ordinal, self._tools = self._tools, self._tools + 1
            name = content.get("name") or ""
            block.custom = name in self._custom
            if content.get("input"):
                block.initial = orjson.dumps(content["input"]).decode()
            call = ir.ToolCallStart(block.ordinal, content.get("id") or "", name)
            if block.custom:
                call.kind = "custom"
            events.append(call)

    def _block_stop(self, obj: dict[str, Any], events: list[ir.Event]) -> None:
        block = self._blocks.get(obj.get("index", -1))
        if block is None:
            return
        if block.kind == "thinking":
            events.append(ir.ReasoningDone(signature=block.signature, family="claude"))
        elif block.kind == "tool_use":
            if block.custom:
                events.append(
                    ir.ToolCallDelta(block.ordinal, unwrap_custom_input("".join(block.args) or block.initial))
                )
            elif block.initial and not block.args:
                events.append(ir.ToolCallDelta(block.ordinal, block.initial))
            events.append(ir.ToolCallEnd(block.ordinal))


def unwrap_custom_input(arguments: str) -> str:
    """The raw input of a custom tool declared to Claude as a function taking ``{"input": string}``."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return str(value["input"])
    return arguments


# --- client: IR events -> Claude SSE -----------------------------------------------------------


@dataclass(slots=True)
class _Call:
    id: str
    name: str
    pending: list[str] = field(default_factory=list)
    ended: bool = False


_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_TEXT_MID = b',"delta":{"type":"text_delta","text":'
_THINKING_MID = b',"delta":{"type":"thinking_delta","thinking":'
_JSON_MID = b',"delta":{"type":"input_json_delta","partial_json":'
_DELTA_TAIL = b"}}\n\n"
_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class StreamRenderer:
    """IR events to the Anthropic Messages SSE a Claude client expects (§3.2).

    Content blocks are numbered 0, 1, 2… and never interleave: while a tool block is open and its
    call has not ended, events of other calls and other content wait (fragments of other calls are
    buffered per call) and are replayed, in arrival order, once it closes.
    """

    def __init__(self, req: ir.Request, input_tokens_estimate: int = 0) -> None:
        self._model = req.model
        self._estimate = input_tokens_estimate
        self._declared = tool_name_restorer(req)
        self._started = False
        self._done = False
        self._index = 0  # the next block index
        self._open: str | int | None = None  # "text", "thinking" or a tool call's ordinal
        self._head = b""  # the delta frame prefix of the open text/thinking/tool block
        self._calls: dict[int, _Call] = {}
        self._waiting: deque[ir.Event] = deque()
        self._usage = ir.Usage()
        self._start_input = 0
        self._saw_tool = False

    def feed(self, event: ir.Event) -> bytes:
        if self._open == "text" and type(event) is ir.TextDelta:  # the hot path
            return self._head + orjson.dumps(event.text) + _DELTA_TAIL
        out: list[bytes] = []
        self._handle(event, out)
        return b"".join(out)

    def finish(self) -> bytes:
        """The terminal events if the stream has not ended yet (the upstream just stopped)."""
        if self._done:
            return b""
        out: list[bytes] = []
        self._handle(ir.End(ir.Finish("stop")), out)
        return b"".join(out)

    def ping(self) -> bytes:
        """A keep-alive Claude clients understand (valid anywhere in the stream)."""
        return b"" if self._done else _PING

    # -- dispatch ------------------------------------------------------------------------------

    def _handle(self, event: ir.Event, out: list[bytes]) -> None:
        if self._done:
            return
        if isinstance(event, ir.StreamError):
            self._done, self._open = True, None  # no block is left open for the hot path to write to
            out.append(sse_error(event.status, event.message))
            return
        if isinstance(event, ir.UsageUpdate):
            self._usage = self._usage.merged(event.usage)
            return
        if not self._started:
            self._message_start(event if isinstance(event, ir.Start) else None, out)
            if isinstance(event, ir.Start):
                return
        if isinstance(event, ir.ToolCallDelta):
            self._tool_delta(event, out)
        elif isinstance(event, ir.ToolCallEnd):
            self._tool_end(event.index, out)
        elif isinstance(event, ir.End):
            self._end(event.finish, out)
        elif self._blocked():
            if isinstance(event, ir.ToolCallStart):
                self._register(event)
            self._waiting.append(event)
        else:
            self._content(event, out)

    def _content(self, event: ir.Event, out: list[bytes]) -> None:
        if isinstance(event, ir.TextDelta):
            if event.text:
                if self._open != "text":
                    self._open_block("text", {"type": "text", "text": ""}, _TEXT_MID, out)
                out.append(self._head + orjson.dumps(event.text) + _DELTA_TAIL)
        elif isinstance(event, ir.ReasoningDelta):
            if event.text:
                if self._open != "thinking":
                    block = {"type": "thinking", "thinking": "", "signature": ""}
                    self._open_block("thinking", block, _THINKING_MID, out)
                out.append(self._head + orjson.dumps(event.text) + _DELTA_TAIL)
        elif isinstance(event, ir.ReasoningDone):
            self._reasoning_done(event, out)
        elif isinstance(event, ir.ToolCallStart):
            self._tool_start(event, out)
        elif isinstance(event, ir.Start) and event.usage:
            self._usage = self._usage.merged(event.usage)
        # ImageOutput: Anthropic answers carry no image blocks.

    # -- message frames ------------------------------------------------------------------------

    def _message_start(self, start: ir.Start | None, out: list[bytes]) -> None:
        self._started = True
        if start is not None:
            self._model = start.model or self._model
            self._usage = self._usage.merged(start.usage or ir.Usage())
        wire = usage_to_claude(self._usage)
        wire["input_tokens"] = wire["input_tokens"] or self._estimate or 1
        wire["output_tokens"] = 0
        self._start_input = wire["input_tokens"]
        msg_id = start.id if start is not None and start.id else "msg_" + secrets.token_hex(12)
        message: dict[str, Any] = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": wire,
        }
        out.append(frame(b"message_start", {"type": "message_start", "message": message}))

    def _end(self, finish: ir.Finish, out: list[bytes]) -> None:
        for call in self._calls.values():
            call.ended = True
        if isinstance(self._open, int):
            self._close(out)
        self._drain(out)
        self._close(out)
        stop_reason, stop_sequence = stop_reason_for(finish, self._saw_tool)
        usage = usage_to_claude(self._usage)
        if not self._usage.input_tokens:
            usage["input_tokens"] = self._start_input
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        out.append(frame(b"message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(_MESSAGE_STOP)
        self._done = True

    # -- blocks --------------------------------------------------------------------------------

    def _open_block(self, kind: str | int, block: dict[str, Any], mid: bytes, out: list[bytes]) -> None:
        self._close(out)
        index = self._index
        self._index += 1
        self._open = kind
        self._head = _DELTA_HEAD + str(index).encode() + mid
        start = {"type": "content_block_start", "index": index, "content_block": block}
        out.append(frame(b"content_block_start", start))

    def _close(self, out: list[bytes]) -> None:
        if self._open is None:
            return
        self._open = None
        out.append(frame(b"content_block_stop", {"type": "content_block_stop", "index": self._index - 1}))

    def _reasoning_done(self, event: ir.ReasoningDone, out: list[bytes]) -> None:
        signature = signature_for_client(event.signature, event.family)
        if event.redacted:
            self._close(out)
            self._open_block("redacted", {"type": "redacted_thinking", "data": signature}, b"", out)
            self._close(out)
            return
        if self._open != "thinking":
            if not signature:
                return
            self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""}, _THINKING_MID, out)
        if signature:
            delta = {"type": "signature_delta", "signature": signature}
            out.append(
                frame(b"content_block_delta", {"type": "content_block_delta", "index": self._index - 1, "delta": delta})
            )
        self._close(out)

    # -- tool calls ----------------------------------------------------------------------------

    def _blocked(self) -> bool:
        return isinstance(self._open, int) and not self._calls[self._open].ended

    def _register(self, event: ir.ToolCallStart) -> _Call:
        call = self._calls.get(event.index)
        if call is None:
            call = self._calls[event.index] = _Call("", "")
        if not call.id:  # new, or created by a fragment that arrived before its start
            call.id, call.name = event.id, restore_name(event.name, self._declared)
        return call

    def _tool_start(self, event: ir.ToolCallStart, out: list[bytes]) -> None:
        call = self._register(event)
        self._saw_tool = True
        if event.signature:  # a Gemini signature on the call rides in an empty thinking block just before it
            self._close(out)
            self._reasoning_done(ir.ReasoningDone(signature=event.signature, family="gemini"), out)
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        self._open_block(event.index, block, _JSON_MID, out)
        for fragment in call.pending:
            out.append(self._head + orjson.dumps(fragment) + _DELTA_TAIL)
        call.pending.clear()
        if call.ended:
            self._close(out)

    def _tool_delta(self, event: ir.ToolCallDelta, out: list[bytes]) -> None:
        if not event.arguments:
            return
        if self._open == event.index:
            out.append(self._head + orjson.dumps(event.arguments) + _DELTA_TAIL)
            return
        call = self._calls.get(event.index)
        if call is None:  # a fragment before its start: keep it for when the call is announced
            call = self._calls[event.index] = _Call("", "")
        call.pending.append(event.arguments)

    def _tool_end(self, index: int, out: list[bytes]) -> None:
        call = self._calls.get(index)
        if call is None:
            return
        call.ended = True
        if self._open == index:
            self._close(out)
            self._drain(out)

    def _drain(self, out: list[bytes]) -> None:
        while self._waiting and not self._blocked():
            self._content(self._waiting.popleft(), out)
