"""OpenAI Responses: the SSE stream both ways, and the wire pieces the bodies share with it.

``StreamParser`` reads a Responses / Codex SSE stream into IR events (upstream side);
``StreamRenderer`` writes IR events as the Responses SSE that Codex CLI and the ``openai`` SDK's
``client.responses`` expect (client side, spec §3.4). Pure: no Django, no I/O.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from gateway import ir
from gateway.dialects.sse import SseFrames

# --- tool names and call ids ---------------------------------------------------------------

MAX_NAME = 64
_BAD_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def qualified_name(namespace: str, name: str) -> str:
    """The flat name of a namespaced tool: ``<ns>__<name>``, never prefixed twice; ``mcp__*`` kept."""
    if not namespace or name.startswith((f"{namespace}__", "mcp__")):
        return name
    return f"{namespace}__{name}"


def _short_base(name: str) -> str:
    clean = _BAD_NAME_CHARS.sub("_", name)
    if len(clean) <= MAX_NAME:
        return clean
    if clean.startswith("mcp__"):
        tail = clean[5:].rsplit("__", 1)[-1]
        if tail:
            return ("mcp__" + tail)[:MAX_NAME]
    return clean[:MAX_NAME]


def codex_tool_names(req: ir.Request) -> dict[str, str]:
    """Original name → the name sent upstream (``[a-zA-Z0-9_-]``, ≤ 64, unique), for renamed tools only.

    Deterministic in the request, so the parse side rebuilds the same map to restore the originals.
    """
    names: dict[str, None] = {}
    for tool in req.tools:
        if tool.kind != "builtin":
            names[tool.name] = None
    for message in req.messages:
        for part in message.parts:
            if isinstance(part, ir.ToolCall):
                names[part.name] = None
    if req.tool_choice and req.tool_choice.name:
        names[req.tool_choice.name] = None
    used = {name for name in names if _short_base(name) == name}
    renamed: dict[str, str] = {}
    for name in names:
        if name in used:
            continue
        base = candidate = _short_base(name)
        n = 0
        while candidate in used:
            n += 1
            suffix = f"_{n}"
            candidate = base[: MAX_NAME - len(suffix)] + suffix
        used.add(candidate)
        renamed[name] = candidate
    return renamed


def codex_call_id(call_id: str) -> str:
    """A call id Codex accepts (≤ 64): longer ids become 47 chars + ``_`` + 16 hex of their SHA-256."""
    if len(call_id) <= MAX_NAME:
        return call_id
    return call_id[:47] + "_" + hashlib.sha256(call_id.encode()).hexdigest()[:16]


def reverse_maps(req: ir.Request | None) -> tuple[dict[str, str], dict[str, str]]:
    """(upstream name → original name, upstream call id → original id) for one request."""
    if req is None:
        return {}, {}
    names = {short: original for original, short in codex_tool_names(req).items()}
    ids: dict[str, str] = {}
    for message in req.messages:
        for part in message.parts:
            if isinstance(part, (ir.ToolCall, ir.ToolResult)):
                original = part.id if isinstance(part, ir.ToolCall) else part.call_id
                short = codex_call_id(original)
                if short != original:
                    ids[short] = original
    return names, ids


def client_tool_name(req: ir.Request, name: str) -> tuple[str, str | None]:
    """The (name, namespace) a Responses client declared for the flat IR ``name``."""
    entry = req.extensions.get("responses", {}).get("namespaces", {}).get(name)
    if entry:
        return str(entry["name"]), str(entry["namespace"])
    return name, None


def custom_tool_names(req: ir.Request) -> frozenset[str]:
    return frozenset(tool.name for tool in req.tools if tool.kind == "custom")


def unwrap_custom_input(arguments: str) -> str:
    """A custom tool's raw input from ``{"input": "..."}`` (how non-Responses upstreams carry it)."""
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return value["input"]
    return arguments


# --- reasoning signatures ------------------------------------------------------------------

REDACTED_PREFIX = "claude-redacted-thinking:"
GEMINI_CARRIER_PREFIX = "cpa-gemini-responses-carrier-v1:"
_PREFIX_FAMILY: dict[str, ir.Family] = {
    "claude": "claude",
    "gemini": "gemini",
    "gpt": "responses",
    "openai": "responses",
    "codex": "responses",
    "responses": "responses",
}
_FIRST_CHAR_FAMILY: dict[str, ir.Family] = {"g": "responses", "C": "claude", "E": "claude", "R": "claude"}


