"""Conformance, Anthropic Messages clients: the spec's cases with client ``anth``, end to end.

The gateway is served for real; clients are the official ``anthropic`` SDK, or raw HTTP where the wire
itself is the point (exact SSE events and their order, error bodies). Fake upstreams speak each family's
wire format and record what they received. Case numbers (C#) refer to the "Conformance cases" table of
the translation spec.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest
from pytest_django.fixtures import Settings

from tests.conftest import Persona
from tests.fakes import responses_upstream as responses_fake
from tests.fakes.fixtures import (  # noqa: F401  (the fake upstreams the shared fixtures use)
    claude_upstream,
    claude_upstream_server,
    gemini_upstream,
    gemini_upstream_server,
    responses_upstream,
    responses_upstream_server,
)
from tests.fakes.upstream import ToolCall, random_id
from tests.gateway import conformance
from tests.gateway.conformance import (
    ANTHROPIC_HEADERS,
    FAMILIES,
    FINAL_TEXT,
    MODEL,
    PNG_B64,
    UPSTREAM_MODEL,
    WEATHER_ARGS,
    WEATHER_RESULT,
    WEATHER_TOOL,
    Route,
    ScriptedOpenAI,
    Wire,
    anthropic_events,
    assert_client_call_id,
    assert_no_claude_only_fields,
    assert_upstream_got_result_paired,
    assert_usage_row,
    block_texts,
    chat_chunk,
    chat_usage,
    cut_off_midstream,
    fail_before_first_byte,
    fail_midstream,
    script_text,
    script_tool_call,
    script_usage,
)
from usage.models import RequestLog

pytestmark = pytest.mark.django_db(transaction=True)

# The shared fixtures, bound here so pytest finds them.
anth = conformance.anth
fakes = conformance.fakes
first_party_claude = conformance.first_party_claude
png_server = conformance.png_server
route = conformance.route
rows = conformance.rows
scripted_openai = conformance.scripted_openai
wire = conformance.wire

FIXTURES = Path(__file__).parent.parent / "fixtures" / "anthropic_messages"
CLAUDE_CODE: dict[str, Any] = json.loads((FIXTURES / "claude_code_request.json").read_text())
CLAUDE_CODE_BETAS: str = json.loads((FIXTURES / "claude_code_headers.json").read_text())["anthropic-beta"]
PLAN_MODE = "Plan mode is active. The user does not want you to edit files yet."
CLAUDE_SIGNATURE = CLAUDE_CODE["messages"][1]["content"][0]["signature"]
HI = [{"role": "user", "content": "Hi"}]


def claude_code_body(model: str = MODEL, *, stream: bool = False) -> dict[str, Any]:
    """The recorded Claude Code request (mid-conversation system turn last), aimed at ``model``."""
    body = copy.deepcopy(CLAUDE_CODE)
    body.update(model=model, stream=stream)
    return body


def blocks_of(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each content block: its start, the deltas in order, and where it started and stopped in ``events``."""
    blocks: dict[int, dict[str, Any]] = {}
    for position, (name, data) in enumerate(events):
        if name == "content_block_start":
            blocks[data["index"]] = {"start": data["content_block"], "deltas": [], "from": position}
        elif name == "content_block_delta":
            blocks[data["index"]]["deltas"].append(data["delta"])
        elif name == "content_block_stop":
            blocks[data["index"]]["to"] = position
    return [blocks[i] for i in sorted(blocks)]


def assert_blocks_never_interleave(events: list[tuple[str, dict[str, Any]]]) -> None:
    open_index: int | None = None
    expected = 0
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None and data["index"] == expected, "a block started before the last one stopped"
            open_index, expected = data["index"], expected + 1
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None


def partial_json(block: dict[str, Any]) -> Any:
    return json.loads("".join(d["partial_json"] for d in block["deltas"] if d["type"] == "input_json_delta"))


# --- C3, C51: the event sequence from an OpenAI chat upstream --------------------------------


def test_c3_a_plain_text_stream_from_openai_chat_is_a_well_formed_message_stream(route: Route, wire: Wire) -> None:
    fake = route("openai")
    fake.reply("Hello from the fake upstream.")
    events = anthropic_events(wire.messages({"model": MODEL, "max_tokens": 100, "stream": True, "messages": HI}))
    names = [name for name, _ in events]
    deltas = names.count("content_block_delta")
    assert deltas >= 2
    text_block = ["content_block_start", *["content_block_delta"] * deltas, "content_block_stop"]
    assert names == ["message_start", *text_block, "message_delta", "message_stop"]
    assert events[0][1]["message"]["usage"]["input_tokens"] > 0
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert block_texts(events) == "Hello from the fake upstream."
    message_delta = events[-2][1]
    assert message_delta["delta"]["stop_reason"] == "end_turn"
    assert message_delta["usage"]["output_tokens"] == 7


