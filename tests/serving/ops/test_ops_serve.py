"""`python -m serving up|status|down` with the embedded backend, cold from a labelled config.

The repository already has a rollout state (stable 1, canary 2), so the server's very first
config names labels: TF Serving needs --allow_version_labels_for_unavailable_models for that,
and every backend passes it.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_helpers import Predictor, copy_repo, predict_request, publish_copy, write_state

from serving.backends.record import RunDir
from serving.cli import EXIT_NOT_SERVING, main
from serving.modelserver.process import free_port

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def labelled_server(tiny_mnist_repo, root: Path) -> Iterator[dict]:
    """`up` from a repository with versions 1 and 2 and the rollout state stable 1, canary 2;
    `down` when the block ends (a no-op if the test stopped the server itself)."""
    repo = copy_repo(tiny_mnist_repo, root / "models")
    assert publish_copy(repo) == 2
    write_state(repo, stable=1, canary=2)
    run_dir = RunDir(root / "run")
    grpc_port, rest_port = free_port(), free_port()
    argv = ["--run-dir", str(run_dir.path)]
    code = main(
        ["up", *argv, "--repo", str(repo), "--server", "embedded", "--no-export",
         "--grpc-port", str(grpc_port), "--rest-port", str(rest_port), "--timeout", "120"]
    )  # fmt: skip
    try:
        assert code == 0
        record = run_dir.read_record()
        assert record is not None
        yield {"repo": repo, "run_dir": run_dir, "record": record, "argv": argv}
    finally:
        main(["down", *argv])


@pytest.fixture(scope="module")
def served(tiny_mnist_repo, tmp_path_factory):
    """Shared by the tests that leave the server as they found it (they only read, or are
    refused); a test that stops or changes the server gets its own (own_server)."""
    with labelled_server(tiny_mnist_repo, tmp_path_factory.mktemp("ops_serve")) as server:
        yield server


@pytest.fixture
def own_server(tiny_mnist_repo, tmp_path):
    with labelled_server(tiny_mnist_repo, tmp_path) as server:
        yield server


def test_cold_start_from_a_labelled_config(served, tiny_mnist_repo):
    config = (served["run_dir"].config_dir / "models.config").read_text()
    assert 'version_labels { key: "stable" value: 1 }' in config
    assert f'base_path: "{served["repo"]}/mnist"' in config
    predictor = Predictor(served["record"].grpc_target)
    try:
        images = tiny_mnist_repo.test_images[:4]
        assert predictor.version_for(predict_request(images, label="stable")) == 1
        assert predictor.version_for(predict_request(images, label="canary")) == 2
    finally:
        predictor.close()


def test_rest_predict_on_the_printed_endpoint(served, tiny_mnist_repo):
    record = served["record"]
    body = json.dumps({"instances": tiny_mnist_repo.test_images[:3].tolist()}).encode()
    url = f"{record.rest_url}/v1/models/mnist/labels/stable:predict"
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as response:
        predictions = json.loads(response.read())["predictions"]
    assert [p["classes"] for p in predictions] == tiny_mnist_repo.predictions[:3].tolist()


def test_status_and_a_second_up_say_what_serves(served, capsys):
    argv = served["argv"]
    capsys.readouterr()
    assert main(["status", *argv]) == 0
    out = capsys.readouterr().out
    assert "version policy 'specific'" in out
    assert "version 1    AVAILABLE   labels: stable" in out
    assert "version 2    AVAILABLE   labels: canary" in out
    before = served["run_dir"].record_file.read_text()
    assert main(["up", *argv, "--repo", str(served["repo"]), "--server", "embedded"]) == 0
    assert "already serving mnist (embedded)" in capsys.readouterr().out
    assert served["run_dir"].record_file.read_text() == before


def test_ports_of_a_running_server_are_refused(served, tmp_path, capsys):
    other_run_dir = tmp_path / "other-run"
    record = served["record"]
    code = main(
        ["up", "--run-dir", str(other_run_dir), "--repo", str(served["repo"]),
         "--server", "embedded", "--grpc-port", str(record.grpc_port),
         "--rest-port", str(free_port())]
    )  # fmt: skip
    assert code == 1
    assert f"port {record.grpc_port} on 127.0.0.1 is in use" in capsys.readouterr().err
    assert main(["status", *served["argv"]]) == 0  # the running one is untouched


def test_down_stops_and_status_says_so(own_server, capsys):
    argv = own_server["argv"]
    pid = own_server["record"].pid
    assert main(["status", *argv]) == 0
    capsys.readouterr()
    assert main(["down", *argv]) == 0
    assert "stopped the embedded server" in capsys.readouterr().out
    assert main(["status", *argv]) == EXIT_NOT_SERVING
    assert not own_server["run_dir"].pid_file.exists()
    assert not own_server["run_dir"].record_file.exists()
    from serving.backends.embedded import pid_state

    assert pid_state(pid) != "running"
