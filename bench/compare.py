"""CliRelay against LiteLLM and Portkey behind one fast fake upstream: ``make bench``.

    make bench                                           # = .cache/bench/venv/bin/python bench/compare.py
    make bench BENCH_ARGS="--rounds 1 --duration 3 --streams 200"                # a quick look
    .cache/bench/venv/bin/python bench/compare.py --servers daphne --targets direct,clirelay --profile 10

Starts the fake upstream (``bench/upstream.py``), CliRelay under each ASGI server of ``--servers`` (plus
one Anthropic-client instance for the cross-dialect row), LiteLLM proxy and Portkey gateway, checks
every one answers correctly, then measures them round-robin for ``--rounds`` rounds and prints the
medians: req/s at each ``--concurrency``, p50/p99 at concurrency 1 and time to first token, all with
what they add over the upstream alone (``direct``), CPU seconds per 1,000 requests and RSS of the
target's process tree, and once per target ``--streams`` concurrent slow streams (RSS, stalls). For
CliRelay it also counts the usage rows written against the requests answered. The targets run on core
0, the load generator (wrk, or this process's Python client for streams) and the upstream on core 1.
Results go to ``bench/results/compare.json`` and ``compare.png``; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import peers
import pyspy
import report
from client import Request, measure_slow_streams, measure_ttft, one, smoke_problem
from loadgen import run_load
from peers import Missing, Target
from upstream import StreamPlan

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = ("direct", "clirelay", "clirelay-anthropic", "litellm", "portkey")


@dataclass
class Bench:
    """The run's settings and shared pieces."""

    args: argparse.Namespace
    wrk: str | None
    target_core: int | None
    load_core: int | None
    upstream_pid: int


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--concurrency", default="8,64", help="comma-separated throughput concurrencies")
    parser.add_argument("--ttft-requests", type=int, default=100, help="sequential streams per round for TTFT")
    parser.add_argument("--streams", type=int, default=1000, help="concurrent slow streams (0: skip)")
    parser.add_argument("--servers", default=",".join(peers.SERVERS), help="ASGI servers for CliRelay rows")
    parser.add_argument("--targets", default=",".join(TARGETS), help="which targets to run")
    parser.add_argument("--loadgen", choices=("wrk", "python"), default="wrk")
    parser.add_argument("--no-pin", action="store_true", help="do not pin targets and load to separate cores")
    parser.add_argument("--profile", type=float, default=0, help="py-spy the first CliRelay row for N s at c=64")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def body(model: str, stream: bool) -> bytes:
    """A chat request that both dialects accept (Anthropic requires ``max_tokens``; OpenAI takes it)."""
    messages = [{"role": "user", "content": "Say hello to the benchmark."}]
    data: dict[str, object] = {"model": model, "max_tokens": 64, "messages": messages}
    if stream:
        data["stream"] = True
    return json.dumps(data, separators=(",", ":")).encode()


def request(target: Target, model: str = "bench-fast", stream: bool = False) -> Request:
    return Request(target.url, target.headers, body(model, stream))


class PeakRss:
    """Samples a target's RSS every 0.2 s in a thread; ``peak`` is the largest seen."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.peak = target.rss_mb()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, self.target.rss_mb())

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, self.target.rss_mb())


class PeakBacklog:
    """Samples a CliRelay target's usage-recorder backlog (``/healthz``) every 0.2 s in a thread."""

    def __init__(self, target: Target) -> None:
        self.url = target.url.split("/v1/", 1)[0] + "/healthz" if target.database is not None else ""
        self.peak: int | None = None
        self.last: int | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def read(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=2) as answer:
                backlog = int(json.load(answer)["recorder"]["backlog"])
        except (OSError, ValueError, KeyError):
            return
        self.last = backlog
        self.peak = backlog if self.peak is None else max(self.peak, backlog)

    def sample(self) -> None:
        while not self.done.wait(0.2):
            self.read()

    def __enter__(self) -> PeakBacklog:
        if self.url:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.url:
            self.done.set()
            self.thread.join()
            self.read()


@contextlib.contextmanager
def upstream_on_target_core(bench: Bench, target: Target) -> Iterator[None]:
    """While ``direct`` is measured the upstream is the target, so it gets the target's core."""
    if target.name != "direct" or bench.target_core is None or bench.load_core is None:
        yield
        return
    os.sched_setaffinity(bench.upstream_pid, {bench.target_core})
    try:
        yield
    finally:
        os.sched_setaffinity(bench.upstream_pid, {bench.load_core})


def smoke(target: Target) -> str | None:
    """None when the target answers a plain and a streamed request correctly; else what went wrong."""
    for stream in (False, True):
        try:
            response = asyncio.run(one(request(target, stream=stream), wait_s=60))
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            return f"{'stream' if stream else 'request'} failed: {exc!r}"
        problem = smoke_problem(response, stream)
        if problem:
            return f"wrong {'stream' if stream else 'answer'}: {problem}"
    return None


