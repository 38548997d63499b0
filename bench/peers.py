"""Install and launch what ``bench/compare.py`` measures: the fake upstream, CliRelay, LiteLLM and Portkey.

Everything installed lives under ``.cache/bench/`` and is reused by later runs: LiteLLM in its own venv,
Portkey with npm, wrk from Debian. A peer that cannot be installed or started becomes a ``Missing`` row
with the reason (``compare.py`` marks one that answers wrongly as failed); none is skipped silently.
Each target runs as one process group (pinned to ``core`` with ``taskset`` when asked), its output in
``.cache/bench/logs/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
LOGS = CACHE / "logs"
BIN = Path(sys.executable).parent
LITELLM_VERSION = "1.106.2"
PORTKEY_VERSION = "1.15.2"
HONO_NODE_SERVER = "1.13.5"
UPSTREAM_KEY = "sk-bench-upstream"
LITELLM_MASTER_KEY = "sk-" + secrets.token_hex(32)
MODELS = ("bench-fast", "bench-slow")
SERVERS = ("uvicorn", "daphne", "granian")  # the first is make run's default


@dataclass
class Target:
    """A running thing to measure, and how a client talks to it."""

    name: str
    url: str
    headers: dict[str, str]
    dialect: str  # "openai" or "anthropic": the client dialect ``url`` and ``headers`` speak
    process: subprocess.Popen[bytes]
    database: Path | None = None  # CliRelay's SQLite file, to count usage rows

    @property
    def pid(self) -> int:
        return self.process.pid

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss_mb(self) -> float:
        """Resident memory of the whole process tree."""
        total = 0
        for process in self.tree():
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total / 2**20

    def cpu_seconds(self) -> float:
        """User + system CPU time of the whole process tree so far."""
        total = 0.0
        for process in self.tree():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def stop(self) -> None:
        stop_group(self.process)


@dataclass
class Missing:
    """A target that could not be installed, started or answered."""

    name: str
    reason: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(command: list[str], core: int | None) -> list[str]:
    return command if core is None else ["taskset", "-c", str(core), *command]


def launch(
    name: str, command: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    LOGS.mkdir(parents=True, exist_ok=True)
    log = (LOGS / f"{name}.log").open("wb")
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """End the process group this module started (its own session id), politely, then firmly."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_listening(process: subprocess.Popen[bytes], port: int, timeout: float) -> str | None:
    """None once ``port`` accepts connections; else why not (exited, timed out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"exited with code {process.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return None
        except OSError:
            time.sleep(0.2)
    return f"not listening after {timeout:.0f} s"


def run(command: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 900) -> str | None:
    """Run an install / setup step; None on success, else the tail of its output."""
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    return (done.stdout + done.stderr).strip()[-600:] or f"exit code {done.returncode}"


def log_tail(name: str) -> str:
    path = LOGS / f"{name}.log"
    return path.read_text(errors="replace").strip()[-400:] if path.exists() else ""


def started(target: Target, port: int, timeout: float) -> Target | Missing:
    problem = wait_listening(target.process, port, timeout)
    if problem is None:
        return target
    target.stop()
    return Missing(target.name, f"{problem}: {log_tail(target.name)}")


# --- wrk ------------------------------------------------------------------------------------


def ensure_wrk() -> tuple[str | None, str]:
    """The path of ``wrk``, installing Debian's package when missing; else None and why."""
    found = shutil.which("wrk")
    if found:
        return found, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "wrk not installed and apt-get unavailable (not root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    problem = run(["apt-get", "install", "-y", "-q", "wrk"], env=env)
    if problem:
        run(["apt-get", "update", "-q"], env=env)
        problem = run(["apt-get", "install", "-y", "-q", "wrk"], env=env)
    return shutil.which("wrk"), problem or ""


# --- the fake upstream and the direct baseline ------------------------------------------------


def start_upstream(core: int | None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, str(ROOT / "bench" / "upstream.py"), "--port", str(port)]
    process = launch("upstream", pinned(command, core))
    problem = wait_listening(process, port, 15)
    if problem:
        raise SystemExit(f"the fake upstream did not start ({problem}): {log_tail('upstream')}")
    return process, f"http://127.0.0.1:{port}/v1"


def direct(upstream: subprocess.Popen[bytes], base_url: str) -> Target:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {UPSTREAM_KEY}"}
    return Target("direct", f"{base_url}/chat/completions", headers, "openai", upstream)


# --- CliRelay ------------------------------------------------------------------------------------

CLIRELAY_CONFIG = """\
openai-compatibility:
  - name: bench-upstream
    base-url: "{base_url}"
    api-key-entries:
      - api-key: "{key}"
    models:
{models}
"""


def clirelay_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "CLIRELAY_CONFIG"}}
    env.update(
        DJANGO_SETTINGS_MODULE="gateway.settings",
        DATABASE_URL=f"sqlite:///{data_dir / 'clirelay.sqlite3'}",
        CLIRELAY_DATA_DIR=str(data_dir),
        DEBUG="false",
    )
    return env