def test_c51_usage_sent_after_the_finish_chunk_lands_in_message_delta(
    route: Route, wire: Wire, scripted_openai: ScriptedOpenAI
) -> None:
    route("openai")
    scripted_openai.stream(
        [
            chat_chunk({"role": "assistant", "content": ""}),
            chat_chunk({"content": "Hi there"}),
            chat_chunk({}, "stop"),
            chat_chunk(usage=chat_usage(120, 7, cached=100)),
        ]
    )
    events = anthropic_events(wire.messages({"model": MODEL, "max_tokens": 100, "stream": True, "messages": HI}))
    names = [name for name, _ in events]
    assert names[-2:] == ["message_delta", "message_stop"], "message_delta comes before message_stop, nothing after"
    usage = events[-2][1]["usage"]
    assert (usage["input_tokens"], usage["cache_read_input_tokens"], usage["output_tokens"]) == (20, 100, 7)


def test_an_openai_chat_stream_without_done_still_ends_with_message_stop(
    route: Route, wire: Wire, scripted_openai: ScriptedOpenAI
) -> None:
    route("openai")
    chunks = [chat_chunk({"role": "assistant", "content": ""}), chat_chunk({"content": "Hi"}), chat_chunk({}, "stop")]
    scripted_openai.stream(chunks, done=False)
    events = anthropic_events(wire.messages({"model": MODEL, "max_tokens": 100, "stream": True, "messages": HI}))
    assert [n for n, _ in events][-2:] == ["message_delta", "message_stop"]
    assert block_texts(events) == "Hi"


@pytest.mark.parametrize("stream", [False, True], ids=["N", "S"])
def test_a_codex_answer_whose_completed_output_is_empty_still_reaches_an_anthropic_client(
    route: Route, anth: anthropic.Anthropic, stream: bool
) -> None:
    fake = route("codex")
    fake.reply("Rebuilt from the item events.", empty_completed_output=True)
    kwargs: Any = {"model": MODEL, "max_tokens": 100, "messages": HI}
    if stream:
        with anth.messages.stream(**kwargs) as events:
            answer = events.get_final_message()
    else:
        answer = anth.messages.create(**kwargs)
    assert [b.text for b in answer.content if b.type == "text"] == ["Rebuilt from the item events."]


# --- C7, C15: Claude to Claude is a near pass-through ----------------------------------------


def test_c7_a_claude_upstream_gets_the_body_with_only_the_model_rewritten(
    route: Route, anth: anthropic.Anthropic, wire: Wire
) -> None:
    fake = route("claude")
    body = {
        "model": MODEL,
        "max_tokens": 256,
        "messages": HI,
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "x_future_field": {"nested": [1, 2, 3]},
    }
    betas = "context-management-2025-06-27,some-unknown-beta-2031-01-01,context-management-2025-06-27"
    response = wire.messages(body, {"anthropic-beta": betas})
    assert response.status_code == 200, response.text
    assert fake.last.json == {**body, "model": UPSTREAM_MODEL}
    assert fake.last.headers["anthropic-beta"] == "context-management-2025-06-27,some-unknown-beta-2031-01-01"
    answer = response.json()
    # Fields only Anthropic itself writes show the answer was passed through, not re-rendered.
    assert answer["usage"]["service_tier"] == "standard"
    assert "cache_creation" in answer["usage"]
    assert answer["content"] == [{"type": "text", "text": "Hello from the fake upstream."}]


@pytest.mark.parametrize(
    ("model", "in_place"), [("claude-opus-5", True), ("claude-sonnet-4-5", False)], ids=["opus-5", "sonnet-4-5"]
)
def test_c15_a_mid_conversation_system_turn_stays_in_place_or_folds_into_system_by_model(
    route: Route, wire: Wire, model: str, in_place: bool
) -> None:
    fake = route("claude", upstream_model=model, alias=model)
    response = wire.messages(claude_code_body(model), {"anthropic-beta": CLAUDE_CODE_BETAS})
    assert response.status_code == 200, response.text
    sent = fake.last.json
    betas = fake.last.headers["anthropic-beta"].split(",")
    assert betas[: len(CLAUDE_CODE_BETAS.split(","))] == CLAUDE_CODE_BETAS.split(",")
    assert "fallback-credit-2026-06-01" in betas and "betas" not in sent, "body betas are lifted into the header"
    if in_place:
        assert sent["messages"] == CLAUDE_CODE["messages"]
        assert sent["system"] == CLAUDE_CODE["system"]
    else:
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
        assert sent["system"] == [*CLAUDE_CODE["system"], {"type": "text", "text": PLAN_MODE}]


