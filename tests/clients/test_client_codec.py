"""The tensor codec against TensorFlow's own conversions (tf.make_ndarray, make_tensor_proto,
and the C++ decoder through tf.io.parse_tensor)."""

from __future__ import annotations

import numpy as np
import pytest

from clients import codec
from clients.codec import DataType

NUMERIC = [
    np.float16,
    np.float32,
    np.float64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
    np.complex64,
    np.complex128,
]
SHAPES = [(), (0,), (1,), (5,), (2, 3), (3, 0, 2), (2, 28, 28)]


def sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    if dt.kind == "b":
        flat = rng.integers(0, 2, n).astype(bool)
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        flat = rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)
    elif dt.kind == "c":
        flat = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dt)
    else:
        flat = (rng.standard_normal(n) * 100).astype(dt)
    return flat.reshape(shape)


def strings(shape):
    n = int(np.prod(shape))
    out = np.empty(n, dtype=object)
    out[:] = [bytes([i % 256]) * (i % 7) + b"\x00\xff" for i in range(n)]
    return out.reshape(shape)


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert a.dtype == b.dtype
    if a.dtype == object:
        assert a.tolist() == b.tolist()
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("content", [True, False], ids=["tensor_content", "typed"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
def test_numeric_against_tensorflow(tf, tf_tensor_proto, dtype, shape, content):
    arr = sample(dtype, shape)
    # Ours -> TF's message class -> tf.make_ndarray (duck typing on TF's own class).
    msg = codec.ndarray_to_tensor_proto(arr, use_tensor_content=content, proto_cls=tf_tensor_proto)
    assert msg.dtype == tf.as_dtype(arr.dtype).as_datatype_enum
    assert bool(msg.tensor_content) == (content and arr.size > 0)
    assert_same(tf.make_ndarray(msg), arr)
    # The C++ decoder agrees too.
    parsed = tf.io.parse_tensor(msg.SerializeToString(), tf.as_dtype(arr.dtype)).numpy()
    assert_same(parsed, arr)
    # Ours round trip, and ours decoding TF's encoding.
    assert_same(codec.tensor_proto_to_ndarray(msg), arr)
    assert_same(codec.tensor_proto_to_ndarray(tf.make_tensor_proto(arr)), arr)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_strings_against_tensorflow(tf, tf_tensor_proto, shape):
    arr = strings(shape)
    msg = codec.ndarray_to_tensor_proto(arr, proto_cls=tf_tensor_proto)
    assert msg.dtype == DataType.DT_STRING and not msg.tensor_content
    assert len(msg.string_val) == arr.size
    ref = tf.make_ndarray(msg)
    assert ref.tolist() == arr.tolist()
    assert_same(codec.tensor_proto_to_ndarray(msg), arr)
    assert_same(codec.tensor_proto_to_ndarray(tf.make_tensor_proto(arr)), arr)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_string_tensor_content_matches_tensorflow_cpp(tf, tf_tensor_proto):
    # TF's string tensor_content layout (port::EncodeStringList): all varint32 lengths first,
    # then the bytes back to back. The C++ decoder behind parse_tensor is the reference.
    values = [b"", b"a", b"x" * 300, bytes(range(256))]
    msg = tf_tensor_proto(dtype=int(DataType.DT_STRING))
    msg.tensor_shape.dim.add().size = len(values)
    msg.tensor_content = b"".join(_varint(len(v)) for v in values) + b"".join(values)
    ref = tf.io.parse_tensor(msg.SerializeToString(), tf.string).numpy().tolist()
    assert ref == values
    assert codec.tensor_proto_to_ndarray(msg).tolist() == values
    msg.tensor_content = msg.tensor_content[:-1]
    with pytest.raises(codec.TensorProtoError):
        codec.tensor_proto_to_ndarray(msg)


def test_str_and_fixed_width_inputs_become_bytes(tf_tensor_proto):
    for arr in (np.array(["é", "ab"]), np.array([b"a", b"bc"]), np.array(["x", b"y"], object)):
        out = codec.tensor_proto_to_ndarray(
            codec.ndarray_to_tensor_proto(arr, proto_cls=tf_tensor_proto)
        )
        assert out.dtype == object
        assert all(isinstance(v, bytes) for v in out.tolist())
    assert list(
        codec.ndarray_to_tensor_proto(np.array(["é"]), proto_cls=tf_tensor_proto).string_val
    ) == ["é".encode()]


def test_bfloat16_when_ml_dtypes_present(tf, tf_tensor_proto):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    arr = np.array([[1.5, -2.0, 3.25]], dtype=ml_dtypes.bfloat16)
    for content in (True, False):
        msg = codec.ndarray_to_tensor_proto(
            arr, use_tensor_content=content, proto_cls=tf_tensor_proto
        )
        assert msg.dtype == DataType.DT_BFLOAT16
        assert_same(tf.make_ndarray(msg), arr)
        assert_same(codec.tensor_proto_to_ndarray(msg), arr)


SPLAT_CASES = [
    # (dtype enum, field, values, shape)
    (DataType.DT_FLOAT, "float_val", [7.5], (2, 3)),
    (DataType.DT_FLOAT, "float_val", [1.0, 2.0], (4,)),
    (DataType.DT_FLOAT, "float_val", [], (3,)),
    (DataType.DT_FLOAT, "float_val", [1.0, 2.0, 3.0], (2,)),  # extra values: first n used
    (DataType.DT_DOUBLE, "double_val", [0.25], (3,)),
    (DataType.DT_INT32, "int_val", [4], (2, 2)),
    (DataType.DT_UINT8, "int_val", [255], (3,)),
    (DataType.DT_INT64, "int64_val", [1, 2**40], (3,)),
    (DataType.DT_BOOL, "bool_val", [True], (3,)),
    (DataType.DT_HALF, "half_val", [15872], (2,)),  # 1.5 as float16 bits
    (DataType.DT_UINT32, "uint32_val", [2**32 - 1], (2,)),
    (DataType.DT_UINT64, "uint64_val", [2**64 - 1], (2,)),
    (DataType.DT_COMPLEX64, "scomplex_val", [1.0, 2.0], (3,)),
    (DataType.DT_COMPLEX128, "dcomplex_val", [1.0, 2.0, 3.0, 4.0], (3,)),
    (DataType.DT_STRING, "string_val", [b"ab"], (2, 2)),
    (DataType.DT_STRING, "string_val", [b"a", b"b"], (3,)),
    (DataType.DT_STRING, "string_val", [], (2,)),
]


@pytest.mark.parametrize("data_type,field,values,shape", SPLAT_CASES)
def test_typed_fields_and_splat_match_tensorflow_cpp(
    tf, tf_tensor_proto, data_type, field, values, shape
):
    msg = tf_tensor_proto(dtype=int(data_type))
    for size in shape:
        msg.tensor_shape.dim.add().size = size
    getattr(msg, field).extend(values)
    ours = codec.tensor_proto_to_ndarray(msg)
    ref = tf.io.parse_tensor(msg.SerializeToString(), tf.dtypes.as_dtype(int(data_type))).numpy()
    assert ours.shape == shape
    assert_same(ours, ref)


@pytest.mark.parametrize(
    "data_type", [DataType.DT_RESOURCE, DataType.DT_VARIANT, DataType.DT_QINT8, 99]
)
def test_unsupported_enum_raises_value_error(tf_tensor_proto, data_type):
    msg = tf_tensor_proto(dtype=int(data_type))
    with pytest.raises(codec.UnsupportedDTypeError, match="unsupported tensor dtype"):
        codec.tensor_proto_to_ndarray(msg)
    assert issubclass(codec.UnsupportedDTypeError, ValueError)


@pytest.mark.parametrize(
    "arr",
    [
        np.array([1, 2], dtype="datetime64[s]"),
        np.array([object(), None]),
        np.array([1.0], np.longdouble),
    ],
    ids=["datetime", "objects", "longdouble"],
)
def test_unsupported_arrays_raise_value_error(tf_tensor_proto, arr):
    with pytest.raises(codec.UnsupportedDTypeError):
        codec.ndarray_to_tensor_proto(arr, proto_cls=tf_tensor_proto)


def test_malformed_protos_raise_clear_errors(tf_tensor_proto):
    msg = tf_tensor_proto(dtype=int(DataType.DT_FLOAT))
    msg.tensor_shape.dim.add().size = 3
    msg.tensor_content = b"\x00" * 8
    with pytest.raises(codec.TensorProtoError, match="needs 12"):
        codec.tensor_proto_to_ndarray(msg)
    msg = tf_tensor_proto(dtype=int(DataType.DT_FLOAT))
    msg.tensor_shape.unknown_rank = True
    with pytest.raises(codec.TensorProtoError, match="unknown rank"):
        codec.tensor_proto_to_ndarray(msg)
    msg = tf_tensor_proto(dtype=int(DataType.DT_FLOAT))
    msg.tensor_shape.dim.add().size = -1
    with pytest.raises(codec.TensorProtoError, match="negative"):
        codec.tensor_proto_to_ndarray(msg)


def test_tensor_content_decodes_without_copy(tf_tensor_proto):
    arr = sample(np.float32, (32, 784))
    msg = codec.ndarray_to_tensor_proto(arr, proto_cls=tf_tensor_proto)
    out = codec.tensor_proto_to_ndarray(msg)
    assert not out.flags.owndata and not out.flags.writeable  # a view on the bytes
    assert_same(out, arr)


def test_big_endian_and_non_contiguous_inputs(tf_tensor_proto):
    arr = np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2]
    for content in (True, False):
        msg = codec.ndarray_to_tensor_proto(
            arr, use_tensor_content=content, proto_cls=tf_tensor_proto
        )
        np.testing.assert_array_equal(codec.tensor_proto_to_ndarray(msg), arr)


def test_dtype_cast_reuses_out_and_clears_it(tf_tensor_proto):
    out = tf_tensor_proto()
    codec.fill_tensor_proto(out, np.array([b"x"], object))
    result = codec.ndarray_to_tensor_proto([[0.5, 1.0]], out, dtype=DataType.DT_FLOAT)
    assert result is out
    assert out.dtype == DataType.DT_FLOAT and not out.string_val
    assert codec.tensor_proto_to_ndarray(out).dtype == np.float32
    codec.fill_tensor_proto(out, [1, 2], dtype=np.int64, use_tensor_content=False)
    assert list(out.int64_val) == [1, 2]


def test_dtype_table_helpers():
    assert codec.numpy_dtype(DataType.DT_FLOAT) == np.float32
    assert codec.numpy_dtype(7) == np.dtype(object)
    assert codec.data_type_of(np.uint16) is DataType.DT_UINT16
    assert codec.data_type_of("U3") is DataType.DT_STRING
    assert codec.dtype_name(1) == "DT_FLOAT" and codec.dtype_name(1234) == "DT_1234"
    with pytest.raises(codec.UnsupportedDTypeError):
        codec.numpy_dtype(DataType.DT_RESOURCE)


def test_shapes(tf_tensor_proto):
    msg = tf_tensor_proto()
    codec.fill_shape_proto(msg.tensor_shape, (-1, 784))
    assert codec.shape_from_proto(msg.tensor_shape) == (-1, 784)
    codec.fill_shape_proto(msg.tensor_shape, None)
    assert codec.shape_from_proto(msg.tensor_shape) is None


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
def test_typed_fast_path_is_byte_identical_to_protobuf_extend(tf_tensor_proto, dtype):
    # The typed fields are written as packed wire bytes; protobuf's own extend is the reference.
    arr = sample(dtype, (3, 17), seed=3)
    fast = codec.ndarray_to_tensor_proto(arr, use_tensor_content=False, proto_cls=tf_tensor_proto)
    slow = tf_tensor_proto(dtype=fast.dtype)
    slow.tensor_shape.CopyFrom(fast.tensor_shape)
    flat = arr.reshape(-1)
    field = {
        np.float16: "half_val",
        np.float32: "float_val",
        np.float64: "double_val",
        np.int64: "int64_val",
        np.uint32: "uint32_val",
        np.uint64: "uint64_val",
        np.bool_: "bool_val",
        np.complex64: "scomplex_val",
        np.complex128: "dcomplex_val",
    }.get(dtype, "int_val")
    if dtype is np.float16:
        values = flat.view(np.uint16).tolist()
    elif np.dtype(dtype).kind == "c":
        values = flat.view(flat.real.dtype).tolist()
    else:
        values = flat.tolist()
    getattr(slow, field).extend(values)
    assert fast.SerializeToString(deterministic=True) == slow.SerializeToString(deterministic=True)


def test_huge_splat_is_refused(tf_tensor_proto):
    # One value claiming 10**12 elements must not make the decoder allocate terabytes.
    for field, dtype in (("float_val", DataType.DT_FLOAT), ("string_val", DataType.DT_STRING)):
        msg = tf_tensor_proto(dtype=int(dtype))
        msg.tensor_shape.dim.add().size = 10**6
        msg.tensor_shape.dim.add().size = 10**6
        if field == "float_val":
            msg.float_val.append(1.0)
        with pytest.raises(codec.TensorProtoError, match="expanding"):
            codec.tensor_proto_to_ndarray(msg)
    # A byte count that does not match the shape is refused before any allocation too.
    msg = tf_tensor_proto(dtype=int(DataType.DT_FLOAT))
    msg.tensor_shape.dim.add().size = 10**12
    msg.tensor_content = b"\x00" * 8
    with pytest.raises(codec.TensorProtoError, match="needs"):
        codec.tensor_proto_to_ndarray(msg)
