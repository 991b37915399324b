"""TLS against a TLS-enabled loopback gRPC server with a self-signed certificate made here."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from client_fakes import FakeGrpcServer

from clients import NO_RETRY, GrpcClient, Unavailable
from clients.grpc_client import TlsConfig


def _self_signed(tmp_path, common_name: str, san: str) -> tuple[bytes, bytes]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make a test certificate")
    key, cert = tmp_path / f"{common_name}.key", tmp_path / f"{common_name}.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", f"/CN={common_name}", "-addext", f"subjectAltName={san}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return key.read_bytes(), cert.read_bytes()


@pytest.fixture(scope="module")
def localhost_cert(tmp_path_factory):
    return _self_signed(tmp_path_factory.mktemp("tls"), "localhost", "DNS:localhost,IP:127.0.0.1")


def test_tls_predict_with_a_trusted_root(localhost_cert):
    key, cert = localhost_cert
    with FakeGrpcServer(tls=(key, cert)) as server:
        tls = TlsConfig(root_certificates=cert)
        with GrpcClient(f"grpcs://localhost:{server.port}", "mnist", tls=tls) as c:
            assert [s.version for s in c.model_status()] == [2, 1]
        with GrpcClient(server.target, "mnist", tls=tls) as c:  # IP SAN
            assert c.model_status()[0].state == "AVAILABLE"


def test_tls_rejects_an_untrusted_certificate_and_plaintext(localhost_cert):
    key, cert = localhost_cert
    with FakeGrpcServer(tls=(key, cert)) as server:
        # System roots do not trust a self-signed certificate.
        untrusted = GrpcClient(f"grpcs://localhost:{server.port}", "mnist", retry=NO_RETRY)
        with untrusted as c, pytest.raises(Unavailable):
            c.model_status(timeout_s=5)
        # A plaintext client cannot talk to a TLS server.
        plaintext = GrpcClient(server.target, "mnist", retry=NO_RETRY)
        with plaintext as c, pytest.raises(Unavailable):
            c.model_status(timeout_s=5)


def test_tls_server_name_override(tmp_path):
    key, cert = _self_signed(tmp_path, "mnist.serving.test", "DNS:mnist.serving.test")
    with FakeGrpcServer(tls=(key, cert)) as server:
        tls = TlsConfig(root_certificates=cert, server_name_override="mnist.serving.test")
        with GrpcClient(server.target, "mnist", tls=tls) as c:
            assert c.model_status()[0].version == 2
        cert_path = tmp_path / "mnist.serving.test.pem"
        no_override = TlsConfig(root_certificates=cert_path)  # a path works as well as bytes
        wrong_name = GrpcClient(server.target, "mnist", tls=no_override, retry=NO_RETRY)
        with wrong_name as c, pytest.raises(Unavailable):
            c.model_status(timeout_s=5)
