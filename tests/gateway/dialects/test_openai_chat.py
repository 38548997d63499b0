"""OpenAI Chat Completions: client requests, upstream bodies, answers and streams, over recorded payloads.

Conformance numbers refer to the table at the end of the translation spec; only the OpenAI chat side
of each case is exercised here (the other side belongs to the other dialect's tests).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway import ir, thinking
from gateway.dialects import BadRequest, openai_chat

FIXTURES = Path(__file__).parents[2] / "fixtures" / "openai_chat"


def _json(name: str) -> dict[str, Any]:
    return orjson.loads((FIXTURES / name).read_bytes())


def _raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _parse_stream(data: bytes, piece: int, req: ir.Request | None = None) -> list[ir.Event]:
    parser = openai_chat.StreamParser(req)
    events: list[ir.Event] = []
    for i in range(0, len(data), piece):
        events += parser.feed(data[i : i + piece])
    return events + parser.finish()


def _render_stream(events: list[ir.Event], **request: Any) -> bytes:
    renderer = openai_chat.StreamRenderer(ir.Request(model=request.pop("model", "client-model"), **request))
    return b"".join(renderer.feed(event) for event in events) + renderer.finish()


def _frames(out: bytes) -> list[Any]:
    """Each ``data:`` frame of a rendered stream: the chunk as JSON, or the string ``[DONE]``."""
    assert out.endswith(b"\n\n") or not out
    frames: list[Any] = []
    for frame in out.split(b"\n\n")[:-1]:
        assert frame.startswith(b"data: "), frame
        payload = frame[6:]
        frames.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return frames


def _deltas(frames: list[Any]) -> list[dict[str, Any]]:
    return [f["choices"][0]["delta"] for f in frames if isinstance(f, dict) and f.get("choices")]


# --- client side: parse_request -------------------------------------------------------------


def test_a_whole_conversation_parses_into_the_ir() -> None:
    req = openai_chat.parse_request(_json("request_conversation.json"))

    assert req.source == "openai" and req.model == "gpt-4.1"
    assert [(s.role_hint, [p.text for p in s.parts], s.position) for s in req.system] == [
        ("system", ["You are a terse travel assistant."], None),
        ("developer", ["Prefer metric units.", "Cite the tool you used."], None),
        ("system", ["The user is on a mobile device; keep answers under 40 words."], None),
    ]
    assert req.system[1].parts[1].cache_control == {"type": "ephemeral"}
    assert [m.role for m in req.messages] == ["user", "assistant", "user", "assistant", "user"]
    reasoning, weather, clock = req.messages[1].parts
    assert reasoning == ir.Reasoning(text="Two independent lookups; call both tools in parallel.")
    assert weather == ir.ToolCall("call_Vx5gk7Pz1cRmJ0aQbT3nYw2L", "get_weather", '{"city":"Paris","unit":"celsius"}')
    assert clock.name == "get_time"
    assert req.messages[2].parts == [
        ir.ToolResult("call_Vx5gk7Pz1cRmJ0aQbT3nYw2L", [ir.Text('{"temp":21,"sky":"clear"}')], name="get_weather"),
        ir.ToolResult("call_H2dLq9sNfE4uKbZ8wRtY6oPa", [ir.Text("23:14 JST")], name="get_time"),
    ]
    assert [t.name for t in req.tools] == ["get_weather", "get_time"] and req.tools[0].strict is False
    assert req.tool_choice == ir.ToolChoice(mode="auto") and req.parallel_tool_calls is True
    assert (req.temperature, req.top_p, req.max_tokens, req.stop) == (0.2, 0.9, 512, ["\n\nUser:"])
    assert req.stream and req.include_usage and req.user == "user-4f1d2a"
    assert req.extensions == {
        "openai": {
            "seed": 42,
            "frequency_penalty": 0.1,
            "prompt_cache_key": "trip-planner-v3",
            "_max_tokens_field": "max_completion_tokens",
            "_system_at": [0, 0, 4],
        }
    }


def test_every_content_part_kind_is_understood() -> None:
    """Conformance 17 (parse side): data URLs become inline data, https URLs stay URLs."""
    req = openai_chat.parse_request(_json("request_multimodal.json"))
    text, inline, remote, pdf, stored, audio, video = req.messages[0].parts

    assert text == ir.Text("Compare the chart with the photo and summarise the PDF.")
    assert inline == ir.Image(data=inline.data, media_type="image/png", detail="high")
    assert inline.data.startswith("iVBORw0KGgo")
    assert remote == ir.Image(url="https://upload.wikimedia.org/wikipedia/commons/3/3f/Fronalpstock_big.jpg")
    assert pdf == ir.File(data=pdf.data, media_type="application/pdf", filename="report.pdf")
    assert pdf.data.startswith("JVBERi0")
    assert stored == ir.File(file_id="file-6F2ksmvXxt4VdoqmHRw6kL")
    assert audio == ir.Audio(data=audio.data, format="wav")
    assert isinstance(video, ir.File) and video.media_type == "video/mp4"


def test_tools_choices_formats_and_unknown_fields_are_kept() -> None:
    req = openai_chat.parse_request(_json("request_tools_and_options.json"))
    flights, patch, web, google = req.tools

    assert flights.kind == "function" and flights.strict is True
    assert flights.parameters["required"] == ["to", "date"]
    assert patch == ir.Tool(
        name="apply_patch",
        description="Apply a unified diff",
        kind="custom",
        format={"type": "grammar", "grammar": {"syntax": "lark", "definition": "start: /.+/s"}},
    )
    assert (web.kind, web.name, web.builtin) == (
        "builtin",
        "web_search_preview",
        {"type": "web_search_preview", "search_context_size": "low"},
    )
    assert (google.kind, google.name, google.builtin) == ("builtin", "google_search", {"google_search": {}})
    assert req.tool_choice == ir.ToolChoice(mode="tool", name="search_flights")
    assert req.parallel_tool_calls is False
    assert req.thinking == ir.Thinking(mode="level", level="high", include_thoughts=True)
    assert req.response_format == ir.ResponseFormat(
        type="json_schema",
        name="flight_answer",
        strict=True,
        schema=_json("request_tools_and_options.json")["response_format"]["json_schema"]["schema"],
    )
    assert (req.stop, req.n, req.max_tokens, req.top_k, req.service_tier) == (["END"], 1, 2048, 40, "priority")
    assert req.extensions["gemini"] == {"generationConfig": {"responseModalities": ["TEXT"], "candidateCount": 1}}
    assert req.extensions["openai"] == {
        "generationConfig": {"responseModalities": ["TEXT"], "candidateCount": 1},
        "metadata": {"ticket": "OPS-2291"},
        "verbosity": "low",
        "store": False,
    }


def test_image_output_options_are_offered_to_a_gemini_target() -> None:
    body = {
        "model": "gemini-2.5-flash-image",
        "messages": [{"role": "user", "content": "draw a fox"}],
        "modalities": ["text", "image"],
        "image_config": {"aspect_ratio": "16:9", "image_size": "2K"},
    }
    req = openai_chat.parse_request(body)
    assert req.extensions["gemini"] == {
        "generationConfig": {
            "responseModalities": ["TEXT", "IMAGE"],
            "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"},
        }
    }
    assert openai_chat.render_request(req)["modalities"] == ["text", "image"]  # the client's own field, same family


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"reasoning_effort": "none"}, ir.Thinking(mode="none", budget=0, include_thoughts=False)),
        ({"reasoning_effort": "auto"}, ir.Thinking(mode="auto", budget=-1, include_thoughts=True)),
        ({"reasoning_effort": "minimal"}, ir.Thinking(mode="level", level="minimal", include_thoughts=True)),
        ({"reasoning_effort": "XHigh"}, ir.Thinking(mode="level", level="xhigh", include_thoughts=True)),
        (
            {"reasoning_effort": "high", "extra_body": {"google": {"thinking_config": {"include_thoughts": False}}}},
            ir.Thinking(mode="level", level="high", include_thoughts=False),
        ),
        ({"google": {"thinking_config": {"include_thoughts": True}}}, ir.Thinking(include_thoughts=True)),
        ({}, None),
    ],
)
def test_reasoning_effort_and_the_show_thoughts_intent_are_read(fields: dict[str, Any], expected: Any) -> None:
    body = {"model": "gpt-5.4", "messages": [{"role": "user", "content": "hi"}], **fields}
    assert openai_chat.parse_request(body).thinking == expected


def test_high_effort_and_temperature_both_reach_the_ir() -> None:
    """Conformance 36 (parse side): the Claude render side decides what survives."""
    body = {
        "model": "claude-sonnet-4-6",
        "messages": [{"role": "user", "content": "plan"}],
        "reasoning_effort": "high",
        "temperature": 0.7,
    }
    req = openai_chat.parse_request(body)
    assert req.thinking == ir.Thinking(mode="level", level="high", include_thoughts=True)
    assert req.temperature == 0.7


def test_tool_messages_keep_text_json_text_and_images() -> None:
    """Conformance 30 and 34 (parse side), §6 item 27: strings stay text; stringified part arrays expand."""
    image = "data:image/png;base64,iVBORw0KGgo="
    body = {
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "user", "content": "check"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": f"call_{n}", "type": "function", "function": {"name": "probe", "arguments": "{}"}}
                    for n in "abcd"
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": "ok"},
            {"role": "tool", "tool_call_id": "call_b", "content": '{"t":21}'},
            {
                "role": "tool",
                "tool_call_id": "call_c",
                "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": image}}],
            },
            {
                "role": "tool",
                "tool_call_id": "call_d",
                "content": orjson.dumps(
                    [{"type": "input_text", "text": "shot"}, {"type": "input_image", "image_url": image}]
                ).decode(),
            },
        ],
    }
    results = openai_chat.parse_request(body).messages[2].parts
    shot = ir.Image(data="iVBORw0KGgo=", media_type="image/png")
    assert results == [
        ir.ToolResult("call_a", [ir.Text("ok")], name="probe"),
        ir.ToolResult("call_b", [ir.Text('{"t":21}')], name="probe"),
        ir.ToolResult("call_c", [ir.Text("see"), shot], name="probe"),
        ir.ToolResult("call_d", [ir.Text("shot"), shot], name="probe"),
    ]


def test_system_and_developer_messages_stay_top_level_segments_in_order() -> None:
    """Conformance 9 (parse side): D3.2, only Claude mid-conversation system entries are anchored."""
    body = {
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "one"},
            {"role": "developer", "content": "two"},
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
            {"role": "user", "content": "d"},
        ],
    }
    req = openai_chat.parse_request(body)
    assert [(s.role_hint, s.parts[0].text, s.position) for s in req.top_level_system()] == [
        ("system", "one", None),
        ("developer", "two", None),
    ]
    assert [m.role for m in req.messages] == ["user", "user", "assistant", "user"]
    assert "_system_at" not in req.extensions.get("openai", {})  # all of them came first


@pytest.mark.parametrize(
    ("fields", "max_tokens", "note"),
    [
        ({"max_tokens": 300}, 300, None),
        ({"max_completion_tokens": 400}, 400, "max_completion_tokens"),
        ({"max_tokens": 300, "max_completion_tokens": 400}, 400, "max_completion_tokens"),
    ],
)
def test_either_spelling_of_max_tokens_is_accepted(fields: dict[str, Any], max_tokens: int, note: str | None) -> None:
    """§6 item 42."""
    req = openai_chat.parse_request({"model": "m", "messages": [{"role": "user", "content": "x"}], **fields})
    assert req.max_tokens == max_tokens
    assert req.extensions.get("openai", {}).get("_max_tokens_field") == note


def test_a_message_cache_breakpoint_lands_on_its_last_text_block() -> None:
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            }
        ],
    }
    first, last = openai_chat.parse_request(body).messages[0].parts
    assert isinstance(first, ir.Text) and first.cache_control is None
    assert isinstance(last, ir.Text) and last.cache_control == {"type": "ephemeral", "ttl": "1h"}


def test_usage_is_only_asked_for_a_streaming_request() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}}
    assert openai_chat.parse_request(body).include_usage is False


_USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "JSON object"),
        ({"messages": _USER}, "'model' is required"),
        ({"model": "  ", "messages": _USER}, "'model' is required"),
        ({"model": "m"}, "'messages' is required"),
        ({"model": "m", "messages": []}, "'messages' is required"),
        ({"model": "m", "messages": ["hi"]}, r"'messages\[0\]' must be an object"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "role' must be one of"),
        ({"model": "m", "messages": [{"role": "user", "content": 7}]}, "must be a string or an array"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "hologram"}]}]}, "not a supported"),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, r"messages\[0\].tool_call_id' is required"),
        ({"model": "m", "messages": [{"role": "assistant", "tool_calls": {}}]}, "must be an array"),
        (
            {"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {}}]}]},
            r"tool_calls\[0\].id' is required",
        ),
        (
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}
                ],
            },
            "data:<type>;base64",
        ),
        ({"model": "m", "messages": _USER, "stream": "yes"}, "'stream' must be a boolean"),
        ({"model": "m", "messages": _USER, "temperature": "hot"}, "'temperature' must be a number"),
        ({"model": "m", "messages": _USER, "max_tokens": 1.5}, "'max_tokens' must be an integer"),
        ({"model": "m", "messages": _USER, "stop": 5}, "'stop' must be a string or an array"),
        ({"model": "m", "messages": _USER, "tools": [{"type": "function", "function": {}}]}, "name' is required"),
        ({"model": "m", "messages": _USER, "tool_choice": "sometimes"}, "'tool_choice' must be"),
        ({"model": "m", "messages": _USER, "reasoning_effort": "ultra"}, "'reasoning_effort' must be one of"),
        ({"model": "m", "messages": _USER, "response_format": {"type": "yaml"}}, "'response_format.type'"),
        ({"model": "m", "messages": _USER, "parallel_tool_calls": "no"}, "must be a boolean"),
    ],
)
def test_an_invalid_body_is_rejected_with_a_clear_reason(body: Any, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        openai_chat.parse_request(body)


# --- same-family round trips ----------------------------------------------------------------


def test_the_same_family_round_trip_gives_back_the_clients_body() -> None:
    body = _json("request_conversation.json")
    assert openai_chat.render_request(openai_chat.parse_request(copy.deepcopy(body))) == body


@pytest.mark.parametrize(
    "name", ["request_conversation.json", "request_multimodal.json", "request_tools_and_options.json"]
)
def test_parsing_a_rendered_body_gives_back_the_same_ir(name: str) -> None:
    req = openai_chat.parse_request(_json(name))
    again = openai_chat.parse_request(openai_chat.render_request(req))
    # gpt-5.4 rejects max_tokens, so it goes up as max_completion_tokens; the value is the same.
    for parsed in (req, again):
        parsed.extensions.get("openai", {}).pop("_max_tokens_field", None)
    assert again == req


def test_same_family_normalisations_lose_no_content() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "just text"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": ""},
        ],
        "stream": False,
        "stream_options": {"include_usage": True},
    }
    assert openai_chat.render_request(openai_chat.parse_request(body))["messages"] == [
        {"role": "user", "content": "just text"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": ""},
    ]
    assert "stream_options" not in openai_chat.render_request(openai_chat.parse_request(body))


# --- upstream side: render_request ----------------------------------------------------------


def _user(text: str) -> ir.Message:
    return ir.Message("user", [ir.Text(text)])


def test_instructions_come_first_and_a_developer_item_stays_developer() -> None:
    """Conformance 10 (render side): the IR a Responses client produces."""
    req = ir.Request(
        model="gpt-4.1",
        source="responses",
        system=[
            ir.SystemSegment([ir.Text("Be brief.")]),
            ir.SystemSegment([ir.Text("Answer in French.")], role_hint="developer"),
        ],
        messages=[_user("Hello")],
    )
    assert openai_chat.render_request(req)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "Hello"},
    ]


def test_a_mid_conversation_system_segment_stays_in_place_without_attribution() -> None:
    """Conformance 12 (render side), D3: a Claude Code body with a mid-conversation system message."""
    req = ir.Request(
        model="gpt-4.1",
        source="claude",
        system=[
            ir.SystemSegment(
                [
                    ir.Text("x-anthropic-billing-header: cc_version=2.1.220; cc_entrypoint=cli"),
                    ir.Text("You are Claude Code."),
                ]
            ),
            ir.SystemSegment([ir.Text("Plan mode is now off.")], position=3),
        ],
        messages=[_user("one"), ir.Message("assistant", [ir.Text("ok")]), _user("two"), _user("three")],
    )
    messages = openai_chat.render_request(req)["messages"]
    assert messages == [
        {"role": "system", "content": "You are Claude Code."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "two"},
        {"role": "system", "content": "Plan mode is now off."},
        {"role": "user", "content": "three"},
    ]
    assert b"system-reminder" not in orjson.dumps(messages)


def test_a_multi_block_claude_system_becomes_one_message_with_text_parts() -> None:
    req = ir.Request(model="m", source="claude", system=[ir.SystemSegment([ir.Text("a"), ir.Text("b")])])
    req.messages = [_user("hi")]
    assert openai_chat.render_request(req)["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
    }


@pytest.mark.parametrize("results_first", [True, False])
def test_tool_results_follow_the_calls_before_the_same_turns_text(results_first: bool) -> None:
    """§4.1: a Claude user turn may put text before or after its tool_result blocks."""
    result = ir.ToolResult("toolu_01AbCdEf", [ir.Text("shipped")], name="lookup_order")
    text = ir.Text("and the invoice?")
    req = ir.Request(
        model="gpt-4o",
        source="claude",
        messages=[
            _user("where is my order?"),
            ir.Message("assistant", [ir.Text("Checking."), ir.ToolCall("toolu_01AbCdEf", "lookup_order", '{"id":7}')]),
            ir.Message("user", [result, text] if results_first else [text, result]),
        ],
    )
    assert openai_chat.render_request(req)["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_01AbCdEf",
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": '{"id":7}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01AbCdEf", "content": "shipped"},
        {"role": "user", "content": "and the invoice?"},
    ]


def test_gemini_history_ids_pair_each_tool_message_in_order() -> None:
    """Conformance 26 (render side): the Gemini parse side made the ids; they are kept as they are."""
    ids = ["call_3f8a9c0d1e2b4a5f6c7d8e9f", "call_0a1b2c3d4e5f6a7b8c9d0e1f"]
    req = ir.Request(
        model="gpt-4o",
        source="gemini",
        messages=[
            _user("weather twice"),
            ir.Message("assistant", [ir.ToolCall(i, "get_weather", '{"city":"Oslo"}') for i in ids]),
            ir.Message("user", [ir.ToolResult(i, [ir.Text(f"{n} °C")], name="get_weather") for n, i in enumerate(ids)]),
        ],
    )
    messages = openai_chat.render_request(req)["messages"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ids
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": ids[0], "content": "0 °C"},
        {"role": "tool", "tool_call_id": ids[1], "content": "1 °C"},
    ]


def test_a_tool_result_with_an_image_becomes_a_content_array() -> None:
    """Conformance 35 (render side), §6 item 26."""
    result = ir.ToolResult("call_9", [ir.Text("screenshot"), ir.Image(data="iVBORw0KGgo=", media_type="image/png")])
    req = ir.Request(model="m", source="responses", messages=[ir.Message("user", [result])])
    assert openai_chat.render_request(req)["messages"] == [
        {
            "role": "tool",
            "tool_call_id": "call_9",
            "content": [
                {"type": "text", "text": "screenshot"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ]


def test_translated_text_only_tool_results_are_joined() -> None:
    result = ir.ToolResult("toolu_1", [ir.Text("line one"), ir.Text("line two")])
    req = ir.Request(model="m", source="claude", messages=[ir.Message("user", [result])])
    assert openai_chat.render_request(req)["messages"][0]["content"] == "line one\n\nline two"


def test_only_reasoning_an_openai_upstream_can_use_is_replayed() -> None:
    """§4.9.7, §6 items 48-49: foreign signed blocks dropped, empty Responses items stand in, no repeats."""
    parts: list[ir.Part] = [
        ir.Reasoning(text="claude thought", signature="EqQBCkYIBBgCKkA", family="claude"),
        ir.Reasoning(text="", signature="gAAAAABo", family="responses"),
        ir.Reasoning(text="plain thought"),
        ir.Reasoning(text="plain thought"),
        ir.Reasoning(text="", signature="", family="claude", redacted=True),
        ir.Text("answer"),
    ]
    req = ir.Request(model="m", source="responses", messages=[_user("q"), ir.Message("assistant", parts)])
    assistant = openai_chat.render_request(req)["messages"][1]
    assert assistant == {
        "role": "assistant",
        "content": "answer",
        "reasoning_content": "[reasoning unavailable]\n\nplain thought",
    }


def test_tool_choice_none_stays_none() -> None:
    """Conformance 28 (render side), R12."""
    req = ir.Request(
        model="gpt-4o",
        source="claude",
        messages=[_user("hi")],
        tools=[ir.Tool(name="lookup", parameters={"type": "object", "properties": {}})],
        tool_choice=ir.ToolChoice(mode="none"),
    )
    assert openai_chat.render_request(req)["tool_choice"] == "none"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (ir.ToolChoice(mode="auto"), "auto"),
        (ir.ToolChoice(mode="required"), "required"),
        (ir.ToolChoice(mode="tool", name="lookup"), {"type": "function", "function": {"name": "lookup"}}),
        (ir.ToolChoice(mode="auto", parallel=False), "auto"),
    ],
)
def test_tool_choice_is_written_in_the_chat_shape(choice: ir.ToolChoice, expected: Any) -> None:
    req = ir.Request(model="m", source="claude", messages=[_user("hi")], tools=[ir.Tool(name="lookup")])
    req.tool_choice = choice
    body = openai_chat.render_request(req)
    assert body["tool_choice"] == expected
    assert body.get("parallel_tool_calls") == choice.parallel


def test_tool_settings_are_left_out_when_no_tool_survives() -> None:
    req = ir.Request(
        model="m",
        source="responses",
        messages=[_user("hi")],
        tools=[ir.Tool(name="web_search", kind="builtin", builtin={"type": "web_search"})],
        tool_choice=ir.ToolChoice(mode="required"),
        parallel_tool_calls=True,
    )
    body = openai_chat.render_request(req)
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & body.keys()


def test_translated_schemas_get_properties_on_every_object() -> None:
    schema = {
        "type": "object",
        "properties": {"filter": {"type": "object"}, "tags": {"type": "array", "items": {"type": "object"}}},
        "default": {"type": "object"},
    }
    req = ir.Request(model="m", source="claude", messages=[_user("x")], tools=[ir.Tool(name="q", parameters=schema)])
    params = openai_chat.render_request(req)["tools"][0]["function"]["parameters"]
    assert params["properties"]["filter"] == {"type": "object", "properties": {}}
    assert params["properties"]["tags"]["items"] == {"type": "object", "properties": {}}
    assert params["default"] == {"type": "object"}  # a value, not a schema


def test_custom_tools_travel_as_input_functions_and_come_back_custom() -> None:
    """§6 item 20: freeform tools for servers without them, unwrapped on the way back."""
    patch = "*** Begin Patch\n*** End Patch"
    req = ir.Request(
        model="deepseek-chat",
        source="responses",
        tools=[ir.Tool(name="apply_patch", kind="custom", format={"type": "text"})],
        messages=[
            _user("fix it"),
            ir.Message("assistant", [ir.ToolCall("call_p1", "apply_patch", patch, kind="custom")]),
            ir.Message("user", [ir.ToolResult("call_p1", [ir.Text("Done")], kind="custom")]),
        ],
    )
    body = openai_chat.render_request(req)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "apply_patch",
                "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
            },
        }
    ]
    assert body["messages"][1]["tool_calls"][0]["function"] == {
        "name": "apply_patch",
        "arguments": orjson.dumps({"input": patch}).decode(),
    }
    answer = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_p2",
                            "type": "function",
                            "function": {"name": "apply_patch", "arguments": '{"input":"diff"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    assert openai_chat.parse_response(answer, req).tool_calls == [
        ir.ToolCall("call_p2", "apply_patch", "diff", "custom")
    ]


@pytest.mark.parametrize(
    ("th", "effort"),
    [
        (ir.Thinking(mode="budget", budget=8192), "medium"),  # Conformance 37 (render side)
        (ir.Thinking(mode="budget", budget=0), "none"),
        (ir.Thinking(mode="budget", budget=-1), "auto"),
        (ir.Thinking(mode="budget", budget=100_000), "xhigh"),
        (ir.Thinking(mode="level", level="low"), "low"),
        (ir.Thinking(mode="none", budget=0), "none"),
        (ir.Thinking(mode="auto", budget=-1), "auto"),
        (ir.Thinking(include_thoughts=True), None),
        (None, None),
    ],
)
def test_thinking_is_written_as_reasoning_effort(th: ir.Thinking | None, effort: str | None) -> None:
    req = ir.Request(model="some-model", source="claude", messages=[_user("x")], thinking=th)
    assert openai_chat.render_request(req).get("reasoning_effort") == effort


@pytest.mark.parametrize(
    ("model", "upstream", "effort"),
    [
        ("gpt-5.5(xhigh)", "gpt-5.5", "xhigh"),
        ("o3(medium)", "o3", "medium"),
        ("qwen3-32b(8192)", "qwen3-32b", "medium"),
    ],
)
def test_a_model_suffix_wins_over_the_body_on_the_way_up(model: str, upstream: str, effort: str) -> None:
    """Conformance 38 (chat side): parse keeps the client's name; the suffix and capability rules compose."""
    req = openai_chat.parse_request(
        {"model": model, "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "low"}
    )
    assert req.model == model
    req.model, suffix = thinking.parse_suffix(req.model)
    req.thinking = thinking.resolve(suffix, req.model, same_family=True, from_suffix=True)
    body = openai_chat.render_request(req)
    assert (body["model"], body["reasoning_effort"]) == (upstream, effort)


def test_an_unsupported_level_in_family_is_refused() -> None:
    """Conformance 38: ``gpt-5.4(max)`` is a 400 (gpt-5.4 offers low..xhigh)."""
    req = openai_chat.parse_request({"model": "gpt-5.4(max)", "messages": [{"role": "user", "content": "x"}]})
    base, suffix = thinking.parse_suffix(req.model)
    with pytest.raises(thinking.ThinkingError, match="not supported"):
        thinking.resolve(suffix, base, same_family=True, from_suffix=True)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (ir.ResponseFormat(type="json_object"), {"type": "json_object"}),  # Conformance 43, resp → chat
        (ir.ResponseFormat(type="text"), {"type": "text"}),
        (
            ir.ResponseFormat(type="json_schema", name="x", strict=True, schema={"type": "object"}),
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True}},
        ),
    ],
)
def test_structured_output_is_written_as_response_format(fmt: ir.ResponseFormat, expected: dict[str, Any]) -> None:
    req = ir.Request(model="m", source="responses", messages=[_user("x")], response_format=fmt)
    assert openai_chat.render_request(req)["response_format"] == expected


