"""OpenAI Chat Completions: request facts, usage, errors and the SSE stream.

Pure: no Django, no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.dialects import BadRequest
from gateway.ir import Usage

__all__ = ["BadRequest"]


def read_body(body: bytes) -> dict[str, Any]:
    """Decode and check a Chat Completions body, raising ``BadRequest`` with a clear reason."""
    if not body:
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' is required and must be a non-empty string")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array")
    if "stream" in payload and not isinstance(payload["stream"], bool):
        raise BadRequest("'stream' must be a boolean")
    return payload


def wants_stream_usage(payload: dict[str, Any]) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def upstream_body(payload: dict[str, Any], raw: bytes, upstream_model: str) -> bytes:
    """The body to send upstream: the client's own bytes unless something must change.

    The model is rewritten when the client used an alias, and streaming requests always ask
    for the usage chunk so every stream can be accounted.
    """
    stream = bool(payload.get("stream"))
    if payload["model"] == upstream_model and (not stream or wants_stream_usage(payload)):
        return raw
    changed = dict(payload, model=upstream_model)
    if stream:
        options = payload.get("stream_options")
        changed["stream_options"] = dict(options if isinstance(options, dict) else {}, include_usage=True)
    return orjson.dumps(changed)


def usage_from(data: Any) -> Usage | None:
    """Normalised usage from a response or chunk's ``usage`` object (cached tokens counted once)."""
    if not isinstance(data, dict):
        return None
    prompt = int(data.get("prompt_tokens") or 0)
    completion = int(data.get("completion_tokens") or 0)
    prompt_details = data.get("prompt_tokens_details") or {}
    completion_details = data.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        cached_tokens=int(prompt_details.get("cached_tokens") or 0) if isinstance(prompt_details, dict) else 0,
        reasoning_tokens=(
            int(completion_details.get("reasoning_tokens") or 0) if isinstance(completion_details, dict) else 0
        ),
        total_tokens=int(data.get("total_tokens") or prompt + completion),
    )


def error_body(message: str, error_type: str, code: str | None) -> bytes:
    """OpenAI's error envelope."""
    return orjson.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}})


def stream_error_event(message: str, error_type: str, code: str | None) -> bytes:
    """An error inside an SSE stream, as OpenAI sends it (the SDKs raise ``APIError``)."""
    return b"data: " + error_body(message, error_type, code) + b"\n\n"


_INSPECT_MARKERS = (b'"usage":{', b'"usage": {', b'"error"')


def _split_events(data: bytes) -> tuple[bytes, bytes]:
    """Split ``data`` into complete SSE events and an unfinished tail."""
    lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
    cut = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
    return data[:cut], data[cut:]


class StreamRelay:
    """Passes an OpenAI SSE stream through while reading its usage.

    ``feed(chunk)`` returns the bytes to forward: whole events only, unchanged, except the
    trailing usage-only chunk, which is dropped when the client did not ask for it (CliRelay
    asks the upstream for it on every stream so the request can be accounted).
    """

    def __init__(self, client_wants_usage: bool) -> None:
        self.client_wants_usage = client_wants_usage
        self.usage: Usage | None = None
        self.upstream_error: dict[str, Any] | None = None
        self.saw_done = False
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._tail + chunk if self._tail else chunk
        whole, self._tail = _split_events(data)
        if not whole:
            return b""
        if b"[DONE]" in whole:
            self.saw_done = True
        # Only events carrying a usage object or an error need parsing; the rest pass as bytes.
        if not any(marker in whole for marker in _INSPECT_MARKERS):
            return whole
        return self._inspect(whole)

    def finish(self) -> bytes:
        """Whatever is left when the upstream closes (an event without its blank line)."""
        tail, self._tail = self._tail, b""
        if tail.strip():
            return self._inspect(tail + b"\n\n")
        return b""

    def _inspect(self, whole: bytes) -> bytes:
        kept: list[bytes] = []
        for event in whole.replace(b"\r\n", b"\n").split(b"\n\n"):
            if not event.strip():
                continue
            if not self._keep(event):
                continue
            kept.append(event + b"\n\n")
        return b"".join(kept)

    def _keep(self, event: bytes) -> bool:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            raw = line[5:].strip()
            if raw == b"[DONE]" or not raw.startswith(b"{"):
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj.get("error"), dict):
                self.upstream_error = obj["error"]
            usage = usage_from(obj.get("usage"))
            if usage is not None:
                self.usage = usage
                if not self.client_wants_usage and not obj.get("choices"):
                    return False
        return True
