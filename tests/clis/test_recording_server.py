"""The CLI harness and the recording server, proved on the real CLIs.

Tests marked ``cli`` run ``claude -p``, ``codex exec`` and ``gemini -p`` (pinned npm packages, installed into
``$CLIRELAY_CLI_CACHE`` on first use, skipped with npm's reason when the registry is unreachable) through
a two-step exchange: the server answers the first turn with a call to the CLI's own shell tool running
``printf 'CLIRELAY_%d\\n' 0x2a``, the CLI runs it and sends ``CLIRELAY_42`` back, the server answers with
the final text, and the CLI prints it and exits 0. Deselect them with ``-m "not cli"``.

The unmarked tests check the recording server's wire formats directly, with no CLI.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.clis import harness
from tests.clis.recording_server import (
    DEFAULT_FINAL_TEXT,
    EXPECTED_TOOL_OUTPUT,
    RecordingServer,
    tool_results,
)

API_KEY = "sk-clirelay-harness-secret"
PROMPT = "Run the CliRelay proof command with your shell tool, then tell me exactly what it printed."
TIMEOUT = 150.0

# (cli, model flag, dialect, auth header, shell tool the server should have called)
CASES = [
    pytest.param("claude", None, "anthropic", "x-api-key", "Bash", id="claude-default"),
    pytest.param("codex", None, "responses", "authorization", "exec", id="codex-default-code-mode"),
    pytest.param("codex", "gpt-5.5", "responses", "authorization", "exec_command", id="codex-gpt-5.5"),
    pytest.param("gemini", None, "gemini", "x-goog-api-key", "run_shell_command", id="gemini-default-router"),
    pytest.param("gemini", "gemini-2.5-pro", "gemini", "x-goog-api-key", "run_shell_command", id="gemini-2.5-pro"),
]


def _called_tool(dialect: str, body: dict[str, Any]) -> str | None:
    """The name of the tool call the CLI echoes back in its history (the one the server asked for)."""
    if dialect == "anthropic":
        for message in body["messages"]:
            for block in message["content"] if isinstance(message["content"], list) else []:
                if block.get("type") == "tool_use":
                    return str(block["name"])
    if dialect == "responses":
        for item in body["input"]:
            if item.get("type") in ("function_call", "custom_tool_call"):
                return str(item["name"])
    if dialect == "gemini":
        for content in body["contents"]:
            for part in content["parts"]:
                if "functionCall" in part:
                    return str(part["functionCall"]["name"])
    return None


@pytest.mark.cli
@pytest.mark.parametrize(("cli", "model", "dialect", "auth_header", "tool"), CASES)
def test_cli_runs_its_tool_and_prints_the_final_answer(
    cli: str,
    model: str | None,
    dialect: str,
    auth_header: str,
    tool: str,
    require_cli: Callable[[str], Path],
    recording_server: RecordingServer,
    cli_cwd: Path,
) -> None:
    require_cli(cli)
    srv = recording_server
    result = harness.RUNNERS[cli](srv.url, API_KEY, PROMPT, cli_cwd, model, TIMEOUT, proxy=srv.url)
    trail = "\n".join(srv.summary())
    context = f"{result.describe()}\n--- requests ---\n{trail}"

    assert result.returncode == 0, context
    assert DEFAULT_FINAL_TEXT in result.stdout, context
    assert EXPECTED_TOOL_OUTPUT in result.stdout, context  # relayed: the CLI ran the tool and sent the output

    turns = srv.of(dialect, {"tool", "final"})
    assert [r.reply for r in turns] == ["tool", "final"], context
    first, second = turns
    assert not tool_results(dialect, first.body), "the first turn must not carry a tool result yet"
    assert any(EXPECTED_TOOL_OUTPUT in text for text in tool_results(dialect, second.body)), context
    assert _called_tool(dialect, second.body) == tool, context
    if model:
        sent = second.body.get("model") or second.path.split("/models/")[-1].split(":")[0]
        assert sent == model

    assert not srv.leaks, f"{cli} tried to reach {[r.path for r in srv.leaks]}"
    for rec in srv.requests:
        assert API_KEY not in json.dumps(rec.headers)
        assert rec.headers.get(auth_header, "").endswith("***MASKED***"), rec.headers
    assert not list(cli_cwd.iterdir()), "the CLI left files in the project folder"


@pytest.mark.cli
def test_claude_bearer_auth_and_model_flag(
    require_cli: Callable[[str], Path], recording_server: RecordingServer, cli_cwd: Path
) -> None:
    """ANTHROPIC_AUTH_TOKEN instead of ANTHROPIC_API_KEY: the key travels as ``Authorization: Bearer``."""
    require_cli("claude")
    srv = recording_server
    result = harness.run_claude(
        srv.url, API_KEY, PROMPT, cli_cwd, "claude-sonnet-4-5", TIMEOUT, auth="bearer", proxy=srv.url
    )
    assert result.returncode == 0, result.describe()
    assert EXPECTED_TOOL_OUTPUT in result.stdout
    messages = srv.of("anthropic")
    assert messages and all(r.body["model"] == "claude-sonnet-4-5" for r in messages)
    assert all(r.headers.get("authorization") == "Bearer ***MASKED***" for r in messages)
    assert all("x-api-key" not in r.headers for r in messages)
    assert not srv.leaks


@pytest.mark.cli
def test_timeout_kills_the_cli(require_cli: Callable[[str], Path], cli_cwd: Path) -> None:
    """A base URL that never answers: the harness's timeout ends the run instead of hanging the suite."""
    import socket

    require_cli("codex")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = harness.run_codex(url, API_KEY, PROMPT, cli_cwd, "gpt-5.5", timeout=5)
    assert result.timed_out and result.returncode == -9
    assert result.duration < 40


