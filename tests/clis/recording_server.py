"""A recording stand-in for three model APIs, for running the real CLIs against it.

``RecordingServer`` listens on a random 127.0.0.1 port (stdlib ``ThreadingHTTPServer``, a daemon thread)
and records every request it gets — method, path, query, headers (secrets masked), body (decoded JSON
when it is JSON, after undoing ``Content-Encoding`` gzip/deflate/zstd) — then answers in the wire format
the path belongs to:

* ``POST /v1/messages`` (Anthropic Messages; SSE when ``stream`` is true) — what ``claude -p`` calls;
  ``/v1/messages/count_tokens`` gets ``{"input_tokens": n}``.
* ``POST /v1/responses`` (OpenAI Responses SSE) — what ``codex exec`` calls with ``wire_api="responses"``.
* ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` / ``:generateContent`` / ``:countTokens``
  (Gemini) — what ``gemini -p`` calls with ``GOOGLE_GEMINI_BASE_URL``.
* ``POST /v1/chat/completions`` (Chat Completions, SSE or JSON), ``GET .../models`` listings, for
  completeness.
* ``CONNECT host:port`` or an absolute-URI request: a CLI used the server as its HTTP(S) proxy, i.e. it
  tried to reach a host other than its base URL. Recorded in ``leaks`` and refused with 403. The harness
  points ``HTTPS_PROXY``/``HTTP_PROXY`` here (with ``NO_PROXY=127.0.0.1,localhost``) so that any attempt
  to reach a vendor is seen instead of silently failing on the offline machine.

The answers follow a stateless two-step script, decided from each request body alone, so start-up and
side requests (title generation, quota probes, next-speaker checks) never disturb it:

1. a request that declares one of the CLI's own shell tools and carries no tool result yet is answered
   with a call to that tool running ``command`` (default ``printf 'CLIRELAY_%d\\n' 0x2a``, whose output
   ``CLIRELAY_42`` exists only if a shell really ran it; no ``$(...)``, which Gemini CLI refuses to run);
2. a request that carries a tool result is answered with the final text
   ``"<final_text> Tool output: <the first line of the result>"``;
3. anything else (no tools, or tools without a shell) gets a plain short text — or, when the request
   asks for JSON (Gemini ``responseMimeType: application/json``, Anthropic/OpenAI ``json_schema``), a
   JSON object built from its schema.

Run it by hand with ``python -m tests.clis.recording_server [--port N] [--log FILE]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import threading
import time
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_COMMAND = "printf 'CLIRELAY_%d\\n' 0x2a"
EXPECTED_TOOL_OUTPUT = "CLIRELAY_42"
DEFAULT_FINAL_TEXT = "CLIRELAY_FINAL_ANSWER."
SIDE_TEXT = "CLIRELAY side answer."

SECRET_HEADERS = {"authorization", "x-api-key", "x-goog-api-key", "api-key", "proxy-authorization", "cookie"}
SECRET_QUERY = {"key"}

# Shell-like tools, in order of preference, per CLI family.
ANTHROPIC_SHELL_TOOLS = ("Bash",)
RESPONSES_SHELL_TOOLS = ("shell_command", "exec_command", "shell", "local_shell")
GEMINI_SHELL_TOOLS = ("run_shell_command",)


def mask(value: str) -> str:
    """``Bearer sk-abc…xyz`` → ``Bearer ***MASKED***``: keeps the scheme, never the secret."""
    scheme, sep, _ = value.partition(" ")
    if sep and scheme.lower() in {"bearer", "basic", "token"}:
        return f"{scheme} ***MASKED***"
    return "***MASKED***"


@dataclass
class Recorded:
    seq: int
    t: float
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    dialect: str = "unknown"
    reply: str = ""
    status: int = 200

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "t": round(self.t, 3),
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "dialect": self.dialect,
            "reply": self.reply,
            "status": self.status,
        }


@dataclass
class Script:
    command: str = DEFAULT_COMMAND
    final_text: str = DEFAULT_FINAL_TEXT
    side_text: str = SIDE_TEXT
    # When False the first request is answered with the final text at once (no tool call).
    use_tool: bool = True


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return text.strip()


def _text_of(content: Any) -> str:
    """Flatten the many shapes a tool result takes (string, blocks, dicts) into text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text_of(c) for c in content)
    if isinstance(content, dict):
        for key in ("text", "output", "content", "result", "llmContent", "stdout"):
            if key in content:
                return _text_of(content[key])
        return json.dumps(content)
    return str(content)


