"""OpenAI Chat Completions: the client dialect and the OpenAI-compatible upstream family.

Client side: ``parse_request`` (body → IR), ``render_response`` and ``StreamRenderer`` (IR → answer).
Upstream side: ``render_request`` (IR → body), ``parse_response`` and ``StreamParser`` (answer → IR).
The same-dialect path skips the IR: ``read_body``, ``upstream_body`` and ``StreamRelay`` forward the
client's own bytes (D1.4).

Conventions for ``Request.extensions["openai"]`` (written by ``parse_request``): every body field the
IR does not model, merged back into the body only when the request came from an OpenAI chat client;
keys starting with ``_`` are notes, never sent: ``_max_tokens_field`` (the spelling the client used)
and ``_system_at`` (the message index before which each top-level system segment stood, present only
when one stood after a message, so chat targets can keep it in place). ``extensions["gemini"]
["generationConfig"]`` holds the client's ``generationConfig`` plus ``modalities``/``image_config`` in
Gemini's names, for a Gemini target to start from.

Pure: no Django, no I/O.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any, overload

import orjson

from gateway.dialects import BadRequest
from gateway.dialects.openai_chat_stream import (
    StreamParser,
    StreamRenderer,
    custom_tools_wrapped,
    error_envelope,
    finish_from,
    finish_reason,
    stream_error,
    thought_signature,
    unwrap_custom_input,
    usage_body,
    usage_from,
)
from gateway.ir import (
    Audio,
    File,
    Image,
    Message,
    Part,
    Reasoning,
    Request,
    Response,
    ResponseFormat,
    SystemSegment,
    Text,
    Thinking,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
    Usage,
)
from gateway.thinking import LEVELS, budget_to_level, capability

__all__ = [
    "BadRequest",
    "StreamParser",
    "StreamRelay",
    "StreamRenderer",
    "error_body",
    "parse_request",
    "parse_response",
    "read_body",
    "render_request",
    "render_response",
    "stream_error",
    "stream_error_event",
    "upstream_body",
    "usage_from",
    "wants_stream_usage",
]

# --- client side: the request ----------------------------------------------------------------

_MAPPED = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "n",
        "response_format",
        "reasoning_effort",
        "stream",
        "stream_options",
        "user",
        "service_tier",
    }
)
_MEDIA_BY_EXTENSION = {
    "pdf": "application/pdf",
    "txt": "text/plain",
    "md": "text/markdown",
    "csv": "text/csv",
    "json": "application/json",
    "html": "text/html",
    "xml": "application/xml",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "mp4": "video/mp4",
}


def parse_request(body: dict[str, Any]) -> Request:
    """A Chat Completions body → the IR, raising ``BadRequest`` with a clear reason (§2.1)."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' is required and must be a non-empty string")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array")
    extensions: dict[str, Any] = {k: v for k, v in body.items() if k not in _MAPPED}
    req = Request(model=model, source="openai")
    _parse_messages(messages, req, extensions)
    _parse_tools(body, req)
    _parse_sampling(body, req, extensions)
    req.thinking = _parse_thinking(body)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object")
    req.stream, req.include_usage = stream, stream and bool(options and options.get("include_usage"))
    other_options = {k: v for k, v in (options or {}).items() if k != "include_usage"}
    if other_options:
        extensions["stream_options"] = other_options
    req.user = _string(body, "user")
    req.service_tier = _string(body, "service_tier")
    generation = _gemini_generation_config(body)
    if generation:
        req.extensions["gemini"] = {"generationConfig": generation}
    if extensions:
        req.extensions["openai"] = extensions
    return req


def _gemini_generation_config(body: dict[str, Any]) -> dict[str, Any]:
    """What a Gemini target should add to its ``generationConfig`` (§2.1).

    The client's own ``generationConfig`` is copied verbatim (CPA lets chat clients pass Gemini
    options this way); ``modalities`` and ``image_config`` fill in what it leaves out.
    """
    given = body.get("generationConfig")
    config = dict(given) if isinstance(given, dict) else {}
    modalities = body.get("modalities")
    if isinstance(modalities, list) and "responseModalities" not in config:
        config["responseModalities"] = [str(m).upper() for m in modalities]
    image = body.get("image_config")
    if isinstance(image, dict) and "imageConfig" not in config:
        names = (("aspect_ratio", "aspectRatio"), ("image_size", "imageSize"))
        mapped = {ours: image[theirs] for theirs, ours in names if theirs in image}
        if mapped:
            config["imageConfig"] = mapped
    return config


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string")
    return value or ""


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"'{key}' must be a number")
    return value


