"""Gemini generateContent, both as the client dialect and as the upstream family (spec §2.4, §3.3, §4).

Client side: ``parse_request`` (the model comes from the URL) and ``render_response``; upstream side:
``render_request`` and ``parse_response`` (Gemini API, Vertex, and the Code Assist envelope through
``wrap_code_assist`` / ``unwrap_code_assist``). The stream state machines live in ``gemini_stream`` and are
re-exported here; the tool-schema cleaner lives in ``gemini_schema``.

Conventions this module owns (the IR has no field for them):

* tool names are sanitised for Gemini by ``tool_names(req)``; responses are mapped back through
  ``original_names(req)``, so the IR only ever holds the client's names;
* a Gemini ``thoughtSignature`` on a non-thought text part becomes a ``Reasoning`` with empty text placed
  just before that text, and is re-attached to the following part on the way out;
* reasoning signatures of other families are handed to Gemini clients inside a base64 "carrier"
  (``carry_signature``), so they survive the client's SDK and come back to the family that made them.

Pure: no Django, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast, get_args

import orjson

from gateway import ir
from gateway.dialects import BadRequest
from gateway.dialects.gemini_schema import clean_for_gemini, to_json_schema
from gateway.thinking import capability, level_to_budget

if TYPE_CHECKING:
    from gateway.dialects.gemini_stream import StreamParser, StreamRenderer

__all__ = [
    "BadRequest",
    "StreamParser",
    "StreamRenderer",
    "count_tokens_response",
    "error_body",
    "model_entry",
    "models_list",
    "parse_request",
    "parse_response",
    "render_count_tokens",
    "render_request",
    "render_response",
    "unwrap_code_assist",
    "wrap_code_assist",
]

SKIP_SIGNATURE = "skip_thought_signature_validator"
ATTRIBUTION_PREFIX = "x-anthropic-billing-header:"
DEFAULT_SAFETY_SETTINGS: tuple[dict[str, str], ...] = (
    {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"},
    {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "OFF"},
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "threshold": "OFF"},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "OFF"},
    {"category": "HARM_CATEGORY_CIVIC_INTEGRITY", "threshold": "BLOCK_NONE"},
)
EMPTY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
CUSTOM_TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"input": {"type": "string"}},
    "required": ["input"],
}


def __getattr__(name: str) -> Any:
    """``StreamParser`` / ``StreamRenderer`` come from ``gemini_stream``, loaded on first use."""
    if name in ("StreamParser", "StreamRenderer"):
        from gateway.dialects import gemini_stream

        return getattr(gemini_stream, name)
    raise AttributeError(name)


# --- errors, listings, token counts ---------------------------------------------------------

_RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def rpc_status(status: int) -> str:
    """The google.rpc status name for an HTTP status (spec §1.4)."""
    if status in _RPC_STATUS:
        return _RPC_STATUS[status]
    return "INTERNAL" if status >= 500 else "INVALID_ARGUMENT"


def error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """Google's error envelope; ``code`` overrides the RPC status name when it is one (``FAILED_PRECONDITION``),
    never when it is one of the relay's own lower-case codes (``model_not_found``), R15."""
    rpc = code if code and code.isupper() else rpc_status(status)
    return {"error": {"code": status, "message": message, "status": rpc}}


def stream_error(status: int, message: str, code: str | None = None) -> bytes:
    """An error inside an ``alt=sse`` stream (R15)."""
    return b"data: " + orjson.dumps(error_body(status, message, code)) + b"\n\n"


def error_message(body: Any) -> str:
    """The message of an upstream Google error body (for re-wrapping in another dialect's envelope)."""
    if isinstance(body, bytes | str):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body.decode(errors="replace") if isinstance(body, bytes) else body
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return cast(str, error["message"])
    return ""


def strip_models_prefix(model: str) -> str:
    return model.removeprefix("models/")


def model_entry(
    model_id: str,
    *,
    display_name: str = "",
    description: str = "",
    input_token_limit: int | None = None,
    output_token_limit: int | None = None,
    methods: Iterable[str] = ("generateContent", "streamGenerateContent", "countTokens"),
    version: str = "",
) -> dict[str, Any]:
    """One entry of ``GET /v1beta/models`` (spec §1.7)."""
    entry: dict[str, Any] = {"name": f"models/{strip_models_prefix(model_id)}"}
    if version:
        entry["version"] = version
    entry["displayName"] = display_name or model_id
    entry["description"] = description or display_name or model_id
    if input_token_limit is not None:
        entry["inputTokenLimit"] = input_token_limit
    if output_token_limit is not None:
        entry["outputTokenLimit"] = output_token_limit
    entry["supportedGenerationMethods"] = list(methods)
    return entry


def models_list(ids: Iterable[str]) -> dict[str, Any]:
    return {"models": [model_entry(model_id) for model_id in ids]}


