"""Fixtures for the client tests: TensorFlow is imported once per session, and only here."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, the reference implementation for the codec tests."""
    return pytest.importorskip("tensorflow")


@pytest.fixture(scope="session")
def tf_tensor_proto(tf):
    from tensorflow.core.framework import tensor_pb2

    return tensor_pb2.TensorProto