def test_sampling_limits_and_stream_options_are_written() -> None:
    req = ir.Request(
        model="llama-3.3-70b",
        source="gemini",
        messages=[_user("x")],
        temperature=0.3,
        top_p=0.8,
        top_k=20,
        max_tokens=256,
        stop=["END"],
        n=2,
        stream=True,
        include_usage=False,
        user="u-1",
        extensions={"openai": {"seed": 3}, "gemini": {"safetySettings": []}},
    )
    body = openai_chat.render_request(req)
    assert body == {
        "model": "llama-3.3-70b",
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 0.3,
        "top_p": 0.8,
        "max_tokens": 256,
        "stop": ["END"],
        "n": 2,
        "stream": True,
        "stream_options": {"include_usage": True},  # always, for accounting (R9)
        "user": "u-1",
    }


def test_openai_reasoning_models_get_max_completion_tokens() -> None:
    req = ir.Request(model="gpt-5.4", source="claude", messages=[_user("x")], max_tokens=4096)
    body = openai_chat.render_request(req)
    assert body["max_completion_tokens"] == 4096 and "max_tokens" not in body


def test_translated_parts_are_written_as_chat_parts() -> None:
    parts: list[ir.Part] = [
        ir.Text("look", cache_control={"type": "ephemeral"}),
        ir.Image(url="https://example.com/a.jpg", detail="low"),
        ir.File(data="JVBERi0=", media_type="application/pdf", filename="doc.pdf"),
        ir.File(data="AAAA", media_type="video/mp4"),
        ir.Audio(data="UklGRg==", format="mp3"),
    ]
    req = ir.Request(model="m", source="claude", messages=[ir.Message("user", parts)])
    assert openai_chat.render_request(req)["messages"][0]["content"] == [
        {"type": "text", "text": "look"},  # cache_control is a Claude matter
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "low"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "doc.pdf"}},
        {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "mp3"}},
    ]


