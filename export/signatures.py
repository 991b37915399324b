"""The serving graph: a float32 tf.Module over a trained model's weights, and its signatures.

| signature        | method                        | inputs                            | outputs |
| ---------------- | ----------------------------- | --------------------------------- | ------- |
| serving_default  | tensorflow/serving/predict    | images float32 [-1, 784]          | scores float32 [-1, 10], classes int64 [-1] |
| predict_images   | tensorflow/serving/predict    | images float32 [-1, 784]          | scores float32 [-1, 10] |
| classify         | tensorflow/serving/classify   | inputs string [-1] (tf.Example)   | classes string [-1, 10], scores float32 [-1, 10] |
| predict_png      | tensorflow/serving/predict    | image_bytes string [-1] PNG/JPEG  | scores float32 [-1, 10], classes int64 [-1] |

One input contract for every path: 784 floats in [0, 1], row-major 28x28, white digit on
black. The tf.Example of ``classify`` carries them as a float_list feature named ``images``;
the image-bytes path decodes to grayscale, scales to [0, 1] and resizes to 28x28.

Why a bare tf.Module: Keras 3 cannot save a TF SavedModel with custom signatures, and tracking
the Keras model itself after ``fit`` also saves the optimizer slots (3x the size) and breaks the
TFLite converter. The module tracks only the weights of a float32 copy of the model, so the
served graph computes in float32 whatever precision trained it.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from export.models import float32_copy

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"

SERVING_DEFAULT = "serving_default"
PREDICT_IMAGES = "predict_images"
CLASSIFY = "classify"
PREDICT_PNG = "predict_png"
SIGNATURE_NAMES = (SERVING_DEFAULT, PREDICT_IMAGES, CLASSIFY, PREDICT_PNG)

CLASSIFY_FEATURE_KEY = "images"  # tf.Example feature: float_list of 784 values
CLASS_LABELS = tuple(str(d) for d in range(10))  # classify's `classes` output, per row

_IMAGES_SPEC = tf.TensorSpec([None, 784], tf.float32, name="images")


def _decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """PNG/JPEG/GIF/BMP bytes -> float32 [784] in [0, 1], grayscale, 28x28."""
    image = tf.io.decode_image(image_bytes, channels=1, expand_animations=False)
    image = tf.image.convert_image_dtype(image, tf.float32)  # uint8 0..255 -> 0..1
    shape = tf.shape(image)
    image = tf.cond(
        tf.logical_and(tf.equal(shape[0], 28), tf.equal(shape[1], 28)),
        lambda: image,  # the common case stays bit-exact with the float path
        lambda: tf.clip_by_value(tf.image.resize(image, [28, 28], antialias=True), 0.0, 1.0),
    )
    return tf.reshape(image, [784])


def build_serving_module(model: keras.Model, arch: str) -> tf.Module:
    """Build the float32 serving module for a trained model (any training precision).

    Returns a ``tf.Module`` that tracks only the float32 copy's weights and carries one
    ``tf.function`` per signature: ``serving_default``, ``predict_images``, ``classify`` and
    ``predict_png`` (see the module docstring for their contracts). Save it with
    :func:`save_serving_model`; reuse ``module.predict_images`` (or
    :func:`predict_images_function`) wherever a single concrete function is needed, e.g. the
    TFLite / Core ML converters.
    """
    serving_model = float32_copy(model, arch)
    module = tf.Module(name="mnist_serving")
    # Tracked: the variables only; the Keras model is reached through the closures below.
    # Track the underlying tf.Variables, not Keras 3's wrappers: with the wrappers tracked the
    # TFLite converter drops the weights and emits a model that returns NaN, silently.
    module.model_variables = [getattr(w, "value", w) for w in serving_model.weights]
    module.arch = tf.Variable(arch, trainable=False, name="arch")

    def scores_of(images: tf.Tensor) -> tf.Tensor:
        return tf.cast(serving_model(images, training=False), tf.float32)

    @tf.function(input_signature=[_IMAGES_SPEC])
    def serving_default(images: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = scores_of(images)
        return {"scores": scores, "classes": tf.argmax(scores, axis=1, output_type=tf.int64)}

    @tf.function(input_signature=[_IMAGES_SPEC])
    def predict_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scores": scores_of(images)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        features = tf.io.parse_example(
            inputs, {CLASSIFY_FEATURE_KEY: tf.io.FixedLenFeature([784], tf.float32)}
        )
        scores = scores_of(features[CLASSIFY_FEATURE_KEY])
        labels = tf.constant([list(CLASS_LABELS)], dtype=tf.string)
        return {"classes": tf.tile(labels, [tf.shape(scores)[0], 1]), "scores": scores}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def predict_png(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        images = tf.map_fn(
            _decode_image, image_bytes, fn_output_signature=tf.TensorSpec([784], tf.float32)
        )
        scores = scores_of(images)
        return {"scores": scores, "classes": tf.argmax(scores, axis=1, output_type=tf.int64)}

    module.serving_default = serving_default
    module.predict_images = predict_images
    module.classify = classify
    module.predict_png = predict_png
    return module


def predict_images_function(module: tf.Module) -> tf.types.experimental.ConcreteFunction:
    """The concrete ``predict_images`` function (images [-1, 784] -> scores [-1, 10])."""
    return module.predict_images.get_concrete_function()


def save_serving_model(module: tf.Module, export_dir: Path) -> None:
    """Write the SavedModel with every signature, then mark ``classify`` as a classify method."""
    signatures = {name: getattr(module, name).get_concrete_function() for name in SIGNATURE_NAMES}
    tf.saved_model.save(module, str(export_dir), signatures=signatures)
    set_method_name(export_dir, CLASSIFY, CLASSIFY_METHOD)


def read_saved_model_proto(export_dir: Path) -> saved_model_pb2.SavedModel:
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(export_dir) / "saved_model.pb").read_bytes())
    return proto


def set_method_name(export_dir: Path, signature: str, method_name: str) -> None:
    """Rewrite one SignatureDef's method name in saved_model.pb.

    TF2's saver writes every signature as ``tensorflow/serving/predict``; TF Serving's Classify
    API checks for ``tensorflow/serving/classify`` when --enable_signature_method_name_check is on.
    """
    path = Path(export_dir) / "saved_model.pb"
    proto = read_saved_model_proto(export_dir)
    for meta_graph in proto.meta_graphs:
        if signature not in meta_graph.signature_def:
            raise KeyError(f"{path}: no signature {signature!r}")
        meta_graph.signature_def[signature].method_name = method_name
    tmp = path.with_suffix(".pb.tmp")
    tmp.write_bytes(proto.SerializeToString())
    tmp.replace(path)
    if signature_methods(export_dir).get(signature) != method_name:
        raise RuntimeError(f"{path}: method name of {signature!r} did not stick")
    _refresh_fingerprint(Path(export_dir))


def _refresh_fingerprint(export_dir: Path) -> None:
    """Recompute fingerprint.pb: its checksums cover saved_model.pb, which was just rewritten,
    and a stale fingerprint would misreport the model to anything that reads it."""
    try:
        from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting
    except ImportError:  # private module moved: keep TF's own (now stale) fingerprint
        return
    fingerprint = export_dir / "fingerprint.pb"
    if fingerprint.exists():
        tmp = fingerprint.with_suffix(".pb.tmp")
        tmp.write_bytes(fingerprinting.CreateFingerprintDef(str(export_dir)))
        tmp.replace(fingerprint)


def signature_methods(export_dir: Path) -> dict[str, str]:
    """Signature name -> method name, as written in the (first) MetaGraphDef."""
    proto = read_saved_model_proto(export_dir)
    return {
        name: sig.method_name
        for name, sig in proto.meta_graphs[0].signature_def.items()
        if not name.startswith("__")  # __saved_model_init_op is not a signature to serve
    }
