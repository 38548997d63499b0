"""The fake Gemini upstream, read back by the official ``google-genai`` SDK and by raw HTTP."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from google import genai
from google.genai import errors, types

from tests.fakes.fixtures import GEMINI_API_KEY, GEMINI_CLI_TOKEN
from tests.fakes.gemini_upstream import FakeGeminiUpstream
from tests.fakes.upstream import ToolCall

MODEL = "gemini-2.5-flash"
CONTENTS = {"contents": [{"role": "user", "parts": [{"text": "Hi there"}]}]}


@pytest.fixture
def client(gemini_upstream: FakeGeminiUpstream) -> genai.Client:
    # google-genai 3.x calls /v1/… by default; the gateway's executor calls /v1beta/….
    options = types.HttpOptions(base_url=gemini_upstream.url, api_version="v1beta", timeout=10_000)
    return genai.Client(api_key=GEMINI_API_KEY, http_options=options)


def test_generate_content_reads_back_through_the_sdk(gemini_upstream: FakeGeminiUpstream, client: genai.Client) -> None:
    gemini_upstream.reply(
        "Paris is sunny.",
        reasoning="Weather question.",
        prompt_tokens=40,
        completion_tokens=5,
        reasoning_tokens=9,
        cached_tokens=32,
    )

    response = client.models.generate_content(model=MODEL, contents="Weather in Paris?")

    parts = response.candidates[0].content.parts
    assert [(p.text, bool(p.thought)) for p in parts[:2]] == [("Weather question.", True), ("Paris is sunny.", False)]
    assert parts[-1].thought_signature == base64.b64decode(gemini_upstream.script.signature)
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.thoughts_token_count) == (40, 5, 9)
    assert (usage.cached_content_token_count, usage.total_token_count) == (32, 54)
    assert response.model_version == MODEL and response.response_id
    sent = gemini_upstream.last
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert sent.headers["x-goog-api-key"] == GEMINI_API_KEY
    assert sent.json["contents"][0]["parts"] == [{"text": "Weather in Paris?"}]


def test_the_sdk_default_v1_path_is_served_too(gemini_upstream: FakeGeminiUpstream) -> None:
    client = genai.Client(api_key=GEMINI_API_KEY, http_options=types.HttpOptions(base_url=gemini_upstream.url))

    assert client.models.generate_content(model=MODEL, contents="hi").text == "Hello from the fake upstream."
    assert gemini_upstream.last.path == f"/v1/models/{MODEL}:generateContent"


def test_a_stream_brings_thoughts_text_and_complete_function_calls(
    gemini_upstream: FakeGeminiUpstream, client: genai.Client
) -> None:
    calls = [ToolCall("get_weather", {"city": "Paris", "days": 3}), ToolCall("get_time", {"tz": "CET"})]
    gemini_upstream.reply("Checking.", reasoning="Two tools.", tool_calls=calls, completion_tokens=11)

    chunks = list(client.models.generate_content_stream(model=MODEL, contents="Weather and time?"))

    parts = [part for chunk in chunks for part in chunk.candidates[0].content.parts]
    assert "".join(p.text for p in parts if p.thought) == "Two tools."
    assert "".join(p.text for p in parts if p.text and not p.thought) == "Checking."
    function_calls = [p.function_call for p in parts if p.function_call]
    assert [(c.name, c.args) for c in function_calls] == [
        ("get_weather", {"city": "Paris", "days": 3}),
        ("get_time", {"tz": "CET"}),
    ]
    first_call = next(p for p in parts if p.function_call)
    assert first_call.thought_signature == base64.b64decode(gemini_upstream.script.signature)
    assert [c.candidates[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count == 11
    assert chunks[0].usage_metadata.candidates_token_count is None  # intermediate chunks: prompt count only
    assert gemini_upstream.last.query == {"alt": "sse"}


def test_sse_uses_crlf_separators_and_no_alt_streams_a_json_array(gemini_upstream: FakeGeminiUpstream) -> None:
    gemini_upstream.reply("one two three", finish_reason="MAX_TOKENS")
    url = f"{gemini_upstream.url}/v1beta/models/{MODEL}:streamGenerateContent"

    sse = httpx.post(url, params={"alt": "sse"}, json=CONTENTS, headers={"x-goog-api-key": GEMINI_API_KEY})
    array = httpx.post(url, params={"key": GEMINI_API_KEY}, json=CONTENTS)

    assert sse.headers["content-type"].startswith("text/event-stream")
    frames = sse.text.split("\r\n\r\n")
    assert frames[-1] == "" and all(f.startswith("data: {") for f in frames[:-1])
    chunks = [json.loads(f[len("data: ") :]) for f in frames[:-1]]
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks] == ["one", " two", " three"]
    assert chunks[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert array.headers["content-type"].startswith("application/json")
    assert [c["candidates"][0]["content"]["parts"] for c in array.json()] == [
        c["candidates"][0]["content"]["parts"] for c in chunks
    ]


def test_keys_are_checked_like_google_does(gemini_upstream: FakeGeminiUpstream) -> None:
    url = f"{gemini_upstream.url}/v1beta/models/{MODEL}:generateContent"

    wrong = httpx.post(url, json=CONTENTS, headers={"x-goog-api-key": "AIza-wrong"})
    missing = httpx.post(url, json=CONTENTS)
    by_query = httpx.post(url, params={"key": GEMINI_API_KEY}, json=CONTENTS)

    assert wrong.status_code == 400
    assert wrong.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
    assert by_query.status_code == 200


def test_a_rate_limit_carries_retry_info(gemini_upstream: FakeGeminiUpstream, client: genai.Client) -> None:
    gemini_upstream.rate_limit(retry_delay="23s")

    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model=MODEL, contents="hi")

    assert (caught.value.code, caught.value.status) == (429, "RESOURCE_EXHAUSTED")
    retry = [d for d in caught.value.details["error"]["details"] if d["@type"].endswith("RetryInfo")]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "23s"}]


@pytest.mark.parametrize(
    ("status", "rpc"), [(400, "INVALID_ARGUMENT"), (403, "PERMISSION_DENIED"), (503, "UNAVAILABLE")]
)
def test_errors_have_google_statuses(
    gemini_upstream: FakeGeminiUpstream, client: genai.Client, status: int, rpc: str
) -> None:
    gemini_upstream.fail(status)

    with pytest.raises(errors.APIError) as caught:
        client.models.generate_content(model=MODEL, contents="hi")

    assert (caught.value.code, caught.value.status) == (status, rpc)


def test_an_unknown_model_is_not_found(gemini_upstream: FakeGeminiUpstream, client: genai.Client) -> None:
    gemini_upstream.script.known_models = [MODEL]

    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model="gemini-nope", contents="hi")

    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")
    assert "models/gemini-nope is not found" in caught.value.message


def test_an_error_chunk_mid_stream_raises_in_the_sdk(gemini_upstream: FakeGeminiUpstream, client: genai.Client) -> None:
    gemini_upstream.reply("a b c d")
    gemini_upstream.fail_midstream(after_events=2)
    texts = []

    with pytest.raises(errors.ServerError) as caught:
        for chunk in client.models.generate_content_stream(model=MODEL, contents="hi"):
            texts.append(chunk.text)

    assert texts == ["a", " b"]
    assert (caught.value.code, caught.value.status) == (503, "UNAVAILABLE")


def test_count_tokens_accepts_contents_or_a_generate_content_request(
    gemini_upstream: FakeGeminiUpstream, client: genai.Client
) -> None:
    url = f"{gemini_upstream.url}/v1beta/models/{MODEL}:countTokens"
    headers = {"x-goog-api-key": GEMINI_API_KEY}

    by_sdk = client.models.count_tokens(model=MODEL, contents="hello there world")
    wrapped = httpx.post(
        url, json={"generateContentRequest": {"model": f"models/{MODEL}", **CONTENTS}}, headers=headers
    )
    no_model = httpx.post(url, json={"generateContentRequest": CONTENTS}, headers=headers)
    gemini_upstream.script.count_tokens = 77
    scripted = httpx.post(url, json=CONTENTS, headers=headers)

    assert by_sdk.total_tokens == 4  # three words and the role
    assert wrapped.json() == {"totalTokens": 3, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 3}]}
    assert no_model.status_code == 400
    assert scripted.json()["totalTokens"] == 77


def test_code_assist_wraps_every_answer_in_a_response_envelope(gemini_cli_upstream: FakeGeminiUpstream) -> None:
    gemini_cli_upstream.reply("Hi!", reasoning="ok")
    base = gemini_cli_upstream.url
    body = {"project": "proj-1", "model": "gemini-2.5-pro", "request": CONTENTS}
    auth = {"authorization": f"Bearer {GEMINI_CLI_TOKEN}"}

    stream = httpx.post(f"{base}/v1internal:streamGenerateContent", params={"alt": "sse"}, json=body, headers=auth)
    whole = httpx.post(f"{base}/v1internal:generateContent", json=body, headers=auth)
    counted = httpx.post(f"{base}/v1internal:countTokens", json={"request": CONTENTS}, headers=auth)
    refused = httpx.post(f"{base}/v1internal:generateContent", json=body, headers={"x-goog-api-key": GEMINI_CLI_TOKEN})
    public_path = httpx.post(f"{base}/v1beta/models/{MODEL}:generateContent", json=CONTENTS, headers=auth)

    chunks = [json.loads(f[len("data: ") :]) for f in stream.text.split("\r\n\r\n") if f]
    assert all(set(c) == {"response", "traceId"} for c in chunks)
    assert chunks[-1]["response"]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[0]["response"]["modelVersion"] == "gemini-2.5-pro"
    assert whole.json()["response"]["candidates"][0]["content"]["parts"][1] == {"text": "Hi!"}
    assert counted.json() == {"totalTokens": 3}
    assert refused.status_code == 401 and refused.json()["error"]["status"] == "UNAUTHENTICATED"
    assert public_path.status_code == 404