def test_calls_without_ids_get_stable_ids_their_results_share() -> None:
    def body() -> dict[str, Any]:
        req = ir.Request(
            model="m",
            source="gemini",
            messages=[
                _user("x"),
                ir.Message("assistant", [ir.ToolCall("", "f", '{"a":1}', signature="CiQBjz1rX")]),
                ir.Message("user", [ir.ToolResult("", [ir.Text("1")], name="f")]),
            ],
        )
        return openai_chat.render_request(req)

    first, second = body(), body()
    call = first["messages"][1]["tool_calls"][0]
    assert call["id"].startswith("call_") and len(call["id"]) == 29
    assert call["extra_content"] == {"google": {"thought_signature": "CiQBjz1rX"}}
    assert first["messages"][2]["tool_call_id"] == call["id"] == second["messages"][1]["tool_calls"][0]["id"]


def test_client_only_fields_reach_only_an_openai_upstream() -> None:
    foreign = ir.Request(model="m", source="claude", messages=[_user("x")], extensions={"openai": {"seed": 1}})
    foreign.tools = [ir.Tool(name="t", kind="builtin", builtin={"type": "web_search_20250305"}), ir.Tool(name="f")]
    body = openai_chat.render_request(foreign)
    assert "seed" not in body and [t["function"]["name"] for t in body["tools"]] == ["f"]


