"""``--ssl_config_file``: TF Serving's SSLConfig text proto -> gRPC server credentials.

server.cc ``BuildServerCredentials``: no file -> insecure; otherwise TLS with
``server_key``/``server_cert`` (PEM text inside the proto), ``custom_ca`` as the roots that
client certificates must chain to, and ``client_verify`` -> request, require and verify a client
certificate (mutual TLS). The same credentials serve every gRPC listener, TCP and Unix socket.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from serving.modelserver.config import parse_text_proto_file


@dataclass(frozen=True)
class TlsSettings:
    server_key: bytes
    server_cert: bytes
    custom_ca: bytes | None
    client_verify: bool


def read_ssl_config(path: str) -> TlsSettings:
    """Parse ``path`` (raises ``config.ConfigError`` with TF Serving's message)."""
    from serving.modelserver.protos import SSLConfig

    msg = parse_text_proto_file(path, SSLConfig())
    return TlsSettings(
        server_key=msg.server_key.encode(),
        server_cert=msg.server_cert.encode(),
        custom_ca=msg.custom_ca.encode() or None,
        client_verify=msg.client_verify,
    )


def _default_roots() -> bytes:
    """gRPC's bundled roots: what C++ gRPC verifies client certificates against when
    ``custom_ca`` is empty (grpcio's Python API insists on explicit roots for client auth)."""
    import grpc

    path = os.path.join(os.path.dirname(grpc.__file__), "_cython", "_credentials", "roots.pem")
    with open(path, "rb") as fh:
        return fh.read()


def server_credentials(tls: TlsSettings):
    """The ``grpc.ServerCredentials``. A key or certificate that is not valid PEM is only
    detected when a port is added (gRPC logs why; the add fails)."""
    import grpc

    roots = tls.custom_ca
    if roots is None and tls.client_verify:
        roots = _default_roots()
    return grpc.ssl_server_credentials(
        [(tls.server_key, tls.server_cert)],
        root_certificates=roots,
        require_client_auth=tls.client_verify,
    )
