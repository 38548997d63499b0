"""OpenAI Responses: Codex CLI and ``client.responses`` as clients, the Codex backend / Responses API upstream.

Client side: ``parse_request`` (a Responses body → IR) and ``render_response`` / ``StreamRenderer``.
Upstream side: ``render_request`` (IR → a Codex or Responses API body), ``parse_response`` and
``StreamParser``. ``codex_body`` is the same-family path (D1.4): the client's own body with only
the Codex rules applied. Errors use OpenAI's envelope. Pure: no Django, no I/O.

``Request.extensions["responses"]`` carries what the IR does not model: ``instructions`` (the
client's own, rendered back as ``instructions``), ``namespaces`` (flat name → ``{namespace, name}``),
``echo`` (raw request fields a Responses object repeats), ``verbosity``, ``reasoning_summary``,
``prompt_cache_key``, ``include``, ``metadata`` and the other pass-through fields. Other parse sides
may set ``verbosity`` and ``prompt_cache_key`` there for Responses targets.
"""

from __future__ import annotations

import mimetypes
import time
from typing import Any

import orjson

from gateway import ir
from gateway.dialects import BadRequest
from gateway.dialects.openai_responses_stream import (
    ECHO_KEYS,
    StreamParser,
    StreamRenderer,
    call_item,
    codex_call_id,
    codex_tool_names,
    echoed_fields,
    encrypted_content,
    error_type_and_code,
    finish_from_response,
    image_item,
    message_item,
    qualified_name,
    reasoning_from_blob,
    reasoning_item,
    response_id,
    reverse_maps,
    status_for,
    stream_error,
    usage_from_wire,
    usage_to_wire,
)
from gateway.thinking import budget_to_level

__all__ = [
    "BadRequest",
    "StreamParser",
    "StreamRenderer",
    "codex_body",
    "error_body",
    "parse_request",
    "parse_response",
    "render_request",
    "render_response",
    "stream_error",
]

# Extension fields copied raw from a client body (used by Responses targets and the echo).
_PASSED_FIELDS = (
    "store",
    "include",
    "prompt_cache_key",
    "metadata",
    "truncation",
    "max_tool_calls",
    "top_logprobs",
    "safety_identifier",
    "prompt_cache_retention",
    "background",
    "context_management",
    "client_metadata",
    "stream_options",
)
# History items with no meaning outside the upstream that produced them.
_IGNORED_ITEMS = frozenset(
    (
        "web_search_call",
        "file_search_call",
        "image_generation_call",
        "code_interpreter_call",
        "mcp_list_tools",
        "compaction",
        "compaction_summary",
    )
)
_IGNORED_PARTS = frozenset(("prompt_cache_breakpoint",))
_RESPONSES_BUILTINS = frozenset(
    ("web_search", "file_search", "image_generation", "code_interpreter", "local_shell", "mcp", "computer_use_preview")
)
_ATTRIBUTION_PREFIX = "x-anthropic-billing-header:"


def error_body(status: int, message: str, code: str | None = None) -> bytes:
    """OpenAI's error envelope ``{"error":{"message","type","param","code"}}`` by HTTP status."""
    error_type, default_code = error_type_and_code(status)
    error = {"message": message, "type": error_type, "param": None, "code": code or default_code}
    return orjson.dumps({"error": error})


# --- client side: request ------------------------------------------------------------------


