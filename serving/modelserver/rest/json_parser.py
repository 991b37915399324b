"""TF Serving's JSON reading (rapidjson's dialect) and its rendering of JSON in error messages.

``parse_json``: bodies are parsed with orjson; only when orjson refuses (NaN tokens, trailing
bytes, deep nesting, invalid UTF-8) does the slower rapidjson-compatible parser below run:
``NaN``/``Infinity``/``Inf`` tokens, trailing bytes ignored, numbers beyond 64 bits become
doubles, duplicate members keep the first. ``debug_string`` renders a parsed value the way
rapidjson's PrettyWriter does inside TF Serving's messages. Failures are INVALID_ARGUMENT with
TF Serving's words (``JSON Parse error: <rapidjson message> at offset: <n>``).
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Iterator
from typing import Any

import orjson

from serving.modelserver.errors import InvalidArgument


class _ParseError(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


_WS = re.compile(rb"[ \t\n\r]*")
_OPEN_RUN = re.compile(rb"(?:\[[ \t\n\r]*)+")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(\.[0-9]*)?([eE][+-]?[0-9]*)?")
_PLAIN_STR = re.compile(rb'[^"\\\x00-\x1f]*')
_ESCAPES = {
    ord('"'): '"',
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
_UINT64_MAX = 2**64 - 1
_INT64_MIN = -(2**63)


def _parse_string(data: bytes, pos: int) -> tuple[str, int]:
    """``data[pos]`` is the opening quote; returns the decoded string and the position after."""
    pos += 1
    parts: list[str] = []
    n = len(data)
    while True:
        m = _PLAIN_STR.match(data, pos)
        end = m.end()
        if end > pos:
            # rapidjson does not validate UTF-8; keep undecodable bytes via surrogateescape.
            parts.append(data[pos:end].decode("utf-8", "surrogateescape"))
        pos = end
        if pos >= n:
            raise _ParseError("Missing a closing quotation mark in string.", pos)
        c = data[pos]
        if c == 0x22:  # closing quote
            return "".join(parts), pos + 1
        if c == 0x5C:  # backslash
            if pos + 1 >= n:
                raise _ParseError("Missing a closing quotation mark in string.", pos + 1)
            e = data[pos + 1]
            if e in _ESCAPES:
                parts.append(_ESCAPES[e])
                pos += 2
                continue
            if e != ord("u"):
                raise _ParseError("Invalid escape character in string.", pos + 1)
            code, pos = _parse_hex4(data, pos + 2)
            if 0xD800 <= code <= 0xDBFF:
                if data[pos : pos + 2] != b"\\u":
                    raise _ParseError("The surrogate pair in string is invalid.", pos)
                low, pos = _parse_hex4(data, pos + 2)
                if not 0xDC00 <= low <= 0xDFFF:
                    raise _ParseError("The surrogate pair in string is invalid.", pos)
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            elif 0xDC00 <= code <= 0xDFFF:
                raise _ParseError("The surrogate pair in string is invalid.", pos)
            parts.append(chr(code))
            continue
        # A raw control character.
        raise _ParseError("Invalid encoding in string.", pos)


def _parse_hex4(data: bytes, pos: int) -> tuple[int, int]:
    digits = data[pos : pos + 4]
    if len(digits) != 4 or not all(chr(b) in "0123456789abcdefABCDEF" for b in digits):
        raise _ParseError("Incorrect hex digit after \\u escape in string.", pos)
    return int(digits, 16), pos + 4


def _parse_scalar(data: bytes, pos: int) -> tuple[Any, int]:
    """true/false/null, numbers and rapidjson's NaN/Inf extension tokens."""
    c = data[pos : pos + 1]
    if c == b"t":
        if data.startswith(b"true", pos):
            return True, pos + 4
        raise _ParseError("Invalid value.", pos)
    if c == b"f":
        if data.startswith(b"false", pos):
            return False, pos + 5
        raise _ParseError("Invalid value.", pos)
    if c == b"n":
        if data.startswith(b"null", pos):
            return None, pos + 4
        raise _ParseError("Invalid value.", pos)
    start = pos
    negative = c == b"-"
    p = pos + 1 if negative else pos
    if data.startswith(b"NaN", p):
        return math.nan, p + 3
    if data.startswith(b"Inf", p):
        value = -math.inf if negative else math.inf
        if data.startswith(b"inity", p + 3):
            return value, p + 8
        if data[p + 3 : p + 4] == b"i":
            raise _ParseError("Invalid value.", p + 3)
        return value, p + 3
    m = _NUMBER.match(data, start)
    if m is None:
        raise _ParseError("Invalid value.", start)
    frac, exp = m.group(1), m.group(2)
    if frac is not None and len(frac) == 1:
        raise _ParseError("Miss fraction part in number.", m.start(1) + 1)
    if exp is not None and not exp[-1:].isdigit():
        raise _ParseError("Miss exponent in number.", m.end())
    text = m.group(0)
    if frac is None and exp is None:
        value = int(text)
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value, m.end()
        # rapidjson stores integers beyond 64 bits as doubles.
        try:
            as_float = float(value)
        except OverflowError:
            raise _ParseError("Number too big to be stored in double.", start) from None
        return as_float, m.end()
    value = float(text)
    if math.isinf(value):
        raise _ParseError("Number too big to be stored in double.", start)
    return value, m.end()


