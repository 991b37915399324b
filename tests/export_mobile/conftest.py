"""Fixtures for the mobile export tests: real SavedModels, tiny enough to build in seconds.

Models are built in mobile_models.py into a private repository, so these tests never write
beside anybody else's versions; the project's own tiny model (``tiny_mnist_repo``) is copied
there too, to check that what the export pipeline publishes converts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mobile_models import (
    SourceModel,
    keras_tracked_module,
    own_tiny_model,
    save_module,
    weights_module,
)


@pytest.fixture(scope="session")
def mobile_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mobile_repo")


@pytest.fixture(scope="session")
def good_model(mobile_repo: Path) -> SourceModel:
    """A weights-only softmax trained briefly on real digits, at ``<mobile_repo>/mnist/1/``."""
    return own_tiny_model(mobile_repo)


@pytest.fixture(scope="session")
def project_model(tiny_mnist_repo, tmp_path_factory: pytest.TempPathFactory) -> SourceModel:
    """The project's tiny model, published by the real export pipeline, copied into a
    private repository (the shared one is read-only)."""
    repo = tmp_path_factory.mktemp("mobile_project_repo")
    shutil.copytree(
        tiny_mnist_repo.version_path,
        repo / tiny_mnist_repo.model_name / str(tiny_mnist_repo.version),
    )
    return SourceModel(repo, tiny_mnist_repo.model_name, tiny_mnist_repo.version)


@pytest.fixture(scope="session")
def broken_models(mobile_repo: Path) -> dict[str, SourceModel]:
    """name -> version 1 of a model that must be refused."""
    builders = {
        "keras_tracked": keras_tracked_module,  # TFLite NaN, SavedModel fine
        "nan_source": lambda: weights_module(nan=True),  # the SavedModel itself gives NaN
        "wrong_shape": lambda: weights_module(output_width=5),  # scores [-1, 5]
    }
    models = {}
    for name, build in builders.items():
        save_module(build(), mobile_repo / name / "1")
        models[name] = SourceModel(mobile_repo, name, 1)
    return models
