"""What writing usage rows costs the gateway process: the recorder's drainer step per batch, before and after.

Writes N usage events (default 5,000) in batches of B (default 200) through ``Recorder._write_pending``,
the whole step the drainer thread runs per batch: cost, body compression, the row inserts in one
transaction, key quota accrual and channel stats, connections closed after each batch (CONN_MAX_AGE=0).
``before`` is the recorder as it was (Django model instances and ``bulk_create``), kept here only for the
comparison; ``after`` is ``usage.recorder.Recorder``. Both write the same events into a throwaway test
database, rounds alternate the order; the stored rows, bodies, key counters and channel stats of both
are compared and must be identical. Runs on the embedded SQLite database, and on PostgreSQL too when
``DATABASE_URL`` points at one. Prints a table and writes ``bench/results/recorder.json``.

    .venv/bin/python bench/recorder.py [--events 5000] [--batch 200] [--rounds 5]
    .venv/bin/python bench/recorder.py --profile after          # cProfile one round of a variant
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import json
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "recorder.json"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

KEYS, CHANNELS = 20, 8
MODELS = [
    "gpt-4o-mini",
    "gpt-4.1",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "moonshotai/kimi-k2:free",
    "deepseek-chat",
    "unpriced-model",
]
PRICES = [  # (pattern, input, output, cached) per million tokens
    ("gpt-4o-mini", "0.15", "0.6", "0.075"),
    ("gpt-4.1", "2", "8", "0.5"),
    ("gpt-*", "2.5", "10", None),
    ("claude-sonnet-*", "3", "15", "0.3"),
    ("claude-haiku-*", "1", "5", "0.1"),
    ("gemini-2.5-pro", "1.25", "10", "0.31"),
    ("gemini-2.5-flash", "0.3", "2.5", "0.075"),
    ("gemini-*", "0.5", "3", None),
    ("moonshotai/*", "0", "0", None),
    ("deepseek-*", "0.27", "1.1", "0.07"),
    ("o3*", "2", "8", "0.5"),
    ("mistral-*", "0.4", "2", None),
]
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "json", "schemas", "streaming", "tokens"]


# --- the recorder as it was, for the comparison only ---------------------------------------------


def legacy_apply_batch(events: list[Any]) -> None:
    """``channels_app.stats.apply_batch`` as it was: one ORM ``update()`` of ``F()``/``Case`` per channel."""
    from django.db.models import Case, F, Value, When

    from channels_app.models import Channel
    from channels_app.stats import fold, log, seed, tally

    def ewma(column: str, samples: list[float]) -> Any:
        decay, contribution = fold(samples)
        return Case(When(**{column: 0}, then=Value(seed(samples))), default=F(column) * decay + contribution)

    try:
        for channel_id, t in tally(events).items():
            updates: dict[str, Any] = {}
            if t.successes:
                updates["success_count"] = F("success_count") + t.successes
            if t.failures:
                updates["failure_count"] = F("failure_count") + t.failures
            if t.latencies:
                updates["latency_ewma_ms"] = ewma("latency_ewma_ms", t.latencies)
            if t.ttfbs:
                updates["ttfb_ewma_ms"] = ewma("ttfb_ewma_ms", t.ttfbs)
            if updates:
                Channel.objects.filter(pk=channel_id).update(**updates)
    except Exception:
        log.exception("channel stats: applying a batch failed; counters skip it")


def legacy_recorder_class() -> type[Any]:
    """``Recorder`` with the drainer step as it was before the raw-SQL insert (model instances, bulk_create)."""
    from django.db import DataError, IntegrityError, close_old_connections, transaction

    from usage.recorder import Recorder, UsageEvent, log

    class LegacyRecorder(Recorder):
        _legacy_prices: list[tuple[str, Decimal, Decimal, Decimal | None]]
        _legacy_prices_loaded = 0.0

        def _write_pending(self) -> None:
            events = self._pending
            try:
                close_old_connections()
                self._insert_legacy(events)
            except (IntegrityError, DataError):
                self.failures += 1
                stored = self._insert_each_legacy(events)
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
                CLOCK.timed("stats", legacy_apply_batch)(events)
            finally:
                close_old_connections()
            self.written += len(events)
            self._pending = []

        def _insert_legacy(self, events: list[UsageEvent]) -> None:
            from accounts.limits import accrue_batch
            from usage.models import LogStorageSettings, RequestBody, RequestLog

            store_bodies = LogStorageSettings.load().store_content
            rows = [self._row_legacy(RequestLog, e) for e in events]
            with transaction.atomic():
                RequestLog.objects.bulk_create(rows)
                if store_bodies:
                    RequestBody.objects.bulk_create(
                        [
                            self._body_legacy(RequestBody, row, e)
                            for row, e in zip(rows, events, strict=True)
                            if e.request_body or e.response_body
                        ]
                    )
            accrue_batch(rows)

        def _insert_each_legacy(self, events: list[UsageEvent]) -> list[UsageEvent] | None:
            stored: list[UsageEvent] = []
            for event in events:
                try:
                    self._insert_legacy([event])
                except (IntegrityError, DataError):
                    log.exception("usage recorder: dropping a row the database refuses (request %s)", event.request_id)
                except Exception:
                    log.exception("usage recorder: writing rows failed; will retry")
                    self._pending = [e for e in events if e not in stored]
                    return None
                else:
                    stored.append(event)
            return stored

        def _row_legacy(self, model: Any, e: UsageEvent) -> Any:
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
                cost=self._cost_legacy(e),
            )

        def _body_legacy(self, model: Any, row: Any, e: UsageEvent) -> Any:
            request = self._compressor.compress(e.request_body) if e.request_body else b""
            response = self._compressor.compress(e.response_body) if e.response_body else b""
            return model(log=row, request=request, response=response, size=len(request) + len(response))

        def _cost_legacy(self, e: UsageEvent) -> Decimal:
            from channels_app.models import ModelPrice, wildcard_match

            if time.monotonic() - self._legacy_prices_loaded > 60:
                self._legacy_prices = [
                    (p.model, p.input_per_million, p.output_per_million, p.cached_per_million)
                    for p in ModelPrice.objects.all()
                ]
                self._legacy_prices.sort(key=lambda p: ("*" in p[0], -len(p[0])))
                self._legacy_prices_loaded = time.monotonic()
            model = e.upstream_model or e.requested_model
            for pattern, inp, out, cached in self._legacy_prices:
                if wildcard_match(pattern, model):
                    cached_price = inp if cached is None else cached
                    uncached = max(e.input_tokens - e.cached_tokens, 0)
                    total = uncached * inp + e.cached_tokens * cached_price + e.output_tokens * out
                    return (total / Decimal(1_000_000)).quantize(Decimal("0.00000001"))
            return Decimal(0)

    return LegacyRecorder


# --- the workload -----------------------------------------------------------------------------------


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _bodies(rng: random.Random, model: str, stream: bool) -> tuple[bytes, bytes]:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": _text(rng, 20)} for i in range(1, 6)]
    request = json.dumps({"model": model, "stream": stream, "messages": messages}).encode()
    answer = _text(rng, rng.randint(20, 150))
    response = json.dumps(
        {
            "id": f"chatcmpl-{rng.getrandbits(64):x}",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
        }
    ).encode()
    return request, response


def make_events(n: int, keys: list[tuple[int, int]], channels: list[tuple[int, str]]) -> list[Any]:
    """``n`` attempts of client requests: mostly answered, some retried after a 429/502, some cut off.

    About one event in ten carries no body (refused attempts whose body was not captured, and a few
    requests with body capture off), so a batch mixes rows with and without a ``RequestBody``.
    """
    from usage.recorder import UsageEvent

    rng = random.Random(5)
    start = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    events: list[Any] = []
    while len(events) < n:
        key_id, team_id = rng.choice(keys)
        model = rng.choice(MODELS)
        stream = rng.random() < 0.6
        request_id = uuid.uuid4()
        attempts = 2 if rng.random() < 0.08 else 1
        for attempt in range(1, attempts + 1):
            channel_id, channel_name = rng.choice(channels)
            failed = attempt < attempts
            status = rng.choice((429, 502)) if failed else (499 if rng.random() < 0.03 else 200)
            input_tokens = 0 if failed else rng.randint(10, 20_000)
            cached = rng.randint(0, input_tokens) if rng.random() < 0.4 else 0
            output_tokens = 0 if failed else rng.randint(1, 2_000)
            request_body, response_body = _bodies(rng, model, stream)
            if failed:
                response_body = b""
            if rng.random() < 0.05:
                request_body = response_body = b""
            events.append(
                UsageEvent(
                    time=start + dt.timedelta(milliseconds=2 * len(events)),
                    request_id=request_id,
                    attempt=attempt,
                    client_dialect=rng.choice(("openai-chat", "anthropic-messages", "openai-responses", "gemini")),
                    path="/v1/chat/completions",
                    requested_model=model,
                    stream=stream,
                    status_code=status,
                    team_id=team_id,
                    api_key_id=key_id,
                    key_display="sk-ab…cd12",
                    channel_id=channel_id,
                    channel_name=channel_name,
                    upstream_kind="openai-compatibility",
                    upstream_model=model,
                    error_type="rate_limit_error" if status == 429 else ("upstream_error" if failed else ""),
                    error_message=f"upstream answered {status}: " + _text(rng, 12) if failed else "",
                    latency_ms=rng.randint(50, 30_000),
                    ttfb_ms=rng.randint(20, 2_000),
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cached_tokens=cached,
                    reasoning_tokens=rng.randint(0, output_tokens),
                    total_tokens=input_tokens + output_tokens,
                    request_body=request_body,
                    response_body=response_body,
                )
            )
    return events[:n]


def make_fixtures() -> tuple[list[tuple[int, int]], list[tuple[int, str]]]:
    from accounts.models import ApiKey, Team
    from channels_app.models import Channel, ModelPrice, ProviderKind

    teams = [Team.objects.create(name=f"Bench {i}", slug=f"bench-{i}") for i in range(2)]
    keys = []
    for i in range(KEYS):
        key = ApiKey(team=teams[i % 2], name=f"bench-{i}")
        key.issue_key()
        key.save()
        keys.append((key.pk, key.team_id))
    channels = []
    for i in range(CHANNELS):
        channel = Channel.objects.create(
            team=teams[i % 2], name=f"bench-{i}", kind=ProviderKind.OPENAI_COMPATIBILITY, secret="sk"
        )
        channels.append((channel.pk, channel.name))
    for pattern, inp, out, cached in PRICES:
        ModelPrice.objects.create(
            model=pattern,
            input_per_million=Decimal(inp),
            output_per_million=Decimal(out),
            cached_per_million=None if cached is None else Decimal(cached),
        )
    return keys, channels


# --- measuring ----------------------------------------------------------------------------------------


class Clock:
    """Thread CPU time of one run, split by where it went.

    ``driver``: inside cursor execute calls, PostgreSQL ``COPY``, commits and closes (the DB driver,
    and on SQLite the engine, which runs with the GIL released); ``zstd``: body compression (which
    releases the GIL too). ``accrual`` and ``stats``: ``accrue_batch`` and ``apply_batch``, their SQL
    included.
    """

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        self.cpu = {"driver": 0.0, "zstd": 0.0, "accrual": 0.0, "stats": 0.0}
        self.statements = 0

    def timed(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[part] += time.thread_time() - start

        return timed_call

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        """A ``connection.execute_wrapper``."""
        self.statements += 1
        return self.timed("driver", execute)(sql, params, many, context)

    def install(self) -> None:
        """Time ``accrue_batch``, ``apply_batch`` and the connection's commit and close."""
        from django.db import DEFAULT_DB_ALIAS, connections

        from accounts import limits
        from channels_app import stats
        from usage.recorder import RowWriter

        copy = self.timed("driver", RowWriter._copy)

        def counted_copy(*args: Any) -> Any:  # COPY goes round Django's execute wrappers
            self.statements += 1
            return copy(*args)

        RowWriter._copy = counted_copy  # type: ignore[method-assign]
        limits.accrue_batch = self.timed("accrual", limits.accrue_batch)
        stats.apply_batch = self.timed("stats", stats.apply_batch)
        wrapper = type(connections[DEFAULT_DB_ALIAS])
        for name in ("_commit", "_close"):
            method = getattr(wrapper, name)
            setattr(wrapper, name, lambda conn, _m=method: self.timed("driver", _m)(conn))