def _parse_document(data: bytes) -> Any:
    """Iterative parser for rapidjson's dialect; stops after the first complete value."""
    n = len(data)
    ws = _WS.match
    pos = ws(data, 0).end()
    if pos >= n:
        raise _ParseError("The document is empty.", pos)
    # Stack of [container, pending key (objects only)].
    stack: list[list[Any]] = []
    while True:
        # ---- parse one value starting at pos
        c = data[pos] if pos < n else -1
        if c == 0x7B:  # {
            pos = ws(data, pos + 1).end()
            if pos < n and data[pos] == 0x7D:
                value: Any = {}
                pos += 1
            else:
                key, pos = _parse_member_name(data, pos)
                stack.append([{}, key])
                pos = ws(data, pos).end()
                continue
        elif c == 0x5B:  # [
            # A run of '[' opens several lists at once (deeply nested bodies stay fast).
            run = _OPEN_RUN.match(data, pos)
            depth = run.group().count(b"[")
            pos = run.end()
            stack.extend([[], None] for _ in range(depth - 1))
            if pos < n and data[pos] == 0x5D:
                value = []
                pos += 1
            else:
                stack.append([[], None])
                continue
        elif c == 0x22:
            value, pos = _parse_string(data, pos)
        elif c == -1:
            raise _ParseError("Invalid value.", pos)
        else:
            value, pos = _parse_scalar(data, pos)
        # ---- attach the finished value to its parents
        while True:
            if not stack:
                return value
            top = stack[-1]
            container = top[0]
            pos = ws(data, pos).end()
            c = data[pos] if pos < n else -1
            if isinstance(container, list):
                container.append(value)
                if c == 0x2C:
                    pos = ws(data, pos + 1).end()
                    break
                if c == 0x5D:
                    pos += 1
                    value = container
                    stack.pop()
                    # Close a run of ']' whose parents are lists without re-dispatching.
                    while stack and pos < n and data[pos] == 0x5D:
                        parent = stack[-1][0]
                        if not isinstance(parent, list):
                            break
                        parent.append(value)
                        value = parent
                        stack.pop()
                        pos += 1
                    continue
                raise _ParseError("Missing a comma or ']' after an array element.", pos)
            # rapidjson keeps duplicate members; lookups find the first one.
            container.setdefault(top[1], value)
            if c == 0x2C:
                pos = ws(data, pos + 1).end()
                top[1], pos = _parse_member_name(data, pos)
                pos = ws(data, pos).end()
                break
            if c == 0x7D:
                pos += 1
                value = container
                stack.pop()
                continue
            raise _ParseError("Missing a comma or '}' after an object member.", pos)


def _parse_member_name(data: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(data) or data[pos] != 0x22:
        raise _ParseError("Missing a name for object member.", pos)
    key, pos = _parse_string(data, pos)
    pos = _WS.match(data, pos).end()
    if pos >= len(data) or data[pos] != 0x3A:
        raise _ParseError("Missing a colon after a name of object member.", pos)
    return key, _WS.match(data, pos + 1).end()


def parse_json(body: bytes) -> Any:
    """Parse a request body like TF Serving's rapidjson setup; INVALID_ARGUMENT on failure."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # Millions of small containers would trigger the cyclic GC over and over (3x the parse
    # time for a deeply nested body); parsed JSON has no cycles, so pause it meanwhile.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse_document(body)
    except _ParseError as e:
        if e.message == "The document is empty.":
            raise InvalidArgument("JSON Parse error: The document is empty") from None
        raise InvalidArgument(f"JSON Parse error: {e.message} at offset: {e.offset}") from None
    finally:
        if gc_was_enabled:
            gc.enable()


# -- debug rendering of JSON values inside error messages --------------------------------------
# Debug rendering of JSON values inside error messages (rapidjson PrettyWriter, single-line
# arrays, 4-space indent, cut at about 256 bytes).

_DEBUG_LIMIT = 256


def _number_text(v: float | int) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    text = repr(v)
    if "e" in text:
        mant, _, exp = text.partition("e")
        text = f"{mant}e{int(exp)}"
    return text


def _string_text(s: str) -> str:
    return orjson.dumps(s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")).decode()


def _debug_pieces(v: Any, level: int) -> Iterator[str]:
    if isinstance(v, dict):
        if not v:
            yield "{}"
            return
        yield "{"
        first = True
        pad = "    " * (level + 1)
        for k, item in v.items():
            yield ("\n" if first else ",\n") + pad + _string_text(k) + ": "
            first = False
            yield from _debug_pieces(item, level + 1)
        yield "\n" + "    " * level + "}"
    elif isinstance(v, list):
        yield "["
        for i, item in enumerate(v):
            if i:
                yield ", "
            yield from _debug_pieces(item, level)
        yield "]"
    elif v is None:
        yield "null"
    elif isinstance(v, str):
        yield _string_text(v)
    else:
        yield _number_text(v)


def debug_string(v: Any) -> str:
    """Render a parsed JSON value for an error message (bounded in time and size)."""
    out: list[str] = []
    size = 0
    for piece in _debug_pieces(v, 0):
        out.append(piece)
        size += len(piece)
        if size >= _DEBUG_LIMIT:
            break
    return "".join(out)[:_DEBUG_LIMIT]


def json_type(v: Any) -> str:
    if v is None:
        return "Null"
    if v is True:
        return "True"
    if v is False:
        return "False"
    if isinstance(v, dict):
        return "Object"
    if isinstance(v, list):
        return "Array"
    if isinstance(v, str):
        return "String"
    return "Number"


def signature_name(doc: dict[str, Any]) -> str:
    sig = doc.get("signature_name")
    if sig is None:
        return ""
    if not isinstance(sig, str):
        raise InvalidArgument(
            f"JSON Value: {debug_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return sig


def parse_object(body: bytes) -> dict[str, Any]:
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise InvalidArgument(f"JSON Value: {debug_string(doc)} Is not object")
    return doc
