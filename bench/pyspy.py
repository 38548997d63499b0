"""Where a gateway process spends its time under load: py-spy samples it from outside, this sums the stacks.

``record(pid, seconds, raw, load)`` runs ``py-spy record --format raw --gil`` (child processes included,
the target never paused) while ``load()`` drives the process. ``--gil`` keeps only the thread holding
the GIL: one process has one core's worth of Python, and this shows where it goes. ``summarise(raw)``
turns the collapsed stacks into three short lists: the functions where samples land (self), the
functions on the stack (inclusive), and the share of samples by code area (Django, the ASGI server,
httpx, our apps, asyncio …).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

PY_SPY = Path(sys.executable).parent / "py-spy"
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")
AREAS = (  # (label, how the frame's file starts as py-spy prints it), first match wins
    *((f"{app}/", (f"{app}/",)) for app in ("gateway", "accounts", "channels_app", "usage")),
    ("django", ("django/",)),
    ("ninja / pydantic", ("ninja/", "pydantic")),
    ("httpx / httpcore", ("httpx/", "httpcore/", "h11/", "anyio/")),
    ("daphne / twisted", ("daphne", "twisted/", "autobahn/", "txaio/")),
    ("uvicorn", ("uvicorn/",)),
    ("asgiref (thread hops)", ("asgiref/",)),
    ("channels", ("channels/",)),
    ("whitenoise", ("whitenoise/",)),
    ("asyncio", ("asyncio/",)),
    ("threads (threading, concurrent.futures, queue)", ("threading.py", "concurrent/", "queue.py")),
    ("logging", ("logging/",)),
    ("sqlite3", ("sqlite3/",)),
)


def record(pid: int, seconds: float, raw: Path, load: Callable[[], object]) -> str | None:
    """Sample ``pid`` (and its children) for ``seconds`` while ``load()`` runs; None, or why it failed."""
    if not PY_SPY.exists():
        return f"py-spy not installed at {PY_SPY}"
    command = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    command += ["--rate", "250", "--format", "raw", "--output", str(raw), "--nonblocking", "--subprocesses", "--gil"]
    spy = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    load()
    output, _ = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not raw.exists():
        return f"py-spy failed ({spy.returncode}): {output.decode(errors='replace')[-400:]}"
    return None


def frames(stack: str) -> list[tuple[str, str]]:
    """(``func (file)``, file) per frame, outermost first; line numbers and the process frame dropped."""
    parsed = []
    for frame in stack.split(";"):
        match = FRAME.match(frame.strip())
        if match:
            parsed.append((f"{match['func']} ({match['file']})", match["file"]))
        elif not frame.startswith("process "):
            parsed.append((frame.strip(), ""))
    return parsed


def area(path: str) -> str:
    return next((label for label, starts in AREAS if path.startswith(starts)), "other (stdlib, C extensions)")


def summarise(raw: Path, top: int = 15) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        stack_frames = frames(stack)
        if not stack_frames:
            continue
        own[stack_frames[-1][0]] += count
        areas[area(stack_frames[-1][1])] += count
        for name in {name for name, _ in stack_frames}:
            inclusive[name] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples of the thread holding the GIL", "", "self (where samples land):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive (on the stack):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top * 2)]
    lines += ["", "self time by code area (the leaf frame's file):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in areas.most_common()]
    return "\n".join(lines)