def measure_round(bench: Bench, target: Target, outcome: report.Outcome) -> report.Round:
    args, concurrencies = bench.args, concurrency_list(bench.args)
    rps: dict[int, float] = {}
    errors = answered = 0
    with upstream_on_target_core(bench, target), PeakRss(target) as rss:
        cpu_before = target.cpu_seconds()
        with PeakBacklog(target) as backlog:
            for c in concurrencies:
                run = run_load(bench.wrk, target.name, request(target), c, args.duration, bench.load_core)
                rps[c], errors, answered = run.rps, errors + run.errors, answered + run.requests
        cpu = target.cpu_seconds() - cpu_before
        settle(target)
        latency = run_load(bench.wrk, target.name, request(target), 1, args.duration, bench.load_core)
        settle(target)
        ttft = asyncio.run(measure_ttft(request(target, stream=True), args.ttft_requests))
    outcome.sent += answered + latency.requests + len(ttft.samples_ms) + ttft.errors
    return report.Round(
        rps=rps,
        errors=errors + latency.errors + ttft.errors,
        p50_ms=latency.p50_ms,
        p99_ms=latency.p99_ms,
        ttft_ms=ttft.p50_ms,
        cpu_s_per_1k=cpu / answered * 1000 if answered else None,
        rss_mb=rss.peak,
        backlog_peak=backlog.peak,
        backlog_end=backlog.last,
    )


def settle(target: Target, idle_share: float = 0.05, patience: float = 30.0) -> float:
    """Wait until the target is idle again (under 5% of a core for 0.5 s; at most ``patience`` s).

    The latency rows measure one request at a time, as a lightly used gateway sees them; a target
    still working off the throughput runs (a log writer's backlog, garbage collection) would add that
    work to them instead. Applies to every target alike; returns the seconds waited.
    """
    started = time.monotonic()
    while time.monotonic() - started < patience:
        before = target.cpu_seconds()
        time.sleep(0.5)
        if target.cpu_seconds() - before < idle_share * 0.5:
            break
    return time.monotonic() - started


def measure_streams(bench: Bench, target: Target, outcome: report.Outcome) -> None:
    plan = StreamPlan()
    slow = request(target, model="bench-slow", stream=True)
    timeout = plan.slow_interval * plan.slow_chunks * 4 + 60
    with upstream_on_target_core(bench, target), PeakRss(target) as rss:
        result = asyncio.run(measure_slow_streams(slow, bench.args.streams, 4 * plan.slow_interval, timeout))
    outcome.streams, outcome.streams_rss_mb = result, rss.peak
    outcome.sent += result.completed


def count_rows(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as db:
        return int(db.execute("SELECT COUNT(*) FROM usage_requestlog").fetchone()[0])


def drain(target: Target, outcome: report.Outcome, patience: float = 30.0) -> None:
    """Wait until the usage writer catches up (the row count holds still for 2 s), then count."""
    assert target.database is not None
    started = time.monotonic()
    rows, still_since = count_rows(target.database), time.monotonic()
    while time.monotonic() - started < patience and time.monotonic() - still_since < 2:
        time.sleep(0.25)
        now = count_rows(target.database)
        if now != rows:
            rows, still_since = now, time.monotonic()
    outcome.rows, outcome.drain_s = rows, round(still_since - started, 2)


def concurrency_list(args: argparse.Namespace) -> list[int]:
    return [int(c) for c in str(args.concurrency).split(",") if c.strip()]


def start_targets(
    args: argparse.Namespace, upstream: subprocess.Popen[bytes], base_url: str, core: int | None
) -> list[Target | Missing]:
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    found: list[Target | Missing] = []
    if "direct" in wanted:
        found.append(peers.direct(upstream, base_url))
    if "clirelay" in wanted or "clirelay-anthropic" in wanted:
        prepared = peers.prepare_clirelay(base_url)
        rows = [(f"clirelay-{s}", s, "openai") for s in servers] if "clirelay" in wanted else []
        if "clirelay-anthropic" in wanted:
            rows.append((f"clirelay-{servers[0]}-anthropic", servers[0], "anthropic"))
        for name, server, dialect in rows:
            if isinstance(prepared, str):
                found.append(Missing(name, prepared))
            else:
                found.append(peers.start_clirelay(name, *prepared, server, dialect, core))
    if "litellm" in wanted:
        found.append(peers.start_litellm(base_url, core))
    if "portkey" in wanted:
        found.append(peers.start_portkey(base_url, core))
    return found


def cores(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """(target core, load core), or no pinning when asked or with fewer than two usable cores."""
    usable = sorted(os.sched_getaffinity(0))
    if args.no_pin or len(usable) < 2:
        return None, None
    return usable[0], usable[1]


def warm_up(bench: Bench, target: Target, outcome: report.Outcome) -> bool:
    """Check the target answers correctly, then give it 2 s of load; False (and why) when it does not."""
    problem = smoke(target)
    if problem:
        outcome.status = f"failed: {problem}"
        return False
    outcome.sent += 2 + run_load(bench.wrk, target.name, request(target), 8, 2, bench.load_core).requests
    return True


def run_all(bench: Bench, targets: list[Target | Missing]) -> list[report.Outcome]:
    outcomes = {t.name: report.Outcome(t.name) for t in targets}
    for missing in (t for t in targets if isinstance(t, Missing)):
        outcomes[missing.name].status = f"missing: {missing.reason}"
    live = [t for t in targets if isinstance(t, Target) and warm_up(bench, t, outcomes[t.name])]
    for index in range(bench.args.rounds):
        shift = index % len(live) if live else 0
        for target in live[shift:] + live[:shift]:
            say(f"round {index + 1}/{bench.args.rounds}: {target.name}")
            try:
                outcomes[target.name].rounds.append(measure_round(bench, target, outcomes[target.name]))
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                outcomes[target.name].status = f"failed in round {index + 1}: {exc} {peers.log_tail(target.name)}"
                live.remove(target)
    for target in live if bench.args.streams else []:
        say(f"{bench.args.streams} slow streams: {target.name}")
        measure_streams(bench, target, outcomes[target.name])
    for target in live:
        if target.database is not None:
            drain(target, outcomes[target.name])
    return [outcomes[t.name] for t in targets]


def profile(bench: Bench, targets: list[Target | Missing]) -> None:
    """py-spy the first CliRelay row under c=64 load; the summary goes to bench/results/profile-NAME.txt."""
    live = [t for t in targets if isinstance(t, Target) and t.database is not None and t.dialect == "openai"]
    if not live:
        return
    target, seconds = live[0], bench.args.profile
    raw = peers.CACHE / f"profile-{target.name}.raw"
    say(f"py-spy {target.name} for {seconds:g} s under c=64")

    def load() -> None:
        run_load(bench.wrk, target.name, request(target), 64, seconds + 2, bench.load_core)

    text = pyspy.record(target.pid, seconds, raw, load) or pyspy.summarise(raw)
    bench.args.out.mkdir(parents=True, exist_ok=True)
    (bench.args.out / f"profile-{target.name}.txt").write_text(text + "\n")
    print(f"\nprofile of {target.name} (bench/results/profile-{target.name}.txt):\n{text}\n")


def say(text: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {text}", flush=True)


def meta(args: argparse.Namespace, wrk: str | None, wrk_note: str) -> dict[str, object]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, check=False)
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit.stdout.strip() + ("+uncommitted changes" if dirty.stdout.strip() else ""),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), ""),
        "cpu_count": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "loadgen": "wrk" if wrk else f"python ({wrk_note or 'asked'})",
        "versions": {"litellm": peers.LITELLM_VERSION, "portkey": peers.PORTKEY_VERSION},
        "args": {k: str(v) for k, v in vars(args).items()},
    }


