"""The one NinjaAPI: the client-compatible endpoints under ``/v1`` and ``/v1beta``, plus ``/healthz``.

Views are thin: each hands the request to ``gateway.relay`` (images: ``gateway.images``) and
returns what it builds, a ``StreamingHttpResponse`` for streams (ninja's own SSE type cannot write
``[DONE]`` or ``event:`` lines).
"""

from __future__ import annotations

from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from ninja import NinjaAPI, Router

from accounts.access import KeySnapshot, aresolve_api_key
from channels_app import scheduler
from gateway import images, relay
from gateway.client_dialects import ANTHROPIC, GEMINI, OPENAI_CHAT, OPENAI_RESPONSES, ClientDialect
from gateway.dialects import gemini
from gateway.errors import RelayError
from usage.recorder import recorder

api = NinjaAPI(title="CliRelay", urls_namespace="relay", docs_url=None, openapi_url=None)
v1 = Router(tags=["OpenAI and Anthropic compatible"])
v1beta = Router(tags=["Gemini compatible"])
_GEMINI_ACTIONS = ("generateContent", "streamGenerateContent", "countTokens")


def _json(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json")


@api.get("/healthz", include_in_schema=False)
async def healthz(request: HttpRequest) -> HttpResponse:
    """200 when the database answers, 503 when it does not; with the usage recorder's backlog (rows
    accepted and not yet written: steady under load, growing when the database cannot keep up)."""
    usage = {"backlog": recorder.backlog(), "written": recorder.written, "failures": recorder.failures}
    try:
        await sync_to_async(_ping_database)()
    except Exception as exc:  # any database failure means unhealthy, whatever its type
        return _json({"status": "error", "database": str(exc), "recorder": usage}, status=503)
    return _json({"status": "ok", "database": "ok", "recorder": usage})


def _ping_database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()


@v1.post("/chat/completions")
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    return await relay.handle(request, OPENAI_CHAT)


@v1.post("/responses")
async def responses(request: HttpRequest) -> HttpResponseBase:
    return await relay.handle(request, OPENAI_RESPONSES)


@v1.post("/images/generations")
async def images_generations(request: HttpRequest) -> HttpResponseBase:
    return await images.generate(request)


@v1.post("/messages")
async def messages(request: HttpRequest) -> HttpResponseBase:
    return await relay.handle(request, ANTHROPIC)


@v1.post("/messages/count_tokens")
async def messages_count_tokens(request: HttpRequest) -> HttpResponseBase:
    return await relay.count_tokens(request, ANTHROPIC)


async def _visible_models(request: HttpRequest, client: ClientDialect) -> list[tuple[str, str]] | HttpResponse:
    """(model, owner) pairs the key may call, or the authentication error in ``client``'s envelope."""
    try:
        key: KeySnapshot = await aresolve_api_key(request)
        table = await scheduler.table()
        scope = relay.route_scope(table, key, relay.namespace_of(request))
    except RelayError as err:
        return client.error_response(err)
    return [(name, channel.kind) for name, channel in scheduler.models_for(table, key, group=scope)]


def _wants_anthropic_list(request: HttpRequest) -> bool:
    return "anthropic-version" in request.headers or request.headers.get("user-agent", "").startswith("claude-cli")


@v1.get("/models")
async def list_models(request: HttpRequest) -> HttpResponse:
    """The models this key may call: OpenAI's list shape, or Anthropic's for Claude clients."""
    anthropic = _wants_anthropic_list(request)
    models = await _visible_models(request, ANTHROPIC if anthropic else OPENAI_CHAT)
    if isinstance(models, HttpResponse):
        return models
    if not anthropic:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": owner} for name, owner in models]
        return _json({"object": "list", "data": data})
    entries = sorted(
        (
            {"id": name, "type": "model", "display_name": name, "created_at": "1970-01-01T00:00:00Z", "owned_by": owner}
            for name, owner in models
        ),
        key=lambda e: (e["display_name"], e["id"]),
    )
    return _json(
        {
            "data": entries,
            "has_more": False,
            "first_id": entries[0]["id"] if entries else None,
            "last_id": entries[-1]["id"] if entries else None,
        }
    )


@v1.get("/models/{path:model}")
async def retrieve_model(request: HttpRequest, model: str) -> HttpResponse:
    """One model in OpenAI's shape (404 when the key may not call it)."""
    models = await _visible_models(request, OPENAI_CHAT)
    if isinstance(models, HttpResponse):
        return models
    for name, owner in models:
        if name.lower() == model.lower():
            return _json({"id": name, "object": "model", "created": 0, "owned_by": owner})
    return OPENAI_CHAT.error_response(RelayError(404, f"The model '{model}' does not exist", code="model_not_found"))


async def _gemini_action(request: HttpRequest, model_action: str) -> HttpResponseBase:
    model, _, action = model_action.rpartition(":")
    if not model or action not in _GEMINI_ACTIONS:
        err = RelayError(
            404, f"unknown method '{model_action}'; expected <model>:{'|'.join(_GEMINI_ACTIONS)}", code="not_found"
        )
        return GEMINI.error_response(err)
    if action == "countTokens":
        return await relay.count_tokens(request, GEMINI, path_model=model)
    return await relay.handle(request, GEMINI, path_model=model, action=action)


# The POST actions share their path (and so ninja's view) with the GET of one model: under two
# spellings of the path, the first registered would answer 405 to the other method.
@v1beta.post("/models/{path:model}")
async def gemini_generate(request: HttpRequest, model: str) -> HttpResponseBase:
    """``POST /v1beta/models/{model}:generateContent|streamGenerateContent|countTokens``."""
    return await _gemini_action(request, model)


@v1.post("/models/{path:model}")
async def gemini_generate_v1(request: HttpRequest, model: str) -> HttpResponseBase:
    """The same Gemini actions under ``/v1/models/…``, a path some Gemini clients use."""
    return await _gemini_action(request, model)


@v1beta.get("/models")
async def gemini_models(request: HttpRequest) -> HttpResponse:
    models = await _visible_models(request, GEMINI)
    if isinstance(models, HttpResponse):
        return models
    return _json(gemini.models_list(name for name, _ in models))


@v1beta.get("/models/{path:model}")
async def gemini_model(request: HttpRequest, model: str) -> HttpResponse:
    models = await _visible_models(request, GEMINI)
    if isinstance(models, HttpResponse):
        return models
    wanted = gemini.strip_models_prefix(model).lower()
    for name, _ in models:
        if name.lower() == wanted:
            return _json(gemini.model_entry(name))
    return GEMINI.error_response(RelayError(404, f"models/{wanted} is not found", code="model_not_found"))


api.add_router("/v1", v1)
api.add_router("/v1beta", v1beta)
