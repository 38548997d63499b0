"""Closed-loop HTTP load for ``bench/compare.py``: ``wrk`` with a generated Lua script, or the Python client.

``wrk`` (C, one thread, pinned to the load core) loads a Python gateway far more than it loads itself.
Its Lua ``done`` hook prints one JSON line with the request count, the errors (non-2xx included) and
exact latency percentiles, so nothing is scraped from its human-readable report.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from client import Request, load
from peers import CACHE, pinned

LUA = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests": %.0f, "duration_us": %.0f, "errors": %.0f, "status_errors": %.0f, ' ..
    '"p50_us": %.1f, "p99_us": %.1f}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout + e.status, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class LoadRun:
    """One closed-loop run at one concurrency."""

    requests: int
    errors: int
    duration_s: float
    p50_ms: float | None
    p99_ms: float | None

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def lua_script(name: str, request: Request) -> Path:
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in request.headers.items())
    path = CACHE / f"wrk-{name}.lua"
    path.write_text(LUA.format(body=request.body.decode(), headers=headers))
    return path


def run_wrk(wrk: str, name: str, request: Request, concurrency: int, duration: float, core: int | None) -> LoadRun:
    script = lua_script(name, request)
    command = [wrk, "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", "10s", "-s", str(script), request.url]
    done = subprocess.run(pinned(command, core), capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {done.stdout[-300:]} {done.stderr[-300:]}")
    data = json.loads(line.removeprefix("BENCH "))
    ok = data["requests"] > 0
    return LoadRun(
        requests=int(data["requests"]),
        errors=int(data["errors"]),
        duration_s=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000 if ok else None,
        p99_ms=data["p99_us"] / 1000 if ok else None,
    )


def run_python(request: Request, concurrency: int, duration: float) -> LoadRun:
    result = asyncio.run(load(request, concurrency, duration))
    return LoadRun(result.requests, result.errors, result.duration_s, result.percentile(50), result.percentile(99))


def run_load(
    wrk: str | None, name: str, request: Request, concurrency: int, duration: float, core: int | None
) -> LoadRun:
    """``wrk`` when there is one, else the Python client in this process (already on the load core)."""
    if wrk:
        return run_wrk(wrk, name, request, concurrency, duration, core)
    return run_python(request, concurrency, duration)
