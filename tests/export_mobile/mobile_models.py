"""Tiny SavedModels for the mobile export tests, each the smallest graph that shows one case."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE = 500  # parity "on a sample": the first 500 official test images


@dataclass(frozen=True)
class SourceModel:
    repo: Path
    model_name: str
    version: int

    @property
    def version_path(self) -> Path:
        return self.repo / self.model_name / str(self.version)


def save_module(module, path: Path) -> None:
    import tensorflow as tf

    tf.saved_model.save(module, str(path), signatures={"predict_images": module.predict_images})


def weights_module(output_width: int = 10, nan: bool = False):
    """A weights-only tf.Module (the findings' pattern): softmax over x @ w + b."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    module = tf.Module()
    module.w = tf.Variable(rng.normal(0, 0.05, (784, output_width)).astype(np.float32))
    module.b = tf.Variable(np.zeros(output_width, np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="images")])
    def predict_images(images):
        scores = tf.nn.softmax(tf.matmul(images, module.w) + module.b)
        if nan:
            scores = scores * tf.constant(float("nan"))
        return {"scores": scores}

    module.predict_images = predict_images
    return module


def keras_tracked_module():
    """The pitfall from the findings: a module that tracks the Keras model itself after
    ``fit`` (so the Adam slots are saved too). TF runs it fine; the TFLite converter turns it
    into a model whose every score is NaN, without an error."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((784,), name="images")
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(inputs))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(
        rng.random((64, 784), np.float32),
        rng.integers(0, 10, 64),
        epochs=1,
        batch_size=32,
        verbose=0,
    )
    module = tf.Module()
    module.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="images")])
    def predict_images(images):
        return {"scores": model(images)}

    module.predict_images = predict_images
    return module


def own_tiny_model(repo: Path) -> SourceModel:
    """Softmax trained for 100 SGD steps on 5,000 real digits (about 89% accuracy)."""
    import tensorflow as tf

    from export.mnist_data import load_mnist, to_model_input

    data = load_mnist()
    images = to_model_input(data.train_images[:5000])
    labels = data.train_labels[:5000].astype(np.int64)
    module = weights_module()
    module.w.assign(tf.zeros_like(module.w))
    rng = np.random.default_rng(0)
    for _ in range(100):
        idx = rng.integers(0, len(labels), 100)
        with tf.GradientTape() as tape:
            scores = module.predict_images(images[idx])["scores"]
            loss = tf.reduce_mean(
                tf.keras.losses.sparse_categorical_crossentropy(labels[idx], scores)
            )
        for var, grad in zip(
            (module.w, module.b), tape.gradient(loss, [module.w, module.b]), strict=True
        ):
            var.assign_sub(0.5 * grad)
    save_module(module, repo / "mnist" / "1")
    return SourceModel(repo, "mnist", 1)
