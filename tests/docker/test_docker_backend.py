"""`make serve SERVER=docker IMAGE=<the local image>` against the real engine: the same answers
as the embedded server, the container's mounts, status, idempotent serve, stop, crashes.

Every container serves a private copy of the tiny repository (a fresh repository with one
published version) from its own run dir, on ports free at run time. Tests that only look share
one container; tests that stop or break theirs start their own.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
from docker_helpers import copy_repo, grpc_predict, predict_request, rest, run_make

from serving.backends.lifecycle import UpOptions, down, port_problem, up
from serving.backends.record import RunDir
from serving.modelserver.process import free_port


def engine_network(client) -> str:
    """What the backend must pick: the bridge when the engine has one, else the host network
    (`make docker-engine` starts dockerd with --bridge=none)."""
    return "bridge" if any(n.name == "bridge" for n in client.networks.list()) else "host"


def start_serve(client, image: str, tiny, root: Path) -> dict:
    """`make serve SERVER=docker IMAGE=...` on a fresh repository in a private run dir."""
    repo = copy_repo(tiny, root / "models")
    run_dir = RunDir(root / "run")
    env = {**os.environ, "SERVING_RUN_DIR": str(run_dir.path), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MAKEFLAGS", None)
    args = [
        "serve", "SERVER=docker", f"IMAGE={image}", f"MODEL_REPO={repo}",
        f"GRPC_PORT={free_port()}", f"REST_PORT={free_port()}",
    ]  # fmt: skip
    result = run_make(env, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    record = run_dir.read_record()
    assert record is not None and record.backend == "docker"
    return {
        "repo": repo, "run_dir": run_dir, "record": record, "env": env, "args": args,
        "out": result.stdout, "client": client,
    }  # fmt: skip


def stop_serve(served: dict) -> None:
    run_make(served["env"], "stop")
    # Whatever a test did, no container of this run dir outlives it.
    label = f"mnist-serving.run-dir={served['run_dir'].path}"
    for container in served["client"].containers.list(all=True, filters={"label": label}):
        container.remove(force=True)


@pytest.fixture(scope="module")
def shared_serve(docker_client, server_image, tiny_mnist_repo, tmp_path_factory):
    """One container for the tests that only look at it (none of them changes it)."""
    served = start_serve(
        docker_client, server_image, tiny_mnist_repo, tmp_path_factory.mktemp("docker_shared")
    )
    try:
        yield served
    finally:
        stop_serve(served)


@pytest.fixture
def docker_serve(docker_client, server_image, tiny_mnist_repo, tmp_path):
    """A container of the test's own, for tests that stop or break it."""
    served = start_serve(docker_client, server_image, tiny_mnist_repo, tmp_path)
    try:
        yield served
    finally:
        stop_serve(served)


def test_docker_serves_what_the_embedded_server_serves(shared_serve, tiny_mnist_repo, tmp_path):
    record = shared_serve["record"]
    assert record.image.startswith("mnist-serving/model-server:")
    assert record.network == engine_network(shared_serve["client"])
    embedded_run = RunDir(tmp_path / "embedded-run")
    opts = UpOptions(
        repo=shared_serve["repo"], server="embedded", grpc_port=free_port(),
        rest_port=free_port(), run_dir=embedded_run, export_if_empty=False, timeout_s=120,
    )  # fmt: skip
    embedded = up(opts, say=lambda _: None)
    try:
        images = tiny_mnist_repo.test_images[:5]
        body = {"instances": images.tolist()}
        for path, payload in (
            ("/v1/models/mnist", None),
            ("/v1/models/mnist/metadata", None),
            ("/v1/models/mnist:predict", body),
            (
                "/v1/models/mnist:predict",
                {"signature_name": "predict_images", "inputs": images.tolist()},
            ),
        ):
            from_docker = rest(record.rest_url + path, payload)
            assert from_docker == rest(embedded.rest_url + path, payload), path
        classes = [
            p["classes"]
            for p in rest(record.rest_url + "/v1/models/mnist:predict", body)["predictions"]
        ]
        assert classes == tiny_mnist_repo.predictions[:5].tolist()
        request = predict_request(images)
        from_docker = grpc_predict(record.grpc_target, request)
        assert from_docker == grpc_predict(embedded.grpc_target, request)
        assert from_docker.model_spec.version.value == 1
    finally:
        down(embedded_run, say=lambda _: None)


