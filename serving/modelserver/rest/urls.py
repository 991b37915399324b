"""TF Serving's REST URL grammar and the decoding of the names in it.

The grammar is TF Serving's two RE2 patterns (http_rest_api_util.cc) applied to the
still-percent-encoded path *including* the query string, so ``GET /v1/models/m?x=1`` asks for
a model named ``m?x=1``, as TF Serving does. Names and labels are then percent-decoded; a name
that cannot be decoded, or a version beyond int64, is a 400 with an empty body (``UrlError``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from serving.modelserver.errors import InvalidArgument

# Anything whose raw path-and-query matches this goes to the API handler.
V1 = re.compile(r"(?i)/v1/.*", re.DOTALL)
# http_rest_api_util.cc; NAME/LABEL = [^/:]+, DIGITS = \d+ (RE2's \d is ASCII only).
_POST = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE | re.ASCII | re.DOTALL,
)
_GET = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?",
    re.IGNORECASE | re.ASCII | re.DOTALL,
)
_INT64_MAX = 2**63 - 1
_HEX = frozenset("0123456789abcdefABCDEF")


class UrlError(InvalidArgument):
    """URL-level conversion failures: TF Serving answers 400 with an empty body."""

    empty_http_body = True


@dataclass(frozen=True)
class Route:
    """A matched API URL, names still percent-encoded."""

    kind: str  # "predict" | "classify" | "regress" | "metadata" | "status"
    name: str
    version: str | None
    label: str | None

    @property
    def api(self) -> str:
        """The metrics' api label: the POST verb, "" for GETs."""
        return self.kind if self.kind in ("predict", "classify", "regress") else ""


def match(method: str, raw: str) -> Route:
    """The route for ``method`` and the raw path-and-query; INVALID_ARGUMENT when none."""
    if method == "POST":
        m = _POST.fullmatch(raw)
        if m is None or m.group(4) not in ("predict", "classify", "regress"):
            raise InvalidArgument(f"Malformed request: {method} {raw}")
        return Route(m.group(4), m.group(1), m.group(2), m.group(3))
    if method == "GET":
        m = _GET.fullmatch(raw)
        if m is None:
            raise InvalidArgument(f"Malformed request: {method} {raw}")
        if m.group(1) is None:
            raise InvalidArgument("Missing model name in request.")
        kind = "metadata" if m.group(4) == "metadata" else "status"
        return Route(kind, m.group(1), m.group(2), m.group(3))
    raise InvalidArgument(f"Malformed request: {method} {raw}")


def url_unescape(text: str) -> str:
    """Percent-decode like libcurl's unescape (``%XX`` only; ``+`` stays ``+``).

    Unlike libcurl, a ``%`` not followed by two hex digits, or bytes that are not UTF-8, fail:
    model names and labels are UTF-8 text in the config, so such a name can never match.
    """
    if "%" not in text:
        return text
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise ValueError(text)
            out.append(int(pair, 16))
            i += 3
        else:
            out += ch.encode("utf-8", "surrogateescape")
            i += 1
    return out.decode("utf-8")


def decode_name(raw: str) -> str:
    try:
        return url_unescape(raw)
    except (ValueError, UnicodeError):
        raise UrlError(f"Failed to decode model name:{raw}") from None


def decode_label(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        return url_unescape(raw)
    except (ValueError, UnicodeError):
        raise UrlError(f"Failed to decode model version label:{raw}") from None


def decode_version(digits: str | None) -> int | None:
    if digits is None:
        return None
    value = int(digits)
    if value > _INT64_MAX:
        raise UrlError(f"Failed to convert version: {digits} to numeric.")
    return value