@pytest.mark.cli
@pytest.mark.parametrize("cli", ["claude", "codex", "gemini"])
def test_refused_base_url_fails_fast(cli: str, require_cli: Callable[[str], Path], cli_cwd: Path) -> None:
    """With the harness's fail-fast settings a dead gateway ends the run with exit 1 in seconds (by default
    Claude Code and Gemini CLI retry ~10 times with backoff, and Codex waits for the network forever)."""
    require_cli(cli)
    result = harness.RUNNERS[cli](harness.DEAD_PROXY, API_KEY, PROMPT, cli_cwd, None, 60)
    assert result.returncode == 1 and not result.timed_out, result.describe()
    assert result.duration < 30, result.describe()


# --------------------------------------------------------------------------- the server alone (no CLI needed)


def _post(srv: RecordingServer, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _sse_data(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ") and line[6:] != "[DONE]"]


def test_anthropic_two_steps_and_masking(recording_server: RecordingServer) -> None:
    srv = recording_server
    tools = [{"name": "Bash", "input_schema": {"type": "object"}}]
    first = {"model": "m", "stream": True, "tools": tools, "messages": [{"role": "user", "content": "go"}]}
    status, text = _post(srv, "/v1/messages?beta=true", first, {"x-api-key": API_KEY})
    events = _sse_data(text)
    assert status == 200
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    assert events[1]["content_block"]["type"] == "tool_use" and events[1]["content_block"]["name"] == "Bash"
    args = json.loads("".join(e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"))
    assert args["command"] == srv.script.command
    assert any(e.get("delta", {}).get("stop_reason") == "tool_use" for e in events)

    result = [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "CLIRELAY_42\n"}]}]
    second = {**first, "stream": False, "messages": [*first["messages"], {"role": "user", "content": result}]}
    status, text = _post(srv, "/v1/messages", second)
    message = json.loads(text)
    assert message["stop_reason"] == "end_turn"
    assert message["content"][0]["text"] == f"{DEFAULT_FINAL_TEXT} Tool output: CLIRELAY_42"
    assert [r.reply for r in srv.requests] == ["tool", "final"]
    assert srv.requests[0].headers["x-api-key"] == "***MASKED***" and srv.requests[0].query == {"beta": ["true"]}
    assert tool_results("anthropic", srv.requests[1].body) == ["CLIRELAY_42\n"]


def test_responses_classic_and_code_mode_tools(recording_server: RecordingServer) -> None:
    srv = recording_server
    classic = {"type": "function", "name": "exec_command", "parameters": {"properties": {"cmd": {"type": "string"}}}}
    _, text = _post(srv, "/v1/responses", {"model": "m", "stream": True, "tools": [classic], "input": []})
    events = _sse_data(text)
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    call = events[-1]["response"]["output"][0]
    assert call["type"] == "function_call" and json.loads(call["arguments"]) == {"cmd": srv.script.command}

    code_mode = {
        "type": "additional_tools",
        "tools": [{"type": "namespace", "name": "functions", "tools": [{"type": "custom", "name": "exec"}]}],
    }
    _, text = _post(srv, "/v1/responses", {"model": "m", "stream": True, "tools": [], "input": [code_mode]})
    call = _sse_data(text)[-1]["response"]["output"][0]
    assert call["type"] == "custom_tool_call" and "tools.exec_command" in call["input"]

    done = [
        code_mode,
        {"type": "custom_tool_call_output", "call_id": "c", "output": [{"type": "input_text", "text": "CLIRELAY_42"}]},
    ]
    _, text = _post(srv, "/v1/responses", {"model": "m", "stream": True, "input": done})
    final = _sse_data(text)[-1]["response"]["output"][0]
    assert final["content"][0]["text"].endswith("Tool output: CLIRELAY_42")


def test_gemini_router_json_and_function_call(recording_server: RecordingServer) -> None:
    srv = recording_server
    schema = {
        "type": "OBJECT",
        "properties": {"complexity_reasoning": {"type": "STRING"}, "complexity_score": {"type": "INTEGER"}},
    }
    router = {
        "contents": [],
        "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema},
    }
    _, text = _post(srv, "/v1beta/models/flash-lite:generateContent", router)
    answer = json.loads(json.loads(text)["candidates"][0]["content"]["parts"][0]["text"])
    assert answer["complexity_score"] >= 1  # the CLI's zod schema rejects 0

    tools = [{"functionDeclarations": [{"name": "run_shell_command"}]}]
    _, text = _post(
        srv,
        "/v1beta/models/pro:streamGenerateContent?alt=sse",
        {"contents": [], "tools": tools},
        {"x-goog-api-key": API_KEY},
    )
    chunks = _sse_data(text)
    assert chunks[-1]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "run_shell_command"
    assert srv.requests[-1].headers["x-goog-api-key"] == "***MASKED***"


def test_proxy_attempts_are_recorded_as_leaks(recording_server: RecordingServer) -> None:
    srv = recording_server
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.set_tunnel("api.vendor.example", 443)
    with pytest.raises(OSError):
        conn.connect()
    conn.close()
    assert [(r.method, r.path) for r in srv.leaks] == [("CONNECT", "api.vendor.example:443")]


def test_codex_config_points_only_at_the_base_url() -> None:
    import tomllib

    config = tomllib.loads(harness.codex_config("http://127.0.0.1:8317", model="gpt-5.5"))
    provider = config["model_providers"][config["model_provider"]]
    assert provider["base_url"] == "http://127.0.0.1:8317/v1" and provider["wire_api"] == "responses"
    assert provider["env_key"] == harness.CODEX_KEY_ENV and config["model"] == "gpt-5.5"
    assert config["analytics"]["enabled"] is False and config["features"]["plugins"] is False