def _find_output(text: str) -> str:
    """The proof line if it is there (``CLIRELAY_42``), else the first non-empty line."""
    match = re.search(r"CLIRELAY_\d+", text)
    return match.group(0) if match else _first_line(text)[:200]


def example_from_schema(schema: Any) -> Any:
    """A small value that satisfies a JSON schema (enums take their first value; Gemini's upper-case types too)."""
    if not isinstance(schema, dict):
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_from_schema(schema[key][0])
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "string")
    typ = (typ or ("object" if "properties" in schema else "string")).lower()
    if typ == "object":
        return {k: example_from_schema(v) for k, v in (schema.get("properties") or {}).items()}
    if typ == "array":
        return []
    if typ in ("integer", "number"):
        low = schema.get("minimum", 1)
        return max(1, low) if typ == "integer" else float(low)
    if typ == "boolean":
        return False
    return "user" if "speaker" in json.dumps(schema) else "ok"


# --------------------------------------------------------------------------------------------- SSE framing


def sse(event: str | None, data: Any) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


# ------------------------------------------------------------------------------------------------ Anthropic


def anthropic_decide(body: dict[str, Any], script: Script) -> tuple[str, dict[str, Any]]:
    """("tool", block) / ("final", text) / ("side", text) for one Messages request."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    content = last.get("content") if isinstance(last, dict) else None
    results = [b for b in content or [] if isinstance(b, dict) and b.get("type") == "tool_result"]
    tools = {t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)}
    if results:
        out = _find_output(_text_of(results[-1].get("content")))
        return "final", {"text": f"{script.final_text} Tool output: {out}"}
    shell = next((n for n in ANTHROPIC_SHELL_TOOLS if n in tools), None)
    if shell and script.use_tool:
        return "tool", {
            "name": shell,
            "input": {"command": script.command, "description": "Print the CliRelay proof line"},
        }
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format")
    if isinstance(fmt, dict) and fmt.get("schema"):
        return "side", {"text": json.dumps(example_from_schema(fmt["schema"]))}
    return ("final" if shell else "side"), {"text": script.final_text if shell else script.side_text}


def anthropic_reply(body: dict[str, Any], script: Script) -> tuple[str, str, bytes]:
    kind, info = anthropic_decide(body, script)
    model = body.get("model") or "claude-recording"
    msg_id = f"msg_{uuid.uuid4().hex[:24]}"
    usage = {"input_tokens": 12, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    if kind == "tool":
        block = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": info["name"], "input": {}}
        stop = "tool_use"
    else:
        block = {"type": "text", "text": ""}
        stop = "end_turn"
    if not body.get("stream"):
        full = dict(block)
        if kind == "tool":
            full["input"] = info["input"]
        else:
            full["text"] = info["text"]
        message = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [full],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 7},
        }
        return kind, "application/json", json.dumps(message).encode()
    start = {
        "type": "message",
        "id": msg_id,
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    chunks = [
        sse("message_start", {"type": "message_start", "message": start}),
        sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
        sse("ping", {"type": "ping"}),
    ]
    if kind == "tool":
        args = json.dumps(info["input"])
        chunks.append(sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": _json_delta("")}))
        for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
            chunks.append(
                sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": _json_delta(piece)})
            )
    else:
        text = info["text"]
        for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
            delta = {"type": "text_delta", "text": piece}
            chunks.append(sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
    chunks += [
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 7},
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]
    return kind, "text/event-stream", b"".join(chunks)


def _json_delta(partial: str) -> dict[str, str]:
    return {"type": "input_json_delta", "partial_json": partial}


# ------------------------------------------------------------------------------------------------ Responses


def _shell_arguments(tool: dict[str, Any], command: str) -> dict[str, Any]:
    """Arguments for whatever shape of shell tool Codex declared (``command`` list or string, or ``cmd``)."""
    props = (tool.get("parameters") or {}).get("properties") or {}
    if "cmd" in props:
        return {"cmd": command}
    cmd_schema = props.get("command") or {}
    if cmd_schema.get("type") == "array":
        return {"command": ["bash", "-lc", command]}
    return {"command": command}


def _responses_tools(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every tool a Responses request declares, by name: the ``tools`` array, plus the tools newer Codex
    models receive in an ``additional_tools`` input item (nested in ``namespace`` groups, "code mode")."""
    found: dict[str, dict[str, Any]] = {}

    def walk(tools: Any, namespace: str | None) -> None:
        for tool in tools or []:
            if not isinstance(tool, dict):
                continue
            if tool.get("type") == "namespace":
                walk(tool.get("tools"), tool.get("name"))
                continue
            name = tool.get("name") or tool.get("type")
            if name and name not in found:
                found[name] = {**tool, "_namespace": namespace}

    walk(body.get("tools"), None)
    for item in body.get("input") or []:
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            walk(item.get("tools"), None)
    return found