def count_tokens_response(n: int) -> dict[str, Any]:
    """The countTokens answer Gemini clients get, whatever the upstream (spec §5)."""
    return {"totalTokens": n, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": n}]}


# --- names, ids, signatures -----------------------------------------------------------------

_NAME_INVALID = re.compile(r"[^a-zA-Z0-9_.:-]")


def sanitize_name(name: str) -> str:
    """A function name Gemini accepts: ``^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$`` (spec §4.4.3)."""
    clean = _NAME_INVALID.sub("_", name) or "_"
    if not (clean[0].isalpha() or clean[0] == "_"):
        clean = "_" + clean
    return clean[:64]


def tool_names(req: ir.Request) -> dict[str, str]:
    """Original tool name -> the name Gemini sees; collisions get ``_`` + 12 hex of SHA-256."""
    originals: dict[str, None] = {}
    for tool in req.tools:
        if tool.kind != "builtin":
            originals[tool.name] = None
    for message in req.messages:
        for part in message.parts:
            if isinstance(part, ir.ToolCall | ir.ToolResult) and part.name:
                originals[part.name] = None
    if req.tool_choice and req.tool_choice.name:
        originals[req.tool_choice.name] = None
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    for original in originals:
        name = sanitize_name(original)
        if name in taken:
            name = f"{name[:51]}_{hashlib.sha256(original.encode()).hexdigest()[:12]}"
        taken.add(name)
        mapping[original] = name
    return mapping


def original_names(req: ir.Request | None) -> dict[str, str]:
    """Gemini-side name -> the client's original (only names that changed)."""
    if req is None:
        return {}
    return {sent: original for original, sent in tool_names(req).items() if sent != original}


def call_id(*seed: object) -> str:
    """A deterministic tool-call id: ``call_`` + 24 hex of SHA-256 over ``seed``."""
    text = "|".join(str(s) for s in seed)
    return "call_" + hashlib.sha256(text.encode()).hexdigest()[:24]


_SIGNATURE_SHAPE = re.compile(r"[A-Za-z0-9+/_-]+=*")
_CARRIER = b"clirelay-sig-v1:"  # 15 of its 16 bytes encode to a fixed 20-character base64 prefix
_CARRIER_B64 = base64.b64encode(_CARRIER[:15]).decode()
_FAMILIES = frozenset(get_args(ir.Family))


def is_gemini_signature(signature: str) -> bool:
    """A value Gemini can take back as ``thoughtSignature`` (base64 text, not one of our carriers)."""
    return bool(signature) and not signature.startswith(_CARRIER_B64) and bool(_SIGNATURE_SHAPE.fullmatch(signature))


def carry_signature(family: str, signature: str, redacted: bool = False) -> str:
    """Wrap another family's reasoning blob as a valid base64 ``thoughtSignature`` for Gemini clients."""
    raw = _CARRIER + f"{family}:{'r' if redacted else 's'}:".encode() + signature.encode()
    return base64.b64encode(raw).decode()


def read_signature(value: str) -> tuple[ir.Family, str, bool]:
    """(family, blob, redacted) of a ``thoughtSignature`` a client sent back; plain values are Gemini's."""
    if not value.startswith(_CARRIER_B64) and not value.startswith(_CARRIER_B64.replace("+", "-").replace("/", "_")):
        return "gemini", value, False
    try:
        padded = value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4)
        raw = base64.b64decode(padded)
        family, flag, blob = raw[len(_CARRIER) :].decode().split(":", 2)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return "gemini", value, False
    if not raw.startswith(_CARRIER) or family not in _FAMILIES:
        return "gemini", value, False
    return cast(ir.Family, family), blob, flag == "r"


def _part_signature(part: dict[str, Any]) -> str:
    value = part.get("thoughtSignature") or part.get("thought_signature") or ""
    return value if isinstance(value, str) else ""


# --- shared wire pieces ---------------------------------------------------------------------

_AUDIO_FORMATS = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/pcm": "pcm16",
}
_AUDIO_MIME = {"": "audio/wav", "wav": "audio/wav", "mp3": "audio/mpeg", "pcm16": "audio/pcm"}
_AUDIO_MIME |= {"g711_ulaw": "audio/basic", "g711_alaw": "audio/basic"}
_EXTENSIONS = {"application/pdf": "pdf", "text/plain": "txt", "text/csv": "csv", "application/json": "json"}


def audio_mime(fmt: str) -> str:
    """The MIME type of an OpenAI ``input_audio`` format (spec §4.3)."""
    return _AUDIO_MIME.get(fmt, f"audio/{fmt}")


def media_part(mime: str, data: str) -> ir.Image | ir.Audio | ir.File:
    """An inline blob as the IR part its MIME type calls for."""
    if mime.startswith("image/"):
        return ir.Image(data=data, media_type=mime)
    if mime.startswith("audio/"):
        return ir.Audio(data=data, format=_AUDIO_FORMATS.get(mime.split(";")[0], mime[6:].split(";")[0]))
    extension = _EXTENSIONS.get(mime, mime.rpartition("/")[2] or "bin")
    return ir.File(data=data, media_type=mime or "application/octet-stream", filename=f"document.{extension}")


def is_gemini_file_uri(url: str) -> bool:
    """A URI Gemini resolves itself (Cloud Storage or the Files API), so the relay must not download it."""
    return url.startswith("gs://") or url.startswith("https://generativelanguage.googleapis.com/")


def _data_url(url: str) -> tuple[str, str] | None:
    if not url.startswith("data:") or "," not in url:
        return None
    head, data = url[5:].split(",", 1)
    return head.split(";")[0], data


def blob_part(part: ir.Image | ir.File | ir.Audio) -> dict[str, Any]:
    """An IR media part as a Gemini ``inlineData`` / ``fileData`` part.

    Raises ``ValueError`` for an http(s) image without data: the relay downloads those before
    rendering (R3), so reaching here means the download step was skipped.
    """
    if isinstance(part, ir.Audio):
        return {"inlineData": {"mimeType": audio_mime(part.format), "data": part.data}}
    fallback = "image/png" if isinstance(part, ir.Image) else "application/octet-stream"
    if part.data:
        return {"inlineData": {"mimeType": part.media_type or fallback, "data": part.data}}
    inline = _data_url(part.url)
    if inline:
        return {"inlineData": {"mimeType": inline[0] or part.media_type or fallback, "data": inline[1]}}
    if part.url and (isinstance(part, ir.File) or is_gemini_file_uri(part.url)):
        return {"fileData": {"mimeType": part.media_type or fallback, "fileUri": part.url}}
    if isinstance(part, ir.Image):
        raise ValueError(f"image URL {part.url!r} must be downloaded before it is sent to Gemini")
    raise ValueError(f"file {part.file_id or part.filename!r} has no data or URL Gemini can read")


def args_object(arguments: str, kind: str = "function") -> dict[str, Any]:
    """Tool-call arguments as the object Gemini wants, parsed tolerantly (spec §6 item 17)."""
    if kind == "custom":
        return {"input": arguments}
    text = arguments.strip()
    if not text:
        return {}
    for candidate in (text, _repair_json(text)):
        try:
            value = orjson.loads(candidate)
        except orjson.JSONDecodeError:
            continue
        return value if isinstance(value, dict) else {}
    return {}


_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def _repair_json(text: str) -> str:
    """Single quotes and trailing commas, the usual damage in model-written JSON."""
    if '"' not in text:
        text = text.replace("'", '"')
    return _TRAILING_COMMA.sub(r"\1", text)


