"""Fixtures for the tests against a real Docker engine (marker ``docker``).

They run where an engine answers (``make docker-engine`` starts one as root; ``.ci/run`` does)
and skip with the reason only where none does. The image under test is the project's own
``mnist-serving/model-server:<version>`` (``make image``): no image can be pulled here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from serving.backends.docker import engine_problem
from serving.config import local_image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from docker_helpers import ROOT  # noqa: E402

PROBLEM_NOTE = ROOT / ".run" / "docker-engine.problem"


def pytest_collection_modifyitems(items):
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().parent == here:
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def docker_client():
    problem = engine_problem()
    if problem:
        why = f" ({PROBLEM_NOTE.read_text().strip()})" if PROBLEM_NOTE.is_file() else ""
        pytest.skip(f"no Docker engine to test against: {problem}{why}")
    import docker

    client = docker.from_env(timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def server_image(docker_client) -> str:
    """The local drop-in image; an engine without it is a setup error, not a skip."""
    import docker

    tag = local_image()
    try:
        docker_client.images.get(tag)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{tag} is not in the engine: build it with `make image` (.ci/run does)")
    return tag


@pytest.fixture
def make_env(tmp_path):
    """Environment for `make` targets that drive the backend in a private run dir."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "SERVING_RUN_DIR": str(run_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MAKEFLAGS", None)
    return env