def reasoning_from_blob(text: str, blob: str) -> ir.Reasoning:
    """A replayed reasoning item: the blob's family from its shape (spec §4.9.7)."""
    if not blob:
        return ir.Reasoning(text=text)
    if blob.startswith(REDACTED_PREFIX):
        return ir.Reasoning(text=text, signature=blob[len(REDACTED_PREFIX) :], family="claude", redacted=True)
    if blob.startswith(GEMINI_CARRIER_PREFIX):
        return ir.Reasoning(text=text, signature=blob, family="gemini")
    head, sep, rest = blob.partition("#")
    if sep and rest and head.lower() in _PREFIX_FAMILY:
        return ir.Reasoning(text=text, signature=rest, family=_PREFIX_FAMILY[head.lower()])
    return ir.Reasoning(text=text, signature=blob, family=_FIRST_CHAR_FAMILY.get(blob[:1]))


def encrypted_content(signature: str, redacted: bool) -> str:
    return REDACTED_PREFIX + signature if redacted else signature


# --- usage, finish, errors -----------------------------------------------------------------


def usage_from_wire(data: Any) -> ir.Usage:
    if not isinstance(data, dict):
        return ir.Usage()
    inp, out = int(data.get("input_tokens") or 0), int(data.get("output_tokens") or 0)
    in_details = data.get("input_tokens_details") or {}
    out_details = data.get("output_tokens_details") or {}
    return ir.Usage(
        input_tokens=inp,
        output_tokens=out,
        cached_tokens=int(in_details.get("cached_tokens") or 0),
        cache_write_tokens=int(in_details.get("cache_write_tokens") or 0),
        reasoning_tokens=int(out_details.get("reasoning_tokens") or 0),
        total_tokens=int(data.get("total_tokens") or inp + out),
    )


def usage_to_wire(usage: ir.Usage, reasoning_chars: int = 0) -> dict[str, Any]:
    """Responses usage; reasoning tokens estimated as chars/4 when the upstream did not count them."""
    reasoning = usage.reasoning_tokens
    if not reasoning and reasoning_chars and usage.output_tokens:
        reasoning = min(reasoning_chars // 4, usage.output_tokens)
    in_details: dict[str, int] = {"cached_tokens": usage.cached_tokens}
    if usage.cache_write_tokens:
        in_details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": in_details,
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": usage.total,
    }


def finish_from_response(resp: dict[str, Any], saw_tool: bool) -> ir.Finish:
    """The neutral finish of a Responses object (spec §4.7); any tool call wins."""
    status = str(resp.get("status") or "completed")
    details = resp.get("incomplete_details")
    reason = str(details.get("reason") or "") if isinstance(details, dict) else ""
    native = reason or status
    if saw_tool:
        return ir.Finish("tool_calls", native)
    if status == "incomplete" or reason:
        if reason in ("max_output_tokens", "max_tokens"):
            return ir.Finish("length", native)
        return ir.Finish("content_filter" if reason == "content_filter" else "other", native)
    if status not in ("completed", ""):
        return ir.Finish("other", native)
    stop_sequence = resp.get("stop_sequence")
    if isinstance(stop_sequence, str) and stop_sequence:
        return ir.Finish("stop_sequence", native, stop_sequence)
    return ir.Finish("stop", native)


def status_for(finish: ir.Finish) -> tuple[str, dict[str, str] | None]:
    """(status, incomplete_details) for a Responses client (R10)."""
    if finish.reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish.reason in ("content_filter", "refusal"):
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


_STATUS_BY_CODE = {
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "invalid_prompt": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "usage_limit_reached": 429,
    "insufficient_quota": 429,
    "server_is_overloaded": 529,
    "overloaded_error": 529,
    "slow_down": 529,
}


def error_status(error: dict[str, Any]) -> int:
    """The HTTP status an in-stream Codex error stands for (providers §7.5)."""
    for key in ("status_code", "status"):
        value = error.get(key)
        if isinstance(value, int) and 400 <= value <= 599:
            return value
    for key in ("code", "type"):
        status = _STATUS_BY_CODE.get(str(error.get(key) or ""))
        if status:
            return status
    if "at capacity" in str(error.get("message") or "").lower():
        return 429
    return 502


# Codes Codex CLI and the SDKs act on; other codes give way to the status's own code.
_CLIENT_CODES = frozenset(
    (
        "context_length_exceeded",
        "insufficient_quota",
        "invalid_prompt",
        "rate_limit_exceeded",
        "server_is_overloaded",
        "slow_down",
        "usage_limit_reached",
        "usage_not_included",
    )
)


