"""Anthropic Messages: Claude clients (parse / render answers) and the Claude upstream (render / parse).

Fields the IR does not model travel in ``req.extensions["claude"]``: keys without a leading ``_`` are
top-level Claude body fields copied verbatim into a Claude body (``context_management``,
``diagnostics``, ``speed``, ``output_config`` minus the effort the IR carries, …); other families
ignore them, so they are dropped silently there (D3.6). Two private keys:

* ``_attribution``: Claude Code attribution blocks (``x-anthropic-billing-header:``) taken out of the
  system text so no other family ever sees them (D3.4); each is ``{"position", "index", "block"}``
  and only the Claude render puts it back where it was.
* ``_tool_extras``: per tool name, the Claude-only tool fields (``defer_loading``, ``input_examples``,
  ``eager_input_streaming``).

The stream state machines live in ``anthropic_stream`` and are re-exported here. Pure: no Django, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from gateway import ir
from gateway.dialects import BadRequest
from gateway.dialects.anthropic_stream import (
    StreamParser,
    StreamRenderer,
    error_envelope,
    finish_from_claude,
    restore_name,
    signature_family,
    signature_for_client,
    sse_error,
    stop_reason_for,
    tool_name_restorer,
    unwrap_custom_input,
    usage_from_claude,
    usage_to_claude,
)
from gateway.thinking import LEVELS, capability, claude_effort, level_to_budget, resolve

__all__ = [
    "BadRequest",
    "StreamParser",
    "StreamRenderer",
    "count_tokens_response",
    "error_body",
    "parse_count_tokens_request",
    "parse_request",
    "parse_response",
    "render_count_tokens",
    "render_request",
    "render_response",
    "sanitize_passthrough",
    "stream_error",
    "token_segments",
    "upstream_betas",
]

DEFAULT_MAX_TOKENS = 32000
MAX_CACHE_BREAKPOINTS = 4
ATTRIBUTION_PREFIX = "x-anthropic-billing-header:"
FAST_MODE_BETA = "fast-mode-2026-02-01"
TOKEN_COUNTING_BETA = "token-counting-2024-11-01"
# Models that answer 400 to a role "system" turn: their in-conversation system text is folded (D3).
LEGACY_SYSTEM_MODELS = frozenset(
    {
        "claude-3-5-haiku-20241022",
        "claude-3-5-haiku-latest",
        "claude-3-7-sonnet-20250219",
        "claude-3-7-sonnet-latest",
        "claude-haiku-4-5",
        "claude-haiku-4-5-20251001",
        "claude-opus-4",
        "claude-opus-4-20250514",
        "claude-opus-4-1",
        "claude-opus-4-1-20250805",
        "claude-opus-4-5",
        "claude-opus-4-5-20251101",
        "claude-opus-4-6",
        "claude-opus-4-7",
        "claude-sonnet-4",
        "claude-sonnet-4-20250514",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-6",
    }
)
# Models marked as accepting temperature / top_p from translated requests (R16); none yet.
SAMPLING_MODELS: frozenset[str] = frozenset()

_KNOWN_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "thinking",
        "metadata",
        "service_tier",
        "stream",
        "betas",
    }
)
_TOOL_EXTRAS = ("defer_loading", "input_examples", "eager_input_streaming")
_CHOICE_MODES: dict[str, Any] = {"auto": "auto", "any": "required", "tool": "tool", "none": "none"}
_CLAUDE_CHOICE = {"auto": "auto", "required": "any", "tool": "tool", "none": "none"}
_TOOL_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
_DATED = re.compile(r"-\d{8}$")
_CUSTOM_SCHEMA = {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}
_THINKING_ON = ("enabled", "adaptive", "auto")


def is_legacy_system_model(model: str) -> bool:
    """Whether ``model`` rejects in-conversation ``role:"system"`` turns (D3 legacy list)."""
    name = model.lower().removesuffix("[1m]")
    return name in LEGACY_SYSTEM_MODELS or _DATED.sub("", name) in LEGACY_SYSTEM_MODELS


# --- client side: the Claude client's body -> IR ---------------------------------------------


def parse_request(body: dict[str, Any], betas: Sequence[str] = ()) -> ir.Request:
    """A ``POST /v1/messages`` body as the IR; ``betas`` are the ``anthropic-beta`` header values."""
    return _parse(body, betas, require_max_tokens=True)


def parse_count_tokens_request(body: dict[str, Any], betas: Sequence[str] = ()) -> ir.Request:
    """A ``POST /v1/messages/count_tokens`` body (no ``max_tokens``) as the IR."""
    return _parse(body, betas, require_max_tokens=False)


def _parse(body: dict[str, Any], betas: Sequence[str], *, require_max_tokens: bool) -> ir.Request:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("model: field required (a non-empty string)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: field required (a non-empty array)")
    req = ir.Request(model=model, source="claude", stream=body.get("stream") is True)
    req.max_tokens = _max_tokens(body, required=require_max_tokens)
    ext: dict[str, Any] = {k: v for k, v in body.items() if k not in _KNOWN_FIELDS}
    attribution: list[dict[str, Any]] = []
    req.system = _system_segments(body.get("system"), "system", None, attribution)
    names: dict[str, str] = {}
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages.{i}: expected an object")
        role = message.get("role")
        where = f"messages.{i}"
        if role == "system":
            req.system += _system_segments(message.get("content"), where, len(req.messages), attribution)
        elif role in ("user", "assistant"):
            req.messages.append(ir.Message(role, _parse_content(message.get("content"), where, names)))
        else:
            raise BadRequest(f"{where}.role: expected 'user', 'assistant' or 'system', got {role!r}")
    if attribution:
        ext["_attribution"] = attribution
    req.tools = _parse_tools(body.get("tools"), ext)
    _parse_tool_choice(body.get("tool_choice"), req)
    _parse_sampling(body, req)
    req.thinking = _parse_thinking(body, ext)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        req.user = metadata["user_id"]
    if isinstance(body.get("service_tier"), str):
        req.service_tier = body["service_tier"]
    if body.get("speed") == "fast" and not req.service_tier:
        req.service_tier = "priority"  # what other families call fast (D3.6)
    req.betas = _dedupe([*betas, *_as_strings(body.get("betas"))])
    if ext:
        req.extensions["claude"] = ext
    return req


def _max_tokens(body: dict[str, Any], *, required: bool) -> int | None:
    value = body.get("max_tokens")
    if value is None:
        if required:
            raise BadRequest("max_tokens: field required")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest("max_tokens: expected a positive integer")
    return value


def _system_segments(
    content: Any, where: str, position: int | None, attribution: list[dict[str, Any]]
) -> list[ir.SystemSegment]:
    """System text (top-level or one in-conversation entry) as segments, attribution set aside."""
    if content is None:
        return []
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(blocks, list):
        raise BadRequest(f"{where}: expected a string or an array of text blocks")
    parts: list[ir.Text] = []
    for j, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") != "text":
            continue
        text = block.get("text")
        if not isinstance(text, str):
            raise BadRequest(f"{where}.{j}.text: expected a string")
        if text.lstrip().startswith(ATTRIBUTION_PREFIX):
            attribution.append({"position": position, "index": j, "block": block})
        elif text:
            parts.append(ir.Text(text, block.get("cache_control")))
    return [ir.SystemSegment(parts, position=position)] if parts else []


def _parse_content(content: Any, where: str, names: dict[str, str]) -> list[ir.Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [ir.Text(content)] if content else []
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content: expected a string or an array of content blocks")
    parts: list[ir.Part] = []
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise BadRequest(f"{where}.content.{j}: expected a content block with a 'type'")
        part = _parse_block(block, names)
        if part is not None:
            parts.append(part)
    return parts


def _parse_block(block: dict[str, Any], names: dict[str, str]) -> ir.Part | None:
    kind = block["type"]
    if kind == "text":
        return ir.Text(str(block.get("text") or ""), block.get("cache_control"))
    if kind == "image":
        return _parse_image(block.get("source"))
    if kind == "document":
        return _parse_document(block)
    if kind == "tool_use":
        call_id, name = str(block.get("id") or ""), str(block.get("name") or "")
        names[call_id] = name
        return ir.ToolCall(call_id, name, orjson.dumps(block.get("input") or {}).decode())
    if kind == "tool_result":
        call_id = str(block.get("tool_use_id") or "")
        content = _tool_result_parts(block.get("content"))
        return ir.ToolResult(call_id, content, is_error=block.get("is_error") is True, name=names.get(call_id, ""))
    if kind == "thinking":
        blob, family = signature_family(str(block.get("signature") or ""))
        return ir.Reasoning(text=str(block.get("thinking") or ""), signature=blob, family=family)
    if kind == "redacted_thinking":
        return ir.Reasoning(signature=str(block.get("data") or ""), family="claude", redacted=True)
    return None  # server tool blocks and other Claude-only blocks have no home in the IR


def _parse_image(source: Any) -> ir.Image | None:
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64":
        return ir.Image(data=str(source.get("data") or ""), media_type=str(source.get("media_type") or ""))
    if source.get("type") == "url":
        return ir.Image(url=str(source.get("url") or ""))
    return None


def _parse_document(block: dict[str, Any]) -> ir.File | None:
    source = block.get("source")
    title = str(block.get("title") or "")
    if not isinstance(source, dict):
        return None
    kind = source.get("type")
    if kind == "base64":
        return ir.File(
            data=str(source.get("data") or ""), media_type=str(source.get("media_type") or ""), filename=title
        )
    if kind == "text":
        data = base64.b64encode(str(source.get("data") or "").encode()).decode()
        return ir.File(data=data, media_type=str(source.get("media_type") or "text/plain"), filename=title)
    if kind == "url":
        return ir.File(url=str(source.get("url") or ""), filename=title)
    if kind == "file":
        return ir.File(file_id=str(source.get("file_id") or ""), filename=title)
    return None


def _tool_result_parts(content: Any) -> list[ir.Text | ir.Image | ir.File]:
    if isinstance(content, str):
        return [ir.Text(content)] if content else []
    parts: list[ir.Text | ir.Image | ir.File] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        part: ir.Text | ir.Image | ir.File | None = None
        if block.get("type") == "text":
            part = ir.Text(str(block.get("text") or ""))
        elif block.get("type") == "image":
            part = _parse_image(block.get("source"))
        elif block.get("type") == "document":
            part = _parse_document(block)
        if part is not None:
            parts.append(part)
    return parts


def _parse_tools(tools: Any, ext: dict[str, Any]) -> list[ir.Tool]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest("tools: expected an array")
    out: list[ir.Tool] = []
    extras: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools):
        name = tool.get("name") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or not isinstance(name, str) or not name:
            raise BadRequest(f"tools.{i}.name: field required")
        if tool.get("type") not in (None, "custom"):  # a typed server tool (web search, bash, …)
            out.append(ir.Tool(name, kind="builtin", builtin=dict(tool), cache_control=tool.get("cache_control")))
            continue
        schema = tool.get("input_schema")
        out.append(
            ir.Tool(
                name,
                description=str(tool.get("description") or ""),
                parameters=schema if isinstance(schema, dict) else {"type": "object", "properties": {}},
                strict=tool.get("strict") if isinstance(tool.get("strict"), bool) else None,
                cache_control=tool.get("cache_control"),
            )
        )
        if any(key in tool for key in _TOOL_EXTRAS):
            extras[name] = {key: tool[key] for key in _TOOL_EXTRAS if key in tool}
    if extras:
        ext["_tool_extras"] = extras
    return out


def _parse_tool_choice(choice: Any, req: ir.Request) -> None:
    if not isinstance(choice, dict):
        return
    mode = _CHOICE_MODES.get(choice.get("type") or "")
    if mode is None:
        raise BadRequest("tool_choice.type: expected 'auto', 'any', 'tool' or 'none'")
    name = choice.get("name")
    if mode == "tool" and (not isinstance(name, str) or not name):
        raise BadRequest("tool_choice.name: field required for type 'tool'")
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    req.tool_choice = ir.ToolChoice(mode, name=name or "", parallel=parallel)
    req.parallel_tool_calls = parallel


def _parse_sampling(body: dict[str, Any], req: ir.Request) -> None:
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise BadRequest(f"{key}: expected a number")
    req.temperature, req.top_p = body.get("temperature"), body.get("top_p")
    top_k = body.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)):
        raise BadRequest("top_k: expected an integer")
    req.top_k = top_k
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise BadRequest("stop_sequences: expected an array of strings")
        req.stop = list(stop)


def _parse_thinking(body: dict[str, Any], ext: dict[str, Any]) -> ir.Thinking | None:
    """``thinking`` + ``output_config.effort`` as the IR's thinking (§4.9.2); display as the intent."""
    thinking = body.get("thinking")
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    if not isinstance(thinking, dict):
        return None
    kind = thinking.get("type")
    display = thinking.get("display")
    include = True if display == "summarized" else False if display == "omitted" else None
    if kind == "disabled":
        return ir.Thinking(mode="none", budget=0)
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if budget is None:
            return ir.Thinking(mode="auto", budget=-1, include_thoughts=include)
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < -1:
            raise BadRequest("thinking.budget_tokens: expected an integer ≥ 1024")
        if budget == 0:
            return ir.Thinking(mode="none", budget=0)
        if budget == -1:
            return ir.Thinking(mode="auto", budget=-1, include_thoughts=include)
        return ir.Thinking(mode="budget", budget=budget, include_thoughts=include)
    if kind in ("adaptive", "auto"):
        if isinstance(config, dict) and "effort" in config:  # consumed here: the IR carries it
            rest = {k: v for k, v in config.items() if k != "effort"}
            if rest:
                ext["output_config"] = rest
            else:
                ext.pop("output_config", None)
        if effort == "none":
            return ir.Thinking(mode="none", budget=0)
        if isinstance(effort, str) and effort in LEVELS and effort != "auto":
            return ir.Thinking(mode="level", level=effort, include_thoughts=include)
        return ir.Thinking(mode="auto", budget=-1, include_thoughts=include)
    raise BadRequest("thinking.type: expected 'enabled', 'disabled' or 'adaptive'")


