"""A fake OpenAI Responses upstream: the Codex backend (default) or the OpenAI API, over real HTTP.

``POST /responses`` (also ``/v1/responses`` or any path ending in ``/responses``) answers SSE as
``event: <type>\\ndata: <json>\\n\\n``, every payload with ``type`` and a ``sequence_number`` counting up
from 0: ``response.created``, ``response.in_progress``, a reasoning item (summary part and text deltas,
``output_item.done`` with the final ``encrypted_content``), a message item (content part, text deltas),
function-call items (argument deltas cut at arbitrary points, optionally interleaved between two calls),
then ``response.completed`` — or ``response.incomplete`` with ``incomplete_details.reason`` — carrying
the full ``output`` and ``usage``.

``script.mode``: ``"codex"`` always streams and, with ``script.strict``, rejects what the Codex backend
rejects (``{"detail": "Store must be set to false"}`` …); ``"openai"`` answers the Response JSON when
``stream`` is false. Auth: ``Authorization: Bearer <script.api_key>``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
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
)

ERROR_KINDS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}
CODEX_UNSUPPORTED = ("max_output_tokens", "max_completion_tokens", "temperature", "top_p")
INCOMPLETE_REASONS = ("max_output_tokens", "content_filter")


@dataclass
class ResponsesScript(Script):
    finish_reason: str | None = None  # None/"completed"; "max_output_tokens"/"content_filter" → incomplete
    mode: str = "codex"  # "codex": always SSE; "openai": JSON when stream is false
    strict: bool = True  # codex: 400 {"detail"} for stream/store/instructions/unsupported parameters
    interleave_tool_calls: bool = False  # argument deltas of the calls alternate
    args_fragment_size: int = 7  # characters per function_call_arguments.delta
    empty_completed_output: bool = False  # response.completed with "output": [] (Codex does this)
    failed_event: bool = False  # mid-stream failure as response.failed instead of an error event


class FakeResponsesUpstream(FakeUpstream):
    script_class = ResponsesScript
    name = "fake-responses-upstream"
    script: ResponsesScript

    # --- scripting -------------------------------------------------------------------------
    def fail(
        self,
        status: int,
        message: str | None = None,
        *,
        type_: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().fail(status, message, headers=headers)
        assert self.script.error is not None
        if type_ is not None:
            self.script.error["type"] = type_
        if code is not None:
            self.script.error["code"] = code

    def usage_limit(self, resets_in_seconds: int = 3600, *, plan_type: str = "plus") -> None:
        """429 ``usage_limit_reached`` with ``resets_at`` and ``resets_in_seconds``, as the Codex backend answers."""
        self.script.status = 429
        self.script.error = {
            "type": "usage_limit_reached",
            "message": "The usage limit has been reached",
            "plan_type": plan_type,
            "resets_at": int(time.time()) + resets_in_seconds,
            "resets_in_seconds": resets_in_seconds,
        }

    def fail_midstream(
        self, after_events: int, message: str | None = None, *, code: str = "server_error", failed_event: bool = False
    ) -> None:
        """An ``error`` (or ``response.failed``) event after ``after_events`` events; no terminal event follows."""
        self.script.error_after = after_events
        self.script.failed_event = failed_event
        self.script.midstream_error = {
            "code": code,
            "message": message or "An error occurred while processing your request.",
        }

    # --- provider hooks --------------------------------------------------------------------
    def route(self, recorded: RecordedRequest) -> Handler | None:
        if recorded.method == "POST" and recorded.path.endswith("/responses"):
            return self._responses
        return None

    def auth_error(self, script: Script, recorded: RecordedRequest) -> tuple[int, dict[str, Any]] | None:
        if script.api_key is None or recorded.bearer == script.api_key:
            return None
        if recorded.bearer is None:
            message = (
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return 401, self.error_body(
                {"message": message, "type": "invalid_request_error", "param": None, "code": None}
            )
        return 401, self.error_body(self.error_object(401, "Incorrect API key provided."))

    def error_object(self, status: int, message: str | None) -> dict[str, Any]:
        type_, code = ERROR_KINDS.get(status, ("server_error", None))
        text = message or ("The server had an error while processing your request." if status >= 500 else "Bad request")
        return {"message": text, "type": type_, "param": None, "code": code}

    def midstream_error_object(self, message: str | None) -> dict[str, Any]:
        return {"code": "server_error", "message": message or "An error occurred while processing your request."}

    def response_headers(self) -> dict[str, str]:
        return {"x-request-id": random_id("req_", 32)}

    # --- handlers --------------------------------------------------------------------------
    async def _responses(self, script: Script, recorded: RecordedRequest, send: Send) -> None:
        assert isinstance(script, ResponsesScript)
        payload = recorded.json
        if not isinstance(payload, dict) or not payload.get("model"):
            await self.send_error(send, 400, "Missing required parameter: 'model'.")
            return
        if script.mode == "codex":
            problem = _codex_problem(script, payload)
            if problem is not None:
                await self.send_json(send, 400, {"detail": problem})
                return
        elif script.known_models is not None and payload["model"] not in script.known_models:
            message = f"The model `{payload['model']}` does not exist or you do not have access to it."
            await self.send_error(send, 404, message)
            return
        events = _stream_events(script, payload)
        if script.mode == "openai" and not payload.get("stream"):
            await self.send_json(send, 200, events[-1]["response"], script.headers)
            recorded.completed = True
            return

        def error_frame(index: int) -> bytes:
            error = script.midstream_error or self.midstream_error_object(None)
            if script.failed_event:
                failed = _response(script, payload, events[0]["response"], "failed", [], None)
                failed["error"] = error
                return _sse({"type": "response.failed", "sequence_number": index, "response": failed})
            return _sse({"type": "error", "sequence_number": index, **error, "param": None})

        await self.stream(
            script,
            recorded,
            send,
            [_sse(e) for e in events],
            content_type="text/event-stream; charset=utf-8",
            error_frame=error_frame,
        )


def _codex_problem(script: ResponsesScript, payload: dict[str, Any]) -> str | None:
    if script.known_models is not None and payload["model"] not in script.known_models:
        return f"The '{payload['model']}' model is not supported when using Codex with a ChatGPT account."
    if not script.strict:
        return None
    if payload.get("stream") is not True:
        return "Stream must be set to true"
    if payload.get("store") is not False:
        return "Store must be set to false"
    if "instructions" not in payload:
        return "Instructions are required"
    for name in CODEX_UNSUPPORTED:
        if name in payload:
            return f"Unsupported parameter: {name}"
    return None


def _usage(script: Script) -> dict[str, Any]:
    return {
        "input_tokens": script.prompt_tokens,
        "input_tokens_details": {"cached_tokens": script.cached_tokens},
        "output_tokens": script.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": script.reasoning_tokens},
        "total_tokens": script.prompt_tokens + script.completion_tokens,
    }


def _response(
    script: Script,
    payload: dict[str, Any],
    identity: dict[str, Any] | None,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    """The Response object; ``identity`` carries the id and created_at of an earlier snapshot."""
    return {
        "id": identity["id"] if identity else random_id("resp_", 32),
        "object": "response",
        "created_at": identity["created_at"] if identity else int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": payload.get("instructions"),
        "max_output_tokens": payload.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": script.model or payload["model"],
        "output": output,
        "parallel_tool_calls": payload.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "prompt_cache_key": payload.get("prompt_cache_key"),
        "reasoning": payload.get("reasoning") or {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": payload.get("service_tier") or "auto",
        "store": payload.get("store", True),
        "temperature": 1.0,
        "text": payload.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": payload.get("tool_choice", "auto"),
        "tools": payload.get("tools", []),
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _stream_events(script: ResponsesScript, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Every event of a streamed response, numbered; the last one is the terminal event."""
    incomplete = script.finish_reason in INCOMPLETE_REASONS
    opening = _response(script, payload, None, "in_progress", [], None)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": opening},
        {"type": "response.in_progress", "response": opening},
    ]
    output: list[dict[str, Any]] = []
    if script.reasoning is not None:
        events += _reasoning_events(script, len(output), output)
    if joined(script.text):
        events += _message_events(script, len(output), output, incomplete)
    if script.tool_calls:
        events += _call_events(script, len(output), output)
    status = "incomplete" if incomplete else "completed"
    final = _response(script, payload, opening, status, [] if script.empty_completed_output else output, _usage(script))
    if incomplete:
        final["incomplete_details"] = {"reason": script.finish_reason}
    events.append({"type": f"response.{status}", "response": final})
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