def parse_request(body: dict[str, Any]) -> ir.Request:
    """A Responses request (Codex CLI, ``client.responses.create``) → IR; ``BadRequest`` when invalid."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' is required and must be a non-empty string")
    if body.get("previous_response_id"):
        raise BadRequest(
            "'previous_response_id' is not supported: this gateway does not store responses; "
            "send the whole conversation in 'input' (with store: false)"
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean")
    ext: dict[str, Any] = {k: body[k] for k in _PASSED_FIELDS if body.get(k) is not None}
    ext["echo"] = {k: body[k] for k in ECHO_KEYS if k in body}
    req = ir.Request(model=model, stream=stream, source="responses", extensions={"responses": ext})

    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise BadRequest("'instructions' must be a string")
    if instructions:
        req.system.append(ir.SystemSegment([ir.Text(instructions)]))
        ext["instructions"] = instructions
    items = body.get("input")
    if items is None and not instructions:
        raise BadRequest("'input' is required")
    reader = _InputReader(req)
    if isinstance(items, str):
        req.messages.append(ir.Message("user", [ir.Text(items)]))
    elif isinstance(items, list):
        for i, item in enumerate(items):
            reader.read(item, f"input[{i}]")
    elif items is not None:
        raise BadRequest("'input' must be a string or an array of items")

    req.tools = _parse_tools(body.get("tools"), reader.additional_tools, ext)
    req.tool_choice = _parse_tool_choice(body.get("tool_choice"))
    req.parallel_tool_calls = _optional(body, "parallel_tool_calls", bool)
    req.max_tokens = _optional(body, "max_output_tokens", int)
    req.temperature = _number(body, "temperature")
    req.top_p = _number(body, "top_p")
    req.thinking = _parse_reasoning(body.get("reasoning"), ext)
    req.response_format = _parse_text(body.get("text"), ext)
    req.user = str(body.get("user") or "")
    req.service_tier = str(body.get("service_tier") or "")
    return req


def _optional(body: dict[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"'{key}' must be {'a boolean' if kind is bool else 'an integer'}")
    return value


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"'{key}' must be a number")
    return float(value)


class _InputReader:
    """Folds ``input`` items into alternating IR messages plus anchored system segments."""

    def __init__(self, req: ir.Request) -> None:
        self.req = req
        self.additional_tools: list[Any] = []
        self._calls: dict[str, ir.ToolCall] = {}
        self._anchored = False  # a system item sits here: the next item starts a new message

    def read(self, item: Any, where: str) -> None:
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            self._message(item, where)
        elif kind == "reasoning":
            self._reasoning(item)
        elif kind in ("function_call", "custom_tool_call"):
            self._call(item, where)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self._output(item, where)
        elif kind == "additional_tools":
            tools = item.get("tools")
            self.additional_tools.extend(tools if isinstance(tools, list) else [])
        elif kind == "item_reference":
            raise BadRequest(f"{where}: 'item_reference' needs stored responses, which this gateway does not keep")
        elif kind not in _IGNORED_ITEMS:
            raise BadRequest(f"{where} has unsupported type {kind!r}")

    def _append(self, role: ir.Role, parts: list[ir.Part]) -> None:
        messages = self.req.messages
        if messages and messages[-1].role == role and not self._anchored:
            messages[-1].parts.extend(parts)
        else:
            messages.append(ir.Message(role, parts))
        self._anchored = False

    def _message(self, item: dict[str, Any], where: str) -> None:
        role = item.get("role")
        parts = _content_parts(item.get("content"), where)
        if role in ("system", "developer"):
            texts = [p for p in parts if isinstance(p, ir.Text)]
            if len(texts) != len(parts):
                raise BadRequest(f"{where}: {role} messages may only contain text")
            if texts:
                segment = ir.SystemSegment(texts, position=len(self.req.messages), role_hint=role)
                self.req.system.append(segment)
                self._anchored = True
        elif role in ("user", "assistant"):
            if parts:
                self._append(role, parts)
        else:
            raise BadRequest(f"{where}: unsupported role {role!r}")

    def _reasoning(self, item: dict[str, Any]) -> None:
        texts = _texts(item.get("summary")) or _texts(item.get("content"))
        blob = item.get("encrypted_content")
        if texts or blob:
            self._append("assistant", [reasoning_from_blob("\n\n".join(texts), str(blob or ""))])

    def _call(self, item: dict[str, Any], where: str) -> None:
        call_id, name = item.get("call_id") or item.get("id"), item.get("name")
        if not isinstance(call_id, str) or not call_id:
            raise BadRequest(f"{where}: 'call_id' is required")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"{where}: 'name' is required")
        name = qualified_name(str(item.get("namespace") or ""), name)
        if item.get("type") == "custom_tool_call":
            call = ir.ToolCall(call_id, name, str(item.get("input") or ""), kind="custom")
        else:
            arguments = item.get("arguments")
            if not isinstance(arguments, str):
                arguments = "{}" if arguments is None else orjson.dumps(arguments).decode()
            call = ir.ToolCall(call_id, name, arguments)
        self._calls[call_id] = call
        self._append("assistant", [call])

    def _output(self, item: dict[str, Any], where: str) -> None:
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise BadRequest(f"{where}: 'call_id' is required")
        call = self._calls.get(call_id)
        kind = call.kind if call else ("custom" if item["type"] == "custom_tool_call_output" else "function")
        content = _tool_output(item.get("output"), where)
        self._append("user", [ir.ToolResult(call_id, content, name=call.name if call else "", kind=kind)])


def _texts(parts: Any) -> list[str]:
    if not isinstance(parts, list):
        return []
    return [str(p["text"]) for p in parts if isinstance(p, dict) and p.get("text")]


def _content_parts(content: Any, where: str) -> list[ir.Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [ir.Text(content)] if content else []
    if not isinstance(content, list):
        raise BadRequest(f"{where}: 'content' must be a string or an array of parts")
    parts: list[ir.Part] = []
    for j, raw in enumerate(content):
        part = _content_part(raw, f"{where}.content[{j}]")
        if part is not None:
            parts.append(part)
    return parts


def _content_part(raw: Any, where: str) -> ir.Text | ir.Image | ir.File | ir.Audio | None:
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object")
    kind = raw.get("type")
    if kind in ("input_text", "output_text", "text"):
        text = raw.get("text")
        if not isinstance(text, str):
            raise BadRequest(f"{where}: 'text' must be a string")
        return ir.Text(text) if text else None
    if kind == "refusal":
        return ir.Text(str(raw["refusal"])) if raw.get("refusal") else None
    if kind in ("input_image", "image_url"):
        return _image(raw)
    if kind == "input_file":
        return _file(raw)
    if kind == "input_audio":
        nested = raw.get("input_audio")
        audio: dict[str, Any] = nested if isinstance(nested, dict) else raw
        return ir.Audio(str(audio.get("data") or ""), str(audio.get("format") or "wav"))
    if kind in _IGNORED_PARTS:
        return None
    raise BadRequest(f"{where}: unsupported content part type {kind!r}")


def _data_url(url: str) -> tuple[str, str] | None:
    """``data:<mime>[;…];base64,<payload>`` → (mime, payload)."""
    if not url.startswith("data:"):
        return None
    head, sep, payload = url[5:].partition(",")
    if not sep or ";base64" not in head:
        return None
    return head.split(";", 1)[0] or "application/octet-stream", payload


def _image(raw: dict[str, Any]) -> ir.Image | ir.File:
    url: Any = raw.get("image_url")
    detail = raw.get("detail")
    if isinstance(url, dict):  # the chat shape {"url", "detail"}, seen in stringified tool outputs
        url, detail = url.get("url"), url.get("detail", detail)
    if not url and raw.get("file_id"):
        return ir.File(file_id=str(raw["file_id"]), media_type="image/*")
    url = str(url or "")
    inline = _data_url(url)
    detail = str(detail) if detail else None
    if inline:
        return ir.Image(data=inline[1], media_type=inline[0], detail=detail)
    return ir.Image(url=url, detail=detail)


def _file(raw: dict[str, Any]) -> ir.File:
    filename = str(raw.get("filename") or "")
    data = str(raw.get("file_data") or "")
    inline = _data_url(data)
    if inline:
        return ir.File(data=inline[1], media_type=inline[0], filename=filename)
    media_type = (mimetypes.guess_type(filename)[0] or "application/octet-stream") if data else ""
    return ir.File(
        data=data,
        media_type=media_type,
        filename=filename,
        url=str(raw.get("file_url") or ""),
        file_id=str(raw.get("file_id") or ""),
    )


def _tool_output(output: Any, where: str) -> list[ir.Text | ir.Image | ir.File]:
    """A call's output: a string, a part array, or a string holding a JSON part array with images."""
    if output is None:
        return []
    if isinstance(output, str):
        if output.lstrip().startswith("[") and "image" in output:
            try:
                decoded = orjson.loads(output)
            except orjson.JSONDecodeError:
                decoded = None
            if _is_part_array(decoded):
                return _output_parts(decoded, where)
        return [ir.Text(output)]
    if isinstance(output, list):
        return _output_parts(output, where)
    return [ir.Text(orjson.dumps(output).decode())]


