"""A fake Gemini API upstream (generativelanguage, API key) over real HTTP, and optionally Code Assist.

* ``POST /v1beta/models/{model}:generateContent`` → one ``GenerateContentResponse``.
* ``…:streamGenerateContent?alt=sse`` → ``data: <GenerateContentResponse>\\r\\n\\r\\n`` per chunk, no
  terminator (Google ends SSE lines with CRLF; ``script.sse_separator`` changes it); without ``alt`` →
  one JSON array streamed element by element.
* ``…:countTokens`` (``contents`` or ``generateContentRequest``) → ``{"totalTokens", "promptTokensDetails"}``.
* ``code_assist=True`` serves the Cloud Code Assist variant instead: ``POST /v1internal:generateContent``,
  ``/v1internal:streamGenerateContent?alt=sse``, ``/v1internal:countTokens``; requests are
  ``{"project","model","request":{…}}`` and every answer is ``{"response": …, "traceId": …}``.

Chunks carry ``candidates[].content.parts`` (thought parts with ``thought: true``, text pieces, complete
``functionCall`` parts with a ``thoughtSignature`` on the first), ``modelVersion``, ``responseId``;
the last one carries ``finishReason`` and full ``usageMetadata`` (zero counts omitted, as proto3 JSON does).
Auth: ``x-goog-api-key``, ``?key=`` or ``Authorization: Bearer`` (Code Assist: Bearer only).
Errors: ``{"error":{"code","message","status"(,"details")}}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from tests.fakes.upstream import (
    FakeUpstream,
    Handler,
    RecordedRequest,
    Script,
    Send,
    joined,
    pieces,
    random_id,
    word_count,
)

RPC_STATUS = {
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
DEFAULT_MESSAGES = {
    400: "Request contains an invalid argument.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
}
_ACTION_PATH = re.compile(r"^/(v1beta|v1)/models/([^/:]+):(generateContent|streamGenerateContent|countTokens)$")
_CODE_ASSIST_PATH = re.compile(r"^/v1internal:(generateContent|streamGenerateContent|countTokens)$")


@dataclass
class GeminiScript(Script):
    finish_reason: str | None = None  # finishReason; None: STOP
    sse_separator: str = "\r\n\r\n"
    partial_usage: bool = True  # intermediate chunks carry usageMetadata with the prompt count only


def rpc_status(status: int) -> str:
    return RPC_STATUS.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")


class FakeGeminiUpstream(FakeUpstream):
    script_class = GeminiScript
    name = "fake-gemini-upstream"
    script: GeminiScript

    def __init__(self, *, api_key: str | None = None, code_assist: bool = False) -> None:
        super().__init__(api_key=api_key)
        self.code_assist = code_assist

    # --- scripting -------------------------------------------------------------------------
    def fail(
        self,
        status: int,
        message: str | None = None,
        *,
        rpc_status: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().fail(status, message, headers=headers)
        assert self.script.error is not None
        if rpc_status is not None:
            self.script.error["status"] = rpc_status
        if details is not None:
            self.script.error["details"] = details

    def fail_midstream(self, after_events: int, message: str | None = None, *, status: int = 503) -> None:
        """A ``{"error":{…}}`` chunk (SSE event or array element) after ``after_events`` chunks."""
        self.script.error_after = after_events
        self.script.midstream_error = self.error_object(status, message)

    def rate_limit(self, retry_delay: str = "17s", message: str | None = None) -> None:
        """429 RESOURCE_EXHAUSTED with QuotaFailure, Help and RetryInfo details (Code Assist: ErrorInfo too)."""
        details: list[dict[str, Any]] = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
                        "quotaValue": "10",
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
        ]
        if self.code_assist:
            details.insert(
                0,
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "RATE_LIMIT_EXCEEDED",
                    "domain": "cloudcode-pa.googleapis.com",
                    "metadata": {"quotaResetDelay": retry_delay, "model": "gemini-2.5-pro"},
                },
            )
        message = message or (
            "You exceeded your current quota, please check your plan and billing details. For more information on "
            "this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
        )
        self.fail(429, message, details=details)

    def unavailable(self, message: str | None = None) -> None:
        self.fail(503, message)

    # --- provider hooks --------------------------------------------------------------------
    def route(self, recorded: RecordedRequest) -> Handler | None:
        if recorded.method != "POST":
            return None
        if self.code_assist:
            match = _CODE_ASSIST_PATH.match(recorded.path)
            return partial(self._action, match.group(1), None) if match else None
        match = _ACTION_PATH.match(recorded.path)
        return partial(self._action, match.group(3), match.group(2)) if match else None

    def auth_error(self, script: Script, recorded: RecordedRequest) -> tuple[int, dict[str, Any]] | None:
        if script.api_key is None:
            return None
        if self.code_assist:
            if recorded.bearer == script.api_key:
                return None
            message = (
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
                "other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
            )
            return 401, self.error_body(self.error_object(401, message))
        given = recorded.headers.get("x-goog-api-key") or recorded.query.get("key") or recorded.bearer
        if not given:
            message = (
                "Method doesn't allow unregistered callers (callers without established identity). Please use API "
                "Key or other form of API consumer identity to call this API."
            )
            return 403, self.error_body(self.error_object(403, message))
        if given != script.api_key:
            error = self.error_object(400, "API key not valid. Please pass a valid API key.")
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": "API key not valid. Please pass a valid API key.",
                },
            ]
            return 400, self.error_body(error)
        return None

    def error_object(self, status: int, message: str | None) -> dict[str, Any]:
        text = message or DEFAULT_MESSAGES.get(status, "An internal error has occurred.")
        return {"code": status, "message": text, "status": rpc_status(status)}

    def midstream_error_object(self, message: str | None) -> dict[str, Any]:
        return self.error_object(503, message)

    # --- handlers --------------------------------------------------------------------------
    async def _action(
        self, action: str, model: str | None, script: Script, recorded: RecordedRequest, send: Send
    ) -> None:
        assert isinstance(script, GeminiScript)
        payload = recorded.json
        if not isinstance(payload, dict):
            await self.send_error(send, 400, "Invalid JSON payload received. Unexpected end of string.")
            return
        if self.code_assist:
            model = str(payload.get("model") or "")
            payload = payload.get("request") if isinstance(payload.get("request"), dict) else {}
        if action == "countTokens":
            await self._count_tokens(script, recorded, payload, send)
            return
        if not payload.get("contents"):
            await self.send_error(send, 400, "* GenerateContentRequest.contents: contents is not specified\n")
            return
        assert model is not None
        if script.known_models is not None and model not in script.known_models:
            message = (
                f"models/{model} is not found for API version v1beta, or is not supported for {action}. "
                "Call ListModels to see the list of available models and their supported methods."
            )
            await self.send_error(send, 404, message)
            return
        chunks = [self._wrap(c) for c in _chunks(script, model)]
        if action == "generateContent":
            await self.send_json(send, 200, self._wrap(_whole(script, model)), script.headers)
            recorded.completed = True
        elif recorded.query.get("alt") == "sse":
            await self._stream_sse(script, recorded, send, chunks)
        else:
            await self._stream_array(script, recorded, send, chunks)

    def _wrap(self, response: dict[str, Any]) -> dict[str, Any]:
        if not self.code_assist:
            return response
        return {"response": response, "traceId": random_id("", 16).lower()}

    async def _stream_sse(self, script: GeminiScript, recorded: RecordedRequest, send: Send, chunks: list[Any]) -> None:
        separator = script.sse_separator.encode()

        def frame(payload: Any) -> bytes:
            return b"data: " + orjson.dumps(payload) + separator

        await self.stream(
            script,
            recorded,
            send,
            [frame(c) for c in chunks],
            content_type="text/event-stream",
            error_frame=lambda _index: frame({"error": script.midstream_error}),
        )

    async def _stream_array(
        self, script: GeminiScript, recorded: RecordedRequest, send: Send, chunks: list[Any]
    ) -> None:
        # Google streams a pretty-printed array: "[{…}\n,\r\n{…}\n]".
        def element(index: int, payload: Any) -> bytes:
            return (b"[" if index == 0 else b"\n,\r\n") + orjson.dumps(payload, option=orjson.OPT_INDENT_2)

        await self.stream(
            script,
            recorded,
            send,
            [element(i, c) for i, c in enumerate(chunks)],
            content_type="application/json; charset=UTF-8",
            error_frame=lambda index: element(index, {"error": script.midstream_error}) + b"\n]",
            closing=b"\n]",
        )

    async def _count_tokens(
        self, script: Script, recorded: RecordedRequest, payload: dict[str, Any], send: Send
    ) -> None:
        inner = payload.get("generateContentRequest")
        if isinstance(inner, dict):
            if not inner.get("model"):
                await self.send_error(
                    send, 400, "* CountTokensRequest.generate_content_request.model: model is required\n"
                )
                return
            counted = word_count([inner.get("contents"), inner.get("systemInstruction"), inner.get("tools")])
        elif "contents" in payload:
            counted = word_count(payload["contents"])
        else:
            await self.send_error(send, 400, "* CountTokensRequest: contents or generate_content_request is required\n")
            return
        tokens = script.count_tokens if script.count_tokens is not None else max(counted, 1)
        body: dict[str, Any] = {"totalTokens": tokens}
        if not self.code_assist:
            body["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": tokens}]
        await self.send_json(send, 200, body, script.headers)
        recorded.completed = True


def _usage(script: GeminiScript, *, final: bool) -> dict[str, Any]:
    details = [{"modality": "TEXT", "tokenCount": script.prompt_tokens}]
    if not final:
        return {
            "promptTokenCount": script.prompt_tokens,
            "totalTokenCount": script.prompt_tokens,
            "promptTokensDetails": details,
        }
    counts = {
        "promptTokenCount": script.prompt_tokens,
        "candidatesTokenCount": script.completion_tokens,
        "totalTokenCount": script.prompt_tokens + script.completion_tokens + script.reasoning_tokens,
        "cachedContentTokenCount": script.cached_tokens,
        "thoughtsTokenCount": script.reasoning_tokens,
    }
    usage: dict[str, Any] = {k: v for k, v in counts.items() if v}
    usage["promptTokensDetails"] = details
    if script.cached_tokens:
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": script.cached_tokens}]
    return usage


def _call_parts(script: GeminiScript) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for call in script.tool_calls:
        function_call: dict[str, Any] = {"name": call.name, "args": call.arguments}
        if call.id is not None:
            function_call["id"] = call.id
        parts.append({"functionCall": function_call})
    if parts:
        parts[0]["thoughtSignature"] = script.signature
    return parts


def _response(script: GeminiScript, model: str, response_id: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "candidates": [{"content": {"parts": parts, "role": "model"}, "index": 0}],
        "usageMetadata": _usage(script, final=False),
        "modelVersion": script.model or model,
        "responseId": response_id,
    }


def _finish(script: GeminiScript, response: dict[str, Any]) -> dict[str, Any]:
    candidate = response["candidates"][0]
    candidate["finishReason"] = script.finish_reason or "STOP"
    if candidate["finishReason"] == "SAFETY":
        candidate["safetyRatings"] = [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
        ]
    response["usageMetadata"] = _usage(script, final=True)
    return response


def _chunks(script: GeminiScript, model: str) -> list[dict[str, Any]]:
    """Every streamed GenerateContentResponse: thought pieces, text pieces, the calls, then the finish."""
    response_id = random_id("", 22)
    groups: list[list[dict[str, Any]]] = []
    if script.reasoning is not None:
        groups += [[{"text": p, "thought": True}] for p in pieces(script.reasoning)]
    if joined(script.text):
        groups += [[{"text": p}] for p in pieces(script.text)]
    if script.tool_calls:
        groups.append(_call_parts(script))
    elif script.reasoning is not None:
        # Thinking models close a text answer with an empty part carrying the signature.
        groups.append([{"text": "", "thoughtSignature": script.signature}])
    if not groups:
        groups.append([{"text": ""}])
    chunks = [_response(script, model, response_id, parts) for parts in groups]
    if not script.partial_usage:
        for chunk in chunks:
            del chunk["usageMetadata"]
    _finish(script, chunks[-1])
    return chunks


def _whole(script: GeminiScript, model: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if script.reasoning is not None:
        parts.append({"text": joined(script.reasoning), "thought": True})
    if joined(script.text):
        parts.append({"text": joined(script.text)})
    if script.tool_calls:
        parts += _call_parts(script)
    elif script.reasoning is not None:
        parts.append({"text": "", "thoughtSignature": script.signature})
    return _finish(script, _response(script, model, random_id("", 22), parts or [{"text": ""}]))
