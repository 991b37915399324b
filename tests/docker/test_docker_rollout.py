"""Rollout against the local image in a container, driven by make, under client load.

gRPC and REST clients predict for the whole story: `make pin`, `make export` (a real,
short training run publishing version 2), `make canary VERSION=2`, `make promote`,
`make rollback`. Not one request may fail. A version that cannot load is refused with the
container's own log in the error, and the stable version keeps serving.
"""

from __future__ import annotations

import re

import pytest
from docker_helpers import ClientLoad, copy_repo, publish_copy, rest, run_make

from serving.modelserver.process import free_port


@pytest.fixture
def served(docker_client, server_image, tiny_mnist_repo, tmp_path, make_env):
    repo = copy_repo(tiny_mnist_repo, tmp_path / "models")
    args = [
        "serve", "SERVER=docker", f"IMAGE={server_image}", f"MODEL_REPO={repo}",
        f"GRPC_PORT={free_port()}", f"REST_PORT={free_port()}",
    ]  # fmt: skip
    result = run_make(make_env, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    from serving.backends.record import RunDir

    record = RunDir(tmp_path / "run").read_record()
    try:
        yield {"repo": repo, "env": make_env, "record": record}
    finally:
        run_make(make_env, "stop")


def available(record) -> set[int]:
    status = rest(f"{record.rest_url}/v1/models/mnist")["model_version_status"]
    return {int(s["version"]) for s in status if s["state"] == "AVAILABLE"}


def test_pin_export_canary_promote_rollback_under_load(served, tiny_mnist_repo):
    record, env, repo = served["record"], served["env"], served["repo"]
    model = f"MODEL_REPO={repo}"
    load = ClientLoad(record.grpc_target, record.rest_url, tiny_mnist_repo.test_images[:8])
    load.start()
    steps = [
        ("pin", [model]),
        # A real training run, gated and published as version 2 while the server serves 1.
        ("export", [model, "ARCH=softmax", "EPOCHS=1", "EXPORT_ARGS=--min-accuracy 0.5"]),
        ("canary", [model, "VERSION=2"]),
        ("promote", [model]),
        ("rollback", [model]),
    ]
    outputs = {}
    try:
        for target, args in steps:
            result = run_make(env, target, *args)
            outputs[target] = result.stdout
            assert result.returncode == 0, f"make {target}:\n{result.stdout}\n{result.stderr}"
    finally:
        total = load.finish()
    assert load.failures == [], load.failures[:5]
    assert total > 50  # the load really ran through the story
    served_versions = set().union(*load.versions[: load.grpc_threads])
    assert served_versions <= {1, 2} and 1 in served_versions
    assert (repo / "mnist" / "2" / "saved_model.pb").is_file()
    # After rollback to the previous stable, version 1 serves alone again.
    assert available(record) == {1}
    status = run_make(env, "status").stdout
    assert re.search(r"version 1 +AVAILABLE +labels: (canary, )?stable\b", status), status


def test_a_version_that_fails_to_load_shows_the_container_log(served, tiny_mnist_repo):
    record, env, repo = served["record"], served["env"], served["repo"]
    assert run_make(env, "pin", f"MODEL_REPO={repo}").returncode == 0
    broken = publish_copy(repo)
    # Published, then damaged on disk: TF cannot parse the graph.
    (repo / "mnist" / str(broken) / "saved_model.pb").write_bytes(b"not a SavedModel")
    # TF Serving retries a failed load (5 times, a minute apart); the step gives up sooner.
    result = run_make(
        env, "canary", f"VERSION={broken}", f"MODEL_REPO={repo}", "ROLLOUT_TIMEOUT=20"
    )
    assert result.returncode != 0
    err = result.stderr
    assert f"version(s) [{broken}] of mnist did not become AVAILABLE within 20 s" in err, err
    assert "the previous config was restored" in err, err
    # The container's own log: the server's words on the failed load.
    assert "the server's log ends:" in err, err
    log = err.split("the server's log ends:", 1)[1]
    assert f"Loading servable: {{name: mnist version: {broken}}} failed" in log, log
    # Stable still answers, and the broken version is not served.
    body = {"instances": tiny_mnist_repo.test_images[:2].tolist()}
    url = f"{record.rest_url}/v1/models/mnist/labels/stable:predict"
    assert len(rest(url, body)["predictions"]) == 2
    assert available(record) == {1}
