"""The table, the ratios, the issue-5 targets, the JSON and the PNG of ``bench/compare.py``."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from client import SlowStreamsResult


@dataclass
class Round:
    """One target's numbers from one round."""

    rps: dict[int, float]  # concurrency -> req/s
    errors: int
    p50_ms: float | None  # at concurrency 1
    p99_ms: float | None
    ttft_ms: float | None
    cpu_s_per_1k: float | None
    rss_mb: float  # peak while under load
    backlog_peak: int | None = None  # usage rows queued in the gateway, most seen during the load runs
    backlog_end: int | None = None  # and right after them


@dataclass
class Outcome:
    """Everything measured of one target (or why it was not)."""

    name: str
    status: str = "ok"  # "ok", "missing: …", "failed: …"
    rounds: list[Round] = field(default_factory=list)
    streams: SlowStreamsResult | None = None
    streams_rss_mb: float | None = None
    sent: int = 0  # responses received, for the usage-row check
    rows: int | None = None
    drain_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.rounds)

    def median(self, key: str, concurrency: int | None = None) -> float | None:
        if concurrency is not None:
            values = [r.rps.get(concurrency) for r in self.rounds]
        else:
            values = [getattr(r, key) for r in self.rounds]
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    @property
    def rows_lost(self) -> int | None:
        return None if self.rows is None else max(0, self.sent - self.rows)

    def summary(self, concurrencies: list[int], base: Outcome | None) -> dict[str, Any]:
        """The medians of the rounds, and the latency added over ``base`` (the direct baseline)."""
        row: dict[str, Any] = {f"rps_c{c}": self.median("rps", c) for c in concurrencies}
        for key in ("p50_ms", "p99_ms", "ttft_ms", "cpu_s_per_1k", "rss_mb"):
            row[key] = self.median(key)
        for key in ("p50_ms", "p99_ms", "ttft_ms"):
            mine, theirs = row[key], base.median(key) if base and base.ok else None
            row[f"added_{key}"] = None if mine is None or theirs is None else mine - theirs
        row["errors"] = sum(r.errors for r in self.rounds)
        row["streams_rss_mb"] = self.streams_rss_mb
        row["streams_stalled"] = self.streams.stalled if self.streams else None
        row["streams_first_byte_max_s"] = self.streams.max_ttft_s if self.streams else None
        row["rows_lost"] = self.rows_lost
        peaks = [r.backlog_peak for r in self.rounds if r.backlog_peak is not None]
        ends = [r.backlog_end for r in self.rounds if r.backlog_end is not None]
        row["backlog_peak"] = max(peaks) if peaks else None
        row["backlog_end"] = max(ends) if ends else None
        return row


COLUMNS = [  # (header, summary key, format)
    ("req/s c{c}", "rps_c{c}", "{:.0f}"),
    ("p50 ms", "p50_ms", "{:.2f}"),
    ("p99 ms", "p99_ms", "{:.2f}"),
    ("+p50", "added_p50_ms", "{:+.2f}"),
    ("+p99", "added_p99_ms", "{:+.2f}"),
    ("TTFT ms", "ttft_ms", "{:.2f}"),
    ("+TTFT", "added_ttft_ms", "{:+.2f}"),
    ("CPU s/1k", "cpu_s_per_1k", "{:.2f}"),
    ("RSS MB", "rss_mb", "{:.0f}"),
    ("RSS str", "streams_rss_mb", "{:.0f}"),
    ("str stalled", "streams_stalled", "{}"),
    ("str wait s", "streams_first_byte_max_s", "{:.1f}"),
    ("errors", "errors", "{}"),
    ("rows lost", "rows_lost", "{}"),
    ("queue max", "backlog_peak", "{}"),
]


def columns(concurrencies: list[int]) -> list[tuple[str, str, str]]:
    expanded = []
    for header, key, fmt in COLUMNS:
        if "{c}" in key:
            expanded += [(header.format(c=c), key.format(c=c), fmt) for c in concurrencies]
        else:
            expanded.append((header, key, fmt))
    return expanded


def cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def table(outcomes: list[Outcome], summaries: dict[str, dict[str, Any]], concurrencies: list[int]) -> str:
    """One aligned line per measured target; missing and failed ones after them, with the reason."""
    cols = columns(concurrencies)
    header = ["target", *(h for h, _, _ in cols)]
    full = [[o.name, *(cell(summaries[o.name][k], f) for _, k, f in cols)] for o in outcomes if o.ok]
    widths = [max(len(r[i]) for r in [header, *full]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    lines = [line(header), *(line(r) for r in full)]
    lines += [f"{o.name.ljust(widths[0])}  {o.status}" for o in outcomes if not o.ok]
    return "\n".join(lines)


def ratio(mine: float | None, theirs: float | None) -> float | None:
    return mine / theirs if mine and theirs else None


def ratios(summaries: dict[str, dict[str, Any]], concurrencies: list[int]) -> dict[str, dict[str, float | None]]:
    """Each CliRelay row's throughput over Portkey's and LiteLLM's, per concurrency."""
    result: dict[str, dict[str, float | None]] = {}
    for name, row in summaries.items():
        if name.startswith("clirelay"):
            result[name] = {
                f"vs_{peer}_c{c}": ratio(row.get(f"rps_c{c}"), summaries.get(peer, {}).get(f"rps_c{c}"))
                for peer in ("portkey", "litellm")
                for c in concurrencies
            }
    return result


@dataclass(frozen=True)
class Check:
    """One of issue 5's targets, met or not, with the measured value."""

    goal: str
    value: str
    met: bool | None  # None: not measured


def at_least(goal: str, value: float | None, limit: float, fmt: str) -> Check:
    return Check(goal, cell(value, fmt), None if value is None else value >= limit)


def at_most(goal: str, value: float | None, limit: float, fmt: str) -> Check:
    return Check(goal, cell(value, fmt), None if value is None else value <= limit)


def checks(main: str, cross: str | None, summaries: dict[str, dict[str, Any]], concurrencies: list[int]) -> list[Check]:
    """Issue 5's targets for the ``main`` CliRelay row (the ``make run`` server)."""
    row = summaries.get(main, {})

    def rps(name: str, c: int) -> float | None:
        return summaries.get(name, {}).get(f"rps_c{c}")

    found = [
        at_least(f"req/s c{c} >= {goal:g}x {peer}", ratio(rps(main, c), rps(peer, c)), goal, "{:.2f}x")
        for c in concurrencies
        for peer, goal in (("portkey", 1.5), ("litellm", 5.0))
    ]
    found += [
        at_most("+p50 at c=1 <= 2 ms", row.get("added_p50_ms"), 2.0, "{:+.2f} ms"),
        at_most("+p99 at c=1 <= 5 ms", row.get("added_p99_ms"), 5.0, "{:+.2f} ms"),
        at_most("+TTFT p50 <= 1 ms", row.get("added_ttft_ms"), 1.0, "{:+.2f} ms"),
        at_most("slow streams: RSS <= 300 MB", row.get("streams_rss_mb"), 300, "{:.0f} MB"),
        at_most("slow streams: none stalled", row.get("streams_stalled"), 0, "{} stalled"),
        at_most("usage rows lost == 0", row.get("rows_lost"), 0, "{} lost"),
        # No growth: what is queued when the load stops is at most a few batches' worth.
        at_most("recorder queue after load <= 2000", row.get("backlog_end"), 2000, "{} queued"),
    ]
    if cross:
        found += [
            at_least(f"anthropic->openai c{c} >= 0.8x same-dialect", ratio(rps(cross, c), rps(main, c)), 0.8, "{:.2f}x")
            for c in concurrencies
        ]
    return found


def render_checks(main: str, found: list[Check]) -> str:
    marks = {True: "met", False: "MISSED", None: "n/a"}
    lines = [f"issue 5 targets for {main}:"]
    lines += [f"  {marks[c.met]:>6}  {c.goal:<42} {c.value}" for c in found]
    return "\n".join(lines)


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    data = asdict(outcome)
    data["rows_lost"] = outcome.rows_lost
    return data


def chart(
    path: Path, summaries: dict[str, dict[str, Any]], concurrencies: list[int], title: str, streams: int
) -> str | None:
    """A 2x2 PNG of the gateways (``direct`` only in the title): req/s, added latency, CPU, RSS.

    None when written, else why not.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"no chart: {exc}"
    names = [n for n in summaries if n != "direct"]
    direct = summaries.get("direct", {})
    baseline = ", ".join(f"c={c} {cell(direct.get(f'rps_c{c}'), '{:.0f}')}" for c in concurrencies)
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    panels = [
        ("req/s, higher is better", [f"rps_c{c}" for c in concurrencies], [f"c={c}" for c in concurrencies]),
        ("ms added over direct", ["added_p50_ms", "added_p99_ms", "added_ttft_ms"], ["p50 c=1", "p99 c=1", "TTFT p50"]),
        ("CPU seconds per 1,000 requests", ["cpu_s_per_1k"], ["CPU s/1k"]),
        ("RSS, MB", ["rss_mb", "streams_rss_mb"], ["under load", f"{streams} slow streams"]),
    ]
    for ax, (label, keys, legends) in zip(axes.flat, panels, strict=True):
        width = 0.8 / len(keys)
        for i, (key, legend) in enumerate(zip(keys, legends, strict=True)):
            values = [summaries[n].get(key) or 0 for n in names]
            ax.bar([x + i * width for x in range(len(names))], values, width, label=legend)
        ax.set_title(label)
        ax.set_xticks([x + width * (len(keys) - 1) / 2 for x in range(len(names))], names, rotation=15, fontsize=8)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title}\nthe fake upstream alone (direct): {baseline} req/s", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
