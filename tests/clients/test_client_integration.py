"""Both clients and the CLI against the real embedded model server and a real tiny MNIST model.

One server per module, serving the session's tiny published model as versions 1 and 2 (the
same SavedModel copied, so the answers agree and the versions are addressable) with the labels
stable -> 1 and canary -> 2.
"""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

from clients import (
    NO_RETRY,
    DeadlineExceeded,
    GrpcClient,
    InvalidInput,
    ModelNotFound,
    RestClient,
    RetryPolicy,
    cli,
    images,
)

pytestmark = pytest.mark.slow

CONFIG = """model_config_list {{
  config {{
    name: "mnist"
    base_path: "{base}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
}}
"""


@pytest.fixture(scope="module")
def model_repo(tiny_mnist_repo, tmp_path_factory):
    root = tmp_path_factory.mktemp("client_repo")
    base = root / "mnist"
    shutil.copytree(tiny_mnist_repo.version_path, base / "1")
    shutil.copytree(tiny_mnist_repo.version_path, base / "2")
    config = root / "models.config"
    config.write_text(CONFIG.format(base=base))
    return config


def _server(config, **ports):
    from serving.modelserver.process import EmbeddedServerProcess

    # Labels in the first config name versions that are still loading: TF Serving needs this
    # flag for that too (spec 6.2).
    args = [f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models"]
    return EmbeddedServerProcess(args=args, **ports)


@pytest.fixture(scope="module")
def server(model_repo):
    srv = _server(model_repo).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def grpc_client(server):
    with GrpcClient(server.grpc_target, "mnist", timeout_s=30) as c:
        yield c


@pytest.fixture(scope="module")
def rest_client(server):
    with RestClient(server.rest_url, "mnist", timeout_s=30) as c:
        yield c


@pytest.fixture(scope="module")
def rest_columnar(server):
    with RestClient(server.rest_url, "mnist", timeout_s=30, columnar=True) as c:
        yield c


@pytest.fixture(params=["grpc", "rest", "rest_columnar"])
def client(request, grpc_client, rest_client, rest_columnar):
    return {"grpc": grpc_client, "rest": rest_client, "rest_columnar": rest_columnar}[request.param]


def test_both_transports_give_the_same_answers(tiny_mnist_repo, grpc_client, rest_client,
                                               rest_columnar):  # fmt: skip
    batch = tiny_mnist_repo.test_images[:32]
    answers = [c.predict_digits(batch) for c in (grpc_client, rest_client, rest_columnar)]
    for answer in answers:
        assert answer.classes.tolist() == tiny_mnist_repo.predictions[:32].tolist()
        np.testing.assert_allclose(answer.probabilities, answers[0].probabilities, atol=1e-6)
    accuracy = float((answers[0].classes == tiny_mnist_repo.test_labels[:32]).mean())
    assert accuracy >= 0.75, accuracy  # a real model: most real test digits are right
    assert answers[0].version == 2  # latest of the served versions (gRPC reports it)


def test_raw_predict_named_and_typed_outputs(tiny_mnist_repo, client):
    batch = tiny_mnist_repo.test_images[:5]
    result = client.predict({"images": batch}, version=1)
    assert result["scores"].dtype == np.float32 and result["scores"].shape == (5, 10)
    assert result["classes"].dtype == np.int64
    assert result["classes"].tolist() == tiny_mnist_repo.predictions[:5].tolist()
    only = client.predict(batch, signature="predict_images", output_filter=["scores"])
    assert list(only.outputs) == ["scores"]
    np.testing.assert_allclose(only["scores"], result["scores"], atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,version", [({}, 2), ({"version": 1}, 1), ({"label": "stable"}, 1),
                       ({"label": "canary"}, 2)]
)  # fmt: skip
def test_versions_and_labels(tiny_mnist_repo, client, kwargs, version):
    answer = client.predict_digits(tiny_mnist_repo.test_images[:4], **kwargs)
    assert answer.classes.tolist() == tiny_mnist_repo.predictions[:4].tolist()
    if client.transport == "grpc":
        assert answer.version == version


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"model": "nope"}, "nope"),
        ({"version": 9}, "9"),
        ({"label": "beta"}, "beta"),
    ],
)
def test_missing_models_versions_labels(tiny_mnist_repo, client, kwargs, message):
    with pytest.raises(ModelNotFound) as info:
        client.predict({"images": tiny_mnist_repo.test_images[:1]}, **kwargs)
    assert message in info.value.message


def test_bad_input_is_invalid_input_with_the_servers_message(client):
    with pytest.raises(InvalidInput) as info:
        client.predict({"pixels": np.zeros((1, 784), np.float32)}, signature="predict_images")
    assert info.value.message  # the server's own words
    with pytest.raises(InvalidInput) as info:
        client.predict({"images": np.zeros((1, 784), np.float32)}, signature="no_such_signature")
    assert '"no_such_signature" not found' in info.value.message  # the server's own words


def test_status_and_metadata_agree(grpc_client, rest_client):
    statuses = grpc_client.model_status()
    assert statuses == rest_client.model_status()
    assert [(s.version, s.state) for s in statuses] == [(2, "AVAILABLE"), (1, "AVAILABLE")]
    assert [s.version for s in rest_client.model_status(version=1)] == [1]
    meta = grpc_client.model_metadata(version=1)
    assert meta == rest_client.model_metadata(version=1)
    sig = meta.signatures["serving_default"]
    assert sig.inputs["images"].dtype == "DT_FLOAT" and sig.inputs["images"].shape == (-1, 784)
    assert set(meta.signatures) >= {"serving_default", "predict_images", "classify", "predict_png"}


