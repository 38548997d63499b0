"""Conformance, Gemini clients: the spec's cases with client ``gem``, end to end.

The gateway is served for real; clients are the official ``google-genai`` SDK, or raw HTTP where the SDK
hides the wire (``alt=sse`` frames, the JSON array of ``streamGenerateContent`` without ``alt``, error
bodies). Fake upstreams speak each family's wire format and record what they received. Case numbers (C#)
refer to the "Conformance cases" table of the translation spec.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from google import genai
from google.genai import types as gtypes

from gateway import tokens
from gateway.dialects import gemini as gemini_dialect
from tests.conftest import Persona
from tests.fakes.fixtures import (  # noqa: F401  (the fake upstreams the shared fixtures use)
    claude_upstream,
    claude_upstream_server,
    gemini_upstream,
    gemini_upstream_server,
    responses_upstream,
    responses_upstream_server,
)
from tests.gateway import conformance
from tests.gateway.conformance import (
    FAMILIES,
    FINAL_TEXT,
    MODEL,
    UPSTREAM_MODEL,
    WEATHER_ARGS,
    WEATHER_RESULT,
    WEATHER_TOOL,
    Route,
    ScriptedOpenAI,
    Wire,
    assert_client_call_id,
    assert_upstream_got_result_paired,
    assert_usage_row,
    chat_chunk,
    cut_off_midstream,
    fail_before_first_byte,
    fail_midstream,
    gemini_chunks,
    script_text,
    script_tool_call,
    script_usage,
    texts_of,
)
from usage.models import RequestLog

pytestmark = pytest.mark.django_db(transaction=True)

# The shared fixtures, bound here so pytest finds them.
fakes = conformance.fakes
first_party_claude = conformance.first_party_claude
gem = conformance.gem
route = conformance.route
rows = conformance.rows
scripted_openai = conformance.scripted_openai
wire = conformance.wire

HI = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
RPC = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "INTERNAL", 503: "UNAVAILABLE", 529: "INTERNAL"}


def final_chunk(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    return chunks[-1]["candidates"][0]


# --- C5, C6: the two stream framings -------------------------------------------------------------


def test_c5_an_sse_stream_from_codex_is_data_frames_ending_with_stop_and_usage(route: Route, wire: Wire) -> None:
    fake = route("codex")
    fake.reply("Hello from the fake upstream.")
    response = wire.gemini("streamGenerateContent", HI)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert all(line.startswith(b"data: ") for line in response.content.split(b"\n") if line.strip())
    chunks = gemini_chunks(response)
    assert len(chunks) >= 2
    assert texts_of(chunks) == "Hello from the fake upstream."
    assert all(c["candidates"][0]["content"]["role"] == "model" for c in chunks)
    assert final_chunk(chunks)["finishReason"] == "STOP"
    usage = chunks[-1]["usageMetadata"]
    assert (usage["promptTokenCount"], usage["candidatesTokenCount"], usage["totalTokenCount"]) == (12, 7, 19)


@pytest.mark.parametrize("family", FAMILIES)
def test_c6_a_stream_without_alt_is_one_json_array(route: Route, wire: Wire, family: str) -> None:
    fake = route(family)
    fake.reply("Hello from the fake upstream.")
    response = wire.gemini("streamGenerateContent", HI, alt_sse=False)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    chunks = orjson.loads(response.content)
    assert isinstance(chunks, list) and len(chunks) >= 2
    assert texts_of(chunks) == "Hello from the fake upstream."
    assert final_chunk(chunks)["finishReason"] == "STOP"


def test_an_openai_chat_stream_without_done_still_ends_with_a_final_chunk(
    route: Route, wire: Wire, scripted_openai: ScriptedOpenAI
) -> None:
    route("openai")
    chunks = [chat_chunk({"role": "assistant", "content": ""}), chat_chunk({"content": "Hi"}), chat_chunk({}, "stop")]
    scripted_openai.stream(chunks, done=False)
    chunks_seen = gemini_chunks(wire.gemini("streamGenerateContent", HI))
    assert texts_of(chunks_seen) == "Hi"
    assert final_chunk(chunks_seen)["finishReason"] == "STOP"


@pytest.mark.parametrize("stream", [False, True], ids=["N", "S"])
def test_a_codex_answer_whose_completed_output_is_empty_still_reaches_a_gemini_client(
    route: Route, gem: genai.Client, stream: bool
) -> None:
    fake = route("codex")
    fake.reply("Rebuilt from the item events.", empty_completed_output=True)
    if stream:
        text = "".join(c.text or "" for c in gem.models.generate_content_stream(model=MODEL, contents="Hi"))
    else:
        text = gem.models.generate_content(model=MODEL, contents="Hi").text or ""
    assert text == "Rebuilt from the item events."


# --- C11, C26: system instructions and call ids ---------------------------------------------------


@pytest.mark.parametrize("key", ["systemInstruction", "system_instruction"])
def test_c11_a_system_instruction_in_either_spelling_is_claudes_top_level_system(
    route: Route, wire: Wire, key: str
) -> None:
    fake = route("claude")
    response = wire.gemini("generateContent", {**HI, key: {"parts": [{"text": "Answer in one word."}]}})
    assert response.status_code == 200, response.text
    sent = fake.last.json
    system = sent["system"] if isinstance(sent["system"], str) else "".join(b["text"] for b in sent["system"])
    assert system == "Answer in one word."
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]


def test_c26_calls_without_ids_get_stable_ids_and_results_pair_first_in_first_out(route: Route, wire: Wire) -> None:
    fake = route("openai")
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
            {
                "role": "model",
                "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"result": "rainy"}}},
                ],
            },
        ]
    }
    sent = []
    for _ in range(2):
        assert wire.gemini("generateContent", body).status_code == 200
        sent.append(fake.last.json["messages"])
    assert sent[0] == sent[1], "the derived ids are stable across identical requests"
    messages = sent[0]
    (assistant,) = [m for m in messages if m["role"] == "assistant"]
    ids = [call["id"] for call in assistant["tool_calls"]]
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in ids) and ids[0] != ids[1]
    assert [orjson.loads(c["function"]["arguments"]) for c in assistant["tool_calls"]] == [
        {"city": "Paris"},
        {"city": "Rome"},
    ]
    results = [m for m in messages if m["role"] == "tool"]
    assert [r["tool_call_id"] for r in results] == ids
    assert ["sunny" in str(r["content"]) for r in results] == [True, False]
    assert "rainy" in str(results[1]["content"])


# --- C48, C54, C55: finish reasons and errors --------------------------------------------------------


def test_c48_an_openai_length_stop_is_max_tokens_on_the_final_chunk(route: Route, wire: Wire) -> None:
    fake = route("openai")
    fake.reply("Cut short", finish_reason="length")
    chunks = gemini_chunks(wire.gemini("streamGenerateContent", HI))
    assert texts_of(chunks) == "Cut short"
    assert final_chunk(chunks)["finishReason"] == "MAX_TOKENS"


@pytest.mark.parametrize("stream", [False, True], ids=["N", "S"])
def test_c54_an_openai_503_before_the_first_byte_is_a_google_unavailable_error(
    route: Route, wire: Wire, stream: bool
) -> None:
    fake = route("openai")
    fake.fail(503, "The engine is currently overloaded.", type_="server_error")
    response = wire.gemini("streamGenerateContent" if stream else "generateContent", HI)
    assert response.status_code == 503
    assert response.json() == {
        "error": {"code": 503, "message": "The engine is currently overloaded.", "status": "UNAVAILABLE"}
    }


@pytest.mark.parametrize("framing", ["sse", "json_array"])
@pytest.mark.parametrize("ending", ["error_event", "connection_closed"])
def test_c55_a_codex_stream_that_fails_after_some_text_ends_with_a_google_error(
    route: Route, wire: Wire, framing: str, ending: str
) -> None:
    fake = route("codex")
    fake.reply("Some text that never finishes")
    if ending == "error_event":
        fake.fail_midstream(6, "The server is overloaded.", code="server_is_overloaded")
    else:
        fake.cut_off(6)
    response = wire.gemini("streamGenerateContent", HI, alt_sse=framing == "sse")
    assert response.status_code == 200
    if framing == "sse":
        chunks = gemini_chunks(response)
    else:
        assert response.content.rstrip().endswith(b"]")
        chunks = orjson.loads(response.content)
    *text_chunks, last = chunks
    assert texts_of(text_chunks) == "Some text"
    assert set(last) == {"error"}
    assert set(last["error"]) == {"code", "message", "status"}
    if ending == "error_event":
        assert last["error"] == {"code": 529, "message": "The server is overloaded.", "status": "INTERNAL"}
    else:
        assert (last["error"]["code"], last["error"]["status"]) == (502, "INTERNAL")


# --- C57: countTokens against Claude ------------------------------------------------------------------


def test_c57_count_tokens_against_anthropic_first_party_is_anthropics_count(
    first_party_claude: Any, gem: genai.Client, wire: Wire
) -> None:
    fake = first_party_claude
    fake.script.count_tokens = 42
    assert gem.models.count_tokens(model=MODEL, contents="How many tokens is this?").total_tokens == 42
    sent = fake.last
    assert (sent.path, sent.query) == ("/v1/messages/count_tokens", {"beta": "true"})
    assert "token-counting-2024-11-01" in sent.headers["anthropic-beta"].split(",")
    assert sent.json["model"] == UPSTREAM_MODEL
    body = wire.gemini("countTokens", HI).json()
    assert body == {"totalTokens": 42, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 42}]}


def test_c57_count_tokens_against_another_claude_base_url_is_a_local_estimate(route: Route, wire: Wire) -> None:
    fake = route("claude")
    body = {"contents": [{"role": "user", "parts": [{"text": "How many tokens is this sentence, roughly?"}]}]}
    answer = wire.gemini("countTokens", body).json()
    expected = tokens.estimate_request(gemini_dialect.parse_request(body, MODEL))
    assert expected > 0
    assert answer == {"totalTokens": expected, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": expected}]}
    assert fake.requests == [], "no upstream call"


# --- C58: model listing -------------------------------------------------------------------------------


def test_c58_a_gemini_client_lists_and_gets_the_models_of_its_key(
    route: Route, gem: genai.Client, wire: Wire, charlie: Persona
) -> None:
    route("claude", alias="claude-for-gemini")
    assert [m.name for m in gem.models.list()] == ["models/claude-for-gemini"]
    assert gem.models.get(model="claude-for-gemini").name == "models/claude-for-gemini"
    (entry,) = wire.get("/v1beta/models").json()["models"]
    assert entry["name"] == "models/claude-for-gemini"
    assert entry["displayName"] and "generateContent" in entry["supportedGenerationMethods"]
    assert wire.get("/v1beta/models/models/claude-for-gemini").json()["name"] == "models/claude-for-gemini"
    missing = wire.get("/v1beta/models/no-such-model")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert (error["code"], error["status"]) == (404, "NOT_FOUND") and error["message"]
    other_team = Wire(wire.client, charlie.raw_key)
    assert other_team.get("/v1beta/models").json() == {"models": []}, "charlie sees none of alice's models"
    assert other_team.get("/v1beta/models/claude-for-gemini").status_code == 404
    refused = other_team.gemini("generateContent", HI, model="claude-for-gemini")
    assert (refused.status_code, refused.json()["error"]["status"]) == (404, "NOT_FOUND")


def test_gemini_actions_are_also_served_under_v1_models(route: Route, wire: Wire) -> None:
    route("claude")
    response = wire.client.post(f"/v1/models/{MODEL}:generateContent", json=HI, headers={"x-goog-api-key": wire.key})
    assert response.status_code == 200, response.text
    assert texts_of([response.json()]) == "Hello from the fake upstream."
    assert wire.get(f"/v1/models/{MODEL}").json()["id"] == MODEL, "the OpenAI GET of one model still answers"


def test_a_key_in_the_query_string_is_accepted(route: Route, wire: Wire) -> None:
    route("claude")
    response = wire.client.post(f"/v1beta/models/{MODEL}:generateContent", json=HI, params={"key": wire.key})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("headers", "status", "rpc"),
    [({}, 401, "UNAUTHENTICATED"), ({"x-goog-api-key": "AIza-not-a-key"}, 401, "UNAUTHENTICATED")],
    ids=["no-key", "unknown-key"],
)
def test_a_request_the_gateway_refuses_itself_is_in_the_google_envelope(
    route: Route, wire: Wire, headers: dict[str, str], status: int, rpc: str
) -> None:
    route("claude")
    response = wire.client.post(f"/v1beta/models/{MODEL}:generateContent", json=HI, headers=headers)
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (status, rpc) and error["message"]


def test_an_unknown_model_is_a_google_not_found(route: Route, wire: Wire) -> None:
    route("claude")
    response = wire.gemini("generateContent", HI, model="no-such-model")
    error = response.json()["error"]
    assert (response.status_code, error["code"], error["status"]) == (404, 404, "NOT_FOUND")


# --- the family matrix -----------------------------------------------------------------------------

STREAM = pytest.mark.parametrize("stream", [False, True], ids=["N", "S"])
EVERY_FAMILY = pytest.mark.parametrize("family", FAMILIES)


def _generate(gem: genai.Client, stream: bool, contents: list[gtypes.Content], **config: Any) -> list[gtypes.Part]:
    """Every part the model answered, and checks the answer ended with ``STOP``."""
    settings = gtypes.GenerateContentConfig(
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True), **config
    )
    if stream:
        answers = list(gem.models.generate_content_stream(model=MODEL, contents=contents, config=settings))
    else:
        answers = [gem.models.generate_content(model=MODEL, contents=contents, config=settings)]
    candidates = [a.candidates[0] for a in answers if a.candidates]
    assert candidates[-1].finish_reason == gtypes.FinishReason.STOP
    return [p for c in candidates if c.content and c.content.parts for p in c.content.parts]


@STREAM
@EVERY_FAMILY
def test_a_function_call_round_trips_between_a_gemini_client_and_every_family(
    route: Route, gem: genai.Client, scripted_openai: ScriptedOpenAI, family: str, stream: bool
) -> None:
    fake = route(family)
    script_tool_call(family, fake, scripted_openai)
    declaration = gtypes.FunctionDeclaration(
        name=WEATHER_TOOL["name"],
        description=WEATHER_TOOL["description"],
        parameters_json_schema=WEATHER_TOOL["schema"],
    )
    tools = [gtypes.Tool(function_declarations=[declaration])]
    question = gtypes.Content(role="user", parts=[gtypes.Part(text="Weather in Paris?")])
    parts = _generate(gem, stream, [question], tools=tools)
    (call_part,) = [p for p in parts if p.function_call]
    call = call_part.function_call
    assert (call.name, call.args) == (WEATHER_TOOL["name"], WEATHER_ARGS)
    if family == "gemini":
        assert call.id is None, "a Gemini upstream's call passes through as it came"
    else:
        assert_client_call_id(family, call.id or "")

    script_text(family, fake, scripted_openai)
    result = gtypes.FunctionResponse(id=call.id, name=call.name, response={"result": WEATHER_RESULT})
    history = [
        question,
        gtypes.Content(role="model", parts=parts),  # every part, thoughts and signatures included, as a chat keeps
        gtypes.Content(role="user", parts=[gtypes.Part(function_response=result)]),
    ]
    answer = _generate(gem, stream, history, tools=tools)
    assert_upstream_got_result_paired(family, fake.last.json, call.id or "")
    assert "".join(p.text or "" for p in answer if not p.thought) == FINAL_TEXT


@STREAM
@EVERY_FAMILY
def test_a_gemini_client_and_the_usage_log_see_every_familys_token_counts(
    route: Route,
    wire: Wire,
    scripted_openai: ScriptedOpenAI,
    rows: Callable[[], list[RequestLog]],
    family: str,
    stream: bool,
) -> None:
    fake = route(family)
    reasoning = script_usage(family, fake, scripted_openai)
    if stream:
        usage = gemini_chunks(wire.gemini("streamGenerateContent", HI))[-1]["usageMetadata"]
    else:
        response = wire.gemini("generateContent", HI)
        assert response.status_code == 200, response.text
        usage = response.json()["usageMetadata"]
    # Gemini's candidatesTokenCount excludes the thoughts the other families count in (R6).
    assert (usage["promptTokenCount"], usage["cachedContentTokenCount"], usage["totalTokenCount"]) == (120, 100, 150)
    assert (usage["candidatesTokenCount"], usage.get("thoughtsTokenCount", 0)) == (30 - reasoning, reasoning)
    (row,) = rows()
    assert_usage_row(row, reasoning)
    assert (row.client_dialect, row.stream, row.upstream_model) == ("gemini", stream, UPSTREAM_MODEL)


@pytest.mark.parametrize("status", [429, 503])
@STREAM
@EVERY_FAMILY
def test_an_upstream_error_before_the_first_byte_reaches_a_gemini_client_in_its_envelope(
    route: Route, wire: Wire, family: str, stream: bool, status: int
) -> None:
    fake = route(family)
    fail_before_first_byte(family, fake, status, "Slow down, please.")
    response = wire.gemini("streamGenerateContent" if stream else "generateContent", HI)
    assert response.status_code == status
    assert response.json() == {"error": {"code": status, "message": "Slow down, please.", "status": RPC[status]}}


@pytest.mark.parametrize("ending", ["error_event", "connection_closed"])
@pytest.mark.parametrize("framing", ["sse", "json_array"])
@EVERY_FAMILY
def test_an_upstream_failure_mid_stream_reaches_a_gemini_client_as_a_google_error(
    route: Route,
    wire: Wire,
    scripted_openai: ScriptedOpenAI,
    rows: Callable[[], list[RequestLog]],
    family: str,
    framing: str,
    ending: str,
) -> None:
    fake = route(family)
    if ending == "error_event":
        status, message = fail_midstream(family, fake, scripted_openai, "Upstream gave up."), "Upstream gave up."
    else:
        cut_off_midstream(family, fake, scripted_openai)
        status, message = 502, None
    response = wire.gemini("streamGenerateContent", HI, alt_sse=framing == "sse")
    if framing == "sse":
        chunks = gemini_chunks(response)
    else:
        assert response.status_code == 200
        chunks = orjson.loads(response.content)  # a complete array: the error is its last element
    *text_chunks, last = chunks
    assert texts_of(text_chunks) == "Partial answer"
    assert set(last) == {"error"}
    assert (last["error"]["code"], last["error"]["status"]) == (status, RPC[status])
    assert last["error"]["message"] == message if message else last["error"]["message"]
    (row,) = rows()
    assert row.status_code == status


@pytest.mark.parametrize("when", ["before_the_first_byte", "mid_stream"])
@pytest.mark.parametrize("family", ["gemini", "claude"])
def test_a_stalled_upstream_is_deadline_exceeded_for_a_gemini_client(
    route: Route, wire: Wire, short_read_timeout: float, family: str, when: str
) -> None:
    fake = route(family)
    fake.reply("Partial answer that stalls")
    if when == "before_the_first_byte":
        fake.stall()
    else:
        fake.stall_after({"claude": 5, "gemini": 2}[family])
    response = wire.gemini("streamGenerateContent", HI)
    if when == "before_the_first_byte":
        assert response.status_code == 504
        assert (response.json()["error"]["code"], response.json()["error"]["status"]) == (504, "DEADLINE_EXCEEDED")
        return
    *text_chunks, last = gemini_chunks(response)
    assert texts_of(text_chunks) == "Partial answer"
    assert (last["error"]["code"], last["error"]["status"]) == (504, "DEADLINE_EXCEEDED")
