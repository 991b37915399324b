"""Clients for TensorFlow Serving (and the embedded server): gRPC and REST, one interface.

    from clients import connect
    with connect("grpc://127.0.0.1:8500", model="mnist") as client:   # or http://...:8501
        result = client.predict_digits(images)       # [n,28,28] floats in [0,1]
        result.classes, result.probabilities

Owns: the wire vocabulary of the whole house (``wire``: dtype names and numpy types, status
code names and the HTTP table, version states), ``codec`` (numpy <-> TensorProto),
``grpc_client.GrpcClient``, ``rest_client.RestClient``, ``base.PredictionClient`` (the shared
interface, deadlines, retries), ``types`` (plain results), ``errors`` (typed errors),
``examples`` (tf.Example building), ``images`` (PNG/JPEG -> MNIST arrays), ``protos`` (private
copies of TF Serving's messages) and ``cli`` (``python -m clients``). The server and the
launcher import ``wire``, ``codec`` and ``types`` from here: clients are the bottom floor.

Must never import: ``export``, ``serving``, TensorFlow or ``tensorflow_serving`` (a test
imports every module with TensorFlow blocked). Heavy modules are imported on first use, so
``import clients.codec`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clients.base import PredictionClient

_LAZY = {
    "GrpcClient": "clients.grpc_client",
    "TlsConfig": "clients.grpc_client",
    "RestClient": "clients.rest_client",
    "PredictionClient": "clients.base",
    "RetryPolicy": "clients.base",
    "NO_RETRY": "clients.base",
    "ModelSpec": "clients.types",
    "PredictResult": "clients.types",
    "DigitPredictions": "clients.types",
    "ModelMetadata": "clients.types",
    "VersionStatus": "clients.types",
    "ClientError": "clients.errors",
    "ModelNotFound": "clients.errors",
    "InvalidInput": "clients.errors",
    "Unavailable": "clients.errors",
    "DeadlineExceeded": "clients.errors",
    "ResourceExhausted": "clients.errors",
    "Unimplemented": "clients.errors",
    "PermissionDenied": "clients.errors",
    "ServerError": "clients.errors",
    "ProtocolError": "clients.errors",
}

__all__ = ["connect", *_LAZY]


def connect(target: str, model: Any = None, **kwargs: Any) -> PredictionClient:
    """A client for ``target``: ``http(s)://host:port`` -> REST; ``grpc://``, ``grpcs://``,
    ``dns:///``, ``ipv4:``, ``unix:`` or a bare ``host:port`` -> gRPC."""
    if target.startswith(("http://", "https://")):
        from clients.rest_client import RestClient

        return RestClient(target, model, **kwargs)
    from clients.grpc_client import GrpcClient

    return GrpcClient(target, model, **kwargs)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clients' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
