"""Usage rows, written off the request path.

``record(event)`` is a non-blocking queue put. One drainer thread per process takes events
in batches, computes cost, compresses bodies and inserts them in one transaction.
A failed insert (database locked, restarting, unreachable) keeps the batch and tries again,
so no row is lost; ``flush()`` drains synchronously and runs at interpreter exit.

The drainer shares the GIL with the request path, so a batch skips the ORM's per-object work
(model instances, SQL compiled value by value): ``RowWriter`` builds the INSERT statements once
from the models' fields, turns each event into a list of database values and sends each table's
rows in one statement. It also keeps the number of times a batch lets go of the GIL small: each
time it takes the GIL back it waits for the event loop's switch interval (0.5 ms), so a batch that
released it per row (``executemany`` steps SQLite once per row, zstd compresses body by body) would
write only ~1,000 rows a second while the loop is busy. Bodies are compressed in one call and rows
inserted with multi-row statements.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import math
import operator
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any, NamedTuple

import zstandard
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import (
    DEFAULT_DB_ALIAS,
    DataError,
    IntegrityError,
    close_old_connections,
    connections,
    models,
    transaction,
)
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models.signals import post_delete, post_save

from channels_app import stats as channel_stats

log = logging.getLogger(__name__)

PRICES_TTL = 60.0  # seconds a process prices with ModelPrice rows it has read
STORAGE_TTL = 5.0  # seconds another process's change of LogStorageSettings may take to apply here
_ZERO = Decimal(0)
_MILLION = Decimal(1_000_000)
_COST_QUANTUM = Decimal("0.00000001")
# Fields copied as they are: the event's value is already what the driver takes for them.
_AS_IS = (models.IntegerField, models.CharField, models.TextField, models.BooleanField)
_TRUNCATED = {"path": 200, "requested_model": 200, "upstream_model": 200, "error_type": 64, "error_message": 2000}


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


class StoredRow(NamedTuple):
    """What the key quotas need of a stored row (``accounts.limits.accrue_batch``)."""

    api_key_id: int
    attempt: int
    total_tokens: int
    cost: Decimal


class RowWriter:
    """The batch's INSERT statements for one database connection, built once from the models' fields.

    Rows go in with multi-row ``INSERT``s built from a pre-built one (SQLite), or on PostgreSQL with
    ``COPY ... FROM STDIN`` (psycopg 3), which costs the client a third of the CPU of an
    ``executemany`` and the batch a third of the time. Values are what each field's
    ``get_db_prep_save`` gives: fields whose event values already have the driver's type
    (integers, strings, booleans, foreign key ids) are copied, the others (time, UUID, cost, bodies)
    converted. ``RequestLog`` ids are taken before the insert and written explicitly, so each
    ``RequestBody`` names its row by construction, whatever order a database returns rows in:
    on PostgreSQL from the id column's sequence (``nextval``, as the column default would), on SQLite
    from the table's ``AUTOINCREMENT`` high-water mark, read inside the transaction that holds the
    write lock (``transaction_mode`` IMMEDIATE; under a deferred transaction another writer in
    between makes the insert fail as busy and the batch is retried, never stored under taken ids).
    """

    def __init__(self, conn: BaseDatabaseWrapper) -> None:
        from usage.models import RequestBody, RequestLog

        self.connection = conn
        qn = conn.ops.quote_name
        meta = RequestLog._meta
        fields = [f for f in meta.concrete_fields if not f.primary_key and f.attname != "cost"]
        self._event_values = operator.attrgetter(*(f.attname for f in fields))
        self._fixes: list[tuple[int, Callable[[Any], Any]]] = []
        for i, f in enumerate(fields):
            if f.attname in _TRUNCATED:
                self._fixes.append((i, operator.itemgetter(slice(_TRUNCATED[f.attname]))))
            elif not _copied_as_is(f):
                self._fixes.append((i, partial(f.get_db_prep_save, connection=conn)))
        cost, pk = meta.get_field("cost"), meta.pk
        assert pk is not None
        self._prep_cost = partial(cost.get_db_prep_save, connection=conn)
        columns = [qn(f.column) for f in [*fields, cost, pk]]  # the id last: it is known only in the transaction
        self.log_sql = _insert_sql(qn(meta.db_table), columns)
        self._log_width = len(columns)
        self.log_copy = f"COPY {qn(meta.db_table)} ({', '.join(columns)}) FROM STDIN"
        if conn.vendor == "postgresql":
            self._ids_sql = "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)"
            self._ids_params: list[Any] = [qn(meta.db_table), pk.column]
        elif conn.vendor == "sqlite":
            self._ids_sql = (
                "SELECT max(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = %s), 0), "
                f"COALESCE((SELECT max({qn(pk.column)}) FROM {qn(meta.db_table)}), 0))"
            )
            self._ids_params = [meta.db_table]
        else:
            raise ImproperlyConfigured(f"CliRelay stores usage in SQLite or PostgreSQL, not {conn.vendor}")
        body_fields = RequestBody._meta.concrete_fields
        if [f.attname for f in body_fields] != ["log_id", "request", "response", "size"]:
            # A migration changed RequestBody: this writer must learn the new columns first.
            raise ImproperlyConfigured("the usage writer's RequestBody columns no longer match the model")
        self._prep_request = partial(body_fields[1].get_db_prep_save, connection=conn)
        self._prep_response = partial(body_fields[2].get_db_prep_save, connection=conn)
        columns = [qn(f.column) for f in body_fields]
        self.body_sql = _insert_sql(qn(RequestBody._meta.db_table), columns)
        self._body_width = len(columns)
        self.body_copy = f"COPY {qn(RequestBody._meta.db_table)} ({', '.join(columns)}) FROM STDIN"

    def log_rows(self, events: Sequence[UsageEvent], costs: Sequence[Decimal]) -> list[list[Any]]:
        """The rows' values in the column order of ``log_sql``, but for the id."""
        get, fixes, prep_cost = self._event_values, self._fixes, self._prep_cost
        rows = []
        for e, cost in zip(events, costs, strict=True):
            row = list(get(e))
            for i, fix in fixes:
                row[i] = fix(row[i])
            row.append(prep_cost(cost))
            rows.append(row)
        return rows

    def insert(self, cursor: CursorWrapper, rows: list[list[Any]], bodies: list[tuple[int, bytes, bytes]]) -> None:
        """Store ``rows`` (from ``log_rows``) and the ``(row index, request, response)`` of their bodies.

        Run inside the batch's transaction.
        """
        ids = self._new_ids(cursor, len(rows))
        for row, pk in zip(rows, ids, strict=True):
            row.append(pk)
        prep_request, prep_response = self._prep_request, self._prep_response
        body_rows = [(ids[i], prep_request(req), prep_response(resp), len(req) + len(resp)) for i, req, resp in bodies]
        if hasattr(cursor.cursor, "copy"):  # psycopg 3
            self._copy(cursor, self.log_copy, rows)
            if body_rows:
                self._copy(cursor, self.body_copy, body_rows)
        else:
            self._insert_many(cursor, self.log_sql, self._log_width, rows)
            if body_rows:
                self._insert_many(cursor, self.body_sql, self._body_width, body_rows)

    def _insert_many(self, cursor: CursorWrapper, sql: str, width: int, rows: Sequence[Sequence[Any]]) -> None:
        """SQLite: ``rows`` in multi-row INSERTs of as many rows as the bound-variable limit allows
        (one statement step for the batch, where ``executemany`` steps, and lets go of the GIL, per row)."""
        per = max(1, _variable_limit(self.connection) // width)
        head, one = sql.split(" VALUES ")
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            cursor.execute(f"{head} VALUES {', '.join([one] * len(chunk))}", [v for row in chunk for v in row])

    def _copy(self, cursor: CursorWrapper, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """``COPY`` on the driver's cursor, its errors raised as Django's (``IntegrityError`` …)."""
        with self.connection.wrap_database_errors, cursor.cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)

    def _new_ids(self, cursor: CursorWrapper, n: int) -> list[int]:
        """``n`` ids no other row has or will get, ascending."""
        if self.connection.vendor == "sqlite":
            cursor.execute(self._ids_sql, self._ids_params)
            last = cursor.fetchone()[0]
            return list(range(last + 1, last + 1 + n))
        cursor.execute(self._ids_sql, [*self._ids_params, n])
        return sorted(pk for (pk,) in cursor.fetchall())


def _variable_limit(conn: BaseDatabaseWrapper) -> int:
    """How many values one SQLite statement may bind (32,766 on SQLite 3.32+; Django assumes 999)."""
    raw = conn.connection
    getlimit = getattr(raw, "getlimit", None)  # Python 3.11+
    if getlimit is None:
        return int(conn.features.max_query_params or 999)
    return int(getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


def _insert_sql(table: str, columns: list[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"


def _copied_as_is(f: models.Field[Any, Any]) -> bool:
    if isinstance(f, models.ForeignKey):
        return isinstance(f.target_field, models.IntegerField)
    return isinstance(f, _AS_IS)


_storage_version = 0  # bumped when LogStorageSettings changes in this process


def _storage_changed(**kwargs: Any) -> None:
    global _storage_version
    _storage_version += 1


post_save.connect(_storage_changed, sender="usage.LogStorageSettings", dispatch_uid="usage.recorder.storage")
post_delete.connect(_storage_changed, sender="usage.LogStorageSettings", dispatch_uid="usage.recorder.storage")


class Recorder:
    """A queue and the one thread that drains it into the database."""

    def __init__(self, *, autostart: bool = True) -> None:
        self.autostart = autostart
        self._queue: queue.SimpleQueue[UsageEvent] = queue.SimpleQueue()
        self._catch_up_at = 2 * settings.CLIRELAY_RECORDER_BATCH  # queued events past which callers yield
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending: list[UsageEvent] = []
        self._compressor = zstandard.ZstdCompressor(level=3)
        self._prices: list[tuple[str, Decimal, Decimal, Decimal | None]] = []
        self._prices_loaded = -math.inf
        self._price_of: dict[str, tuple[Decimal, Decimal, Decimal] | None] = {}
        self._store_content = True
        self._storage_loaded = -math.inf
        self._storage_version = -1
        self._writer: RowWriter | None = None
        self.written = 0
        self.failures = 0

    def record(self, event: UsageEvent) -> None:
        """Enqueue ``event``; never waits for the database.

        When the drainer has fallen more than two batches behind (the process is saturated and the
        event loop holds the GIL most of the time), the caller hands it the GIL once: ``time.sleep(0)``
        releases it and waits for nothing else. Requests then slow down by the drainer's share, so at
        the highest throughput logging keeps pace instead of its queue growing.
        """
        pending = self._queue
        pending.put_nowait(event)
        if pending.qsize() > self._catch_up_at:
            time.sleep(0)
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
            try:
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
            channel_stats.apply_batch(events)  # per-channel counters and latency; never raises
        finally:
            close_old_connections()  # CONN_MAX_AGE=0: the drainer must not keep a connection between batches
        self.written += len(events)
        self._pending = []

    def _insert(self, events: list[UsageEvent]) -> None:
        from accounts.limits import accrue_batch

        self._refresh()
        writer = self._row_writer()
        costs = [self._cost(e) for e in events]
        rows = writer.log_rows(events, costs)
        bodies = self._compressed(events) if self._store_content else []
        with transaction.atomic(), writer.connection.cursor() as cursor:
            writer.insert(cursor, rows, bodies)
        # Quota counters, once the rows are stored; never raises.
        accrue_batch(
            [
                StoredRow(e.api_key_id, e.attempt, e.total_tokens, cost)
                for e, cost in zip(events, costs, strict=True)
                if e.api_key_id is not None
            ]
        )

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

    def _row_writer(self) -> RowWriter:
        """A writer for this thread's connection (``flush()`` may run in a thread other than the drainer)."""
        conn = connections[DEFAULT_DB_ALIAS]
        if self._writer is None or self._writer.connection is not conn:
            self._writer = RowWriter(conn)
        return self._writer

    def _compressed(self, events: list[UsageEvent]) -> list[tuple[int, bytes, bytes]]:
        """(index, request, response) of the events with a body, zstd-compressed in one call (one GIL
        release for the batch, not two per row); empty bodies stay empty. Each body is its own frame."""
        with_body = [
            (i, e.request_body, e.response_body) for i, e in enumerate(events) if e.request_body or e.response_body
        ]
        texts = [body for _, request, response in with_body for body in (request, response) if body]
        frames = iter(self._compressor.multi_compress_to_buffer(texts) if texts else ())
        return [
            (i, next(frames).tobytes() if request else b"", next(frames).tobytes() if response else b"")
            for i, request, response in with_body
        ]

    def _refresh(self) -> None:
        """Reread prices every minute and the log storage settings every few seconds (or when saved here)."""
        from channels_app.models import ModelPrice
        from usage.models import LogStorageSettings

        now = time.monotonic()
        if now - self._prices_loaded > PRICES_TTL:
            self._prices = [
                (p.model, p.input_per_million, p.output_per_million, p.cached_per_million)
                for p in ModelPrice.objects.all()
            ]
            # Exact names first, then the most specific (longest) pattern.
            self._prices.sort(key=lambda p: ("*" in p[0], -len(p[0])))
            self._price_of = {}
            self._prices_loaded = now
        if now - self._storage_loaded > STORAGE_TTL or self._storage_version != _storage_version:
            self._storage_version = _storage_version
            self._store_content = LogStorageSettings.load().store_content
            self._storage_loaded = now

    def _price(self, model: str) -> tuple[Decimal, Decimal, Decimal] | None:
        """(input, output, cached input) per million tokens of the first price matching ``model``."""
        from channels_app.models import wildcard_match

        try:
            return self._price_of[model]
        except KeyError:
            pass
        found = None
        for pattern, inp, out, cached in self._prices:
            if wildcard_match(pattern, model):
                found = (inp, out, inp if cached is None else cached)
                break
        if len(self._price_of) >= 10_000:  # clients name models freely: keep the memo bounded
            self._price_of.clear()
        self._price_of[model] = found
        return found

    def _cost(self, e: UsageEvent) -> Decimal:
        """USD for this attempt: cached input charged once, at the cached price if one is set."""
        price = self._price(e.upstream_model or e.requested_model)
        if price is None:
            return _ZERO
        inp, out, cached_price = price
        uncached = max(e.input_tokens - e.cached_tokens, 0)
        total = uncached * inp + e.cached_tokens * cached_price + e.output_tokens * out
        return (total / _MILLION).quantize(_COST_QUANTUM)


recorder = Recorder()


def record(event: UsageEvent) -> None:
    """Queue one usage event for the database (a non-blocking put)."""
    recorder.record(event)


def flush(timeout: float = 10.0) -> bool:
    """Write everything queued so far."""
    return recorder.flush(timeout)


atexit.register(flush)
