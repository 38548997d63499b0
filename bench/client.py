"""A minimal asyncio HTTP/1.1 client for the streaming measurements of ``bench/compare.py``.

Raw sockets, keep-alive, ``Content-Length``, chunked and read-to-close bodies, and per response the
moment the first ``data:`` line arrived and the longest silence between two reads. Its own cost is the
same for every target, so it cancels out of the "added over direct" columns. It also serves as the load
generator when ``wrk`` is missing (``--loadgen python``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

STREAM_ENDS = (b"data: [DONE]", b"event: message_stop", b'"type":"message_stop"', b'"type": "message_stop"')


@dataclass(frozen=True)
class Request:
    """One prepared POST: where to send it and its bytes on the wire."""

    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 80

    def wire(self) -> bytes:
        parts = urlsplit(self.url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(self.body)}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass
class Response:
    """What one request gave back, with its timing."""

    status: int
    body: bytes
    started: float
    finished: float = 0.0
    first_data: float | None = None  # perf_counter when the first ``data:`` line arrived
    max_gap: float = 0.0  # longest silence between two reads of the body after the first byte
    reusable: bool = True

    @property
    def ttft(self) -> float | None:
        return None if self.first_data is None else self.first_data - self.started

    @property
    def complete_stream(self) -> bool:
        return self.status == 200 and any(end in self.body for end in STREAM_ENDS)


@dataclass
class BodyReader:
    """Collects body bytes, noting the first ``data:`` and the gaps between reads."""

    response: Response
    parts: list[bytes] = field(default_factory=list)
    last: float = 0.0

    def feed(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.last:
            self.response.max_gap = max(self.response.max_gap, now - self.last)
        self.last = now
        self.parts.append(data)
        if self.response.first_data is None and b"data:" in data:
            self.response.first_data = now

    def close(self) -> None:
        self.response.body = b"".join(self.parts)
        self.response.finished = time.perf_counter()


class Connection:
    """One keep-alive connection; reopened when the server closed it."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.wire = request.wire()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self) -> Response:
        """Send the request once; a kept-alive connection the server had closed is retried fresh."""
        reused = self.writer is not None
        response = await self.attempt()
        if reused and response.status == 0:
            response = await self.attempt()
        return response

    async def attempt(self) -> Response:
        if self.writer is None:
            host, port = self.request.host_port
            self.reader, self.writer = await asyncio.open_connection(host, port, limit=1 << 20)
        assert self.reader is not None
        response = Response(status=0, body=b"", started=time.perf_counter())
        try:
            self.writer.write(self.wire)
            await read_response(self.reader, response)
        except (asyncio.IncompleteReadError, ConnectionError):
            response.reusable = False
        if not response.reusable:
            await self.close()
        return response

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def read_response(reader: asyncio.StreamReader, response: Response) -> None:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    response.status = int(status_line.split(" ")[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    body = BodyReader(response)
    if headers.get("transfer-encoding") == "chunked":
        await read_chunked(reader, body)
    elif "content-length" in headers:
        body.feed(await reader.readexactly(int(headers["content-length"])))
    else:
        while data := await reader.read(65536):
            body.feed(data)
        response.reusable = False
    body.close()
    if headers.get("connection") == "close":
        response.reusable = False


async def read_chunked(reader: asyncio.StreamReader, body: BodyReader) -> None:
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return
        body.feed((await reader.readexactly(size + 2))[:-2])


async def one(request: Request, wait_s: float = 30.0) -> Response:
    """Send one request on a fresh connection."""
    connection = Connection(request)
    try:
        return await asyncio.wait_for(connection.send(), wait_s)
    finally:
        await connection.close()


# --- measurements ---------------------------------------------------------------------------


@dataclass
class TtftResult:
    """Time to the first ``data:`` line, sequential streams on one connection."""

    samples_ms: list[float]
    errors: int

    @property
    def p50_ms(self) -> float | None:
        return statistics.median(self.samples_ms) if self.samples_ms else None


async def measure_ttft(request: Request, count: int, wait_s: float = 30.0) -> TtftResult:
    connection = Connection(request)
    samples: list[float] = []
    errors = 0
    try:
        for _ in range(count):
            try:
                response = await asyncio.wait_for(connection.send(), wait_s)
            except (TimeoutError, OSError):
                errors += 1
                await connection.close()
                continue
            if response.complete_stream and response.ttft is not None:
                samples.append(response.ttft * 1000)
            else:
                errors += 1
    finally:
        await connection.close()
    return TtftResult(samples, errors)


@dataclass
class SlowStreamsResult:
    """``n`` concurrent slow streams: how many finished, how many stalled, the worst gap."""

    streams: int
    completed: int
    stalled: int
    failed: int
    max_gap_s: float
    max_ttft_s: float
    wall_s: float


async def measure_slow_streams(request: Request, n: int, stall_after: float, wait_s: float) -> SlowStreamsResult:
    """Hold ``n`` streams at once; a stream stalls when a gap exceeds ``stall_after`` or it never ends."""
    started = time.perf_counter()
    results = await asyncio.gather(*(one(request, wait_s) for _ in range(n)), return_exceptions=True)
    responses = [r for r in results if isinstance(r, Response)]
    completed = [r for r in responses if r.complete_stream]
    stalled = sum(1 for r in completed if r.max_gap > stall_after)
    return SlowStreamsResult(
        streams=n,
        completed=len(completed),
        stalled=stalled + (n - len(completed)),
        failed=n - len(completed),
        max_gap_s=max((r.max_gap for r in completed), default=0.0),
        max_ttft_s=max((r.ttft or 0.0 for r in completed), default=0.0),
        wall_s=time.perf_counter() - started,
    )


@dataclass
class LoadResult:
    """What ``wrk`` reports, as the Python load generator measured it."""

    requests: int
    errors: int
    duration_s: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def percentile(self, p: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def load(request: Request, concurrency: int, duration: float) -> LoadResult:
    """Closed-loop load: ``concurrency`` connections sending back to back for ``duration`` seconds."""
    deadline = time.perf_counter() + duration
    result = LoadResult(0, 0, duration, [])

    async def worker() -> None:
        connection = Connection(request)
        try:
            while time.perf_counter() < deadline:
                try:
                    response = await asyncio.wait_for(connection.send(), 30)
                except (TimeoutError, OSError):
                    result.errors += 1
                    await connection.close()
                    continue
                result.requests += 1
                result.latencies_ms.append((response.finished - response.started) * 1000)
                if response.status != 200:
                    result.errors += 1
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


def smoke_problem(response: Response, stream: bool) -> str | None:
    """None when ``response`` is a correct answer; else what is wrong with it."""
    if response.status != 200:
        return f"HTTP {response.status}: {response.body[:200]!r}"
    if stream:
        return None if response.complete_stream else f"stream did not end: {response.body[-200:]!r}"
    try:
        json.loads(response.body)
    except ValueError:
        return f"not JSON: {response.body[:200]!r}"
    return None