def test_the_repository_is_read_only_and_the_config_is_at_config(shared_serve):
    record = shared_serve["record"]
    container = shared_serve["client"].containers.get(record.container_id)
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts["/models"]["Source"] == str(shared_serve["repo"])
    assert mounts["/models"]["RW"] is False
    assert mounts["/config"]["Source"] == str(shared_serve["run_dir"].config_dir)
    code, out = container.exec_run(["/bin/sh", "-c", "echo x > /models/written-from-inside"])
    assert code != 0 and b"Read-only file system" in out
    assert not (shared_serve["repo"] / "written-from-inside").exists()
    code, out = container.exec_run(["cat", "/config/models.config"])
    assert code == 0
    assert out.decode() == (shared_serve["run_dir"].config_dir / "models.config").read_text()
    assert 'base_path: "/models/mnist"' in out.decode()
    # The server was told to read exactly those files; on the host network, to listen on
    # loopback only (the image says it honours --bind_address).
    args = container.attrs["Args"]
    assert "--model_config_file=/config/models.config" in args
    if record.network == "host":
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert args[-3:] == [
            f"--port={record.grpc_port}",
            f"--rest_api_port={record.rest_port}",
            "--bind_address=127.0.0.1",
        ]


def test_make_status_reads_the_container(shared_serve):
    record = shared_serve["record"]
    result = run_make(shared_serve["env"], "status")
    assert result.returncode == 0, result.stderr
    assert (
        f"mnist: docker server (container {record.container_id[:12]}, image {record.image}, "
        f"{engine_network(shared_serve['client'])} network)" in result.stdout
    )
    assert "version 1    AVAILABLE" in result.stdout
    assert f"REST  {record.rest_url}/v1/models/mnist" in result.stdout


def test_a_second_make_serve_changes_nothing(shared_serve):
    record, client = shared_serve["record"], shared_serve["client"]
    before = shared_serve["run_dir"].record_file.read_text()
    started = client.containers.get(record.container_id).attrs["State"]["StartedAt"]
    result = run_make(shared_serve["env"], *shared_serve["args"])
    assert result.returncode == 0, result.stderr
    assert "already serving mnist (docker)" in result.stdout
    assert shared_serve["run_dir"].record_file.read_text() == before
    assert client.containers.get(record.container_id).attrs["State"]["StartedAt"] == started
    ours = client.containers.list(
        all=True, filters={"label": f"mnist-serving.run-dir={shared_serve['run_dir'].path}"}
    )
    assert [c.id for c in ours] == [record.container_id]


def test_make_stop_removes_the_container_and_frees_the_ports(docker_serve):
    import docker

    record, client = docker_serve["record"], docker_serve["client"]
    result = run_make(docker_serve["env"], "stop")
    assert result.returncode == 0, result.stderr
    assert "stopped the docker server for mnist" in result.stdout
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(record.container_id)
    assert port_problem("127.0.0.1", record.grpc_port) is None
    assert port_problem("127.0.0.1", record.rest_port) is None
    assert not docker_serve["run_dir"].record_file.exists()
    assert run_make(docker_serve["env"], "status").returncode != 0  # not serving


def test_a_crashed_container_is_detected_and_replaced(docker_serve, tiny_mnist_repo):
    import docker

    record, client, env = docker_serve["record"], docker_serve["client"], docker_serve["env"]
    client.containers.get(record.container_id).kill()  # the server dies under the record
    status = run_make(env, "status")
    assert status.returncode != 0
    assert "removing stale server record" in status.stdout
    assert f"the container {record.container_id[:12]} is exited" in status.stdout
    with pytest.raises(docker.errors.NotFound):  # removed once its log was shown
        client.containers.get(record.container_id)
    again = run_make(env, *docker_serve["args"])
    assert again.returncode == 0, again.stderr
    fresh = docker_serve["run_dir"].read_record()
    assert fresh.container_id != record.container_id
    body = {"instances": tiny_mnist_repo.test_images[:2].tolist()}
    assert len(rest(f"{fresh.rest_url}/v1/models/mnist:predict", body)["predictions"]) == 2


