"""Fake image upstreams over real HTTP, for ``POST /v1/images/generations``.

* ``FakeGeminiImageUpstream`` is the fake Gemini API (``tests.fakes.gemini_upstream``) that also draws:
  a ``…:generateContent`` request whose ``generationConfig.responseModalities`` includes ``IMAGE`` is
  answered as Gemini image models answer, ``candidates[0].content.parts`` with ``script.caption`` as a
  text part (when set) and ``script.images`` ``inlineData`` parts (``script.image``, ``script.image_mime``),
  ``usageMetadata`` with IMAGE candidate tokens. ``script.block_reason`` answers with
  ``promptFeedback.blockReason`` and no candidate; ``script.finish_reason`` (``IMAGE_SAFETY`` …) with a
  candidate that has no parts. Everything else (text requests, errors, auth) is the plain fake.
* ``FakeOpenAIImagesUpstream`` speaks OpenAI's Images API: ``POST /v1/images/generations`` answers
  ``{"created", "data": [n × {"b64_json"} or {"url"}], "output_format", "usage"}`` (``script.always_b64``:
  b64_json whatever ``response_format`` says, as gpt-image-1 does); errors are
  ``{"error": {"message", "type", "param", "code"}}``; auth is ``Authorization: Bearer``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from tests.fakes.gemini_upstream import FakeGeminiUpstream, GeminiScript
from tests.fakes.upstream import FakeUpstream, Handler, RecordedRequest, Script, Send, random_id

# A 1×1 PNG.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
_MODEL_PATH = re.compile(r"/models/([^/:]+):generateContent$")


@dataclass
class GeminiImageScript(GeminiScript):
    image: str = PNG_B64  # base64 of every image part
    image_mime: str = "image/png"
    images: int = 1  # image parts per answer
    caption: str = ""  # a text part before the images
    block_reason: str | None = None  # promptFeedback.blockReason, no candidates
    completion_tokens: int = 1290  # what Gemini bills per image


class FakeGeminiImageUpstream(FakeGeminiUpstream):
    script_class = GeminiImageScript
    name = "fake-gemini-image-upstream"
    script: GeminiImageScript

    def route(self, recorded: RecordedRequest) -> Handler | None:
        handler = super().route(recorded)
        if handler is not None and _MODEL_PATH.search(recorded.path) and _wants_image(recorded.json):
            return self._draw
        return handler

    async def _draw(self, script: Script, recorded: RecordedRequest, send: Send) -> None:
        assert isinstance(script, GeminiImageScript)
        match = _MODEL_PATH.search(recorded.path)
        model = match.group(1) if match else ""
        if script.known_models is not None and model not in script.known_models:
            await self.send_error(send, 404, f"models/{model} is not found for API version v1beta.")
            return
        await self.send_json(send, 200, _image_answer(script, model), script.headers)
        recorded.completed = True


def _wants_image(body: Any) -> bool:
    config = body.get("generationConfig") if isinstance(body, dict) else None
    modalities = config.get("responseModalities") if isinstance(config, dict) else None
    return isinstance(modalities, list) and "IMAGE" in modalities


def _image_answer(script: GeminiImageScript, model: str) -> dict[str, Any]:
    prompt = {"promptTokenCount": script.prompt_tokens, "totalTokenCount": script.prompt_tokens}
    answer: dict[str, Any] = {"modelVersion": script.model or model, "responseId": random_id("", 22)}
    if script.block_reason is not None:
        return {"promptFeedback": {"blockReason": script.block_reason}, "usageMetadata": prompt, **answer}
    candidate: dict[str, Any] = {"finishReason": script.finish_reason or "STOP", "index": 0}
    if script.finish_reason in (None, "STOP"):
        parts: list[dict[str, Any]] = [{"text": script.caption}] if script.caption else []
        parts += [{"inlineData": {"mimeType": script.image_mime, "data": script.image}}] * script.images
        candidate["content"] = {"role": "model", "parts": parts}
    drawn = script.completion_tokens if script.images else 0
    usage = {
        "promptTokenCount": script.prompt_tokens,
        "candidatesTokenCount": drawn,
        "totalTokenCount": script.prompt_tokens + drawn,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": script.prompt_tokens}],
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": drawn}],
    }
    return {"candidates": [candidate], "usageMetadata": usage, **answer}


# --- OpenAI Images API ------------------------------------------------------------------------

_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


@dataclass
class ImagesScript(Script):
    image: str = PNG_B64
    output_format: str = "png"
    prompt_tokens: int = 9
    completion_tokens: int = 272  # gpt-image-1 bills image output tokens
    always_b64: bool = False  # answer b64_json whatever response_format says, as gpt-image-1 does


class FakeOpenAIImagesUpstream(FakeUpstream):
    script_class = ImagesScript
    name = "fake-openai-images-upstream"
    script: ImagesScript

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def route(self, recorded: RecordedRequest) -> Handler | None:
        if recorded.method == "POST" and recorded.path == "/v1/images/generations":
            return self._generate
        return None

    def auth_error(self, script: Script, recorded: RecordedRequest) -> tuple[int, dict[str, Any]] | None:
        if script.api_key is None or recorded.bearer == script.api_key:
            return None
        return 401, self.error_body(self.error_object(401, "Incorrect API key provided."))

    def error_object(self, status: int, message: str | None) -> dict[str, Any]:
        type_, code = _OPENAI_ERRORS.get(status, ("server_error", None))
        return {
            "message": message or "The server had an error processing your request.",
            "type": type_,
            "param": None,
            "code": code,
        }

    def midstream_error_object(self, message: str | None) -> dict[str, Any]:
        return self.error_object(500, message)

    async def _generate(self, script: Script, recorded: RecordedRequest, send: Send) -> None:
        assert isinstance(script, ImagesScript)
        payload = recorded.json
        if not isinstance(payload, dict) or not payload.get("prompt"):
            await self.send_error(send, 400, "Missing required parameter: 'prompt'.")
            return
        if script.known_models is not None and payload.get("model") not in script.known_models:
            await self.send_error(send, 404, f"The model '{payload.get('model')}' does not exist.")
            return
        count = int(payload.get("n") or 1)
        if payload.get("response_format") == "url" and not script.always_b64:
            data = [{"url": f"{self.url}/files/img-{i}.{script.output_format}"} for i in range(count)]
        else:
            data = [{"b64_json": script.image} for _ in range(count)]
        usage = {
            "input_tokens": script.prompt_tokens,
            "input_tokens_details": {"text_tokens": script.prompt_tokens, "image_tokens": 0},
            "output_tokens": script.completion_tokens * count,
            "total_tokens": script.prompt_tokens + script.completion_tokens * count,
        }
        answer = {"created": int(time.time()), "data": data, "output_format": script.output_format, "usage": usage}
        await self.send_json(send, 200, answer, script.headers)
        recorded.completed = True
