"""Gemini streams: upstream bytes to IR events (``StreamParser``) and IR events to client frames
(``StreamRenderer``), spec §3.3, §3.5, R14, R15, R17.

Pure: no Django, no I/O.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import ir
from gateway.dialects import gemini

_NOTHING: list[ir.Event] = []


class StreamParser:
    """Gemini ``streamGenerateContent`` output to IR events.

    Accepts ``alt=sse`` frames (``data: <json>``), the JSON-array body Gemini sends without ``alt``, and
    the Code Assist ``{"response": ...}`` envelope. Each ``functionCall`` part is one complete call; usage
    is trusted from the terminal chunk (``finishReason`` + ``usageMetadata``), merged over earlier values.
    """

    def __init__(self, req: ir.Request | None = None) -> None:
        self._names = gemini.original_names(req)
        self._buffer = b""
        self._mode = ""  # "sse", "array" or "object", from the first byte
        self._array = _ArraySplitter()
        self._started = False
        self._done = False
        self._reasoning = False
        self._calls = 0
        self._held: _HeldCall | None = None
        self._seed = ""
        self._meta: dict[str, Any] = {}
        self._finish = ""
        self._blocked = False

    def feed(self, chunk: bytes) -> list[ir.Event]:
        if self._done:
            return _NOTHING
        data = self._buffer + chunk if self._buffer else chunk
        if not self._mode:
            head = data.lstrip()[:1]
            if not head:
                self._buffer = data
                return _NOTHING
            self._mode = {b"[": "array", b"{": "object"}.get(head, "sse")
        if self._mode == "array":
            self._buffer = b""
            return self._objects(self._array.feed(data))
        if self._mode == "object":
            self._buffer = data
            return _NOTHING
        cut = data.rfind(b"\n")
        if cut < 0:
            self._buffer = data
            return _NOTHING
        self._buffer = data[cut + 1 :]
        return self._lines(data[:cut].split(b"\n"))

    def feed_object(self, obj: Any) -> list[ir.Event]:
        """One already-decoded chunk (a non-stream body goes through here)."""
        events: list[ir.Event] = []
        if not self._done:
            self._on_object(obj, events)
        return events

    def finish(self) -> list[ir.Event]:
        """What the end of the upstream stream implies: the terminal events, exactly once."""
        tail, self._buffer = self._buffer, b""
        events: list[ir.Event] = []
        if tail.strip() and not self._done:
            if self._mode == "object":
                events += self._whole(tail)
            elif self._mode == "sse":
                events += self._lines([tail])
        return events + self._terminate()

    # --- framing ------------------------------------------------------------------------------

    def _lines(self, lines: list[bytes]) -> list[ir.Event]:
        events: list[ir.Event] = []
        for line in lines:
            if line[:5] == b"data:":
                payload = line[5:]
                if len(payload) < 10 and payload.strip() == b"[DONE]":
                    return events + self._terminate()
            elif line[:1] == b"{":
                payload = line  # newline-delimited JSON
            else:
                continue
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            self._on_object(obj, events)
            if self._done:
                break
        return events

    def _objects(self, raw: list[bytes]) -> list[ir.Event]:
        events: list[ir.Event] = []
        for item in raw:
            if self._done:
                break
            try:
                self._on_object(orjson.loads(item), events)
            except orjson.JSONDecodeError:
                continue
        return events

    def _whole(self, data: bytes) -> list[ir.Event]:
        try:
            return self.feed_object(orjson.loads(data))
        except orjson.JSONDecodeError:
            self._mode = "sse"
            return self._lines(data.split(b"\n"))

    # --- chunks -------------------------------------------------------------------------------

    def _on_object(self, obj: Any, events: list[ir.Event]) -> None:
        if type(obj) is not dict:
            for item in obj if isinstance(obj, list) else ():
                if not self._done:
                    self._on_object(item, events)
            return
        if "response" in obj and "candidates" not in obj:
            obj = gemini.unwrap_code_assist(obj)
        if "error" in obj and isinstance(obj["error"], dict):
            self._error(obj["error"], events)
            return
        if not self._started:
            self._start(obj, events)
        candidates = obj.get("candidates")
        if candidates:
            try:
                candidate = candidates[0]
                parts = candidate["content"]["parts"]
            except (KeyError, IndexError, TypeError):
                candidate = candidates[0] if isinstance(candidates, list) else None
                parts = None
            if parts and type(parts) is list:
                self._parts(parts, events)
            if type(candidate) is dict and candidate.get("finishReason"):
                self._finish = str(candidate["finishReason"])
        elif isinstance(obj.get("promptFeedback"), dict) and obj["promptFeedback"].get("blockReason"):
            self._finish, self._blocked = str(obj["promptFeedback"]["blockReason"]), True
        meta = obj.get("usageMetadata")
        if meta and type(meta) is dict:
            self._meta.update(meta)  # later chunks win; only the terminal chunk's counts are complete
            if self._finish:
                events += self._terminate()

    def _error(self, error: dict[str, Any], events: list[ir.Event]) -> None:
        self._done = True
        code = error.get("code")
        message = str(error.get("message") or "")
        events.append(
            ir.StreamError(
                status=code if isinstance(code, int) else 500, message=message, type=str(error.get("status") or "")
            )
        )

    def _start(self, obj: dict[str, Any], events: list[ir.Event]) -> None:
        self._started = True
        ident = obj.get("responseId") or ""
        self._seed = ident or secrets.token_hex(8)
        created = gemini.parse_time(obj.get("createTime"))
        events.append(ir.Start(id=ident, model=obj.get("modelVersion") or "", created=created))

    def _parts(self, parts: list[Any], events: list[ir.Event]) -> None:
        for part in parts:
            if type(part) is not dict:
                continue
            text = part.get("text")
            signature = part.get("thoughtSignature") or part.get("thought_signature") or ""
            if text is not None:
                if self._held is not None:
                    self._release(events)
                if part.get("thought"):
                    if text:
                        self._reasoning = True
                        events.append(ir.ReasoningDelta(text))
                    if signature:
                        self._reasoning = False
                        events.append(ir.ReasoningDone(signature=signature, family="gemini"))
                    continue
                if self._reasoning or signature:
                    self._reasoning = False
                    events.append(ir.ReasoningDone(signature=signature, family="gemini"))
                if text:
                    events.append(ir.TextDelta(text))
                continue
            self._other_part(part, signature, events)

    def _other_part(self, part: dict[str, Any], signature: str, events: list[ir.Event]) -> None:
        call = part.get("functionCall")
        blob = part.get("inlineData") or part.get("inline_data")
        if not (isinstance(call, dict) or isinstance(blob, dict) or signature):
            return
        if isinstance(call, dict):
            args = call.get("args")
            args = args if isinstance(args, dict) else {}
            name = str(call.get("name") or "")
            if not name and self._held is not None:  # a nameless call continues the previous one (§6 item 19)
                self._held.args.update(args)
                return
            self._release(events)
            self._held = _HeldCall(name, dict(args), str(call.get("id") or ""), signature)
            return
        self._release(events)
        if isinstance(blob, dict):
            mime = blob.get("mimeType") or blob.get("mime_type") or "image/png"
            events.append(ir.ImageOutput(data=blob.get("data") or "", media_type=mime))
        if signature:
            events.append(ir.ReasoningDone(signature=signature, family="gemini"))

    def _release(self, events: list[ir.Event]) -> None:
        """Emit the call held back in case a nameless continuation followed it."""
        if self._reasoning:
            self._reasoning = False
            events.append(ir.ReasoningDone(family="gemini"))
        held, self._held = self._held, None
        if held is None:
            return
        arguments = orjson.dumps(held.args).decode()
        index = self._calls
        self._calls += 1
        ident = held.id or gemini.call_id(self._seed, index, held.name, arguments)
        events.append(ir.ToolCallStart(index, ident, self._names.get(held.name, held.name), signature=held.signature))
        events.append(ir.ToolCallDelta(index, arguments))
        events.append(ir.ToolCallEnd(index))

    def _terminate(self) -> list[ir.Event]:
        if self._done:
            return _NOTHING
        self._done = True
        if not self._started:
            return [ir.StreamError(status=502, message="the upstream closed the stream without a response")]
        events: list[ir.Event] = []
        self._release(events)
        usage = gemini.usage_from(self._meta) if self._meta else None
        if usage is not None:
            events.append(ir.UsageUpdate(usage))
        events.append(ir.End(gemini.finish_from(self._finish, self._calls > 0, self._blocked)))
        return events


@dataclass(slots=True)
class _HeldCall:
    name: str
    args: dict[str, Any]
    id: str
    signature: str


_ARRAY_TOKENS = re.compile(rb'[{}\[\]"]')
_STRING_TOKENS = re.compile(rb'["\\]')


class _ArraySplitter:
    """The top-level objects of a JSON array that arrives in pieces (``[{..}\\n,\\r\\n{..}]``)."""

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._depth = 0
        self._start = 0
        self._in_string = False

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        pos, depth, start, in_string = self._pos, self._depth, self._start, self._in_string
        found: list[bytes] = []
        size = len(buf)
        while pos < size:
            if in_string:
                match = _STRING_TOKENS.search(buf, pos)
                if match is None:
                    pos = size
                    break
                if buf[match.start()] == 0x5C:  # backslash: skip the escaped byte
                    if match.end() >= size:
                        pos = match.start()
                        break
                    pos = match.end() + 1
                    continue
                pos, in_string = match.end(), False
                continue
            match = _ARRAY_TOKENS.search(buf, pos)
            if match is None:
                pos = size
                break
            char, pos = buf[match.start()], match.end()
            if char == 0x22:
                in_string = True
            elif char in (0x7B, 0x5B):
                if depth == 1:
                    start = match.start()
                depth += 1
            else:
                depth -= 1
                if depth == 1:
                    found.append(buf[start:pos])
        if depth >= 2:  # keep only the unfinished element
            self._buf, self._pos, self._start = buf[start:], pos - start, 0
        else:
            self._buf, self._pos, self._start = b"", 0, 0
        self._depth, self._in_string = depth, in_string
        return found


class StreamRenderer:
    """IR events to a Gemini client's stream: SSE frames (``alt=sse``) or one JSON array written as it goes.

    Text and reasoning deltas become one chunk each; a tool call becomes one complete ``functionCall``
    part when it ends; the final chunk always carries ``finishReason`` and ``usageMetadata`` (R17).
    """

    def __init__(self, req: ir.Request, sse: bool = True) -> None:
        self._sse = sse
        self._model = req.model
        self._id = ""
        self._head = b'{"candidates":[{"content":{"role":"model","parts":['
        self._tail = b""
        self._opened = False
        self._ended = False
        self._closed = False
        self._calls: dict[int, tuple[ir.ToolCallStart, list[str]]] = {}
        self._pending = ""  # a Gemini signature waiting for the next part
        self._usage = ir.Usage()

    def feed(self, event: ir.Event) -> bytes:
        if self._ended:
            return b""
        if isinstance(event, ir.TextDelta):
            return self._text(event.text) if event.text else b""
        if isinstance(event, ir.ReasoningDelta):
            return self._thought(event.text) if event.text else b""
        if isinstance(event, ir.Start):
            self._id = event.id
            if event.usage is not None:
                self._usage = self._usage.merged(event.usage)
            return b""
        if isinstance(event, ir.ReasoningDone):
            return self._reasoning_done(event)
        if isinstance(event, ir.ToolCallStart):
            self._calls[event.index] = (event, [])
            return b""
        if isinstance(event, ir.ToolCallDelta):
            if event.index in self._calls:
                self._calls[event.index][1].append(event.arguments)
            return b""
        return self._other(event)

    def finish(self) -> bytes:
        """The end of the client stream: the final chunk if none was sent, and ``]`` in array mode."""
        if self._closed:
            return b""
        out = b"" if self._ended else self._final(ir.Finish("stop"))
        self._closed = True
        if self._sse:
            return out
        return out + (b"]" if self._opened else b"[]")

    # --- events -------------------------------------------------------------------------------

    def _other(self, event: ir.Event) -> bytes:
        if isinstance(event, ir.ToolCallEnd):
            started = self._calls.pop(event.index, None)
            return self._chunk(self._call_part(*started)) if started else b""
        if isinstance(event, ir.ImageOutput):
            return self._chunk(self._signed({"inlineData": {"mimeType": event.media_type, "data": event.data}}))
        if isinstance(event, ir.UsageUpdate):
            self._usage = self._usage.merged(event.usage)
            return b""
        if isinstance(event, ir.End):
            return self._final(event.finish)
        if isinstance(event, ir.StreamError):
            return self._error(event)
        return b""

    def _text(self, text: str) -> bytes:
        if self._pending:
            return self._chunk(self._signed({"text": text}))
        return self._frame(orjson.dumps({"text": text}))

    def _thought(self, text: str) -> bytes:
        part = orjson.dumps({"text": text, "thought": True})
        if self._pending:
            part = orjson.dumps({"text": "", "thoughtSignature": self._pending}) + b"," + part
            self._pending = ""
        return self._frame(part)

    def _reasoning_done(self, event: ir.ReasoningDone) -> bytes:
        if not event.signature:
            return b""
        if event.family in ("gemini", None):
            out = self._flush_pending()
            self._pending = event.signature
            return out
        return self._chunk(gemini.thought_part("", event.signature, event.family, event.redacted))

    def _call_part(self, start: ir.ToolCallStart, pieces: list[str]) -> dict[str, Any]:
        part: dict[str, Any] = {"functionCall": gemini.function_call(start.id, start.name, "".join(pieces), start.kind)}
        if start.signature:
            part["thoughtSignature"] = start.signature
        return self._signed(part)

    def _signed(self, part: dict[str, Any]) -> dict[str, Any]:
        if self._pending and "thoughtSignature" not in part:
            part["thoughtSignature"] = self._pending
            self._pending = ""
        return part

    def _flush_pending(self) -> bytes:
        if not self._pending:
            return b""
        part, self._pending = {"text": "", "thoughtSignature": self._pending}, ""
        return self._chunk(part)

    def _final(self, finish: ir.Finish) -> bytes:
        self._ended = True
        parts = [self._call_part(start, pieces) for start, pieces in self._calls.values()]
        self._calls.clear()
        if self._pending:
            parts.append({"text": "", "thoughtSignature": self._pending})
            self._pending = ""
        chunk = {
            "candidates": [
                {
                    "content": {"role": "model", "parts": parts or [{"text": ""}]},
                    "finishReason": gemini.finish_reason(finish),
                    "index": 0,
                }
            ],
            "usageMetadata": gemini.usage_metadata(self._usage),
            "modelVersion": self._model,
            "responseId": self._response_id(),
        }
        return self._wrap(orjson.dumps(chunk))

    def _error(self, event: ir.StreamError) -> bytes:
        self._ended = True
        body = orjson.dumps(gemini.error_body(event.status, event.message))
        if self._sse:
            return b"data: " + body + b"\n\n"
        self._closed = True
        return self._wrap(body) + b"]"

    # --- framing ------------------------------------------------------------------------------

    def _response_id(self) -> str:
        if not self._id:
            self._id = gemini.new_response_id()
        return self._id

    def _chunk(self, part: dict[str, Any]) -> bytes:
        return self._frame(orjson.dumps(part))

    def _frame(self, parts: bytes) -> bytes:
        """A chunk around already-encoded parts; the fixed head and tail are encoded once."""
        if not self._tail:
            tail = {"modelVersion": self._model, "responseId": self._response_id()}
            self._tail = b']},"index":0}],' + orjson.dumps(tail)[1:]
        return self._wrap(self._head + parts + self._tail)

    def _wrap(self, chunk: bytes) -> bytes:
        if self._sse:
            return b"data: " + chunk + b"\n\n"
        if self._opened:
            return b"," + chunk
        self._opened = True
        return b"[" + chunk
