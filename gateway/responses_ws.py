"""The Responses API over WebSocket on ``/v1/responses``, as newer Codex CLI versions speak it.

Providers spec §17.1–17.2. The client key comes from the handshake headers. Each client frame,
``response.create`` (the first must be one, naming the model) or ``response.append``, is one turn:
it is rebuilt into a whole stateless Responses request and run through the same path as a streamed
``POST /v1/responses`` (``relay.open_stream``), and each SSE ``data:`` JSON of the answer goes back
as one text frame. A ``"generate": false`` pre-warm is answered here without an upstream call.
Failures before the stream starts are one frame ``{"type": "error", "status", "error": {…}}``.

Turns run one at a time, in arrival order, in a task the socket cancels when the client leaves
(the turn's usage row then says 499).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import orjson
from channels.generic.websocket import AsyncWebsocketConsumer

from accounts.access import KeySnapshot, aresolve_raw_key, credential_from_scope
from gateway import relay
from gateway.client_dialects import OPENAI_RESPONSES, Incoming
from gateway.dialects import BadRequest
from gateway.errors import RelayError

log = logging.getLogger(__name__)

CREATE = "response.create"
APPEND = "response.append"
UNAUTHORIZED_CLOSE_CODE = 4401
_ECHOED_HEADERS = (b"x-codex-turn-state",)
_FINISHED = frozenset(("response.completed", "response.incomplete"))
_TERMINAL = _FINISHED | {"response.failed", "error"}


# --- pure: frames in, requests out -----------------------------------------------------------


class Conversation:
    """What one socket remembers between turns, so each turn can go to a stateless upstream (§17.2)."""

    def __init__(self) -> None:
        self.request: dict[str, Any] | None = None  # the last finished turn's whole request
        self.response_id = ""
        self.output: list[Any] = []

    def next_request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """The whole streamed Responses request ``frame`` stands for; ``BadRequest`` when there is none.

        A ``response.append``, or a ``response.create`` naming ``previous_response_id``, continues the
        last turn: its input is that turn's input, then its output items, then the new input. A
        ``response.create`` without it is a whole request of its own. ``model`` and ``instructions``
        not given are the previous turn's.
        """
        kind = frame.get("type")
        if kind not in (CREATE, APPEND):
            raise BadRequest(f"unsupported frame type {kind!r}: expected '{CREATE}' or '{APPEND}'")
        body = {k: v for k, v in frame.items() if k not in ("type", "generate")}
        previous = self.request
        if previous is None and kind == APPEND:
            raise BadRequest(f"the first frame must be '{CREATE}' naming the model")
        if kind == APPEND and "input" not in body:
            raise BadRequest(f"'{APPEND}' needs 'input'")
        body["input"] = input_items(body.get("input"))
        previous_id = body.pop("previous_response_id", None)
        if kind == APPEND or previous_id:
            body["input"] = self._history(str(previous_id or "")) + body["input"]
        if previous is not None:
            for field in ("model", "instructions"):
                if field not in body and field in previous:
                    body[field] = previous[field]
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            raise BadRequest("'model' is required and must be a non-empty string")
        body["stream"] = True
        return body

    def _history(self, previous_response_id: str) -> list[Any]:
        if self.request is None:
            raise BadRequest(
                f"'previous_response_id' {previous_response_id!r} names no response of this connection; "
                "send the whole conversation in 'input'"
            )
        if previous_response_id and self.response_id and previous_response_id != self.response_id:
            raise BadRequest(
                f"'previous_response_id' {previous_response_id!r} is not the last response of this connection "
                f"({self.response_id!r}); send the whole conversation in 'input'"
            )
        return [*self.request["input"], *self.output]

    def finished(self, request: dict[str, Any], response_id: str, output: list[Any]) -> None:
        """Remember a turn that ended with a response (failed turns are forgotten, so a retry fits)."""
        self.request, self.response_id = request, response_id
        # Item ids refer to upstream storage, which store: false upstreams do not keep.
        self.output = [_without_id(item) for item in output]


def _without_id(item: Any) -> Any:
    return {k: v for k, v in item.items() if k != "id"} if isinstance(item, dict) else item


def input_items(value: Any) -> list[Any]:
    """A Responses ``input`` as a list of items (a string is one user message)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    if isinstance(value, list):
        return list(value)
    raise BadRequest("'input' must be a string or an array of items")


