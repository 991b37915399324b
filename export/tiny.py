"""A tiny real model in a real repository, for tests across the project.

:func:`publish_tiny_model` trains softmax regression on a few thousand images for a couple
of seconds and publishes it through the real pipeline (with the gate's thresholds lowered),
so servers and clients can be tested against a genuine SavedModel version.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TinyModelRepo:
    repo: Path  # repository root: the model lives in repo / model_name / str(version)
    model_name: str
    version: int
    version_path: Path
    accuracy: float  # on the full official test set
    test_images: np.ndarray  # float32 [N, 784] in [0, 1]: the model's input contract
    test_images_u8: np.ndarray  # uint8 [N, 28, 28]: the same digits as stored
    test_labels: np.ndarray  # int64 [N]
    predictions: np.ndarray  # int64 [N]: what the published model answers for test_images


def publish_tiny_model(
    repo_root: Path,
    model_name: str = "mnist",
    seed: int = 0,
    train_limit: int = 6000,
    epochs: int = 3,
    sample: int = 64,
) -> TinyModelRepo:
    """Train + publish a tiny softmax model (about 2-4 s); returns where it is and a sample."""
    import tensorflow as tf

    from export.gate import GateConfig
    from export.mnist_data import load_mnist, to_model_input
    from export.pipeline import ExportRequest, run_export
    from export.training import TrainConfig

    request = ExportRequest(
        repo_root=Path(repo_root),
        model_name=model_name,
        train=TrainConfig(
            arch="softmax",
            epochs=epochs,
            seed=seed,
            learning_rate=1e-2,
            train_limit=train_limit,
            validate_each_epoch=False,
            progress_every=0,
        ),
        gate=GateConfig(min_accuracy=0.5, force=True),
    )
    data = load_mnist()
    outcome = run_export(request, out=io.StringIO(), data=data)
    if not outcome.published or outcome.version is None or outcome.path is None:
        raise RuntimeError(f"tiny model refused: {outcome.decision.reasons}")
    images = to_model_input(data.test_images[:sample])
    loaded = tf.saved_model.load(str(outcome.path))
    predictions = loaded.signatures["serving_default"](images=tf.constant(images))["classes"]
    return TinyModelRepo(
        repo=Path(repo_root),
        model_name=model_name,
        version=outcome.version,
        version_path=outcome.path,
        accuracy=outcome.accuracy,
        test_images=images,
        test_images_u8=data.test_images[:sample].copy(),
        test_labels=data.test_labels[:sample].astype(np.int64),
        predictions=predictions.numpy().astype(np.int64),
    )
