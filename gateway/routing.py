"""WebSocket routes of the relay: the Responses API for Codex CLI (API-key auth, no session)."""

from django.urls import re_path

from gateway.responses_ws import ResponsesSocket

websocket_urlpatterns = [
    re_path(r"^v1/responses/?$", ResponsesSocket.as_asgi()),
    # /<group>/v1/responses: the turns are confined to the group, as on the HTTP endpoints.
    re_path(r"^(?P<namespace>[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+)*)/v1/responses/?$", ResponsesSocket.as_asgi()),
    re_path(r"^backend-api/codex/responses/?$", ResponsesSocket.as_asgi()),
]
