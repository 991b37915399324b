"""The CLI's ``--ca-cert`` and ``predict_digits`` with image files, against the real embedded
server and the real tiny MNIST model.

The embedded server speaks plaintext only (as TF Serving without SSL config), so TLS is
terminated in front of it by a small loopback proxy, the way an ingress or a sidecar does:
``grpcs://`` and ``https://`` clients talk TLS to the proxy with a certificate made here by
openssl, and the proxy forwards the decrypted bytes to the server's own ports.
"""

from __future__ import annotations

import json
import selectors
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clients import GrpcClient, RestClient, cli
from clients.images import ImageError

pytestmark = pytest.mark.slow

PROXY_IDLE_LIMIT_S = 60.0  # a forwarded connection with no traffic for this long is closed


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make a test certificate")
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return key, cert


class TlsTerminator:
    """Accept TLS on 127.0.0.1:<port>, forward plaintext to 127.0.0.1:<backend_port>."""

    def __init__(self, key: Path, cert: Path, backend_port: int, alpn: list[str]) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.context.set_alpn_protocols(alpn)  # gRPC insists on "h2"
        self.backend_port = backend_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.handshakes = 0  # completed TLS handshakes
        self.refused = 0  # handshakes that failed (an untrusting client hangs up)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            with self._lock:
                self.refused += 1
            conn.close()
            return
        with self._lock:
            self.handshakes += 1
        with tls, socket.create_connection(("127.0.0.1", self.backend_port), 10) as plain:
            tls.settimeout(None)
            self._pump(tls, plain)

    def _pump(self, tls: ssl.SSLSocket, plain: socket.socket) -> None:
        """One thread per connection moves bytes both ways (an SSL object must not be read
        and written from two threads at once) until either side closes or it idles."""
        with selectors.DefaultSelector() as selector:
            selector.register(tls, selectors.EVENT_READ)
            selector.register(plain, selectors.EVENT_READ)
            while not self._stop.is_set():
                if tls.pending():  # decrypted bytes already buffered: select would not see them
                    sources = [tls]
                else:
                    sources = [key.fileobj for key, _ in selector.select(PROXY_IDLE_LIMIT_S)]
                    if not sources:
                        return
                for source in sources:
                    target = plain if source is tls else tls
                    try:
                        data = source.recv(65536)
                        if not data:
                            return  # one side hung up: close both
                        target.sendall(data)
                    except OSError:  # ssl.SSLError is an OSError
                        return

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_ca_bundle_from_the_environment(monkeypatch):
    """requests lets these override a Session's own ``verify`` (the client passes it per request, see
    test_cli_ca_cert_wins_over_requests_ca_bundle);
    the tests here are about the CLI's --ca-cert, so the machine's settings stay out."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def server(tiny_mnist_repo, tmp_path_factory):
    from serving.modelserver.process import EmbeddedServerProcess

    base = tmp_path_factory.mktemp("tls_repo") / "mnist"
    shutil.copytree(tiny_mnist_repo.version_path, base / "1")
    srv = EmbeddedServerProcess(model_name="mnist", model_base_path=base).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("certs")
    key, cert = _self_signed(folder, "mnist-serving")
    _, other = _self_signed(folder, "someone-else")  # a CA that did not sign the server's cert
    return {"key": key, "cert": cert, "other": other}


@pytest.fixture(scope="module")
def tls_targets(server, certs):
    grpc_port = int(server.grpc_target.rsplit(":", 1)[1])
    rest_port = int(server.rest_url.rsplit(":", 1)[1])
    grpcs = TlsTerminator(certs["key"], certs["cert"], grpc_port, ["h2"])
    https = TlsTerminator(certs["key"], certs["cert"], rest_port, ["http/1.1"])
    try:
        yield {
            "grpc": (f"grpcs://127.0.0.1:{grpcs.port}", grpcs),
            "rest": (f"https://127.0.0.1:{https.port}", https),
        }
    finally:
        grpcs.close()
        https.close()


@pytest.fixture(scope="module")
def digit_files(tiny_mnist_repo, tmp_path_factory) -> list[Path]:
    """Real test digits as PNG files, as a user holds them."""
    folder = tmp_path_factory.mktemp("digit_files")
    paths = []
    for i, digit in enumerate(tiny_mnist_repo.test_images_u8[:5]):
        path = folder / f"digit{i}.png"
        Image.fromarray(digit, mode="L").save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_cli_predict_over_tls_with_ca_cert(
    transport, tls_targets, certs, digit_files, tiny_mnist_repo, capsys
):
    target, proxy = tls_targets[transport]
    before = proxy.handshakes
    files = [str(p) for p in digit_files]
    args = ["predict", "--target", target, "--ca-cert", str(certs["cert"]), "--json", *files]
    assert cli.main(args) == 0, capsys.readouterr().err
    rows = json.loads(capsys.readouterr().out)
    assert [row["file"] for row in rows] == files
    assert [row["digit"] for row in rows] == tiny_mnist_repo.predictions[:5].tolist()
    assert all(0.0 < row["probability"] <= 1.0 for row in rows)
    assert proxy.handshakes > before  # the answer really came through TLS


def test_cli_ca_cert_wins_over_requests_ca_bundle(tls_targets, certs, monkeypatch, capsys):
    target, _ = tls_targets["rest"]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certs["other"]))  # a bundle without our CA
    args = ["status", "--target", target, "--ca-cert", str(certs["cert"]), "--timeout", "30"]
    assert cli.main(args) == 0, capsys.readouterr().err


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_cli_status_over_tls_with_ca_cert(transport, tls_targets, certs, capsys):
    target, _ = tls_targets[transport]
    args = ["status", "--target", target, "--ca-cert", str(certs["cert"]), "--timeout", "30"]
    assert cli.main(args) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == "mnist version 1: AVAILABLE"


@pytest.mark.parametrize("transport", ["grpc", "rest"])
@pytest.mark.parametrize("ca", ["none", "other"])
def test_cli_refuses_a_server_its_ca_did_not_sign(transport, ca, tls_targets, certs, capsys):
    """Without --ca-cert the system roots apply (they do not know a self-signed cert); with
    the wrong CA the handshake fails too. One line on stderr, exit 1, no traceback."""
    target, proxy = tls_targets[transport]
    refused_before = proxy.refused
    args = ["status", "--target", target, "--timeout", "5"]
    if ca == "other":
        args += ["--ca-cert", str(certs["other"])]
    assert cli.main(args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    # The TLS handshake itself was refused (the proxy's thread may note it a moment after the
    # client gave up, so look again for a bounded while).
    deadline = time.monotonic() + 10
    while proxy.refused == refused_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.refused > refused_before


def test_predict_digits_takes_image_files(server, digit_files, tiny_mnist_repo):
    """Paths (str or Path, a list or one) are loaded with the clients' image loader."""
    expected = tiny_mnist_repo.predictions[:5].tolist()
    with (
        GrpcClient(server.grpc_target, "mnist", timeout_s=30) as grpc_client,
        RestClient(server.rest_url, "mnist", timeout_s=30) as rest_client,
    ):
        for client in (grpc_client, rest_client):
            by_path = client.predict_digits(digit_files)
            assert by_path.classes.tolist() == expected, client.transport
            by_str = client.predict_digits([str(p) for p in digit_files])
            np.testing.assert_allclose(by_str.probabilities, by_path.probabilities, atol=1e-6)
            one = client.predict_digits(digit_files[0])
            assert one.classes.tolist() == expected[:1]
            by_array = client.predict_digits(tiny_mnist_repo.test_images[:5])
            np.testing.assert_allclose(by_path.probabilities, by_array.probabilities, atol=1e-5)
            with pytest.raises(ImageError, match=r"cannot read .*missing\.png"):
                client.predict_digits([digit_files[0].parent / "missing.png"])
