"""Local token estimates, for upstreams without a count endpoint.

The tokenizer tables ship inside the ``bpe-openai`` wheel, so nothing is fetched at run time.
The estimate counts the text a model reads: system text, each message's role and text,
reasoning text, tool calls (name and compact JSON arguments), tool results and tool
declarations (name, description, compact schema). Images, audio and files are not counted,
so for multimodal requests the estimate is low.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import orjson

from gateway import ir


@lru_cache(maxsize=4)
def _encoding(name: str) -> Any:
    # Imported on first use: the tables take about 60 MB, and most processes never count locally.
    import bpe_openai

    return bpe_openai.get_encoding(name)


def encoding_for(model: str) -> str:
    """``cl100k_base`` for the GPT-4 / GPT-3.5 generation, ``o200k_base`` for everything else."""
    name = model.lower()
    if name.startswith(("gpt-4-", "gpt-4", "gpt-3")) and not name.startswith(("gpt-4o", "gpt-4.1")):
        return "cl100k_base"
    return "o200k_base"


def count_text(segments: Iterable[str], model: str = "") -> int:
    """Tokens in the newline-joined ``segments``."""
    text = "\n".join(s for s in segments if s)
    if not text:
        return 0
    return len(_encoding(encoding_for(model)).encode(text, disallowed_special=()))


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def request_segments(req: ir.Request) -> list[str]:
    """The text segments of ``req`` that a model reads."""
    segments = [part.text for seg in req.system for part in seg.parts]
    for message in req.messages:
        segments.append(message.role)
        segments.extend(_part_segments(message.parts))
    for tool in req.tools:
        segments += [
            tool.name,
            tool.description,
            _compact(tool.parameters if tool.kind != "custom" else tool.format or {}),
        ]
    if req.tool_choice is not None:
        segments += [req.tool_choice.mode, req.tool_choice.name]
    return segments


def _part_segments(parts: Iterable[ir.Part]) -> list[str]:
    out: list[str] = []
    for part in parts:
        if isinstance(part, ir.Text) or (isinstance(part, ir.Reasoning) and not part.redacted):
            out.append(part.text)
        elif isinstance(part, ir.ToolCall):
            out += [part.id, part.name, part.arguments]
        elif isinstance(part, ir.ToolResult):
            out.append(part.call_id)
            out.extend(_part_segments(part.content))
    return out


def estimate_request(req: ir.Request) -> int:
    """Estimated input tokens of ``req``."""
    return count_text(request_segments(req), req.model)