CLOCK = Clock()


class TimedCompressor:
    """The recorder's ``ZstdCompressor``, its ``compress`` and ``multi_compress_to_buffer`` calls timed."""

    def __init__(self, compressor: Any) -> None:
        self.compress = CLOCK.timed("zstd", compressor.compress)
        self.multi_compress_to_buffer = CLOCK.timed("zstd", compressor.multi_compress_to_buffer)


def reset_tables() -> None:
    from accounts import limits
    from accounts.models import ApiKeyUsageCounter
    from channels_app.models import Channel
    from usage.models import RequestBody, RequestLog

    RequestBody.objects.all().delete()
    RequestLog.objects.all()._raw_delete(RequestLog.objects.db)
    ApiKeyUsageCounter.objects.all().delete()
    Channel.objects.update(success_count=0, failure_count=0, latency_ewma_ms=0, ttfb_ewma_ms=0)
    limits.default_limiter().local = limits.LocalLimits()


def snapshot() -> dict[str, Any]:
    """Everything the batch left in the database, with row ids replaced by their rank."""
    from accounts.models import ApiKeyUsageCounter
    from channels_app.models import Channel
    from usage.models import RequestBody, RequestLog

    columns = [f.attname for f in RequestLog._meta.concrete_fields if not f.primary_key]
    ids = list(RequestLog.objects.order_by("id").values_list("id", flat=True))
    rank = {pk: i for i, pk in enumerate(ids)}
    return {
        "rows": [tuple(map(str, r)) for r in RequestLog.objects.order_by("id").values_list(*columns)],
        "bodies": sorted(
            (rank[log_id], bytes(request), bytes(response), size)
            for log_id, request, response, size in RequestBody.objects.values_list(
                "log_id", "request", "response", "size"
            )
        ),
        "counters": sorted(
            tuple(map(str, r))
            for r in ApiKeyUsageCounter.objects.values_list(
                "api_key_id", "total_requests", "total_tokens", "total_cost"
            )
        ),
        "channels": sorted(
            Channel.objects.values_list("id", "success_count", "failure_count", "latency_ewma_ms", "ttfb_ewma_ms")
        ),
    }