_FINISH_FROM_GEMINI: dict[str, ir.FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(
        ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"), "content_filter"
    ),
    **dict.fromkeys(("IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"), "content_filter"),
}
_FINISH_TO_GEMINI: dict[str, str] = {
    "stop": "STOP",
    "stop_sequence": "STOP",
    "tool_calls": "STOP",
    "pause_turn": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
    "refusal": "SAFETY",
    "other": "OTHER",
}
_GEMINI_FINISH_VALUES = frozenset(_FINISH_FROM_GEMINI) | {"OTHER", "LANGUAGE", "MALFORMED_FUNCTION_CALL"}


def finish_from(raw: str, saw_tool: bool, blocked: bool = False) -> ir.Finish:
    """A Gemini ``finishReason`` (or prompt ``blockReason``) in the IR; any tool call wins (R5)."""
    if saw_tool:
        return ir.Finish("tool_calls", native=raw)
    if blocked:
        return ir.Finish("content_filter", native=raw)
    if not raw:
        return ir.Finish("stop")
    return ir.Finish(_FINISH_FROM_GEMINI.get(raw, "other"), native=raw)


def finish_reason(finish: ir.Finish) -> str:
    """The ``finishReason`` a Gemini client sees (spec §4.7 "Ours" table); Gemini's own value kept when it fits."""
    native = finish.native
    if native in _GEMINI_FINISH_VALUES and _FINISH_FROM_GEMINI.get(native, "other") == finish.reason:
        return native
    return _FINISH_TO_GEMINI.get(finish.reason, "STOP")


