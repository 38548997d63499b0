"""``POST /v1/images/generations``: OpenAI's Images API over the channels that can draw.

The model picks the channel as in ``relay.handle`` (key, allowed models, scheduler). An
``openai-compatibility`` channel gets the client's body at ``{base}/images/generations`` with only the
model rewritten; a Gemini channel (``gemini-api-key``, ``vertex-api-key``) gets one ``generateContent``
call per image with ``responseModalities: ["IMAGE"]`` and the size as an aspect ratio, and its
``inlineData`` parts come back as ``b64_json`` (or a ``data:`` URL: the gateway hosts no files).
Other families cannot draw: 400. Each upstream call is one attempt in the usage log, the image
data left out of the stored bodies.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse

from accounts import limits
from accounts.access import KeySnapshot, aresolve_api_key
from channels_app import cooldowns, scheduler
from channels_app.executors.base import Executor
from channels_app.executors.registry import executor_for
from gateway import ir
from gateway.client_dialects import OPENAI_CHAT
from gateway.dialects import BadRequest, gemini
from gateway.errors import RelayError
from gateway.pumps import Attempt, UpstreamFailed, open_call, read_all
from gateway.relay import is_limit, json_object, namespace_of, read_raw, route_scope

DEFAULT_MODEL = "gpt-image-2"
MAX_IMAGES = 4  # management spec §12: n is 1–4
RESPONSE_FORMATS = ("b64_json", "url")
GEMINI_ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
_SIZE = re.compile(r"(\d+)x(\d+)")
_BLOB_KEYS = frozenset(("b64_json", "data"))
_LOGGED_BLOB_CHARS = 256


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """A client's images request, checked."""

    payload: dict[str, Any]
    model: str
    prompt: str
    n: int
    response_format: str  # "" when the client left it to the upstream
    size: str


# --- pure: request and answer shapes --------------------------------------------------------


def parse_request(payload: dict[str, Any]) -> ImageRequest:
    """Check an images body, raising ``BadRequest`` with the reason."""
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest("'prompt' is required and must be a non-empty string")
    model = payload.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' must be a non-empty string")
    n = payload.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_IMAGES:
        raise BadRequest(f"'n' must be an integer from 1 to {MAX_IMAGES}")
    response_format = payload.get("response_format") or ""
    if response_format and response_format not in RESPONSE_FORMATS:
        raise BadRequest("'response_format' must be 'b64_json' or 'url'")
    size = payload.get("size") or ""
    if not isinstance(size, str):
        raise BadRequest("'size' must be a string such as 1024x1024")
    if payload.get("stream"):
        raise BadRequest("streaming image generation is not supported; send 'stream': false")
    return ImageRequest(payload, model.strip(), prompt, n, str(response_format), size)


def aspect_ratio(size: str) -> str | None:
    """The Gemini ``aspectRatio`` nearest to an OpenAI ``size`` (``WxH``, a ratio, or auto/empty: None)."""
    if not size or size == "auto":
        return None
    if size in GEMINI_ASPECT_RATIOS:
        return size
    match = _SIZE.fullmatch(size)
    if match is None or not int(match.group(1)) or not int(match.group(2)):
        raise BadRequest("'size' must be WIDTHxHEIGHT (such as 1024x1024), an aspect ratio such as 16:9, or auto")
    wanted = math.log(int(match.group(1)) / int(match.group(2)))
    return min(GEMINI_ASPECT_RATIOS, key=lambda r: abs(math.log(_ratio(r)) - wanted))


def _ratio(text: str) -> float:
    width, _, height = text.partition(":")
    return int(width) / int(height)


def gemini_body(req: ImageRequest, upstream_model: str) -> bytes:
    """The ``generateContent`` body that asks a Gemini image model for one picture of the prompt."""
    config: dict[str, Any] = {"responseModalities": ["IMAGE"]}
    ratio = aspect_ratio(req.size)
    if ratio is not None:
        config["imageConfig"] = {"aspectRatio": ratio}
    prompt = ir.Request(
        model=upstream_model,
        messages=[ir.Message("user", [ir.Text(req.prompt)])],
        extensions={"gemini": {"generationConfig": config}},
    )
    return orjson.dumps(gemini.render_request(prompt))