def code_mode_source(command: str) -> str:
    """JavaScript for Codex's code-mode ``exec`` tool: run ``command`` through the nested ``exec_command``."""
    return (
        f"const r = await tools.exec_command({{cmd: {json.dumps(command)}}});\n"
        "text(typeof r === 'string' ? r : (r.output ?? JSON.stringify(r)));\n"
    )


def responses_decide(body: dict[str, Any], script: Script) -> tuple[str, dict[str, Any]]:
    items = body.get("input") or []
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    output_types = ("function_call_output", "custom_tool_call_output", "local_shell_call_output")
    outputs = [i for i in items if isinstance(i, dict) and i.get("type") in output_types]
    tools = _responses_tools(body)
    if outputs:
        out = _find_output(_text_of(outputs[-1].get("output")))
        return "final", {"text": f"{script.final_text} Tool output: {out}"}
    shell = next((n for n in RESPONSES_SHELL_TOOLS if n in tools and tools[n].get("type") == "function"), None)
    code_mode = "exec" in tools and tools["exec"].get("type") == "custom"
    if shell and script.use_tool:
        return "tool", {"name": shell, "arguments": _shell_arguments(tools[shell], script.command)}
    if code_mode and script.use_tool:
        return "tool", {"name": "exec", "custom_input": code_mode_source(script.command)}
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema" and fmt.get("schema"):
        return "side", {"text": json.dumps(example_from_schema(fmt["schema"]))}
    has_tool = bool(shell or code_mode)
    return ("final" if has_tool else "side"), {"text": script.final_text if has_tool else script.side_text}


