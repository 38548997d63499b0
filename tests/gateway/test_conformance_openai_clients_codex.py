"""Conformance cases (spec, last table): OpenAI chat and Responses clients against a Codex (Responses) upstream."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes.fixtures import (  # noqa: F401
    claude_upstream,
    claude_upstream_server,
    gemini_upstream,
    gemini_upstream_server,
    responses_upstream,
    responses_upstream_server,
)
from tests.fakes.upstream import ToolCall
from tests.gateway import openai_clients_support as support
from tests.gateway.openai_clients_support import (
    MODEL,
    Connect,
    raw_post,
    responses_events,
    sdk,
    sse_events,
    usage_rows,
)

pytestmark = pytest.mark.django_db(transaction=True)
# The support module's fixtures, bound here so pytest finds them.
scripted_openai_server, openai_fake, connect = support.scripted_openai_server, support.openai_fake, support.connect

NAMES = ["my tool/v2", ("mcp__srv__" + "very_long_tool_name_" * 3)[:70]]


def chat(gateway, alice, **body: Any) -> Any:
    body.setdefault("model", MODEL)
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return raw_post(gateway, alice, "/chat/completions", body)


def function_tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


def test_case_31_tool_names_over_64_characters_are_shortened_for_codex_and_restored_for_the_client(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("codex")
    tools = [function_tool(name) for name in NAMES]
    assert chat(gateway, alice, tools=tools).status_code == 200
    sent = [t["name"] for t in fake.last.json["tools"]]
    assert len(sent) == 2 and all(len(n) <= 64 for n in sent)
    fake.reply("", tool_calls=[ToolCall(sent[0], {}), ToolCall(sent[1], {})])
    completion = sdk(gateway, alice).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Use both"}], tools=tools
    )
    assert [c.function.name for c in completion.choices[0].message.tool_calls] == NAMES


def test_case_38_a_level_suffix_reaches_codex_as_the_base_model_and_a_reasoning_effort(
    gateway, alice, connect: Connect
) -> None:
    fake = connect("codex", "gpt-5.5")
    assert chat(gateway, alice, model="gpt-5.5(xhigh)").status_code == 200
    assert fake.last.json["model"] == "gpt-5.5"
    assert fake.last.json["reasoning"]["effort"] == "xhigh"


def test_case_38_a_level_the_same_family_model_lacks_is_a_400(gateway, alice, connect: Connect) -> None:
    fake = connect("codex", "gpt-5.4")
    answer = chat(gateway, alice, model="gpt-5.4(max)")
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert fake.requests == []


def test_case_43_a_json_schema_response_format_becomes_the_codex_text_format(gateway, alice, connect: Connect) -> None:
    fake = connect("codex")
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": schema}}
    assert chat(gateway, alice, response_format=fmt).status_code == 200
    assert fake.last.json["text"]["format"] == {"type": "json_schema", "name": "x", "strict": True, "schema": schema}


@pytest.mark.parametrize("ending", ["error-event", "connection-closed"])
@pytest.mark.parametrize("client", ["chat", "resp"])
def test_case_55_a_codex_stream_that_fails_after_some_text_ends_with_the_client_dialects_error(
    gateway, alice, connect: Connect, client: str, ending: str
) -> None:
    fake = connect("codex")
    fake.reply("Some text that is cut short")
    if ending == "error-event":
        fake.fail_midstream(6, "the backend failed")
    else:
        fake.cut_off(6)
    if client == "chat":
        answer = chat(gateway, alice, stream=True)
        frames = [data for _, data in sse_events(answer.text)]
        assert "[DONE]" not in frames
        *chunks, last = [json.loads(f) for f in frames]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]).startswith("Some")
        assert set(last) == {"error"} and last["error"]["message"]
    else:
        answer = raw_post(gateway, alice, "/responses", {"model": MODEL, "input": "Hi", "stream": True})
        events = responses_events(answer.text)
        types = [e["type"] for e in events]
        assert "response.output_text.delta" in types
        assert types[-1] == "error" and "response.completed" not in types
        assert events[-1]["message"]
    (row,) = usage_rows(gateway)
    assert row.status_code >= 500


@pytest.mark.parametrize("client", ["chat", "resp"])
def test_codex_never_receives_the_parameters_it_rejects(gateway, alice, connect: Connect, client: str) -> None:
    fake = connect("codex")
    fake.reply("Accepted.")
    if client == "chat":
        answer = chat(gateway, alice, max_tokens=50, temperature=0.3, top_p=0.9)
        assert answer.json()["choices"][0]["message"]["content"] == "Accepted."
    else:
        body = {"model": MODEL, "input": "Hi", "max_output_tokens": 50, "temperature": 0.3, "top_p": 0.9}
        answer = raw_post(gateway, alice, "/responses", body)
        assert answer.json()["output"][0]["content"][0]["text"] == "Accepted."
    sent = fake.last.json
    assert (sent["stream"], sent["store"]) == (True, False) and "instructions" in sent
    assert not {"max_output_tokens", "max_completion_tokens", "temperature", "top_p"} & set(sent)


@pytest.mark.parametrize("stream", [False, True], ids=["N", "S"])
def test_a_codex_completed_response_with_an_empty_output_reaches_the_client_with_its_items(
    gateway, alice, connect: Connect, stream: bool
) -> None:
    connect("codex").reply("Repaired.", reasoning="Brief thought.", empty_completed_output=True)
    answer = raw_post(gateway, alice, "/responses", {"model": MODEL, "input": "Hi", "stream": stream})
    response = responses_events(answer.text)[-1]["response"] if stream else answer.json()
    assert response["status"] == "completed"
    assert [item["type"] for item in response["output"]] == ["reasoning", "message"]
    assert response["output"][1]["content"][0]["text"] == "Repaired."
