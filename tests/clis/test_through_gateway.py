"""The real CLIs work through the gateway, each against an upstream of another family (issue 3).

* ``claude -p`` → gateway ``/v1/messages`` → an OpenAI-compatible Chat Completions upstream;
* ``codex exec`` (custom provider, ``wire_api = "responses"``) → gateway ``/v1/responses`` → a Claude upstream;
* ``gemini -p`` (``GOOGLE_GEMINI_BASE_URL``) → gateway ``:streamGenerateContent`` → a Codex (Responses) upstream;
* and the CLIs' own default models, whose requests differ most: Claude Code's ``claude-opus-5-5`` (adaptive
  thinking, a system message inside ``messages``) and Codex's ``gpt-6.1-sol`` ("code mode": the shell reached
  through a free-form JavaScript tool in a namespace).

Each fake upstream behaves like a model, deciding from the request it received (in its own family's
shape): while no tool result is in it, it calls the CLI's own shell tool as the request declares it,
running ``printf 'CLIRELAY_%d\\n' 0x2a``; once the result is there, it answers with text quoting the
``CLIRELAY_<n>`` it finds in it. ``CLIRELAY_42`` in the CLI's output therefore proves the gateway carried
the call down to the CLI, a shell really ran it, and the gateway carried its output up to the upstream.

The CLIs are installed into ``$CLIRELAY_CLI_CACHE`` on first use; the tests skip, with npm's reason,
only when that is impossible. Anything a CLI tries to reach besides the gateway goes to a recording proxy
and fails the test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from channels_app.models import Channel, ProviderKind
from tests.clis import harness
from tests.clis.recording_server import RecordingServer, code_mode_source, example_from_schema
from tests.conftest import Persona
from tests.fakes.fixtures import (  # noqa: F401
    CLAUDE_API_KEY,
    CODEX_TOKEN,
    claude_upstream,
    claude_upstream_server,
    openai_upstream,
    openai_upstream_server,
    responses_upstream,
    responses_upstream_server,
)
from tests.fakes.upstream import RecordedRequest, ToolCall
from tests.gateway.conftest import Gateway, gateway_server  # noqa: F401
from usage import recorder
from usage.models import Dialect, RequestLog

pytestmark = [pytest.mark.cli, pytest.mark.django_db(transaction=True)]

COMMAND = "printf 'CLIRELAY_%d\\n' 0x2a"
PROOF = "CLIRELAY_42"
PROMPT = "Run the CliRelay proof command with your shell tool, then tell me exactly what it printed."
TIMEOUT = 150.0
OPENAI_SECRET = "sk-openai-compatible-upstream-secret"


def final_text(tool_output: str) -> str:
    """The model's answer once it has seen the tool's output: it quotes the proof line it found there."""
    found = re.search(r"CLIRELAY_\d+", tool_output)
    return f"The command printed {found.group(0) if found else 'nothing I recognise'}."


def _text(content: Any) -> str:
    """Every string inside a tool result, whatever shape it took (string, blocks, parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text(c) for c in content)
    if isinstance(content, dict):
        return "\n".join(_text(v) for v in content.values())
    return ""


