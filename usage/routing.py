"""WebSocket routes."""

from django.urls import path

from usage.consumers import LiveStatsConsumer

websocket_urlpatterns = [
    path("ws/live/", LiveStatsConsumer.as_asgi()),
]