# --- client side: IR answer -> the Claude client's body ---------------------------------------


def render_response(resp: ir.Response, req: ir.Request) -> dict[str, Any]:
    """A non-stream Messages answer (§2.3) for a Claude client."""
    declared = tool_name_restorer(req)
    content: list[dict[str, Any]] = []
    for part in resp.parts:
        if isinstance(part, ir.Text) and part.text:
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, ir.Reasoning):
            signature = signature_for_client(part.signature, part.family)
            if part.redacted:
                content.append({"type": "redacted_thinking", "data": signature})
            elif part.text or signature:
                content.append({"type": "thinking", "thinking": part.text, "signature": signature})
        elif isinstance(part, ir.ToolCall):
            if part.signature:  # a Gemini signature on the call, carried back in an empty thinking block (§4.9.7)
                signature = signature_for_client(part.signature, "gemini")
                content.append({"type": "thinking", "thinking": "", "signature": signature})
            name = restore_name(part.name, declared)
            content.append({"type": "tool_use", "id": part.id, "name": name, "input": _tool_input(part)})
    saw_tool = any(block["type"] == "tool_use" for block in content)
    stop_reason, stop_sequence = stop_reason_for(resp.finish, saw_tool)
    return {
        "id": resp.id or "msg_" + secrets.token_hex(12),
        "type": "message",
        "role": "assistant",
        "model": resp.model or req.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_to_claude(resp.usage),
    }


