"""Usage rows, written off the request path.

``record(event)`` is a non-blocking queue put. One drainer thread per process takes events
in batches, computes cost, compresses bodies and bulk-inserts them in one transaction.
A failed insert (database locked, restarting, unreachable) keeps the batch and tries again,
so no row is lost; ``flush()`` drains synchronously and runs at interpreter exit.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

import zstandard
from django.conf import settings
from django.db import DataError, IntegrityError, close_old_connections, transaction

from channels_app import stats as channel_stats

if TYPE_CHECKING:
    from usage.models import RequestBody, RequestLog

log = logging.getLogger(__name__)


@dataclass(slots=True)
class UsageEvent:
    """What the relay saw of one upstream attempt."""

    time: dt.datetime
    request_id: uuid.UUID
    client_dialect: str
    path: str
    requested_model: str
    stream: bool
    status_code: int
    attempt: int = 1
    team_id: int | None = None
    api_key_id: int | None = None
    key_display: str = ""
    group_id: int | None = None
    channel_id: int | None = None
    channel_name: str = ""
    upstream_kind: str = ""
    upstream_model: str = ""
    error_type: str = ""
    error_message: str = ""
    latency_ms: int = 0
    ttfb_ms: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    request_body: bytes = b""
    response_body: bytes = b""
    extra: dict[str, object] = field(default_factory=dict)


class Recorder:
    """A queue and the one thread that drains it into the database."""

    def __init__(self, *, autostart: bool = True) -> None:
        self.autostart = autostart
        self._queue: queue.SimpleQueue[UsageEvent] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending: list[UsageEvent] = []
        self._compressor = zstandard.ZstdCompressor(level=3)
        self._prices: list[tuple[str, Decimal, Decimal, Decimal | None]] = []
        self._prices_loaded = 0.0
        self.written = 0
        self.failures = 0

    def record(self, event: UsageEvent) -> None:
        """Enqueue ``event``; never blocks, never touches the database."""
        self._queue.put_nowait(event)
        if self._thread is None and self.autostart:
            self._start()

    def backlog(self) -> int:
        """Events accepted but not yet written."""
        return self._queue.qsize() + len(self._pending)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="usage-recorder", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        interval = settings.CLIRELAY_RECORDER_INTERVAL
        while True:
            try:
                first = self._queue.get(timeout=interval)
            except queue.Empty:
                pass
            else:
                with self._lock:
                    self._pending.append(first)
                # Let a burst accumulate into one batch instead of one insert per event.
                time.sleep(interval)
            with self._lock:
                self._collect()
                if self._pending:
                    self._write_pending()
                failed = bool(self._pending)
            if failed:  # back off before trying again; the batch is kept
                time.sleep(min(5.0, interval * 5))

    def _collect(self) -> None:
        batch = settings.CLIRELAY_RECORDER_BATCH
        try:
            while len(self._pending) < batch:
                self._pending.append(self._queue.get_nowait())
        except queue.Empty:
            pass

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything queued so far; True when nothing is left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                self._collect()
                if not self._pending:
                    return True
                self._write_pending()
            if self._pending:
                time.sleep(0.1)
        return not self._pending and self._queue.empty()

    def _write_pending(self) -> None:
        events = self._pending
        try:
            close_old_connections()
            self._insert(events)
        except (IntegrityError, DataError):
            # The database is up but refuses some row (say its key was deleted mid-request):
            # store the others one by one and drop only the refused ones, so one bad row
            # never stalls recording.
            self.failures += 1
            stored = self._insert_each(events)
            if stored is None:
                return
            events = stored
        except Exception:
            self.failures += 1
            log.exception("usage recorder: writing %d rows failed; will retry", len(events))
            return
        finally:
            close_old_connections()
        try:
            channel_stats.apply_batch(events)  # per-channel counters and latency; never raises
        finally:
            close_old_connections()  # CONN_MAX_AGE=0: the drainer must not keep a connection between batches
        self.written += len(events)
        self._pending = []

    def _insert(self, events: list[UsageEvent]) -> None:
        from accounts.limits import accrue_batch
        from usage.models import LogStorageSettings, RequestBody, RequestLog

        store_bodies = LogStorageSettings.load().store_content
        rows = [self._row(RequestLog, e) for e in events]
        with transaction.atomic():
            RequestLog.objects.bulk_create(rows)
            if store_bodies:
                RequestBody.objects.bulk_create(
                    [
                        self._body(RequestBody, row, e)
                        for row, e in zip(rows, events, strict=True)
                        if e.request_body or e.response_body
                    ]
                )
        accrue_batch(rows)  # quota counters, once the rows are stored; never raises

    def _insert_each(self, events: list[UsageEvent]) -> list[UsageEvent] | None:
        """Insert rows one at a time; the stored ones, or None when the database itself failed."""
        stored: list[UsageEvent] = []
        for event in events:
            try:
                self._insert([event])
            except (IntegrityError, DataError):
                log.exception("usage recorder: dropping a row the database refuses (request %s)", event.request_id)
            except Exception:
                log.exception("usage recorder: writing rows failed; will retry")
                self._pending = [e for e in events if e not in stored]
                return None
            else:
                stored.append(event)
        return stored

    def _row(self, model: type[RequestLog], e: UsageEvent) -> RequestLog:
        return model(
            time=e.time,
            request_id=e.request_id,
            attempt=e.attempt,
            team_id=e.team_id,
            api_key_id=e.api_key_id,
            key_display=e.key_display,
            group_id=e.group_id,
            channel_id=e.channel_id,
            channel_name=e.channel_name,
            client_dialect=e.client_dialect,
            upstream_kind=e.upstream_kind,
            path=e.path[:200],
            requested_model=e.requested_model[:200],
            upstream_model=e.upstream_model[:200],
            stream=e.stream,
            status_code=e.status_code,
            error_type=e.error_type[:64],
            error_message=e.error_message[:2000],
            latency_ms=e.latency_ms,
            ttfb_ms=e.ttfb_ms,
            input_tokens=e.input_tokens,
            output_tokens=e.output_tokens,
            cached_tokens=e.cached_tokens,
            reasoning_tokens=e.reasoning_tokens,
            total_tokens=e.total_tokens,
            cost=self._cost(e),
        )

    def _body(self, model: type[RequestBody], row: RequestLog, e: UsageEvent) -> RequestBody:
        request = self._compressor.compress(e.request_body) if e.request_body else b""
        response = self._compressor.compress(e.response_body) if e.response_body else b""
        return model(log=row, request=request, response=response, size=len(request) + len(response))

    def _cost(self, e: UsageEvent) -> Decimal:
        """USD for this attempt: cached input charged once, at the cached price if one is set."""
        from channels_app.models import ModelPrice, wildcard_match

        if time.monotonic() - self._prices_loaded > 60:
            self._prices = [
                (p.model, p.input_per_million, p.output_per_million, p.cached_per_million)
                for p in ModelPrice.objects.all()
            ]
            # Exact names first, then the most specific (longest) pattern.
            self._prices.sort(key=lambda p: ("*" in p[0], -len(p[0])))
            self._prices_loaded = time.monotonic()
        model = e.upstream_model or e.requested_model
        for pattern, inp, out, cached in self._prices:
            if wildcard_match(pattern, model):
                cached_price = inp if cached is None else cached
                uncached = max(e.input_tokens - e.cached_tokens, 0)
                total = uncached * inp + e.cached_tokens * cached_price + e.output_tokens * out
                return (total / Decimal(1_000_000)).quantize(Decimal("0.00000001"))
        return Decimal(0)


recorder = Recorder()


def record(event: UsageEvent) -> None:
    """Queue one usage event for the database (a non-blocking put)."""
    recorder.record(event)


def flush(timeout: float = 10.0) -> bool:
    """Write everything queued so far."""
    return recorder.flush(timeout)


atexit.register(flush)
