"""Per-channel success and failure counters and latency averages, updated off the request path.

The usage recorder's drainer calls ``apply_batch(events)`` after each batch it writes. Each
channel in the batch gets one ``UPDATE``: counters grow with ``F()`` and the latency averages
(exponentially weighted, alpha 0.2) are folded in SQL, so drainers of several processes never
overwrite each other's samples. Folding n samples x1…xn into an average m gives
``m·(1-a)^n + Σ a·(1-a)^(n-i)·xi``; an average of 0 means "no data yet" and is seeded with the
batch's own average.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from django.db.models import Case, F, Value, When
from django.db.models.expressions import Combinable

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


def _ewma(column: str, samples: list[float]) -> Combinable:
    decay, contribution = fold(samples)
    return Case(
        When(**{column: 0}, then=Value(seed(samples))),
        default=F(column) * decay + contribution,
    )


def apply_batch(events: Iterable[AttemptEvent]) -> None:
    """Fold one recorder batch into the channels' counters; logs and swallows database errors."""
    try:
        for channel_id, t in tally(events).items():
            updates: dict[str, Combinable] = {}
            if t.successes:
                updates["success_count"] = F("success_count") + t.successes
            if t.failures:
                updates["failure_count"] = F("failure_count") + t.failures
            if t.latencies:
                updates["latency_ewma_ms"] = _ewma("latency_ewma_ms", t.latencies)
            if t.ttfbs:
                updates["ttfb_ewma_ms"] = _ewma("ttfb_ewma_ms", t.ttfbs)
            if updates:
                # QuerySet.update skips save(), so updated_at and the routing-table signals stay quiet.
                Channel.objects.filter(pk=channel_id).update(**updates)
    except Exception:
        # The drainer must never re-insert a batch because a counter failed.
        log.exception("channel stats: applying a batch failed; counters skip it")