def _is_part_array(value: Any) -> bool:
    if not isinstance(value, list) or not value or not all(isinstance(p, dict) for p in value):
        return False
    return any(p.get("type") in ("input_image", "image_url") for p in value)


def _output_parts(raw: list[Any], where: str) -> list[ir.Text | ir.Image | ir.File]:
    parts: list[ir.Text | ir.Image | ir.File] = []
    for j, item in enumerate(raw):
        part = _content_part(item, f"{where}.output[{j}]")
        if isinstance(part, (ir.Text, ir.Image, ir.File)):
            parts.append(part)
    return parts


def _parse_tools(top: Any, additional: list[Any], ext: dict[str, Any]) -> list[ir.Tool]:
    """Top-level tools, then ``additional_tools``; the first declaration of a name wins."""
    if top is not None and not isinstance(top, list):
        raise BadRequest("'tools' must be an array")
    namespaces: dict[str, dict[str, str]] = {}
    tools: dict[str, ir.Tool] = {}
    for i, raw in enumerate([*(top or []), *additional]):
        if not isinstance(raw, dict):
            raise BadRequest(f"tools[{i}] must be an object")
        for tool in _tool_defs(raw, namespaces, f"tools[{i}]"):
            tools.setdefault(tool.name, tool)
    if namespaces:
        ext["namespaces"] = namespaces
    return list(tools.values())