def frame_object(text: str) -> dict[str, Any]:
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"frame is not valid JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise BadRequest("frame must be a JSON object")
    return frame


class TurnOutcome:
    """What the events of one turn say about its response: its id, output items and how it ended."""

    def __init__(self) -> None:
        self.response_id = ""
        self.finished = False  # completed or incomplete: a response the next turn can build on
        self.ended = False  # any terminal event, failures included
        self._items: dict[int, Any] = {}
        self._final: list[Any] = []

    def see(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        kind, response = event.get("type"), event.get("response")
        self.ended = self.ended or kind in _TERMINAL
        if isinstance(response, dict) and isinstance(response.get("id"), str):
            self.response_id = response["id"]
        if kind == "response.output_item.done" and isinstance(event.get("item"), dict):
            index = event.get("output_index")
            self._items[index if isinstance(index, int) else len(self._items)] = event["item"]
        elif kind in _FINISHED and isinstance(response, dict):
            self.finished = True
            if isinstance(response.get("output"), list):
                self._final = response["output"]

    @property
    def output(self) -> list[Any]:
        """The response's output items (the terminal event's, or the items seen when it lists none)."""
        return self._final or [self._items[i] for i in sorted(self._items)]


class SseData:
    """The ``data:`` payloads of an SSE byte stream, one string per event (comments and ``[DONE]`` skipped)."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[str]:
        *events, self._tail = (self._tail + chunk).replace(b"\r\n", b"\n").split(b"\n\n")
        return [data for data in map(_event_data, events) if data]

    def finish(self) -> list[str]:
        rest, self._tail = self._tail, b""
        data = _event_data(rest)
        return [data] if data else []


def _event_data(event: bytes) -> str:
    lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    data = b"\n".join(lines).strip()
    return "" if not data or data == b"[DONE]" else data.decode("utf-8", "replace")


def error_frame(err: RelayError) -> str:
    """``{"type": "error", "status", "error": {…}}`` with OpenAI's error object (and Retry-After)."""
    envelope = orjson.loads(OPENAI_RESPONSES.error_body(err.status, err.message, err.code))
    frame: dict[str, Any] = {"type": "error", "status": err.status, "error": envelope["error"]}
    if err.retry_after is not None:
        frame["headers"] = {"retry-after": str(max(err.retry_after, 1))}
    return orjson.dumps(frame).decode()


def prewarm_events(response_id: str, model: str) -> list[dict[str, Any]]:
    """The synthetic answer to a ``"generate": false`` request: created, then completed, empty."""
    shell = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "model": model,
        "background": False,
        "error": None,
        "output": [],
    }
    done = {**shell, "status": "completed", "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}
    return [
        {"type": "response.created", "sequence_number": 0, "response": {**shell, "status": "in_progress"}},
        {"type": "response.completed", "sequence_number": 1, "response": done},
    ]


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


# --- the consumer -----------------------------------------------------------------------------


class ResponsesSocket(AsyncWebsocketConsumer):
    """One client connection: authenticate the handshake, then serve its turns in order."""

    key: KeySnapshot | None = None
    worker: asyncio.Future[None] | None = None

    async def connect(self) -> None:
        self.credential = credential_from_scope(self.scope)
        try:
            self.key = await aresolve_raw_key(self.credential)
        except RelayError as err:
            await self.accept()
            await self.send(text_data=error_frame(err))
            await self.close(code=UNAUTHORIZED_CLOSE_CODE)
            return
        echoed = [(name, _header(self.scope, name).encode("latin-1")) for name in _ECHOED_HEADERS]
        await self.accept(headers=[(name, value) for name, value in echoed if value])
        agent, originator = _header(self.scope, b"user-agent"), _header(self.scope, b"originator")
        self.codex_client = agent.lower().startswith("codex") or originator.lower().startswith("codex")
        self.conversation = Conversation()
        self.pending: asyncio.Queue[str] = asyncio.Queue()
        self.worker = asyncio.ensure_future(self._serve_turns())

    async def disconnect(self, code: int) -> None:
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.wait({self.worker})  # the running turn records its usage row before the socket goes

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.key is None:
            return
        self.pending.put_nowait(text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace"))

    async def _serve_turns(self) -> None:
        while True:
            text = await self.pending.get()
            try:
                await self._turn(text)
            except OSError:
                return  # the server could not send: the client is gone, and disconnect() follows
            except Exception:  # one broken turn must not stop the socket from serving the next
                log.exception("responses websocket: a turn failed")
                await self.send(text_data=error_frame(RelayError(500, "internal error", code="internal_error")))

    async def _turn(self, text: str) -> None:
        try:
            frame = frame_object(text)
            request = self.conversation.next_request(frame)
        except BadRequest as exc:
            await self.send(text_data=error_frame(RelayError(400, str(exc), code="invalid_request")))
            return
        if frame.get("generate") is False:
            refusal = await self._prewarm_refusal(str(request.get("model") or ""))
            if refusal is not None:
                await self.send(text_data=error_frame(refusal))
                return
            response_id = f"resp_prewarm_{uuid.uuid4().hex}"
            for event in prewarm_events(response_id, request["model"]):
                await self.send(text_data=orjson.dumps(event).decode())
            self.conversation.finished(request, response_id, [])
            return
        outcome = await self._stream(request)
        if outcome is not None and outcome.finished:
            self.conversation.finished(request, outcome.response_id, outcome.output)

    async def _prewarm_refusal(self, model: str) -> RelayError | None:
        """Why a pre-warm (answered here, no upstream) is refused: the key or its allowed models."""
        try:
            self.key = await aresolve_raw_key(self.credential)
        except RelayError as err:
            return err
        if not self.key.allows_model(model):
            return RelayError(403, f"model '{model}' is not allowed for this API key", code="model_not_allowed")
        return None

    async def _stream(self, request: dict[str, Any]) -> TurnOutcome | None:
        """Run one turn upstream, sending each event as a frame; None when it failed before streaming.

        The key is looked up again for every turn (from the process's key cache), so a socket opened
        before the key was disabled, expired, used up its quota or lost a model serves no more turns.
        """
        incoming = Incoming(request, request["model"], True, codex_client=self.codex_client)
        namespace = str(self.scope.get("url_route", {}).get("kwargs", {}).get("namespace") or "")
        try:
            self.key = await aresolve_raw_key(self.credential)
            stream = await relay.open_stream(self.key, incoming, path=self.scope["path"], namespace=namespace)
        except RelayError as err:
            await self.send(text_data=error_frame(err))
            return None
        outcome, events = TurnOutcome(), SseData()
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                for data in events.feed(chunk):
                    await self._forward(data, outcome)
        for data in events.finish():
            await self._forward(data, outcome)
        if not outcome.ended:  # cut off: without a terminal event the client would wait forever
            message = "the upstream stream ended before the response completed"
            await self.send(text_data=error_frame(RelayError(502, message, code="upstream_error")))
        return outcome

    async def _forward(self, data: str, outcome: TurnOutcome) -> None:
        try:
            outcome.see(orjson.loads(data))
        except orjson.JSONDecodeError:
            log.warning("responses websocket: an upstream event is not JSON")
        await self.send(text_data=data)
