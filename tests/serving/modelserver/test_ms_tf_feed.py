"""tf_feed: aligned buffers for TensorFlow, and batches merged into one."""

from __future__ import annotations

import numpy as np
import pytest

from serving.modelserver import batching
from serving.modelserver.tf_feed import ALIGN, aligned_empty, is_aligned


@pytest.mark.parametrize("shape", [(1, 784), (3, 5, 7), (0, 4), ()])
def test_aligned_empty_is_aligned_and_sized(shape):
    arr = aligned_empty(shape, np.float32)
    assert arr.shape == shape and arr.flags.c_contiguous and arr.flags.writeable
    assert arr.ctypes.data % ALIGN == 0 or arr.size == 0


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
