"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import socket

import pytest

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
