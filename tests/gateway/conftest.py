"""The gateway served for real on 127.0.0.1, a fake OpenAI upstream, and clients that reach them.

Both servers run under uvicorn in background threads of the test process, so they share its
test database; tests that use them need ``@pytest.mark.django_db(transaction=True)`` for
their rows to be visible across threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from pytest_django.fixtures import Settings

from channels_app import transport
from channels_app.models import Channel, ProviderKind, RuntimeSettings
from tests.conftest import Persona
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.fakes.server import ThreadedServer
from usage import recorder

UPSTREAM_SECRET = "sk-upstream-secret-123456"
UPSTREAM_MODEL = "gpt-upstream"
CLIENT_MODEL = "gpt-test"


class StatusWatch:
    """ASGI middleware around the gateway: every status it answered and the requests in flight."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.statuses: list[int] = []
        self.in_flight = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def watched(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.statuses.append(message["status"])
            await send(message)

        self.in_flight += 1
        try:
            await self.app(scope, receive, watched)
        finally:
            self.in_flight -= 1

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Return once no request is being served (their usage events are then queued)."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)


class Gateway:
    """The running gateway as a test sees it."""

    def __init__(self, url: str, watch: StatusWatch) -> None:
        self.url = url
        self.watch = watch

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Settings) -> None:
    """Persona users are created per test; the default hasher spends about a second on each."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def fake_upstream_server() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def upstream(fake_upstream_server: FakeOpenAIUpstream) -> Iterator[FakeOpenAIUpstream]:
    """The fake OpenAI upstream with the default script and no recorded requests."""
    fake_upstream_server.reset()
    yield fake_upstream_server
    fake_upstream_server.reset()


@pytest.fixture(scope="session")
def gateway_server() -> Iterator[Gateway]:
    from gateway.asgi import application

    watch = StatusWatch(application)
    server = ThreadedServer(watch, name="gateway").start()
    yield Gateway(server.url, watch)
    server.stop()


@pytest.fixture
def gateway(gateway_server: Gateway, upstream: FakeOpenAIUpstream) -> Iterator[Gateway]:
    """The gateway; afterwards it is idle, its usage rows are written, and it never answered 500.

    A failed upstream is not waited for (``max_retry_interval`` 0) so that a test of one refusal
    sees it at once; the failover tests set their own retry settings.
    """
    RuntimeSettings.objects.update_or_create(pk=1, defaults={"max_retry_interval": 0})
    first = len(gateway_server.watch.statuses)
    yield gateway_server
    upstream.reset()  # let go of held upstream handlers so the requests behind them finish
    gateway_server.watch.wait_idle()
    # Rows of this test must reach the database before it is emptied for the next one.
    assert recorder.flush(), "usage rows were still queued at the end of the test"
    answered = gateway_server.watch.statuses[first:]
    assert 500 not in answered, f"the gateway answered 500 (statuses: {answered})"


@pytest.fixture
def channel(alice: Persona, upstream: FakeOpenAIUpstream) -> Channel:
    """alice's team's OpenAI-compatible channel, pointing at the fake upstream.

    The fake then accepts only the channel's secret, as a real provider would.
    """
    upstream.script.api_key = UPSTREAM_SECRET
    return Channel.objects.create(
        team=alice.team,
        kind=ProviderKind.OPENAI_COMPATIBILITY,
        name="fake-openai",
        base_url=upstream.base_url,
        secret=UPSTREAM_SECRET,
        served_models=[{"name": UPSTREAM_MODEL, "alias": CLIENT_MODEL}],
    )


@pytest.fixture
def sdk_for(gateway: Gateway) -> Callable[..., openai.OpenAI]:
    """An official OpenAI SDK client for a raw key, talking to the gateway."""

    def make(raw_key: str, timeout: float = 30.0) -> openai.OpenAI:
        return openai.OpenAI(base_url=gateway.v1, api_key=raw_key, max_retries=0, timeout=timeout)

    return make


@pytest.fixture
def openai_client(sdk_for: Callable[..., openai.OpenAI], alice: Persona, channel: Channel) -> openai.OpenAI:
    """alice's SDK client, with her team's channel in place."""
    return sdk_for(alice.raw_key)


@pytest.fixture
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    """A plain HTTP client for what the SDK will not send (raw bodies, no key, early hang-ups)."""
    with httpx.Client(base_url=gateway.url, timeout=30.0) as client:
        yield client


@pytest.fixture
def short_read_timeout(settings: Settings) -> Iterator[float]:
    """Upstream reads time out after half a second (clients are rebuilt to pick it up)."""
    settings.CLIRELAY_UPSTREAM_READ_TIMEOUT = 0.5
    transport.reset()
    yield 0.5
    transport.reset()  # the next session is built with the restored setting


class WebSocketServer(ThreadedServer):
    """``ThreadedServer`` with uvicorn's WebSocket protocol switched on (it serves plain HTTP by default)."""

    def __init__(self, app: Any, *, name: str) -> None:
        super().__init__(app, name=name)
        self._server.config.ws = "websockets-sansio"


@pytest.fixture(scope="module")
def ws_gateway() -> Iterator[str]:
    """The gateway's ``ws://`` root (one server per test module)."""
    from gateway.asgi import application

    server = WebSocketServer(application, name="gateway-ws").start()
    yield server.url.replace("http://", "ws://")
    server.stop()