# --- C12, C13, C14: the Claude Code mid-conversation system turn towards other families ----------


def test_c12_a_claude_code_request_reaches_openai_chat_with_the_system_turn_in_place(route: Route, wire: Wire) -> None:
    fake = route("openai")
    events = anthropic_events(wire.messages(claude_code_body(stream=True), {"anthropic-beta": CLAUDE_CODE_BETAS}))
    assert events[-1][0] == "message_stop"
    sent = fake.last
    messages = sent.json["messages"]
    assert messages[0]["role"] == "system"
    assert (messages[-2]["role"], messages[-1]["role"]) == ("user", "system")
    assert "Also check how the tests use it." in str(messages[-2]["content"])
    assert PLAN_MODE in str(messages[-1]["content"])
    assert b"x-anthropic-billing-header" not in sent.body
    assert_no_claude_only_fields(sent.json)
    assert not any("<system-reminder>" in str(m["content"]) and PLAN_MODE in str(m["content"]) for m in messages)
    assert "anthropic-beta" not in sent.headers


def test_c13_a_mid_conversation_system_turn_joins_the_gemini_system_instruction(route: Route, wire: Wire) -> None:
    fake = route("gemini")
    body = claude_code_body()
    body["messages"].append({"role": "user", "content": "Go on."})  # a user turn right after the system turn
    response = wire.messages(body, {"anthropic-beta": CLAUDE_CODE_BETAS})
    assert response.status_code == 200, response.text
    sent = fake.last.json
    top = [block["text"] for block in CLAUDE_CODE["system"][1:]]
    assert sent["systemInstruction"]["parts"] == [{"text": t} for t in [*top, PLAN_MODE]]
    assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"], "the adjacent user turns merged"
    last = sent["contents"][-1]["parts"]
    assert "functionResponse" in last[0]
    assert [p.get("text") for p in last[1:]] == ["Also check how the tests use it.", "Go on."]
    assert PLAN_MODE not in str(sent["contents"])
    assert "x-anthropic-billing-header" not in str(sent)
    assert_no_claude_only_fields(sent)


def test_c14_a_mid_conversation_system_turn_is_a_developer_message_in_place_for_codex(route: Route, wire: Wire) -> None:
    fake = route("codex")
    events = anthropic_events(wire.messages(claude_code_body(stream=True), {"anthropic-beta": CLAUDE_CODE_BETAS}))
    assert events[-1][0] == "message_stop"
    items = fake.last.json["input"]
    messages = [item for item in items if item.get("type", "message") == "message"]
    assert messages[-1]["role"] == "developer"
    assert PLAN_MODE in str(messages[-1]["content"])
    assert items[-1] is messages[-1] and "Also check how the tests use it." in str(items[-2])
    assert "x-anthropic-billing-header" not in str(fake.last.json)
    assert_no_claude_only_fields(fake.last.json)
    assert "anthropic-beta" not in fake.last.headers


# --- C19, C33: images towards Gemini ----------------------------------------------------------


def test_c19_a_base64_image_and_a_url_image_both_reach_gemini_inline(
    route: Route, wire: Wire, png_server: str, settings: Settings
) -> None:
    settings.CLIRELAY_MEDIA_ALLOW_PRIVATE = True
    fake = route("gemini")
    content = [
        {"type": "text", "text": "Compare these."},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "image", "source": {"type": "url", "url": png_server}},
    ]
    body = {"model": MODEL, "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": content}]}
    events = anthropic_events(wire.messages(body))
    assert events[-1][0] == "message_stop"
    parts = fake.last.json["contents"][0]["parts"]
    assert parts == [
        {"text": "Compare these."},
        {"inlineData": {"mimeType": "image/png", "data": PNG_B64}},
        {"inlineData": {"mimeType": "image/png", "data": PNG_B64}},
    ]


