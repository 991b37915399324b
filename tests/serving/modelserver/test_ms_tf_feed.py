"""tf_feed: DLPack feeds share aligned writable buffers, copy everything else into aligned
ones (TensorFlow aborts the process on unaligned tensors), and give the same answers."""

from __future__ import annotations

import numpy as np
import pytest

from serving.modelserver import batching
from serving.modelserver.tf_feed import ALIGN, aligned_empty, is_aligned, to_tensor

tf = pytest.importorskip("tensorflow")


def unaligned(shape, dtype=np.float32) -> np.ndarray:
    raw = aligned_empty((int(np.prod(shape)) * np.dtype(dtype).itemsize + 8,), np.uint8)
    arr = raw[4 : 4 + int(np.prod(shape)) * np.dtype(dtype).itemsize].view(dtype).reshape(shape)
    assert not is_aligned(arr)
    return arr


@pytest.mark.parametrize("shape", [(1, 784), (3, 5, 7), (0, 4), ()])
def test_aligned_empty_is_aligned_and_sized(shape):
    arr = aligned_empty(shape, np.float32)
    assert arr.shape == shape and arr.flags.c_contiguous and arr.flags.writeable
    assert arr.ctypes.data % ALIGN == 0 or arr.size == 0


def test_aligned_writable_buffer_is_shared():
    arr = aligned_empty((4, 784), np.float32)
    arr[...] = 1.5
    t = to_tensor(tf, arr)
    arr[0, 0] = 7.0  # the tensor sees it: no copy was made
    assert float(t.numpy()[0, 0]) == 7.0


@pytest.mark.parametrize("kind", ["read-only", "unaligned", "strided"])
def test_other_buffers_are_copied_to_an_aligned_one(kind):
    data = np.arange(4 * 784, dtype=np.float32).reshape(4, 784)
    if kind == "read-only":
        arr = np.frombuffer(data.tobytes(), np.float32).reshape(4, 784)
    elif kind == "unaligned":
        arr = unaligned((4, 784))
        arr[...] = data
    else:
        arr = np.repeat(data, 2, axis=1)[:, ::2]
    t = to_tensor(tf, arr)
    np.testing.assert_array_equal(t.numpy(), data)
    if arr.flags.writeable:
        arr[0, 0] = -1.0
        assert float(t.numpy()[0, 0]) == 0.0  # a copy


@pytest.mark.parametrize(
    "arr",
    [
        np.array([b"a", b"bc"], dtype=object),
        np.array([True, False]),
        np.array([1, 2], np.int64),
        np.array(3.0, np.float32),
        np.array([1, 2], dtype=">i4"),  # not native byte order
        np.zeros((0, 784), np.float32),
    ],
)
def test_every_kind_gives_the_convert_to_tensor_answer(arr):
    t = to_tensor(tf, arr)
    expected = tf.constant(arr.tolist() if arr.dtype == object else arr)
    assert t.dtype == expected.dtype and t.shape == expected.shape
    np.testing.assert_array_equal(t.numpy(), expected.numpy())


def test_a_convolution_runs_on_any_input_buffer():
    """The crash this guards against: oneDNN's conv checks IsAligned() and aborts."""
    kernel = tf.ones((3, 3, 1, 2))
    for arr in (unaligned((2, 28, 28, 1)), np.frombuffer(np.ones(2 * 784, np.float32).tobytes(), np.float32).reshape(2, 28, 28, 1)):
        if arr.flags.writeable:
            arr[...] = 1.0
        out = tf.nn.conv2d(to_tensor(tf, arr), kernel, strides=1, padding="VALID")
        assert out.shape == (2, 26, 26, 2) and float(out.numpy()[0, 0, 0, 0]) == 9.0


def test_merged_batches_are_aligned_for_tensorflow():
    opts = batching.BatchingOptions(max_batch_size=64)
    tasks = [
        batching._Task({"x": np.full((n, 784), float(n), np.float32)}, n, None, 0.0)
        for n in (1, 3, 5)
    ]
    merged, total, padded = batching._merge(tasks, opts)
    x = merged["x"]
    assert (total, padded, x.shape) == (9, 9, (9, 784)) and is_aligned(x) and x.flags.writeable
    assert x[0, 0] == 1.0 and x[1, 0] == 3.0 and x[8, 0] == 5.0