def images_answer(images: list[ir.Image], response_format: str, usage: ir.Usage) -> dict[str, Any]:
    """OpenAI's ``ImagesResponse``: ``b64_json`` by default, ``url`` as a ``data:`` URL."""
    if response_format == "url":
        data = [{"url": f"data:{image.media_type or 'image/png'};base64,{image.data}"} for image in images]
    else:
        data = [{"b64_json": image.data} for image in images]
    answer: dict[str, Any] = {"created": int(time.time()), "data": data}
    formats = {(image.media_type or "image/png").partition("/")[2] for image in images}
    if len(formats) == 1:
        answer["output_format"] = formats.pop()
    answer["usage"] = {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"text_tokens": usage.input_tokens, "image_tokens": 0},
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total,
    }
    return answer


def urls_from_b64(answer: dict[str, Any]) -> dict[str, Any]:
    """An upstream ``ImagesResponse`` whose ``b64_json`` items become ``data:`` URLs (client asked for url)."""
    mime = f"image/{answer.get('output_format') or 'png'}"
    data = answer.get("data")
    if isinstance(data, list):
        answer["data"] = [
            {**{k: v for k, v in item.items() if k != "b64_json"}, "url": f"data:{mime};base64,{item['b64_json']}"}
            if isinstance(item, dict) and isinstance(item.get("b64_json"), str) and not item.get("url")
            else item
            for item in data
        ]
    return answer


def usage_of(answer: dict[str, Any]) -> ir.Usage | None:
    """The token counts of an OpenAI ``ImagesResponse``, when it reports them."""
    usage = answer.get("usage")
    if not isinstance(usage, dict):
        return None
    counts = {k: usage.get(k) for k in ("input_tokens", "output_tokens", "total_tokens")}
    return ir.Usage(**{k: v for k, v in counts.items() if isinstance(v, int)})


