"""Run the real coding CLIs (Claude Code, Codex, Gemini CLI) headless against a base URL of our choosing.

    from tests.clis.harness import CliUnavailable, ensure_cli, run_claude

    if ensure_cli("claude") is None:
        pytest.skip(install_error("claude"))
    rc, out, err = run_claude(base_url, api_key, "Run `ls` and tell me", cwd=tmp_path, model="claude-sonnet-4-5")

* ``ensure_cli(name)`` installs the pinned npm package into ``$CLIRELAY_CLI_CACHE/<name>-<version>``
  (default ``<repo>/.cache/clis``, git-ignored) with ``npm install --prefix``, once; it returns the
  executable, or ``None`` when npm/node is missing or the registry cannot be reached (the reason is
  printed and kept in ``install_error(name)``).
* ``run_claude`` / ``run_codex`` / ``run_gemini`` run one non-interactive turn and return a ``CliResult``
  that unpacks as ``(returncode, stdout, stderr)``. Every run gets a fresh HOME (and CLAUDE_CONFIG_DIR,
  CODEX_HOME, ``~/.gemini``) that is deleted afterwards, an environment built from scratch (nothing of
  the caller's API keys or config leaks in), telemetry / update checks / feedback / usage statistics
  switched off, tools auto-approved, and a hard timeout that kills the whole process group.
* All three are pointed at ``base_url`` only. Anything else they might try to reach goes through
  ``HTTPS_PROXY``/``HTTP_PROXY``, which is a dead loopback port by default (so it fails at once and can
  never leave the machine), or — pass ``proxy=recording_server.url`` — a ``RecordingServer`` that logs
  each attempt as a leak. ``NO_PROXY`` covers 127.0.0.1/localhost, so the base URL is reached directly.

The pinned versions and what each CLI needs are described in ``tests/fixtures/clis/README.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# A port nothing listens on (discard): a proxy there refuses every connection at once.
DEAD_PROXY = "http://127.0.0.1:9"
LOOPBACK = "127.0.0.1,localhost,::1"
DEFAULT_TIMEOUT = 180.0
INSTALL_TIMEOUT = 900.0


@dataclass(frozen=True)
class CliSpec:
    name: str
    package: str
    version: str
    bin: str
    # What the CLI really needs from the machine's node. Claude Code's package says engines >=22, but
    # its `claude` is a native executable: node only runs the postinstall that links it (20 works).
    min_node: int


CLIS: dict[str, CliSpec] = {
    "claude": CliSpec("claude", "@anthropic-ai/claude-code", "2.1.330", "claude", min_node=18),
    "codex": CliSpec("codex", "@openai/codex", "0.169.0", "codex", min_node=16),
    "gemini": CliSpec("gemini", "@google/gemini-cli", "0.61.0", "gemini", min_node=20),
}

_install_errors: dict[str, str] = {}
_verified: dict[str, Path] = {}  # name -> executable already checked in this process


class CliUnavailable(RuntimeError):
    """The CLI is not installed and could not be installed (no npm/node, or no registry)."""


def cache_dir() -> Path:
    return Path(os.environ.get("CLIRELAY_CLI_CACHE") or REPO_ROOT / ".cache" / "clis")


def install_dir(name: str) -> Path:
    spec = CLIS[name]
    return cache_dir() / f"{name}-{spec.version}"


def cli_path(name: str) -> Path:
    return install_dir(name) / "node_modules" / ".bin" / CLIS[name].bin


def install_error(name: str) -> str:
    return _install_errors.get(name, f"{name} is not installed")


def node_major() -> int | None:
    node = shutil.which("node")
    if not node:
        return None
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"v(\d+)", out.strip())
    return int(match.group(1)) if match else None


def _installed_version(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        proc = subprocess.run(
            [str(path), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", ""), "HOME": tempfile.gettempdir(), "NO_COLOR": "1"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\d+\.\d+\.\d+", proc.stdout)
    return match.group(0) if match else None


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unavailable(name: str, reason: str) -> None:
    _install_errors[name] = reason
    print(f"[clis] {reason}", file=sys.stderr)


def ensure_cli(name: str, *, timeout: float = INSTALL_TIMEOUT) -> Path | None:
    """The pinned CLI's executable, installing it into the cache first if needed; None (with a printed
    reason in ``install_error(name)``) when it cannot be had."""
    spec = CLIS[name]
    path = cli_path(name)
    if _verified.get(name) == path:
        return path
    if _installed_version(path) == spec.version:
        _verified[name] = path
        return path
    npm, major = shutil.which("npm"), node_major()
    if npm is None or major is None:
        _unavailable(name, f"{name}: node/npm not found on PATH, cannot install {spec.package}@{spec.version}")
        return None
    if major < spec.min_node:
        _unavailable(name, f"{name}: node v{major} is older than the v{spec.min_node} {spec.package} needs")
        return None
    target = install_dir(name)
    with _lock(cache_dir() / f".{name}.lock"):
        if _installed_version(path) == spec.version:  # another process installed it meanwhile
            return path
        target.mkdir(parents=True, exist_ok=True)
        argv = [npm, "install", "--prefix", str(target), "--no-audit", "--no-fund", "--loglevel=error"]
        argv.append(f"{spec.package}@{spec.version}")
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            _unavailable(name, f"{name}: npm install {spec.package}@{spec.version} timed out after {timeout:.0f}s")
            return None
        took = time.monotonic() - started
        if proc.returncode != 0:
            lines = [ln.removeprefix("npm error").strip() for ln in (proc.stderr or proc.stdout).splitlines()]
            useful = [ln for ln in lines if len(ln) > 2 and not ln.startswith(("A complete log", "{", "}"))]
            tail = " | ".join(useful[:3])
            _unavailable(name, f"{name}: npm install {spec.package}@{spec.version} failed ({proc.returncode}): {tail}")
            return None
        print(f"[clis] installed {spec.package}@{spec.version} into {target} in {took:.1f}s", file=sys.stderr)
    if _installed_version(path) != spec.version:
        _unavailable(name, f"{name}: installed, but {path} --version does not report {spec.version}")
        return None
    _verified[name] = path
    return path


def _require(name: str, binary: Path | str | None) -> str:
    if binary is not None:
        return str(binary)
    path = ensure_cli(name)
    if path is None:
        raise CliUnavailable(install_error(name))
    return str(path)


# ------------------------------------------------------------------------------------------------- running


@dataclass
class CliResult:
    """Unpacks as ``(returncode, stdout, stderr)``; a timeout gives returncode -9 and ``timed_out``."""

    returncode: int
    stdout: str
    stderr: str
    argv: list[str] = field(default_factory=list)
    duration: float = 0.0
    timed_out: bool = False
    home: Path | None = None

    def __iter__(self) -> Iterator[object]:
        return iter((self.returncode, self.stdout, self.stderr))

    def describe(self) -> str:
        """Everything needed to diagnose a failed run, for assertion messages."""
        return (
            f"exit {self.returncode}{' (timed out)' if self.timed_out else ''} after {self.duration:.1f}s\n"
            f"argv: {self.argv}\n--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}"
        )


def _base_env(home: Path, proxy: str | None, extra_env: Mapping[str, str] | None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "USER": os.environ.get("USER", "clirelay"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "SHELL": "/bin/bash" if Path("/bin/bash").exists() else "/bin/sh",
        "TMPDIR": os.environ.get("TMPDIR", tempfile.gettempdir()),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "NO_PROXY": LOOPBACK,
        "no_proxy": LOOPBACK,
    }
    if proxy:
        for key in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
            env[key] = proxy
    env.update(extra_env or {})
    return env


def _homes_root() -> Path:
    # Not under /tmp: Codex refuses to create its helper aliases (apply_patch …) under the temp dir.
    root = Path(os.environ.get("CLIRELAY_CLI_HOMES") or cache_dir() / "homes")
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def _home(name: str, home: Path | None, keep: bool) -> Iterator[Path]:
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        yield home
        return
    made = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_homes_root()))
    try:
        yield made
    finally:
        if not keep:
            shutil.rmtree(made, ignore_errors=True)


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float, home: Path) -> CliResult:
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=str(cwd),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so a timeout can end the CLI and its children
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:  # a grandchild in its own process group still holds the pipes
            proc.kill()
            out, err = "", f"(output lost: a process started by the CLI kept its pipes open past {timeout}s)"
    code = -9 if timed_out else proc.returncode
    return CliResult(code, out or "", err or "", argv, time.monotonic() - started, timed_out, home)


def _shown(argv: list[str], secrets: Sequence[str]) -> list[str]:
    return ["***" if a in secrets else a for a in argv]


# ---------------------------------------------------------------------------------------------- Claude Code


def claude_env(
    base_url: str, api_key: str, home: Path, *, auth: str = "x-api-key", fail_fast: bool = True
) -> dict[str, str]:
    """The variables that make ``claude -p`` talk to ``base_url`` only, with ``api_key``, and nothing else.

    ``auth="x-api-key"`` sends the key as ``x-api-key`` (ANTHROPIC_API_KEY); ``auth="bearer"`` as
    ``Authorization: Bearer`` (ANTHROPIC_AUTH_TOKEN). ``fail_fast`` turns retries off: a refused or failing
    base URL then ends the run at once (exit 1, ``API Error: …``) instead of ~10 retries with backoff."""
    env = {
        "ANTHROPIC_BASE_URL": base_url.rstrip("/"),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        # The umbrella switch for non-essential traffic (updates, telemetry, error reporting, …). Without it
        # 2.1.330 opens ~5 connections to api.anthropic.com per run even with a custom base URL.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_UPDATES": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_BUG_COMMAND": "1",
        "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    }
    env["ANTHROPIC_AUTH_TOKEN" if auth == "bearer" else "ANTHROPIC_API_KEY"] = api_key
    if fail_fast:
        env["CLAUDE_CODE_MAX_RETRIES"] = "0"
    return env


def run_claude(
    base_url: str,
    api_key: str,
    prompt: str,
    cwd: Path | str,
    model: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    allowed_tools: Sequence[str] = ("Bash", "Read"),
    auth: str = "x-api-key",
    fail_fast: bool = True,
    output_format: str = "text",
    extra_args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    proxy: str | None = DEAD_PROXY,
    home: Path | None = None,
    keep_home: bool = False,
    binary: Path | str | None = None,
) -> CliResult:
    """``claude -p PROMPT`` against ``base_url`` (Anthropic Messages: POST {base_url}/v1/messages?beta=true)."""
    exe = _require("claude", binary)
    with _home("claude", home, keep_home) as h:
        argv = [exe, "-p", prompt, "--output-format", output_format, "--no-session-persistence"]
        if allowed_tools:
            argv += ["--allowedTools", ",".join(allowed_tools)]
        if model:
            argv += ["--model", model]
        argv += list(extra_args)
        env = _base_env(
            h, proxy, {**claude_env(base_url, api_key, h, auth=auth, fail_fast=fail_fast), **(extra_env or {})}
        )
        result = _run(argv, env, Path(cwd), timeout, h)
        result.argv = _shown(argv, [api_key])
        return result


# ----------------------------------------------------------------------------------------------------- Codex

CODEX_PROVIDER = "clirelay"
CODEX_KEY_ENV = "CLIRELAY_API_KEY"


def codex_config(base_url: str, model: str | None = None, *, fail_fast: bool = True) -> str:
    """``$CODEX_HOME/config.toml``: a custom Responses provider at ``{base_url}/v1``, nothing phoning home.

    ``fail_fast``: no retries, and no endless "Reconnecting... waiting for network" when the base URL
    refuses connections (the ``unbounded_connection_retries`` feature, on by default) — exit 1 at once."""
    root = base_url.rstrip("/")
    api_base = root if root.endswith("/v1") else f"{root}/v1"
    lines = []
    if model:
        lines.append(f"model = {json.dumps(model)}")
    lines += [
        f'model_provider = "{CODEX_PROVIDER}"',
        'approval_policy = "never"',
        "check_for_update_on_startup = false",
        "",
        "[analytics]",  # else events go to ab.chatgpt.com
        "enabled = false",
        "",
        "[feedback]",
        "enabled = false",
        "",
        "[features]",
        "plugins = false",  # else the plugin marketplace syncs from github.com / chatgpt.com at start
        f"unbounded_connection_retries = {'false' if fail_fast else 'true'}",
        "",
        f"[model_providers.{CODEX_PROVIDER}]",
        'name = "CliRelay"',
        f"base_url = {json.dumps(api_base)}",
        f'env_key = "{CODEX_KEY_ENV}"',
        'wire_api = "responses"',
        f"request_max_retries = {0 if fail_fast else 4}",
        f"stream_max_retries = {0 if fail_fast else 5}",
        "",
    ]
    return "\n".join(lines)


def run_codex(
    base_url: str,
    api_key: str,
    prompt: str,
    cwd: Path | str,
    model: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    sandbox: str | None = None,
    fail_fast: bool = True,
    extra_args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    proxy: str | None = DEAD_PROXY,
    home: Path | None = None,
    keep_home: bool = False,
    binary: Path | str | None = None,
) -> CliResult:
    """``codex exec PROMPT`` against ``base_url`` (OpenAI Responses: POST {base_url}/v1/responses).

    ``sandbox=None`` runs commands unsandboxed and unapproved
    (``--dangerously-bypass-approvals-and-sandbox``); ``"workspace-write"`` uses Codex's bubblewrap sandbox."""
    exe = _require("codex", binary)
    with _home("codex", home, keep_home) as h:
        codex_home = h / ".codex"
        codex_home.mkdir(parents=True, exist_ok=True)
        (codex_home / "config.toml").write_text(codex_config(base_url, fail_fast=fail_fast))
        argv = [exe, "exec", "--skip-git-repo-check", "--ephemeral", "--color", "never", "-C", str(cwd)]
        if sandbox:
            argv += ["--sandbox", sandbox]
        else:
            argv.append("--dangerously-bypass-approvals-and-sandbox")
        if model:
            argv += ["--model", model]
        argv += [*extra_args, prompt]
        env = _base_env(h, proxy, {"CODEX_HOME": str(codex_home), CODEX_KEY_ENV: api_key, **(extra_env or {})})
        result = _run(argv, env, Path(cwd), timeout, h)
        result.argv = _shown(argv, [api_key])
        return result


