"""json_tensor edge cases beyond the upstream cases: the rapidjson dialect, dtypes, b64, numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clients.wire import DataType
from serving.modelserver.errors import Code, ServingError
from serving.modelserver.rest import examples, json_parser, predict_body, responses, tensors
from serving.modelserver.types import TensorSpec


def decode(body: str, **inputs: int) -> dict[str, np.ndarray]:
    specs = {k: TensorSpec(k, v, None) for k, v in inputs.items()}
    return predict_body.decode_predict_inputs(predict_body.parse_predict_body(body.encode()), specs)


def error(body: str, **inputs: int) -> ServingError:
    with pytest.raises(ServingError) as info:
        decode(body, **inputs)
    return info.value


# --- body parsing (spec 3.1) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("NaN", math.nan),
        ("Infinity", math.inf),
        ("-Infinity", -math.inf),
        ("Inf", math.inf),
        ("-Inf", -math.inf),
    ],
)
def test_non_finite_tokens(text: str, want: float) -> None:
    (got,) = json_parser.parse_json(f"[{text}]".encode())
    assert (math.isnan(got) and math.isnan(want)) or got == want


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        (b"[nan]", "Invalid value."),
        (b"[infinity]", "Invalid value."),
        (b"[01]", "Missing a comma or ']' after an array element."),
        (b"[.5]", "Invalid value."),
        (b"[1.]", "Miss fraction part in number."),
        (b"[1e]", "Miss exponent in number."),
        (b"[1e400]", "Number too big to be stored in double."),
        (b'{"a" 1}', "Missing a colon after a name of object member."),
        (b"{1: 2}", "Missing a name for object member."),
        (b'{"a": 1 "b": 2}', "Missing a comma or '}' after an object member."),
        (b'["abc', "Missing a closing quotation mark in string."),
        (b'["\\x"]', "Invalid escape character in string."),
        (b'["\\u12G4"]', "Incorrect hex digit after \\u escape in string."),
        (b'["\\ud800"]', "The surrogate pair in string is invalid."),
        (b'["a\x01"]', "Invalid encoding in string."),
        (b"instances = [1, 2]", "Invalid value."),
        (b"[", "Invalid value."),
    ],
)
def test_parse_errors_use_rapidjson_phrases(body: bytes, phrase: str) -> None:
    with pytest.raises(ServingError) as info:
        json_parser.parse_json(body)
    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.message.startswith(f"JSON Parse error: {phrase} at offset: ")


def test_whitespace_only_body_is_empty_document() -> None:
    with pytest.raises(ServingError, match="^JSON Parse error: The document is empty$"):
        json_parser.parse_json(b"  \n ")


def test_trailing_garbage_is_ignored_and_huge_ints_become_doubles() -> None:
    assert json_parser.parse_json(b'{"instances":[1]}garbage') == {"instances": [1]}
    assert json_parser.parse_json(b"[18446744073709551615, 18446744073709551616]") == [
        2**64 - 1,
        float(2**64),
    ]
    assert json_parser.parse_json(b"[NaN, 18446744073709551616]")[1] == float(2**64)
    assert json_parser.parse_json(b"[-9223372036854775809, NaN]")[0] == float(-(2**63) - 1)


def test_invalid_utf8_is_kept_as_bytes() -> None:
    raw = predict_body.parse_predict_body(b'{"instances": ["a\xffb"]}')
    got = predict_body.decode_predict_inputs(raw, {"x": TensorSpec("x", DataType.DT_STRING, None)})
    assert got["x"].tolist() == [b"a\xffb"]


def test_not_an_object() -> None:
    with pytest.raises(ServingError, match=r"^JSON Value: \[1, 2\] Is not object$"):
        predict_body.parse_predict_body(b"[1, 2]")


def test_duplicate_keys_first_wins_in_fallback() -> None:
    assert json_parser.parse_json(b'{"a": 1, "a": 2, "b": NaN}')["a"] == 1


# --- format choice (3.2) -------------------------------------------------------------------


def test_both_and_neither_keys() -> None:
    err = error('{"instances": [1], "inputs": [1]}', x=DataType.DT_INT32)
    assert "expecting only one of 'inputs' or 'instances' keys to exist " in err.message
    assert err.message.endswith(" ")
    assert error('{"foo": 1}', x=DataType.DT_INT32).message == "Missing 'inputs' or 'instances' key"


def test_instances_not_list_or_empty() -> None:
    assert "Expecting 'instances' to be an list/array" in error('{"instances": 1}', x=1).message
    assert "No values in 'instances' array" in error('{"instances": []}', x=1).message


# --- dtypes (3.5) --------------------------------------------------------------------------


def test_float_conversions() -> None:
    got = decode('{"instances": [1, 2.5, 1e39, -1e39, 1e-50]}', x=DataType.DT_FLOAT)["x"]
    assert got.dtype == np.float32
    assert got.tolist()[:2] == [1.0, 2.5]
    assert got[2] == np.inf and got[3] == -np.inf and got[4] == 0


@pytest.mark.parametrize(
    ("body", "dtype", "phrase"),
    [
        (
            '{"instances": [1.0]}',
            DataType.DT_INT32,
            "JSON Value: 1.0 Type: Number is not of expected type: int32",
        ),
        ('{"instances": [2147483648]}', DataType.DT_INT32, "Type: Number is not of expected type: int32"),
        ('{"instances": [1e3]}', DataType.DT_INT64, "Type: Number is not of expected type: int64"),
        ('{"instances": [9223372036854775808]}', DataType.DT_INT64, "is not of expected type: int64"),
        ('{"instances": [-1]}', DataType.DT_UINT32, "is not of expected type: uint32"),
        ('{"instances": [4294967296]}', DataType.DT_UINT32, "is not of expected type: uint32"),
        ('{"instances": [1]}', DataType.DT_BOOL, "Type: Number is not of expected type: bool"),
        ('{"instances": [true, 1]}', DataType.DT_BOOL, "Type: Number is not of expected type: bool"),
        ('{"instances": [1, true]}', DataType.DT_FLOAT, "Type: True is not of expected type: float"),
        (
            '{"instances": [1.5, false]}',
            DataType.DT_DOUBLE,
            "Type: False is not of expected type: double",
        ),
        ('{"instances": [null]}', DataType.DT_FLOAT, "Type: Null is not of expected type: float"),
        (
            '{"instances": ["1.5"]}',
            DataType.DT_FLOAT,
            'JSON Value: "1.5" Type: String is not of expected type: float',
        ),
        ('{"instances": [1]}', DataType.DT_STRING, "Type: Number is not of expected type: string"),
        (
            '{"instances": [[{"b64": "aGk="}]]}',
            DataType.DT_FLOAT,
            "Type: Object is not of expected type: float",
        ),
        ('{"instances": [1e300]}', DataType.DT_INT64, "is not of expected type: int64"),
    ],
)
def test_wrong_dtypes_are_400(body: str, dtype: int, phrase: str) -> None:
    err = error(body, x=dtype)
    assert err.code == Code.INVALID_ARGUMENT
    assert phrase in err.message
    assert err.message.startswith("Failed to process element: ")


def test_integer_types() -> None:
    got = decode('{"inputs": [[1, -2], [3, 4]]}', x=DataType.DT_INT64)["x"]
    assert got.dtype == np.int64 and got.shape == (2, 2)
    got = decode('{"inputs": [18446744073709551615, 0]}', x=DataType.DT_UINT64)["x"]
    assert got.dtype == np.uint64 and got[0] == 2**64 - 1
    # No range check for narrow types (TF casts int_val): 300 wraps like static_cast<int8>.
    assert decode('{"inputs": [300]}', x=DataType.DT_INT8)["x"].tolist() == [44]
    assert decode('{"inputs": [true, false]}', x=DataType.DT_BOOL)["x"].tolist() == [True, False]


def test_unsupported_dtypes_row_400_columnar_501() -> None:
    for dtype, name in [(DataType.DT_UINT16, "uint16"), (DataType.DT_COMPLEX64, "complex64")]:
        row = error('{"instances": [1]}', x=dtype)
        assert row.code == Code.INVALID_ARGUMENT
        assert f"UNIMPLEMENTED: Conversion of JSON Value: 1 to type: {name}" in row.message
        col = error('{"inputs": [1]}', x=dtype)
        assert col.code == Code.UNIMPLEMENTED and col.http_status == 501


# --- shapes (3.3, 3.4) ---------------------------------------------------------------------


def test_ragged_lists() -> None:
    assert (
        "Encountered list at unexpected size: 1 at level: 1 expected size: 2"
        in error('{"inputs": [[1, 2], [3]]}', x=DataType.DT_INT32).message
    )
    assert (
        "Encountered list at unexpected level: 1 expected < 1"
        in error('{"inputs": [1, [2]]}', x=DataType.DT_INT32).message
    )
    assert (
        "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"
        in error('{"inputs": [[1, 2], 3]}', x=DataType.DT_INT32).message
    )
    # Ragged also in float fast path (numpy refuses, the walker explains).
    assert (
        "Expecting tensor size: 2 but got: 3"
        in error('{"instances": [[1.5, 2], [3, 4, 5]]}', x=DataType.DT_FLOAT).message
    )


def test_columnar_forms() -> None:
    assert decode('{"inputs": 5}', x=DataType.DT_INT32)["x"].shape == ()
    assert decode('{"inputs": []}', x=DataType.DT_FLOAT)["x"].shape == (0,)
    assert decode('{"inputs": []}', x=DataType.DT_INT32)["x"].shape == (0,)
    got = decode('{"inputs": {"a": [1], "b": ["s"], "extra": 1}}', a=DataType.DT_INT32, b=DataType.DT_STRING)
    assert got["a"].tolist() == [1] and got["b"].tolist() == [b"s"]
    assert (
        error('{"inputs": {"a": [1]}}', a=DataType.DT_INT32, b=DataType.DT_STRING).message
        == "Missing named input: b in 'inputs' object."
    )
    assert (
        "inputs is a plain value/list"
        in error('{"inputs": [1]}', a=DataType.DT_INT32, b=DataType.DT_STRING).message
    )


def test_row_named_inputs() -> None:
    got = decode(
        '{"instances": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]}', a=DataType.DT_INT32, b=DataType.DT_STRING
    )
    assert got["a"].tolist() == [1, 2] and got["b"].tolist() == [b"x", b"y"]
    err = error('{"instances": [{"a": 1}]}', a=DataType.DT_INT32, b=DataType.DT_STRING)
    assert "keys must be equal to: a,b" in err.message
    err = error('{"instances": [{"a": 1, "b": "x", "c": 2}]}', a=DataType.DT_INT32, b=DataType.DT_STRING)
    assert "JSON object: does not have named input: c" in err.message
    err = error('{"instances": [1, 2]}', a=DataType.DT_INT32, b=DataType.DT_STRING)
    assert "instances is a plain list, but expecting list of objects" in err.message
    # A single input may be named too.
    assert decode('{"instances": [{"x": [1, 2]}]}', x=DataType.DT_INT32)["x"].shape == (1, 2)


# --- base64 (3.6) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [("aGVsbG8=", b"hello"), ("aGVsbG8", b"hello"), ("", b""), ("+/8=", b"\xfb\xff")],
)
def test_b64_accepts(text: str, want: bytes) -> None:
    assert tensors.b64_decode(text) == want


@pytest.mark.parametrize("text", ["aGVsbG8==", "-_8=", "a", "aGV sbG8=", "aG=VsbG8", "????"])
def test_b64_rejects(text: str) -> None:
    with pytest.raises(ServingError, match="Unable to base64 decode"):
        tensors.b64_decode(text)


def test_bad_b64_in_request() -> None:
    err = error('{"instances": [{"b64": "%%%"}]}', x=DataType.DT_STRING)
    assert err.code == Code.INVALID_ARGUMENT and "Unable to base64 decode" in err.message
    # Not exactly one "b64" string member -> an ordinary object (a named-input object here).
    err = error('{"instances": [{"b64": "aGk=", "x": 1}]}', x=DataType.DT_STRING)
    assert "JSON object: does not have named input: b64" in err.message


# --- fast path equals the exact walker ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        ([[0.1, 0.2], [1, 2]], DataType.DT_FLOAT),
        ([[0.1, 0.2], [1, 2]], DataType.DT_DOUBLE),
        ([[1, 2], [3, -4]], DataType.DT_INT32),
        ([2**40, 5], DataType.DT_INT64),
        ([2**63, 2**63 + 1], DataType.DT_UINT64),
        ([True, False], DataType.DT_BOOL),
        (7, DataType.DT_FLOAT),
    ],
)
def test_fast_path_matches_walker(value: object, dtype: int) -> None:
    fast = tensors._fast_numeric(value, dtype, has_bool=False)
    assert fast is not None
    shape, flat = tensors._walk(value, dtype)
    slow = tensors._to_array(flat, shape, dtype)
    assert fast.dtype == slow.dtype and fast.shape == slow.shape
    np.testing.assert_array_equal(fast, slow)


# --- number formatting (3.8) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "double", "text"),
    [
        (3, False, "3.0"),
        (2.5, False, "2.5"),
        (0.1, False, "0.1"),
        (9000000, False, "9e+06"),
        (999999, False, "999999.0"),
        (0.00003, False, "3e-05"),
        (555557.5, False, "555557.5"),
        (1435774336, False, "1.43577434e+09"),
        (1 / 3, False, "0.333333343"),
        (123456789, False, "123456792.0"),
        (-0.0, False, "-0.0"),
        (1e6, False, "1e+06"),
        (1 / 3, True, "0.33333333333333331"),
        (0.662, True, "0.662"),
        (math.nan, False, "NaN"),
        (math.inf, True, "Infinity"),
        (-math.inf, False, "-Infinity"),
    ],
)
def test_write_decimal(value: float, double: bool, text: str) -> None:
    assert responses.format_float(value, double) == text


def test_output_dtypes() -> None:
    out = responses.format_predict_response(
        {
            "i": np.array([[1], [2]], np.int8),
            "u": np.array([[3], [4]], np.uint64),
            "b": np.array([[True], [False]]),
            "s": np.array([[b'a"b'], [b"\xff"]], dtype=object),
        },
        row_format=True,
    )
    got = json_parser.parse_json(out)
    assert got["predictions"][0] == {"i": [1], "u": [3], "b": [True], "s": ['a"b']}
    assert got["predictions"][1]["s"] == ["\ufffd"]
    for arr, name in [
        (np.array([1], np.float16), "half"),
        (np.array([1], np.uint16), "uint16"),
        (np.array([1], np.complex128), "complex128"),
    ]:
        with pytest.raises(
            ServingError, match=f"Failed to write JSON value for tensor type: {name}$"
        ):
            responses.format_predict_response({"x": arr}, row_format=False)


def test_empty_and_zero_sized_outputs() -> None:
    assert responses.format_predict_response({"x": np.zeros((0, 3), np.float32)}, True) == (
        b'{"predictions": []}'
    )
    assert json_parser.parse_json(
        responses.format_predict_response({"x": np.zeros((2, 0), np.float32)}, False)
    ) == {"outputs": [[], []]}
    assert json_parser.parse_json(
        responses.format_predict_response({"x": np.zeros((2, 0, 1), np.float32)}, True)
    ) == {"predictions": [[], []]}
    assert responses.format_predict_response({"x": np.float32(2.5)}, False) == b'{"outputs": 2.5}'


def test_debug_string_is_bounded() -> None:
    deep: list = []
    cur = deep
    for _ in range(10_000):
        nxt: list = []
        cur.append(nxt)
        cur = nxt
    assert len(json_parser.debug_string(deep)) <= 256
    assert json_parser.debug_string({"a": [1, 2.5], "b": "x"}) == '{\n    "a": [1, 2.5],\n    "b": "x"\n}'


# --- classify / regress examples ------------------------------------------------------------


def test_examples_errors() -> None:
    def err(body: str) -> str:
        with pytest.raises(ServingError) as info:
            examples.parse_examples_body(body.encode(), "regress")
        return info.value.message

    assert "When method is classify, key 'examples' is expected and was not found" in err("{}")
    assert "'examples' value is an empty array" in err('{"examples": []}')
    assert err('{"examples": [{"x": [1e400]}]}').startswith("JSON Parse error: Number too big")
    # Beyond uint64 a literal is a double: it becomes a float feature, which cannot mix.
    assert "expecting type: int64" in err('{"examples": [{"x": [1, 18446744073709551616]}]}')


def test_examples_negative_ints_and_empty_lists_round_trip() -> None:
    from tensorflow.core.example import example_pb2

    req = examples.parse_examples_body(b'{"examples": [{"a": [-1, 9223372036854775807], "e": []}, {}]}')
    ex = example_pb2.Example.FromString(req.examples[0])
    assert list(ex.features.feature["a"].int64_list.value) == [-1, 2**63 - 1]
    assert "e" in ex.features.feature
    assert example_pb2.Example.FromString(req.examples[1]) == example_pb2.Example()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_and_vectorised_float_formatting_agree(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    values = (rng.random(2000) * 10.0 ** rng.integers(-12, 12, 2000)).astype(dtype)
    values[:5] = [3, np.nan, -np.inf, -0.0, 9e6]
    double = dtype is np.float64
    small = responses._format_floats_small(values.astype(np.float64).tolist(), double)
    monkeypatch.setattr(responses, "_SMALL_FLOAT_ARRAY", 0)
    assert responses.format_floats(values, double) == small
    assert small[:5] == ["3.0", "NaN", "-Infinity", "-0.0", "9e+06"]


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_absurd_nesting_is_a_clear_400(key: str) -> None:
    body = "{" + f'"{key}":' + "[" * 200_000 + "1" + "]" * 200_000 + "}"
    err = error(body, x=DataType.DT_FLOAT)
    assert err.code == Code.INVALID_ARGUMENT
    assert "Tensor rank exceeds the supported 64" in err.message
