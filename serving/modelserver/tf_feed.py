"""Buffers TensorFlow can take as they are: 64-byte-aligned numpy arrays.

TensorFlow's CPU kernels (oneDNN's convolution among them) require tensor buffers aligned to
``ALIGN`` bytes (``Tensor::IsAligned()``; an unaligned one aborts the process when it is fed
without a copy), and numpy only promises 16. The batching scheduler merges a batch straight into
such a buffer, so the merged batch never needs realigning on its way into TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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