def usage_from(meta: Any) -> ir.Usage | None:
    """``usageMetadata`` in the IR: output includes thoughts, input includes cached (R6, D1.5)."""
    if not isinstance(meta, dict):
        return None
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    candidates = int(meta.get("candidatesTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    return ir.Usage(
        input_tokens=prompt,
        output_tokens=candidates + thoughts,
        cached_tokens=int(meta.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
        total_tokens=int(meta.get("totalTokenCount") or 0) or prompt + candidates + thoughts,
    )


def usage_metadata(usage: ir.Usage) -> dict[str, int]:
    """The IR usage as ``usageMetadata`` (R6: candidates exclude thoughts)."""
    meta = {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": max(usage.output_tokens - usage.reasoning_tokens, 0),
        "totalTokenCount": usage.total,
    }
    if usage.cached_tokens:
        meta["cachedContentTokenCount"] = usage.cached_tokens
    if usage.reasoning_tokens:
        meta["thoughtsTokenCount"] = usage.reasoning_tokens
    return meta


def new_response_id() -> str:
    return secrets.token_urlsafe(16)


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _first(source: dict[str, Any], *keys: str) -> Any:
    """The value under the first of ``keys`` present (camelCase and snake_case spellings)."""
    for key in keys:
        if key in source:
            return source[key]
    return None


# --- client side: request -------------------------------------------------------------------

_HANDLED_TOP_LEVEL = frozenset(
    (
        "contents",
        "systemInstruction",
        "system_instruction",
        "tools",
        "toolConfig",
        "tool_config",
        "generationConfig",
        "generation_config",
        "model",
    )
)


def parse_request(body: Any, model: str, *, stream: bool = False) -> ir.Request:
    """A Gemini ``generateContent`` body (model from the URL path) as the IR; ``BadRequest`` if invalid."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = strip_models_prefix(model.strip())
    if not model:
        raise BadRequest("the model is missing from the request path")
    contents = body.get("contents")
    if isinstance(contents, dict):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise BadRequest("'contents' is required and must be a non-empty array")
    req = ir.Request(model=model, stream=stream, source="gemini")
    req.messages = _HistoryReader().read(contents)
    system = _system_texts(_first(body, "systemInstruction", "system_instruction"))
    if system:
        req.system.append(ir.SystemSegment(parts=[ir.Text(t) for t in system]))
    extensions: dict[str, Any] = {}
    req.tools = _parse_tools(body.get("tools"))
    _parse_tool_config(req, _first(body, "toolConfig", "tool_config"), extensions)
    _parse_generation_config(req, _first(body, "generationConfig", "generation_config"), extensions)
    for key, value in body.items():
        if key not in _HANDLED_TOP_LEVEL:
            extensions[_camel(key)] = value
    if extensions:
        req.extensions["gemini"] = extensions
    return req


def parse_count_tokens_request(body: Any, model: str) -> ir.Request:
    """A countTokens body: ``contents`` or a wrapped ``generateContentRequest``."""
    if isinstance(body, dict) and isinstance(body.get("generateContentRequest"), dict):
        inner = body["generateContentRequest"]
        return parse_request(inner, str(inner.get("model") or model))
    return parse_request(body, model)


def _system_texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    parts = value.get("parts") if isinstance(value, dict) else value
    if isinstance(value, dict) and parts is None and "text" in value:
        parts = [value]
    if not isinstance(parts, list):
        raise BadRequest("'systemInstruction' must be a Content object with 'parts'")
    return [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str) and p["text"]]


def _next_role(raw: Any, previous: str | None) -> str:
    """``user`` or ``model``; tool roles are the user's; missing roles alternate (spec §4.1)."""
    if raw in ("user", "function", "tool"):
        return "user"
    if raw in ("model", "assistant"):
        return "model"
    return "model" if previous == "user" else "user"


@dataclass(slots=True)
class _Run:
    """The parts of one content being read, with the runs consecutive wire parts merge into."""

    merge_text: bool = False  # the model's text arrives in arbitrary pieces; a user's parts stay apart
    parts: list[ir.Part] = field(default_factory=list)
    reasoning: ir.Reasoning | None = None
    text: ir.Text | None = None
    result: ir.ToolResult | None = None

    def cut(self) -> None:
        self.reasoning = self.text = self.result = None


class _HistoryReader:
    """Reads ``contents``: ids for calls that have none, and results paired FIFO per name (spec §4.5)."""

    def __init__(self) -> None:
        self._pending: list[tuple[str, str]] = []  # (name, id) of calls not answered yet, in call order
        self._answered: set[str] = set()  # call ids the current content answers explicitly

    def read(self, contents: list[Any]) -> list[ir.Message]:
        """One message per run of same-role contents (the SDKs store a streamed turn as many contents)."""
        messages: list[ir.Message] = []
        role: str | None = None
        run = _Run()
        for ci, content in enumerate(contents):
            if not isinstance(content, dict):
                raise BadRequest(f"contents[{ci}] must be an object")
            previous, role = role, _next_role(content.get("role"), role)
            parts = content.get("parts")
            parts = [] if parts is None else parts
            if not isinstance(parts, list):
                raise BadRequest(f"contents[{ci}].parts must be an array")
            self._answered = {
                str(r["id"])
                for p in parts
                if isinstance(p, dict)
                for r in [_first(p, "functionResponse", "function_response")]
                if isinstance(r, dict) and r.get("id")
            }
            if role != previous:
                run = _Run(merge_text=role == "model")
                messages.append(ir.Message(role="assistant" if role == "model" else "user", parts=run.parts))
            elif not run.merge_text:
                run.cut()
            run.result = None
            for pi, part in enumerate(parts):
                if not isinstance(part, dict):
                    raise BadRequest(f"contents[{ci}].parts[{pi}] must be an object")
                self._part(part, run, ci, pi)
        return [m for m in messages if m.parts]

    def _part(self, part: dict[str, Any], run: _Run, ci: int, pi: int) -> None:
        text = part.get("text")
        if text is not None and not isinstance(text, str):
            raise BadRequest(f"contents[{ci}].parts[{pi}].text must be a string")
        if part.get("thought") is True:
            self._thought(text or "", _part_signature(part), run)
            return
        if text is not None:
            self._text(text, _part_signature(part), run)
            return
        call = _first(part, "functionCall", "function_call")
        if isinstance(call, dict):
            run.cut()
            run.parts.append(self._call(call, part, ci, pi))
            return
        response = _first(part, "functionResponse", "function_response")
        if isinstance(response, dict):
            run.cut()
            run.result = self._result(response, ci, pi)
            run.parts.append(run.result)
            return
        self._media(part, run, ci, pi)

    @staticmethod
    def _thought(text: str, signature: str, run: _Run) -> None:
        run.text = run.result = None
        block = run.reasoning
        if block is None or block.signature:  # a signature closes a reasoning block
            block = run.reasoning = ir.Reasoning(family="gemini")
            run.parts.append(block)
        block.text += text
        if signature:
            block.family, block.signature, block.redacted = read_signature(signature)

    @staticmethod
    def _text(text: str, signature: str, run: _Run) -> None:
        run.reasoning = run.result = None
        if signature:
            family, blob, redacted = read_signature(signature)
            run.parts.append(ir.Reasoning(signature=blob, family=family, redacted=redacted))
            run.text = None
        if not text:
            return
        if run.text is None or not run.merge_text:
            run.text = ir.Text(text)
            run.parts.append(run.text)
        else:
            run.text.text += text

    def _call(self, call: dict[str, Any], part: dict[str, Any], ci: int, pi: int) -> ir.ToolCall:
        name = call.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"contents[{ci}].parts[{pi}].functionCall.name is required")
        args = call.get("args")
        args = args if isinstance(args, dict) else {}
        explicit = _first(call, "id", "call_id", "callId")
        ident = explicit if isinstance(explicit, str) and explicit else ""
        ident = ident or call_id("call", ci, pi, name, orjson.dumps(args, option=orjson.OPT_SORT_KEYS).decode())
        self._pending.append((name, ident))
        family, signature, _ = read_signature(_part_signature(part) or _part_signature(call))
        return ir.ToolCall(
            id=ident,
            name=name,
            arguments=orjson.dumps(args).decode(),
            signature=signature if family == "gemini" else "",
        )

    def _result(self, response: dict[str, Any], ci: int, pi: int) -> ir.ToolResult:
        name = response.get("name") if isinstance(response.get("name"), str) else ""
        explicit = response.get("id")
        ident = explicit if isinstance(explicit, str) else ""
        if ident:
            match = next((i for i, (_, c) in enumerate(self._pending) if c == ident), None)
        else:  # FIFO per name (any name when it is missing), skipping calls answered by id later on
            match = next(
                (i for i, (n, c) in enumerate(self._pending) if (not name or n == name) and c not in self._answered),
                None,
            )
        if match is not None:
            pending_name, pending_id = self._pending.pop(match)
            name, ident = name or pending_name, ident or pending_id
        ident = ident or call_id("response", ci, pi, name)
        result = ir.ToolResult(call_id=ident, name=name or "")
        value = response.get("response")
        if isinstance(value, dict) and len(value) == 1 and ("error" in value or "result" in value or "output" in value):
            result.is_error = "error" in value
            value = next(iter(value.values()))
        if value is not None and value != "":
            result.content.append(ir.Text(value if isinstance(value, str) else orjson.dumps(value).decode()))
        for extra in response.get("parts") or []:
            blob = _first(extra, "inlineData", "inline_data") if isinstance(extra, dict) else None
            if isinstance(blob, dict):
                media = _blob(blob)
                if isinstance(media, ir.Image | ir.File):
                    result.content.append(media)
        return result

    @staticmethod
    def _media(part: dict[str, Any], run: _Run, ci: int, pi: int) -> None:
        blob = _first(part, "inlineData", "inline_data")
        if isinstance(blob, dict):
            media = _blob(blob)
            if run.result is not None and isinstance(media, ir.Image | ir.File):
                run.result.content.append(media)  # a sibling of a functionResponse belongs to it
            else:
                run.cut()
                run.parts.append(media)
            return
        ref = _first(part, "fileData", "file_data")
        if isinstance(ref, dict):
            uri = _first(ref, "fileUri", "file_uri") or ""
            mime = _first(ref, "mimeType", "mime_type")
            mime = mime if isinstance(mime, str) else ""
            if not isinstance(uri, str) or not uri:
                raise BadRequest(f"contents[{ci}].parts[{pi}].fileData.fileUri is required")
            run.cut()
            run.parts.append(
                ir.Image(url=uri, media_type=mime) if mime.startswith("image/") else ir.File(url=uri, media_type=mime)
            )
            return
        signature = _part_signature(part)
        if signature:  # a signature-only part
            _HistoryReader._text("", signature, run)


def _blob(blob: dict[str, Any]) -> ir.Image | ir.Audio | ir.File:
    mime = _first(blob, "mimeType", "mime_type") or ""
    data = blob.get("data") or ""
    if not isinstance(mime, str) or not isinstance(data, str):
        raise BadRequest("inlineData needs a string 'mimeType' and base64 'data'")
    return media_part(mime, data)


def _parse_tools(tools: Any) -> list[ir.Tool]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array")
    parsed: list[ir.Tool] = []
    for tool in tools:
        if not isinstance(tool, dict):
            raise BadRequest("each entry of 'tools' must be an object")
        for key, value in tool.items():
            if key in ("functionDeclarations", "function_declarations"):
                parsed.extend(_declaration(d) for d in _declarations(value))
            else:
                parsed.append(ir.Tool(name=_camel(key), kind="builtin", builtin={_camel(key): value}))
    return parsed


def _declarations(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(d, dict) for d in value):
        raise BadRequest("'functionDeclarations' must be an array of objects")
    return value


def _declaration(decl: dict[str, Any]) -> ir.Tool:
    name = decl.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("every function declaration needs a 'name'")
    schema = _first(decl, "parametersJsonSchema", "parameters_json_schema")
    if schema is None and decl.get("parameters") is not None:
        schema = to_json_schema(decl["parameters"])
    description = decl.get("description")
    return ir.Tool(
        name=name,
        description=description if isinstance(description, str) else "",
        parameters=schema if isinstance(schema, dict) else {"type": "object", "properties": {}},
    )


def _parse_tool_config(req: ir.Request, config: Any, extensions: dict[str, Any]) -> None:
    if not isinstance(config, dict):
        return
    rest = {_camel(k): v for k, v in config.items()}
    calling = rest.pop("functionCallingConfig", None)
    if rest:
        extensions["toolConfig"] = rest
    if not isinstance(calling, dict):
        return
    mode = str(calling.get("mode") or "AUTO").upper()
    names = _first(calling, "allowedFunctionNames", "allowed_function_names") or []
    if mode == "NONE":
        req.tool_choice = ir.ToolChoice("none")
    elif mode == "ANY" and isinstance(names, list) and len(names) == 1:
        req.tool_choice = ir.ToolChoice("tool", name=str(names[0]))
    elif mode == "ANY":
        req.tool_choice = ir.ToolChoice("required")
        if names:
            extensions["allowedFunctionNames"] = list(names)
    else:
        req.tool_choice = ir.ToolChoice("auto")


def _parse_generation_config(req: ir.Request, config: Any, extensions: dict[str, Any]) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise BadRequest("'generationConfig' must be an object")
    rest = {_camel(k): v for k, v in config.items()}
    req.temperature = _number(rest.pop("temperature", None), "temperature")
    req.top_p = _number(rest.pop("topP", None), "topP")
    top_k = _number(rest.pop("topK", None), "topK")
    req.top_k = int(top_k) if top_k is not None else None
    max_tokens = _number(rest.pop("maxOutputTokens", None), "maxOutputTokens")
    req.max_tokens = int(max_tokens) if max_tokens is not None else None
    count = _number(rest.pop("candidateCount", None), "candidateCount")
    req.n = int(count) if count is not None else None
    stop = rest.pop("stopSequences", None)
    req.stop = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
    _parse_response_format(req, rest)
    thinking = rest.pop("thinkingConfig", None)
    if thinking is not None:
        req.thinking = _parse_thinking(thinking)
    if rest:
        extensions["generationConfig"] = rest


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"generationConfig.{name} must be a number")
    return value