# ---------------------------------------------------------------------------------------------------- Gemini


def gemini_settings(*, fail_fast: bool = True) -> dict[str, object]:
    """``~/.gemini/settings.json``: API-key auth, no usage statistics, telemetry, updates or folder trust.

    ``fail_fast``: one attempt per model request (default 10, with backoff, also on "fetch failed")."""
    general: dict[str, object] = {"enableAutoUpdate": False, "enableAutoUpdateNotification": False}
    if fail_fast:
        general |= {"maxAttempts": 1, "retryFetchErrors": False}
    return {
        # GOOGLE_GEMINI_BASE_URL alone makes the CLI pick the "gateway" auth type, which `-p` rejects
        # ("Invalid auth method selected."): name the API-key type explicitly.
        "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
        "general": general,
        "privacy": {"usageStatisticsEnabled": False},  # else Clearcut events go to play.googleapis.com
        "telemetry": {"enabled": False},
        "tools": {"useRipgrep": False},
    }


def run_gemini(
    base_url: str,
    api_key: str,
    prompt: str,
    cwd: Path | str,
    model: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    fail_fast: bool = True,
    output_format: str = "text",
    extra_args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    proxy: str | None = DEAD_PROXY,
    home: Path | None = None,
    keep_home: bool = False,
    binary: Path | str | None = None,
) -> CliResult:
    """``gemini -p PROMPT --yolo`` against ``base_url``
    (Gemini API: POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse)."""
    exe = _require("gemini", binary)
    with _home("gemini", home, keep_home) as h:
        settings = h / ".gemini" / "settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(gemini_settings(fail_fast=fail_fast), indent=2))
        argv = [exe, "-p", prompt, "--yolo", "--output-format", output_format]
        if model:
            argv += ["--model", model]
        argv += list(extra_args)
        env = _base_env(
            h,
            proxy,
            {
                "GOOGLE_GEMINI_BASE_URL": base_url.rstrip("/"),
                "GEMINI_API_KEY": api_key,
                "GEMINI_CLI_TRUST_WORKSPACE": "true",  # else --yolo is downgraded in an untrusted folder
                "GEMINI_CLI_NO_RELAUNCH": "true",  # one node process instead of a relaunched child
                **(extra_env or {}),
            },
        )
        result = _run(argv, env, Path(cwd), timeout, h)
        result.argv = _shown(argv, [api_key])
        return result


RUNNERS = {"claude": run_claude, "codex": run_codex, "gemini": run_gemini}


def main() -> None:  # pragma: no cover - manual use: `python -m tests.clis.harness install`
    import argparse

    parser = argparse.ArgumentParser(description="Install the pinned CLIs into the cache")
    parser.add_argument("action", choices=["install", "versions"])
    parser.add_argument("names", nargs="*", default=list(CLIS))
    args = parser.parse_args()
    status = 0
    for name in args.names:
        if args.action == "install":
            started = time.monotonic()
            path = ensure_cli(name)
            took = time.monotonic() - started
            print(f"{name}: {path or install_error(name)} ({took:.1f}s)")
            status |= path is None
        else:
            print(f"{name}: pinned {CLIS[name].version}, installed {_installed_version(cli_path(name))}")
    raise SystemExit(status)


if __name__ == "__main__":  # pragma: no cover
    main()
