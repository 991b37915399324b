"""docker-compose (Debian's 1.29) brings up the service of docker-compose.yml with the
host-network override: the same files and flags, no bridge network created."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest
from docker_helpers import ROOT, copy_repo, grpc_predict, predict_request, rest, wait_rest

from serving.config import render_model_config, write_config_dir
from serving.modelserver.process import free_port


def compose(env: dict, project: str, *args: str) -> subprocess.CompletedProcess:
    files = [
        "-f",
        str(ROOT / "docker-compose.yml"),
        "-f",
        str(ROOT / "docker-compose.host-network.yml"),
    ]
    return subprocess.run(
        ["docker-compose", "-p", project, *files, *args],
        env=env, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
    )  # fmt: skip


def test_compose_with_the_host_network_override(
    docker_client, server_image, tiny_mnist_repo, tmp_path
):
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose)")
    repo = copy_repo(tiny_mnist_repo, tmp_path / "models")
    config_dir = write_config_dir(tmp_path / "config", render_model_config("/models", None))
    grpc_port, rest_port = free_port(), free_port()
    project = f"mnisttest{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ, "MODEL_REPO": str(repo), "SERVING_CONFIG_DIR": str(config_dir),
        "MODEL_SERVER_IMAGE": server_image, "GRPC_PORT": str(grpc_port),
        "REST_PORT": str(rest_port), "SERVER_BIND_FLAG": "--bind_address=127.0.0.1",
    }  # fmt: skip
    networks_before = {n.name for n in docker_client.networks.list()}
    up = compose(env, project, "up", "-d")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        (container,) = docker_client.containers.list(
            filters={"label": f"com.docker.compose.project={project}"}
        )
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert container.image.tags == [server_image]
        args = container.attrs["Args"]
        assert args[:3] == [
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            "--bind_address=127.0.0.1",
        ]
        assert "--model_config_file=/config/models.config" in args
        # No network of its own: compose made nothing, not even <project>_default.
        assert {n.name for n in docker_client.networks.list()} == networks_before
        status = wait_rest(f"http://127.0.0.1:{rest_port}/v1/models/mnist", timeout_s=180)
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        body = {"instances": tiny_mnist_repo.test_images[:3].tolist()}
        predictions = rest(f"http://127.0.0.1:{rest_port}/v1/models/mnist:predict", body)[
            "predictions"
        ]
        assert [p["classes"] for p in predictions] == tiny_mnist_repo.predictions[:3].tolist()
        response = grpc_predict(
            f"127.0.0.1:{grpc_port}", predict_request(tiny_mnist_repo.test_images[:3])
        )
        assert (
            list(response.outputs["classes"].int64_val) == tiny_mnist_repo.predictions[:3].tolist()
        )
    finally:
        down = compose(env, project, "down", "--timeout", "20")
    assert down.returncode == 0, down.stderr
    assert not docker_client.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={project}"}
    )
    assert {n.name for n in docker_client.networks.list()} == networks_before