def prepare_clirelay(base_url: str) -> tuple[Path, str] | str:
    """Migrate a fresh data dir, import a channel to the fake and issue a key: (template dir, key) or a problem.

    Every CliRelay instance gets a copy of this directory, so each has its own database (and usage rows)
    while the secrets, hence the key, stay the same.
    """
    template = CACHE / "clirelay-template"
    shutil.rmtree(template, ignore_errors=True)
    template.mkdir(parents=True)
    models = "\n".join(f'      - name: "{m}"\n        alias: "{m}"' for m in MODELS)
    config = template / "config.yaml"
    config.write_text(CLIRELAY_CONFIG.format(base_url=base_url, key=UPSTREAM_KEY, models=models))
    env = clirelay_env(template)
    manage = [sys.executable, "manage.py"]
    for step in (["migrate", "--noinput"], ["import_config", str(config)]):
        problem = run([*manage, *step], env=env)
        if problem:
            return f"manage.py {step[0]} failed: {problem}"
    try:
        done = subprocess.run([*manage, "create_api_key", "bench"], env=env, cwd=ROOT, capture_output=True, check=True)
    except subprocess.CalledProcessError as exc:
        return f"manage.py create_api_key failed: {exc.stderr.decode()[-400:]}"
    return template, done.stdout.decode().strip().splitlines()[-1]


def server_command(server: str, port: int) -> list[str]:
    """What serves ``gateway.asgi:application``: ``manage.py serve`` (``make run``'s own command) for
    uvicorn and Daphne, each as ``make run`` configures it (no access log: the request log has every
    request); granian is measured as a candidate only.
    """
    if server in ("uvicorn", "daphne"):
        return [sys.executable, "manage.py", "serve", "--server", server, "--host", "127.0.0.1", "--port", str(port)]
    if server == "granian":
        options = ["--interface", "asginl", "--workers", "1", "--loop", "uvloop", "--no-ws"]
        return [str(BIN / "granian"), "--host", "127.0.0.1", "--port", str(port), *options, "gateway.asgi:application"]
    raise ValueError(f"unknown server {server!r}; choose from {', '.join(SERVERS)}")


def start_clirelay(
    name: str, template: Path, key: str, server: str, dialect: str, core: int | None
) -> Target | Missing:
    data_dir = CACHE / f"data-{name}"
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.copytree(template, data_dir)
    port = free_port()
    env = clirelay_env(data_dir)
    process = launch(name, pinned(server_command(server, port), core), env=env)
    if dialect == "anthropic":
        url = f"http://127.0.0.1:{port}/v1/messages"
        headers = {"Content-Type": "application/json", "x-api-key": key, "anthropic-version": "2023-06-01"}
    else:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    target = Target(name, url, headers, dialect, process, database=data_dir / "clirelay.sqlite3")
    return started(target, port, 60)


# --- LiteLLM -------------------------------------------------------------------------------------


def ensure_litellm() -> Path | str:
    """The ``litellm`` CLI of the pinned proxy in its own venv, installed once; else why not."""
    venv = CACHE / "litellm-venv"
    stamp = venv / f".installed-{LITELLM_VERSION}"
    cli = venv / "bin" / "litellm"
    if stamp.exists() and cli.exists():
        return cli
    problem = run([sys.executable, "-m", "venv", str(venv)]) or run(
        [str(venv / "bin" / "pip"), "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"]
    )
    if problem:
        return f"pip install litellm[proxy]=={LITELLM_VERSION} failed: {problem}"
    stamp.touch()
    return cli


def start_litellm(base_url: str, core: int | None) -> Target | Missing:
    cli = ensure_litellm()
    if isinstance(cli, str):
        return Missing("litellm", cli)
    models = [
        {"model_name": m, "litellm_params": {"model": f"openai/{m}", "api_base": base_url, "api_key": UPSTREAM_KEY}}
        for m in MODELS
    ]
    config = CACHE / "litellm.yaml"
    # JSON is YAML. No database and no callbacks: the proxy at its lightest; it refuses to start
    # without a master key, which it then compares on every request.
    settings = {"master_key": LITELLM_MASTER_KEY}
    document = {"model_list": models, "general_settings": settings, "litellm_settings": {"telemetry": False}}
    config.write_text(json.dumps(document))
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    env.pop("DATABASE_URL", None)
    command = [str(cli), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    process = launch("litellm", pinned(command, core), env=env)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
    target = Target("litellm", f"http://127.0.0.1:{port}/v1/chat/completions", headers, "openai", process)
    return started(target, port, 180)


# --- Portkey -------------------------------------------------------------------------------------


def ensure_portkey() -> Path | str:
    """Portkey's ``start-server.js``, installed once with npm and the node-server override; else why not."""
    if not shutil.which("node") or not shutil.which("npm"):
        return "node / npm not installed"
    home = CACHE / "portkey"
    package = home / "node_modules" / "@portkey-ai" / "gateway"
    server = package / "build" / "start-server.js"
    if server.exists() and installed_version(package) == PORTKEY_VERSION:
        return server
    home.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": "clirelay-bench-portkey",
        "private": True,
        "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
        # 1.15.2's own @hono/node-server breaks streaming; 1.13.5 is the known-good one.
        "overrides": {"@hono/node-server": HONO_NODE_SERVER},
    }
    (home / "package.json").write_text(json.dumps(manifest, indent=2))
    problem = run(["npm", "install", "--no-audit", "--no-fund"], cwd=home)
    if problem:
        return f"npm install @portkey-ai/gateway@{PORTKEY_VERSION} failed: {problem}"
    return server if server.exists() else f"npm installed no {server.relative_to(home)}"


def installed_version(package: Path) -> str:
    try:
        return str(json.loads((package / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return ""


def start_portkey(base_url: str, core: int | None) -> Target | Missing:
    server = ensure_portkey()
    if isinstance(server, str):
        return Missing("portkey", server)
    port = free_port()
    env = {**os.environ, "NODE_ENV": "production"}
    command = ["node", str(server), f"--port={port}", "--headless"]
    process = launch("portkey", pinned(command, core), env=env, cwd=server.parent.parent)
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {UPSTREAM_KEY}",
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": base_url,
    }
    target = Target("portkey", f"http://127.0.0.1:{port}/v1/chat/completions", headers, "openai", process)
    return started(target, port, 60)
