"""The docker backend's container spec and its answers when no engine answers (the SDK is
pointed at a dead socket). Runs against a real engine live in tests/docker/."""

from __future__ import annotations

import json

import pytest

from serving.backends.docker import (
    NETWORK_BRIDGE,
    NETWORK_HOST,
    RUN_DIR_LABEL,
    container_spec,
    engine_problem,
)
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
    from docker.models.containers import (
        RUN_CREATE_KWARGS,
        RUN_HOST_CONFIG_KWARGS,
        _create_container_args,
    )

    record = record_for(tmp_path)
    for network in (NETWORK_BRIDGE, NETWORK_HOST):
        kwargs = container_spec(record, network=network).run_kwargs()
        assert kwargs.pop("detach") is True  # run()'s own argument, not the container's
        json.dumps(kwargs)  # plain data: nothing engine-specific hides in it
        # The SDK's own tables of what `containers.run` passes on to create / host config,
        # plus the two it splits over both (ports, volumes).
        assert set(kwargs) <= set(RUN_CREATE_KWARGS) | set(RUN_HOST_CONFIG_KWARGS) | {
            "ports",
            "volumes",
        }
        # What ContainerCollection.create does next (the API version is the client's); it
        # raises TypeError on a keyword the SDK does not know.
        created = _create_container_args({**kwargs, "version": "1.41"})
        host_config = created["host_config"]
        assert created["image"] == TF_SERVING_IMAGE
        assert f"{record.repo}:/models:ro" in host_config["Binds"]
        assert f"{record.config_dir}:{CONTAINER_CONFIG_DIR}:ro" in host_config["Binds"]
        if network == NETWORK_HOST:
            assert host_config["NetworkMode"] == "host"
            assert "PortBindings" not in host_config
        else:
            assert host_config["PortBindings"] == {
                "8500/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18500"}],
                "8501/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18501"}],
            }


def test_host_network_sets_the_ports_by_flag_and_publishes_none(tmp_path):
    record = record_for(tmp_path, grpc_port=18600, rest_port=18601)
    spec = container_spec(record, network=NETWORK_HOST)
    kwargs = spec.run_kwargs()
    assert kwargs["network_mode"] == "host" and "ports" not in kwargs
    # After the entrypoint's --port=8500 --rest_api_port=8501: the later flag wins.
    assert spec.command == [
        *server_flags(CONTAINER_CONFIG_DIR),
        "--port=18600",
        "--rest_api_port=18601",
    ]
    # tensorflow/serving has no --bind_address; only an image that says it honours it gets it.
    bound = container_spec(record, network=NETWORK_HOST, bind_address_flag=True).command
    assert bound[-1] == "--bind_address=127.0.0.1"
    # With a bridge, the container keeps 8500/8501 and the engine publishes them on the host.
    bridged = container_spec(record, network=NETWORK_BRIDGE, bind_address_flag=True)
    assert "network_mode" not in bridged.run_kwargs()
    assert bridged.command == server_flags(CONTAINER_CONFIG_DIR)


def test_container_names_differ_per_run_dir_and_carry_it_as_a_label(tmp_path):
    record = record_for(tmp_path)
    one, two = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    spec = container_spec(record, run_dir=one)
    assert spec.name != container_spec(record, run_dir=two).name
    assert spec.name.startswith("mnist-serving-mnist-")
    assert spec.labels[RUN_DIR_LABEL] == str(one.path)


@pytest.fixture
def no_engine(monkeypatch, tmp_path):
    """Point the SDK at a socket nobody listens on, whatever runs on this machine."""
    dead = tmp_path / "no-engine.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{dead}")
    return dead


def test_missing_engine_is_reported_with_a_reason(no_engine):
    problem = engine_problem(timeout_s=1.0)
    assert problem is not None
    assert problem.startswith("no Docker engine reachable (DockerException: ")
    assert "Error while fetching server API version" in problem
    assert "No such file or directory" in problem


def test_auto_falls_back_to_embedded_and_docker_says_why(no_engine):
    from serving.backends.lifecycle import choose_backend
    from serving.backends.record import BackendError

    problem = engine_problem(timeout_s=1.0)
    said: list[str] = []
    assert choose_backend("auto", say=said.append).name == "embedded"
    assert said == [f"using the embedded server: {problem}"]
    with pytest.raises(BackendError, match="^SERVER=docker but no Docker engine reachable"):
        choose_backend("docker")


def test_a_docker_record_without_an_engine_is_an_error_not_stale(no_engine, tmp_path):
    """Forgetting a container we cannot check would leave it running unmanaged."""
    from serving.backends.lifecycle import running_record
    from serving.backends.record import BackendError

    run_dir = RunDir(tmp_path / "run")
    record = record_for(tmp_path)
    record.container_id = "0123456789ab"
    run_dir.write_record(record)
    with pytest.raises(BackendError, match="docker backend unavailable: no Docker engine"):
        running_record(run_dir, say=lambda _: None)
    assert run_dir.record_file.exists()
