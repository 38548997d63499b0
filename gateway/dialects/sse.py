"""Server-sent events split into whole frames, however the network cut the bytes. Pure."""

from __future__ import annotations


class SseFrames:
    """Feed raw reads; get back the complete blank-line-separated events (``\\r\\n`` folded)."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._tail + chunk if self._tail else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._tail = data
            return []
        self._tail = data[cut + 2 :]
        return [frame for frame in data[:cut].split(b"\n\n") if frame]

    def rest(self) -> bytes:
        """A last event that arrived without its blank line ("" when none)."""
        tail, self._tail = self._tail, b""
        return tail.strip()