def _tool_defs(raw: dict[str, Any], namespaces: dict[str, dict[str, str]], where: str) -> list[ir.Tool]:
    kind = raw.get("type")
    if kind == "namespace":
        ns = str(raw.get("name") or "")
        tools = []
        for j, child in enumerate(raw.get("tools") or []):
            for tool in _tool_defs(child, namespaces, f"{where}.tools[{j}]") if isinstance(child, dict) else []:
                flat = qualified_name(ns, tool.name)
                namespaces[flat] = {"namespace": ns, "name": tool.name}
                tool.name = flat
                tools.append(tool)
        return tools
    if kind in ("function", "custom"):
        spec = raw["function"] if isinstance(raw.get("function"), dict) else raw  # chat shape, leniently
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"{where}: 'name' is required")
        description = str(spec.get("description") or "")
        if kind == "custom":
            return [ir.Tool(name, description, kind="custom", format=spec.get("format"))]
        parameters = spec.get("parameters")
        if not isinstance(parameters, dict):
            parameters = {"type": "object", "properties": {}}
        return [ir.Tool(name, description, parameters, strict=spec.get("strict"))]
    if not isinstance(kind, str) or not kind:
        raise BadRequest(f"{where}: 'type' is required")
    name = kind + (f":{raw['server_label']}" if raw.get("server_label") else "")
    return [ir.Tool(name, kind="builtin", builtin=raw)]


