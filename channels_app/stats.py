"""Per-channel success and failure counters and latency averages, updated off the request path.

The usage recorder's drainer calls ``apply_batch(events)`` after each batch it writes. Each
channel in the batch gets one ``UPDATE``: counters grow in SQL (``col = col + n``) and the latency
averages (exponentially weighted, alpha 0.2) are folded in SQL, so drainers of several processes never
overwrite each other's samples. Folding n samples x1…xn into an average m gives
``m·(1-a)^n + Σ a·(1-a)^(n-i)·xi``; an average of 0 means "no data yet" and is seeded with the
batch's own average.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper

from channels_app.models import Channel

log = logging.getLogger(__name__)

ALPHA = 0.2
_CLIENT_GONE = 499  # the client hung up: says nothing about the channel


class AttemptEvent(Protocol):
    """What ``apply_batch`` reads from a usage event (``usage.recorder.UsageEvent`` is one)."""

    @property
    def channel_id(self) -> int | None: ...

    @property
    def status_code(self) -> int: ...

    @property
    def latency_ms(self) -> int: ...

    @property
    def ttfb_ms(self) -> int: ...


@dataclass(slots=True)
class ChannelTally:
    """One channel's share of a batch."""

    successes: int = 0
    failures: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)


def tally(events: Iterable[AttemptEvent]) -> dict[int, ChannelTally]:
    """Group a batch by channel. Latency samples come from successful attempts only."""
    tallies: dict[int, ChannelTally] = {}
    for event in events:
        if event.channel_id is None or event.status_code == _CLIENT_GONE:
            continue
        t = tallies.setdefault(event.channel_id, ChannelTally())
        if 200 <= event.status_code < 400:
            t.successes += 1
            if event.latency_ms > 0:
                t.latencies.append(float(event.latency_ms))
            if event.ttfb_ms > 0:
                t.ttfbs.append(float(event.ttfb_ms))
        else:
            t.failures += 1
    return tallies


def fold(samples: list[float], alpha: float = ALPHA) -> tuple[float, float]:
    """``(decay, contribution)`` such that the new average is ``old * decay + contribution``."""
    decay, contribution = 1.0, 0.0
    for x in samples:
        decay *= 1 - alpha
        contribution = contribution * (1 - alpha) + alpha * x
    return decay, contribution


def seed(samples: list[float], alpha: float = ALPHA) -> float:
    """The average of ``samples`` alone: the first sample, then each later one folded in."""
    average = samples[0]
    for x in samples[1:]:
        average += alpha * (x - average)
    return average


class _Statements:
    """Pieces of the UPDATE: the SQL Django compiles ``F(col) + n`` and the ``Case`` of the averages to."""

    def __init__(self, conn: BaseDatabaseWrapper) -> None:
        self._qn = conn.ops.quote_name
        self._table = self._qn(Channel._meta.db_table)
        self._columns = {f.name: f.column for f in Channel._meta.concrete_fields}

    def _target(self, name: str) -> tuple[str, str]:
        """The column as assigned, and as read (qualified with the table)."""
        column = self._qn(self._columns[name])
        return column, f"{self._table}.{column}"

    def add_to(self, name: str) -> str:
        """``column = column + n``."""
        column, read = self._target(name)
        return f"{column} = ({read} + %s)"

    def ewma(self, name: str) -> str:
        """``column`` seeded when 0 (no data yet), else ``column * decay + contribution``."""
        column, read = self._target(name)
        return f"{column} = CASE WHEN ({read} = %s) THEN %s ELSE (({read} * %s) + %s) END"

    def update(self, sets: list[str]) -> str:
        return f"UPDATE {self._table} SET {', '.join(sets)} WHERE {self._target('id')[1]} = %s"


def apply_batch(events: Iterable[AttemptEvent]) -> None:
    """Fold one recorder batch into the channels' counters; logs and swallows database errors."""
    try:
        tallies = tally(events)
        if not tallies:
            return
        sql = _Statements(connection)
        with connection.cursor() as cursor:
            for channel_id, t in tallies.items():
                sets: list[str] = []
                params: list[float] = []
                if t.successes:
                    sets.append(sql.add_to("success_count"))
                    params.append(t.successes)
                if t.failures:
                    sets.append(sql.add_to("failure_count"))
                    params.append(t.failures)
                for column, samples in (("latency_ewma_ms", t.latencies), ("ttfb_ewma_ms", t.ttfbs)):
                    if samples:
                        decay, contribution = fold(samples)
                        sets.append(sql.ewma(column))
                        params += (0.0, seed(samples), decay, contribution)
                if sets:
                    # One UPDATE per channel, written out rather than built by the ORM: the drainer
                    # shares the GIL with the request path. A raw UPDATE skips save(), so updated_at
                    # and the routing-table signals stay quiet.
                    cursor.execute(sql.update(sets), [*params, channel_id])
    except Exception:
        # The drainer must never re-insert a batch because a counter failed.
        log.exception("channel stats: applying a batch failed; counters skip it")
