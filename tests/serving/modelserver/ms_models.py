"""Tiny SavedModels for the model-server tests (built in well under a second each)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def set_method_names(export_dir: str, methods: dict[str, str]) -> None:
    """TF2 writes every signature as predict; rewrite the MetaGraphDef like an exporter would."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(export_dir, "saved_model.pb")
    saved = saved_model_pb2.SavedModel()
    with open(path, "rb") as fh:
        saved.ParseFromString(fh.read())
    for meta in saved.meta_graphs:
        for key, method in methods.items():
            meta.signature_def[key].method_name = method
    with open(path, "wb") as fh:
        fh.write(saved.SerializeToString())


def build_echo_model(export_dir: str) -> str:
    """serving_default echoes int32/float/string/bool inputs; `sum` adds two floats."""
    import tensorflow as tf

    class Echo(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.int32, name="i"),
                tf.TensorSpec([None, 2], tf.float32, name="f"),
                tf.TensorSpec([None], tf.string, name="s"),
                tf.TensorSpec([None], tf.bool, name="b"),
            ]
        )
        def echo(self, i, f, s, b):
            return {
                "i_out": tf.identity(i),
                "f_out": tf.identity(f),
                "s_out": tf.identity(s),
                "b_out": tf.logical_not(b),
            }

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def double(self, x):
            return {"y": x * 2.0}

        @tf.function(input_signature=[tf.TensorSpec([1], tf.int64, name="n")])
        def spin(self, n):
            # Busy for about n loop iterations: a request that stays in flight for a while.
            done = tf.while_loop(lambda i: i < n[0], lambda i: i + 1, [tf.constant(0, tf.int64)])
            return {"done": tf.reshape(done, [1])}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def count(self, x):
            return {"n": tf.shape(x)[:1], "total": tf.reduce_sum(x, keepdims=True)}

    module = Echo()
    tf.saved_model.save(
        module,
        export_dir,
        signatures={
            "serving_default": module.echo,
            "double": module.double,
            "count": module.count,
            "spin": module.spin,
        },
    )
    return export_dir


def build_versioned_model(export_dir: str, version: int, *, warmup: bool = False) -> str:
    """Outputs reveal the version: predict y = x + version; classify/regress signatures too."""
    import tensorflow as tf

    v = float(version)

    class Versioned(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def predict(self, x):
            return {"y": x + v, "version": tf.fill(tf.shape(x), tf.constant(version, tf.int64))}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            feats = tf.io.parse_example(
                inputs, {"x": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}
            )
            x = feats["x"]
            scores = tf.concat([x, tf.fill(tf.shape(x), v)], axis=1)
            classes = tf.tile(tf.constant([["x", "version"]]), [tf.shape(x)[0], 1])
            return {"scores": scores, "classes": classes}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            feats = tf.io.parse_example(
                inputs, {"x": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}
            )
            return {"outputs": feats["x"][:, 0] * 2.0 + v}

    module = Versioned()
    tf.saved_model.save(
        module,
        export_dir,
        signatures={
            "serving_default": module.predict,
            "classify_x": module.classify,
            "regress_x": module.regress,
        },
    )
    set_method_names(export_dir, {"classify_x": CLASSIFY_METHOD, "regress_x": REGRESS_METHOD})
    if warmup:
        write_warmup(export_dir, [np.array([1.0, 2.0], np.float32)])
    return export_dir


def write_warmup(export_dir: str, batches: list[np.ndarray], count: int | None = None) -> str:
    """assets.extra/tf_serving_warmup_requests with predict requests on serving_default."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    extra = os.path.join(export_dir, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    path = os.path.join(extra, "tf_serving_warmup_requests")
    records = count if count is not None else len(batches)
    with tf.io.TFRecordWriter(path) as writer:
        for n in range(records):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "warm"
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(batches[n % len(batches)]))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path


def example(x: float) -> bytes:
    import tensorflow as tf

    ex = tf.train.Example(
        features=tf.train.Features(feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))})
    )
    return ex.SerializeToString()


def copy_version(store: Path, model: str, version: int, dest_base: Path, as_name: str | None = None) -> Path:
    """Publish like the export pipeline: copy under a hidden name, then rename atomically."""
    dest_base.mkdir(parents=True, exist_ok=True)
    tmp = dest_base / f".tmp-{model}-{version}"
    shutil.copytree(store / model / str(version), tmp)
    final = dest_base / (as_name or str(version))
    tmp.rename(final)
    return final