def _reasoning_events(script: ResponsesScript, index: int, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    item_id = random_id("rs_", 32)
    full = joined(script.reasoning)
    where = {"item_id": item_id, "output_index": index, "summary_index": 0}
    # The added item carries a snapshot that differs from the final encrypted_content.
    added = {"id": item_id, "type": "reasoning", "encrypted_content": "gAAAAB-snapshot", "summary": []}
    done = {
        "id": item_id,
        "type": "reasoning",
        "encrypted_content": script.signature,
        "summary": [{"type": "summary_text", "text": full}],
    }
    output.append(done)
    return [
        {"type": "response.output_item.added", "output_index": index, "item": added},
        {"type": "response.reasoning_summary_part.added", **where, "part": {"type": "summary_text", "text": ""}},
        *(
            {"type": "response.reasoning_summary_text.delta", **where, "delta": p}
            for p in pieces(script.reasoning or "")
        ),
        {"type": "response.reasoning_summary_text.done", **where, "text": full},
        {"type": "response.reasoning_summary_part.done", **where, "part": {"type": "summary_text", "text": full}},
        {"type": "response.output_item.done", "output_index": index, "item": done},
    ]


def _message_events(
    script: ResponsesScript, index: int, output: list[dict[str, Any]], incomplete: bool
) -> list[dict[str, Any]]:
    item_id = random_id("msg_", 32)
    full = joined(script.text)
    where = {"item_id": item_id, "output_index": index, "content_index": 0}
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": full}
    added = {"id": item_id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
    done = {**added, "status": "incomplete" if incomplete else "completed", "content": [part]}
    output.append(done)
    return [
        {"type": "response.output_item.added", "output_index": index, "item": added},
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
        *({"type": "response.output_text.delta", **where, "delta": p, "logprobs": []} for p in pieces(script.text)),
        {"type": "response.output_text.done", **where, "text": full, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": index, "item": done},
    ]


def _call_events(script: ResponsesScript, first_index: int, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Function-call items; with ``interleave_tool_calls`` all are announced, then their deltas alternate."""
    per_call: list[tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]] = []
    for offset, call in enumerate(script.tool_calls):
        index = first_index + offset
        item_id = random_id("fc_", 32)
        arguments = json.dumps(call.arguments, separators=(",", ":"))
        added = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": call.id or random_id("call_"),
            "name": call.name,
        }
        done = {**added, "status": "completed", "arguments": arguments}
        output.append(done)
        where = {"item_id": item_id, "output_index": index}
        deltas = [
            {"type": "response.function_call_arguments.delta", **where, "delta": f}
            for f in fragments(arguments, script.args_fragment_size)
        ]
        closing = [
            {"type": "response.function_call_arguments.done", **where, "arguments": arguments},
            {"type": "response.output_item.done", "output_index": index, "item": done},
        ]
        per_call.append(
            ([{"type": "response.output_item.added", "output_index": index, "item": added}], deltas, closing)
        )
    if not script.interleave_tool_calls:
        return [event for opening, deltas, closing in per_call for event in opening + deltas + closing]
    events = [event for opening, _, _ in per_call for event in opening]
    longest = max(len(deltas) for _, deltas, _ in per_call)
    events += [deltas[i] for i in range(longest) for _, deltas, _ in per_call if i < len(deltas)]
    return events + [event for _, _, closing in per_call for event in closing]


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
