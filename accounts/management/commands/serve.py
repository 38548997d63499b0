"""``manage.py serve``: the production server command behind ``make run`` and the container.

uvicorn (uvloop event loop, httptools parser, the websockets library) by default; Daphne with ``SERVER=daphne``.
Both serve the same ASGI application, HTTP and WebSocket alike. uvicorn is the default because it
relays about a third more requests per second than Daphne for the same CPU (bench/README.md: 534
against 397 req/s at 8 concurrent clients, 1.48 against 1.94 CPU seconds per 1,000 requests), and
its accept backlog (2,048) does not turn a burst of new connections into connect retries the way
Daphne's (50) does. The request log already records every request, so no access log is written
unless ``ACCESS_LOG=true``. ``WORKERS`` (uvicorn only) runs several processes on one port: give
them ``REDIS_URL`` so that limits and cool-downs are shared.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

SERVERS = ("uvicorn", "daphne")
APPLICATION = "gateway.asgi:application"


def server_argv(server: str, host: str, port: int, *, access_log: bool = False, workers: int = 1) -> list[str]:
    """The command line that serves the gateway with ``server``."""
    if server == "daphne":
        argv = [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), "--proxy-headers"]
        argv += ["--access-log", "-"] if access_log else ["-v", "0"]
        return [*argv, APPLICATION]
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        APPLICATION,
        "--host",
        host,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--ws",
        "websockets-sansio",
        "--lifespan",
        "off",  # the ASGI router serves http and websocket only
        "--proxy-headers",
        "--timeout-keep-alive",
        "75",  # longer than the usual load balancer idle timeout (60 s), so the balancer closes first
        "--backlog",
        "2048",
    ]
    if workers > 1:
        argv += ["--workers", str(workers)]
    return argv if access_log else [*argv, "--no-access-log"]


class Command(BaseCommand):
    help = "Serve HTTP and WebSocket on HOST:PORT with uvicorn (default) or Daphne (SERVER=daphne)."
    requires_system_checks: list[str] = []  # migrate and bootstrap have just run them (make run)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--server", choices=SERVERS, default=os.environ.get("SERVER", "uvicorn") or "uvicorn")
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8317")))
        parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")))
        parser.add_argument(
            "--access-log",
            action="store_true",
            default=os.environ.get("ACCESS_LOG", "").lower() in ("1", "true", "yes", "on"),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        argv = server_argv(
            options["server"],
            options["host"],
            options["port"],
            access_log=options["access_log"],
            workers=options["workers"],
        )
        self.stdout.write(f"CliRelay on http://{options['host']}:{options['port']} ({options['server']})")
        self.stdout.flush()
        os.execv(argv[0], argv)