# --- upstream side: parse_response ----------------------------------------------------------


def test_a_text_answer_parses_into_the_ir() -> None:
    resp = openai_chat.parse_response(_json("response_text.json"))
    assert (resp.id, resp.model, resp.created) == (
        "chatcmpl-BqS8a1kLmT4nWc0ZxYfE7hJ2pQr9u",
        "gpt-4.1-2025-04-14",
        1751975203,
    )
    assert resp.parts == [ir.Text("Yes: 19 °C, light wind, clear until 23:00.")]
    assert resp.finish == ir.Finish(reason="stop", native="stop")
    assert resp.usage == ir.Usage(input_tokens=1214, output_tokens=18, cached_tokens=1024, total_tokens=1232)


def test_a_tool_call_answer_parses_into_the_ir() -> None:
    resp = openai_chat.parse_response(_json("response_tool_calls.json"))
    assert resp.parts == [
        ir.ToolCall("call_Vx5gk7Pz1cRmJ0aQbT3nYw2L", "get_weather", '{"location":"Paris"}'),
        ir.ToolCall("call_H2dLq9sNfE4uKbZ8wRtY6oPa", "get_time", '{"city":"Tokyo"}'),
    ]
    assert resp.finish == ir.Finish(reason="tool_calls", native="tool_calls")


