"""``POST /v1/images/generations`` end to end: the official SDK, the gateway over real HTTP, fake image upstreams."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
import zstandard

from channels_app.models import Channel, ProviderKind
from gateway.images import aspect_ratio
from tests.conftest import Persona
from tests.fakes.fixtures import CLAUDE_API_KEY, GEMINI_API_KEY
from tests.fakes.image_fakes import PNG_B64, FakeGeminiImageUpstream, FakeOpenAIImagesUpstream
from tests.gateway.conftest import Gateway
from usage import recorder
from usage.models import RequestLog

pytestmark = pytest.mark.django_db(transaction=True)

IMAGES_SECRET = "sk-images-upstream-secret"
PATH = "/v1/images/generations"
SdkFor = Callable[..., openai.OpenAI]


@pytest.fixture(scope="module")
def gemini_images_server() -> Iterator[FakeGeminiImageUpstream]:
    fake = FakeGeminiImageUpstream(api_key=GEMINI_API_KEY).start()
    yield fake
    fake.stop()


@pytest.fixture
def gemini_images(gemini_images_server: FakeGeminiImageUpstream) -> Iterator[FakeGeminiImageUpstream]:
    gemini_images_server.reset()
    yield gemini_images_server
    gemini_images_server.reset()


@pytest.fixture(scope="module")
def openai_images_server() -> Iterator[FakeOpenAIImagesUpstream]:
    fake = FakeOpenAIImagesUpstream(api_key=IMAGES_SECRET).start()
    yield fake
    fake.stop()


@pytest.fixture
def openai_images(openai_images_server: FakeOpenAIImagesUpstream) -> Iterator[FakeOpenAIImagesUpstream]:
    openai_images_server.reset()
    yield openai_images_server
    openai_images_server.reset()


@pytest.fixture
def gemini_channel(alice: Persona, gemini_images: FakeGeminiImageUpstream) -> Channel:
    return Channel.objects.create(
        team=alice.team,
        kind=ProviderKind.GEMINI_API_KEY,
        name="fake-gemini-images",
        base_url=gemini_images.base_url,
        secret=GEMINI_API_KEY,
        served_models=[{"name": "gemini-2.5-flash-image", "alias": "nano-banana"}],
    )


@pytest.fixture
def openai_channel(alice: Persona, openai_images: FakeOpenAIImagesUpstream) -> Channel:
    return Channel.objects.create(
        team=alice.team,
        kind=ProviderKind.OPENAI_COMPATIBILITY,
        name="fake-openai-images",
        base_url=openai_images.base_url,
        secret=IMAGES_SECRET,
        served_models=[{"name": "gpt-image-1", "alias": "gpt-image-test", "image": True}],
    )


@pytest.fixture
def client(sdk_for: SdkFor, alice: Persona) -> openai.OpenAI:
    return sdk_for(alice.raw_key)


def image_rows(gateway: Gateway, expected: int, timeout: float = 10.0) -> list[RequestLog]:
    """The usage rows of image requests, once ``expected`` of them are written."""
    deadline = time.monotonic() + timeout
    while True:
        gateway.watch.wait_idle()
        recorder.flush()
        rows = list(RequestLog.objects.filter(path=PATH).order_by("id"))
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def stored_response(row: RequestLog) -> bytes:
    return zstandard.ZstdDecompressor().decompress(bytes(row.body.response))


# --- Gemini image models ----------------------------------------------------------------------


def test_a_gemini_image_model_draws_and_the_client_gets_b64_json(
    gateway: Gateway, client: openai.OpenAI, gemini_channel: Channel, gemini_images: FakeGeminiImageUpstream
) -> None:
    result = client.images.generate(model="nano-banana", prompt="a red cube on a table", size="1536x1024")

    assert [d.b64_json for d in result.data or []] == [PNG_B64]
    assert base64.b64decode(PNG_B64).startswith(b"\x89PNG")
    assert result.usage is not None and (result.usage.input_tokens, result.usage.output_tokens) == (12, 1290)
    sent = gemini_images.last
    assert sent.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert sent.headers["x-goog-api-key"] == GEMINI_API_KEY
    assert sent.json["contents"] == [{"role": "user", "parts": [{"text": "a red cube on a table"}]}]
    assert sent.json["generationConfig"] == {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "3:2"}}


def test_a_caption_next_to_the_image_is_dropped_and_the_image_kept(
    gateway: Gateway, client: openai.OpenAI, gemini_channel: Channel, gemini_images: FakeGeminiImageUpstream
) -> None:
    gemini_images.script.caption = "Here is your cube:"

    result = client.images.generate(model="nano-banana", prompt="a cube")

    assert [d.b64_json for d in result.data or []] == [PNG_B64]
    assert "imageConfig" not in gemini_images.last.json["generationConfig"]


def test_n_images_are_n_calls_each_logged_under_one_request_id_without_the_image_data(
    gateway: Gateway, client: openai.OpenAI, gemini_channel: Channel, gemini_images: FakeGeminiImageUpstream
) -> None:
    gemini_images.script.image = base64.b64encode(b"\x89PNG" + bytes(2000)).decode()

    result = client.images.generate(model="nano-banana", prompt="two cubes", n=2, response_format="url")

    urls = [d.url for d in result.data or []]
    assert urls == [f"data:image/png;base64,{gemini_images.script.image}"] * 2
    assert len(gemini_images.requests) == 2
    rows = image_rows(gateway, expected=2)
    assert [(r.status_code, r.client_dialect, r.requested_model, r.upstream_model) for r in rows] == [
        (200, "openai-chat", "nano-banana", "gemini-2.5-flash-image")
    ] * 2
    assert rows[0].request_id == rows[1].request_id
    assert all((r.input_tokens, r.output_tokens, r.channel_id) == (12, 1290, gemini_channel.pk) for r in rows)
    assert all(gemini_images.script.image.encode() not in stored_response(r) for r in rows)
    assert b"base64 characters" in stored_response(rows[0])


def test_a_prompt_gemini_blocks_is_a_400_content_policy_violation(
    gateway: Gateway, client: openai.OpenAI, gemini_channel: Channel, gemini_images: FakeGeminiImageUpstream
) -> None:
    gemini_images.script.block_reason = "PROHIBITED_CONTENT"

    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(model="nano-banana", prompt="something forbidden")

    assert refused.value.code == "content_policy_violation"
    assert "PROHIBITED_CONTENT" in refused.value.message
    assert [(r.status_code, r.error_type) for r in image_rows(gateway, 1)] == [(400, "content_policy_violation")]


def test_an_answer_with_text_but_no_image_is_a_502_carrying_the_text(
    gateway: Gateway, client: openai.OpenAI, gemini_channel: Channel, gemini_images: FakeGeminiImageUpstream
) -> None:
    gemini_images.script.images = 0
    gemini_images.script.caption = "I can only describe a cube."

    with pytest.raises(openai.APIStatusError) as failed:
        client.images.generate(model="nano-banana", prompt="a cube")

    assert failed.value.status_code == 502
    assert "I can only describe a cube." in failed.value.message


def test_a_gemini_upstream_429_is_a_429_with_its_retry_after(
    gateway: Gateway, client: openai.OpenAI, gemini_channel: Channel, gemini_images: FakeGeminiImageUpstream
) -> None:
    gemini_images.fail(429, "Resource has been exhausted", headers={"retry-after": "7"})

    with pytest.raises(openai.RateLimitError) as limited:
        client.images.generate(model="nano-banana", prompt="a cube")

    assert limited.value.response.headers["retry-after"] == "7"
    assert [r.status_code for r in image_rows(gateway, 1)] == [429]


# --- OpenAI-compatible image models ---------------------------------------------------------


def test_an_openai_compatible_channel_gets_the_clients_body_with_the_model_rewritten(
    gateway: Gateway, client: openai.OpenAI, openai_channel: Channel, openai_images: FakeOpenAIImagesUpstream
) -> None:
    result = client.images.generate(
        model="gpt-image-test", prompt="a blue sphere", n=2, size="1024x1024", quality="low"
    )

    assert [d.b64_json for d in result.data or []] == [PNG_B64, PNG_B64]
    assert result.usage is not None and result.usage.output_tokens == 544
    sent = openai_images.last
    assert (sent.path, sent.bearer) == ("/v1/images/generations", IMAGES_SECRET)
    assert sent.json == {
        "model": "gpt-image-1",
        "prompt": "a blue sphere",
        "n": 2,
        "size": "1024x1024",
        "quality": "low",
    }
    [row] = image_rows(gateway, 1)
    assert (row.status_code, row.upstream_kind, row.input_tokens, row.output_tokens) == (
        200,
        "openai-compatibility",
        9,
        544,
    )
    assert PNG_B64.encode() in stored_response(row)  # short blobs are kept as they came


def test_an_upstream_url_is_passed_on_and_b64_becomes_a_data_url_when_the_client_wants_urls(
    gateway: Gateway, client: openai.OpenAI, openai_channel: Channel, openai_images: FakeOpenAIImagesUpstream
) -> None:
    hosted = client.images.generate(model="gpt-image-test", prompt="a sphere", response_format="url")
    openai_images.reply("", always_b64=True, output_format="webp")
    converted = client.images.generate(model="gpt-image-test", prompt="a sphere", response_format="url")

    assert hosted.data and hosted.data[0].url == f"{openai_images.url}/files/img-0.png"
    assert converted.data and converted.data[0].url == f"data:image/webp;base64,{PNG_B64}"
    assert converted.data[0].b64_json is None


def test_an_openai_images_upstream_400_is_a_400_with_its_message(
    gateway: Gateway, client: openai.OpenAI, openai_channel: Channel, openai_images: FakeOpenAIImagesUpstream
) -> None:
    openai_images.fail(400, "Your request was rejected by the safety system.")

    with pytest.raises(openai.BadRequestError) as rejected:
        client.images.generate(model="gpt-image-test", prompt="a sphere")

    assert "rejected by the safety system" in rejected.value.message


# --- what the gateway refuses -----------------------------------------------------------------


def test_a_request_without_a_prompt_is_a_400(http: httpx.Client, alice: Persona, gemini_channel: Channel) -> None:
    response = http.post(PATH, json={"model": "nano-banana"}, headers={"Authorization": f"Bearer {alice.raw_key}"})

    assert response.status_code == 400
    assert "'prompt' is required" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"n": 9}, "'n' must be an integer from 1 to 4"),
        ({"response_format": "png"}, "'response_format' must be"),
        ({"size": "huge"}, "'size' must be WIDTHxHEIGHT"),
        ({"stream": True}, "streaming image generation is not supported"),
    ],
)
def test_malformed_fields_are_a_400_naming_the_field(
    http: httpx.Client, alice: Persona, gemini_channel: Channel, body: dict[str, Any], reason: str
) -> None:
    payload = {"model": "nano-banana", "prompt": "a cube", **body}
    response = http.post(PATH, json=payload, headers={"Authorization": f"Bearer {alice.raw_key}"})

    assert response.status_code == 400
    assert reason in response.json()["error"]["message"]


def test_an_unknown_model_is_a_404_model_not_found(client: openai.OpenAI, gemini_channel: Channel) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.images.generate(model="no-such-painter", prompt="a cube")

    assert missing.value.code == "model_not_found"


def test_without_a_model_the_default_gpt_image_2_is_routed(client: openai.OpenAI, gemini_channel: Channel) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.images.generate(prompt="a cube")

    assert "gpt-image-2" in missing.value.message


@pytest.fixture
def claude_channel(alice: Persona) -> Channel:
    """A Claude channel whose upstream is never listening: nothing may be sent to it."""
    return Channel.objects.create(
        team=alice.team,
        kind=ProviderKind.CLAUDE_API_KEY,
        name="claude-nowhere",
        base_url="http://127.0.0.1:9",
        secret=CLAUDE_API_KEY,
        served_models=[{"name": "claude-sonnet-4", "alias": "claude-painter"}],
    )


def test_a_model_served_by_a_family_that_cannot_draw_is_a_400_saying_why(
    gateway: Gateway, client: openai.OpenAI, claude_channel: Channel
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(model="claude-painter", prompt="a cube")

    assert refused.value.code == "model_not_supported"
    assert "claude-api-key channel, which cannot generate images" in refused.value.message
    assert [(r.status_code, r.error_type, r.channel_id) for r in image_rows(gateway, 1)] == [
        (400, "model_not_supported", claude_channel.pk)
    ]


def test_keys_are_checked_before_anything_else(sdk_for: SdkFor, gemini_channel: Channel) -> None:
    with pytest.raises(openai.AuthenticationError) as rejected:
        sdk_for("sk-not-a-real-key").images.generate(model="nano-banana", prompt="a cube")

    assert rejected.value.code == "invalid_api_key"


def test_a_model_outside_the_keys_allowed_models_is_a_403(
    client: openai.OpenAI, alice: Persona, gemini_channel: Channel, gemini_images: FakeGeminiImageUpstream
) -> None:
    alice.key.allowed_models = ["gpt-*"]
    alice.key.save()

    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.images.generate(model="nano-banana", prompt="a cube")

    assert denied.value.code == "model_not_allowed"
    assert gemini_images.requests == []


def test_charlie_cannot_reach_alices_image_channel(
    sdk_for: SdkFor, charlie: Persona, gemini_channel: Channel, gemini_images: FakeGeminiImageUpstream
) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk_for(charlie.raw_key).images.generate(model="nano-banana", prompt="a cube")

    assert gemini_images.requests == []


@pytest.mark.parametrize(
    ("size", "ratio"),
    [
        ("1024x1024", "1:1"),
        ("1536x1024", "3:2"),
        ("1024x1536", "2:3"),
        ("1792x1024", "16:9"),
        ("1024x1792", "9:16"),
        ("2560x1080", "21:9"),
        ("4:5", "4:5"),
        ("auto", None),
        ("", None),
    ],
)
def test_openai_sizes_map_to_the_nearest_gemini_aspect_ratio(size: str, ratio: str | None) -> None:
    assert aspect_ratio(size) == ratio