def test_c33_an_image_in_a_tool_result_follows_the_function_response_for_gemini(route: Route, wire: Wire) -> None:
    fake = route("gemini")
    messages = [
        {"role": "user", "content": "Draw the chart."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01Chart", "name": "chart", "input": {}}]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01Chart",
                    "content": [
                        {"type": "text", "text": "Here is the chart."},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                    ],
                }
            ],
        },
    ]
    response = wire.messages({"model": MODEL, "max_tokens": 100, "messages": messages})
    assert response.status_code == 200, response.text
    parts = fake.last.json["contents"][-1]["parts"]
    assert [next(iter(p)) for p in parts] == ["functionResponse", "inlineData"]
    assert parts[0]["functionResponse"]["name"] == "chart"
    assert "Here is the chart." in str(parts[0]["functionResponse"]["response"])
    assert parts[1]["inlineData"] == {"mimeType": "image/png", "data": PNG_B64}


# --- C23, C24: parallel tool calls become strictly sequential blocks ---------------------------


def test_c23_interleaved_parallel_calls_from_openai_chat_become_sequential_tool_blocks(
    route: Route, wire: Wire, scripted_openai: ScriptedOpenAI
) -> None:
    route("openai")

    def call(index: int, **fields: Any) -> dict[str, Any]:
        return chat_chunk({"tool_calls": [{"index": index, **fields}]})

    scripted_openai.stream(
        [
            chat_chunk({"role": "assistant", "content": None}),
            call(0, id="call_A", type="function", function={"name": "get_weather", "arguments": ""}),
            call(1, id="call_B", type="function", function={"arguments": ""}),
            call(0, function={"arguments": '{"city":'}),
            call(1, function={"name": "get_time"}),
            call(1, function={"arguments": '{"tz": "Europe/'}),
            call(0, function={"arguments": ' "Paris"}'}),
            call(1, function={"arguments": 'Paris"}'}),
            chat_chunk({}, "tool_calls"),
            chat_chunk(usage=chat_usage(30, 12)),
        ]
    )
    events = anthropic_events(wire.messages({"model": MODEL, "max_tokens": 100, "stream": True, "messages": HI}))
    assert_blocks_never_interleave(events)
    first, second = blocks_of(events)
    assert first["start"] == {"type": "tool_use", "id": "call_A", "name": "get_weather", "input": {}}
    assert second["start"] == {"type": "tool_use", "id": "call_B", "name": "get_time", "input": {}}
    assert partial_json(first) == {"city": "Paris"}
    assert partial_json(second) == {"tz": "Europe/Paris"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_c24_interleaved_codex_argument_deltas_never_mix_between_tool_blocks(route: Route, wire: Wire) -> None:
    fake = route("codex")
    calls = [ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_time", {"tz": "Europe/Paris"})]
    fake.reply("", tool_calls=calls, interleave_tool_calls=True)
    events = anthropic_events(wire.messages({"model": MODEL, "max_tokens": 100, "stream": True, "messages": HI}))
    assert_blocks_never_interleave(events)
    first, second = blocks_of(events)
    assert second["from"] > first["to"], "the second tool_use starts after the first one stops"
    assert (first["start"]["name"], partial_json(first)) == ("get_weather", {"city": "Paris"})
    assert (second["start"]["name"], partial_json(second)) == ("get_time", {"tz": "Europe/Paris"})
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


# --- C28, C29, C42: tool choice and tool history -----------------------------------------------


def test_c28_tool_choice_none_reaches_openai_chat_as_none(route: Route, anth: anthropic.Anthropic) -> None:
    fake = route("openai")
    tool = {"name": "get_weather", "input_schema": WEATHER_TOOL["schema"]}
    anth.messages.create(model=MODEL, max_tokens=100, messages=HI, tools=[tool], tool_choice={"type": "none"})
    assert fake.last.json["tool_choice"] == "none"
    assert fake.last.json["tools"][0]["function"]["name"] == "get_weather"


def test_c29_a_tool_result_reaches_gemini_named_after_its_call(route: Route, anth: anthropic.Anthropic) -> None:
    fake = route("gemini")
    messages: Any = [
        {"role": "user", "content": "Where is order A-1?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_01AbCdEf", "name": "lookup_order", "input": {"id": "A-1"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01AbCdEf", "content": "shipped"}]},
    ]
    anth.messages.create(model=MODEL, max_tokens=100, messages=messages)
    (part,) = fake.last.json["contents"][-1]["parts"]
    assert part["functionResponse"]["name"] == "lookup_order"


def test_c42_a_signed_claude_history_with_parallel_calls_replays_to_gemini(
    route: Route, anth: anthropic.Anthropic
) -> None:
    fake = route("gemini")
    messages: Any = [
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two lookups.", "signature": CLAUDE_SIGNATURE},
                {"type": "tool_use", "id": "toolu_01W", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_01T", "name": "get_time", "input": {"tz": "Europe/Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01W", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_01T", "content": "noon"},
            ],
        },
    ]
    anth.messages.create(model=MODEL, max_tokens=100, messages=messages)
    contents = fake.last.json["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    first, second = contents[1]["parts"]
    assert (first["functionCall"]["name"], first["thoughtSignature"]) == (
        "get_weather",
        "skip_thought_signature_validator",
    )
    assert second["functionCall"]["name"] == "get_time" and "thoughtSignature" not in second
    assert [p["functionResponse"]["name"] for p in contents[2]["parts"]] == ["get_weather", "get_time"]
    assert "Two lookups." not in str(contents)


# --- C37, C44: thinking, stop sequences and limits ---------------------------------------------


@pytest.mark.parametrize(
    ("family", "upstream_model"), [("gemini", "gemini-2.5-flash"), ("openai", UPSTREAM_MODEL)], ids=["gemini", "openai"]
)
def test_c37_a_thinking_budget_maps_to_each_familys_thinking_setting(
    route: Route, anth: anthropic.Anthropic, family: str, upstream_model: str
) -> None:
    fake = route(family, upstream_model=upstream_model)
    thinking: Any = {"type": "enabled", "budget_tokens": 8192}
    anth.messages.create(model=MODEL, max_tokens=16000, messages=HI, thinking=thinking)
    sent = fake.last.json
    if family == "gemini":
        assert sent["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 8192
    else:
        assert sent["reasoning_effort"] == "medium"


def test_c44_stop_sequences_and_max_tokens_reach_gemini(route: Route, anth: anthropic.Anthropic) -> None:
    fake = route("gemini")
    anth.messages.create(model=MODEL, max_tokens=50, messages=HI, stop_sequences=["END"])
    config = fake.last.json["generationConfig"]
    assert (config["stopSequences"], config["maxOutputTokens"]) == (["END"], 50)


# --- C41, C48: reasoning and stop reasons from Codex --------------------------------------------


def _two_summary_parts(script: Any, index: int, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A Codex reasoning item whose summary has two parts (the fake's own has one)."""
    item_id = random_id("rs_", 32)
    texts = ["First thought.", "Second thought."]
    done = {
        "id": item_id,
        "type": "reasoning",
        "encrypted_content": script.signature,
        "summary": [{"type": "summary_text", "text": t} for t in texts],
    }
    output.append(done)
    added = {"id": item_id, "type": "reasoning", "encrypted_content": "gAAAAB-snapshot", "summary": []}
    events: list[dict[str, Any]] = [{"type": "response.output_item.added", "output_index": index, "item": added}]
    for k, text in enumerate(texts):
        where = {"item_id": item_id, "output_index": index, "summary_index": k}
        part = {"type": "summary_text", "text": text}
        events += [
            {"type": "response.reasoning_summary_part.added", **where, "part": {**part, "text": ""}},
            {"type": "response.reasoning_summary_text.delta", **where, "delta": text},
            {"type": "response.reasoning_summary_text.done", **where, "text": text},
            {"type": "response.reasoning_summary_part.done", **where, "part": part},
        ]
    return [*events, {"type": "response.output_item.done", "output_index": index, "item": done}]


def test_c41_one_codex_reasoning_item_is_one_thinking_block_signed_once(
    route: Route, wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = route("codex")
    fake.reply("Done.", reasoning="")
    signature = "gAAAAB-final-encrypted-content"
    fake.script.signature = signature
    monkeypatch.setattr(responses_fake, "_reasoning_events", _two_summary_parts)
    events = anthropic_events(wire.messages({"model": MODEL, "max_tokens": 100, "stream": True, "messages": HI}))
    thinking = [b for b in blocks_of(events) if b["start"]["type"] == "thinking"]
    assert len(thinking) == 1
    (block,) = thinking
    text = "".join(d["thinking"] for d in block["deltas"] if d["type"] == "thinking_delta")
    assert text == "First thought.\n\nSecond thought."
    signatures = [d for d in block["deltas"] if d["type"] == "signature_delta"]
    assert signatures == [{"type": "signature_delta", "signature": signature}]
    assert block["deltas"][-1] == signatures[0], "the signature comes just before content_block_stop"
    assert events[block["to"] - 1][1]["delta"] == signatures[0]


def test_c48_a_codex_max_output_tokens_stop_is_max_tokens(route: Route, wire: Wire) -> None:
    fake = route("codex")
    fake.reply("Cut short", finish_reason="max_output_tokens")
    events = anthropic_events(wire.messages({"model": MODEL, "max_tokens": 100, "stream": True, "messages": HI}))
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert block_texts(events) == "Cut short"


# --- C53, C55: errors ----------------------------------------------------------------------------


def test_c53_a_gemini_400_is_an_anthropic_invalid_request_error(route: Route, wire: Wire) -> None:
    fake = route("gemini")
    message = 'Invalid JSON payload received. Unknown name "foo": Cannot find field.'
    fake.fail(400, message)
    response = wire.messages({"model": MODEL, "max_tokens": 100, "messages": HI})
    assert response.status_code == 400
    assert response.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


@pytest.mark.parametrize("ending", ["error_event", "connection_closed"])
def test_c55_a_codex_stream_that_fails_after_some_text_ends_with_an_error_event(
    route: Route, wire: Wire, ending: str
) -> None:
    fake = route("codex")
    fake.reply("Some text that never finishes")
    if ending == "error_event":
        fake.fail_midstream(6, "The server is overloaded.", code="server_is_overloaded")
        expected = ("overloaded_error", "The server is overloaded.")
    else:
        fake.cut_off(6)
        expected = ("api_error", None)
    events = anthropic_events(wire.messages({"model": MODEL, "max_tokens": 100, "stream": True, "messages": HI}))
    assert block_texts(events) == "Some text"
    name, data = events[-1]
    assert name == "error" and data["type"] == "error"
    assert data["error"]["type"] == expected[0]
    assert expected[1] is None or data["error"]["message"] == expected[1]
    assert "message_stop" not in [n for n, _ in events]


# --- C56: count_tokens ------------------------------------------------------------------------------


def test_c56_count_tokens_against_gemini_counts_the_whole_translated_request(
    route: Route, anth: anthropic.Anthropic
) -> None:
    fake = route("gemini")
    fake.script.count_tokens = 321
    tool: Any = {"name": "get_weather", "description": "Weather.", "input_schema": WEATHER_TOOL["schema"]}
    messages: Any = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Weather?"},
        {"role": "system", "content": PLAN_MODE},
    ]
    counted = anth.messages.count_tokens(model=MODEL, system="Be brief.", tools=[tool], messages=messages)
    assert counted.input_tokens == 321
    sent = fake.last
    assert sent.path == f"/v1beta/models/{UPSTREAM_MODEL}:countTokens"
    inner = sent.json["generateContentRequest"]
    assert inner["systemInstruction"]["parts"] == [{"text": "Be brief."}, {"text": PLAN_MODE}]
    assert inner["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"


def test_count_tokens_against_anthropic_first_party_sends_claude_codes_request_with_the_counting_beta(
    first_party_claude: Any, wire: Wire
) -> None:
    fake = first_party_claude
    fake.script.count_tokens = 1234
    response = wire.client.post(
        "/v1/messages/count_tokens",
        json={k: v for k, v in claude_code_body().items() if k not in ("max_tokens", "stream")},
        headers={"x-api-key": wire.key, **ANTHROPIC_HEADERS, "anthropic-beta": CLAUDE_CODE_BETAS},
    )
    assert response.json() == {"input_tokens": 1234}
    sent = fake.last
    assert (sent.path, sent.query) == ("/v1/messages/count_tokens", {"beta": "true"})
    betas = sent.headers["anthropic-beta"].split(",")
    assert betas[: len(CLAUDE_CODE_BETAS.split(","))] == CLAUDE_CODE_BETAS.split(",")
    assert {"token-counting-2024-11-01", "fallback-credit-2026-06-01"} <= set(betas)
    assert not {"metadata", "context_management", "betas", "max_tokens"} & set(sent.json)
    assert sent.json["messages"][-1] == CLAUDE_CODE["messages"][-1], "the mid-conversation system turn is counted"


def test_count_tokens_against_anthropic_first_party_keeps_at_most_four_cache_breakpoints(
    first_party_claude: Any, anth: anthropic.Anthropic
) -> None:
    fake = first_party_claude
    cached: Any = {"type": "ephemeral"}
    system: Any = [{"type": "text", "text": f"Rule {i}.", "cache_control": cached} for i in range(3)]
    tool: Any = {"name": "get_weather", "input_schema": WEATHER_TOOL["schema"], "cache_control": cached}
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": cached}]}]
    anth.messages.count_tokens(model=MODEL, system=system, tools=[tool], messages=messages)
    sent = fake.last
    assert sent.headers["x-api-key"] == conformance.CLAUDE_API_KEY and "authorization" not in sent.headers
    assert str(sent.json).count("cache_control") == 4, "Anthropic rejects a fifth breakpoint"


def test_the_beta_messages_endpoint_serves_sdk_beta_calls(route: Route, anth: anthropic.Anthropic) -> None:
    fake = route("claude", upstream_model="claude-opus-5", alias="claude-opus-5")
    answer = anth.beta.messages.create(
        model="claude-opus-5", max_tokens=100, messages=HI, betas=["mid-conversation-system-2026-04-07"]
    )
    assert answer.content[0].type == "text"
    assert fake.last.headers["anthropic-beta"] == "mid-conversation-system-2026-04-07"


@pytest.mark.parametrize(
    ("key", "status", "error_type"), [("", 401, "authentication_error"), ("sk-nope", 401, "authentication_error")]
)
def test_a_request_the_gateway_refuses_itself_is_in_the_anthropic_envelope(
    route: Route, wire: Wire, key: str, status: int, error_type: str
) -> None:
    route("claude")
    headers = {**ANTHROPIC_HEADERS, **({"x-api-key": key} if key else {})}
    response = wire.client.post(
        "/v1/messages", json={"model": MODEL, "max_tokens": 10, "messages": HI}, headers=headers
    )
    assert response.status_code == status
    body = response.json()
    assert (body["type"], body["error"]["type"]) == ("error", error_type) and body["error"]["message"]


# --- C58: model listing -------------------------------------------------------------------------------


def test_c58_an_anthropic_client_lists_the_models_of_its_key_in_anthropic_shape(
    route: Route, anth: anthropic.Anthropic, wire: Wire, charlie: Persona
) -> None:
    route("openai", alias="gpt-4o-mini-alias")
    assert [m.id for m in anth.models.list()] == ["gpt-4o-mini-alias"]
    listing = wire.get("/v1/models", {"anthropic-version": "2023-06-01"}).json()
    (entry,) = listing["data"]
    assert entry["id"] == "gpt-4o-mini-alias", "ids are listed unchanged (R19)"
    assert (entry["type"], entry["display_name"]) == ("model", "gpt-4o-mini-alias")
    assert entry["created_at"]
    assert (listing["has_more"], listing["first_id"], listing["last_id"]) == (
        False,
        "gpt-4o-mini-alias",
        "gpt-4o-mini-alias",
    )
    other_team = Wire(wire.client, charlie.raw_key)
    assert other_team.get("/v1/models", ANTHROPIC_HEADERS).json()["data"] == [], "charlie sees none of alice's models"
    refused = other_team.messages({"model": "gpt-4o-mini-alias", "max_tokens": 10, "messages": HI})
    assert refused.status_code == 404 and refused.json()["error"]["type"] == "not_found_error"


# --- the family matrix -----------------------------------------------------------------------------

STREAM = pytest.mark.parametrize("stream", [False, True], ids=["N", "S"])
EVERY_FAMILY = pytest.mark.parametrize("family", FAMILIES)


def _create(anth: anthropic.Anthropic, stream: bool, **kwargs: Any) -> anthropic.types.Message:
    if stream:
        with anth.messages.stream(**kwargs) as events:
            return events.get_final_message()
    return anth.messages.create(**kwargs)


@STREAM
@EVERY_FAMILY
def test_a_tool_call_round_trips_between_an_anthropic_client_and_every_family(
    route: Route, anth: anthropic.Anthropic, scripted_openai: ScriptedOpenAI, family: str, stream: bool
) -> None:
    fake = route(family)
    script_tool_call(family, fake, scripted_openai)
    tools: Any = [
        {
            "name": WEATHER_TOOL["name"],
            "description": WEATHER_TOOL["description"],
            "input_schema": WEATHER_TOOL["schema"],
        }
    ]
    question: Any = {"role": "user", "content": "Weather in Paris?"}
    first = _create(anth, stream, model=MODEL, max_tokens=200, messages=[question], tools=tools)
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert (use.name, use.input) == (WEATHER_TOOL["name"], WEATHER_ARGS)
    assert_client_call_id(family, use.id)

    script_text(family, fake, scripted_openai)
    result: Any = {"type": "tool_result", "tool_use_id": use.id, "content": WEATHER_RESULT}
    history: Any = [question, {"role": "assistant", "content": first.content}, {"role": "user", "content": [result]}]
    second = _create(anth, stream, model=MODEL, max_tokens=200, messages=history, tools=tools)
    assert_upstream_got_result_paired(family, fake.last.json, use.id)
    assert second.stop_reason == "end_turn"
    assert "".join(b.text for b in second.content if b.type == "text") == FINAL_TEXT


@STREAM
@EVERY_FAMILY
def test_an_anthropic_client_and_the_usage_log_see_every_familys_token_counts(
    route: Route,
    anth: anthropic.Anthropic,
    wire: Wire,
    scripted_openai: ScriptedOpenAI,
    rows: Callable[[], list[RequestLog]],
    family: str,
    stream: bool,
) -> None:
    fake = route(family)
    reasoning = script_usage(family, fake, scripted_openai)
    body = {"model": MODEL, "max_tokens": 100, "stream": stream, "messages": HI}
    response = wire.messages(body)
    if stream:
        events = anthropic_events(response)
        assert events[0][1]["message"]["usage"]["input_tokens"] > 0
        # What an SDK accumulates: message_start's usage, updated by message_delta's.
        usage = {**events[0][1]["message"]["usage"], **events[-2][1]["usage"]}
    else:
        assert response.status_code == 200, response.text
        usage = response.json()["usage"]
    # Anthropic's input_tokens excludes the cache reads (and writes) the other families count in.
    fresh, written = (15, 5) if family == "claude" else (20, 0)
    assert (usage["input_tokens"], usage["cache_read_input_tokens"], usage["output_tokens"]) == (fresh, 100, 30)
    assert usage.get("cache_creation_input_tokens", 0) == written
    (row,) = rows()
    assert_usage_row(row, reasoning)
    assert (row.client_dialect, row.stream, row.upstream_model) == ("anthropic-messages", stream, UPSTREAM_MODEL)


@pytest.mark.parametrize(("status", "error_type"), [(429, "rate_limit_error"), (503, "api_error")])
@STREAM
@EVERY_FAMILY
def test_an_upstream_error_before_the_first_byte_reaches_an_anthropic_client_in_its_envelope(
    route: Route, wire: Wire, family: str, stream: bool, status: int, error_type: str
) -> None:
    fake = route(family)
    fail_before_first_byte(family, fake, status, "Slow down, please.")
    response = wire.messages({"model": MODEL, "max_tokens": 100, "stream": stream, "messages": HI})
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error"
    assert body["error"] == {"type": error_type, "message": "Slow down, please."}


@pytest.mark.parametrize("ending", ["error_event", "connection_closed"])
@EVERY_FAMILY
def test_an_upstream_failure_mid_stream_reaches_an_anthropic_client_as_an_error_event(
    route: Route,
    wire: Wire,
    scripted_openai: ScriptedOpenAI,
    rows: Callable[[], list[RequestLog]],
    family: str,
    ending: str,
) -> None:
    fake = route(family)
    if ending == "error_event":
        status, message = fail_midstream(family, fake, scripted_openai, "Upstream gave up."), "Upstream gave up."
    else:
        cut_off_midstream(family, fake, scripted_openai)
        status, message = 502, None
    events = anthropic_events(wire.messages({"model": MODEL, "max_tokens": 100, "stream": True, "messages": HI}))
    assert block_texts(events) == "Partial answer"
    name, data = events[-1]
    assert name == "error"
    expected_type = {500: "api_error", 502: "api_error", 503: "api_error", 529: "overloaded_error"}[status]
    assert data["error"]["type"] == expected_type
    assert data["error"]["message"] == message if message else data["error"]["message"]
    assert "message_stop" not in [n for n, _ in events]
    (row,) = rows()
    assert row.status_code == status
    assert row.error_message == message if message else row.error_message


@pytest.mark.parametrize("when", ["before_the_first_byte", "mid_stream"])
@pytest.mark.parametrize("family", ["claude", "gemini"])
def test_a_stalled_upstream_is_a_timeout_error_for_an_anthropic_client(
    route: Route, wire: Wire, short_read_timeout: float, family: str, when: str
) -> None:
    fake = route(family)
    fake.reply("Partial answer that stalls")
    if when == "before_the_first_byte":
        fake.stall()
    else:
        fake.stall_after({"claude": 5, "gemini": 2}[family])
    response = wire.messages({"model": MODEL, "max_tokens": 100, "stream": True, "messages": HI})
    if when == "before_the_first_byte":
        assert response.status_code == 504
        assert response.json()["error"]["type"] == "timeout_error"
        return
    events = anthropic_events(response)
    assert block_texts(events) == "Partial answer"
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "timeout_error"