def _parse_tool_choice(raw: Any) -> ir.ToolChoice | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in ("auto", "none", "required"):
            raise BadRequest("'tool_choice' must be 'auto', 'none', 'required' or an object")
        return ir.ToolChoice(raw)  # type: ignore[arg-type]
    if not isinstance(raw, dict):
        raise BadRequest("'tool_choice' must be a string or an object")
    kind = raw.get("type")
    if kind in ("function", "custom"):
        name = raw.get("name") or (raw.get("function") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("'tool_choice.name' is required")
        return ir.ToolChoice("tool", qualified_name(str(raw.get("namespace") or ""), name))
    if kind == "allowed_tools":
        return ir.ToolChoice("required" if raw.get("mode") == "required" else "auto")
    if not isinstance(kind, str) or not kind:
        raise BadRequest("'tool_choice.type' is required")
    return ir.ToolChoice("tool", kind)


def _parse_reasoning(raw: Any, ext: dict[str, Any]) -> ir.Thinking | None:
    """``reasoning.effort`` → mode/level; ``reasoning.summary`` → the visibility intent (§4.9.2, §4.9.6)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadRequest("'reasoning' must be an object")
    thinking = ir.Thinking()
    effort = raw.get("effort")
    if isinstance(effort, str) and effort:
        effort = effort.lower()
        if effort == "none":
            thinking.mode, thinking.budget = "none", 0
        elif effort == "auto":
            thinking.mode, thinking.budget = "auto", -1
        else:
            thinking.mode, thinking.level = "level", effort
    key = "summary" if "summary" in raw else "generate_summary"
    summary = raw.get(key)
    if summary in ("auto", "concise", "detailed"):
        thinking.include_thoughts = True
        ext["reasoning_summary"] = summary
    elif key in raw:
        thinking.include_thoughts = False
    return thinking if thinking.mode or thinking.include_thoughts is not None else None


def _parse_text(raw: Any, ext: dict[str, Any]) -> ir.ResponseFormat | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadRequest("'text' must be an object")
    if raw.get("verbosity"):
        ext["verbosity"] = raw["verbosity"]
    fmt = raw.get("format")
    if not isinstance(fmt, dict):
        return None
    kind = fmt.get("type")
    if kind == "json_schema":
        schema = fmt.get("schema")
        return ir.ResponseFormat(
            "json_schema", str(fmt.get("name") or ""), schema if isinstance(schema, dict) else None, fmt.get("strict")
        )
    if kind in ("json_object", "text"):
        return ir.ResponseFormat(kind)
    raise BadRequest(f"'text.format.type' {kind!r} is not supported")


# --- client side: response -----------------------------------------------------------------


def render_response(resp: ir.Response, req: ir.Request) -> dict[str, Any]:
    """A complete answer as a Responses object (``status`` completed | incomplete, R10)."""
    rid = response_id(resp.id)
    base = rid[5:]
    status, details = status_for(resp.finish)
    output: list[dict[str, Any]] = []
    texts: list[str] = []
    reasoning_chars = 0

    def flush_text() -> None:
        if texts:
            output.append(message_item(f"msg_{base}_{len(output)}", "".join(texts), status))
            texts.clear()

    for part in resp.parts:
        if isinstance(part, ir.Text):
            texts.append(part.text)
            continue
        flush_text()
        if isinstance(part, ir.Reasoning) and (part.text or part.signature):
            reasoning_chars += len(part.text)
            blob = encrypted_content(part.signature, part.redacted)
            output.append(reasoning_item(f"rs_{base}_{len(output)}", part.text, blob))
        elif isinstance(part, ir.ToolCall):
            output.append(call_item(req, part))
        elif isinstance(part, ir.Image) and part.data:
            output.append(image_item(f"ig_{base}_{len(output)}", part.data, part.media_type))
    flush_text()
    body: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": resp.created or int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": details,
        "model": resp.model or req.model,
        "output": output,
        "usage": usage_to_wire(resp.usage, reasoning_chars),
    }
    body.update(echoed_fields(req))
    return body


# --- upstream side: request ----------------------------------------------------------------


def render_request(req: ir.Request, *, codex: bool = True, accepts_sampling: bool = False) -> dict[str, Any]:
    """IR → a Codex backend body (default) or, with ``codex=False``, an OpenAI Responses API body.

    Codex: ``stream``/``store``/``include`` constants, no ``max_output_tokens``/``temperature``/
    ``top_p``, default ``reasoning.effort`` medium (§4.6, providers §7.4). The API target keeps
    ``max_output_tokens`` and, when ``accepts_sampling``, ``temperature``/``top_p``.
    """
    ext = req.extensions.get("responses", {})
    names = codex_tool_names(req)
    top = [s for s in req.system if s.position is None]
    instructions = ""
    if req.source == "responses" and ext.get("instructions") and top and _segment_text(top[0]) == ext["instructions"]:
        instructions, top = ext["instructions"], top[1:]
    body: dict[str, Any] = {"model": req.model, "instructions": instructions}
    body["input"] = _InputWriter(req, names).write(top)
    tools = [t for t in (_render_tool(tool, names, req.source) for tool in req.tools) if t is not None]
    if tools:
        body["tools"] = tools
        body["tool_choice"] = _render_tool_choice(req, names)
        parallel = req.parallel_tool_calls
        body["parallel_tool_calls"] = (parallel is not False or req.source != "claude") if codex else parallel
        if body["parallel_tool_calls"] is None:
            del body["parallel_tool_calls"]
    reasoning = _render_reasoning(req, ext, codex)
    if reasoning:
        body["reasoning"] = reasoning
    text = _render_text(req, ext)
    if text:
        body["text"] = text
    if codex:
        body.update(stream=True, store=False, include=["reasoning.encrypted_content"])
        if req.service_tier in ("priority", "fast"):
            body["service_tier"] = "priority"
        if ext.get("prompt_cache_key"):
            body["prompt_cache_key"] = ext["prompt_cache_key"]
        return body
    return _api_fields(body, req, ext, accepts_sampling)


def _api_fields(body: dict[str, Any], req: ir.Request, ext: dict[str, Any], sampling: bool) -> dict[str, Any]:
    if not body["instructions"]:
        del body["instructions"]
    include = [i for i in ext.get("include") or [] if isinstance(i, str)]
    body.update(stream=req.stream, store=False, include=sorted({*include, "reasoning.encrypted_content"}))
    if req.max_tokens is not None:
        body["max_output_tokens"] = req.max_tokens
    if sampling:
        body.update({k: v for k, v in (("temperature", req.temperature), ("top_p", req.top_p)) if v is not None})
    if req.service_tier:
        body["service_tier"] = req.service_tier
    if req.user:
        body["user"] = req.user
    for key in ("prompt_cache_key", "metadata", "truncation", "max_tool_calls", "top_logprobs", "safety_identifier"):
        if ext.get(key) is not None:
            body[key] = ext[key]
    return body


def _segment_text(segment: ir.SystemSegment) -> str:
    return "".join(p.text for p in segment.parts)


def _developer(segment: ir.SystemSegment) -> dict[str, Any] | None:
    parts = [{"type": "input_text", "text": p.text} for p in segment.parts if p.text]
    parts = [p for p in parts if not p["text"].startswith(_ATTRIBUTION_PREFIX)]
    return {"type": "message", "role": "developer", "content": parts} if parts else None


class _InputWriter:
    """IR messages → Codex ``input`` items; system segments become ``developer`` messages in place (D3)."""

    def __init__(self, req: ir.Request, names: dict[str, str]) -> None:
        self.req = req
        self.names = names
        self.items: list[dict[str, Any]] = []
        self._calls: dict[str, str] = {}  # call id → kind, for the calls sent so far
        self._ambiguous: set[str] = set()
        self._answered: set[str] = set()

    def write(self, top: list[ir.SystemSegment]) -> list[dict[str, Any]]:
        anchored = sorted((s for s in self.req.system if s.position is not None), key=lambda s: s.position or 0)
        for segment in top:
            self._system(segment)
        for i, message in enumerate(self.req.messages):
            while anchored and (anchored[0].position or 0) <= i:
                self._system(anchored.pop(0))
            if message.role == "assistant":
                self._assistant(message)
            else:
                self._user(message)
        for segment in anchored:
            self._system(segment)
        return self.items

    def _system(self, segment: ir.SystemSegment) -> None:
        item = _developer(segment)
        if item:
            self.items.append(item)

    def _flush(self, role: str, content: list[dict[str, Any]]) -> None:
        if content:
            self.items.append({"type": "message", "role": role, "content": list(content)})
            content.clear()

    def _user(self, message: ir.Message) -> None:
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, ir.ToolResult):
                self._flush("user", content)
                self._result(part)
            elif isinstance(part, (ir.Text, ir.Image, ir.File, ir.Audio)):
                rendered = _input_part(part)
                if rendered:
                    content.append(rendered)
        self._flush("user", content)

    def _result(self, result: ir.ToolResult) -> None:
        # Codex rejects outputs without a preceding call, and duplicates (§4.5, §6 item 14).
        kind = self._calls.get(result.call_id)
        if kind is None or result.call_id in self._answered or result.call_id in self._ambiguous:
            return
        self._answered.add(result.call_id)
        item_type = "custom_tool_call_output" if kind == "custom" else "function_call_output"
        self.items.append({"type": item_type, "call_id": codex_call_id(result.call_id), "output": _output(result)})

    def _assistant(self, message: ir.Message) -> None:
        ids = [p.id for p in message.parts if isinstance(p, ir.ToolCall)]
        self._ambiguous.update(i for i in ids if ids.count(i) > 1)
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, ir.Text):
                if part.text:
                    content.append({"type": "output_text", "text": part.text})
            elif isinstance(part, ir.Reasoning):
                self._flush("assistant", content)
                if _replayable(part):
                    self.items.append(_reasoning_input(part))
            elif isinstance(part, ir.ToolCall) and part.id not in self._ambiguous:
                self._flush("assistant", content)
                self._calls[part.id] = part.kind
                self._answered.discard(part.id)
                self.items.append(self._call(part))
        self._flush("assistant", content)

    def _call(self, call: ir.ToolCall) -> dict[str, Any]:
        name, call_id = self.names.get(call.name, call.name), codex_call_id(call.id)
        if call.kind == "custom":
            return {"type": "custom_tool_call", "call_id": call_id, "name": name, "input": call.arguments}
        return {"type": "function_call", "call_id": call_id, "name": name, "arguments": call.arguments or "{}"}


def _replayable(reasoning: ir.Reasoning) -> bool:
    """Only blobs the Responses family produced go back to it (§4.9.7)."""
    if not reasoning.signature or reasoning.redacted:
        return False
    family = reasoning.family or reasoning_from_blob("", reasoning.signature).family
    return family == "responses"


def _reasoning_input(reasoning: ir.Reasoning) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": reasoning.text}] if reasoning.text else []
    return {"type": "reasoning", "summary": summary, "encrypted_content": reasoning.signature}


def _input_part(part: ir.Text | ir.Image | ir.File | ir.Audio) -> dict[str, Any] | None:
    if isinstance(part, ir.Text):
        return {"type": "input_text", "text": part.text} if part.text else None
    if isinstance(part, ir.Image):
        url = f"data:{part.media_type or 'image/png'};base64,{part.data}" if part.data else part.url
        image: dict[str, Any] = {"type": "input_image", "image_url": url}
        if part.detail:
            image["detail"] = part.detail
        return image
    if isinstance(part, ir.Audio):
        return {"type": "input_audio", "data": part.data, "format": part.format}
    if part.file_id and part.media_type.startswith("image/") and not part.data:
        return {"type": "input_image", "file_id": part.file_id}
    file: dict[str, Any] = {"type": "input_file"}
    if part.data:
        file["file_data"] = f"data:{part.media_type or 'application/octet-stream'};base64,{part.data}"
    elif part.url:
        file["file_url"] = part.url
    elif part.file_id:
        file["file_id"] = part.file_id
    else:
        return None
    if part.filename or part.data:
        file["filename"] = part.filename or "document" + (mimetypes.guess_extension(part.media_type) or "")
    return file


def _output(result: ir.ToolResult) -> str | list[dict[str, Any]]:
    """A string, or an ``input_text``/``input_image``/``input_file`` array when media is present."""
    if any(not isinstance(p, ir.Text) for p in result.content):
        return [p for p in (_input_part(part) for part in result.content) if p is not None]
    return "\n\n".join(p.text for p in result.content if isinstance(p, ir.Text))


def _render_tool(tool: ir.Tool, names: dict[str, str], source: ir.Family | None) -> dict[str, Any] | None:
    if tool.kind == "builtin":
        return _builtin(tool)
    name = names.get(tool.name, tool.name)
    if tool.kind == "custom":
        custom: dict[str, Any] = {"type": "custom", "name": name}
        if tool.description:
            custom["description"] = tool.description
        if tool.format:
            custom["format"] = tool.format
        return custom
    parameters = {k: v for k, v in tool.parameters.items() if k != "$schema"}
    function: dict[str, Any] = {"type": "function", "name": name, "description": tool.description}
    function["parameters"] = parameters
    if tool.strict is not None or source != "responses":
        function["strict"] = bool(tool.strict)  # the API defaults to strict; foreign schemas rarely fit it
    return function


def _builtin(tool: ir.Tool) -> dict[str, Any] | None:
    """A built-in tool in the Responses shape, or None for another family's built-in."""
    raw = tool.builtin or {"type": tool.name}
    kind = str(raw.get("type") or "")
    if kind.startswith("web_search_preview"):
        return dict(raw, type="web_search")
    if kind.startswith("web_search_20"):  # Anthropic's typed web search
        search: dict[str, Any] = {"type": "web_search"}
        if raw.get("allowed_domains"):
            search["filters"] = {"allowed_domains": raw["allowed_domains"]}
        if raw.get("user_location"):
            search["user_location"] = raw["user_location"]
        return search
    return dict(raw) if kind in _RESPONSES_BUILTINS else None


def _render_tool_choice(req: ir.Request, names: dict[str, str]) -> str | dict[str, Any]:
    choice = req.tool_choice
    if choice is None:
        return "auto"
    if choice.mode != "tool":
        return choice.mode
    tool = next((t for t in req.tools if t.name == choice.name), None)
    if tool is not None and tool.kind == "builtin":
        rendered = _builtin(tool)
        return {"type": rendered["type"]} if rendered else "auto"
    if tool is None and (choice.name in _RESPONSES_BUILTINS or choice.name.startswith("web_search")):
        return {"type": "web_search" if choice.name.startswith("web_search") else choice.name}
    kind = "custom" if tool is not None and tool.kind == "custom" else "function"
    return {"type": kind, "name": names.get(choice.name, choice.name)}


def _effort(thinking: ir.Thinking) -> str:
    if thinking.mode == "none":
        return "none"
    if thinking.mode == "level" and thinking.level and thinking.level != "auto":
        return thinking.level
    if thinking.mode == "budget" and thinking.budget is not None:
        level = budget_to_level(thinking.budget)
        return level if level != "auto" else "medium"
    return "medium"  # auto: OpenAI has no dynamic effort


def _render_reasoning(req: ir.Request, ext: dict[str, Any], codex: bool) -> dict[str, Any] | None:
    thinking = req.thinking
    effort = _effort(thinking) if thinking and thinking.mode else ("medium" if codex else None)
    summary = None
    if effort != "none" and not (thinking and thinking.include_thoughts is False):
        if ext.get("reasoning_summary"):
            summary = ext["reasoning_summary"]
        elif codex or (thinking and thinking.include_thoughts):
            summary = "auto"
    reasoning = {k: v for k, v in (("effort", effort), ("summary", summary)) if v}
    return reasoning or None


def _render_text(req: ir.Request, ext: dict[str, Any]) -> dict[str, Any]:
    text: dict[str, Any] = {}
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_schema":
        text["format"] = {"type": "json_schema", "name": fmt.name or "response", "schema": fmt.schema or {}}
        if fmt.strict is not None:
            text["format"]["strict"] = fmt.strict
    elif fmt is not None:
        text["format"] = {"type": fmt.type}
    if ext.get("verbosity"):
        text["verbosity"] = ext["verbosity"]
    return text


# --- upstream side: response ---------------------------------------------------------------


def parse_response(body: dict[str, Any], req: ir.Request | None = None) -> ir.Response:
    """A Responses object (or a terminal ``response.completed`` event holding one) → IR."""
    if isinstance(body.get("response"), dict) and str(body.get("type", "")).startswith("response."):
        body = body["response"]
    names, ids = reverse_maps(req)
    parts: list[ir.Part] = []
    for item in body.get("output") or []:
        if isinstance(item, dict):
            parts.extend(_output_item(item, names, ids))
    saw_tool = any(isinstance(p, ir.ToolCall) for p in parts)
    return ir.Response(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or ""),
        created=int(body.get("created_at") or 0),
        parts=parts,
        finish=finish_from_response(body, saw_tool),
        usage=usage_from_wire(body.get("usage")),
    )