def error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """Anthropic's error envelope, ``type`` by HTTP status (§1.4); ``code`` has no place in it."""
    return error_envelope(status, message)


def stream_error(status: int, message: str, code: str | None = None) -> bytes:
    """An error inside a Claude SSE stream (``event: error``)."""
    return sse_error(status, message)


# --- upstream side: IR -> Claude body ----------------------------------------------------------


def render_request(req: ir.Request) -> dict[str, Any]:
    """The Claude Messages body for ``req`` (§4 "→ Claude").

    Raises ``gateway.thinking.ThinkingError`` when the thinking asked for cannot be honoured (HTTP 400).
    """
    ext: dict[str, Any] = req.extensions.get("claude", {})
    body: dict[str, Any] = {"model": req.model, "max_tokens": req.max_tokens or DEFAULT_MAX_TOKENS}
    system, turns = _render_conversation(req, ext.get("_attribution", ()))
    if system:
        body["system"] = system
    body["messages"] = turns
    tools = _render_tools(req, ext.get("_tool_extras", {}))
    if tools:
        body["tools"] = tools
        choice = _render_tool_choice(req)
        if choice:
            body["tool_choice"] = choice
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if req.service_tier in ("auto", "standard_only"):
        body["service_tier"] = req.service_tier
    elif req.service_tier == "priority":
        body["speed"] = "fast"
    for key, value in ext.items():
        if not key.startswith("_") and key not in body:
            body[key] = dict(value) if isinstance(value, dict) else value
    _write_thinking(body, req)
    _write_sampling(body, req)
    _limit_cache_control(body)  # the executor-level rule of §1.5 holds for translated bodies too
    if req.stream:
        body["stream"] = True
    return body


