"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import socket

import pytest

from export.tiny import TinyModelRepo

# TensorFlow is chatty on stderr; tests never assert on its noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def tiny_mnist_repo(tmp_path_factory: pytest.TempPathFactory) -> TinyModelRepo:
    """A real, tiny softmax model (trained for seconds on 6,000 digits, ~89% on the test set)
    published by the real export pipeline as ``<repo>/mnist/1/`` in a private temp repository.

    Returns ``TinyModelRepo`` (export/tiny.py): repo, model_name, version, version_path,
    accuracy, and a sample of the official test set (test_images float32 [64, 784],
    test_images_u8, test_labels, and the model's own predictions for them).
    Treat the repository as read-only: other tests share it. Copy it to modify it.
    """
    from export.tiny import publish_tiny_model

    return publish_tiny_model(tmp_path_factory.mktemp("tiny_mnist_repo"))
