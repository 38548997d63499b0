"""OpenAI Chat Completions streams and the wire facts both directions share.

``StreamParser`` turns an OpenAI-compatible upstream's SSE bytes into IR events; ``StreamRenderer``
turns IR events into the SSE frames a Chat Completions client expects (§3.1). Both sit on the hot
path: text deltas take a byte-template fast path and never build a chunk dict.

Pure: no Django, no I/O.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from gateway import ir

# --- usage ---------------------------------------------------------------------------------


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_from(data: Any) -> ir.Usage | None:
    """Normalised usage from a response or chunk's ``usage`` object (cached tokens counted once).

    ``prompt_tokens`` already includes cached tokens and ``completion_tokens`` reasoning tokens,
    which is the IR's meaning. Responses-style names and DeepSeek's cache-hit count are read too.
    """
    if not isinstance(data, dict):
        return None
    prompt = _int(data.get("prompt_tokens")) or _int(data.get("input_tokens"))
    completion = _int(data.get("completion_tokens")) or _int(data.get("output_tokens"))
    prompt_details = data.get("prompt_tokens_details") or data.get("input_tokens_details")
    completion_details = data.get("completion_tokens_details") or data.get("output_tokens_details")
    cached = cache_write = reasoning = 0
    if isinstance(prompt_details, dict):
        cached = _int(prompt_details.get("cached_tokens"))
        cache_write = _int(prompt_details.get("cached_creation_tokens")) or _int(
            prompt_details.get("cache_write_tokens")
        )
    if isinstance(completion_details, dict):
        reasoning = _int(completion_details.get("reasoning_tokens"))
    return ir.Usage(
        input_tokens=prompt,
        output_tokens=completion,
        cached_tokens=cached or _int(data.get("prompt_cache_hit_tokens")),
        reasoning_tokens=reasoning,
        total_tokens=_int(data.get("total_tokens")) or prompt + completion,
        cache_write_tokens=cache_write,
    )


def usage_body(usage: ir.Usage) -> dict[str, Any]:
    """The Chat Completions ``usage`` object (§4.8): prompt includes cached, completion includes reasoning."""
    prompt_details: dict[str, int] = {"cached_tokens": usage.cached_tokens}
    if usage.cache_write_tokens:
        prompt_details["cached_creation_tokens"] = usage.cache_write_tokens  # CPA/OpenRouter extension
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


# --- finish reasons ------------------------------------------------------------------------

_FINISH_FROM_WIRE: dict[str, ir.FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    # Values some OpenAI-compatible servers send instead of the four standard ones.
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "end_turn": "stop",
    "eos": "stop",
    "stop_sequence": "stop",
    "safety": "content_filter",
    "refusal": "refusal",
}
_FINISH_TO_WIRE: dict[str, str] = {
    "stop": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "other": "stop",
}


def finish_from(native: str, *, saw_tool: bool) -> ir.Finish:
    """The IR finish of an upstream ``finish_reason``; a produced tool call wins (§3.5)."""
    reason = _FINISH_FROM_WIRE.get(native, "other") if native else "stop"
    if saw_tool:
        reason = "tool_calls"
    elif reason == "tool_calls":
        reason = "stop"  # the upstream claimed a tool call it never produced
    return ir.Finish(reason=reason, native=native)


def finish_reason(finish: ir.Finish, *, saw_tool: bool) -> str:
    """The client's ``finish_reason``: only stop, length, tool_calls or content_filter (R5)."""
    if saw_tool:
        return "tool_calls"
    wire = _FINISH_TO_WIRE.get(finish.reason, "stop")
    return "stop" if wire == "tool_calls" else wire


# --- errors --------------------------------------------------------------------------------

_ERROR_KIND: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "insufficient_quota"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}
_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "permission_error": 403,
    "insufficient_quota": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "overloaded_error": 503,
}