def _parse_response_format(req: ir.Request, rest: dict[str, Any]) -> None:
    mime = rest.get("responseMimeType")
    if mime != "application/json":
        return
    del rest["responseMimeType"]
    schema = rest.pop("responseJsonSchema", None)
    openapi = rest.pop("responseSchema", None)
    if schema is None and openapi is not None:
        schema = to_json_schema(openapi)
    if isinstance(schema, dict):
        req.response_format = ir.ResponseFormat("json_schema", name="response", schema=schema)
    else:
        req.response_format = ir.ResponseFormat("json_object")


def _parse_thinking(config: Any) -> ir.Thinking:
    """``thinkingConfig``: a level wins over a budget; budget 0 is none, -1 is auto (spec §4.9.2)."""
    if not isinstance(config, dict):
        raise BadRequest("generationConfig.thinkingConfig must be an object")
    level = _first(config, "thinkingLevel", "thinking_level")
    budget = _first(config, "thinkingBudget", "thinking_budget")
    include = _first(config, "includeThoughts", "include_thoughts")
    thinking = ir.Thinking(include_thoughts=include if isinstance(include, bool) else None)
    if isinstance(level, str) and level and level.upper() != "THINKING_LEVEL_UNSPECIFIED":
        level = level.lower()
        if level == "none":
            thinking.mode, thinking.budget = "none", 0
        elif level == "auto":
            thinking.mode, thinking.budget = "auto", -1
        else:
            thinking.mode, thinking.level = "level", level
    elif budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < -1:
            raise BadRequest("thinkingConfig.thinkingBudget must be an integer ≥ -1")
        thinking.budget = budget
        thinking.mode = "none" if budget == 0 else "auto" if budget == -1 else "budget"
    return thinking


# --- upstream side: request -----------------------------------------------------------------


def render_request(req: ir.Request) -> dict[str, Any]:
    """The IR as a Gemini ``generateContent`` body (no ``model``: it goes in the URL / envelope)."""
    names = tool_names(req)
    extensions = dict(req.extensions.get("gemini") or {})
    contents, system = _ContentsWriter(req, names).write()
    body: dict[str, Any] = {}
    if system:
        body["systemInstruction"] = {"parts": system}
    body["contents"] = contents
    tools = _render_tools(req.tools, names)
    if tools:
        body["tools"] = tools
    has_functions = any("functionDeclarations" in tool for tool in tools)
    tool_config = _render_tool_config(req, names, extensions, has_functions=has_functions)
    if tool_config:
        body["toolConfig"] = tool_config
    generation = _render_generation_config(req, extensions.pop("generationConfig", None))
    if generation:
        body["generationConfig"] = generation
    safety = extensions.pop("safetySettings", None)
    body["safetySettings"] = safety if safety else [dict(s) for s in DEFAULT_SAFETY_SETTINGS]
    for key, value in extensions.items():
        body.setdefault(key, value)
    return body


def render_count_tokens(req: ir.Request) -> dict[str, Any]:
    """The countTokens body: the full translated request, so system text and tools are counted (R18)."""
    return {"generateContentRequest": {"model": f"models/{strip_models_prefix(req.model)}", **render_request(req)}}