def responses_reply(body: dict[str, Any], script: Script) -> tuple[str, str, bytes]:
    kind, info = responses_decide(body, script)
    resp_id = f"resp_{uuid.uuid4().hex[:24]}"
    model = body.get("model") or "gpt-recording"
    base = {
        "id": resp_id,
        "object": "response",
        "created_at": int(time.time()),
        "model": model,
        "status": "in_progress",
        "output": [],
        "usage": None,
    }
    if kind == "tool" and "custom_input" in info:
        source = info["custom_input"]
        item_id, call_id = f"ctc_{uuid.uuid4().hex[:24]}", f"call_{uuid.uuid4().hex[:24]}"
        item = {"type": "custom_tool_call", "id": item_id, "call_id": call_id, "name": info["name"], "input": ""}
        done_item = {**item, "input": source, "status": "completed"}
        middle = [
            ("response.output_item.added", {"output_index": 0, "item": {**item, "status": "in_progress"}}),
            ("response.custom_tool_call_input.delta", {"item_id": item_id, "output_index": 0, "delta": source}),
            ("response.custom_tool_call_input.done", {"item_id": item_id, "output_index": 0, "input": source}),
            ("response.output_item.done", {"output_index": 0, "item": done_item}),
        ]
    elif kind == "tool":
        args = json.dumps(info["arguments"])
        item_id, call_id = f"fc_{uuid.uuid4().hex[:24]}", f"call_{uuid.uuid4().hex[:24]}"
        item = {"type": "function_call", "id": item_id, "call_id": call_id, "name": info["name"], "arguments": ""}
        done_item = {**item, "arguments": args, "status": "completed"}
        middle = [
            ("response.output_item.added", {"output_index": 0, "item": {**item, "status": "in_progress"}}),
            ("response.function_call_arguments.delta", {"item_id": item_id, "output_index": 0, "delta": args}),
            ("response.function_call_arguments.done", {"item_id": item_id, "output_index": 0, "arguments": args}),
            ("response.output_item.done", {"output_index": 0, "item": done_item}),
        ]
    else:
        text = info["text"]
        item_id = f"msg_{uuid.uuid4().hex[:24]}"
        part = {"type": "output_text", "text": "", "annotations": []}
        done_item = {
            "type": "message",
            "id": item_id,
            "status": "completed",
            "role": "assistant",
            "content": [{**part, "text": text}],
        }
        at = {"item_id": item_id, "output_index": 0, "content_index": 0}
        middle = [
            (
                "response.output_item.added",
                {"output_index": 0, "item": {**done_item, "status": "in_progress", "content": []}},
            ),
            ("response.content_part.added", {**at, "part": part}),
            ("response.output_text.delta", {**at, "delta": text[: len(text) // 2]}),
            ("response.output_text.delta", {**at, "delta": text[len(text) // 2 :]}),
            ("response.output_text.done", {**at, "text": text}),
            ("response.content_part.done", {**at, "part": {**part, "text": text}}),
            ("response.output_item.done", {"output_index": 0, "item": done_item}),
        ]
    usage = {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 19,
    }
    completed = {**base, "status": "completed", "output": [done_item], "usage": usage}
    if not body.get("stream"):
        return kind, "application/json", json.dumps(completed).encode()
    events = [
        ("response.created", {"response": base}),
        ("response.in_progress", {"response": base}),
        *middle,
        ("response.completed", {"response": completed}),
    ]
    frames = [sse(name, {"type": name, "sequence_number": n, **data}) for n, (name, data) in enumerate(events)]
    return kind, "text/event-stream", b"".join(frames)


# ------------------------------------------------------------------------------------------ Chat Completions


def chat_reply(body: dict[str, Any], script: Script) -> tuple[str, str, bytes]:
    messages = body.get("messages") or []
    tools = {(t.get("function") or {}).get("name"): t for t in body.get("tools") or [] if isinstance(t, dict)}
    model = body.get("model") or "gpt-recording"
    last = messages[-1] if messages else {}
    shell = next((n for n in (*RESPONSES_SHELL_TOOLS, *ANTHROPIC_SHELL_TOOLS, *GEMINI_SHELL_TOOLS) if n in tools), None)
    if last.get("role") == "tool":
        kind, msg = (
            "final",
            {
                "role": "assistant",
                "content": f"{script.final_text} Tool output: {_find_output(_text_of(last.get('content')))}",
            },
        )
    elif shell and script.use_tool:
        args = _shell_arguments(tools[shell].get("function") or {}, script.command)
        call = {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": shell, "arguments": json.dumps(args)},
        }
        kind, msg = "tool", {"role": "assistant", "content": None, "tool_calls": [call]}
    else:
        kind, msg = "side", {"role": "assistant", "content": script.side_text}
    finish = "tool_calls" if kind == "tool" else "stop"
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    usage = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    if not body.get("stream"):
        doc = {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
            "usage": usage,
        }
        return kind, "application/json", json.dumps(doc).encode()
    head = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    delta = dict(msg)
    if "tool_calls" in delta:
        delta["tool_calls"] = [{**c, "index": 0} for c in delta["tool_calls"]]
    frames = [
        sse(None, {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}),
        sse(None, {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}),
        sse(None, {**head, "choices": [], "usage": usage}),
        sse(None, "[DONE]"),
    ]
    return kind, "text/event-stream", b"".join(frames)


# --------------------------------------------------------------------------------------------------- Gemini


def gemini_decide(body: dict[str, Any], script: Script) -> tuple[str, dict[str, Any]]:
    contents = body.get("contents") or []
    last = contents[-1] if contents else {}
    parts = last.get("parts") or [] if isinstance(last, dict) else []
    responses = [p["functionResponse"] for p in parts if isinstance(p, dict) and "functionResponse" in p]
    declared = {
        d.get("name"): d
        for t in body.get("tools") or []
        if isinstance(t, dict)
        for d in t.get("functionDeclarations") or []
        if isinstance(d, dict)
    }
    if responses:
        out = _find_output(_text_of(responses[-1].get("response")))
        return "final", {"text": f"{script.final_text} Tool output: {out}"}
    shell = next((n for n in GEMINI_SHELL_TOOLS if n in declared), None)
    if shell and script.use_tool:
        return "tool", {
            "name": shell,
            "args": {"command": script.command, "description": "Print the CliRelay proof line"},
        }
    config = body.get("generationConfig") or {}
    if config.get("responseMimeType") == "application/json":
        schema = config.get("responseJsonSchema") or config.get("responseSchema") or {}
        return "side", {"text": json.dumps(example_from_schema(schema))}
    return ("final" if shell else "side"), {"text": script.final_text if shell else script.side_text}


def gemini_reply(body: dict[str, Any], model: str, stream: bool, script: Script) -> tuple[str, str, bytes]:
    kind, info = gemini_decide(body, script)
    usage = {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19}
    if kind == "tool":
        parts_list = [[{"functionCall": {"name": info["name"], "args": info["args"]}}]]
    else:
        text = info["text"]
        parts_list = (
            [[{"text": text[: len(text) // 2]}], [{"text": text[len(text) // 2 :]}]] if stream else [[{"text": text}]]
        )
    response_id = uuid.uuid4().hex[:20]
    chunks = []
    for n, parts in enumerate(parts_list):
        last = n == len(parts_list) - 1
        cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if last:
            cand["finishReason"] = "STOP"
        chunk: dict[str, Any] = {"candidates": [cand], "modelVersion": model, "responseId": response_id}
        if last:
            chunk["usageMetadata"] = usage
        chunks.append(chunk)
    if not stream:
        return kind, "application/json", json.dumps(chunks[0]).encode()
    return (
        kind,
        "text/event-stream",
        b"".join(f"data: {json.dumps(c, separators=(',', ':'))}\r\n\r\n".encode() for c in chunks),
    )


def _model_list(dialect: str) -> dict[str, Any]:
    if dialect == "gemini":
        return {
            "models": [
                {
                    "name": f"models/{m}",
                    "displayName": m,
                    "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
                    "inputTokenLimit": 1048576,
                    "outputTokenLimit": 65536,
                }
                for m in ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite")
            ]
        }
    if dialect == "anthropic":
        return {
            "data": [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
            ],
            "has_more": False,
            "first_id": None,
            "last_id": None,
        }
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": "clirelay"} for m in ("gpt-5", "gpt-5-codex")],
    }


# ------------------------------------------------------------------------------------------- inspection


def tool_results(dialect: str, body: Any) -> list[str]:
    """The text of every tool result a request carries back to the model, whatever its wire format."""
    if not isinstance(body, dict):
        return []
    found: list[str] = []
    if dialect == "anthropic":
        for message in body.get("messages") or []:
            for block in message.get("content") if isinstance(message.get("content"), list) else []:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    found.append(_text_of(block.get("content")))
    elif dialect == "responses":
        for item in body.get("input") or []:
            if isinstance(item, dict) and str(item.get("type", "")).endswith("_output"):
                found.append(_text_of(item.get("output")))
    elif dialect == "gemini":
        for content in body.get("contents") or []:
            for part in content.get("parts") or []:
                if isinstance(part, dict) and "functionResponse" in part:
                    found.append(_text_of(part["functionResponse"].get("response")))
    elif dialect == "chat":
        found += [_text_of(m.get("content")) for m in body.get("messages") or [] if m.get("role") == "tool"]
    return found


# --------------------------------------------------------------------------------------------------- server


def _decode_body(raw: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        return zlib.decompress(raw)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    if encoding == "br":
        raise ValueError("brotli request bodies are not supported")
    return raw


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # every method goes through one place
    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    def do_CONNECT(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        owner = self.server.owner
        raw = b"" if self.command == "CONNECT" else self._read_body()
        try:
            raw = _decode_body(raw, self.headers.get("Content-Encoding", ""))
        except Exception as exc:  # pragma: no cover - recorded for diagnosis
            raw = f"<undecodable body: {exc}>".encode()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        split = urlsplit(self.path)
        query = {k: (["***MASKED***"] if k in SECRET_QUERY else v) for k, v in parse_qs(split.query).items()}
        headers = {k.lower(): (mask(v) if k.lower() in SECRET_HEADERS else v) for k, v in self.headers.items()}
        rec = owner._record(self.command, split.path if not split.scheme else self.path, query, headers, body)

        if self.command == "CONNECT" or split.scheme:
            owner.leaks.append(rec)
            rec.dialect, rec.reply, rec.status = "proxy", "refused", 403
            self._send(403, "text/plain", b"CliRelay recording server: outside traffic refused\n", close=True)
            return
        try:
            status, ctype, payload, dialect, reply = self._route(split.path, split.query, body)
        except Exception as exc:  # keep the CLI talking; show the failure in the record
            status, ctype, dialect, reply = 500, "application/json", "error", f"server error: {exc!r}"
            payload = json.dumps({"error": {"message": reply}}).encode()
        rec.dialect, rec.reply, rec.status = dialect, reply, status
        self._send(status, ctype, payload)

    def _route(self, path: str, query: str, body: Any) -> tuple[int, str, bytes, str, str]:
        owner = self.server.owner
        script = owner.script
        body = body if isinstance(body, dict) else {}
        method = self.command
        gem = re.match(r"^/(v1beta|v1|v1alpha)/models/([^/:]+):(\w+)$", path)
        if gem and method == "POST":
            model, action = gem.group(2), gem.group(3)
            if action == "countTokens":
                return 200, "application/json", json.dumps({"totalTokens": 42}).encode(), "gemini", "countTokens"
            if action == "embedContent":
                payload = {"embedding": {"values": [0.0] * 8}}
                return 200, "application/json", json.dumps(payload).encode(), "gemini", "embed"
            stream = action == "streamGenerateContent"
            kind, ctype, payload = gemini_reply(body, model, stream, script)
            return 200, ctype, payload, "gemini", kind
        if method == "POST" and path.endswith("/messages/count_tokens"):
            return 200, "application/json", json.dumps({"input_tokens": 42}).encode(), "anthropic", "count_tokens"
        if method == "POST" and path.endswith("/messages"):
            kind, ctype, payload = anthropic_reply(body, script)
            return 200, ctype, payload, "anthropic", kind
        if method == "POST" and path.endswith("/responses"):
            kind, ctype, payload = responses_reply(body, script)
            return 200, ctype, payload, "responses", kind
        if method == "POST" and path.endswith("/chat/completions"):
            kind, ctype, payload = chat_reply(body, script)
            return 200, ctype, payload, "chat", kind
        if method == "GET" and re.search(r"/models/?$", path):
            dialect = "gemini" if "v1beta" in path else "anthropic" if "anthropic-version" in self.headers else "openai"
            return 200, "application/json", json.dumps(_model_list(dialect)).encode(), dialect, "models"
        if method in ("HEAD", "OPTIONS"):
            return 200, "text/plain", b"", "probe", "ok"
        payload = json.dumps({"error": {"type": "not_found_error", "message": f"no route for {method} {path}"}})
        return 404, "application/json", payload.encode(), "unknown", "404"

    def _send(self, status: int, ctype: str, payload: bytes, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype + ("; charset=utf-8" if ctype.startswith("text/") else ""))
        if ctype == "text/event-stream":
            self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:16]}")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: RecordingServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A CLI hanging up mid-answer (a refused CONNECT, a cancelled side request) is not our failure.
        pass


@dataclass
class RecordingServer:
    """Start with ``with RecordingServer() as srv:``; ``srv.url``, ``srv.requests``, ``srv.leaks``."""

    script: Script = field(default_factory=Script)
    host: str = "127.0.0.1"
    port: int = 0
    log_path: Path | None = None
    requests: list[Recorded] = field(default_factory=list)
    leaks: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._httpd = _Server((self.host, self.port), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="recording-server", daemon=True
        )

    def _record(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: Any
    ) -> Recorded:
        with self._lock:
            rec = Recorded(len(self.requests) + 1, time.monotonic() - self._t0, method, path, query, headers, body)
            self.requests.append(rec)
        return rec

    def start(self) -> RecordingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        if self.log_path:
            self.dump(self.log_path)

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.leaks.clear()

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps([r.as_dict() for r in self.requests], indent=2) + "\n")

    def summary(self) -> list[str]:
        return [f"{r.seq:>3} {r.method} {r.path} -> {r.status} {r.dialect}/{r.reply}" for r in self.requests]

    def of(self, dialect: str, replies: Iterable[str] | None = None) -> list[Recorded]:
        wanted = set(replies) if replies is not None else None
        return [r for r in self.requests if r.dialect == dialect and (wanted is None or r.reply in wanted)]


def main() -> None:  # pragma: no cover - manual use
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", type=Path, default=None, help="write the recorded requests here on exit (JSON)")
    parser.add_argument("--command", default=DEFAULT_COMMAND)
    args = parser.parse_args()
    srv = RecordingServer(script=Script(command=args.command), port=args.port, log_path=args.log).start()
    print(f"recording on {srv.url} (Ctrl-C to stop)", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.5)
            for line in srv.summary()[seen:]:
                print(line, flush=True)
            seen = len(srv.requests)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
