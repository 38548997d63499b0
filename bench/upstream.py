"""A fast fake OpenAI-compatible upstream for ``bench/compare.py``: raw HTTP/1.1 on asyncio, stdlib only.

    python bench/upstream.py --port 18000            # serves until interrupted

``POST …/chat/completions`` answers in OpenAI's wire format: a ``chat.completion`` with ``usage``, or,
with ``"stream": true``, chunked SSE (a role chunk, a few content chunks, the finish chunk, the usage chunk
when ``stream_options.include_usage`` asks for it, then ``data: [DONE]``). The first chunk is written at
once; the next ones follow ``--stream-interval`` apart, or ``--slow-interval`` apart and ``--slow-chunks``
of them when the model name contains ``slow`` (the 1,000-slow-streams test). ``GET …/models`` lists the
models. Connections are kept alive and ``TCP_NODELAY`` is set, so the fake adds no Nagle delay; answers to
non-streaming requests are built once per model and cached, so one process serves ~10k req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

WORDS = ("Hello", " from", " the", " bench", " upstream", ".")
PROMPT_TOKENS, COMPLETION_TOKENS = 12, 7


@dataclass(frozen=True)
class StreamPlan:
    """How streams are paced."""

    interval: float = 0.0  # seconds between chunks after the first
    slow_interval: float = 0.5
    slow_chunks: int = 10


def usage() -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }


def completion_body(model: str) -> bytes:
    message = {"role": "assistant", "content": "".join(WORDS)}
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage(),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def sse_chunk(model: str, delta: dict[str, Any], finish: str | None = None, with_usage: bool = False) -> bytes:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [] if with_usage else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    chunk["usage"] = usage() if with_usage else None
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def stream_events(model: str, n_text: int, include_usage: bool) -> list[bytes]:
    """Every SSE event of one streamed answer, ``n_text`` content chunks, in order."""
    words = [WORDS[i % len(WORDS)] for i in range(n_text)]
    events = [sse_chunk(model, {"role": "assistant", "content": words[0]})]
    events += [sse_chunk(model, {"content": word}) for word in words[1:]]
    events.append(sse_chunk(model, {}, finish="stop"))
    if include_usage:
        events.append(sse_chunk(model, {}, with_usage=True))
    events.append(b"data: [DONE]\n\n")
    return events


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def response_head(status: bytes, content_type: bytes, length: int | None, close: bool) -> bytes:
    framing = b"transfer-encoding: chunked" if length is None else b"content-length: %d" % length
    connection = b"\r\nconnection: close" if close else b""
    return b"HTTP/1.1 %s\r\ncontent-type: %s\r\n%s%s\r\n\r\n" % (status, content_type, framing, connection)


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: parse requests off the buffer, answer them in order."""

    def __init__(self, plan: StreamPlan, cache: dict[str, bytes]) -> None:
        self.plan = plan
        self.cache = cache
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a stream is being written; later requests wait in the buffer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.drain_requests()

    def drain_requests(self) -> None:
        while not self.busy and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = content_length(head)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.answer(head, body)

    def answer(self, head: str, body: bytes) -> None:
        assert self.transport is not None
        request_line, _, headers = head.partition("\r\n")
        method, path = [*request_line.split(" "), "", ""][:2]
        close = "connection: close" in headers.lower()
        if method == "POST" and path.rstrip("/").endswith("/chat/completions"):
            self.chat(body, close)
        elif method == "GET" and path.rstrip("/").endswith("/models"):
            self.send(b"200 OK", models_body(), close)
        else:
            self.send(b"404 Not Found", b'{"error":{"message":"not found","type":"invalid_request_error"}}', close)

    def chat(self, body: bytes, close: bool) -> None:
        try:
            request = json.loads(body)
        except ValueError:
            self.send(b"400 Bad Request", b'{"error":{"message":"bad json","type":"invalid_request_error"}}', close)
            return
        model = str(request.get("model", "bench"))
        if request.get("stream"):
            include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
            self.busy = True
            asyncio.get_running_loop().create_task(self.stream(model, include_usage, close))
            return
        answer = self.cache.get(model)
        if answer is None:
            answer = self.cache[model] = completion_body(model)
        self.send(b"200 OK", answer, close)

    def send(self, status: bytes, body: bytes, close: bool) -> None:
        assert self.transport is not None
        self.transport.write(response_head(status, b"application/json", len(body), close) + body)
        if close:
            self.transport.close()

    async def stream(self, model: str, include_usage: bool, close: bool) -> None:
        slow = "slow" in model
        interval = self.plan.slow_interval if slow else self.plan.interval
        events = stream_events(model, self.plan.slow_chunks if slow else len(WORDS), include_usage)
        frames = [response_head(b"200 OK", b"text/event-stream", None, close) + http_chunk(events[0])]
        frames += [http_chunk(event) for event in events[1:]]
        frames[-1] += b"0\r\n\r\n"
        try:
            for index, frame in enumerate(frames):
                if index and interval:
                    await asyncio.sleep(interval)
                if self.transport is None:  # the client went away
                    return
                self.transport.write(frame)
            if close and self.transport is not None:
                self.transport.close()
        finally:
            self.busy = False
        self.drain_requests()


def content_length(head: str) -> int:
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(value.strip())
    return 0


def models_body() -> bytes:
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "bench"} for name in ("bench-fast", "bench-slow")]
    return json.dumps({"object": "list", "data": data}).encode()


async def serve(host: str, port: int, plan: StreamPlan) -> None:
    cache: dict[str, bytes] = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(plan, cache), host, port, backlog=4096, reuse_address=True
    )
    print(f"fake upstream on http://{host}:{port}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--stream-interval", type=float, default=0.005, help="seconds between stream chunks")
    parser.add_argument("--slow-interval", type=float, default=0.5, help="seconds between chunks of *slow* models")
    parser.add_argument("--slow-chunks", type=int, default=10, help="content chunks of a *slow* stream")
    args = parser.parse_args()
    plan = StreamPlan(args.stream_interval, args.slow_interval, args.slow_chunks)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, plan))


if __name__ == "__main__":
    main()