def error_type_and_code(status: int) -> tuple[str, str | None]:
    """OpenAI's error ``type`` and default ``code`` for an HTTP status (spec §1.4)."""
    if status == 401:
        return "authentication_error", "invalid_api_key"
    if status == 403:
        return "permission_error", "insufficient_quota"
    if status == 404:
        return "invalid_request_error", "model_not_found"
    if status == 429:
        return "rate_limit_error", "rate_limit_exceeded"
    if status in (503, 529):
        return "server_error", "server_is_overloaded"
    if status >= 500:
        return "server_error", "internal_server_error"
    return "invalid_request_error", None


def _stream_code(status: int, code: str | None) -> str:
    if code in _CLIENT_CODES:
        return str(code)
    error_type, default = error_type_and_code(status)
    if default == "internal_server_error":
        return "server_error"  # the Responses vocabulary for a failed turn
    return default or code or error_type


def stream_error(
    status: int,
    message: str,
    code: str | None = None,
    *,
    sequence_number: int = 1,
    failed_response: dict[str, Any] | None = None,
) -> bytes:
    """An error inside a Responses stream: ``event: error``, or ``response.failed`` when given the response."""
    wire_code = _stream_code(status, code)
    if failed_response is None:
        data: dict[str, Any] = {
            "type": "error",
            "sequence_number": sequence_number,
            "code": wire_code,
            "message": message,
            "param": None,
        }
    else:
        failed = dict(failed_response, status="failed", error={"code": wire_code, "message": message})
        data = {"type": "response.failed", "sequence_number": sequence_number, "response": failed}
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# --- output items --------------------------------------------------------------------------

_ECHO_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "reasoning": None,
    "safety_identifier": None,
    "service_tier": None,
    "store": None,
    "temperature": None,
    "text": None,
    "tool_choice": "auto",
    "tools": None,
    "top_logprobs": None,
    "top_p": None,
    "truncation": None,
    "user": None,
    "metadata": None,
}
ECHO_KEYS = tuple(_ECHO_DEFAULTS)


def echoed_fields(req: ir.Request) -> dict[str, Any]:
    """The request fields a Responses object repeats (raw values kept by ``parse_request``)."""
    echo = dict(_ECHO_DEFAULTS, text={"format": {"type": "text"}}, tools=[], metadata={})
    raw = req.extensions.get("responses", {}).get("echo")
    if isinstance(raw, dict):
        echo.update(raw)
    else:
        echo.update(max_output_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p)
    return echo


def response_id(upstream_id: str) -> str:
    if upstream_id.startswith("resp_"):
        return upstream_id
    return "resp_" + (upstream_id or uuid.uuid4().hex)


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [text_part(text)]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def reasoning_item(item_id: str, text: str, encrypted: str) -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "type": "reasoning"}
    if encrypted:
        item["encrypted_content"] = encrypted
    item["summary"] = [{"type": "summary_text", "text": text}] if text else []
    return item


def call_item(req: ir.Request, call: ir.ToolCall, status: str = "completed") -> dict[str, Any]:
    """A ``function_call`` or ``custom_tool_call`` item with the client's own name and namespace."""
    name, namespace = client_tool_name(req, call.name)
    custom = call.kind == "custom" or call.name in custom_tool_names(req)
    if custom:
        value = call.arguments if call.kind == "custom" else unwrap_custom_input(call.arguments)
        item = {"id": "ctc_" + call.id, "type": "custom_tool_call", "status": status, "call_id": call.id}
        item.update(name=name, input=value)
    else:
        item = {"id": "fc_" + call.id, "type": "function_call", "status": status, "arguments": call.arguments or "{}"}
        item.update(call_id=call.id, name=name)
    if namespace:
        item["namespace"] = namespace
    return item


def image_item(item_id: str, data: str, media_type: str) -> dict[str, Any]:
    fmt = media_type.rpartition("/")[2] or "png"
    return {"id": item_id, "type": "image_generation_call", "status": "completed", "result": data, "output_format": fmt}


# --- upstream SSE → IR ---------------------------------------------------------------------


@dataclass(slots=True)
class _Call:
    index: int
    args_seen: bool = False
    ended: bool = False


@dataclass(slots=True)
class _ReasoningState:
    emitted: bool = False
    summary_index: int = -1
    parts_seen: set[int] = field(default_factory=set)


_REPAIR_MARKERS = (b"response.output_item.done", b"response.completed", b"response.incomplete")