def wrap_code_assist(body: dict[str, Any], model: str, project: str) -> dict[str, Any]:
    """A Gemini body inside the Cloud Code Assist envelope (spec §1.6)."""
    request = {k: v for k, v in body.items() if k != "model"}
    if "system_instruction" in request:
        request.setdefault("systemInstruction", request.pop("system_instruction"))
    return {"project": project, "model": strip_models_prefix(model), "request": request}


def wrap_code_assist_count_tokens(body: dict[str, Any]) -> dict[str, Any]:
    """``{"request": ...}`` for ``v1internal:countTokens``: no project, model or safety settings."""
    inner = body.get("generateContentRequest", body)
    return {"request": {k: v for k, v in inner.items() if k not in ("model", "safetySettings")}}


def unwrap_code_assist(chunk: dict[str, Any]) -> dict[str, Any]:
    """The ``GenerateContentResponse`` inside a Code Assist ``{"response": ..., "traceId"}`` answer."""
    inner = chunk.get("response")
    if isinstance(inner, dict) and "candidates" not in chunk:
        return inner
    return chunk


def strip_call_ids(body: dict[str, Any]) -> dict[str, Any]:
    """Vertex rejects ``id`` on ``functionCall`` / ``functionResponse``; remove them in place."""
    for content in body.get("contents") or []:
        for part in content.get("parts") or []:
            for key in ("functionCall", "functionResponse"):
                if isinstance(part.get(key), dict):
                    part[key].pop("id", None)
    return body


@dataclass(slots=True)
class _Turn:
    """One ``contents`` entry being built; a user turn keeps its tool results apart so they can be ordered."""

    role: str
    parts: list[dict[str, Any]] = field(default_factory=list)
    results: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)


class _ContentsWriter:
    """Builds ``contents`` and ``systemInstruction.parts`` (spec §4.1, §4.2, §4.5, §4.9.7)."""

    def __init__(self, req: ir.Request, names: dict[str, str]) -> None:
        self.req = req
        self.names = names
        self.call_names = {
            p.id: p.name for m in req.messages if m.role == "assistant" for p in m.parts if isinstance(p, ir.ToolCall)
        }

    def write(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        system = self._system()
        turns: list[_Turn] = []
        for message in self.req.messages:
            turn = self._model_turn(message.parts) if message.role == "assistant" else self._user_turn(message.parts)
            if not (turn.parts or turn.results):
                continue
            if turns and turns[-1].role == turn.role:  # Gemini wants alternation: adjacent turns merge
                last = turns[-1]
                last.parts += turn.parts
                last.results += turn.results
                last.calls += turn.calls
            else:
                turns.append(turn)
        while turns and turns[-1].role == "model":  # Gemini cannot continue a model turn (prefill)
            turns.pop()
        contents = [self._finish(turn, turns[i - 1] if i else None) for i, turn in enumerate(turns)]
        if not contents:
            contents = [{"role": "user", "parts": system or [{"text": ""}]}]
            system = []
        elif contents[0]["role"] == "model":
            contents.insert(0, {"role": "user", "parts": [{"text": ""}]})
        return contents, system

    def _system(self) -> list[dict[str, Any]]:
        top = self.req.top_level_system()
        anchored = sorted((s for s in self.req.system if s.position is not None), key=lambda s: s.position or 0)
        return [
            {"text": part.text}
            for segment in (*top, *anchored)
            for part in segment.parts
            if part.text and not part.text.lstrip().startswith(ATTRIBUTION_PREFIX)
        ]

    def _model_turn(self, parts: list[ir.Part]) -> _Turn:
        turn = _Turn("model")
        pending = ""  # a Gemini signature waiting for the part it belongs to
        for part in parts:
            if isinstance(part, ir.Reasoning):
                pending = self._reasoning(part, turn, pending)
            elif isinstance(part, ir.Text) and part.text:
                turn.parts.append({"text": part.text, **({"thoughtSignature": pending} if pending else {})})
                pending = ""
            elif isinstance(part, ir.ToolCall):
                signature = part.signature if is_gemini_signature(part.signature) else pending
                pending = ""
                name = self.names.get(part.name) or sanitize_name(part.name)
                call = {"name": name, "args": args_object(part.arguments, part.kind)}
                if part.id:
                    call["id"] = part.id
                turn.parts.append({"functionCall": call, **({"thoughtSignature": signature} if signature else {})})
                turn.calls.append(part.id)
            elif isinstance(part, ir.Image | ir.File | ir.Audio):
                turn.parts.append(blob_part(part))
        if pending:
            turn.parts.append({"text": "", "thoughtSignature": pending})
        return turn

    @staticmethod
    def _reasoning(part: ir.Reasoning, turn: _Turn, pending: str) -> str:
        """Reasoning replays only to its own family; unsigned text rides with the bypass sentinel."""
        if part.redacted or part.family not in ("gemini", None):
            return pending
        if part.family is None:
            if part.text:
                turn.parts.append({"text": part.text, "thought": True, "thoughtSignature": SKIP_SIGNATURE})
            return pending
        signature = part.signature if is_gemini_signature(part.signature) else ""
        if pending:
            turn.parts.append({"text": "", "thoughtSignature": pending})
        if not part.text:
            return signature
        turn.parts.append(
            {"text": part.text, "thought": True, **({"thoughtSignature": signature} if signature else {})}
        )
        return ""

    def _user_turn(self, parts: list[ir.Part]) -> _Turn:
        turn = _Turn("user")
        for part in parts:
            if isinstance(part, ir.Text) and part.text:
                turn.parts.append({"text": part.text})
            elif isinstance(part, ir.Image | ir.File | ir.Audio):
                turn.parts.append(blob_part(part))
            elif isinstance(part, ir.ToolResult):
                turn.results.append((part.call_id, self._result(part)))
        return turn

    def _result(self, result: ir.ToolResult) -> list[dict[str, Any]]:
        """A ``functionResponse`` (R1: ``{"result": value}``, JSON text parsed) and its images as siblings."""
        text = "\n".join(p.text for p in result.content if isinstance(p, ir.Text))
        value: Any = text
        if text.lstrip()[:1] in ("{", "["):
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                value = text
        name = self.call_names.get(result.call_id) or result.name or "unknown"
        response: dict[str, Any] = {"name": self.names.get(name, sanitize_name(name))}
        if result.call_id:
            response["id"] = result.call_id
        response["response"] = {"error" if result.is_error else "result": value}
        media = [blob_part(p) for p in result.content if isinstance(p, ir.Image | ir.File)]
        return [{"functionResponse": response}, *media]

    @staticmethod
    def _finish(turn: _Turn, previous: _Turn | None) -> dict[str, Any]:
        if turn.role == "model":
            first_call = next((p for p in turn.parts if "functionCall" in p), None)
            if first_call is not None:
                first_call.setdefault("thoughtSignature", SKIP_SIGNATURE)
            return {"role": "model", "parts": turn.parts}
        order = {ident: i for i, ident in enumerate(previous.calls)} if previous else {}
        results = sorted(turn.results, key=lambda r: order.get(r[0], len(order)))
        return {"role": "user", "parts": [p for _, group in results for p in group] + turn.parts}


def _render_tools(tools: list[ir.Tool], names: dict[str, str]) -> list[dict[str, Any]]:
    declarations: list[dict[str, Any]] = []
    builtins: dict[str, dict[str, Any]] = {}
    for tool in tools:
        if tool.kind == "builtin":
            builtin = _builtin_for_gemini(tool.builtin or {})
            if builtin:
                builtins.setdefault(next(iter(builtin)), builtin)
            continue
        name = names.get(tool.name, sanitize_name(tool.name))
        if any(d["name"] == name for d in declarations):
            continue  # the first declaration of a name wins (spec §4.4.4)
        schema = clean_for_gemini(
            CUSTOM_TOOL_SCHEMA if tool.kind == "custom" else tool.parameters or EMPTY_OBJECT_SCHEMA
        )
        schema.setdefault("type", "object")
        declaration: dict[str, Any] = {"name": name}
        if tool.description:
            declaration["description"] = tool.description
        declaration["parametersJsonSchema"] = schema
        declarations.append(declaration)
    rendered = [{"functionDeclarations": declarations}] if declarations else []
    return rendered + list(builtins.values())


def _builtin_for_gemini(spec: dict[str, Any]) -> dict[str, Any] | None:
    """A built-in tool in Gemini's shape: Gemini keys pass (either spelling); web search becomes googleSearch."""
    kind = spec.get("type")
    if isinstance(kind, str):
        if kind.startswith("web_search"):
            return {"googleSearch": {}}
        if kind == "code_interpreter":
            return {"codeExecution": {}}
        return None
    if len(spec) != 1:
        return None
    key, value = next(iter(spec.items()))
    return {_camel(key): value if isinstance(value, dict) else {}}


_CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}


