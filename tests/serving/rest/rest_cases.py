"""Loading ``tfs_rest_cases.jsonl`` (TF Serving's own REST/JSON test cases, spec section 14).

The file is a copy of the project's shared spec data, kept beside the tests so CI runs them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

CASES_PATH = Path(
    os.environ.get("TFS_REST_CASES", Path(__file__).resolve().with_name("tfs_rest_cases.jsonl"))
)

DTYPES = {
    "DT_FLOAT": 1,
    "DT_DOUBLE": 2,
    "DT_INT32": 3,
    "DT_UINT8": 4,
    "DT_INT16": 5,
    "DT_INT8": 6,
    "DT_STRING": 7,
    "DT_COMPLEX64": 8,
    "DT_INT64": 9,
    "DT_BOOL": 10,
    "DT_UINT16": 17,
    "DT_HALF": 19,
    "DT_UINT32": 22,
    "DT_UINT64": 23,
}


def load_cases(*kinds: str) -> list[dict[str, Any]]:
    cases = [json.loads(line) for line in CASES_PATH.read_text().splitlines() if line.strip()]
    return [c for c in cases if not kinds or c["kind"] in kinds]


def case_id(case: dict[str, Any]) -> str:
    return case["case_name"]


def bodies(inp: dict[str, Any]) -> list[str]:
    """Every request body a case's input describes."""
    if "body" in inp:
        return [inp["body"]]
    if "bodies" in inp:
        return list(inp["bodies"])
    if "body_generator" in inp:
        # The generators are short Python expressions of string literals, '*' and '+'.
        return [_eval_generator(inp["body_generator"])]
    if "subcases" in inp:
        return [s["body"] for s in inp["subcases"]]
    raise KeyError("case has no body")


def _eval_generator(expr: str) -> str:
    allowed = set("'\"{}[]:*+0123456789 _,abcdefghijklmnopqrstuvwxyz")
    if not set(expr) <= allowed:
        raise ValueError(f"unexpected generator {expr!r}")
    return eval(expr, {"__builtins__": {}}, {})  # noqa: S307 - vetted literal arithmetic


def expected_value(v: Any) -> float | Any:
    """The jsonl spells non-finite floats as strings."""
    if v == "NaN":
        return math.nan
    if v == "Infinity":
        return math.inf
    if v == "-Infinity":
        return -math.inf
    return v


def values_equal(got: list[Any], want: list[Any]) -> bool:
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        w = expected_value(w)
        if isinstance(g, bytes):
            g = g.decode("utf-8")
        if isinstance(w, float) and math.isnan(w):
            if not (isinstance(g, float) and math.isnan(g)):
                return False
        elif isinstance(w, float) and w == 0 and isinstance(g, float):
            if g != 0 or math.copysign(1, g) != math.copysign(1, w):
                return False
        elif g != w:
            return False
    return True