@contextmanager
def maybe_profile(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)


def write_all(recorder: Any, events: list[Any], batch: int, profile: bool = False) -> dict[str, float]:
    from django.db import connection

    if not isinstance(recorder._compressor, TimedCompressor):
        recorder._compressor = TimedCompressor(recorder._compressor)
    CLOCK.reset()
    gc.collect()
    with connection.execute_wrapper(CLOCK), maybe_profile(profile):
        wall, cpu = time.perf_counter(), time.thread_time()
        for i in range(0, len(events), batch):
            recorder._pending = events[i : i + batch]
            recorder._write_pending()
            if recorder._pending:
                raise SystemExit(f"a batch failed to write ({recorder.failures} failures): see the log above")
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    return {"wall": wall, "cpu": cpu, **{f"{k}_cpu": v for k, v in CLOCK.cpu.items()}, "statements": CLOCK.statements}


def run_child(options: argparse.Namespace) -> dict[str, Any]:
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    from accounts import limits
    from usage.recorder import Recorder

    CLOCK.install()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    prefix = f"bench-recorder-{uuid.uuid4().hex}:"
    limits._default = limits.Limiter(settings.REDIS_URL, prefix=prefix)
    try:
        keys, channels = make_fixtures()
        events = make_events(options.events, keys, channels)
        variants: dict[str, Any] = {
            "before": legacy_recorder_class()(autostart=False),
            "after": Recorder(autostart=False),
        }
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        stored: dict[str, dict[str, Any]] = {}
        for recorder in variants.values():  # warm-up: prices loaded, code paths hot
            reset_tables()
            write_all(recorder, events[: options.batch * 2], options.batch)
        for round_ in range(options.rounds):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                reset_tables()
                profile = options.profile == name and round_ == options.rounds - 1
                samples[name].append(write_all(variants[name], events, options.batch, profile))
                if round_ >= options.rounds - 2:
                    stored[name] = snapshot()
        identical = stored["before"] == stored["after"]
        if not identical:
            for part in stored["before"]:
                if stored["before"][part] != stored["after"][part]:
                    print(f"{connection.vendor}: stored {part} differ between before and after", file=sys.stderr)
        n = options.events
        result: dict[str, Any] = {
            "backend": connection.vendor,
            "server_version": _server_version(connection),
            "redis": bool(settings.REDIS_URL),
            "events": n,
            "batch": options.batch,
            "rounds": options.rounds,
            "stored_identical": identical,
            "rows": len(stored["after"]["rows"]),
            "bodies": len(stored["after"]["bodies"]),
            "variants": {},
        }
        for name, runs in samples.items():
            wall = statistics.median(r["wall"] for r in runs)

            def per_event(part: Callable[[dict[str, float]], float], runs: list[dict[str, float]] = runs) -> float:
                return statistics.median(part(r) for r in runs) / n * 1e6

            result["variants"][name] = {
                "events_per_s": n / wall,
                "wall_ms_per_batch": wall / (n / options.batch) * 1000,
                "cpu_us_per_event": per_event(lambda r: r["cpu"]),
                "driver_cpu_us_per_event": per_event(lambda r: r["driver_cpu"]),
                "zstd_cpu_us_per_event": per_event(lambda r: r["zstd_cpu"]),
                "python_cpu_us_per_event": per_event(lambda r: r["cpu"] - r["driver_cpu"] - r["zstd_cpu"]),
                "accrual_cpu_us_per_event": per_event(lambda r: r["accrual_cpu"]),
                "stats_cpu_us_per_event": per_event(lambda r: r["stats_cpu"]),
                "best_cpu_us_per_event": min(r["cpu"] for r in runs) / n * 1e6,
                "statements_per_batch": runs[0]["statements"] / (n / options.batch),
                "runs": runs,
            }
        return result
    finally:
        if settings.REDIS_URL:
            client = limits.default_limiter()._sync_redis()[0]
            names = list(client.scan_iter(match=f"{prefix}*"))
            if names:
                client.delete(*names)
        connection.creation.destroy_test_db(old_name, verbosity=0)