def _integer(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{key}' must be an integer")
    return value


def _parse_sampling(body: dict[str, Any], req: Request, extensions: dict[str, Any]) -> None:
    req.temperature, req.top_p = _number(body, "temperature"), _number(body, "top_p")
    req.top_k, req.n = _integer(body, "top_k"), _integer(body, "n")
    req.max_tokens = _integer(body, "max_completion_tokens")
    if req.max_tokens is not None:
        extensions["_max_tokens_field"] = "max_completion_tokens"
    else:
        req.max_tokens = _integer(body, "max_tokens")
    stop = body.get("stop")
    if isinstance(stop, str):
        req.stop = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        req.stop = list(stop)
    elif stop is not None:
        raise BadRequest("'stop' must be a string or an array of strings")
    req.response_format = _parse_response_format(body.get("response_format"))


def _parse_response_format(value: Any) -> ResponseFormat | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("text", "json_object"):
        return ResponseFormat(type=kind)
    if kind != "json_schema":
        raise BadRequest("'response_format.type' must be 'text', 'json_object' or 'json_schema'")
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise BadRequest("'response_format.json_schema' must be an object")
    schema, strict = spec.get("schema"), spec.get("strict")
    return ResponseFormat(
        type="json_schema",
        name=str(spec.get("name") or ""),
        schema=schema if isinstance(schema, dict) else None,
        strict=strict if isinstance(strict, bool) else None,
    )


def _parse_thinking(body: dict[str, Any]) -> Thinking | None:
    """``reasoning_effort`` plus the show-the-reasoning intent of §4.9.6."""
    include = _include_thoughts(body)
    effort = body.get("reasoning_effort")
    if effort is None:
        return Thinking(include_thoughts=include) if include is not None else None
    if not isinstance(effort, str) or effort.strip().lower() not in LEVELS:
        raise BadRequest(f"'reasoning_effort' must be one of {', '.join(LEVELS)}")
    level = effort.strip().lower()
    shown = include if include is not None else level != "none"
    if level == "none":
        return Thinking(mode="none", budget=0, include_thoughts=shown)
    if level == "auto":
        return Thinking(mode="auto", budget=-1, include_thoughts=shown)
    return Thinking(mode="level", level=level, include_thoughts=shown)


def _include_thoughts(body: dict[str, Any]) -> bool | None:
    """An explicit ``extra_body.google.thinking_config.include_thoughts`` (SDKs flatten ``extra_body``)."""
    extra = body.get("extra_body")
    for holder in (extra if isinstance(extra, dict) else {}, body):
        google = holder.get("google")
        if not isinstance(google, dict):
            continue
        config = google.get("thinking_config") or google.get("thinkingConfig")
        if isinstance(config, dict):
            flag = config.get("include_thoughts", config.get("includeThoughts"))
            if isinstance(flag, bool):
                return flag
    return None


# -- messages


def _parse_messages(raw: list[Any], req: Request, extensions: dict[str, Any]) -> None:
    calls: dict[str, ToolCall] = {}
    system_at: list[int] = []
    results: Message | None = None  # the user message collecting consecutive tool messages
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise BadRequest(f"'{where}' must be an object")
        role = msg.get("role")
        if role == "tool":
            result = _tool_result(msg, where, calls)
            if results is None:
                results = Message(role="user")
                req.messages.append(results)
            results.parts.append(result)
            continue
        results = None
        if role in ("system", "developer"):
            parts = [p for p in _content(msg, where) if isinstance(p, Text)]
            req.system.append(SystemSegment(parts=parts, role_hint="developer" if role == "developer" else "system"))
            system_at.append(len(req.messages))
        elif role == "user":
            req.messages.append(Message(role="user", parts=_content(msg, where)))
        elif role == "assistant":
            req.messages.append(_assistant(msg, where, calls))
        else:
            raise BadRequest(f"'{where}.role' must be one of system, developer, user, assistant, tool")
    if any(system_at):
        extensions["_system_at"] = system_at


def _content(msg: dict[str, Any], where: str) -> list[Part]:
    content = msg.get("content")
    if content is None:
        parts: list[Part] = []
    elif isinstance(content, str):
        parts = [Text(content)] if content else []
    elif isinstance(content, list):
        parts = [p for j, item in enumerate(content) if (p := _part(item, f"{where}.content[{j}]")) is not None]
    else:
        raise BadRequest(f"'{where}.content' must be a string or an array of content parts")
    cache_control = msg.get("cache_control")
    texts = [p for p in parts if isinstance(p, Text)]
    if isinstance(cache_control, dict) and texts:
        texts[-1].cache_control = cache_control  # a message's breakpoint lands on its last block
    return parts


def _part(item: Any, where: str) -> Part | None:
    kind = item.get("type") if isinstance(item, dict) else None
    body = item.get(kind) if isinstance(kind, str) else None
    if kind in ("text", "refusal"):
        text = item.get("text" if kind == "text" else "refusal")
        if not isinstance(text, str):
            raise BadRequest(f"'{where}.{kind}' must be a string")
        cache_control = item.get("cache_control")
        return Text(text, cache_control if isinstance(cache_control, dict) else None) if text else None
    if kind == "image_url":
        url = body.get("url") if isinstance(body, dict) else body
        detail = body.get("detail") if isinstance(body, dict) else None
        return _image(url, detail if isinstance(detail, str) else None, where)
    if kind == "file" and isinstance(body, dict):
        return _file(body, where)
    if kind == "input_audio" and isinstance(body, dict) and isinstance(body.get("data"), str):
        return Audio(data=body["data"], format=str(body.get("format") or "wav"))
    if kind == "video_url":
        url = body.get("url") if isinstance(body, dict) else body
        if not isinstance(url, str) or not url:
            raise BadRequest(f"'{where}.video_url.url' must be a non-empty string")
        media_type, data = _data_url(url, where) or ("video/mp4", "")
        return File(data=data, media_type=media_type, url="" if data else url)
    raise BadRequest(f"'{where}' is not a supported content part (type {kind!r})")


def _data_url(url: str, where: str) -> tuple[str, str] | None:
    """``(media type, base64 payload)`` of a ``data:`` URL; None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, comma, payload = url[5:].partition(",")
    params = [p.strip().lower() for p in header.split(";")]
    if not comma or "base64" not in params[1:]:
        raise BadRequest(f"'{where}': data URLs must have the form data:<type>;base64,<data>")
    return params[0] or "application/octet-stream", payload


def _image(url: Any, detail: str | None, where: str) -> Image:
    if not isinstance(url, str) or not url:
        raise BadRequest(f"'{where}.image_url.url' must be a non-empty string")
    inline = _data_url(url, where)
    if inline:
        return Image(media_type=inline[0], data=inline[1], detail=detail)
    return Image(url=url, detail=detail)


def _file(body: dict[str, Any], where: str) -> File:
    filename = str(body.get("filename") or "")
    data, file_id, url = body.get("file_data"), body.get("file_id"), body.get("file_url")
    if isinstance(data, str) and data:
        inline = _data_url(data, where)
        if inline:
            return File(data=inline[1], media_type=inline[0], filename=filename)
        media_type = _MEDIA_BY_EXTENSION.get(filename.rpartition(".")[2].lower())
        if not media_type:
            raise BadRequest(f"'{where}.file.file_data' must be a base64 data URL (or name a file of a known type)")
        return File(data=data, media_type=media_type, filename=filename)
    if isinstance(file_id, str) and file_id:
        return File(file_id=file_id, filename=filename)
    if isinstance(url, str) and url:
        return File(url=url, filename=filename)
    raise BadRequest(f"'{where}.file' needs file_data, file_id or file_url")


def _assistant(msg: dict[str, Any], where: str, calls: dict[str, ToolCall]) -> Message:
    parts: list[Part] = []
    reasoning = msg.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        parts.append(Reasoning(text=reasoning))
    parts.extend(_content(msg, where))
    raw_calls = msg.get("tool_calls")
    raw_calls = [] if raw_calls is None else raw_calls
    if not isinstance(raw_calls, list):
        raise BadRequest(f"'{where}.tool_calls' must be an array")
    for k, raw in enumerate(raw_calls):
        call = _tool_call(raw, f"{where}.tool_calls[{k}]")
        calls[call.id] = call
        parts.append(call)
    return Message(role="assistant", parts=parts)


def _tool_call(raw: Any, where: str) -> ToolCall:
    if not isinstance(raw, dict):
        raise BadRequest(f"'{where}' must be an object")
    call_id = raw.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequest(f"'{where}.id' is required")
    custom = raw.get("type") == "custom"
    body = raw.get("custom" if custom else "function")
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(name, str) or not name:
        raise BadRequest(f"'{where}.{'custom' if custom else 'function'}.name' is required")
    if custom:
        return ToolCall(id=call_id, name=name, arguments=str(body.get("input") or ""), kind="custom")
    arguments = body.get("arguments")
    if isinstance(arguments, dict):
        arguments = orjson.dumps(arguments).decode()
    text = arguments if isinstance(arguments, str) else "{}"
    return ToolCall(id=call_id, name=name, arguments=text, signature=thought_signature(raw))


def _tool_result(msg: dict[str, Any], where: str, calls: dict[str, ToolCall]) -> ToolResult:
    call_id = msg.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequest(f"'{where}.tool_call_id' is required for role 'tool'")
    content = msg.get("content")
    expanded = _stringified_parts(content) if isinstance(content, str) else None
    parts = _content({"content": expanded}, where) if expanded else _content(msg, where)
    kept: list[Text | Image | File] = [p for p in parts if isinstance(p, Text | Image | File)]
    if len(kept) != len(parts):
        raise BadRequest(f"'{where}.content' may hold only text, image_url and file parts")
    call = calls.get(call_id)
    name = call.name if call else str(msg.get("name") or "")
    return ToolResult(call_id=call_id, content=kept, name=name, kind=call.kind if call else "function")


def _stringified_parts(content: str) -> list[dict[str, Any]] | None:
    """A tool output that is a JSON array of content parts holding an image, as real parts (§6 item 27)."""
    if not content.startswith("[") or "image" not in content:
        return None
    try:
        items = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        return None
    parts: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind in ("text", "input_text", "output_text") and isinstance(item.get("text"), str):
            parts.append({"type": "text", "text": item["text"]})
        elif kind in ("image_url", "input_image"):
            url = item.get("image_url")
            parts.append({"type": "image_url", "image_url": url if isinstance(url, dict) else {"url": url}})
        else:
            return None
    return parts if any(p["type"] == "image_url" for p in parts) else None


# -- tools


def _parse_tools(body: dict[str, Any], req: Request) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise BadRequest("'tools' must be an array")
        req.tools = [_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
    req.tool_choice = _tool_choice(body.get("tool_choice"))
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise BadRequest("'parallel_tool_calls' must be a boolean")
    req.parallel_tool_calls = parallel


def _tool(raw: Any, where: str) -> Tool:
    if not isinstance(raw, dict):
        raise BadRequest(f"'{where}' must be an object")
    kind = raw.get("type")
    if kind in ("function", "custom"):
        spec = raw.get(kind, raw if kind == "custom" else None)
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(spec, dict) or not isinstance(name, str) or not name:
            raise BadRequest(f"'{where}.{kind}.name' is required")
        description = str(spec.get("description") or "")
        if kind == "custom":
            fmt = spec.get("format")
            return Tool(
                name=name, description=description, kind="custom", format=fmt if isinstance(fmt, dict) else None
            )
        params, strict = spec.get("parameters"), spec.get("strict")
        if params is not None and not isinstance(params, dict):
            raise BadRequest(f"'{where}.function.parameters' must be a JSON schema object")
        tool = Tool(name=name, description=description, strict=strict if isinstance(strict, bool) else None)
        if params is not None:
            tool.parameters = params
        cache_control = raw.get("cache_control") or spec.get("cache_control")
        tool.cache_control = cache_control if isinstance(cache_control, dict) else None
        return tool
    # Provider built-ins: {"google_search": {}} for Gemini, any other typed tool as sent.
    name = kind if isinstance(kind, str) else next(iter(raw), "")
    return Tool(name=str(name), kind="builtin", builtin=raw)


def _tool_choice(value: Any) -> ToolChoice | None:
    if value is None:
        return None
    if value in ("none", "auto", "required"):
        return ToolChoice(mode=value)
    kind = value.get("type") if isinstance(value, dict) else None
    spec = value.get(kind) if isinstance(kind, str) and isinstance(value, dict) else None
    if kind in ("function", "custom") and isinstance(spec, dict) and isinstance(spec.get("name"), str):
        return ToolChoice(mode="tool", name=spec["name"])
    if kind == "allowed_tools" and isinstance(spec, dict) and spec.get("mode") in ("auto", "required"):
        return ToolChoice(mode=spec["mode"])
    raise BadRequest("'tool_choice' must be 'none', 'auto', 'required' or name a function")


# --- upstream side: the request --------------------------------------------------------------

_ATTRIBUTION = "x-anthropic-billing-header:"  # Claude Code attribution, never sent to other families
_INPUT_SCHEMA = {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}


def render_request(req: Request) -> dict[str, Any]:
    """The IR → an OpenAI-compatible Chat Completions body (§4.1–4.6)."""
    same = req.source == "openai"
    notes = req.extensions.get("openai", {}) if same else {}
    body: dict[str, Any] = {"model": req.model, "messages": _Messages(req, same).render()}
    body.update((k, v) for k, v in notes.items() if not k.startswith("_") and k not in body)
    _render_tools(req, body, same)
    for key, value in (("temperature", req.temperature), ("top_p", req.top_p), ("n", req.n)):
        if value is not None:
            body[key] = value
    if req.top_k is not None and same:
        body["top_k"] = req.top_k  # not an OpenAI parameter; kept only for the client's own family
    if req.max_tokens is not None:
        body[_max_tokens_field(req, notes)] = req.max_tokens
    if req.stop:
        body["stop"] = list(req.stop)
    if req.response_format is not None:
        body["response_format"] = _response_format(req.response_format)
    effort = _reasoning_effort(req.thinking)
    if effort:
        body["reasoning_effort"] = effort
    body.pop("stream_options", None)
    if req.stream:
        options = notes.get("stream_options")
        body["stream"] = True  # usage is always requested so every stream can be accounted (R9)
        body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    if req.user:
        body["user"] = req.user
    if req.service_tier:
        body["service_tier"] = req.service_tier
    return body


def _max_tokens_field(req: Request, notes: dict[str, Any]) -> str:
    """``max_completion_tokens`` when the client spelled it so, or for OpenAI reasoning models (they reject
    ``max_tokens``); else ``max_tokens``, which every compatible server reads."""
    cap = capability(req.model)
    if notes.get("_max_tokens_field") == "max_completion_tokens" or (cap is not None and cap.family == "openai"):
        return "max_completion_tokens"
    return "max_tokens"


def _response_format(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    spec: dict[str, Any] = {"name": fmt.name or "response", "schema": fmt.schema or {"type": "object"}}
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": spec}


def _reasoning_effort(thinking: Thinking | None) -> str | None:
    """The OpenAI writer of §4.9.4: a level as is; a budget as its level; none and auto by name."""
    if thinking is None or thinking.mode is None:
        return None
    if thinking.mode in ("none", "auto"):
        return thinking.mode
    if thinking.mode == "level":
        return thinking.level or "medium"
    return budget_to_level(thinking.budget if thinking.budget is not None else -1)


def _render_tools(req: Request, body: dict[str, Any], same: bool) -> None:
    tools = [t for t in (_tool_body(tool, same) for tool in req.tools) if t is not None]
    if not tools:
        return  # tool_choice and parallel_tool_calls are rejected without tools
    body["tools"] = tools
    choice = req.tool_choice
    if choice is not None:
        if choice.mode != "tool":
            body["tool_choice"] = choice.mode
        elif same and any(t.kind == "custom" and t.name == choice.name for t in req.tools):
            body["tool_choice"] = {"type": "custom", "custom": {"name": choice.name}}
        else:
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    parallel = req.parallel_tool_calls
    if parallel is None and choice is not None:
        parallel = choice.parallel
    if parallel is not None:
        body["parallel_tool_calls"] = parallel


def _tool_body(tool: Tool, same: bool) -> dict[str, Any] | None:
    if tool.kind == "builtin":
        return tool.builtin if same else None  # built-ins only make sense to the dialect that named them
    if tool.kind == "custom" and same:
        custom: dict[str, Any] = {"name": tool.name}
        if tool.description:
            custom["description"] = tool.description
        if tool.format:
            custom["format"] = tool.format
        return {"type": "custom", "custom": custom}
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    if tool.kind == "custom":  # OpenAI-compatible servers lack freeform tools: take {"input": string}
        function["parameters"] = _INPUT_SCHEMA
    else:
        function["parameters"] = tool.parameters if same else _with_properties(tool.parameters)
    if tool.strict is not None:
        function["strict"] = tool.strict
    out: dict[str, Any] = {"type": "function", "function": function}
    if same and tool.cache_control:
        out["cache_control"] = tool.cache_control
    return out


def _with_properties(schema: Any) -> Any:
    """Every object schema gets ``properties`` (some servers reject an object schema without it)."""
    if isinstance(schema, list):
        return [_with_properties(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: v if k in ("enum", "const", "default", "examples") else _with_properties(v) for k, v in schema.items()}
    if out.get("type") == "object" and "properties" not in out:
        out["properties"] = {}
    return out


class _Messages:
    """Renders the conversation: system segments in place, tool results right after their calls."""

    def __init__(self, req: Request, same: bool) -> None:
        self.req, self.same = req, same
        self.out: list[dict[str, Any]] = []
        self.generated: dict[str, list[str]] = {}  # ids made up for calls that had none, by name

    def render(self) -> list[dict[str, Any]]:
        req = self.req
        anchored: dict[int, list[SystemSegment]] = {}
        top = req.top_level_system()
        notes = req.extensions.get("openai", {}) if self.same else {}
        at = notes.get("_system_at")
        if isinstance(at, list) and len(at) == len(top) and all(isinstance(p, int) for p in at):
            for position, segment in zip(at, top, strict=True):
                anchored.setdefault(position, []).append(segment)
        else:
            self._system(top)
        for segment in req.system:
            if segment.position is not None:
                anchored.setdefault(segment.position, []).append(segment)
        for index, message in enumerate(req.messages):
            self._system(anchored.pop(index, []))
            self._message(index, message)
        for position in sorted(anchored):
            self._system(anchored[position])
        return self.out

    def _system(self, segments: list[SystemSegment]) -> None:
        for segment in segments:
            parts = [p for p in segment.parts if self.req.source != "claude" or not p.text.startswith(_ATTRIBUTION)]
            if parts:
                self.out.append({"role": segment.role_hint, "content": self._texts(parts, None)})

    def _texts(self, parts: list[Text], joiner: str | None) -> str | list[dict[str, Any]]:
        """One string when that loses nothing; translated text is joined unless ``joiner`` is None."""
        if not parts:
            return ""
        if len(parts) == 1 and not (self.same and parts[0].cache_control):
            return parts[0].text
        if joiner is not None and not self.same:
            return joiner.join(p.text for p in parts)
        return [_text_part(p, self.same) for p in parts]

    def _message(self, index: int, message: Message) -> None:
        if message.role == "assistant":
            self._assistant(index, message)
            return
        results = [p for p in message.parts if isinstance(p, ToolResult)]
        for result in results:  # tool messages first: they must follow the assistant's calls (§4.1)
            self.out.append({"role": "tool", "tool_call_id": self._result_id(result), "content": self._result(result)})
        rest = [p for p in message.parts if isinstance(p, Text | Image | File | Audio)]
        if rest or not results:
            self.out.append({"role": "user", "content": self._user_content(rest)})

    def _user_content(self, parts: list[Text | Image | File | Audio]) -> str | list[dict[str, Any]]:
        if not parts:
            return ""
        if len(parts) == 1 and isinstance(parts[0], Text) and not (self.same and parts[0].cache_control):
            return parts[0].text
        return [_content_part(p, self.same) for p in parts]

    def _result(self, result: ToolResult) -> str | list[dict[str, Any]]:
        texts = [p for p in result.content if isinstance(p, Text)]
        if len(texts) == len(result.content):
            return self._texts(texts, "\n\n")
        return [_content_part(p, self.same) for p in result.content]

    def _result_id(self, result: ToolResult) -> str:
        if result.call_id:
            return result.call_id
        queue = self.generated.get(result.name) or next((q for q in self.generated.values() if q), [])
        return queue.pop(0) if queue else ""

    def _assistant(self, index: int, message: Message) -> None:
        texts = [p for p in message.parts if isinstance(p, Text)]
        out: dict[str, Any] = {"role": "assistant", "content": self._texts(texts, "")}
        reasoning = _replayable_reasoning([p for p in message.parts if isinstance(p, Reasoning)])
        if reasoning:
            out["reasoning_content"] = reasoning
        calls = [p for p in message.parts if isinstance(p, ToolCall)]
        if calls:
            out["tool_calls"] = [self._call(index, k, call) for k, call in enumerate(calls)]
        self.out.append(out)

    def _call(self, index: int, k: int, call: ToolCall) -> dict[str, Any]:
        call_id = call.id
        if not call_id:
            seed = f"call|{index}|{k}|{call.name}|{call.arguments}".encode()
            call_id = "call_" + hashlib.sha256(seed).hexdigest()[:24]
            self.generated.setdefault(call.name, []).append(call_id)
        if call.kind == "custom" and self.same:
            return {"id": call_id, "type": "custom", "custom": {"name": call.name, "input": call.arguments}}
        arguments = call.arguments or "{}"
        if call.kind == "custom":
            arguments = orjson.dumps({"input": call.arguments}).decode()
        out: dict[str, Any] = {
            "id": call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": arguments},
        }
        if call.signature:
            out["extra_content"] = {"google": {"thought_signature": call.signature}}
        return out


def _replayable_reasoning(blocks: list[Reasoning]) -> str:
    """Reasoning an OpenAI-compatible upstream may see again (§4.9.7): unsigned or OpenAI-family text.

    Claude- and Gemini-signed blocks are dropped (their blobs mean nothing here); a Responses item
    without summary text stands as ``[reasoning unavailable]``; repeated text is not repeated.
    """
    texts: list[str] = []
    for block in blocks:
        if block.redacted or block.family in ("claude", "gemini"):
            continue
        text = block.text or ("[reasoning unavailable]" if block.family == "responses" else "")
        if text and text not in texts:
            texts.append(text)
    return "\n\n".join(texts)


def _text_part(part: Text, same: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "text", "text": part.text}
    if same and part.cache_control:
        out["cache_control"] = part.cache_control
    return out


def _content_part(part: Text | Image | File | Audio, same: bool) -> dict[str, Any]:
    if isinstance(part, Text):
        return _text_part(part, same)
    if isinstance(part, Image):
        image: dict[str, Any] = {"url": part.url or f"data:{part.media_type or 'image/png'};base64,{part.data}"}
        if part.detail:  # chat knows auto, low and high; Responses' "original" is the highest (§4.3)
            image["detail"] = part.detail if part.detail in ("auto", "low", "high") else "high"
        return {"type": "image_url", "image_url": image}
    if isinstance(part, Audio):
        return {"type": "input_audio", "input_audio": {"data": part.data, "format": part.format}}
    if part.media_type.startswith("video/"):
        url = part.url or f"data:{part.media_type};base64,{part.data}"
        return {"type": "video_url", "video_url": {"url": url}}
    file: dict[str, Any] = {}
    if part.data:
        file["file_data"] = f"data:{part.media_type or 'application/octet-stream'};base64,{part.data}"
    elif part.file_id:
        file["file_id"] = part.file_id
    else:
        file["file_url"] = part.url
    if part.filename or part.data:
        file["filename"] = part.filename or "file"
    return {"type": "file", "file": file}


# --- upstream side: the answer ---------------------------------------------------------------


def parse_response(body: dict[str, Any], req: Request | None = None) -> Response:
    """A ``chat.completion`` body → the IR (the first choice; the IR holds one answer).

    ``req`` (the request sent) lets custom tools that went out as ``{"input": string}`` functions
    come back as custom calls. Raises ``ValueError`` for a body that is not a completion.
    """
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list):
        error = body.get("error") if isinstance(body, dict) else None
        detail = error.get("message") if isinstance(error, dict) else None
        raise ValueError(f"upstream answer is not a chat.completion: {detail or 'no choices'}")
    choice = _object(choices[0] if choices else None)
    message = _object(choice.get("message"))
    parts: list[Part] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append(Reasoning(text=reasoning))
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    for text in (content, message.get("refusal")):
        if isinstance(text, str) and text:
            parts.append(Text(text))
    parts.extend(_answer_images(message.get("images")))
    parts.extend(_answer_calls(message.get("tool_calls"), custom_tools_wrapped(req)))
    native = choice.get("finish_reason")
    return Response(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or ""),
        created=created if isinstance(created := body.get("created"), int) else 0,
        parts=parts,
        finish=finish_from(
            native if isinstance(native, str) else "", saw_tool=any(isinstance(p, ToolCall) for p in parts)
        ),
        usage=usage_from(body.get("usage")) or Usage(),
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _answer_images(images: Any) -> list[Image]:
    found: list[Image] = []
    for image in images if isinstance(images, list) else []:
        holder = image.get("image_url") if isinstance(image, dict) else None
        url = holder.get("url") if isinstance(holder, dict) else holder
        if isinstance(url, str) and url.startswith("data:") and "," in url:
            header, _, data = url[5:].partition(",")
            found.append(Image(data=data, media_type=header.split(";")[0] or "image/png"))
        elif isinstance(url, str) and url:
            found.append(Image(url=url))
    return found


def _answer_calls(calls: Any, wrapped: frozenset[str]) -> list[ToolCall]:
    found: list[ToolCall] = []
    for k, raw in enumerate(calls if isinstance(calls, list) else []):
        if not isinstance(raw, dict):
            continue
        call_id = str(raw.get("id") or f"call_{k}")
        custom = raw.get("custom")
        if isinstance(custom, dict):
            found.append(ToolCall(call_id, str(custom.get("name") or ""), str(custom.get("input") or ""), "custom"))
            continue
        function = _object(raw.get("function"))
        name, arguments = str(function.get("name") or f"tool_{k}"), function.get("arguments")
        if isinstance(arguments, dict):
            arguments = orjson.dumps(arguments).decode()
        arguments = arguments if isinstance(arguments, str) and arguments else "{}"
        if name in wrapped:
            found.append(ToolCall(call_id, name, unwrap_custom_input(arguments), "custom"))
        else:
            found.append(ToolCall(call_id, name, arguments, signature=thought_signature(raw)))
    return found


# --- client side: the answer -----------------------------------------------------------------


def render_response(resp: Response, req: Request) -> dict[str, Any]:
    """The IR → a ``chat.completion`` (§2.1), under the model name the client used."""
    message: dict[str, Any] = {"role": "assistant", "content": resp.text or None, "refusal": None}
    reasoning = "".join(p.text for p in resp.parts if isinstance(p, Reasoning) and not p.redacted)
    if reasoning:
        message["reasoning_content"] = reasoning
    calls = resp.tool_calls
    if calls:
        message["tool_calls"] = [_answer_call(call) for call in calls]
    images = [p for p in resp.parts if isinstance(p, Image)]
    if images:
        message["images"] = [
            {"index": i, "type": "image_url", "image_url": {"url": p.url or f"data:{p.media_type};base64,{p.data}"}}
            for i, p in enumerate(images)
        ]
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason(resp.finish, saw_tool=bool(calls)),
    }
    if resp.finish.native:
        choice["native_finish_reason"] = resp.finish.native
    return {
        "id": resp.id or f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": resp.created or int(time.time()),
        "model": req.model,
        "choices": [choice],
        "usage": usage_body(resp.usage),
    }


def _answer_call(call: ToolCall) -> dict[str, Any]:
    if call.kind == "custom":
        return {"id": call.id, "type": "custom", "custom": {"name": call.name, "input": call.arguments}}
    function = {"name": call.name, "arguments": call.arguments or "{}"}
    return {"id": call.id, "type": "function", "function": function}


# --- errors ----------------------------------------------------------------------------------


@overload
def error_body(status: int, message: str, code: str | None = None, /) -> bytes: ...
@overload
def error_body(message: str, error_type: str, code: str | None, /) -> bytes: ...
def error_body(status: int | str, message: str, code: str | None = None, /) -> bytes:
    """OpenAI's error envelope, its ``type`` chosen by HTTP status (§1.4).

    ``error_body(message, error_type, code)`` (a string first) is the older form the relay still
    uses, with the type given explicitly.
    """
    if isinstance(status, str):
        return orjson.dumps({"error": {"message": status, "type": message, "param": None, "code": code}})
    return orjson.dumps(error_envelope(status, message, code))


def stream_error_event(message: str, error_type: str, code: str | None) -> bytes:
    """``stream_error`` with an explicit type (the relay's older form)."""
    return b"data: " + error_body(message, error_type, code) + b"\n\n"


# --- same dialect: pass-through --------------------------------------------------------------


def read_body(body: bytes) -> dict[str, Any]:
    """Decode and check a Chat Completions body, raising ``BadRequest`` with a clear reason."""
    if not body:
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' is required and must be a non-empty string")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array")
    if "stream" in payload and not isinstance(payload["stream"], bool):
        raise BadRequest("'stream' must be a boolean")
    return payload


def wants_stream_usage(payload: dict[str, Any]) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def upstream_body(payload: dict[str, Any], raw: bytes, upstream_model: str) -> bytes:
    """The body to send upstream: the client's own bytes unless something must change.

    The model is rewritten when the client used an alias, and streaming requests always ask
    for the usage chunk so every stream can be accounted.
    """
    stream = bool(payload.get("stream"))
    if payload["model"] == upstream_model and (not stream or wants_stream_usage(payload)):
        return raw
    changed = dict(payload, model=upstream_model)
    if stream:
        options = payload.get("stream_options")
        changed["stream_options"] = dict(options if isinstance(options, dict) else {}, include_usage=True)
    return orjson.dumps(changed)


_INSPECT_MARKERS = (b'"usage":{', b'"usage": {', b'"error"')


def _split_events(data: bytes) -> tuple[bytes, bytes]:
    """Split ``data`` into complete SSE events and an unfinished tail."""
    lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
    cut = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
    return data[:cut], data[cut:]


def _done_end(whole: bytes) -> int:
    """Where the ``data: [DONE]`` event in ``whole`` ends (-1 when there is none)."""
    for marker in (b"data: [DONE]", b"data:[DONE]"):
        at = whole.find(marker)
        while at > 0 and whole[at - 1] != 0x0A:  # only at the start of a line, never inside a JSON string
            at = whole.find(marker, at + 1)
        if at >= 0:
            lf, crlf = whole.find(b"\n\n", at), whole.find(b"\r\n\r\n", at)
            ends = [end for end in (lf + 2 if lf >= 0 else -1, crlf + 4 if crlf >= 0 else -1) if end >= 0]
            return min(ends, default=len(whole))
    return -1


class StreamRelay:
    """Passes an OpenAI SSE stream through while reading its usage.

    ``feed(chunk)`` returns the bytes to forward: whole events only, unchanged, except the
    trailing usage-only chunk, which is dropped when the client did not ask for it (CliRelay
    asks the upstream for it on every stream so the request can be accounted).
    """

    def __init__(self, client_wants_usage: bool) -> None:
        self.client_wants_usage = client_wants_usage
        self.usage: Usage | None = None
        self.upstream_error: dict[str, Any] | None = None
        self.saw_done = False
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        if self.saw_done:
            return b""  # nothing after [DONE] reaches the client (§6 item 31)
        data = self._tail + chunk if self._tail else chunk
        whole, self._tail = _split_events(data)
        if not whole:
            return b""
        if b"[DONE]" in whole and (end := _done_end(whole)) >= 0:
            self.saw_done = True
            whole, self._tail = whole[:end], b""
        # Only events carrying a usage object or an error need parsing; the rest pass as bytes.
        if not any(marker in whole for marker in _INSPECT_MARKERS):
            return whole
        return self._inspect(whole)

    def finish(self) -> bytes:
        """Whatever is left when the upstream closes (an event without its blank line)."""
        tail, self._tail = self._tail, b""
        if tail.strip() and not self.saw_done:
            self.saw_done = _done_end(tail) >= 0
            return self._inspect(tail + b"\n\n")
        return b""

    def _inspect(self, whole: bytes) -> bytes:
        kept: list[bytes] = []
        for event in whole.replace(b"\r\n", b"\n").split(b"\n\n"):
            if not event.strip():
                continue
            if not self._keep(event):
                continue
            kept.append(event + b"\n\n")
        return b"".join(kept)

    def _keep(self, event: bytes) -> bool:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            raw = line[5:].strip()
            if raw == b"[DONE]" or not raw.startswith(b"{"):
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj.get("error"), dict):
                self.upstream_error = obj["error"]
            usage = usage_from(obj.get("usage"))
            if usage is not None:
                self.usage = usage
                if not self.client_wants_usage and not obj.get("choices"):
                    return False
        return True
