"""Reading a request body: the size limit, and gzip bodies inflated under TF Serving's cap.

TF Serving has no request-body limit of its own (libevent's default is unlimited); a stand-in
that holds bodies in memory needs one: over it the answer is 413 (``BodyTooLarge``). gzip
bodies may inflate to 100 MiB (util/net_http/compression/gzip_zlib.h), enforced while reading,
so a small "gzip bomb" never gets buffered whole.
"""

from __future__ import annotations

import zlib
from typing import Any

from aiohttp import web

from serving.modelserver.errors import Code, InvalidArgument, ServingError

# 256 MiB is ~16,000 MNIST images of JSON.
DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024
MAX_GZIP_UNCOMPRESSED_BYTES = 100 * 1024 * 1024


class BodyTooLarge(ServingError):
    code = Code.RESOURCE_EXHAUSTED
    http_override = 413


def _too_large(limit: int, size: int | None) -> BodyTooLarge:
    got = f" of {size} bytes" if size is not None else ""
    return BodyTooLarge(f"Request body{got} exceeds the limit of {limit} bytes")


async def read_body(request: web.Request, max_body_bytes: int) -> bytes:
    if request.content_length is not None and request.content_length > max_body_bytes:
        raise _too_large(max_body_bytes, request.content_length)
    if "gzip" not in request.headers.get("Content-Encoding", "").lower():
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large(max_body_bytes, None) from None
    return await _read_gzip_body(request)


async def _read_gzip_body(request: web.Request) -> bytes:
    """aiohttp's server inflates request bodies itself unless ``auto_decompress=False``; either
    way the limit is enforced on the inflated bytes while reading."""
    chunks: list[bytes] = []
    total = 0
    inflater: Any = None
    try:
        async for chunk in request.content.iter_any():
            if not chunks and inflater is None and chunk[:2] == b"\x1f\x8b":
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # still compressed
            if inflater is not None:
                chunk = inflater.decompress(chunk, MAX_GZIP_UNCOMPRESSED_BYTES + 1 - total)
                if inflater.unconsumed_tail:
                    total = MAX_GZIP_UNCOMPRESSED_BYTES + 1
            total += len(chunk)
            if total > MAX_GZIP_UNCOMPRESSED_BYTES:
                raise InvalidArgument(
                    "Decompressed request body exceeds the limit of "
                    f"{MAX_GZIP_UNCOMPRESSED_BYTES} bytes"
                )
            chunks.append(chunk)
    except ServingError:
        raise
    except Exception as e:  # zlib.error, aiohttp's ContentEncodingError, ...
        raise InvalidArgument(f"Failed to decompress gzip request body: {e}") from None
    return b"".join(chunks)
