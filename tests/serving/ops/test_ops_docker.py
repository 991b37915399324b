"""The docker backend's container spec (no engine needed) and a real run when one answers."""

from __future__ import annotations

import json
import shutil
import urllib.request

import pytest

from serving.backends.docker import container_spec, engine_problem
from serving.backends.record import RunDir, ServerRecord
from serving.config import (
    CONTAINER_CONFIG_DIR,
    TF_SERVING_IMAGE,
    render_model_config,
    server_flags,
    write_config_dir,
)


def record_for(tmp_path, grpc_port=18500, rest_port=18501) -> ServerRecord:
    repo = tmp_path / "models"
    repo.mkdir(exist_ok=True)
    config_dir = write_config_dir(tmp_path / "run" / "config", render_model_config("/models", None))
    return ServerRecord(
        backend="docker",
        model_name="mnist",
        repo=str(repo),
        models_root="/models",
        config_dir=str(config_dir),
        host="127.0.0.1",
        grpc_port=grpc_port,
        rest_port=rest_port,
    )


def test_container_spec_mounts_the_repository_read_only_and_the_same_config(tmp_path):
    record = record_for(tmp_path)
    spec = container_spec(record)
    assert spec.image == TF_SERVING_IMAGE
    assert spec.volumes[record.repo] == {"bind": "/models", "mode": "ro"}
    assert spec.volumes[record.config_dir] == {"bind": CONTAINER_CONFIG_DIR, "mode": "ro"}
    assert spec.ports == {"8500/tcp": ("127.0.0.1", 18500), "8501/tcp": ("127.0.0.1", 18501)}
    # Same flags as every backend, pointing at the mounted config dir.
    assert spec.command == server_flags(CONTAINER_CONFIG_DIR)
    mounted = {flag.split("=", 1)[1] for flag in spec.command if flag.endswith(".config")}
    for path in mounted:
        assert path.startswith(CONTAINER_CONFIG_DIR + "/")
        assert (tmp_path / "run" / "config" / path.rsplit("/", 1)[1]).is_file()
    # The config it reads names the container's view of the repository.
    text = (tmp_path / "run" / "config" / "models.config").read_text()
    assert 'base_path: "/models/mnist"' in text


def test_run_kwargs_are_what_the_sdk_takes(tmp_path):
    kwargs = container_spec(record_for(tmp_path)).run_kwargs()
    assert kwargs["detach"] is True
    assert set(kwargs) == {
        "image", "name", "command", "ports", "volumes", "environment", "labels", "detach",
    }  # fmt: skip
    json.dumps(kwargs)  # plain data: nothing engine-specific hides in it


def test_missing_engine_is_reported_with_a_reason():
    problem = engine_problem(timeout_s=1.0)
    if problem is None:
        pytest.skip("a Docker engine answers here; nothing to report")
    assert "Docker engine" in problem or "docker" in problem


@pytest.mark.docker
@pytest.mark.slow
def test_tensorflow_serving_container_serves_the_repository(request, tmp_path, unused_port):
    problem = engine_problem()
    if problem:
        pytest.skip(f"docker backend not testable: {problem}")
    from serving.backends.lifecycle import UpOptions, down, up
    from serving.modelserver.process import free_port as pick

    tiny_mnist_repo = request.getfixturevalue("tiny_mnist_repo")  # only once an engine answers
    repo = tmp_path / "repo"
    shutil.copytree(tiny_mnist_repo.repo, repo)
    run_dir = RunDir(tmp_path / "run")
    opts = UpOptions(
        repo=repo, server="docker", grpc_port=unused_port, rest_port=pick(), run_dir=run_dir,
        export_if_empty=False,
    )  # fmt: skip
    record = up(opts, say=lambda _: None)
    try:
        body = json.dumps({"instances": tiny_mnist_repo.test_images[:2].tolist()}).encode()
        url = f"{record.rest_url}/v1/models/mnist:predict"
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as r:
            assert len(json.loads(r.read())["predictions"]) == 2
    finally:
        down(run_dir, say=lambda _: None)


def test_auto_falls_back_to_embedded_and_docker_says_why():
    from serving.backends.lifecycle import choose_backend
    from serving.backends.record import BackendError

    problem = engine_problem(timeout_s=1.0)
    if problem is None:
        assert choose_backend("auto", say=lambda _: None).name == "docker"
        return
    said: list[str] = []
    assert choose_backend("auto", say=said.append).name == "embedded"
    assert said == [f"using the embedded server: {problem}"]
    with pytest.raises(BackendError, match="SERVER=docker but no Docker engine reachable"):
        choose_backend("docker")


def test_a_docker_record_without_an_engine_is_an_error_not_stale(tmp_path):
    """Forgetting a container we cannot check would leave it running unmanaged."""
    from serving.backends.lifecycle import running_record
    from serving.backends.record import BackendError

    if engine_problem(timeout_s=1.0) is None:
        pytest.skip("a Docker engine answers here")
    run_dir = RunDir(tmp_path / "run")
    record = record_for(tmp_path)
    record.container_id = "0123456789ab"
    run_dir.write_record(record)
    with pytest.raises(BackendError, match="docker backend unavailable"):
        running_record(run_dir, say=lambda _: None)
    assert run_dir.record_file.exists()