def _output_item(item: dict[str, Any], names: dict[str, str], ids: dict[str, str]) -> list[ir.Part]:
    kind = item.get("type")
    if kind == "message":
        texts = []
        for part in item.get("content") or []:
            if isinstance(part, dict):
                value = part.get("refusal") if part.get("type") == "refusal" else part.get("text")
                texts.append(str(value or ""))
        return [ir.Text("".join(texts))] if any(texts) else []
    if kind == "reasoning":
        text = "\n\n".join(_texts(item.get("summary")) or _texts(item.get("content")))
        blob = str(item.get("encrypted_content") or "")
        return [ir.Reasoning(text, blob, "responses")] if text or blob else []
    if kind in ("function_call", "custom_tool_call"):
        name = str(item.get("name") or "")
        name = qualified_name(str(item.get("namespace") or ""), names.get(name, name))
        call_id = str(item.get("call_id") or item.get("id") or "")
        if kind == "custom_tool_call":
            return [ir.ToolCall(ids.get(call_id, call_id), name, str(item.get("input") or ""), kind="custom")]
        return [ir.ToolCall(ids.get(call_id, call_id), name, str(item.get("arguments") or "{}"))]
    if kind == "image_generation_call" and item.get("result"):
        return [ir.Image(data=str(item["result"]), media_type="image/" + str(item.get("output_format") or "png"))]
    return []


