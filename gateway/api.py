"""The one NinjaAPI: the client-compatible endpoints under ``/v1`` plus ``/healthz``.

Views are thin: each hands the request to ``gateway.relay`` and returns what it builds,
a ``StreamingHttpResponse`` for streams (ninja's own SSE type cannot write ``[DONE]``).
"""

from __future__ import annotations

import orjson
from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from ninja import NinjaAPI, Router

from accounts.access import aresolve_api_key
from channels_app import scheduler
from gateway import relay
from gateway.errors import RelayError

api = NinjaAPI(title="CliRelay", urls_namespace="relay", docs_url=None, openapi_url=None)
v1 = Router(tags=["OpenAI-compatible"])


@api.get("/healthz", include_in_schema=False)
async def healthz(request: HttpRequest) -> HttpResponse:
    """200 when the database answers, 503 when it does not."""
    try:
        await sync_to_async(_ping_database)()
    except Exception as exc:  # any database failure means unhealthy, whatever its type
        return HttpResponse(
            orjson.dumps({"status": "error", "database": str(exc)}), status=503, content_type="application/json"
        )
    return HttpResponse(b'{"status":"ok","database":"ok"}', content_type="application/json")


def _ping_database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()


@v1.post("/chat/completions")
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    return await relay.chat_completions(request)


@v1.get("/models")
async def list_models(request: HttpRequest) -> HttpResponse:
    """The models this key may call, in OpenAI's list shape."""
    try:
        key = await aresolve_api_key(request)
    except RelayError as err:
        return relay.error_response(err)
    models = scheduler.models_for(await scheduler.table(), key)
    data = [{"id": name, "object": "model", "created": 0, "owned_by": channel.kind} for name, channel in models]
    return HttpResponse(orjson.dumps({"object": "list", "data": data}), content_type="application/json")


api.add_router("/v1", v1)
