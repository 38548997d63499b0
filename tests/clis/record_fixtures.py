"""Re-record ``tests/fixtures/clis/``: what the real CLIs send, captured by the recording server.

    .venv/bin/python -m tests.clis.record_fixtures            # all three CLIs
    .venv/bin/python -m tests.clis.record_fixtures codex      # one

Each scenario runs one CLI through the two-step tool exchange (tool call, then final text) with the harness
and writes every request it made as ``<cli>/<scenario>.<nn>-<role>.json`` (role: ``first-turn`` — answered
with the tool call; ``tool-result`` — carries the tool's output, answered with the final text;
``side-request`` — anything else, e.g. Gemini's model-router classifier), plus ``manifest.json``.
Secrets are masked by the recording server; bodies are byte-for-byte what was sent, decoded as JSON.
The home and working directories are fixed paths (``/var/tmp/clirelay-fixtures/<cli>/…``) so that
re-recording only changes what the CLI itself changed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from tests.clis import harness
from tests.clis.recording_server import EXPECTED_TOOL_OUTPUT, RecordingServer

FIXTURES = harness.REPO_ROOT / "tests" / "fixtures" / "clis"
WORK = Path("/var/tmp/clirelay-fixtures")
API_KEY = "sk-clirelay-fixture-secret"
PROMPT = "Run the CliRelay proof command with your shell tool, then tell me exactly what it printed."

# cli -> [(scenario, model flag, extra harness kwargs)]
SCENARIOS: dict[str, list[tuple[str, str | None, dict[str, Any]]]] = {
    "claude": [
        ("default", None, {}),
        ("sonnet-4-5", "claude-sonnet-4-5", {}),
    ],
    "codex": [
        ("default", None, {}),
        ("gpt-5.5", "gpt-5.5", {}),
        ("unknown-model", "clirelay-test-model", {}),
    ],
    "gemini": [
        ("default", None, {}),
        ("gemini-2.5-pro", "gemini-2.5-pro", {}),
    ],
}
ROLES = {"tool": "first-turn", "final": "tool-result"}


def record(cli: str, scenario: str, model: str | None, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    base = WORK / cli / scenario
    shutil.rmtree(base, ignore_errors=True)
    cwd, home = base / "cwd", base / "home"
    cwd.mkdir(parents=True)
    with RecordingServer() as srv:
        result = harness.RUNNERS[cli](srv.url, API_KEY, PROMPT, cwd, model, 180, proxy=srv.url, home=home, **kwargs)
    problems = []
    if result.returncode != 0 or EXPECTED_TOOL_OUTPUT not in result.stdout:
        problems.append(f"run failed:\n{result.describe()}")
    if srv.leaks:
        problems.append(f"tried to reach: {[r.path for r in srv.leaks]}")
    if problems:
        raise SystemExit(f"{cli}/{scenario}: " + "\n".join(problems))
    argv = [cli, *result.argv[1:]]
    out_dir = FIXTURES / cli
    entries = []
    for rec in srv.requests:
        role = ROLES.get(rec.reply, "side-request")
        name = f"{scenario}.{rec.seq:02d}-{role}.json"
        doc = {
            "cli": cli,
            "cli_version": harness.CLIS[cli].version,
            "scenario": scenario,
            "model_flag": model,
            "argv": argv,
            "seq": rec.seq,
            "role": role,
            "answered_with": rec.reply,
            "request": {
                "method": rec.method,
                "path": rec.path,
                "query": rec.query,
                "headers": rec.headers,
                "body": rec.body,
            },
        }
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        if API_KEY in text:
            raise SystemExit(f"{cli}/{scenario}: the API key leaked into {name}")
        (out_dir / name).write_text(text)
        body = rec.body if isinstance(rec.body, dict) else {}
        entries.append(
            {
                "file": f"{cli}/{name}",
                "cli": cli,
                "scenario": scenario,
                "role": role,
                "method": rec.method,
                "path": rec.path,
                "model": body.get("model") or rec.path.split("/models/")[-1].split(":")[0],
            }
        )
    shutil.rmtree(base, ignore_errors=True)
    print(f"{cli}/{scenario}: {len(entries)} requests, {result.duration:.1f}s", file=sys.stderr)
    return entries


def main() -> None:
    names = sys.argv[1:] or list(SCENARIOS)
    manifest_path = FIXTURES / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"fixtures": []}
    kept = [e for e in manifest["fixtures"] if e["cli"] not in names]
    for cli in names:
        if harness.ensure_cli(cli) is None:
            raise SystemExit(harness.install_error(cli))
        out_dir = FIXTURES / cli
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("*.json"):
            old.unlink()
        for scenario, model, kwargs in SCENARIOS[cli]:
            kept += record(cli, scenario, model, kwargs)
    manifest = {
        "versions": {name: spec.version for name, spec in harness.CLIS.items()},
        "fixtures": sorted(kept, key=lambda e: e["file"]),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