def test_reasoning_and_images_from_an_openrouter_style_answer_are_read() -> None:
    resp = openai_chat.parse_response(_json("response_reasoning_images.json"))
    reasoning, text, image = resp.parts
    assert reasoning == ir.Reasoning(text="The user wants a map; draw the Seine first.")
    assert text == ir.Text("Here is a sketch of the route.")
    assert isinstance(image, ir.Image) and image.media_type == "image/png" and image.data.startswith("iVBOR")
    assert resp.finish == ir.Finish(reason="length", native="length")
    assert resp.usage == ir.Usage(
        input_tokens=100, output_tokens=80, cached_tokens=40, reasoning_tokens=50, total_tokens=180
    )


@pytest.mark.parametrize(
    ("native", "reason"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("tool_calls", "stop"),  # claimed, but no call was produced
        ("function_call", "stop"),
        ("max_tokens", "length"),
        ("eos", "stop"),
        ("something_new", "other"),
        (None, "stop"),
    ],
)
def test_upstream_finish_reasons_map_to_the_ir_and_keep_the_native_value(native: str | None, reason: str) -> None:
    """Conformance 48 (parse side): ``length`` is the IR's length; the native value rides along."""
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": native}]}
    assert openai_chat.parse_response(body).finish == ir.Finish(reason=reason, native=native or "")  # type: ignore[arg-type]


def test_a_body_that_is_not_a_completion_is_an_error() -> None:
    with pytest.raises(ValueError, match="Rate limit reached"):
        openai_chat.parse_response({"error": {"message": "Rate limit reached", "type": "rate_limit_error"}})


# --- client side: render_response -----------------------------------------------------------


def _client(**fields: Any) -> ir.Request:
    return ir.Request(model=fields.pop("model", "my-alias"), **fields)


def test_a_text_answer_renders_as_a_chat_completion() -> None:
    """Conformance 2 (render side): the IR a Gemini upstream produces."""
    resp = ir.Response(
        id="resp-9a8b7c",
        model="gemini-2.5-flash",
        created=1751975700,
        parts=[ir.Text("Hello there.")],
        finish=ir.Finish(reason="stop", native="STOP"),
        usage=ir.Usage(input_tokens=12, output_tokens=4, total_tokens=16),
    )
    assert openai_chat.render_response(resp, _client()) == {
        "id": "resp-9a8b7c",
        "object": "chat.completion",
        "created": 1751975700,
        "model": "my-alias",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
                "native_finish_reason": "STOP",
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 4,
            "total_tokens": 16,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


def test_tool_calls_render_with_json_string_arguments_and_null_content() -> None:
    """Conformance 21 and 31 (render side): ids, original names, ``tool_calls`` whatever the upstream said."""
    resp = ir.Response(
        parts=[
            ir.ToolCall("toolu_01A09q90qw90lq917835lq9", "my tool/v2", '{"q":"x"}'),
            ir.ToolCall("call_c2", "apply_patch", "*** Begin Patch", kind="custom"),
        ],
        finish=ir.Finish(reason="stop", native="end_turn"),
    )
    message = openai_chat.render_response(resp, _client())["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {
            "id": "toolu_01A09q90qw90lq917835lq9",
            "type": "function",
            "function": {"name": "my tool/v2", "arguments": '{"q":"x"}'},
        },
        {"id": "call_c2", "type": "custom", "custom": {"name": "apply_patch", "input": "*** Begin Patch"}},
    ]
    assert openai_chat.render_response(resp, _client())["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("reason", "native", "expected"),
    [
        ("stop", "end_turn", "stop"),
        ("stop_sequence", "stop_sequence", "stop"),  # Conformance 45 (render side)
        ("length", "MAX_TOKENS", "length"),  # Conformance 47
        ("content_filter", "SAFETY", "content_filter"),  # Conformance 47
        ("refusal", "refusal", "content_filter"),
        ("pause_turn", "pause_turn", "stop"),
        ("other", "FINISH_REASON_UNSPECIFIED", "stop"),
        ("tool_calls", "tool_use", "stop"),  # no call was produced
    ],
)
def test_clients_only_ever_see_the_four_openai_finish_reasons(reason: str, native: str, expected: str) -> None:
    """R5."""
    resp = ir.Response(parts=[ir.Text("x")], finish=ir.Finish(reason=reason, native=native))  # type: ignore[arg-type]
    choice = openai_chat.render_response(resp, _client())["choices"][0]
    assert (choice["finish_reason"], choice["native_finish_reason"]) == (expected, native)
    frames = _frames(_render_stream([ir.Start(id="x"), ir.End(resp.finish)]))
    assert frames[-2]["choices"][0]["finish_reason"] == expected


def test_usage_counts_reasoning_inside_completion_and_cache_inside_prompt() -> None:
    """Conformance 50 (render side), R6: the IR a Gemini upstream gives for 100/40/30/50/180."""
    usage = ir.Usage(input_tokens=100, output_tokens=80, cached_tokens=40, reasoning_tokens=50, total_tokens=180)
    body = openai_chat.render_response(ir.Response(parts=[ir.Text("x")], usage=usage), _client())
    assert body["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 80,
        "total_tokens": 180,
        "prompt_tokens_details": {"cached_tokens": 40},
        "completion_tokens_details": {"reasoning_tokens": 50},
    }