# --- same-family path ----------------------------------------------------------------------

_CODEX_DROPPED = frozenset(
    (
        "max_output_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "truncation",
        "prompt_cache_options",
        "prompt_cache_retention",
        "user",
        "context_management",
        "previous_response_id",
        "generate",
        "safety_identifier",
    )
)


def codex_body(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A Responses client's own body with only the Codex rules applied (§2.2, §6 item 46, D1.4).

    Fields the IR does not model pass through; names and items are left as the client sent them.
    """
    if body.get("previous_response_id"):
        raise BadRequest("'previous_response_id' is not supported: send the whole conversation in 'input'")
    out = {k: v for k, v in body.items() if k not in _CODEX_DROPPED}
    out.update(model=model, stream=True, store=False, include=["reasoning.encrypted_content"])
    if not isinstance(out.get("instructions"), str):
        out["instructions"] = ""
    if out.get("service_tier") != "priority":
        out.pop("service_tier", None)
    options = out.pop("stream_options", None)
    if isinstance(options, dict) and "reasoning_summary_delivery" in options:
        out["stream_options"] = {"reasoning_summary_delivery": options["reasoning_summary_delivery"]}
    items = out.get("input")
    if isinstance(items, str):
        out["input"] = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": items}]}]
    elif isinstance(items, list):
        out["input"] = [
            dict(item, role="developer") if isinstance(item, dict) and item.get("role") == "system" else item
            for item in items
        ]
    tools = out.get("tools")
    if isinstance(tools, list) and tools:
        out["tools"] = [_web_search(t) for t in tools]
        out["parallel_tool_calls"] = True
    else:
        out.pop("parallel_tool_calls", None)
    if isinstance(out.get("tool_choice"), dict):
        out["tool_choice"] = _web_search(out["tool_choice"])
    return out


def _web_search(tool: Any) -> Any:
    if isinstance(tool, dict) and str(tool.get("type", "")).startswith("web_search_preview"):
        return dict(tool, type="web_search")
    return tool
