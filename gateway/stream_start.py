"""Whether a 2xx stream opens with an error: the first event of an upstream's SSE answer, read before
anything reaches the client (``streaming.bootstrap-retries``, providers spec §14.3 step 4).

Upstreams that have already answered 200 report a failure as an event: OpenAI-compatible services and
Gemini send ``data: {"error": {...}}``, Anthropic ``event: error`` with ``{"type": "error", "error":
{...}}``, the Responses API ``{"type": "error", ...}`` or ``response.failed`` (§7.5). The status comes
from the error itself (``status_code``, ``status``, a numeric ``code``), else from its code or type
(§7.5's table, shared with the Responses dialect).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.dialects.openai_responses_stream import error_status


def opening_error(first: bytes) -> tuple[int, bytes] | None:
    """(status, ``{"error": ...}`` JSON) when the first event of a stream is an error, else None."""
    data = _first_data(first)
    if data is None:
        return None
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if isinstance(event, list) and event:  # Gemini without alt=sse: a JSON array
        event = event[0]
    if not isinstance(event, dict):
        return None
    error = _error_of(event)
    if error is None:
        return None
    return _status(event, error), orjson.dumps({"error": error})


def _first_data(first: bytes) -> bytes | None:
    """The payload of the first ``data:`` line, or the whole piece when it is bare JSON (Gemini arrays)."""
    stripped = first.lstrip()
    if stripped.startswith((b"[", b"{")):
        return stripped
    for line in first.splitlines():
        if line.startswith(b"data:"):
            return line[5:].strip()
    return None


def _error_of(event: dict[str, Any]) -> dict[str, Any] | None:
    kind = event.get("type")
    if kind == "response.failed":
        response = event.get("response")
        error = response.get("error") if isinstance(response, dict) else None
        return error if isinstance(error, dict) else {"message": "the upstream response failed"}
    error = event.get("error")
    if isinstance(error, dict):
        return error
    if isinstance(error, str):
        return {"message": error}
    if kind == "error":
        return {k: v for k, v in event.items() if k != "type"}
    return None


def _status(event: dict[str, Any], error: dict[str, Any]) -> int:
    """A numeric ``code`` (Google) or the event's ``status``, else what an in-stream Codex error's
    status, code or type stands for, as the Responses dialect reads it (§7.5); 502 when nothing says."""
    for value in (error.get("code"), event.get("status")):
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value < 600:
            return value
    return error_status(error)