def _server_version(connection: Any) -> str:
    if connection.vendor == "sqlite":
        import sqlite3

        return sqlite3.sqlite_version
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return str(cursor.fetchone()[0])


# --- the parent: one child process per backend -------------------------------------------------------


def _machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "usage/"], cwd=ROOT, capture_output=True, text=True)
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "commit": commit.stdout.strip() + (" (usage/ modified)" if dirty.stdout.strip() else ""),
    }


def _backends() -> list[tuple[str, dict[str, str]]]:
    embedded = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    backends = [("sqlite", embedded)]
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://", "pgsql://")):
        backends.append(("postgresql", dict(os.environ)))
    elif url:
        print(f"DATABASE_URL is not PostgreSQL ({url.split(':', 1)[0]}): only the embedded SQLite row is measured")
    return backends


def _print_table(results: list[dict[str, Any]]) -> None:
    print(
        f"\n{'backend':<12}{'variant':<9}{'events/s':>10}{'ms/batch':>10}{'CPU µs/ev':>11}{'driver':>9}"
        f"{'zstd':>7}{'Python':>9}{'accrual':>9}{'stats':>8}{'stmts/batch':>13}"
    )
    for result in results:
        for name, v in result["variants"].items():
            print(
                f"{result['backend']:<12}{name:<9}{v['events_per_s']:>10,.0f}{v['wall_ms_per_batch']:>10.1f}"
                f"{v['cpu_us_per_event']:>11.1f}{v['driver_cpu_us_per_event']:>9.1f}"
                f"{v['zstd_cpu_us_per_event']:>7.1f}{v['python_cpu_us_per_event']:>9.1f}{v['accrual_cpu_us_per_event']:>9.1f}"
                f"{v['stats_cpu_us_per_event']:>8.1f}{v['statements_per_batch']:>13.1f}"
            )
        before, after = result["variants"]["before"], result["variants"]["after"]
        print(
            f"{'':<12}{'÷':<9}{after['events_per_s'] / before['events_per_s']:>9.1f}x{'':>10}"
            f"{before['cpu_us_per_event'] / after['cpu_us_per_event']:>10.1f}x{'':>16}"
            f"{before['python_cpu_us_per_event'] / after['python_cpu_us_per_event']:>8.1f}x"
            f"{before['accrual_cpu_us_per_event'] / after['accrual_cpu_us_per_event']:>8.1f}x"
            f"{before['stats_cpu_us_per_event'] / after['stats_cpu_us_per_event']:>7.1f}x"
        )
        same = "identical" if result["stored_identical"] else "DIFFERENT"
        redis = "on" if result["redis"] else "off"
        print(
            f"{'':<12}stored rows, bodies, key counters and channel stats: {same} ({result['rows']} rows, "
            f"{result['bodies']} bodies; {result['server_version']}; Redis accrual {redis})"
        )
    print(
        "\nCPU µs/ev: the drainer thread's CPU per event. Of it, driver: inside SQL calls, COPY, commits and"
        "\ncloses (the driver, and SQLite's engine, mostly with the GIL released); zstd: body compression (GIL"
        "\nreleased too); Python: the rest, about the GIL time the request path loses. accrual, stats:"
        "\naccrue_batch and apply_batch, their SQL included (they overlap the other columns)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per variant (medians)")
    parser.add_argument("--profile", choices=("before", "after"), help="cProfile the last round of one variant")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        Path(options.child).write_text(json.dumps(run_child(options)))
        return
    results = []
    for name, env in _backends():
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            args = [sys.executable, __file__, "--child", out.name, *sys.argv[1:]]
            if subprocess.run(args, env=env, cwd=ROOT).returncode != 0:
                raise SystemExit(f"the {name} run failed")
            results.append(json.loads(Path(out.name).read_text()))
    _print_table(results)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": _machine(), "results": results}, indent=2) + "\n")
    print(f"\nload average {os.getloadavg()[0]:.2f}; written to {RESULTS.relative_to(ROOT)}")
    if not all(r["stored_identical"] for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