def _render_tool_config(
    req: ir.Request, names: dict[str, str], extensions: dict[str, Any], *, has_functions: bool
) -> dict[str, Any]:
    config = dict(extensions.pop("toolConfig", None) or {})
    allowed = extensions.pop("allowedFunctionNames", None)
    choice = req.tool_choice
    if choice is None or not has_functions:
        return config
    calling: dict[str, Any] = {"mode": _CHOICE_MODES[choice.mode]}
    if choice.mode == "tool":
        calling["allowedFunctionNames"] = [names.get(choice.name, sanitize_name(choice.name))]
    elif choice.mode == "required" and isinstance(allowed, list) and allowed:
        calling["allowedFunctionNames"] = [names.get(n, sanitize_name(n)) for n in allowed if isinstance(n, str)]
    config["functionCallingConfig"] = calling
    return config


def _render_generation_config(req: ir.Request, base: Any) -> dict[str, Any]:
    config = {_camel(k): v for k, v in base.items()} if isinstance(base, dict) else {}
    for key, value in (
        ("temperature", req.temperature),
        ("topP", req.top_p),
        ("topK", req.top_k),
        ("maxOutputTokens", req.max_tokens),
    ):
        if value is not None:
            config[key] = value
    if req.stop:
        config["stopSequences"] = list(req.stop)
    if req.n is not None and req.n > 1:
        config["candidateCount"] = req.n
    fmt = req.response_format
    if fmt is not None and fmt.type != "text":
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.schema is not None:
            config.pop("responseSchema", None)
            config["responseJsonSchema"] = fmt.schema  # full JSON Schema is accepted here: never cleaned
    thinking = _thinking_config(req.thinking, req.model, config.pop("thinkingConfig", None))
    if thinking:
        config["thinkingConfig"] = thinking
    return config


def _thinking_config(thinking: ir.Thinking | None, model: str, base: Any) -> dict[str, Any]:
    """The Gemini thinking writer (spec §4.9.4): levels as ``thinkingLevel``, the rest as ``thinkingBudget``."""
    config = {_camel(k): v for k, v in base.items()} if isinstance(base, dict) else {}
    if thinking is None:
        return config
    if thinking.include_thoughts is not None:
        config["includeThoughts"] = thinking.include_thoughts
    if thinking.mode is None:
        return config
    config.pop("thinkingLevel", None)
    config.pop("thinkingBudget", None)
    cap = capability(model)
    mode, level = thinking.mode, thinking.level or "medium"
    if mode == "budget" and thinking.budget == 0:
        mode = "none"
    if mode == "none":
        if cap is not None and cap.levels and not cap.zero_allowed:
            config["thinkingLevel"] = cap.levels[0]
        elif cap is None or cap.zero_allowed:
            config["thinkingBudget"] = 0
        else:
            return {}  # the model cannot turn thinking off: leave it at its default
    elif mode == "auto":
        config["thinkingBudget"] = -1
    elif mode == "budget":
        config["thinkingBudget"] = thinking.budget
    elif cap is not None and cap.levels:
        config["thinkingLevel"] = level
    else:
        config["thinkingBudget"] = level_to_budget(level)
    return config


# --- same-dialect pass-through ----------------------------------------------------------------