def test_classify_through_both_transports(tiny_mnist_repo, grpc_client, rest_client):
    examples = [{"images": img} for img in tiny_mnist_repo.test_images[:3]]
    by_grpc = grpc_client.classify(examples, signature="classify")
    by_rest = rest_client.classify(examples, signature="classify")
    assert [[label for label, _ in row] for row in by_grpc] == [
        [label for label, _ in row] for row in by_rest
    ]
    for row_g, row_r, predicted in zip(by_grpc, by_rest, tiny_mnist_repo.predictions[:3],
                                       strict=True):  # fmt: skip
        np.testing.assert_allclose([s for _, s in row_g], [s for _, s in row_r], atol=1e-6)
        best = max(row_g, key=lambda pair: pair[1])[0]
        assert best == str(predicted)


def test_png_same_digit_through_model_signature_and_image_loader(tiny_mnist_repo, client):
    pngs = [images.to_png(d) for d in tiny_mnist_repo.test_images_u8[:6].astype(np.float32) / 255]
    by_model = client.predict(
        {"image_bytes": np.array(pngs, dtype=object)}, signature="predict_png"
    )
    by_loader = client.predict_digits(images.load_images(pngs))
    assert by_model["classes"].tolist() == by_loader.classes.tolist()
    assert by_loader.classes.tolist() == tiny_mnist_repo.predictions[:6].tolist()
    np.testing.assert_allclose(by_model["scores"], by_loader.probabilities, atol=1e-5)


def test_deadline_exceeded(client, tiny_mnist_repo):
    big = np.tile(tiny_mnist_repo.test_images, (16, 1))  # 1,024 images
    client.model_status()  # a warm connection, so the deadline hits the predict itself
    with pytest.raises(DeadlineExceeded):
        client.predict({"images": big}, timeout_s=0.001)
    assert client.predict_digits(big[:2]).classes.shape == (2,)  # still usable afterwards


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_cli_classifies_real_mnist_digits(tiny_mnist_repo, server, tmp_path, transport, capsys):
    paths = []
    for i, digit in enumerate(tiny_mnist_repo.test_images_u8[:8]):
        path = tmp_path / f"test{i}.png"
        path.write_bytes(images.to_png(digit.astype(np.float32) / 255))
        paths.append(str(path))
    target = f"grpc://{server.grpc_target}" if transport == "grpc" else server.rest_url
    assert cli.main(["predict", "--target", target, "--model", "mnist", "--json", *paths]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["digit"] for r in rows] == tiny_mnist_repo.predictions[:8].tolist()
    assert cli.main(["predict", "--target", target, "--label", "stable", paths[0]]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{paths[0]}: {tiny_mnist_repo.predictions[0]} (p=")
    assert cli.main(["status", "--target", target]) == 0
    assert "mnist version 2: AVAILABLE" in capsys.readouterr().out


def test_reload_config_moves_a_label(model_repo, grpc_client, tiny_mnist_repo):
    swapped = (
        model_repo.read_text()
        .replace("value: 1 }", "value: 9 }")
        .replace('"canary" value: 2', '"canary" value: 1')
        .replace('"stable" value: 9', '"stable" value: 2')
    )
    try:
        grpc_client.reload_config(swapped)
        answer = grpc_client.predict_digits(tiny_mnist_repo.test_images[:1], label="stable")
        assert answer.version == 2
    finally:
        grpc_client.reload_config(model_repo.read_text())
    assert grpc_client.predict_digits(tiny_mnist_repo.test_images[:1], label="stable").version == 1


def test_retries_reach_a_server_that_comes_up_late(model_repo, tiny_mnist_repo):
    from serving.modelserver.process import free_port

    grpc_port, rest_port = free_port(), free_port()
    while rest_port == grpc_port:
        rest_port = free_port()
    retry = RetryPolicy(max_attempts=1000, initial_backoff_s=0.05, max_backoff_s=0.5)
    clients = [
        GrpcClient(f"127.0.0.1:{grpc_port}", "mnist", retry=retry, timeout_s=120),
        RestClient(f"http://127.0.0.1:{rest_port}", "mnist", retry=retry, timeout_s=120),
    ]
    # Nothing listens yet: without retries, both fail at once as Unavailable.
    for c in (GrpcClient(f"127.0.0.1:{grpc_port}", "mnist", retry=NO_RETRY),
              RestClient(f"http://127.0.0.1:{rest_port}", "mnist", retry=NO_RETRY)):  # fmt: skip
        with c, pytest.raises(Exception) as info:
            c.model_status()
        assert type(info.value).__name__ == "Unavailable"
    results: dict[str, object] = {}

    def call(c):
        try:
            results[c.transport] = c.predict_digits(tiny_mnist_repo.test_images[:3]).classes
        except Exception as exc:  # surfaced by the assertion below
            results[c.transport] = exc

    threads = [threading.Thread(target=call, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    srv = _server(model_repo, grpc_port=grpc_port, rest_port=rest_port)
    try:
        srv.start()  # while the clients are already retrying
        for t in threads:
            t.join(timeout=150)
    finally:
        srv.stop()
        for c in clients:
            c.close()
    for transport in ("grpc", "rest"):
        got = results.get(transport)
        assert isinstance(got, np.ndarray), (transport, got)
        assert got.tolist() == tiny_mnist_repo.predictions[:3].tolist()