class PassthroughFramer:
    """The framer of a Responses pass-through (§1.4): whole frames out, each ending in a blank line,
    and a terminal event whose ``response.output`` came empty (Codex does that) filled from the
    ``output_item.done`` items seen. Other frames go out byte for byte."""

    def __init__(self) -> None:
        self._tail = b""
        self._items: dict[int, Any] = {}

    def feed(self, chunk: bytes) -> bytes:
        data = self._tail + chunk if self._tail else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._tail = data
            return b""
        whole, self._tail = data[: cut + 2], data[cut + 2 :]
        if not any(marker in whole for marker in _REPAIR_MARKERS):
            return whole
        return b"".join(self._frame(frame) for frame in whole.split(b"\n\n") if frame.strip())

    def finish(self) -> bytes:
        """A last frame the upstream did not end with a blank line (once)."""
        tail, self._tail = self._tail.strip(b"\r\n"), b""
        return self._frame(tail) if tail.strip() else b""

    def _frame(self, frame: bytes) -> bytes:
        whole = frame + b"\n\n"
        if not any(marker in frame for marker in _REPAIR_MARKERS):
            return whole
        start = frame.find(b"data:")
        try:
            obj = orjson.loads(frame[start + 5 :]) if start >= 0 else None
        except orjson.JSONDecodeError:
            return whole
        if not isinstance(obj, dict):
            return whole
        kind = obj.get("type")
        if kind == "response.output_item.done" and isinstance(obj.get("output_index"), int):
            self._items[obj["output_index"]] = obj.get("item")
        elif kind in ("response.completed", "response.incomplete"):
            response = obj.get("response")
            if isinstance(response, dict) and not response.get("output") and self._items:
                response["output"] = [self._items[k] for k in sorted(self._items)]
                return b"event: " + str(kind).encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"
        return whole