def upstream_betas(req: ir.Request, *, count_tokens: bool = False) -> list[str]:
    """The ``anthropic-beta`` values for a Claude upstream: the client's, fast mode, token counting."""
    betas = list(req.betas)
    if req.service_tier == "priority" or req.extensions.get("claude", {}).get("speed") == "fast":
        betas.append(FAST_MODE_BETA)
    if count_tokens:
        betas.append(TOKEN_COUNTING_BETA)
    return _dedupe(betas)


def _render_conversation(
    req: ir.Request, attribution: Iterable[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Top-level system blocks and alternating turns, with in-conversation system text per D3."""
    anchored = req.source in (None, "claude")  # only Claude clients create in-conversation segments
    in_place = anchored and not is_legacy_system_model(req.model)
    top: list[dict[str, Any]] = []
    mid: dict[int, list[list[dict[str, Any]]]] = {}
    for seg in req.system:
        if seg.position is None or not anchored:
            top += _text_blocks(seg.parts)
        else:
            mid.setdefault(seg.position, []).append(_text_blocks(seg.parts))
    for item in attribution:
        block = dict(item["block"])
        if item["position"] is None:
            top.insert(min(item["index"], len(top)), block)
        else:
            entries = mid.setdefault(item["position"], [[]])
            entries[0].insert(min(item["index"], len(entries[0])), block)
    if not in_place:
        for position in sorted(mid):
            top += [block for entry in mid[position] for block in entry]
        mid = {}
    turns: list[dict[str, Any]] = []
    results = _last_results(req.messages)
    for i, message in enumerate(req.messages):
        _system_turns(turns, mid.pop(i, ()))
        for role, blocks in _message_blocks(message, results):
            if blocks:
                if turns and turns[-1]["role"] == role:
                    turns[-1]["content"] += blocks
                else:
                    turns.append({"role": role, "content": blocks})
    for position in sorted(mid):
        _system_turns(turns, mid[position])
    for turn in turns:
        _order_turn(turn)
    if not any(turn["role"] != "system" for turn in turns):
        turns.append({"role": "user", "content": [{"type": "text", "text": ""}]})
    return top, turns


def _system_turns(turns: list[dict[str, Any]], entries: Iterable[list[dict[str, Any]]]) -> None:
    for blocks in entries:
        if blocks:
            turns.append({"role": "system", "content": blocks})


def _order_turn(turn: dict[str, Any]) -> None:
    """Tool results lead a user turn; tool calls close an assistant turn (§4.1)."""
    content = turn["content"]
    if turn["role"] == "assistant":
        turn["content"] = [b for b in content if b["type"] != "tool_use"] + [
            b for b in content if b["type"] == "tool_use"
        ]
    elif turn["role"] == "user":
        turn["content"] = [b for b in content if b["type"] == "tool_result"] + [
            b for b in content if b["type"] != "tool_result"
        ]


def _text_blocks(parts: Iterable[ir.Text]) -> list[dict[str, Any]]:
    blocks = []
    for part in parts:
        if part.text:
            block: dict[str, Any] = {"type": "text", "text": part.text}
            if part.cache_control:
                block["cache_control"] = part.cache_control
            blocks.append(block)
    return blocks


def _last_results(messages: list[ir.Message]) -> dict[str, ir.ToolResult]:
    """Per call id, the last result given (duplicates: the last wins, sent once at the first, §4.5)."""
    return {p.call_id: p for m in messages for p in m.parts if isinstance(p, ir.ToolResult)}


def _message_blocks(message: ir.Message, results: dict[str, ir.ToolResult]) -> list[tuple[str, list[dict[str, Any]]]]:
    own: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ir.ToolResult):
            last = results.pop(part.call_id, None)
            if last is not None:
                answers.append(_tool_result_block(last))
            continue
        block = _part_block(part, message.role)
        if block is not None:
            own.append(block)
    if message.role == "user":
        return [("user", answers + own)]
    return [("assistant", own), ("user", answers)]


def _part_block(part: ir.Part, role: str) -> dict[str, Any] | None:
    if isinstance(part, ir.Text):
        return _text_blocks([part])[0] if part.text else None
    if isinstance(part, ir.Image):
        return _image_block(part)
    if isinstance(part, ir.File):
        return _document_block(part)
    if isinstance(part, ir.ToolCall):
        return {"type": "tool_use", "id": claude_tool_id(part.id), "name": part.name, "input": _tool_input(part)}
    if isinstance(part, ir.Reasoning) and role == "assistant" and part.family == "claude" and part.signature:
        if part.redacted:
            return {"type": "redacted_thinking", "data": part.signature}
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    return None  # audio, unsigned or foreign reasoning (§4.9.7)


def claude_tool_id(call_id: str) -> str:
    """A tool id Claude accepts (``^[a-zA-Z0-9_-]+$``), the same for a call and its result (§4.4.3)."""
    return _TOOL_ID_UNSAFE.sub("_", call_id) if call_id else "toolu_" + secrets.token_hex(12)


def _tool_input(call: ir.ToolCall) -> Any:
    """Arguments as the object Claude wants: custom input wrapped, invalid JSON as ``{}`` (§6 item 17)."""
    if call.kind == "custom":
        return {"input": call.arguments}
    try:
        value = orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _tool_result_block(result: ir.ToolResult) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": claude_tool_id(result.call_id)}
    content = [b for b in (_result_part(p) for p in result.content) if b is not None]
    if len(content) == 1 and content[0]["type"] == "text":
        block["content"] = content[0]["text"]
    elif content:
        block["content"] = content
    if result.is_error:
        block["is_error"] = True
    return block


def _result_part(part: ir.Text | ir.Image | ir.File) -> dict[str, Any] | None:
    if isinstance(part, ir.Text):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, ir.Image):
        return _image_block(part)
    return _document_block(part)


def _split_data_url(url: str) -> tuple[str, str]:
    """``(media_type, base64 payload)`` of a ``data:`` URL."""
    head, _, payload = url[5:].partition(",")
    media_type = head.split(";", 1)[0]
    return media_type or "application/octet-stream", payload


def _image_block(image: ir.Image) -> dict[str, Any] | None:
    if image.data:
        source = {"type": "base64", "media_type": image.media_type or "application/octet-stream", "data": image.data}
    elif image.url.startswith("data:"):
        media_type, data = _split_data_url(image.url)
        source = {"type": "base64", "media_type": media_type, "data": data}
    elif image.url:
        source = {"type": "url", "url": image.url}
    else:
        return None
    return {"type": "image", "source": source}


def _document_block(doc: ir.File) -> dict[str, Any] | None:
    data, media_type = doc.data, doc.media_type
    if not data and doc.url.startswith("data:"):
        media_type, data = _split_data_url(doc.url)
    source: dict[str, Any]
    if data and media_type.startswith("text/"):
        source = {"type": "text", "media_type": "text/plain", "data": _b64_text(data)}
    elif data:
        source = {"type": "base64", "media_type": media_type or "application/octet-stream", "data": data}
    elif doc.url:
        source = {"type": "url", "url": doc.url}
    elif doc.file_id:
        source = {"type": "file", "file_id": doc.file_id}
    else:
        return None
    block: dict[str, Any] = {"type": "document", "source": source}
    if doc.filename:
        block["title"] = doc.filename
    return block


def _b64_text(data: str) -> str:
    try:
        return base64.b64decode(data, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return data


def _render_tools(req: ir.Request, extras: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for tool in req.tools:
        if tool.kind == "builtin":
            builtin = _builtin_tool(tool, req.source)
            if builtin is not None:
                out.append(builtin)
            continue
        entry: dict[str, Any] = {"name": tool.name}
        if tool.description:
            entry["description"] = tool.description
        entry["input_schema"] = (
            dict(_CUSTOM_SCHEMA) if tool.kind == "custom" else normalize_tool_schema(tool.parameters)
        )
        if tool.cache_control:
            entry["cache_control"] = tool.cache_control
        if req.source == "claude" and tool.strict is not None:
            entry["strict"] = tool.strict
        entry.update(extras.get(tool.name, {}))
        out.append(entry)
    return out


def _builtin_tool(tool: ir.Tool, source: ir.Family | None) -> dict[str, Any] | None:
    """A Claude server tool: a Claude client's own verbatim, another dialect's web search mapped."""
    builtin = tool.builtin or {}
    if source == "claude":
        return _clean_web_search(dict(builtin))
    kind = str(builtin.get("type") or "")
    if "web_search" in kind or "googleSearch" in builtin or "google_search" in builtin:
        return {"type": "web_search_20250305", "name": "web_search"}
    return None


def _clean_web_search(tool: dict[str, Any]) -> dict[str, Any]:
    """Claude rejects empty domain filters on web search tools."""
    if str(tool.get("type") or "").startswith("web_search"):
        for key in ("allowed_domains", "blocked_domains"):
            if tool.get(key) == []:
                del tool[key]
    return tool


def normalize_tool_schema(schema: Any) -> dict[str, Any]:
    """A tool schema Claude accepts: root ``type:"object"`` with ``properties``, no root unions (§4.4.1)."""
    if not isinstance(schema, dict):
        return {"type": "object", "properties": {}}
    out = dict(schema)
    for key in ("anyOf", "oneOf", "allOf"):
        branches = out.pop(key, None)
        if not isinstance(branches, list):
            continue
        properties = dict(out.get("properties") or {})
        required = list(out.get("required") or [])
        for branch in branches:
            if not isinstance(branch, dict) or not (branch.get("type") == "object" or "properties" in branch):
                continue
            for name, prop in (branch.get("properties") or {}).items():
                properties.setdefault(name, prop)
            if key == "allOf":
                required += [r for r in branch.get("required") or () if r not in required]
        out["properties"] = properties
        if required:
            out["required"] = required
    out["type"] = "object"
    if not isinstance(out.get("properties"), dict):
        out["properties"] = {}
    return out


def _render_tool_choice(req: ir.Request) -> dict[str, Any] | None:
    choice = req.tool_choice
    serial = req.parallel_tool_calls is False or (choice is not None and choice.parallel is False)
    if choice is None:
        return {"type": "auto", "disable_parallel_tool_use": True} if serial else None
    out: dict[str, Any] = {"type": _CLAUDE_CHOICE[choice.mode]}
    if choice.mode == "tool":
        out["name"] = choice.name
    if serial and choice.mode != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _write_thinking(body: dict[str, Any], req: ir.Request) -> None:
    """The Claude thinking writer (§4.9.4): adaptive + effort, or enabled + budget below max_tokens."""
    asked = req.thinking
    if asked is not None and asked.mode is None and asked.include_thoughts and capability(req.model):
        asked = ir.Thinking(mode="auto", budget=-1, include_thoughts=True)  # seeing thoughts needs thinking
    thinking = resolve(asked, req.model, same_family=req.source == "claude")
    config = body.get("output_config")
    if thinking is None or thinking.mode is None:
        return
    forced = body.get("tool_choice", {}).get("type") in ("any", "tool")
    if thinking.mode == "none" or forced or _history_forbids_thinking(body["messages"]):
        # Claude refuses thinking with a forced tool, or after a tool-use turn that has no thinking block.
        if thinking.mode == "none":
            body["thinking"] = {"type": "disabled"}
        if isinstance(config, dict):
            config.pop("effort", None)
            if not config:
                del body["output_config"]
        return
    cap = capability(req.model)
    block: dict[str, Any]
    if cap is not None and cap.adaptive and thinking.mode in ("level", "auto"):
        block = {"type": "adaptive"}
        if thinking.mode == "level":
            body["output_config"] = {**(config or {}), "effort": claude_effort(thinking.level or "medium", cap)}
    else:
        budget = thinking.budget or 0 if thinking.mode == "budget" else level_to_budget(thinking.level or "medium")
        budget = max(min(budget, body["max_tokens"] - 1), 1024)
        body["max_tokens"] = max(body["max_tokens"], budget + 1)
        block = {"type": "enabled", "budget_tokens": budget}
    if thinking.include_thoughts is False:
        block["display"] = "omitted"
    elif thinking.include_thoughts and req.source == "claude":
        block["display"] = "summarized"
    body["thinking"] = block


def _history_forbids_thinking(turns: list[dict[str, Any]]) -> bool:
    """Whether the open tool-use turn lacks the thinking block Claude demands when thinking is on."""
    turns = [t for t in turns if isinstance(t, dict) and t.get("role") != "system"]
    if len(turns) < 2 or turns[-1].get("role") != "user" or turns[-2].get("role") != "assistant":
        return False
    results, calls = turns[-1].get("content"), turns[-2].get("content")
    if not isinstance(results, list) or not isinstance(calls, list) or not calls:
        return False
    if not any(isinstance(b, dict) and b.get("type") == "tool_result" for b in results):
        return False
    has_call = any(isinstance(b, dict) and b.get("type") == "tool_use" for b in calls)
    first = calls[0].get("type") if isinstance(calls[0], dict) else None
    return has_call and first not in ("thinking", "redacted_thinking")


def _write_sampling(body: dict[str, Any], req: ir.Request) -> None:
    """R16: translated requests send no sampling unless the model is marked; then the native rule."""
    if req.source != "claude" and req.model not in SAMPLING_MODELS:
        return
    params = {"temperature": req.temperature, "top_p": req.top_p}
    if req.source == "claude":
        params["top_k"] = req.top_k
    body.update({k: v for k, v in params.items() if v is not None})
    _normalize_sampling(body)


def _normalize_sampling(body: dict[str, Any]) -> None:
    """Thinking on: temperature only 1, top_p only ≥ 0.95, no top_k; off: never both (§1.5)."""
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in _THINKING_ON:
        if "temperature" in body and body["temperature"] != 1:
            del body["temperature"]
        if "top_p" in body and not (isinstance(body["top_p"], int | float) and body["top_p"] >= 0.95):
            del body["top_p"]
        body.pop("top_k", None)
    elif "temperature" in body and "top_p" in body:
        del body["top_p"]


# --- upstream side: Claude answer -> IR --------------------------------------------------------


def parse_response(body: dict[str, Any], req: ir.Request | None = None) -> ir.Response:
    """A non-stream Claude Messages answer as the IR (``req`` names custom tools to unwrap)."""
    custom = {t.name for t in req.tools if t.kind == "custom"} if req else set()
    parts: list[ir.Part] = []
    for block in body.get("content") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(ir.Text(str(block.get("text") or "")))
        elif kind == "thinking":
            parts.append(ir.Reasoning(str(block.get("thinking") or ""), str(block.get("signature") or ""), "claude"))
        elif kind == "redacted_thinking":
            parts.append(ir.Reasoning(signature=str(block.get("data") or ""), family="claude", redacted=True))
        elif kind == "tool_use":
            name = str(block.get("name") or "")
            arguments = orjson.dumps(block.get("input") or {}).decode()
            if name in custom:
                parts.append(ir.ToolCall(str(block.get("id") or ""), name, unwrap_custom_input(arguments), "custom"))
            else:
                parts.append(ir.ToolCall(str(block.get("id") or ""), name, arguments))
    return ir.Response(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or ""),
        parts=parts,
        finish=finish_from_claude(body.get("stop_reason"), body.get("stop_sequence")),
        usage=usage_from_claude(body.get("usage") or {}),
    )


def error_message(body: Any) -> str:
    """The message inside a Claude error body (to re-wrap it in another dialect's envelope)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return ""


# --- Claude client -> Claude upstream: near pass-through (D1.4, §1.5) --------------------------


def sanitize_passthrough(
    body: dict[str, Any], model: str, header_betas: Sequence[str] = ()
) -> tuple[dict[str, Any], list[str]]:
    """A Claude client's body fit for the Claude upstream, and the ``anthropic-beta`` values to send.

    Only what must change changes: the model; body ``betas`` lifted into the header list (after the
    client's header values, de-duplicated, fast mode added for ``speed:"fast"``); in-conversation
    system turns folded for legacy models (D3); thinking blocks no Claude model can replay dropped;
    cache breakpoints capped at four with 1h TTLs never after 5m ones; sampling per §1.5. The input
    is not modified.
    """
    out = dict(body)
    out["model"] = model
    betas = _dedupe([*header_betas, *_as_strings(out.pop("betas", None))])
    if out.get("speed") == "fast" and FAST_MODE_BETA not in betas:
        betas.append(FAST_MODE_BETA)
    messages = out.get("messages")
    if isinstance(messages, list):
        if is_legacy_system_model(model):
            out["system"], messages = _fold_system_turns(out.get("system"), messages)
        messages, dropped = _drop_unreplayable_thinking(messages)
        out["messages"] = messages
        thinking = out.get("thinking")
        on = isinstance(thinking, dict) and thinking.get("type") in _THINKING_ON
        if dropped and on and _history_forbids_thinking(messages):
            out["thinking"] = {"type": "disabled"}
            config = out.pop("output_config", None)
            if isinstance(config, dict) and any(k != "effort" for k in config):
                out["output_config"] = {k: v for k, v in config.items() if k != "effort"}
    _limit_cache_control(out)
    _normalize_sampling(out)
    if isinstance(out.get("tools"), list):
        out["tools"] = [_clean_web_search(dict(t)) if isinstance(t, dict) else t for t in out["tools"]]
    return out, betas


def _fold_system_turns(system: Any, messages: list[Any]) -> tuple[Any, list[Any]]:
    """Legacy models: every ``role:"system"`` turn's text appended to top-level ``system``, in order."""
    if not any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
        return system, messages
    blocks: list[Any] = [{"type": "text", "text": system}] if isinstance(system, str) else list(system or [])
    kept = []
    for message in messages:
        if not (isinstance(message, dict) and message.get("role") == "system"):
            kept.append(message)
            continue
        content = message.get("content")
        if isinstance(content, str):
            blocks.append({"type": "text", "text": content})
        elif isinstance(content, list):
            blocks += [b for b in content if isinstance(b, dict) and b.get("type") == "text"]
    return blocks, kept


def _drop_unreplayable_thinking(messages: list[Any]) -> tuple[list[Any], bool]:
    """Thinking blocks not signed by Claude (unsigned, Codex or Gemini blobs) cannot be sent back."""
    out: list[Any] = []
    dropped = False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(_unreplayable(b) for b in content):
            kept = [b for b in content if not _unreplayable(b)]
            dropped = dropped or any(_unreplayable(b) and (b.get("thinking") or b.get("signature")) for b in content)
            message = dict(message, content=kept)
        out.append(message)
    return out, dropped


def _unreplayable(block: Any) -> bool:
    if not isinstance(block, dict) or block.get("type") != "thinking":
        return False
    return signature_family(str(block.get("signature") or ""))[1] != "claude"


def _limit_cache_control(body: dict[str, Any]) -> None:
    """At most four breakpoints, keeping the most valuable; a 1h TTL never follows a 5m one."""
    tools, system, messages = _cache_sites(body)
    sites = tools + system + messages
    seen_short = False
    for holder, i in sites:  # Claude reads breakpoints in order: tools, system, messages
        control = holder[i]["cache_control"]
        if isinstance(control, dict) and control.get("ttl") == "1h":
            if seen_short:
                holder[i] = dict(holder[i], cache_control={k: v for k, v in control.items() if k != "ttl"})
        else:
            seen_short = True
    excess = len(sites) - MAX_CACHE_BREAKPOINTS
    if excess <= 0:
        return
    # Least valuable first: early system blocks, early tools, messages oldest first, then the last ones.
    for holder, i in [*system[:-1], *tools[:-1], *messages, *system[-1:], *tools[-1:]][:excess]:
        holder[i] = {k: v for k, v in holder[i].items() if k != "cache_control"}


Site = tuple[list[Any], int]


def _cache_sites(body: dict[str, Any]) -> tuple[list[Site], list[Site], list[Site]]:
    """Every block carrying ``cache_control``, in lists copied so the caller's body stays intact."""

    def sites_in(blocks: list[Any]) -> tuple[list[Any], list[Site]]:
        if not any(_has_cache(b) for b in blocks):
            return blocks, []
        blocks = list(blocks)
        return blocks, [(blocks, i) for i, b in enumerate(blocks) if _has_cache(b)]

    tool_sites: list[Site] = []
    system_sites: list[Site] = []
    message_sites: list[Site] = []
    if isinstance(body.get("tools"), list):
        body["tools"], tool_sites = sites_in(body["tools"])
    if isinstance(body.get("system"), list):
        body["system"], system_sites = sites_in(body["system"])
    messages = body.get("messages")
    if isinstance(messages, list):
        copied = list(messages)
        for m, message in enumerate(copied):
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                continue
            content = list(content)
            for j, block in enumerate(content):
                inner = block.get("content") if isinstance(block, dict) and block.get("type") == "tool_result" else None
                if isinstance(inner, list) and any(_has_cache(b) for b in inner):
                    inner, found = sites_in(inner)  # a tool result's own blocks count too
                    content[j] = dict(block, content=inner)
                    message_sites += found
                if _has_cache(content[j]):
                    message_sites.append((content, j))
            copied[m] = dict(message, content=content)
        body["messages"] = copied
    return tool_sites, system_sites, message_sites


def _has_cache(block: Any) -> bool:
    return isinstance(block, dict) and block.get("cache_control") is not None


# --- count_tokens (§5) -------------------------------------------------------------------------


def render_count_tokens(req: ir.Request) -> dict[str, Any]:
    """The body for ``POST /v1/messages/count_tokens`` (no max_tokens, metadata or beta-only fields)."""
    body = render_request(req)
    keep = ("model", "system", "messages", "tools", "tool_choice", "thinking")
    return {key: body[key] for key in keep if key in body}


def count_tokens_response(n: int) -> dict[str, int]:
    return {"input_tokens": n}


def token_segments(req: ir.Request) -> list[str]:
    """The text a local tokenizer counts for ``req`` (§5); images and redacted thinking excluded."""
    segments = [str(a["block"].get("text") or "") for a in req.extensions.get("claude", {}).get("_attribution", ())]
    segments += [part.text for seg in req.system for part in seg.parts]
    for message in req.messages:
        segments.append(message.role)
        for part in message.parts:
            segments += _part_segments(part)
    for tool in req.tools:
        if tool.kind == "builtin":
            segments += [str((tool.builtin or {}).get("type") or ""), tool.name]
        else:
            segments += [tool.name, tool.description, orjson.dumps(tool.parameters).decode()]
    if req.tool_choice is not None:
        segments += [_CLAUDE_CHOICE[req.tool_choice.mode], req.tool_choice.name]
    return [s for s in segments if s]


def _part_segments(part: ir.Part) -> list[str]:
    if isinstance(part, ir.Text):
        return [part.text]
    if isinstance(part, ir.Reasoning):
        return [] if part.redacted else [part.text]
    if isinstance(part, ir.ToolCall):
        return [part.id, part.name, orjson.dumps(_tool_input(part)).decode()]
    if isinstance(part, ir.ToolResult):
        return [part.call_id, *(s for p in part.content for s in _part_segments(p))]
    if isinstance(part, ir.File) and part.data and part.media_type.startswith("text/"):
        return [_b64_text(part.data)]
    return []


# --- small helpers ---------------------------------------------------------------------------


def _as_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def _dedupe(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v.strip() for v in values if v and v.strip()))