def _shell_arguments(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments for the shell tool as its schema declares them: ``cmd``, ``command`` (a string or a list),
    or ``input`` — Codex's code-mode ``exec``, a free-form tool, whose input is JavaScript."""
    props = schema.get("properties") or {}
    if list(props) == ["input"]:
        return {"input": code_mode_source(COMMAND)}
    if "cmd" in props:
        return {"cmd": COMMAND}
    if (props.get("command") or {}).get("type") == "array":
        return {"command": ["bash", "-lc", COMMAND]}
    return {"command": COMMAND, "description": "Print the CliRelay proof line"}


def _side_answer(schema: Any) -> dict[str, Any]:
    """A request without the shell tool (a title, a classifier): plain text, or JSON when a schema is asked."""
    return {"text": json.dumps(example_from_schema(schema)) if schema else "OK.", "tool_calls": []}


# --- the three upstream "models", each reading its own family's request ------------------------------


def chat_results(body: dict[str, Any]) -> list[str]:
    return [_text(m.get("content")) for m in body.get("messages") or [] if m.get("role") == "tool"]


def chat_model(shell: str) -> Callable[[Any], dict[str, Any]]:
    def respond(body: Any) -> dict[str, Any]:
        if results := chat_results(body):
            return {"text": final_text(results[-1]), "tool_calls": []}
        tools = {t["function"]["name"]: t["function"] for t in body.get("tools") or [] if "function" in t}
        if shell in tools:
            args = _shell_arguments(shell, tools[shell].get("parameters") or {})
            return {"text": "", "tool_calls": [ToolCall(shell, args)]}
        fmt = body.get("response_format") or {}
        return _side_answer((fmt.get("json_schema") or {}).get("schema"))

    return respond


def claude_results(body: dict[str, Any]) -> list[str]:
    return [
        _text(block.get("content"))
        for message in body.get("messages") or []
        if isinstance(message.get("content"), list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]


def claude_model(shell: str) -> Callable[[Any], dict[str, Any]]:
    def respond(body: Any) -> dict[str, Any]:
        if results := claude_results(body):
            return {"text": final_text(results[-1]), "tool_calls": []}
        tools = {t.get("name"): t for t in body.get("tools") or []}
        if shell in tools:
            args = _shell_arguments(shell, tools[shell].get("input_schema") or {})
            return {"text": "", "tool_calls": [ToolCall(shell, args)]}
        fmt = (body.get("output_config") or {}).get("format") or body.get("output_format") or {}
        return _side_answer(fmt.get("schema"))

    return respond


def responses_results(body: dict[str, Any]) -> list[str]:
    items = body.get("input") if isinstance(body.get("input"), list) else []
    return [_text(i.get("output")) for i in items if i.get("type") == "function_call_output"]


def responses_model(shell: str) -> Callable[[Any], dict[str, Any]]:
    def respond(body: Any) -> dict[str, Any]:
        if results := responses_results(body):
            return {"text": final_text(results[-1]), "tool_calls": []}
        tools = {t.get("name"): t for t in body.get("tools") or [] if t.get("type") == "function"}
        if shell in tools:
            args = _shell_arguments(shell, tools[shell].get("parameters") or {})
            return {"text": "", "tool_calls": [ToolCall(shell, args)]}
        fmt = (body.get("text") or {}).get("format") or {}
        return _side_answer(fmt.get("schema"))

    return respond


# --- what the upstream's second turn must carry, in its family's shape ----------------------------


def chat_history_call(body: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(tool name, arguments, result text) of the assistant's tool call and the ``tool`` message answering it."""
    messages = body["messages"]
    at = next(i for i, m in enumerate(messages) if m.get("role") == "assistant" and m.get("tool_calls"))
    call = messages[at]["tool_calls"][0]
    answer = messages[at + 1]
    assert answer["role"] == "tool" and answer["tool_call_id"] == call["id"], messages[at:]
    return call["function"]["name"], json.loads(call["function"]["arguments"]), _text(answer["content"])


def claude_history_call(body: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(tool name, input, result text) of the assistant's ``tool_use`` and the user ``tool_result`` after it."""
    messages = body["messages"]
    at, use = next(
        (i, b)
        for i, m in enumerate(messages)
        if m["role"] == "assistant" and isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_use"
    )
    answer = messages[at + 1]
    assert answer["role"] == "user", messages[at:]
    result = next(b for b in answer["content"] if b.get("type") == "tool_result")
    assert result["tool_use_id"] == use["id"], answer
    return use["name"], use["input"], _text(result.get("content"))


def responses_history_call(body: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(tool name, arguments, output) of the ``function_call`` item and its ``function_call_output``."""
    items = body["input"]
    call = next(i for i in items if i.get("type") == "function_call")
    output = next(i for i in items if i.get("type") == "function_call_output")
    assert output["call_id"] == call["call_id"], (call, output)
    return call["name"], json.loads(call["arguments"]), _text(output["output"])


# --- the three cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    cli: str
    model: str  # what the CLI is told to use (``--model``): the channel's alias
    upstream_model: str
    fake: str  # the fixture of the fake upstream
    kind: str
    secret: str
    shell: str  # the CLI's own shell tool, as it declares it
    upstream_path: str
    client_path: str  # where the CLI posted on the gateway
    client_dialect: str
    model_of: Callable[[str], Callable[[Any], dict[str, Any]]]
    results_of: Callable[[dict[str, Any]], list[str]]
    history_call: Callable[[dict[str, Any]], tuple[str, dict[str, Any], str]]


CASES = [
    pytest.param(
        Case(
            cli="claude",
            model="claude-sonnet-4-5",
            upstream_model="gpt-4.1-upstream",
            fake="openai_upstream",
            kind=ProviderKind.OPENAI_COMPATIBILITY,
            secret=OPENAI_SECRET,
            shell="Bash",
            upstream_path="/v1/chat/completions",
            client_path="/v1/messages",
            client_dialect=Dialect.ANTHROPIC_MESSAGES,
            model_of=chat_model,
            results_of=chat_results,
            history_call=chat_history_call,
        ),
        id="claude-via-openai-chat",
    ),
    pytest.param(
        Case(
            cli="claude",
            # Claude Code's own default model: adaptive thinking, effort, and a system message inside ``messages``.
            model="claude-opus-5-5",
            upstream_model="gpt-4.1-upstream",
            fake="openai_upstream",
            kind=ProviderKind.OPENAI_COMPATIBILITY,
            secret=OPENAI_SECRET,
            shell="Bash",
            upstream_path="/v1/chat/completions",
            client_path="/v1/messages",
            client_dialect=Dialect.ANTHROPIC_MESSAGES,
            model_of=chat_model,
            results_of=chat_results,
            history_call=chat_history_call,
        ),
        id="claude-default-model-via-openai-chat",
    ),
    pytest.param(
        Case(
            cli="codex",
            # A name Codex's bundled catalog does not know, as a gateway-routed name would be: Codex then
            # declares classic function tools (exec_command) instead of its JavaScript "code mode".
            model="clirelay-test-model",
            upstream_model="claude-sonnet-4-5-upstream",
            fake="claude_upstream",
            kind=ProviderKind.CLAUDE_API_KEY,
            secret=CLAUDE_API_KEY,
            shell="exec_command",
            upstream_path="/v1/messages",
            client_path="/v1/responses",
            client_dialect=Dialect.OPENAI_RESPONSES,
            model_of=claude_model,
            results_of=claude_results,
            history_call=claude_history_call,
        ),
        id="codex-via-claude",
    ),
    pytest.param(
        Case(
            cli="codex",
            # Codex's own default model: "code mode", the shell reached through the free-form tool ``exec``
            # (namespace ``functions``) whose JavaScript calls ``tools.exec_command``; declared to Claude as
            # ``functions__exec`` with a string ``input``.
            model="gpt-6.1-sol",
            upstream_model="claude-sonnet-4-5-upstream",
            fake="claude_upstream",
            kind=ProviderKind.CLAUDE_API_KEY,
            secret=CLAUDE_API_KEY,
            shell="functions__exec",
            upstream_path="/v1/messages",
            client_path="/v1/responses",
            client_dialect=Dialect.OPENAI_RESPONSES,
            model_of=claude_model,
            results_of=claude_results,
            history_call=claude_history_call,
        ),
        id="codex-code-mode-via-claude",
    ),
    pytest.param(
        Case(
            cli="gemini",
            model="gemini-2.5-pro",  # named, so no model-router call first
            upstream_model="gpt-5-codex-upstream",
            fake="responses_upstream",
            kind=ProviderKind.CODEX_API_KEY,
            secret=CODEX_TOKEN,
            shell="run_shell_command",
            upstream_path="/responses",
            client_path="/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            client_dialect=Dialect.GEMINI,
            model_of=responses_model,
            results_of=responses_results,
            history_call=responses_history_call,
        ),
        id="gemini-via-codex-responses",
    ),
]


def _deciding(
    model: Callable[[Any], dict[str, Any]], decisions: list[str], calls: list[ToolCall]
) -> Callable[[Any], dict[str, Any]]:
    """``model``, noting what it chose for each request ("tool", "final" or "side") and the calls it made."""

    def respond(body: Any) -> dict[str, Any]:
        answer = model(body)
        calls.extend(answer["tool_calls"])
        decisions.append(
            "tool" if answer["tool_calls"] else "final" if answer["text"].startswith("The command printed") else "side"
        )
        return answer

    return respond


@pytest.mark.parametrize("case", CASES)
def test_the_cli_runs_its_own_tool_through_the_gateway_and_answers(
    case: Case,
    request: pytest.FixtureRequest,
    require_cli: Callable[[str], Path],
    gateway_server: Gateway,  # noqa: F811
    recording_server: RecordingServer,
    alice: Persona,
    charlie: Persona,
    cli_cwd: Path,
) -> None:
    require_cli(case.cli)
    fake = request.getfixturevalue(case.fake)
    decisions: list[str] = []
    calls: list[ToolCall] = []
    fake.script.api_key = case.secret
    fake.script.responder = _deciding(case.model_of(case.shell), decisions, calls)
    channel = Channel.objects.create(
        team=alice.team,
        kind=case.kind,
        name=f"{case.cli}-upstream",
        base_url=fake.base_url,
        secret=case.secret,
        served_models=[{"name": case.upstream_model, "alias": case.model}],
    )
    answered = len(gateway_server.watch.statuses)

    # Every proxy variable points at the recording server: a CLI reaching for a vendor is caught there.
    result = harness.RUNNERS[case.cli](
        gateway_server.url, alice.raw_key, PROMPT, cli_cwd, case.model, TIMEOUT, proxy=recording_server.url
    )

    gateway_server.watch.wait_idle()
    assert recorder.flush(), "usage rows were still queued"
    sent: list[RecordedRequest] = list(fake.requests)
    trail = "\n".join(f"{r.method} {r.path} -> results {case.results_of(r.json or {})}" for r in sent)
    statuses = gateway_server.watch.statuses[answered:]
    context = (
        f"{result.describe()}\n--- gateway answered {statuses}\n--- upstream got (model chose {decisions}) ---\n{trail}"
    )

    # The CLI ran its tool and printed the answer, which quotes the tool's output the upstream received.
    assert result.returncode == 0, context
    assert f"The command printed {PROOF}." in result.stdout, context
    assert 500 not in statuses, context
    assert [d for d in decisions if d != "side"] == ["tool", "final"], context

    # Upstream, both turns came in the upstream's own family, the second with the call and its result.
    turns = [r for r in sent if r.path == case.upstream_path]
    first = next(r for r in turns if not case.results_of(r.json))
    second = next(r for r in turns if case.results_of(r.json))
    assert turns.index(first) < turns.index(second), context
    assert all(r.json["model"] == case.upstream_model for r in turns), context
    name, arguments, output = case.history_call(second.json)
    assert (name, arguments) == (calls[0].name, calls[0].arguments) and name == case.shell, context
    assert PROOF in output, context

    assert not recording_server.leaks, f"{case.cli} tried to reach {[r.path for r in recording_server.leaks]}"
    assert alice.raw_key not in json.dumps([r.headers for r in sent]), "the client key reached the upstream"

    # One usage row per upstream attempt, both turns included, in the client's dialect and the channel's kind.
    logs = list(RequestLog.objects.filter(team=alice.team).order_by("time", "id"))
    assert len(logs) == len(turns) >= 2, [(x.path, x.status_code, x.error_message) for x in logs]
    for log in logs:
        assert (log.client_dialect, log.upstream_kind, log.channel_id) == (case.client_dialect, case.kind, channel.id)
        assert (log.requested_model, log.upstream_model) == (case.model, case.upstream_model)
        assert (log.status_code, log.stream, log.api_key_id) == (200, True, alice.key.id), log.error_message
        assert log.path.startswith(case.client_path), log.path
        assert (log.input_tokens, log.output_tokens) == (12, 7)  # the fakes' default usage, translated
    assert not RequestLog.objects.filter(team=charlie.team).exists()