class StreamParser:
    """Responses SSE bytes (Codex backend, OpenAI API) → IR events."""

    def __init__(self, req: ir.Request | None = None) -> None:
        self._names, self._ids = reverse_maps(req)
        self.response_id = ""  # the upstream's, and its last sequence_number (for a pass-through's own error)
        self.last_sequence = 0
        self._frames = SseFrames()
        self._started = False
        self._closed = False
        self._content = False
        self._call_count = 0
        self._calls: dict[Any, _Call] = {}
        self._calls_by_index: dict[Any, _Call] = {}
        self._open_calls: list[_Call] = []
        self._early_args: dict[Any, list[str]] = {}
        self._text_items: set[Any] = set()
        self._reasoning: dict[Any, _ReasoningState] = {}
        self._dispatch = {
            "response.output_text.delta": self._text_delta,
            "response.refusal.delta": self._text_delta,
            "response.reasoning_summary_text.delta": self._reasoning_delta,
            "response.reasoning_text.delta": self._reasoning_delta,
            "response.reasoning_summary_text.done": self._reasoning_text_done,
            "response.function_call_arguments.delta": self._args_delta,
            "response.custom_tool_call_input.delta": self._args_delta,
            "response.function_call_arguments.done": self._args_done,
            "response.custom_tool_call_input.done": self._args_done,
            "response.output_item.added": self._item_added,
            "response.output_item.done": self._item_done,
            "response.created": self._start,
            "response.in_progress": self._start,
            "response.completed": self._terminal,
            "response.incomplete": self._terminal,
            "response.done": self._terminal,
            "response.failed": self._error,
            "error": self._error,
        }

    def feed(self, chunk: bytes) -> list[ir.Event]:
        events: list[ir.Event] = []
        for frame in self._frames.feed(chunk):
            self._frame(frame, events)
        return events

    def finish(self) -> list[ir.Event]:
        """Whatever the end of the stream implies; a stream without a terminal event is an error."""
        events: list[ir.Event] = []
        tail = self._frames.rest()
        if tail:
            self._frame(tail, events)  # a last frame without its blank line
        if not self._closed:
            self._closed = True
            message = "upstream closed the stream before the response completed"
            events.append(ir.StreamError(502, message, "stream_incomplete"))
        return events

    def _frame(self, frame: bytes, out: list[ir.Event]) -> None:
        if self._closed:
            return
        start = frame.find(b"data:")
        if start < 0:
            return
        payload = frame[start + 5 :]
        if b"\n" in payload:  # multi-line data, or other fields after it
            lines = [line[5:] for line in frame[start:].split(b"\n") if line.startswith(b"data:")]
            payload = b"\n".join(line[1:] if line[:1] == b" " else line for line in lines)
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return  # keep-alive text, "[DONE]" or a malformed frame: dropped
        if isinstance(obj, dict):
            sequence = obj.get("sequence_number")
            if isinstance(sequence, int):
                self.last_sequence = sequence
            handler = self._dispatch.get(str(obj.get("type")))
            if handler is not None:
                handler(obj, out)

    def _start(self, obj: dict[str, Any], out: list[ir.Event]) -> None:
        if self._started:
            return
        self._started = True
        resp = obj.get("response")
        resp = resp if isinstance(resp, dict) else {}
        created = resp.get("created_at")
        self.response_id = str(resp.get("id") or "")
        out.append(ir.Start(self.response_id, str(resp.get("model") or ""), int(created or 0)))

    def _text_delta(self, obj: dict[str, Any], out: list[ir.Event]) -> None:
        if not self._started:
            self._start(obj, out)
        delta = obj.get("delta")
        if delta:
            self._content = True
            self._text_items.add(obj.get("item_id"))
            out.append(ir.TextDelta(delta))

    def _reasoning_delta(self, obj: dict[str, Any], out: list[ir.Event]) -> None:
        delta = obj.get("delta")
        if delta:
            self._reasoning_text(obj, str(delta), out)

    def _reasoning_text_done(self, obj: dict[str, Any], out: list[ir.Event]) -> None:
        state = self._reasoning.get(obj.get("item_id"))
        if (state is None or obj.get("summary_index", 0) not in state.parts_seen) and obj.get("text"):
            self._reasoning_text(obj, str(obj["text"]), out)

    def _reasoning_text(self, obj: dict[str, Any], text: str, out: list[ir.Event]) -> None:
        if not self._started:
            self._start(obj, out)
        self._content = True
        state = self._reasoning.setdefault(obj.get("item_id"), _ReasoningState())
        index = obj.get("summary_index", obj.get("content_index", 0))
        if state.emitted and index != state.summary_index:
            text = "\n\n" + text  # summary parts of one item are joined by a blank line
        state.emitted, state.summary_index = True, index
        state.parts_seen.add(index)
        out.append(ir.ReasoningDelta(text))

    def _item_added(self, obj: dict[str, Any], out: list[ir.Event]) -> None:
        item = obj.get("item")
        if isinstance(item, dict) and item.get("type") in ("function_call", "custom_tool_call"):
            self._announce(item, obj.get("output_index"), out)

    def _announce(self, item: dict[str, Any], output_index: Any, out: list[ir.Event]) -> _Call:
        if not self._started:
            self._start({}, out)
        self._content = True
        call = _Call(index=self._call_count)
        self._call_count += 1
        kind: Literal["function", "custom"] = "custom" if item.get("type") == "custom_tool_call" else "function"
        name = str(item.get("name") or "")
        name = qualified_name(str(item.get("namespace") or ""), self._names.get(name, name))
        call_id = str(item.get("call_id") or item.get("id") or f"call_{call.index}")
        out.append(ir.ToolCallStart(call.index, self._ids.get(call_id, call_id), name, kind))
        if item.get("id"):
            self._calls[item["id"]] = call
        if output_index is not None:
            self._calls_by_index[output_index] = call
        self._open_calls.append(call)
        early = self._early_args.pop(item.get("id"), None)
        if early:
            call.args_seen = True
            out.append(ir.ToolCallDelta(call.index, "".join(early)))
        return call

    def _find_call(self, obj: dict[str, Any]) -> _Call | None:
        return self._calls.get(obj.get("item_id") or obj.get("id")) or self._calls_by_index.get(obj.get("output_index"))

    def _args_delta(self, obj: dict[str, Any], out: list[ir.Event]) -> None:
        delta = obj.get("delta")
        if not delta:
            return
        call = self._find_call(obj)
        if call is None:
            self._early_args.setdefault(obj.get("item_id"), []).append(delta)
        elif not call.ended:
            call.args_seen = True
            out.append(ir.ToolCallDelta(call.index, delta))

    def _args_done(self, obj: dict[str, Any], out: list[ir.Event]) -> None:
        call = self._find_call(obj)
        full = obj.get("arguments", obj.get("input"))
        if call is not None and not call.args_seen and not call.ended and full:
            call.args_seen = True
            out.append(ir.ToolCallDelta(call.index, str(full)))

    def _item_done(self, obj: dict[str, Any], out: list[ir.Event]) -> None:
        item = obj.get("item")
        if not isinstance(item, dict):
            return
        kind = item.get("type")
        if kind in ("function_call", "custom_tool_call"):
            call = self._find_call(dict(item, output_index=obj.get("output_index")))
            if call is None:
                call = self._announce(item, obj.get("output_index"), out)
            full = item.get("arguments", item.get("input"))
            if not call.args_seen and full:
                call.args_seen = True
                out.append(ir.ToolCallDelta(call.index, str(full)))
            self._end_call(call, out)
        elif kind == "reasoning":
            self._reasoning_done(item, out)
        elif kind == "message":
            seen = item.get("id") in self._text_items or None in self._text_items
            text = "" if seen else "".join(_message_texts(item))
            if text:
                self._text_delta({"delta": text, "item_id": item.get("id")}, out)
        elif kind == "image_generation_call" and item.get("result"):
            self._content = True
            out.append(ir.ImageOutput(str(item["result"]), "image/" + str(item.get("output_format") or "png")))

    def _end_call(self, call: _Call, out: list[ir.Event]) -> None:
        if not call.ended:
            call.ended = True
            self._open_calls.remove(call)
            out.append(ir.ToolCallEnd(call.index))

    def _reasoning_done(self, item: dict[str, Any], out: list[ir.Event]) -> None:
        state = self._reasoning.get(item.get("id"))
        emitted = state is not None and state.emitted
        if not emitted:
            texts = [str(s.get("text")) for s in item.get("summary") or [] if isinstance(s, dict) and s.get("text")]
            if not texts:
                texts = [str(c.get("text")) for c in item.get("content") or [] if isinstance(c, dict) and c.get("text")]
            if texts:
                self._reasoning_text({"item_id": item.get("id")}, "\n\n".join(texts), out)
                emitted = True
        # Only the finished item's blob counts: output_item.added may carry a pre-content snapshot.
        signature = str(item.get("encrypted_content") or "")
        self._reasoning.pop(item.get("id"), None)
        if emitted or signature:
            self._content = True
            out.append(ir.ReasoningDone(signature=signature, family="responses"))

    def _terminal(self, obj: dict[str, Any], out: list[ir.Event]) -> None:
        resp = obj.get("response")
        resp = resp if isinstance(resp, dict) else {}
        if not self._started:
            self._start(obj, out)
        if not self._content:  # nothing streamed: take the items from the terminal object
            for index, item in enumerate(resp.get("output") or []):
                self._item_done({"item": item, "output_index": index}, out)
        for call in list(self._open_calls):
            self._end_call(call, out)
        if resp.get("usage"):
            out.append(ir.UsageUpdate(usage_from_wire(resp["usage"])))
        out.append(ir.End(finish_from_response(resp, self._call_count > 0)))
        self._closed = True

    def _error(self, obj: dict[str, Any], out: list[ir.Event]) -> None:
        resp = obj.get("response")
        error = (resp if isinstance(resp, dict) else obj).get("error")
        if not isinstance(error, dict):
            error = {} if isinstance(resp, dict) else {k: obj.get(k) for k in ("code", "message", "status")}
        code = str(error.get("code") or error.get("type") or "")
        message = str(error.get("message") or "upstream error")
        out.append(ir.StreamError(error_status(error), message, code))
        self._closed = True


