"""Micro-benchmark of stream translation: upstream SSE bytes -> IR events -> a client's SSE frames.

For every upstream family (openai, claude, gemini, responses) and every client dialect (openai chat,
responses, anthropic, gemini) it builds one long upstream answer in that family's exact wire format
(``bench/streams.py``), cuts it into network-sized reads and times ``StreamParser(req).feed(chunk)``
for every read plus ``finish()``, every event going through the client's ``StreamRenderer(req, ...)``
``.feed(event)`` plus ``finish()`` -- the loop ``gateway.pumps.pump_translated`` runs, minus the I/O.
It also times the same-dialect pass-throughs: ``openai_chat.StreamRelay`` for OpenAI, and the family
parser alone (it reads usage while the bytes go out unchanged) for the other three.

Every pair's output is verified (the text a client reads back must equal the upstream text, and the
stream must end the way its dialect ends one); a wrong answer exits 1, a slow one only says FAIL.
One process, one thread, ``time.perf_counter``, the median of several rounds. See bench/README.md.
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
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from streams import TRANSCRIPTS, text_pieces, text_problems

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway import ir  # noqa: E402
from gateway.dialects import (  # noqa: E402
    anthropic_messages,
    anthropic_stream,
    gemini,
    gemini_stream,
    openai_chat,
    openai_chat_stream,
    openai_responses,
    openai_responses_stream,
)

TARGET = 100_000  # text-delta events per second, per pair, on one core
UPSTREAMS = ("openai", "claude", "gemini", "responses")
CLIENTS = ("openai", "responses", "anthropic", "gemini")
NATIVE_CLIENT = {"openai": "openai", "claude": "anthropic", "gemini": "gemini", "responses": "responses"}
RESULTS = ROOT / "bench" / "results" / "translate.json"


class Parser(Protocol):
    def feed(self, chunk: bytes) -> list[ir.Event]: ...
    def finish(self) -> list[ir.Event]: ...


class Renderer(Protocol):
    def feed(self, event: ir.Event) -> bytes: ...
    def finish(self) -> bytes: ...


# As gateway.client_dialects.FAMILY_PARSERS (not imported: that module needs Django settings).
PARSERS: dict[str, Callable[[ir.Request | None], Parser]] = {
    "openai": openai_chat_stream.StreamParser,
    "claude": anthropic_stream.StreamParser,
    "gemini": gemini_stream.StreamParser,
    "responses": openai_responses_stream.StreamParser,
}
_PROMPT = "Write a long story."


def client_request(client: str) -> ir.Request:
    """A minimal streaming request in the client's dialect, through that dialect's own ``parse_request``."""
    if client == "openai":
        messages = [{"role": "user", "content": _PROMPT}]
        body = {"model": "gpt-4o", "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
        return openai_chat.parse_request(body)
    if client == "responses":
        return openai_responses.parse_request({"model": "gpt-5.4-codex", "input": _PROMPT, "stream": True})
    if client == "anthropic":
        messages = [{"role": "user", "content": _PROMPT}]
        body = {"model": "claude-sonnet-4-5", "max_tokens": 4096, "messages": messages, "stream": True}
        return anthropic_messages.parse_request(body, betas=())
    body = {"contents": [{"role": "user", "parts": [{"text": _PROMPT}]}]}
    return gemini.parse_request(body, "gemini-2.5-flash", stream=True)


def client_renderer(client: str, req: ir.Request) -> Renderer:
    """The renderer ``gateway.client_dialects.ClientDialect.renderer`` builds for this client."""
    if client == "anthropic":
        return anthropic_stream.StreamRenderer(req, input_tokens_estimate=12)
    if client == "gemini":
        return gemini_stream.StreamRenderer(req, sse=True)
    if client == "responses":
        return openai_responses_stream.StreamRenderer(req, codex_client=False)
    return openai_chat_stream.StreamRenderer(req)


# --- the loops being timed -----------------------------------------------------------------


def translate(upstream: str, client: str, req: ir.Request, chunks: list[bytes]) -> list[bytes]:
    """Upstream reads to client frames, one joined write per read, as ``pump_translated`` yields them."""
    parser = PARSERS[upstream](req)
    renderer = client_renderer(client, req)
    out: list[bytes] = []
    for chunk in chunks:
        events = parser.feed(chunk)
        if events:
            out.append(b"".join([renderer.feed(event) for event in events]))
    out.append(b"".join([renderer.feed(event) for event in parser.finish()]) + renderer.finish())
    return out


def relay_openai(chunks: list[bytes]) -> list[bytes]:
    """OpenAI to OpenAI: ``StreamRelay`` forwards whole events (this client did not ask for usage)."""
    relay = openai_chat.StreamRelay(False)
    out = [relay.feed(chunk) for chunk in chunks]
    out.append(relay.finish())
    return out


def parse_only(upstream: str, req: ir.Request, chunks: list[bytes]) -> list[ir.Event]:
    """Same dialect, other families: the bytes go out unchanged while the parser reads usage and errors."""
    parser = PARSERS[upstream](req)
    events: list[ir.Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.finish()
    return events


# --- the pairs -----------------------------------------------------------------------------


@dataclass
class Case:
    upstream: str
    client: str
    bytes_in: int
    run: Callable[[], Any]
    check: Callable[[Any], list[str]]  # what is wrong with one run's output
    bytes_out: Callable[[Any], int]


def _written(out: list[bytes]) -> int:
    return sum(map(len, out))


def translation_case(upstream: str, client: str, wire: bytes, chunks: list[bytes], expected: str) -> Case:
    req = client_request(client)
    return Case(
        upstream,
        client,
        len(wire),
        run=lambda: translate(upstream, client, req, chunks),
        check=lambda out: text_problems(client, b"".join(out), expected),
        bytes_out=_written,
    )


def relay_case(wire: bytes, chunks: list[bytes], expected: str) -> Case:
    def check(out: list[bytes]) -> list[str]:
        stream = b"".join(out)
        problems = text_problems("openai", stream, expected)
        if b'"usage":{' in stream:
            problems.append("the usage-only chunk reached a client that did not ask for it")
        return problems

    return Case("openai", "openai (relay)", len(wire), lambda: relay_openai(chunks), check, _written)


def passthrough_case(upstream: str, wire: bytes, chunks: list[bytes], expected: str) -> Case:
    client = NATIVE_CLIENT[upstream]
    req = client_request(client)

    def check(events: list[ir.Event]) -> list[str]:
        text = "".join(e.text for e in events if isinstance(e, ir.TextDelta))
        problems = [] if text == expected else ["the parsed text differs from the upstream text"]
        if not events or not isinstance(events[-1], ir.End):
            problems.append("the parser did not end the stream")
        return problems

    def run() -> list[ir.Event]:
        return parse_only(upstream, req, chunks)

    return Case(upstream, f"{client} (pass-through)", len(wire), run, check, lambda _: len(wire))


def cases(pieces: list[str], chunk_size: int) -> list[Case]:
    """Every upstream -> client pair, each family followed by its same-dialect pass-through."""
    expected = "".join(pieces)
    found = []
    for upstream in UPSTREAMS:
        wire = TRANSCRIPTS[upstream](pieces)
        chunks = [wire[i : i + chunk_size] for i in range(0, len(wire), chunk_size)]
        found += [translation_case(upstream, client, wire, chunks, expected) for client in CLIENTS]
        if upstream == "openai":
            found.append(relay_case(wire, chunks, expected))
        else:
            found.append(passthrough_case(upstream, wire, chunks, expected))
    return found


# --- measuring -----------------------------------------------------------------------------


@dataclass
class Result:
    upstream: str
    client: str
    text_events: int
    bytes_in: int
    bytes_out: int
    median_s: float
    best_s: float
    cpu_median_s: float  # process time: well below median_s means other processes took the core
    events_per_s: int
    us_per_event: float
    target_events_per_s: int
    passed: bool
    verified: bool
    problems: list[str]


def measure(plan: list[Case], text_events: int, repeat: int) -> list[Result]:
    """The median wall time of each pair over ``repeat`` rounds, after one verified warm-up run each.

    Rounds go round-robin over the pairs so load from other processes spreads over all of them instead
    of spoiling one. The last timed run of every pair is verified too.
    """
    problems = [case.check(case.run()) for case in plan]
    walls: list[list[float]] = [[] for _ in plan]
    cpus: list[list[float]] = [[] for _ in plan]
    last: list[Any] = [None] * len(plan)
    for _ in range(repeat):
        for n, case in enumerate(plan):
            gc.collect()
            cpu, wall = time.process_time(), time.perf_counter()
            last[n] = case.run()
            walls[n].append(time.perf_counter() - wall)
            cpus[n].append(time.process_time() - cpu)
    results = []
    for n, case in enumerate(plan):
        found = sorted(set(problems[n] + case.check(last[n])))
        median = statistics.median(walls[n])
        rate = text_events / median
        results.append(
            Result(
                case.upstream,
                case.client,
                text_events,
                case.bytes_in,
                case.bytes_out(last[n]),
                median_s=round(median, 6),
                best_s=round(min(walls[n]), 6),
                cpu_median_s=round(statistics.median(cpus[n]), 6),
                events_per_s=round(rate),
                us_per_event=round(median / text_events * 1e6, 3),
                target_events_per_s=TARGET,
                passed=rate >= TARGET and not found,
                verified=not found,
                problems=found,
            )
        )
    return results


def table(results: list[Result]) -> str:
    rows = [("upstream", "client", "events/s", "µs/event", "target", "pass/fail")]
    for r in results:
        verdict = "pass" if r.passed else "FAIL" if r.verified else "FAIL (wrong output)"
        rate, cost = f"{r.events_per_s:,}", f"{r.us_per_event:.2f}"
        rows.append((r.upstream, r.client, rate, cost, f"≥{TARGET:,}", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(w) if i in (2, 3) else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- the report ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": model or platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "processes": 1,
        "threads": 1,
    }


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain") else "")
    except (OSError, subprocess.CalledProcessError):
        return ""


def report(args: argparse.Namespace, info: dict[str, Any], results: list[Result]) -> dict[str, Any]:
    return {
        "benchmark": "translate",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "orjson": orjson.__version__,
        },
        "machine": info,
        "commit": git_commit(),
        "parameters": {
            "deltas": args.deltas,
            "delta_chars": [3, 8],
            "chunk_bytes": args.chunk,
            "repeat": args.repeat,
            "statistic": "median wall time (time.perf_counter)",
        },
        "target_events_per_s": TARGET,
        "results": [asdict(r) for r in results],
    }


def profile(pair: str, pieces: list[str], chunk_size: int, top: int) -> None:
    """cProfile one ``upstream:client`` pair (client as printed in the table) and print the heaviest functions."""
    upstream, _, client = pair.partition(":")
    found = [c for c in cases(pieces, chunk_size) if (c.upstream, c.client) == (upstream, client)]
    if not found:
        raise SystemExit(f"no pair {pair!r}: upstreams {UPSTREAMS}, clients {CLIENTS} or a pass-through row's name")
    found[0].run()
    profiler = cProfile.Profile()
    profiler.runcall(found[0].run)
    pstats.Stats(profiler).strip_dirs().sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--deltas", type=int, default=20_000, help="text deltas per stream (default 20000)")
    parser.add_argument("--chunk", type=int, default=4096, help="bytes per upstream read (default 4096)")
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds; the median counts (default 7)")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where the results go (bench/results/)")
    parser.add_argument("--profile", metavar="UPSTREAM:CLIENT", help="cProfile one pair instead, e.g. gemini:responses")
    parser.add_argument("--top", type=int, default=25, help="functions --profile shows (default 25)")
    args = parser.parse_args()

    pieces = text_pieces(args.deltas)
    if args.profile:
        profile(args.profile, pieces, args.chunk, args.top)
        return
    info = machine()
    print(
        f"stream translation: {args.deltas:,} text deltas a stream, {args.chunk:,}-byte reads, median of {args.repeat}"
    )
    print(f"Python {platform.python_version()} ({platform.python_implementation()}), orjson {orjson.__version__}")
    print(f"{info['cpu_model']}: {info['cpu_count']} CPUs ({info['cpus_usable']} usable); 1 process, 1 thread\n")
    results = measure(cases(pieces, args.chunk), args.deltas, args.repeat)
    print(table(results))
    busy = [r for r in results if r.median_s > 1.1 * r.cpu_median_s]
    if busy:
        share = f"{len(busy)} of {len(results)} pairs"
        print(f"\nnote: {share} got under 91% of a core (wall vs CPU time): other load, rerun when quiet")
    for r in results:
        for problem in r.problems:
            print(f"{r.upstream} -> {r.client}: {problem}", file=sys.stderr)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report(args, info, results), indent=2, ensure_ascii=False) + "\n")
    written, here = args.json.resolve(), Path.cwd()
    print(f"\nwrote {written.relative_to(here) if written.is_relative_to(here) else written}")
    if not all(r.verified for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
