"""numpy arrays -> TensorFlow feed tensors, without a copy where TensorFlow allows it.

``tf.convert_to_tensor`` always copies (also for aligned buffers), and its Python dispatch
costs more than the copy: ``bench/feed_bench.py`` measured 13-25 us for one 784-float image and
~180 us for 256 images against 1-8 us and 2-75 us through DLPack, which hands TensorFlow the
numpy buffer itself. DLPack cannot mark a buffer read-only, so read-only arrays (those decoded
with ``np.frombuffer`` from a request's ``tensor_content``) are copied once with numpy first (a
memcpy). TensorFlow never writes into a feed, and the DLPack capsule keeps the
numpy buffer alive as long as the tensor lives. Anything DLPack refuses (strings, unusual
strides or dtypes) takes ``convert_to_tensor`` as before.

Alignment is not optional: TensorFlow's kernels (oneDNN's convolution among them) abort the
whole process (``Check failed: IsAligned()``) on a tensor whose buffer is not aligned to
``ALIGN`` bytes, and numpy only promises 16. So a buffer that is not aligned is first copied
into one that is (``aligned_empty``); the batching scheduler merges batches straight into such
a buffer, so a merged batch needs no second copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_DLPACK_KINDS = frozenset("biufc")  # bool, int, uint, float, complex
ALIGN = 64  # EIGEN_MAX_ALIGN_BYTES: what Tensor::IsAligned() checks on CPU


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous array whose buffer starts on an ``ALIGN``-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, np.uint8)
    offset = (-raw.ctypes.data) % ALIGN
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def is_aligned(arr: np.ndarray) -> bool:
    return arr.ctypes.data % ALIGN == 0


def to_tensor(tf: Any, arr: np.ndarray) -> Any:
    if arr.dtype == object:
        return tf.constant(arr.tolist() if arr.ndim else arr.item(), dtype=tf.string)
    if arr.dtype.kind in _DLPACK_KINDS and arr.dtype.isnative and arr.size:
        if not (arr.flags.c_contiguous and arr.flags.writeable and is_aligned(arr)):
            copy = aligned_empty(arr.shape, arr.dtype)
            copy[...] = arr
            arr = copy
        try:
            return tf.experimental.dlpack.from_dlpack(arr.__dlpack__())
        except (BufferError, TypeError, ValueError, tf.errors.OpError):
            pass
    return tf.convert_to_tensor(arr)