def write_results(args: argparse.Namespace, info: dict[str, object], outcomes: list[report.Outcome]) -> None:
    concurrencies = concurrency_list(args)
    direct = next((o for o in outcomes if o.name == "direct"), None)
    summaries = {o.name: o.summary(concurrencies, direct) for o in outcomes if o.ok}
    clirelay = [o.name for o in outcomes if o.ok and o.name.startswith("clirelay") and "anthropic" not in o.name]
    cross = next((o.name for o in outcomes if o.ok and "anthropic" in o.name), None)
    print()
    print(report.table(outcomes, summaries, concurrencies))
    ratios = report.ratios(summaries, concurrencies)
    for name, values in ratios.items():
        print(f"{name}: " + ", ".join(f"{k} {report.cell(v, '{:.2f}x')}" for k, v in values.items()))
    checks = report.checks(clirelay[0], cross, summaries, concurrencies) if clirelay else []
    if checks:
        print(report.render_checks(clirelay[0], checks))
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    document = {
        "meta": info,
        "summary": summaries,
        "ratios": ratios,
        "checks": [vars(c) for c in checks],
        "targets": [report.outcome_json(o) for o in outcomes],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps(document, indent=2) + "\n")
    title = f"make bench {info['date']} · {info['cpu_model']} · {args.rounds} rounds × {args.duration:g} s"
    problem = report.chart(args.out / "compare.png", summaries, concurrencies, title, args.streams)
    print(problem or f"wrote {args.out / 'compare.json'} and {args.out / 'compare.png'}")


def main() -> None:
    args = parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1,000 streams need 2,000+ sockets per gateway
    target_core, load_core = cores(args)
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})  # this process (the Python client) and what it spawns
    wrk, wrk_note = peers.ensure_wrk() if args.loadgen == "wrk" else (None, "")
    if args.loadgen == "wrk" and not wrk:
        say(f"wrk unavailable ({wrk_note}); the Python client generates the load")
    upstream, base_url = peers.start_upstream(load_core)
    targets: list[Target | Missing] = []
    try:
        say("starting the targets (the first run also installs LiteLLM and Portkey)")
        targets = start_targets(args, upstream, base_url, target_core)
        bench = Bench(args, wrk, target_core, load_core, upstream.pid)
        info = meta(args, wrk, wrk_note)
        outcomes = run_all(bench, targets)
        if args.profile:
            profile(bench, targets)
        write_results(args, info, outcomes)
    finally:
        for target in targets:
            if isinstance(target, Target) and target.name != "direct":
                target.stop()
        peers.stop_group(upstream)


if __name__ == "__main__":
    main()
