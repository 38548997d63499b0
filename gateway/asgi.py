"""ASGI entry point: HTTP goes to Django (the relay URLs through gateway.fastpath), WebSocket to Channels consumers.

The relay's sockets authenticate with an API key, never a cookie, so a cross-site page gains nothing
a browser would add for it and they skip the Origin check (Codex CLI sends no Origin); the staff
sockets, authenticated by the session cookie, keep it.
"""

import os
import sys

from django.core.asgi import get_asgi_application

# The usage recorder's thread shares the GIL with the event loop: hand it back every 0.5 ms rather
# than every 5 ms, so a batch insert never holds a relayed request up for long (p99 latency).
sys.setswitchinterval(0.0005)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import re_path  # noqa: E402

from gateway.fastpath import RelayFastPath  # noqa: E402
from gateway.routing import websocket_urlpatterns as relay_websocket_urlpatterns  # noqa: E402
from usage.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": RelayFastPath(django_asgi_app),
        "websocket": URLRouter(
            [
                *relay_websocket_urlpatterns,
                re_path(r"^", AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))),
            ]
        ),
    }
)
