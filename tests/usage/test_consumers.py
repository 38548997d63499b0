"""Live stats over WebSocket, authenticated by the admin session."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from gateway.asgi import application
from usage.models import RequestLog


def _session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def _log(team, status: int, tokens: int) -> None:
    RequestLog.objects.create(
        time=timezone.now(), team=team, client_dialect="openai-chat", status_code=status, total_tokens=tokens
    )


@pytest.mark.django_db(transaction=True)
async def test_a_team_admin_gets_their_teams_last_minute_and_nothing_of_other_teams(alice, charlie) -> None:
    await sync_to_async(_log)(alice.team, 200, 30)
    await sync_to_async(_log)(alice.team, 502, 0)
    await sync_to_async(_log)(charlie.team, 200, 1000)
    cookie = await sync_to_async(_session_cookie)(alice.user)
    ws = WebsocketCommunicator(application, "/ws/live/", headers=[(b"cookie", cookie), (b"host", b"testserver")])
    connected, _ = await ws.connect()
    assert connected
    stats = await ws.receive_json_from(timeout=5)
    assert stats["type"] == "stats"
    assert (stats["requests"], stats["failed"], stats["tokens"]) == (2, 1, 30)
    await ws.send_json_to({"interval": 1})
    again = await ws.receive_json_from(timeout=5)
    assert again["requests"] == 2
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_an_anonymous_socket_is_refused() -> None:
    ws = WebsocketCommunicator(application, "/ws/live/", headers=[(b"host", b"testserver")])
    connected, code = await ws.connect()
    assert not connected and code == 4401
