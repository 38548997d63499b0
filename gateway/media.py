"""Remote images inlined for upstreams that only take inline data (Gemini).

A client may send an image as an http(s) URL; Gemini's ``inlineData`` needs the bytes. They are
downloaded through the shared upstream client with a size cap and a timeout; only ``image/*``
answers are accepted. Addresses on private, loopback and link-local networks are refused unless
``CLIRELAY_MEDIA_ALLOW_PRIVATE`` is set, so a client cannot make the gateway probe its own network.
A failed download rejects the request with 400: an image is never dropped silently.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

from django.conf import settings

from channels_app import transport
from gateway import ir
from gateway.dialects import gemini
from gateway.errors import RelayError


def remote_images(req: ir.Request) -> Iterator[ir.Image]:
    """Every image of ``req`` given only by URL (message parts and tool-result contents)."""
    for message in req.messages:
        for part in message.parts:
            parts: list[ir.Part] = list(part.content) if isinstance(part, ir.ToolResult) else [part]
            for item in parts:
                if isinstance(item, ir.Image) and item.url and not item.data and _is_remote(item.url):
                    yield item


def _is_remote(url: str) -> bool:
    """http(s) images must be fetched; data: URLs are inline and gs:// or Files API URIs Gemini reads itself."""
    return url.startswith(("http://", "https://")) and not gemini.is_gemini_file_uri(url)


async def inline_remote_images(req: ir.Request) -> None:
    """Download every URL-only image of ``req`` into inline data, or raise a 400 ``RelayError``."""
    images = list(remote_images(req))
    if images:
        await asyncio.gather(*(_inline(image) for image in images))


async def _inline(image: ir.Image) -> None:
    url = image.url
    await _check_address(url)
    limit = settings.CLIRELAY_MEDIA_MAX_BYTES
    try:
        response = await transport.open_response(
            "GET", url, headers={"Accept": "image/*"}, body=b"", timeout_s=settings.CLIRELAY_MEDIA_TIMEOUT
        )
    except transport.ConnectError as exc:
        raise _fail(url, type(exc).__name__) from None
    try:
        if response.status_code != 200:
            raise _fail(url, f"it answered HTTP {response.status_code}")
        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not media_type.startswith("image/"):
            raise _fail(url, f"it is {media_type or 'untyped'}, not an image")
        data = bytearray()
        async for chunk in response.aiter_raw():
            data += chunk
            if len(data) > limit:
                raise _fail(url, f"it is larger than {limit} bytes")
    except transport.ReadError as exc:
        raise _fail(url, type(exc).__name__) from None
    finally:
        await response.aclose()
    image.data, image.media_type = base64.b64encode(bytes(data)).decode(), media_type


async def _check_address(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(url, "only http and https image URLs are accepted")
    if settings.CLIRELAY_MEDIA_ALLOW_PRIVATE:
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except OSError:
        raise _fail(url, "its host does not resolve") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_private or address.is_loopback or address.is_link_local or address.is_reserved:
            raise _fail(url, "its host is on a private network")


def _fail(url: str, why: str) -> RelayError:
    shown = url if len(url) <= 200 else url[:200] + "…"
    return RelayError(400, f"could not fetch image {shown}: {why}", code="image_fetch_failed")
