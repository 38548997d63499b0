"""The production server command, ``manage.py serve`` (``make run``), in its own process: uvicorn by
default and Daphne with ``--server daphne``.

It runs against its own temporary SQLite database, whatever ``DATABASE_URL`` the test run
uses (``REDIS_URL`` passes through), so it proves the command, migrations, the relay, the
admin and the WebSocket work together in a fresh install, under each server.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.fakes.server import free_port
from tests.gateway.conftest import CLIENT_MODEL, UPSTREAM_MODEL, UPSTREAM_SECRET

SETUP = """
import os
from accounts.models import ApiKey, Team
from channels_app.models import Channel
team = Team.objects.create(name="Acme", slug="acme")
key = ApiKey(team=team, name="alice-key")
raw = key.issue_key()
key.save()
Channel.objects.create(
    team=team,
    kind="openai-compatibility",
    name="fake-openai",
    base_url=os.environ["FAKE_UPSTREAM_URL"],
    secret=os.environ["FAKE_UPSTREAM_SECRET"],
    served_models=[{"name": os.environ["FAKE_UPSTREAM_MODEL"], "alias": os.environ["FAKE_CLIENT_MODEL"]}],
)
print("RAW_KEY=" + raw)
"""


@dataclass
class Served:
    server: str
    url: str
    raw_key: str
    database: Path


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(params=["uvicorn", "daphne"])
def served(request: pytest.FixtureRequest, tmp_path: Path, upstream: FakeOpenAIUpstream) -> Iterator[Served]:
    """``manage.py serve`` on a free port, with a team, a key and a channel to the fake."""
    server = request.param
    database = tmp_path / "clirelay.sqlite3"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
        "DATABASE_URL": f"sqlite:///{database}",
        "CLIRELAY_DATA_DIR": str(tmp_path / "data"),
        "FAKE_UPSTREAM_URL": upstream.base_url,
        "FAKE_UPSTREAM_SECRET": UPSTREAM_SECRET,
        "FAKE_UPSTREAM_MODEL": UPSTREAM_MODEL,
        "FAKE_CLIENT_MODEL": CLIENT_MODEL,
    }
    _manage(env, "migrate", "--noinput")
    output = _manage(env, "shell", "-c", SETUP)
    raw_key = next(line[len("RAW_KEY=") :] for line in output.splitlines() if line.startswith("RAW_KEY="))
    port = free_port()
    _manage(env, "collectstatic", "--noinput", "-v", "0")
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--server", server, "--host", "127.0.0.1", "--port", str(port)],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, process, tmp_path / "server.log")
        yield Served(server=server, url=url, raw_key=raw_key, database=database)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the server did not answer /healthz within {timeout}s:\n{log.read_text()}")


def _logged(database: Path, expected: int, timeout: float = 10.0) -> list[tuple[int, int, int, int]]:
    """(status, stream, input tokens, output tokens) of the server's usage rows, once ``expected`` are written."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT status_code, stream, input_tokens, output_tokens FROM usage_requestlog ORDER BY id"
            ).fetchall()
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_the_server_relays_a_completion_and_a_stream(served: Served, upstream: FakeOpenAIUpstream) -> None:
    upstream.script.api_key = UPSTREAM_SECRET
    upstream.reply(f"Served by {served.server}.", prompt_tokens=10, completion_tokens=4)
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.raw_key, max_retries=0, timeout=30.0)

    completion = client.chat.completions.create(model=CLIENT_MODEL, messages=[{"role": "user", "content": "Hi"}])
    chunks = list(
        client.chat.completions.create(model=CLIENT_MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True)
    )

    assert completion.choices[0].message.content == f"Served by {served.server}."
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"Served by {served.server}."
    assert [r.json["model"] for r in upstream.requests] == [UPSTREAM_MODEL, UPSTREAM_MODEL]
    assert all(served.raw_key not in r.authorization for r in upstream.requests)
    assert _logged(served.database, expected=2) == [(200, 0, 10, 4), (200, 1, 10, 4)]


def test_the_server_serves_the_admin_its_static_files_and_the_websockets(served: Served) -> None:
    login = httpx.get(f"{served.url}/admin/login/", timeout=10)
    css = httpx.get(f"{served.url}/static/admin/css/base.css", timeout=10)
    with connect(
        f"ws://{served.url.removeprefix('http://')}/v1/responses",
        additional_headers={"Authorization": "Bearer sk-not-a-key"},
    ) as ws:
        refusal = orjson.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)

    assert login.status_code == 200 and "csrfmiddlewaretoken" in login.text
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    assert (refusal["type"], refusal["status"]) == ("error", 401)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