def test_reasoning_and_images_render_as_message_extensions() -> None:
    resp = ir.Response(
        parts=[
            ir.Reasoning(text="step one. ", signature="sig", family="claude"),
            ir.Reasoning(family="claude", redacted=True, signature="opaque"),
            ir.Reasoning(text="step two."),
            ir.Text("Done."),
            ir.Image(data="iVBORw0KGgo=", media_type="image/png"),
        ]
    )
    message = openai_chat.render_response(resp, _client())["choices"][0]["message"]
    assert message["reasoning_content"] == "step one. step two."
    assert message["images"] == [
        {"index": 0, "type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    ]


@pytest.mark.parametrize("name", ["response_text.json", "response_tool_calls.json", "response_reasoning_images.json"])
def test_a_same_family_answer_survives_the_round_trip(name: str) -> None:
    upstream = _json(name)
    body = openai_chat.render_response(openai_chat.parse_response(upstream), _client(model=upstream["model"]))
    sent, got = upstream["choices"][0], body["choices"][0]
    assert (body["id"], body["created"], got["finish_reason"]) == (
        upstream["id"],
        upstream["created"],
        sent["finish_reason"],
    )
    assert got["message"]["content"] == sent["message"]["content"]
    assert got["message"].get("tool_calls") == sent["message"].get("tool_calls")
    assert got["message"].get("reasoning_content") == sent["message"].get("reasoning")
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert body["usage"][key] == upstream["usage"][key]


# --- upstream side: StreamParser ------------------------------------------------------------

_WEATHER = "call_Vx5gk7Pz1cRmJ0aQbT3nYw2L"
_TIME = "call_H2dLq9sNfE4uKbZ8wRtY6oPa"

STREAMS: list[tuple[str, list[ir.Event]]] = [
    (
        "stream_with_usage.sse",
        [
            ir.Start(id="chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", model="gpt-4o-2024-08-06", created=1741570283),
            ir.TextDelta("Hello"),
            ir.TextDelta("!"),
            ir.UsageUpdate(ir.Usage(19, 10, cached_tokens=4, reasoning_tokens=3, total_tokens=29)),
            ir.End(ir.Finish(reason="stop", native="stop")),
        ],
    ),
    (
        # Conformance 23: the second call's name arrives after its id; fragments interleave.
        "stream_parallel_tools_late_name.sse",
        [
            ir.Start(id="chatcmpl-BqSA3nR8tYk2WfXcLq5Hm0Pj7Dz1e", model="gpt-4o-2024-08-06", created=1751975400),
            ir.ToolCallStart(0, _WEATHER, "get_weather"),
            ir.ToolCallDelta(0, '{"loc'),
            ir.ToolCallDelta(0, 'ation":"Paris"}'),
            ir.ToolCallStart(1, _TIME, "get_time"),
            ir.ToolCallDelta(1, '{"city":"Tokyo"}'),
            ir.ToolCallEnd(0),
            ir.ToolCallEnd(1),
            ir.UsageUpdate(ir.Usage(120, 7, cached_tokens=100, total_tokens=127)),
            ir.End(ir.Finish(reason="tool_calls", native="tool_calls")),
        ],
    ),
    (
        # Conformance 51 and 8: usage after finish_reason; a stray chunk after [DONE].
        "stream_chunk_after_done.sse",
        [
            ir.Start(id="chatcmpl-BqSB7cVw0xN4Lk9Ep2Rz6YtGh3Ja8", model="gpt-4.1-mini-2025-04-14", created=1751975455),
            ir.TextDelta("Bon"),
            ir.TextDelta("jour"),
            ir.UsageUpdate(ir.Usage(120, 7, cached_tokens=100, total_tokens=127)),
            ir.End(ir.Finish(reason="stop", native="stop")),
        ],
    ),
    (
        # CRLF, comments, an event: line, reasoning deltas, usage on the finish chunk, no [DONE] (§1.3).
        "stream_reasoning_crlf_no_done.sse",
        [
            ir.Start(id="0b7c1f8e-3a52-4f0e-9d8b-7e2c5a1f4d36", model="deepseek-reasoner", created=1751975502),
            ir.ReasoningDelta("Paris in July"),
            ir.ReasoningDelta(" is warm."),
            ir.TextDelta("Pack light"),
            ir.TextDelta(" clothes."),
            ir.UsageUpdate(ir.Usage(14, 31, reasoning_tokens=24, total_tokens=45)),
            ir.End(ir.Finish(reason="stop", native="stop")),
        ],
    ),
    (
        "stream_error.sse",
        [
            ir.Start(id="chatcmpl-BqSC1pQ4sX9mVb7Nk2Lw8Ea5Rt0Yh", model="gpt-4o-2024-08-06", created=1751975600),
            ir.TextDelta("The answer is"),
            ir.StreamError(
                500, "The server had an error while processing your request. Sorry about that!", "server_error"
            ),
        ],
    ),
    (
        "stream_length.sse",
        [
            ir.Start(id="chatcmpl-BqSD9kYt3Rw6Nz1Xc8Vb2Mq4Lp7Gf", model="gpt-4o-mini-2024-07-18", created=1751975650),
            ir.TextDelta("Once upon a"),
            ir.End(ir.Finish(reason="length", native="length")),
        ],
    ),
]


@pytest.mark.parametrize("piece", [1, 5, 64, 1 << 20])
@pytest.mark.parametrize(("name", "expected"), STREAMS, ids=[name for name, _ in STREAMS])
def test_an_upstream_stream_parses_into_the_same_events_however_it_is_split(
    name: str, expected: list[ir.Event], piece: int
) -> None:
    assert _parse_stream(_raw(name), piece) == expected


def test_end_waits_for_done_so_late_usage_comes_first() -> None:
    """Conformance 51, §6 item 30."""
    raw = _raw("stream_chunk_after_done.sse")
    parser = openai_chat.StreamParser()
    before_done = raw[: raw.index(b"data: [DONE]")]
    events = parser.feed(before_done)
    assert not any(isinstance(e, ir.End | ir.UsageUpdate) for e in events)
    tail = parser.feed(raw[len(before_done) :])
    assert tail == [
        ir.UsageUpdate(ir.Usage(120, 7, cached_tokens=100, total_tokens=127)),
        ir.End(ir.Finish(reason="stop", native="stop")),
    ]
    assert parser.saw_done and parser.feed(b'data: {"choices":[{"delta":{"content":"late"}}]}\n\n') == []
    assert parser.finish() == []


def test_a_stream_cut_before_done_still_ends_and_says_so() -> None:
    parser = openai_chat.StreamParser()
    events = parser.feed(_raw("stream_length.sse").split(b"data: [DONE]")[0])
    events += parser.finish()
    assert events[-1] == ir.End(ir.Finish(reason="length", native="length"))
    assert parser.saw_finish and not parser.saw_done
    cut = openai_chat.StreamParser()
    assert cut.feed(b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hal"}}]}\n\n')[-1] == ir.TextDelta(
        "Hal"
    )
    assert cut.finish() == [ir.End(ir.Finish(reason="stop", native=""))]
    assert not cut.saw_finish


def _tool_chunk(*calls: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-x",
        "choices": [{"index": 0, "delta": {"tool_calls": list(calls)}, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def test_calls_whose_id_or_name_never_comes_are_still_announced_at_the_finish() -> None:
    """§6 item 18: nameless calls become ``tool_<index>``; id-less ones get an id."""
    raw = (
        _tool_chunk({"index": 0, "id": "call_q", "function": {"name": None, "arguments": '{"a":'}})
        + _tool_chunk({"index": 1, "function": {"name": "lookup", "arguments": ""}})
        + _tool_chunk({"index": 0, "function": {"name": "", "arguments": "1}"}})
        + _tool_chunk(finish="tool_calls")
        + b"data: [DONE]\n\n"
    )
    events = _parse_stream(raw, 7)
    assert events[1:] == [
        ir.ToolCallStart(0, "call_q", "tool_0"),
        ir.ToolCallDelta(0, '{"a":1}'),
        ir.ToolCallStart(1, "call_chatcmpl-x_1", "lookup"),
        ir.ToolCallEnd(0),
        ir.ToolCallEnd(1),
        ir.End(ir.Finish(reason="tool_calls", native="tool_calls")),
    ]


def test_repeated_names_and_ids_in_later_deltas_do_not_restart_a_call() -> None:
    raw = (
        _tool_chunk({"index": 0, "id": "call_r", "type": "function", "function": {"name": "f", "arguments": "{"}})
        + _tool_chunk({"index": 0, "id": "call_r", "type": "function", "function": {"name": "f", "arguments": "}"}})
        + _tool_chunk(finish="tool_calls")
    )
    events = _parse_stream(raw, 1 << 20)
    assert [e for e in events if isinstance(e, ir.ToolCallStart)] == [ir.ToolCallStart(0, "call_r", "f")]
    assert "".join(e.arguments for e in events if isinstance(e, ir.ToolCallDelta)) == "{}"


def test_a_wrapped_custom_tool_streams_back_as_one_unwrapped_input() -> None:
    req = ir.Request(model="m", source="responses", tools=[ir.Tool(name="apply_patch", kind="custom")])
    raw = (
        _tool_chunk({"index": 0, "id": "call_p", "function": {"name": "apply_patch", "arguments": '{"input":"*** Be'}})
        + _tool_chunk({"index": 0, "function": {"arguments": 'gin Patch"}'}})
        + _tool_chunk(finish="tool_calls")
    )
    assert _parse_stream(raw, 3, req)[1:4] == [
        ir.ToolCallStart(0, "call_p", "apply_patch", kind="custom"),
        ir.ToolCallDelta(0, "*** Begin Patch"),
        ir.ToolCallEnd(0),
    ]


def test_a_gemini_thought_signature_on_a_streamed_call_is_kept() -> None:
    call = {
        "index": 0,
        "id": "call_g",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
        "extra_content": {"google": {"thought_signature": "CiQBjz1rX8"}},
    }
    assert _parse_stream(_tool_chunk(call), 64)[1] == ir.ToolCallStart(0, "call_g", "f", signature="CiQBjz1rX8")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ({"message": "slow down", "type": "rate_limit_error"}, 429),
        ({"message": "bad", "type": "invalid_request_error", "code": "context_length_exceeded"}, 400),
        ({"message": "overloaded", "code": 503}, 503),
        ("plain text", 500),
    ],
)
def test_an_error_inside_the_stream_becomes_a_stream_error(error: Any, status: int) -> None:
    events = _parse_stream(b"data: " + orjson.dumps({"error": error}) + b"\n\n", 64)
    assert len(events) == 1 and isinstance(events[0], ir.StreamError) and events[0].status == status


def test_a_streamed_answer_aggregates_to_the_same_answer_as_the_non_stream_one() -> None:
    aggregator = ir.Aggregator()
    aggregator.feed(_parse_stream(_raw("stream_parallel_tools_late_name.sse"), 13))
    whole = openai_chat.parse_response(_json("response_tool_calls.json"))
    got = aggregator.response
    assert (got.parts, got.finish, got.usage) == (whole.parts, whole.finish, whole.usage)


# --- client side: StreamRenderer ------------------------------------------------------------


def _claude_like(*middle: ir.Event, finish: ir.Finish | None = None) -> list[ir.Event]:
    start = ir.Start(id="msg_01XFDUDYJgAACzvnptvVoYEL", model="claude-sonnet-4-5-20250929", created=1751975800)
    return [start, *middle, ir.End(finish or ir.Finish(reason="stop", native="end_turn"))]


def test_a_plain_text_stream_renders_exactly_as_chat_clients_expect() -> None:
    """Conformance 1 (render side): role first, text pieces, finish stop, [DONE], no usage anywhere."""
    events = _claude_like(
        ir.TextDelta("Hel"),
        ir.TextDelta("lo, "),
        ir.TextDelta(""),
        ir.UsageUpdate(ir.Usage(25, 3)),
        ir.TextDelta("world"),
    )
    frames = _frames(_render_stream(events))
    chunks = frames[:-1]
    assert frames[-1] == "[DONE]"
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        ("msg_01XFDUDYJgAACzvnptvVoYEL", 1751975800, "client-model", "chat.completion.chunk")
    }
    deltas = _deltas(chunks)
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("content") or "" for d in deltas) == "Hello, world"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    assert deltas[-1] == {}
    assert not any("usage" in c for c in chunks)


def test_parallel_tool_calls_stream_with_ordinal_indexes_and_bare_fragments() -> None:
    """Conformance 22 (render side), R7: Claude block indexes 1 and 2 become ordinals 0 and 1."""
    events = _claude_like(
        ir.TextDelta("Let me check."),
        ir.ToolCallStart(1, "toolu_01A", "get_weather"),
        ir.ToolCallDelta(1, '{"city":'),
        ir.ToolCallDelta(1, '"Paris"}'),
        ir.ToolCallEnd(1),
        ir.ToolCallStart(2, "toolu_01B", "get_time"),
        ir.ToolCallDelta(2, '{"city":"Tokyo"}'),
        ir.ToolCallEnd(2),
        finish=ir.Finish(reason="tool_calls", native="tool_use"),
    )
    frames = _frames(_render_stream(events))
    calls = [call for d in _deltas(frames) for call in d.get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01A",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert calls[3] == {
        "index": 1,
        "id": "toolu_01B",
        "type": "function",
        "function": {"name": "get_time", "arguments": ""},
    }
    fragments = [c for c in calls if "id" not in c]
    assert all(set(c) == {"index", "function"} and set(c["function"]) == {"arguments"} for c in fragments)
    for index, expected in ((0, {"city": "Paris"}), (1, {"city": "Tokyo"})):
        assert orjson.loads("".join(c["function"]["arguments"] for c in calls if c["index"] == index)) == expected
    assert frames[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_usage_comes_once_in_its_own_chunk_right_before_done_when_asked() -> None:
    """Conformance 49 (render side), R9: Claude 10 + 5 written + 100 read in, 20 out."""
    usage = ir.Usage(input_tokens=115, output_tokens=20, cached_tokens=100, cache_write_tokens=5, total_tokens=135)
    events = _claude_like(ir.TextDelta("ok"), ir.UsageUpdate(usage))
    frames = _frames(_render_stream(events, include_usage=True, stream=True))
    with_usage = [f for f in frames if isinstance(f, dict) and "usage" in f]
    assert with_usage == [frames[-2]] and frames[-1] == "[DONE]"
    assert frames[-2]["choices"] == []
    assert frames[-2]["usage"] == {
        "prompt_tokens": 115,
        "completion_tokens": 20,
        "total_tokens": 135,
        "prompt_tokens_details": {"cached_tokens": 100, "cached_creation_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_usage_is_merged_from_start_and_later_updates() -> None:
    events = [
        ir.Start(id="msg_1", usage=ir.Usage(input_tokens=40)),
        ir.TextDelta("x"),
        ir.End(ir.Finish()),
        ir.UsageUpdate(ir.Usage(output_tokens=9)),
    ]
    frames = _frames(_render_stream(events, include_usage=True))
    assert frames[-2]["usage"]["prompt_tokens"] == 40 and frames[-2]["usage"]["completion_tokens"] == 9


def test_reasoning_streams_before_content_and_redacted_thinking_shows_nothing() -> None:
    """Conformance 39 (render side)."""
    events = _claude_like(
        ir.ReasoningDelta("Let me think"),
        ir.ReasoningDelta(" briefly."),
        ir.ReasoningDone(signature="EqQBCkY", family="claude"),
        ir.ReasoningDone(family="claude", redacted=True),
        ir.TextDelta("Answer."),
    )
    deltas = _deltas(_frames(_render_stream(events)))
    assert [next(iter(d)) for d in deltas[1:-1]] == ["reasoning_content", "reasoning_content", "content"]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me think briefly."


def test_an_error_mid_stream_ends_it_without_done() -> None:
    """Conformance 55 (chat client): an error frame in the OpenAI envelope, then nothing."""
    renderer = openai_chat.StreamRenderer(ir.Request(model="m"))
    out = renderer.feed(ir.Start(id="c1")) + renderer.feed(ir.TextDelta("par"))
    out += renderer.feed(ir.StreamError(529, "Overloaded", "overloaded_error"))
    out += renderer.feed(ir.TextDelta("tial")) + renderer.finish() + renderer.finish()
    frames = _frames(out)
    assert frames[-1] == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "internal_server_error"}
    }
    assert "[DONE]" not in frames and len(frames) == 3


def test_a_call_without_arguments_still_gets_parseable_arguments() -> None:
    events = _claude_like(ir.ToolCallStart(0, "toolu_x", "list_files"), finish=ir.Finish(reason="tool_calls"))
    calls = [c for d in _deltas(_frames(_render_stream(events))) for c in d.get("tool_calls", [])]
    assert "".join(c["function"]["arguments"] for c in calls) == "{}"


def test_custom_calls_and_images_render_in_their_delta_shapes() -> None:
    events = _claude_like(
        ir.ImageOutput(data="iVBORw0KGgo=", media_type="image/png"),
        ir.ToolCallStart(0, "call_c", "apply_patch", kind="custom"),
        ir.ToolCallDelta(0, "*** Begin"),
        finish=ir.Finish(reason="tool_calls"),
    )
    deltas = _deltas(_frames(_render_stream(events)))
    assert deltas[1] == {
        "images": [{"index": 0, "type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    }
    assert deltas[2]["tool_calls"][0]["custom"] == {"name": "apply_patch", "input": ""}
    assert deltas[3] == {"tool_calls": [{"index": 0, "custom": {"input": "*** Begin"}}]}


def test_a_stream_without_start_gets_a_stable_generated_id_and_one_terminator() -> None:
    renderer = openai_chat.StreamRenderer(ir.Request(model="m"))
    out = renderer.feed(ir.TextDelta("a")) + renderer.feed(ir.TextDelta("b")) + renderer.feed(ir.End(ir.Finish()))
    out += renderer.finish() + renderer.finish() + renderer.feed(ir.TextDelta("late"))
    frames = _frames(out)
    assert len({f["id"] for f in frames[:-1]}) == 1 and frames[0]["id"].startswith("chatcmpl-")
    assert frames.count("[DONE]") == 1 and frames[-1] == "[DONE]"


@pytest.mark.parametrize("wants_usage", [True, False])
def test_a_chat_upstream_through_the_ir_keeps_exactly_one_usage_chunk_and_nothing_after_done(wants_usage: bool) -> None:
    """Conformance 8 via the IR (the relay passes bytes through instead; see the relay tests below)."""
    out = _render_stream(_parse_stream(_raw("stream_chunk_after_done.sse"), 9), include_usage=wants_usage)
    frames = _frames(out)
    assert frames[-1] == "[DONE]" and frames.count("[DONE]") == 1
    assert "".join(d.get("content") or "" for d in _deltas(frames)) == "Bonjour"
    usage = [f["usage"] for f in frames if isinstance(f, dict) and "usage" in f]
    assert usage == (
        [openai_chat.usage_body(ir.Usage(120, 7, cached_tokens=100, total_tokens=127))] if wants_usage else []
    )


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, "invalid_request_error", None),
        (401, "authentication_error", "invalid_api_key"),
        (403, "permission_error", "insufficient_quota"),
        (404, "invalid_request_error", "model_not_found"),
        (429, "rate_limit_error", "rate_limit_exceeded"),  # Conformance 52
        (500, "server_error", "internal_server_error"),
        (503, "server_error", "internal_server_error"),
    ],
)
def test_errors_take_their_type_and_code_from_the_status(status: int, kind: str, code: str | None) -> None:
    assert orjson.loads(openai_chat.error_body(status, "nope")) == {
        "error": {"message": "nope", "type": kind, "param": None, "code": code}
    }


def test_an_explicit_code_wins_and_stream_errors_are_data_frames() -> None:
    frame = openai_chat.stream_error(429, "Too many requests", "quota_exceeded")
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    assert orjson.loads(frame[6:])["error"] == {
        "message": "Too many requests",
        "type": "rate_limit_error",
        "param": None,
        "code": "quota_exceeded",
    }


def test_the_relays_explicit_type_form_still_works() -> None:
    body = orjson.loads(openai_chat.error_body("Invalid API key", "authentication_error", "invalid_api_key"))
    assert body == {
        "error": {
            "message": "Invalid API key",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert openai_chat.stream_error_event("cut off", "upstream_error", "upstream_error").startswith(b"data: {")


# --- same dialect: pass-through (moved from tests/gateway/test_openai_chat_dialect.py) ---------

RECORDED = _raw("stream_with_usage.sse")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"{nope", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "'model' is required"),
        (b'{"model": "", "messages": [{"role": "user", "content": "hi"}]}', "'model' is required"),
        (b'{"model": "m"}', "'messages' is required"),
        (b'{"model": "m", "messages": []}', "'messages' is required"),
        (b'{"model": "m", "messages": [{}], "stream": "yes"}', "'stream' must be a boolean"),
    ],
)
def test_the_pass_through_rejects_bad_bodies_with_a_clear_reason(body: bytes, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        openai_chat.read_body(body)


def test_the_clients_bytes_go_upstream_untouched_when_nothing_must_change() -> None:
    raw = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
    assert openai_chat.upstream_body(openai_chat.read_body(raw), raw, "gpt-4o") is raw


def test_an_alias_is_rewritten_and_streams_always_ask_for_usage() -> None:
    raw = b'{"model":"alias","stream":true,"stream_options":{"foo":1},"messages":[{"role":"user","content":"hi"}]}'
    sent = orjson.loads(openai_chat.upstream_body(openai_chat.read_body(raw), raw, "real-model"))
    assert sent["model"] == "real-model"
    assert sent["stream_options"] == {"foo": 1, "include_usage": True}


def _relay(relay: openai_chat.StreamRelay, data: bytes, size: int) -> bytes:
    out = b"".join(relay.feed(data[i : i + size]) for i in range(0, len(data), size))
    return out + relay.finish()


@pytest.mark.parametrize("piece", [1, 7, 64, 4096])
@pytest.mark.parametrize("client_wants_usage", [True, False])
def test_the_stream_passes_through_and_its_usage_is_read_however_it_is_split(
    piece: int, client_wants_usage: bool
) -> None:
    relay = openai_chat.StreamRelay(client_wants_usage)
    out = _relay(relay, RECORDED, piece)
    assert relay.usage == ir.Usage(
        input_tokens=19, output_tokens=10, cached_tokens=4, reasoning_tokens=3, total_tokens=29
    )
    assert relay.saw_done
    if client_wants_usage:
        assert out == RECORDED
    else:
        assert b'"choices":[]' not in out
        assert out == RECORDED.replace(RECORDED.split(b"\n\n")[4] + b"\n\n", b"")


@pytest.mark.parametrize("piece", [1, 10, 4096])
def test_nothing_after_done_is_passed_through(piece: int) -> None:
    """Conformance 8, §6 item 31: exactly one usage chunk before [DONE], nothing after it."""
    raw = _raw("stream_chunk_after_done.sse")
    relay = openai_chat.StreamRelay(True)
    out = _relay(relay, raw, piece)
    assert out == raw[: raw.index(b"data: [DONE]\n\n") + 14]
    assert out.count(b'"choices":[]') == 1 and b"stray" not in out


def test_done_inside_a_text_delta_does_not_end_the_pass_through() -> None:
    relay = openai_chat.StreamRelay(False)
    event = b'data: {"choices":[{"index":0,"delta":{"content":"\\ndata: [DONE] is the end marker"}}]}\n\n'
    assert relay.feed(event) == event and not relay.saw_done


def test_an_error_event_inside_the_stream_is_noticed() -> None:
    relay = openai_chat.StreamRelay(False)
    out = relay.feed(b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n')
    assert relay.upstream_error == {"message": "overloaded", "type": "server_error"}
    assert b"overloaded" in out


def test_a_final_event_without_its_blank_line_is_still_forwarded() -> None:
    relay = openai_chat.StreamRelay(True)
    assert relay.feed(b"data: [DONE]") == b""
    assert relay.finish() == b"data: [DONE]\n\n"
    assert relay.saw_done


def test_usage_normalisation_reads_cached_and_reasoning_details() -> None:
    usage = openai_chat.usage_from({"prompt_tokens": 10, "completion_tokens": 5})
    assert usage == ir.Usage(input_tokens=10, output_tokens=5, total_tokens=15)
    assert openai_chat.usage_from(None) is None
    deepseek = {"prompt_tokens": 14, "completion_tokens": 2, "prompt_cache_hit_tokens": 8}
    assert openai_chat.usage_from(deepseek) == ir.Usage(14, 2, cached_tokens=8, total_tokens=16)