def without_image_data(value: Any) -> Any:
    """``value`` with long base64 blobs replaced by their length, for the stored response body."""
    if isinstance(value, dict):
        return {
            k: f"<{len(v)} base64 characters>"
            if k in _BLOB_KEYS and isinstance(v, str) and len(v) > _LOGGED_BLOB_CHARS
            else without_image_data(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [without_image_data(v) for v in value]
    return value


# --- the endpoint -----------------------------------------------------------------------------


async def generate(request: HttpRequest) -> HttpResponse:
    """Serve one ``POST /v1/images/generations``; errors in OpenAI's envelope."""
    attempt = Attempt(dialect=OPENAI_CHAT.name, path=request.path, namespace=namespace_of(request))
    try:
        attempt.key = key = await aresolve_api_key(request)
        req = parse_request(json_object(read_raw(request, attempt)))
        attempt.model = req.model
        executor = await _route(attempt, key, req.model)
        if executor.family == "gemini":
            return await _draw_with_gemini(attempt, executor, req)
        return await _forward(attempt, executor, req)
    except UpstreamFailed as err:
        if attempt.route is not None:
            await cooldowns.amark_failure(attempt.route, err.error)
        return OPENAI_CHAT.error_response(err)
    except RelayError as err:
        if attempt.key is not None and err.status not in (401, 403, 404) and not is_limit(err):
            attempt.finish(err.status, err.code, err.message)
        return OPENAI_CHAT.error_response(err)
    except BadRequest as exc:
        return OPENAI_CHAT.error_response(RelayError(400, str(exc), code="invalid_request"))
    finally:
        attempt.release()


async def _route(attempt: Attempt, key: KeySnapshot, model: str) -> Executor:
    """The one channel that draws (images are single-pick: each call is billed), limits taken last."""
    if not key.allows_model(model):
        raise RelayError(403, f"model '{model}' is not allowed for this API key", code="model_not_allowed")
    table = await scheduler.table()
    scope = route_scope(table, key, attempt.namespace)
    attempt.group_id = scope.group_id if scope else None
    attempt.route = route = scheduler.choose(table, key, model, group=scope)
    executor = executor_for(route.channel.kind)
    assert executor is not None  # the routing table holds only kinds with an executor
    attempt.admission = await limits.admit(key, str(attempt.request_id))
    return executor


async def _forward(attempt: Attempt, executor: Executor, req: ImageRequest) -> HttpResponse:
    """An OpenAI-compatible upstream draws: the client's body, model rewritten, and its answer back."""
    route = attempt.route
    assert route is not None
    call = executor.generate_images(route, orjson.dumps({**req.payload, "model": route.upstream_model}))
    if call is None:
        raise RelayError(
            400,
            f"model '{req.model}' is served by a {route.channel.kind} channel, which cannot generate images; "
            "image generation needs an openai-compatibility channel or a Gemini image model "
            "(gemini-api-key or vertex-api-key channel)",
            code="model_not_supported",
        )
    response = await open_call(attempt, call)
    raw = await read_all(attempt, response)
    try:
        answer = orjson.loads(raw)
        if not isinstance(answer, dict):
            raise ValueError("not an object")
    except ValueError:
        message = "upstream answered with a body that is not an images response"
        raise RelayError(502, message, code="upstream_error") from None
    attempt.usage = usage_of(answer)
    attempt.captured = [orjson.dumps(without_image_data(answer))]
    attempt.finish(response.status_code)
    if req.response_format == "url":
        raw = orjson.dumps(urls_from_b64(answer))
    return HttpResponse(raw, status=response.status_code, content_type="application/json")


async def _draw_with_gemini(first: Attempt, executor: Executor, req: ImageRequest) -> HttpResponse:
    """A Gemini image model draws: one call per image, run together, each its own attempt."""
    route = first.route
    assert route is not None
    body = gemini_body(req, route.upstream_model)
    attempts = [first] + [_sibling(first, number) for number in range(2, req.n + 1)]
    results = await asyncio.gather(*(_gemini_image(a, executor, body) for a in attempts), return_exceptions=True)
    drawn: list[tuple[ir.Image, ir.Usage]] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        drawn.append(result)
    usage = ir.Usage()
    for _, one in drawn:
        usage = ir.Usage(
            input_tokens=usage.input_tokens + one.input_tokens,
            output_tokens=usage.output_tokens + one.output_tokens,
            total_tokens=usage.total + one.total,
        )
    answer = images_answer([image for image, _ in drawn], req.response_format, usage)
    return HttpResponse(orjson.dumps(answer), content_type="application/json")


def _sibling(first: Attempt, number: int) -> Attempt:
    """Another upstream call of the same client request (same request id, key, route and body)."""
    return Attempt(
        dialect=first.dialect,
        path=first.path,
        number=number,
        group_id=first.group_id,
        request_id=first.request_id,
        key=first.key,
        route=first.route,
        model=first.model,
        request_body=first.request_body,
    )


async def _gemini_image(attempt: Attempt, executor: Executor, body: bytes) -> tuple[ir.Image, ir.Usage]:
    """One ``generateContent`` call and the first image it answered with."""
    route = attempt.route
    assert route is not None
    try:
        response = await open_call(attempt, executor.build(route, body, False))
        raw = await read_all(attempt, response)
    except asyncio.CancelledError:
        attempt.finish(499, "client_disconnected", "client closed the connection")
        raise
    try:
        payload = orjson.loads(raw)
        answer = gemini.parse_response(payload)
    except (ValueError, TypeError, KeyError, AttributeError):
        attempt.finish(502, "upstream_error", "upstream answer is not a GenerateContentResponse")
        raise RelayError(502, "upstream answered with a body that is not valid JSON", code="upstream_error") from None
    attempt.usage = answer.usage
    attempt.captured = [orjson.dumps(without_image_data(payload))]
    images = [part for part in answer.parts if isinstance(part, ir.Image) and part.data]
    if images:
        attempt.finish(200)
        return images[0], answer.usage
    if answer.finish.reason == "content_filter":
        message = f"the upstream refused to draw this prompt ({answer.finish.native or 'safety'})"
        attempt.finish(400, "content_policy_violation", message)
        raise RelayError(400, message, code="content_policy_violation")
    said = f": {answer.text.strip()[:500]}" if answer.text.strip() else ""
    message = f"the upstream answered without an image{said}"
    attempt.finish(502, "upstream_error", message)
    raise RelayError(502, message, code="upstream_error")
