"""gRPC listeners as server.cc opens them: the Unix socket (--grpc_socket_path, alone with
--port=0), TLS and mutual TLS from an SSLConfig text file on both listeners (certificates made
with openssl here), the grpc.health.v1 service, and the start-up failures of bad SSL files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ms_models import copy_version
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from clients import codec
from serving.modelserver.process import EmbeddedServerProcess


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, bytes]:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, both
    signed by the CA, plus a self-signed client certificate the CA does not know."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
             "-days", "1", "-subj", "/CN=test-ca")  # fmt: skip
    for name, san in (("server", "DNS:localhost,IP:127.0.0.1"), ("client", "DNS:client")):
        _openssl("req", *ec, "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"),
                 "-subj", f"/CN={name}")  # fmt: skip
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                 "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "1",
                 "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))  # fmt: skip
    _openssl("req", "-x509", *ec, "-keyout", str(d / "stranger.key"), "-out",
             str(d / "stranger.pem"), "-days", "1", "-subj", "/CN=stranger")  # fmt: skip
    return {p.stem + p.suffix.replace(".", "_"): p.read_bytes() for p in d.glob("*.*")}


def ssl_config_text(pki, *, client_verify: bool) -> str:
    def quoted(pem: bytes) -> str:
        return '"' + pem.decode().replace("\n", "\\n") + '"'

    lines = [f"server_key: {quoted(pki['server_key'])}", f"server_cert: {quoted(pki['server_pem'])}"]
    if client_verify:
        lines += [f"custom_ca: {quoted(pki['ca_pem'])}", "client_verify: true"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def ver_base(model_store, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("listeners") / "ver"
    copy_version(model_store, "ver", 1, base)
    return base


def predict_x(channel: grpc.Channel) -> list[float]:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "ver"
    codec.fill_tensor_proto(req.inputs["x"], np.array([1.0, 2.0], np.float32))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return codec.tensor_proto_to_ndarray(stub.Predict(req, timeout=30).outputs["y"]).tolist()


def start(ver_base, *args: str) -> EmbeddedServerProcess:
    return EmbeddedServerProcess(list(args), model_name="ver", model_base_path=ver_base).start()


def tls_channel(target: str, roots: bytes, key: bytes | None = None, cert: bytes | None = None):
    creds = grpc.ssl_channel_credentials(roots, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", "localhost")])


def fails_to_connect(channel: grpc.Channel) -> bool:
    with channel, pytest.raises(grpc.RpcError) as info:
        predict_x(channel)
    return info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_unix_socket_alone_with_port_0(ver_base, tmp_path):
    sock = tmp_path / "only.sock"
    server = start(ver_base, "--port=0", f"--grpc_socket_path={sock}")
    try:
        assert f"Running gRPC ModelServer at UNIX socket {sock} ..." in server.log_text()
        assert "Running gRPC ModelServer at 127.0.0.1" not in server.log_text()
        with grpc.insecure_channel(f"unix:{sock}") as channel:
            assert predict_x(channel) == [2.0, 3.0]
    finally:
        assert server.stop() == 0


def test_a_stale_socket_file_is_replaced(ver_base, tmp_path):
    """A server killed with SIGKILL leaves its socket file behind; the next one binds anyway."""
    sock = tmp_path / "stale.sock"
    first = start(ver_base, f"--grpc_socket_path={sock}")
    first.kill()
    assert sock.exists()
    second = start(ver_base, f"--grpc_socket_path={sock}")
    try:
        with grpc.insecure_channel(f"unix:{sock}") as channel:
            assert predict_x(channel) == [2.0, 3.0]
    finally:
        assert second.stop() == 0


def test_tls_on_both_listeners(ver_base, pki, tmp_path):
    config = tmp_path / "ssl.config"
    config.write_text(ssl_config_text(pki, client_verify=False))
    sock = tmp_path / "tls.sock"
    server = start(ver_base, f"--ssl_config_file={config}", f"--grpc_socket_path={sock}")
    try:
        assert "Using SSL credentials" in server.log_text()
        for target in (server.grpc_target, f"unix:{sock}"):
            with tls_channel(target, pki["ca_pem"]) as channel:
                assert predict_x(channel) == [2.0, 3.0]
            assert fails_to_connect(grpc.insecure_channel(target))
            # A client that trusts another CA refuses the server's certificate.
            assert fails_to_connect(tls_channel(target, pki["stranger_pem"]))
    finally:
        assert server.stop() == 0


def test_mutual_tls_requires_a_client_certificate_from_custom_ca(ver_base, pki, tmp_path):
    config = tmp_path / "mtls.config"
    config.write_text(ssl_config_text(pki, client_verify=True))
    sock = tmp_path / "mtls.sock"
    server = start(ver_base, f"--ssl_config_file={config}", f"--grpc_socket_path={sock}")
    try:
        for target in (server.grpc_target, f"unix:{sock}"):
            good = tls_channel(target, pki["ca_pem"], pki["client_key"], pki["client_pem"])
            with good:
                assert predict_x(good) == [2.0, 3.0]
            assert fails_to_connect(tls_channel(target, pki["ca_pem"]))  # no client certificate
            stranger = tls_channel(target, pki["ca_pem"], pki["stranger_key"], pki["stranger_pem"])
            assert fails_to_connect(stranger)  # a certificate custom_ca did not sign
    finally:
        assert server.stop() == 0


def run_server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving.modelserver", "--bind_address=127.0.0.1", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_bad_ssl_config_file_ends_start_up(ver_base, pki, tmp_path):
    unparsable = tmp_path / "bad.config"
    unparsable.write_text("server_key: 'x'\nclient_verify: maybe\n")
    proc = run_server(f"--model_base_path={ver_base}", f"--ssl_config_file={unparsable}")
    assert proc.returncode == 255
    assert "Error parsing text-format tensorflow.serving.SSLConfig" in proc.stderr
    assert f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{unparsable}'" in proc.stderr

    not_pem = tmp_path / "notpem.config"
    not_pem.write_text('server_key: "not a key"\nserver_cert: "not a certificate"\n')
    proc = run_server(f"--model_base_path={ver_base}", f"--ssl_config_file={not_pem}", "--port=0",
                      f"--grpc_socket_path={tmp_path / 'x.sock'}")  # fmt: skip
    assert proc.returncode == 255
    assert "Failed to start server. Error: INVALID_ARGUMENT: Failed to BuildAndStart gRPC server" in proc.stderr


def health_status(channel: grpc.Channel, service: str) -> str:
    stub = health_pb2_grpc.HealthStub(channel)
    resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def test_health_service_reports_what_server_cc_sets(ver_base, tmp_path):
    sock = tmp_path / "health.sock"
    server = start(ver_base, "--enable_grpc_healthcheck_service", f"--grpc_socket_path={sock}")
    try:
        for target in (server.grpc_target, f"unix:{sock}"):
            with grpc.insecure_channel(target) as channel:
                for service in ("", "ModelService", "PredictionService"):
                    assert health_status(channel, service) == "SERVING"
                with pytest.raises(grpc.RpcError) as info:
                    health_status(channel, "tensorflow.serving.PredictionService")
                assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        assert server.stop() == 0


def test_health_service_is_off_by_default(ver_base):
    server = start(ver_base)
    try:
        with grpc.insecure_channel(server.grpc_target) as channel, pytest.raises(grpc.RpcError) as info:
            health_status(channel, "")
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        assert server.stop() == 0
