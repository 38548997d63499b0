"""The streams the translation benchmark feeds and reads back.

Upstream side: one long answer in each family's exact wire format, shaped after the recorded payloads
in ``tests/fixtures/<dialect>/`` (ids, field order, separators, line ends) and the fake upstreams in
``tests/fakes/``. Client side: a minimal reader that pulls out the text a client of each dialect would
show, so a benchmark of a translator that drops, reorders or mis-escapes text fails loudly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import orjson

# --- the text ------------------------------------------------------------------------------

_VOCABULARY = (
    "the stream parser reads bytes and writes events for every client dialect while the gateway forwards "
    "frames def class return async await import self None True False value index token usage cache model"
)
_WORDS = _VOCABULARY.split()
_ODD = ['"quoted"', "back\\slash", "line\nbreak", "tab\there", "café", "naïve", "—", "日本語", "你好", "🙂", "{json}"]


def text_pieces(count: int, seed: int = 1729) -> list[str]:
    """``count`` deltas of 3-8 characters cut from word-like text, with quotes, escapes and non-ASCII in it."""
    rng = random.Random(seed)
    pieces: list[str] = []
    pending = ""
    while len(pieces) < count:
        while len(pending) < 8:
            pending += (rng.choice(_ODD) if rng.random() < 0.04 else rng.choice(_WORDS)) + " "
        size = rng.randint(3, 8)
        pieces.append(pending[:size])
        pending = pending[size:]
    return pieces


# --- upstream transcripts, in each family's wire format ------------------------------------


def openai_transcript(pieces: list[str]) -> bytes:
    """Chat Completions SSE as ``tests/fixtures/openai_chat/stream_with_usage.sse`` (include_usage on)."""
    base = {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "service_tier": "default",
        "system_fingerprint": "fp_eb9dce56a8",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**base, "choices": [choice], "usage": None}) + b"\n\n"

    usage = {
        "prompt_tokens": 19,
        "completion_tokens": len(pieces),
        "total_tokens": 19 + len(pieces),
        "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    frames = [chunk({"role": "assistant", "content": "", "refusal": None})]
    frames += [chunk({"content": piece}) for piece in pieces]
    frames.append(chunk({}, "stop"))
    frames.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
    frames.append(b"data: [DONE]\n\n")
    return b"".join(frames)


def _claude_frame(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def claude_transcript(pieces: list[str]) -> bytes:
    """Anthropic Messages SSE as ``tests/fixtures/anthropic_messages/stream_text.sse``."""
    usage = {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}
    message: dict[str, Any] = {
        "id": "msg_01Pz8sKq3mVxW7tY2nRbC5dE",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "service_tier": "standard"},
    }
    frames = [
        _claude_frame("message_start", {"type": "message_start", "message": message}),
        _claude_frame(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        b'event: ping\ndata: {"type": "ping"}\n\n',
    ]
    for piece in pieces:
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        frames.append(_claude_frame("content_block_delta", delta))
    end = {"stop_reason": "end_turn", "stop_sequence": None}
    frames += [
        _claude_frame("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _claude_frame(
            "message_delta", {"type": "message_delta", "delta": end, "usage": {"output_tokens": len(pieces)}}
        ),
        _claude_frame("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(frames)


def gemini_transcript(pieces: list[str]) -> bytes:
    """``streamGenerateContent?alt=sse`` as ``tests/fixtures/gemini/stream_max_tokens.sse``: CRLF, spaced JSON.

    One text part per chunk, prompt-only ``usageMetadata`` on every chunk, ``finishReason`` and the
    full counts on the last one (as the fake upstream in ``tests/fakes/gemini_upstream.py`` sends).
    """
    frames = []
    prompt = {
        "promptTokenCount": 9,
        "totalTokenCount": 9,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9}],
    }
    for number, piece in enumerate(pieces, 1):
        candidate: dict[str, Any] = {"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}
        usage = prompt
        if number == len(pieces):
            candidate["finishReason"] = "STOP"
            usage = {**prompt, "candidatesTokenCount": len(pieces), "totalTokenCount": 9 + len(pieces)}
        chunk = {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": "gemini-2.5-flash",
            "responseId": "mAx3aZ2OKfyZz7IP4qGq-Qk",
        }
        frames.append(b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\r\n\r\n")
    return b"".join(frames)


def _responses_frame(kind: str, sequence: int, payload: dict[str, Any]) -> bytes:
    body = orjson.dumps({"type": kind, "sequence_number": sequence, **payload})
    return b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n"


def responses_transcript(pieces: list[str]) -> bytes:
    """Codex / Responses SSE as ``tests/fixtures/openai_responses/codex_plain_text.sse``."""
    response = {
        "id": "resp_0c5d1f2a9b8e47d6a1f3c2b4e5d6a7b8",
        "object": "response",
        "created_at": 1764000000,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": "You are Codex, based on GPT-5.",
        "max_output_tokens": None,
        "model": "gpt-5.4-codex",
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "service_tier": "auto",
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": {},
    }
    limits = {"allowed": True, "limit_reached": False, "primary": {"used_percent": 7.0, "window_minutes": 300}}
    item_id = "msg_0c5d1f2a9b8e47d6_e"
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    text = "".join(pieces)
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    item = {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
    usage = {
        "input_tokens": 11,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": len(pieces),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 11 + len(pieces),
    }
    frames = [
        b"event: codex.rate_limits\ndata: "
        + orjson.dumps({"type": "codex.rate_limits", "plan_type": "plus", "rate_limits": limits})
        + b"\n\n"
    ]
    frames.append(_responses_frame("response.created", 1, {"response": response}))
    frames.append(_responses_frame("response.in_progress", 2, {"response": response}))
    added = {**item, "status": "in_progress", "content": []}
    frames.append(_responses_frame("response.output_item.added", 3, {"output_index": 0, "item": added}))
    frames.append(_responses_frame("response.content_part.added", 4, {**where, "part": {**part, "text": ""}}))
    seq = 4
    for piece in pieces:
        seq += 1
        frames.append(_responses_frame("response.output_text.delta", seq, {**where, "delta": piece, "logprobs": []}))
    frames.append(_responses_frame("response.output_text.done", seq + 1, {**where, "text": text, "logprobs": []}))
    frames.append(_responses_frame("response.content_part.done", seq + 2, {**where, "part": part}))
    frames.append(_responses_frame("response.output_item.done", seq + 3, {"output_index": 0, "item": item}))
    done = {**response, "status": "completed", "output": [item], "usage": usage}
    frames.append(_responses_frame("response.completed", seq + 4, {"response": done}))
    return b"".join(frames)


TRANSCRIPTS: dict[str, Callable[[list[str]], bytes]] = {
    "openai": openai_transcript,
    "claude": claude_transcript,
    "gemini": gemini_transcript,
    "responses": responses_transcript,
}
# --- reading the client's stream back ------------------------------------------------------


def sse_frames(stream: bytes) -> Iterator[tuple[str, bytes]]:
    """``(event name, data)`` for every SSE frame in ``stream``."""
    for frame in stream.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = "", []
        for line in frame.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
        if data:
            yield name, b"\n".join(data)


def client_text(client: str, stream: bytes) -> tuple[str, list[str]]:
    """The text a client of this dialect would show, and what is wrong with how the stream ends."""
    texts: list[str] = []
    ended = done = False
    for name, data in sse_frames(stream):
        if done:
            return "".join(texts), ["a frame came after [DONE]"]
        if data == b"[DONE]":  # Chat Completions: the only proper end, after a finish_reason
            done = True
            continue
        obj = orjson.loads(data)
        if client == "openai":
            if not obj.get("choices"):  # the usage-only chunk
                continue
            if ended:
                return "".join(texts), ["a choice chunk came after the finish_reason chunk"]
            choice = obj["choices"][0]
            texts.append(choice.get("delta", {}).get("content") or "")
            ended = choice.get("finish_reason") == "stop"
        elif client == "anthropic":
            if name == "content_block_delta" and obj["delta"]["type"] == "text_delta":
                texts.append(obj["delta"]["text"])
            ended = name == "message_stop"
        elif client == "gemini":
            candidate = obj["candidates"][0]
            texts += [p.get("text", "") for p in candidate["content"]["parts"] if not p.get("thought")]
            ended = candidate.get("finishReason") == "STOP"
        elif name == "response.output_text.delta":
            texts.append(obj["delta"])
        else:  # responses: the terminal object repeats the whole text
            whole = name == "response.completed" and obj["response"]["output"][0]["content"][0]["text"]
            ended = whole == "".join(texts)
    ended = ended and done == (client == "openai")
    return "".join(texts), [] if ended else [f"the {client} stream did not end properly"]


def text_problems(client: str, stream: bytes, expected: str) -> list[str]:
    """Why ``stream`` is not what a ``client`` reader of ``expected`` should receive (empty: it is)."""
    text, problems = client_text(client, stream)
    if text != expected:
        pairs = enumerate(zip(text, expected, strict=False))
        at = next((i for i, (got, want) in pairs if got != want), min(len(text), len(expected)))
        problems.append(f"text differs at char {at}: got {text[at : at + 20]!r}, want {expected[at : at + 20]!r}")
    return problems