def normalize_request(body: dict[str, Any]) -> dict[str, Any]:
    """The Gemini -> Gemini sanitising pass (D1.4): the client's body with only what Gemini needs fixed.

    Roles repaired, ``system_instruction`` spelled ``systemInstruction``, ``responseSchema`` sent as
    ``responseJsonSchema``, empty ``functionResponse.name`` back-filled from the calls, thought signatures
    sanitised (§4.9.7), default safety settings, and a leading user turn when the first is the model's.
    """
    out = {k: v for k, v in body.items() if k not in ("model", "session_id")}
    if "system_instruction" in out:
        out.setdefault("systemInstruction", out.pop("system_instruction"))
    generation = out.get("generationConfig")
    if isinstance(generation, dict) and "responseSchema" in generation and "responseJsonSchema" not in generation:
        generation = dict(generation)
        generation["responseJsonSchema"] = to_json_schema(generation.pop("responseSchema"))
        out["generationConfig"] = generation
    contents: list[dict[str, Any]] = []
    role: str | None = None
    calls: list[str] = []
    for content in out.get("contents") or []:
        if not isinstance(content, dict):
            continue
        role = _next_role(content.get("role"), role)
        parts = [dict(p) for p in content.get("parts") or [] if isinstance(p, dict)]
        calls = _sanitize_model_signatures(parts) if role == "model" else _backfill_response_names(parts, calls)
        contents.append({**content, "role": role, "parts": parts})
    if contents and contents[0]["role"] == "model":
        contents.insert(0, {"role": "user", "parts": [{"text": ""}]})
    out["contents"] = contents
    if not out.get("safetySettings") and not out.get("safety_settings"):
        out["safetySettings"] = [dict(s) for s in DEFAULT_SAFETY_SETTINGS]
    return out


def _sanitize_model_signatures(parts: list[dict[str, Any]]) -> list[str]:
    """First functionCall gets a valid signature or the sentinel; others keep only valid ones."""
    names: list[str] = []
    for part in parts:
        call = part.get("functionCall")
        signature = part.pop("thought_signature", None) or part.get("thoughtSignature") or ""
        if isinstance(call, dict) and "thoughtSignature" in call:
            call = part["functionCall"] = {k: v for k, v in call.items() if k != "thoughtSignature"}
            signature = signature or call.get("thoughtSignature", "")
        valid = isinstance(signature, str) and is_gemini_signature(signature)
        if isinstance(call, dict) and not names:
            part["thoughtSignature"] = signature if valid else SKIP_SIGNATURE
        elif valid:
            part["thoughtSignature"] = signature
        else:
            part.pop("thoughtSignature", None)
        if isinstance(call, dict):
            names.append(str(call.get("name") or ""))
    return names


def _backfill_response_names(parts: list[dict[str, Any]], calls: list[str]) -> list[str]:
    """Empty ``functionResponse.name`` values take the preceding calls' names in order."""
    remaining = list(calls)
    for part in parts:
        response = part.get("functionResponse")
        if not isinstance(response, dict):
            continue
        part.pop("thoughtSignature", None)
        part.pop("thought_signature", None)
        if not response.get("name") and remaining:
            part["functionResponse"] = {**response, "name": remaining.pop(0)}
        elif response.get("name") in remaining:
            remaining.remove(response["name"])
    return []


# --- responses --------------------------------------------------------------------------------


def parse_response(body: dict[str, Any], req: ir.Request | None = None) -> ir.Response:
    """A non-stream ``GenerateContentResponse`` (or Code Assist envelope) as the IR.

    It runs through the stream parser, so both paths read parts, signatures, names and usage alike.
    Raises ``ValueError`` for an error body.
    """
    from gateway.dialects.gemini_stream import StreamParser

    parser = StreamParser(req)
    aggregate = ir.Aggregator()
    aggregate.feed(parser.feed_object(body))
    aggregate.feed(parser.finish())
    if aggregate.error is not None:
        raise ValueError(aggregate.error.message or "upstream answered with an error")
    return aggregate.response


def render_response(resp: ir.Response, req: ir.Request) -> dict[str, Any]:
    """The IR answer as a ``GenerateContentResponse`` for a Gemini client (spec §2.4)."""
    parts = client_parts(resp.parts)
    candidate = {
        "content": {"role": "model", "parts": parts or [{"text": ""}]},
        "finishReason": finish_reason(resp.finish),
        "index": 0,
    }
    body: dict[str, Any] = {
        "candidates": [candidate],
        "usageMetadata": usage_metadata(resp.usage),
        "modelVersion": req.model,
        "responseId": resp.id or new_response_id(),
    }
    if resp.created:
        body["createTime"] = datetime.fromtimestamp(resp.created, UTC).isoformat().replace("+00:00", "Z")
    return body


def client_parts(parts: list[ir.Part]) -> list[dict[str, Any]]:
    """Response parts as a Gemini client sees them (foreign reasoning signatures in a carrier)."""
    out: list[dict[str, Any]] = []
    pending = ""
    for part in parts:
        if isinstance(part, ir.Reasoning):
            if part.family in ("gemini", None) and not part.text:
                if pending:
                    out.append({"text": "", "thoughtSignature": pending})
                pending = part.signature
                continue
            out.append(thought_part(part.text, part.signature, part.family, part.redacted))
            continue
        if isinstance(part, ir.Text):
            wire: dict[str, Any] = {"text": part.text}
        elif isinstance(part, ir.ToolCall):
            wire = {"functionCall": function_call(part.id, part.name, part.arguments, part.kind)}
            if part.signature:
                wire["thoughtSignature"] = part.signature
        elif isinstance(part, ir.Image) and part.data:
            wire = {"inlineData": {"mimeType": part.media_type or "image/png", "data": part.data}}
        else:
            continue
        if pending and "thoughtSignature" not in wire:
            wire["thoughtSignature"] = pending
            pending = ""
        out.append(wire)
    if pending:
        out.append({"text": "", "thoughtSignature": pending})
    return out


def thought_part(text: str, signature: str, family: ir.Family | None, redacted: bool = False) -> dict[str, Any]:
    part: dict[str, Any] = {"text": text, "thought": True}
    if signature:
        part["thoughtSignature"] = (
            signature if family in ("gemini", None) else carry_signature(family or "", signature, redacted)
        )
    return part


def function_call(ident: str, name: str, arguments: str, kind: str = "function") -> dict[str, Any]:
    call: dict[str, Any] = {"name": name, "args": args_object(arguments, kind)}
    if ident:
        call["id"] = ident
    return call


def parse_time(value: Any) -> int:
    """Seconds since the epoch of an RFC 3339 ``createTime`` (0 when absent or unreadable)."""
    if not isinstance(value, str) or not value:
        return 0
    head, dot, rest = value.partition(".")
    if dot:  # Google sends nanoseconds; Python reads at most microseconds
        digits = len(rest) - len(rest.lstrip("0123456789"))
        value = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0
