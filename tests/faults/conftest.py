"""Fixtures for the fault suite: a served copy of the tiny model, its log, the expected digits."""

from __future__ import annotations

import numpy as np
import pytest
from fault_server import Digits, FaultServer


@pytest.fixture(scope="session")
def digits(tiny_mnist_repo) -> Digits:
    """Test digits the tiny model gets right with a clear margin, so that any version the
    suite serves (copies of it, or a re-export with its recipe) answers the same digit."""
    import tensorflow as tf

    tiny = tiny_mnist_repo
    loaded = tf.saved_model.load(str(tiny.version_path))
    scores = loaded.signatures["serving_default"](images=tf.constant(tiny.test_images))["scores"]
    scores = scores.numpy()
    top = scores.max(axis=1)
    keep = (tiny.predictions == tiny.test_labels) & (top > 0.8)
    assert keep.sum() >= 8, "too few confident digits in the tiny model's sample"
    return Digits(tiny.test_images[keep][:16], tiny.test_labels[keep][:16].astype(np.int64))


@pytest.fixture
def fault_server(tiny_mnist_repo, tmp_path):
    """Factory: ``fault_server(**kwargs)`` -> a started FaultServer; stopped at teardown."""
    servers: list[FaultServer] = []

    def make(start: bool = True, **kwargs) -> FaultServer:
        server = FaultServer(tmp_path / f"case{len(servers)}", tiny_mnist_repo, **kwargs)
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        if server.process is not None and server.process.running:
            server.process.kill()
