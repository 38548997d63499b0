"""Stored request and response bodies, read back for people.

The recorder keeps each body zstd-compressed; these functions undo that and make the result
readable: JSON pretty-printed, anything else (SSE streams, plain text) as it was.
"""

from __future__ import annotations

import io

import orjson
import zstandard

SHOWN_LIMIT = 512 * 1024  # bytes of a body shown at most; a page, not a download


def decompress(data: bytes | memoryview, limit: int = SHOWN_LIMIT) -> tuple[bytes, bool]:
    """The first ``limit`` bytes of a stored body, and whether there was more."""
    if not data:
        return b"", False
    chunks: list[bytes] = []
    size = 0
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(bytes(data))) as reader:
        while size <= limit:
            chunk = reader.read(min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    body = b"".join(chunks)
    return body[:limit], len(body) > limit


def readable(data: bytes | memoryview, limit: int = SHOWN_LIMIT) -> str:
    """A stored body as text: JSON pretty-printed, other content as is, long bodies cut."""
    body, truncated = decompress(data, limit)
    if truncated:
        return body.decode(errors="replace") + "\n… (truncated)"
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")
