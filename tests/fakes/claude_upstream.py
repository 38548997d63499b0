"""A fake Anthropic Messages upstream (Claude API key): ``/v1/messages`` and ``count_tokens`` over real HTTP.

Streams are framed exactly as Anthropic sends them: ``event: <name>\\ndata: <json>\\n\\n`` with
``message_start`` (input and cache usage, ``output_tokens: 1``), a ``ping``, content blocks strictly in
order — ``thinking`` (``thinking_delta``s, then ``signature_delta`` just before its stop),
``redacted_thinking``, ``text`` (``text_delta``s), ``tool_use`` (an empty ``input_json_delta`` then the
arguments cut at arbitrary points) — then ``message_delta`` and ``message_stop``. ``stream: false``
gets the Message JSON. Errors are ``{"type":"error","error":{"type","message"},"request_id"}``.

Auth: when ``script.api_key`` is set, ``x-api-key`` (or ``Authorization: Bearer``, which CPA sends to
hosts other than api.anthropic.com) must carry it; ``anthropic-version`` is always required.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from tests.fakes.upstream import (
    FakeUpstream,
    Handler,
    RecordedRequest,
    Script,
    Send,
    fragments,
    joined,
    pieces,
    random_id,
    word_count,
)

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
DEFAULT_MESSAGES = {
    400: "Invalid request",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "Number of request tokens has exceeded your per-minute rate limit. Please try again later.",
    500: "Internal server error",
    529: "Overloaded",
}


@dataclass
class ClaudeScript(Script):
    finish_reason: str | None = None  # stop_reason; None: tool_use / stop_sequence / end_turn as fits
    cache_creation_tokens: int = 0  # cache_creation_input_tokens (cached_tokens is cache_read_…)
    redacted_thinking: str | None = None  # the ``data`` of a redacted_thinking block after thinking
    stop_sequence: str | None = None  # the matched stop sequence (stop_reason becomes stop_sequence)
    ping: bool = True  # a ``ping`` event right after ``message_start``
    args_fragment_size: int = 9  # characters per ``input_json_delta`` fragment
    full_delta_usage: bool = False  # message_delta repeats input and cache numbers (newer API)


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


class FakeClaudeUpstream(FakeUpstream):
    script_class = ClaudeScript
    name = "fake-claude-upstream"
    script: ClaudeScript

    # --- scripting -------------------------------------------------------------------------
    def fail(
        self,
        status: int,
        message: str | None = None,
        *,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().fail(status, message, headers=headers)
        if type_ is not None:
            self.script.error = {"type": type_, "message": self.error_object(status, message)["message"]}

    def fail_midstream(self, after_events: int, message: str | None = None, *, type_: str = "overloaded_error") -> None:
        """An ``event: error`` (``overloaded_error`` unless told) after ``after_events`` events."""
        self.script.error_after = after_events
        self.script.midstream_error = {"type": type_, "message": message or "Overloaded"}

    def rate_limit(self, retry_after: int = 30, message: str | None = None, *, unified: bool = False) -> None:
        """429 with ``retry-after`` and ``anthropic-ratelimit-*`` headers (``unified``: the 5h window rejected)."""
        reset = int(time.time()) + retry_after
        stamp = datetime.fromtimestamp(reset, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {"retry-after": str(retry_after)}
        for kind, limit in (
            ("requests", "50"),
            ("tokens", "40000"),
            ("input-tokens", "30000"),
            ("output-tokens", "8000"),
        ):
            headers[f"anthropic-ratelimit-{kind}-limit"] = limit
            headers[f"anthropic-ratelimit-{kind}-remaining"] = "0"
            headers[f"anthropic-ratelimit-{kind}-reset"] = stamp
        if unified:
            headers.update(
                {
                    "anthropic-ratelimit-unified-status": "rejected",
                    "anthropic-ratelimit-unified-5h-status": "rejected",
                    "anthropic-ratelimit-unified-5h-reset": str(reset),
                    "anthropic-ratelimit-unified-7d-status": "allowed",
                    "anthropic-ratelimit-unified-7d-reset": str(reset + 6 * 86400),
                    "anthropic-ratelimit-unified-reset": str(reset),
                    "anthropic-ratelimit-unified-representative-claim": "five_hour",
                }
            )
            message = message or "This request would exceed your account's rate limit. Please try again later."
        self.fail(429, message, headers=headers)

    def overloaded(self) -> None:
        self.fail(529, "Overloaded")

    # --- provider hooks --------------------------------------------------------------------
    def route(self, recorded: RecordedRequest) -> Handler | None:
        if recorded.method != "POST":
            return None
        return {"/v1/messages": self._messages, "/v1/messages/count_tokens": self._count_tokens}.get(recorded.path)

    def auth_error(self, script: Script, recorded: RecordedRequest) -> tuple[int, dict[str, Any]] | None:
        if script.api_key is not None:
            given = recorded.headers.get("x-api-key") or recorded.bearer
            if not given:
                return 401, self.error_body(self.error_object(401, "x-api-key header is required"))
            if given != script.api_key:
                return 401, self.error_body(self.error_object(401, "invalid x-api-key"))
        if not recorded.headers.get("anthropic-version"):
            return 400, self.error_body(self.error_object(400, "anthropic-version: header is required"))
        return None

    def error_object(self, status: int, message: str | None) -> dict[str, Any]:
        return {"type": error_type(status), "message": message or DEFAULT_MESSAGES.get(status, "Internal server error")}

    def midstream_error_object(self, message: str | None) -> dict[str, Any]:
        return {"type": "overloaded_error", "message": message or "Overloaded"}

    def error_body(self, error: dict[str, Any]) -> dict[str, Any]:
        return {"type": "error", "error": error, "request_id": random_id("req_011C")}

    def response_headers(self) -> dict[str, str]:
        return {"request-id": random_id("req_011C"), "anthropic-organization-id": "00000000-fake-org"}

    # --- handlers --------------------------------------------------------------------------
    async def _messages(self, script: Script, recorded: RecordedRequest, send: Send) -> None:
        assert isinstance(script, ClaudeScript)
        problem = _request_problem(recorded.json, need_max_tokens=True)
        if problem is not None:
            await self.send_error(send, 400, problem)
            return
        payload = recorded.json
        if script.known_models is not None and payload["model"] not in script.known_models:
            await self.send_error(send, 404, f"model: {payload['model']}")
            return
        blocks = _blocks(script)
        if not payload.get("stream"):
            await self.send_json(send, 200, _message(script, payload, blocks), script.headers)
            recorded.completed = True
            return
        events = [_sse(name, data) for name, data in _stream_events(script, payload, blocks)]
        await self.stream(
            script,
            recorded,
            send,
            events,
            content_type="text/event-stream; charset=utf-8",
            error_frame=lambda _index: _sse("error", {"type": "error", "error": script.midstream_error}),
        )

    async def _count_tokens(self, script: Script, recorded: RecordedRequest, send: Send) -> None:
        problem = _request_problem(recorded.json, need_max_tokens=False)
        if problem is not None:
            await self.send_error(send, 400, problem)
            return
        payload = recorded.json
        counted = word_count([payload.get("system"), payload.get("messages"), payload.get("tools")])
        tokens = script.count_tokens if script.count_tokens is not None else max(counted, 1)
        await self.send_json(send, 200, {"input_tokens": tokens}, script.headers)
        recorded.completed = True


def _request_problem(payload: Any, *, need_max_tokens: bool) -> str | None:
    if not isinstance(payload, dict):
        return "There was an error parsing the body of your request. Please make sure it is valid JSON."
    required = ["model", "messages"] + (["max_tokens"] if need_max_tokens else [])
    for name in required:
        if name not in payload:
            return f"{name}: Field required"
    if not isinstance(payload["messages"], list):
        return "messages: Input should be a valid list"
    if not payload["messages"]:
        return "messages: at least one message is required"
    return None


@dataclass
class _Block:
    final: dict[str, Any]  # the block as the Message JSON holds it
    start: dict[str, Any]  # the ``content_block`` of content_block_start
    deltas: list[dict[str, Any]]


def _blocks(script: ClaudeScript) -> list[_Block]:
    blocks: list[_Block] = []
    if script.reasoning is not None:
        thought = joined(script.reasoning)
        deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces(script.reasoning)]
        deltas.append({"type": "signature_delta", "signature": script.signature})
        blocks.append(
            _Block(
                {"type": "thinking", "thinking": thought, "signature": script.signature},
                {"type": "thinking", "thinking": "", "signature": ""},
                deltas,
            )
        )
    if script.redacted_thinking is not None:
        redacted = {"type": "redacted_thinking", "data": script.redacted_thinking}
        blocks.append(_Block(redacted, redacted, []))
    if joined(script.text):
        deltas = [{"type": "text_delta", "text": p} for p in pieces(script.text)]
        blocks.append(_Block({"type": "text", "text": joined(script.text)}, {"type": "text", "text": ""}, deltas))
    for call in script.tool_calls:
        call_id = call.id or random_id("toolu_01", 22)
        arguments = json.dumps(call.arguments)  # Anthropic's partial_json keeps ", " and ": " spacing
        deltas = [{"type": "input_json_delta", "partial_json": ""}]
        deltas += [
            {"type": "input_json_delta", "partial_json": f} for f in fragments(arguments, script.args_fragment_size)
        ]
        blocks.append(
            _Block(
                {"type": "tool_use", "id": call_id, "name": call.name, "input": call.arguments},
                {"type": "tool_use", "id": call_id, "name": call.name, "input": {}},
                deltas,
            )
        )
    return blocks


def _stop(script: ClaudeScript) -> tuple[str, str | None]:
    reason = script.finish_reason
    if reason is None:
        reason = "tool_use" if script.tool_calls else "stop_sequence" if script.stop_sequence else "end_turn"
    return reason, script.stop_sequence if reason == "stop_sequence" else None


def _usage(script: ClaudeScript, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": script.prompt_tokens,
        "cache_creation_input_tokens": script.cache_creation_tokens,
        "cache_read_input_tokens": script.cached_tokens,
        "cache_creation": {"ephemeral_5m_input_tokens": script.cache_creation_tokens, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _message(script: ClaudeScript, payload: dict[str, Any], blocks: list[_Block]) -> dict[str, Any]:
    reason, sequence = _stop(script)
    return {
        "id": random_id("msg_01"),
        "type": "message",
        "role": "assistant",
        "model": script.model or payload["model"],
        "content": [b.final for b in blocks],
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": _usage(script, script.completion_tokens),
    }


def _stream_events(script: ClaudeScript, payload: dict[str, Any], blocks: list[_Block]) -> list[tuple[str, Any]]:
    start = _message(script, payload, [])
    start.update(stop_reason=None, stop_sequence=None, usage=_usage(script, 1))
    events: list[tuple[str, Any]] = [("message_start", {"type": "message_start", "message": start})]
    if script.ping:
        events.append(("ping", {"type": "ping"}))
    for index, block in enumerate(blocks):
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block.start})
        )
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            for delta in block.deltas
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    reason, sequence = _stop(script)
    usage: dict[str, Any] = {"output_tokens": script.completion_tokens}
    if script.full_delta_usage:
        full = _usage(script, script.completion_tokens)
        usage = {k: full[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")} | usage
    events.append(
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": usage},
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _sse(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