def _message_texts(item: dict[str, Any]) -> list[str]:
    texts = []
    for part in item.get("content") or []:
        if isinstance(part, dict):
            value = part.get("text") if part.get("type") != "refusal" else part.get("refusal")
            if isinstance(value, str):
                texts.append(value)
    return texts


# --- IR → client SSE -----------------------------------------------------------------------

_TEXT_DELTA_PREFIX = b"event: response.output_text.delta\ndata: "


@dataclass(slots=True)
class _OpenCall:
    index: int
    output_index: int
    item: dict[str, Any]
    custom: bool
    wrapped: bool  # a custom tool reached through a non-Responses upstream: input as {"input": ...}
    args: list[str] = field(default_factory=list)


class StreamRenderer:
    """IR events → the Responses SSE of spec §3.4, ``sequence_number`` from 1, no ``[DONE]``.

    ``codex_client`` selects ``response.failed`` instead of an ``error`` event for stream errors.
    Items are never interleaved: while a tool call is open, events of other calls (and any text)
    wait until it ends.
    """

    def __init__(self, req: ir.Request, *, codex_client: bool = False) -> None:
        self.req = req
        self.codex_client = codex_client
        self._seq = 0
        self._id = ""
        self._base = ""
        self._model = req.model
        self._created = 0
        self._started = False
        self._finished = False
        self._usage = ir.Usage()
        self._output: list[dict[str, Any] | None] = []
        self._open: str | None = None  # "message" | "reasoning"
        self._item_id = ""
        self._index = -1
        self._text: list[str] = []
        self._summary_open = False
        self._reasoning_chars = 0
        self._call: _OpenCall | None = None
        self._deferred: list[ir.Event] = []

    def feed(self, event: ir.Event) -> bytes:
        if self._finished:
            return b""
        if type(event) is ir.TextDelta and self._open == "message" and self._call is None:
            self._text.append(event.text)  # the hot path: one frame, no dispatch
            self._seq += 1
            return (
                _TEXT_DELTA_PREFIX
                + orjson.dumps(
                    {
                        "type": "response.output_text.delta",
                        "sequence_number": self._seq,
                        "item_id": self._item_id,
                        "output_index": self._index,
                        "content_index": 0,
                        "delta": event.text,
                        "logprobs": [],
                    }
                )
                + b"\n\n"
            )
        out: list[bytes] = []
        self._handle(event, out)
        return b"".join(out)

    def finish(self) -> bytes:
        """Nothing after a terminal event; a stream that never ended is reported as an error."""
        if self._finished:
            return b""
        out: list[bytes] = []
        self._handle(ir.StreamError(502, "upstream stream ended before the response completed"), out)
        return b"".join(out)

    # -- dispatch --

    def _handle(self, event: ir.Event, out: list[bytes]) -> None:
        if isinstance(event, ir.StreamError):
            self._fail(event, out)
            return
        if isinstance(event, ir.UsageUpdate):
            self._usage = self._usage.merged(event.usage)
            return
        call = self._call
        if call is not None and not isinstance(event, ir.End):
            if isinstance(event, (ir.ToolCallDelta, ir.ToolCallEnd)) and event.index == call.index:
                self._call_event(event, call, out)
            else:
                self._deferred.append(event)
            return
        if not self._started:
            self._begin(event if isinstance(event, ir.Start) else None, out)
            if isinstance(event, ir.Start):
                return
        if isinstance(event, ir.TextDelta):
            if event.text:
                self._text_delta(event.text, out)
        elif isinstance(event, ir.ReasoningDelta):
            if event.text:
                self._reasoning_delta(event.text, out)
        elif isinstance(event, ir.ReasoningDone):
            if self._open == "reasoning" or event.signature:  # never an empty reasoning item
                self._reasoning_done(event, out)
        elif isinstance(event, ir.ToolCallStart):
            self._open_call(event, out)
        elif isinstance(event, ir.ImageOutput):
            self._image(event, out)
        elif isinstance(event, ir.End):
            self._end(event.finish, out)
        elif isinstance(event, ir.Start) and event.usage:
            self._usage = self._usage.merged(event.usage)

    def _emit(self, out: list[bytes], kind: str, payload: dict[str, Any]) -> None:
        self._seq += 1
        data = {"type": kind, "sequence_number": self._seq}
        data.update(payload)
        out.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")

    def _envelope(self, status: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self._id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "model": self._model,
            "output": [item for item in self._output if item is not None],
        }
        body.update(echoed_fields(self.req))
        return body

    def _begin(self, start: ir.Start | None, out: list[bytes]) -> None:
        self._started = True
        self._id = response_id(start.id if start else "")
        self._base = self._id[5:]
        if start is not None:
            self._model = start.model or self._model
            self._created = start.created
            if start.usage:
                self._usage = self._usage.merged(start.usage)
        self._created = self._created or int(time.time())
        self._emit(out, "response.created", {"response": self._envelope("in_progress")})
        self._emit(out, "response.in_progress", {"response": self._envelope("in_progress")})

    def _add_item(self, item: dict[str, Any], out: list[bytes]) -> int:
        index = len(self._output)
        self._output.append(None)
        self._emit(out, "response.output_item.added", {"output_index": index, "item": item})
        return index

    def _done_item(self, index: int, item: dict[str, Any], out: list[bytes]) -> None:
        self._output[index] = item
        self._emit(out, "response.output_item.done", {"output_index": index, "item": item})

    # -- message and reasoning items --

    def _close_open(self, out: list[bytes], status: str = "completed") -> None:
        if self._open == "message":
            self._close_message(out, status)
        elif self._open == "reasoning":
            self._close_reasoning("", out)

    def _text_delta(self, text: str, out: list[bytes]) -> None:
        if self._open != "message":
            self._close_open(out)
            self._item_id = f"msg_{self._base}_{len(self._output)}"
            item = {"id": self._item_id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
            self._index = self._add_item(item, out)
            self._open, self._text = "message", []
            part = {"item_id": self._item_id, "output_index": self._index, "content_index": 0, "part": text_part("")}
            self._emit(out, "response.content_part.added", part)
        self._text.append(text)
        delta = {"item_id": self._item_id, "output_index": self._index, "content_index": 0, "delta": text}
        self._emit(out, "response.output_text.delta", dict(delta, logprobs=[]))

    def _close_message(self, out: list[bytes], status: str) -> None:
        text = "".join(self._text)
        where = {"item_id": self._item_id, "output_index": self._index, "content_index": 0}
        self._emit(out, "response.output_text.done", dict(where, text=text, logprobs=[]))
        self._emit(out, "response.content_part.done", dict(where, part=text_part(text)))
        self._done_item(self._index, message_item(self._item_id, text, status), out)
        self._open = None

    def _open_reasoning(self, out: list[bytes]) -> None:
        self._close_open(out)
        self._item_id = f"rs_{self._base}_{len(self._output)}"
        item = {"id": self._item_id, "type": "reasoning", "status": "in_progress", "summary": []}
        self._index = self._add_item(item, out)
        self._open, self._text, self._summary_open = "reasoning", [], False

    def _reasoning_delta(self, text: str, out: list[bytes]) -> None:
        if self._open != "reasoning":
            self._open_reasoning(out)
        where = {"item_id": self._item_id, "output_index": self._index, "summary_index": 0}
        if not self._summary_open:
            self._summary_open = True
            self._emit(
                out, "response.reasoning_summary_part.added", dict(where, part={"type": "summary_text", "text": ""})
            )
        self._text.append(text)
        self._reasoning_chars += len(text)
        self._emit(out, "response.reasoning_summary_text.delta", dict(where, delta=text))

    def _reasoning_done(self, event: ir.ReasoningDone, out: list[bytes]) -> None:
        if self._open != "reasoning":
            self._open_reasoning(out)
        self._close_reasoning(encrypted_content(event.signature, event.redacted), out)

    def _close_reasoning(self, encrypted: str, out: list[bytes]) -> None:
        text = "".join(self._text)
        if self._summary_open:
            where = {"item_id": self._item_id, "output_index": self._index, "summary_index": 0}
            self._emit(out, "response.reasoning_summary_text.done", dict(where, text=text))
            part = {"type": "summary_text", "text": text}
            self._emit(out, "response.reasoning_summary_part.done", dict(where, part=part))
        self._done_item(self._index, reasoning_item(self._item_id, text, encrypted), out)
        self._open, self._summary_open = None, False

    # -- tool calls, images --

    def _open_call(self, event: ir.ToolCallStart, out: list[bytes]) -> None:
        self._close_open(out)
        call = ir.ToolCall(id=event.id, name=event.name, arguments="", kind=event.kind)
        item = call_item(self.req, call, status="in_progress")
        custom = item["type"] == "custom_tool_call"
        if not custom:
            item["arguments"] = ""
        index = self._add_item(item, out)
        self._call = _OpenCall(event.index, index, item, custom, wrapped=event.kind != "custom")

    def _call_event(self, event: ir.ToolCallDelta | ir.ToolCallEnd, call: _OpenCall, out: list[bytes]) -> None:
        if isinstance(event, ir.ToolCallDelta):
            call.args.append(event.arguments)
            if not call.custom and event.arguments:
                delta = {"item_id": call.item["id"], "output_index": call.output_index, "delta": event.arguments}
                self._emit(out, "response.function_call_arguments.delta", delta)
        else:
            self._close_call(call, out)

    def _close_call(self, call: _OpenCall, out: list[bytes]) -> None:
        item, where = call.item, {"item_id": call.item["id"], "output_index": call.output_index}
        args = "".join(call.args)
        if call.custom:
            value = unwrap_custom_input(args) if call.wrapped else args
            self._emit(out, "response.custom_tool_call_input.done", dict(where, input=value))
            item = dict(item, status="completed", input=value)
        else:
            args = args or "{}"
            self._emit(out, "response.function_call_arguments.done", dict(where, arguments=args))
            item = dict(item, status="completed", arguments=args)
        self._done_item(call.output_index, item, out)
        self._call = None
        pending, self._deferred = self._deferred, []
        for event in pending:
            self._handle(event, out)

    def _image(self, event: ir.ImageOutput, out: list[bytes]) -> None:
        self._close_open(out)
        item_id = f"ig_{self._base}_{len(self._output)}"
        added = {"id": item_id, "type": "image_generation_call", "status": "in_progress"}
        index = self._add_item(added, out)
        self._done_item(index, image_item(item_id, event.data, event.media_type), out)

    # -- terminal --

    def _end(self, finish: ir.Finish, out: list[bytes]) -> None:
        while self._call is not None:  # a call the upstream never closed, then whatever waited on it
            self._close_call(self._call, out)
        status, details = status_for(finish)
        self._close_open(out, "incomplete" if details else "completed")
        body = self._envelope(status)
        body["incomplete_details"] = details
        body["usage"] = usage_to_wire(self._usage, self._reasoning_chars)
        self._emit(out, "response.incomplete" if details else "response.completed", {"response": body})
        self._finished = True

    def _fail(self, event: ir.StreamError, out: list[bytes]) -> None:
        self._seq += 1
        failed = None
        if self.codex_client:
            failed = self._envelope("failed") if self._started else {"id": response_id(""), "object": "response"}
        out.append(
            stream_error(event.status, event.message, event.type, sequence_number=self._seq, failed_response=failed)
        )
        self._finished = True