def test_a_container_left_by_an_interrupted_serve_is_replaced(docker_serve):
    """`serve` killed after the container started but before it wrote its record: the
    container runs and holds the ports, and nothing names it. The next serve finds it by its
    run-dir label, removes it and starts afresh."""
    import docker

    record, client, env = docker_serve["record"], docker_serve["client"], docker_serve["env"]
    docker_serve["run_dir"].record_file.unlink()
    assert client.containers.get(record.container_id).status == "running"
    again = run_make(env, *docker_serve["args"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "removing stale container mnist-serving-mnist-" in again.stdout
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(record.container_id)
    fresh = docker_serve["run_dir"].read_record()
    assert fresh.container_id != record.container_id
    assert (
        rest(f"{fresh.rest_url}/v1/models/mnist")["model_version_status"][0]["state"] == "AVAILABLE"
    )


def test_serve_output_says_where_it_listens(shared_serve):
    out = shared_serve["out"]
    record = shared_serve["record"]
    assert "starting the docker server for mnist" in out
    assert f"gRPC  {record.grpc_target}" in out
    # The local image honours --bind_address, so there is no all-interfaces warning.
    assert "listens on every interface" not in out
    recorded = json.loads(shared_serve["run_dir"].record_file.read_text())
    assert recorded["network"] == engine_network(shared_serve["client"])


def test_auto_serves_embedded_when_the_engine_answers_but_the_image_cannot_be_had(docker_client):
    from serving.backends.lifecycle import choose_backend
    from serving.backends.record import BackendError

    absent = "mnist-serving/model-server:0.0.0-absent"
    said: list[str] = []
    assert choose_backend("auto", say=said.append, image=absent).name == "embedded"
    assert said[0].startswith(f"pulling {absent} (not present locally; giving it 30 s)")
    (why,) = said[1:]
    assert why.startswith(
        f"using the embedded server: the Docker engine answers but image {absent} is not "
        "present and could not be pulled ("
    )
    assert "`make image` builds the local drop-in mnist-serving/model-server:" in why
    with pytest.raises(BackendError, match=f"^SERVER=docker but image {absent} is not present"):
        choose_backend("docker", say=lambda _: None, image=absent)
    # The local image is there, so docker is chosen for it.
    from serving.config import local_image

    assert choose_backend("auto", say=lambda _: None, image=local_image()).name == "docker"


def test_on_the_host_network_an_image_without_bind_address_is_said_to_listen_everywhere(
    docker_client, server_image, tmp_path
):
    """tensorflow/serving cannot bind one address: `serving up` says so. Checked on the plan
    (nothing starts, so nothing listens on every interface here), with a stand-in for the real
    image: the local one, relabelled as not honouring --bind_address."""
    from serving.backends.docker import DockerBackend
    from serving.backends.record import ServerRecord

    if engine_network(docker_client) != "host":
        pytest.skip("this engine has a bridge network: ports are published on the host address")
    holder = docker_client.containers.create(server_image, entrypoint=["true"])
    relabelled = f"mnist-serving/test-no-bind-address:{tmp_path.name.lower()}"
    try:
        holder.commit(
            repository=relabelled.split(":")[0], tag=relabelled.split(":")[1],
            changes=["LABEL mnist-serving.bind-address=false"],
        )  # fmt: skip
        record = ServerRecord(
            backend="docker", model_name="mnist", repo=str(tmp_path), models_root="/models",
            config_dir=str(tmp_path), host="127.0.0.1", grpc_port=18510, rest_port=18511,
        )  # fmt: skip
        run_dir = RunDir(tmp_path / "run")
        spec, notes = DockerBackend(relabelled).plan(record, run_dir)
        (note,) = notes
        assert "runs on the host network and listens on every interface" in note
        assert "(0.0.0.0:18510, 0.0.0.0:18511), not only 127.0.0.1" in note
        assert not [flag for flag in spec.command if flag.startswith("--bind_address")]
        local_spec, local_notes = DockerBackend(server_image).plan(record, run_dir)
        assert local_notes == [] and local_spec.command[-1] == "--bind_address=127.0.0.1"
    finally:
        holder.remove(force=True)
        with contextlib.suppress(Exception):
            docker_client.images.remove(relabelled, force=True)