def error_envelope(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """``{"error":{...}}`` with the type (and default code) OpenAI uses for ``status`` (§1.4)."""
    kind, default_code = _ERROR_KIND.get(status) or (
        ("server_error", "internal_server_error") if status >= 500 else ("invalid_request_error", None)
    )
    return {"error": {"message": message, "type": kind, "param": None, "code": code or default_code}}


def stream_error(status: int, message: str, code: str | None = None) -> bytes:
    """An error inside an SSE stream, as OpenAI sends it (the SDKs raise ``APIError``); no ``[DONE]`` follows."""
    return _frame(error_envelope(status, message, code))


def stream_error_from(error: Any) -> ir.StreamError:
    """An upstream's in-stream ``{"error": ...}`` object as an IR event."""
    if not isinstance(error, dict):
        return ir.StreamError(status=500, message=str(error) or "upstream error")
    kind, code = str(error.get("type") or ""), error.get("code")
    if isinstance(code, int) and 400 <= code <= 599:
        status = code
    else:
        status = _STATUS_BY_TYPE.get(kind) or _STATUS_BY_TYPE.get(str(code)) or 500
    return ir.StreamError(status=status, message=str(error.get("message") or "upstream error"), type=kind)


# --- upstream SSE → IR events --------------------------------------------------------------


@dataclass(slots=True)
class _Call:
    """One streamed tool call, keyed by the upstream's ``index``; announced once id and name are known."""

    id: str = ""
    name: str = ""
    kind: Literal["function", "custom"] = "function"
    signature: str = ""
    wrapped: bool = False  # a custom tool sent as a function taking {"input": string}
    ordinal: int = -1
    pending: list[str] = field(default_factory=list)


def custom_tools_wrapped(req: ir.Request | None) -> frozenset[str]:
    """Names of the custom tools ``render_request`` declared as ``{"input": string}`` functions."""
    if req is None or req.source == "openai":
        return frozenset()
    return frozenset(t.name for t in req.tools if t.kind == "custom")


def unwrap_custom_input(arguments: str) -> str:
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    return value["input"] if isinstance(value, dict) and isinstance(value.get("input"), str) else arguments


def thought_signature(call: dict[str, Any]) -> str:
    """A Gemini thought signature riding on an OpenAI-shaped tool call, wherever the server put it."""
    for holder in (call, call.get("function")):
        if not isinstance(holder, dict):
            continue
        extra = holder.get("extra_content")
        google = extra.get("google") if isinstance(extra, dict) else None
        for value in (
            google.get("thought_signature") if isinstance(google, dict) else None,
            holder.get("thoughtSignature"),
            holder.get("thought_signature"),
        ):
            if isinstance(value, str) and value:
                return value
    return ""


class StreamParser:
    """OpenAI-compatible SSE bytes → IR events.

    Reads frames split anywhere, ``\\r\\n`` line ends and comments; drops everything after
    ``[DONE]``. ``End`` waits for ``[DONE]`` (or the end of the body) because usage arrives in a
    separate ``choices: []`` chunk after ``finish_reason``; it is preceded by one ``UsageUpdate``.
    ``saw_done`` / ``saw_finish`` tell the caller whether the upstream ended properly (§1.3).
    """

    def __init__(self, req: ir.Request | None = None) -> None:
        self.saw_done = False
        self.saw_finish = False
        self._custom = custom_tools_wrapped(req)
        self._buffer = b""
        self._partial = b""  # a data payload continued on the next data line
        self._started = False
        self._ended = False
        self._id = ""
        self._finish: ir.Finish | None = None
        self._usage: ir.Usage | None = None
        self._calls: dict[int, _Call] = {}
        self._last_key = 0
        self._ordinals = 0

    def feed(self, chunk: bytes) -> list[ir.Event]:
        if self._ended:
            return []
        data = self._buffer + chunk if self._buffer else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._buffer = data
            return []
        self._buffer = data[cut + 1 :]
        out: list[ir.Event] = []
        for line in data[:cut].split(b"\n"):
            if line.startswith(b"data:"):
                self._data(line[5:].strip(), out)
                if self._ended:
                    break
            elif self._partial and not line.strip():
                self._partial = b""  # the event ended without ever forming JSON
        return out

    def finish(self) -> list[ir.Event]:
        """What the end of the upstream body implies: the last unterminated line, then ``End``."""
        if self._ended:
            return []
        out = self.feed(b"\n") if self._buffer else []
        if not self._ended:
            self._end(out)
        return out

    # -- frames

    def _data(self, payload: bytes, out: list[ir.Event]) -> None:
        if self._partial:
            payload = self._partial + b"\n" + payload
        if payload == b"[DONE]":
            self.saw_done = True
            self._end(out)
            return
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._partial = payload if len(payload) < 1 << 20 else b""
            return
        self._partial = b""
        if isinstance(obj, dict):
            self._chunk(obj, out)

    def _chunk(self, obj: dict[str, Any], out: list[ir.Event]) -> None:
        error = obj.get("error")
        if error:
            out.append(stream_error_from(error))
            self._ended = True
            return
        if not self._started:
            self._started = True
            self._id = str(obj.get("id") or "")
            created = obj.get("created")
            out.append(ir.Start(id=self._id, model=str(obj.get("model") or ""), created=_int(created)))
        choices = obj.get("choices")
        if choices and isinstance(choices, list):
            choice = choices[0]
            if isinstance(choice, dict) and not choice.get("index"):  # n > 1: the IR holds one answer
                delta = choice.get("delta")
                if delta:
                    self._delta(delta, out)
                reason = choice.get("finish_reason")
                if reason and self._finish is None:
                    self._on_finish(str(reason), out)
        usage = obj.get("usage")
        if usage:
            found = usage_from(usage)
            if found is not None:
                self._usage = found if self._usage is None else self._usage.merged(found)

    def _delta(self, delta: dict[str, Any], out: list[ir.Event]) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and isinstance(reasoning, str):
            out.append(ir.ReasoningDelta(reasoning))
        content = delta.get("content")
        if content and isinstance(content, str):
            out.append(ir.TextDelta(content))
        refusal = delta.get("refusal")
        if refusal and isinstance(refusal, str):
            out.append(ir.TextDelta(refusal))
        calls = delta.get("tool_calls")
        if calls and isinstance(calls, list):
            for position, call in enumerate(calls):
                if isinstance(call, dict):
                    self._tool_delta(call, position, out)
        images = delta.get("images")
        if images and isinstance(images, list):
            out.extend(_image_events(images))

    # -- tool calls

    def _key(self, call: dict[str, Any], position: int) -> int:
        index = call.get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            return index
        call_id = call.get("id")
        if call_id:
            known = next((k for k, c in self._calls.items() if c.id == call_id), None)
            return known if known is not None else max(self._calls, default=-1) + 1
        return self._last_key if self._calls else position

    def _tool_delta(self, raw: dict[str, Any], position: int, out: list[ir.Event]) -> None:
        key = self._last_key = self._key(raw, position)
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = _Call()
        custom = raw.get("type") == "custom" or isinstance(raw.get("custom"), dict)
        body = raw.get("custom") if custom else raw.get("function")
        body = body if isinstance(body, dict) else {}
        if custom:
            call.kind = "custom"
        call_id, name = raw.get("id"), body.get("name")
        if not call.id and isinstance(call_id, str) and call_id:
            call.id = call_id
        if not call.name and isinstance(name, str) and name:
            call.name = name
        if not call.signature:
            call.signature = thought_signature(raw)
        args = body.get("input" if custom else "arguments")
        if isinstance(args, dict):
            args = orjson.dumps(args).decode()
        args = args if isinstance(args, str) else ""
        if call.ordinal < 0 or call.wrapped:
            if args:
                call.pending.append(args)
            if call.ordinal < 0 and call.id and call.name:
                self._announce(call, out)
        elif args:
            out.append(ir.ToolCallDelta(call.ordinal, args))

    def _announce(self, call: _Call, out: list[ir.Event]) -> None:
        call.ordinal, self._ordinals = self._ordinals, self._ordinals + 1
        if call.kind == "function" and call.name in self._custom:
            call.kind, call.wrapped = "custom", True
        out.append(ir.ToolCallStart(call.ordinal, call.id, call.name, call.kind, call.signature))
        if call.pending and not call.wrapped:
            out.append(ir.ToolCallDelta(call.ordinal, "".join(call.pending)))
            call.pending.clear()

    def _close_calls(self, out: list[ir.Event]) -> None:
        """Announce calls whose id or name never came (§6 item 18), release wrapped input, end them all."""
        for key, call in self._calls.items():
            if call.ordinal < 0:
                if not (call.id or call.name or call.pending):
                    continue
                call.id = call.id or f"call_{self._id or 'chat'}_{key}"
                call.name = call.name or f"tool_{key}"
                self._announce(call, out)
            if call.wrapped:
                out.append(ir.ToolCallDelta(call.ordinal, unwrap_custom_input("".join(call.pending))))
                call.pending.clear()
        ordinals = sorted(c.ordinal for c in self._calls.values() if c.ordinal >= 0)
        out.extend(ir.ToolCallEnd(ordinal) for ordinal in ordinals)

    def _on_finish(self, reason: str, out: list[ir.Event]) -> None:
        self.saw_finish = True
        self._close_calls(out)
        self._finish = finish_from(reason, saw_tool=self._ordinals > 0)

    def _end(self, out: list[ir.Event]) -> None:
        if self._finish is None:
            self._close_calls(out)
            self._finish = ir.Finish(reason="tool_calls" if self._ordinals else "stop")
        if self._usage is not None:
            out.append(ir.UsageUpdate(self._usage))
        out.append(ir.End(self._finish))
        self._ended = True


def _image_events(images: list[Any]) -> list[ir.Event]:
    events: list[ir.Event] = []
    for image in images:
        holder = image.get("image_url") if isinstance(image, dict) else None
        url = holder.get("url") if isinstance(holder, dict) else holder
        if isinstance(url, str) and url.startswith("data:") and "," in url:
            header, _, data = url[5:].partition(",")
            events.append(ir.ImageOutput(data=data, media_type=header.split(";")[0] or "image/png"))
    return events


# --- IR events → client SSE ----------------------------------------------------------------

_DONE = b"data: [DONE]\n\n"
_OPEN_TAIL = b',"logprobs":null,"finish_reason":null}]}\n\n'


class StreamRenderer:
    """IR events → Chat Completions SSE frames (§3.1).

    The role chunk comes first; tool calls are announced with their 0-based ordinal and then
    continued with ``index`` + ``arguments`` only (R7); usage goes in one ``choices: []`` chunk
    before ``[DONE]`` and only when the client asked for it (R9); an error ends the stream
    without ``[DONE]``.
    """

    def __init__(self, req: ir.Request) -> None:
        self._model = req.model
        self._wants_usage = req.include_usage
        self._head = b""  # 'data: {"id":…,"model":…' without the closing brace
        self._pre = b""  # …',"choices":[{"index":0,"delta":'
        self._open = False  # the role chunk went out and no End/error has come yet
        self._closed = False  # End or an error came: no more content
        self._finished = False
        self._usage = ir.Usage()
        self._ordinals: dict[int, int] = {}
        self._custom: set[int] = set()
        self._silent: set[int] = set()  # function calls that have not received arguments yet
        self._images = 0

    def feed(self, event: ir.Event) -> bytes:
        if type(event) is ir.TextDelta and self._open:  # the hot path
            text = event.text
            return self._pre + b'{"content":' + orjson.dumps(text) + b"}" + _OPEN_TAIL if text else b""
        if self._finished or (self._closed and not isinstance(event, ir.UsageUpdate)):
            return b""
        if isinstance(event, ir.UsageUpdate):
            self._usage = self._usage.merged(event.usage)
            return b""
        if isinstance(event, ir.StreamError):
            self._open, self._closed, self._finished = False, True, True
            return stream_error(event.status, event.message)
        head = b"" if self._open else self._start(event if isinstance(event, ir.Start) else None)
        return head + self._content(event)

    def finish(self) -> bytes:
        """Usage (when asked for) and ``[DONE]``, once; nothing after an error."""
        if self._finished:
            return b""
        head = b"" if self._head else self._start(None)
        self._finished = self._closed = True
        if not self._wants_usage:
            return head + _DONE
        usage = orjson.dumps(usage_body(self._usage))
        return head + self._head + b',"choices":[],"usage":' + usage + b"}\n\n" + _DONE

    def _start(self, start: ir.Start | None) -> bytes:
        if start is not None and start.usage is not None:
            self._usage = self._usage.merged(start.usage)
        ident = {
            "id": (start and start.id) or f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": (start and start.created) or int(time.time()),
            "model": self._model,
        }
        self._head = b"data: " + orjson.dumps(ident)[:-1]
        self._pre = self._head + b',"choices":[{"index":0,"delta":'
        self._open = True
        return self._pre + b'{"role":"assistant","content":""}' + _OPEN_TAIL

    def _chunk(self, delta: dict[str, Any]) -> bytes:
        return self._pre + orjson.dumps(delta) + _OPEN_TAIL

    def _content(self, event: ir.Event) -> bytes:
        if isinstance(event, ir.TextDelta):
            return self._chunk({"content": event.text}) if event.text else b""
        if isinstance(event, ir.ReasoningDelta):
            return self._chunk({"reasoning_content": event.text}) if event.text else b""
        if isinstance(event, ir.ToolCallStart):
            return self._announce(event)
        if isinstance(event, ir.ToolCallDelta):
            return self._arguments(event.index, event.arguments)
        if isinstance(event, ir.ImageOutput):
            url = f"data:{event.media_type};base64,{event.data}"
            image = {"index": self._images, "type": "image_url", "image_url": {"url": url}}
            self._images += 1
            return self._chunk({"images": [image]})
        if isinstance(event, ir.End):
            return self._end(event.finish)
        return b""  # Start (already handled), ReasoningDone, ToolCallEnd carry nothing for chat

    def _announce(self, event: ir.ToolCallStart) -> bytes:
        if event.index in self._ordinals:
            return b""
        ordinal = self._ordinals[event.index] = len(self._ordinals)
        call: dict[str, Any] = {"index": ordinal, "id": event.id, "type": event.kind}
        if event.kind == "custom":
            self._custom.add(ordinal)
            call["custom"] = {"name": event.name, "input": ""}
        else:
            self._silent.add(ordinal)
            call["function"] = {"name": event.name, "arguments": ""}
        return self._chunk({"tool_calls": [call]})

    def _arguments(self, index: int, arguments: str) -> bytes:
        ordinal = self._ordinals.get(index)
        if ordinal is None or not arguments:
            return b""
        self._silent.discard(ordinal)
        key = b'"custom":{"input":' if ordinal in self._custom else b'"function":{"arguments":'
        fragment = b'{"tool_calls":[{"index":%d,%s%s}}]}' % (ordinal, key, orjson.dumps(arguments))
        return self._pre + fragment + _OPEN_TAIL

    def _end(self, finish: ir.Finish) -> bytes:
        # A function call that never received arguments gets "{}" so clients can parse it.
        empty = b"".join(self._arguments(self._key_of(o), "{}") for o in sorted(self._silent))
        self._closed, self._open = True, False
        reason = finish_reason(finish, saw_tool=bool(self._ordinals)).encode()
        return empty + self._pre + b'{},"logprobs":null,"finish_reason":"' + reason + b'"}]}\n\n'

    def _key_of(self, ordinal: int) -> int:
        return next(key for key, value in self._ordinals.items() if value == ordinal)


def _frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"
