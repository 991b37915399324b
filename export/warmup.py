"""``assets.extra/tf_serving_warmup_requests``: real requests TF Serving replays at load.

A TFRecord of ``tensorflow_serving.apis.prediction_log_pb2.PredictionLog`` records, built
from real test digits, one per signature (and two batch sizes for the default), so every
signature's graph is traced and its kernels initialised before the first real request.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    input_pb2,
    predict_pb2,
    prediction_log_pb2,
)

from export.signatures import (
    CLASSIFY,
    CLASSIFY_FEATURE_KEY,
    PREDICT_IMAGES,
    PREDICT_PNG,
    SERVING_DEFAULT,
)

WARMUP_FILE = "tf_serving_warmup_requests"
ASSETS_EXTRA = "assets.extra"


def _predict_log(
    model_name: str, signature: str, key: str, value: np.ndarray
) -> prediction_log_pb2.PredictionLog:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )


def _classify_log(model_name: str, images: np.ndarray) -> prediction_log_pb2.PredictionLog:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = CLASSIFY
    examples = input_pb2.ExampleList()
    for row in images:
        example = examples.examples.add()
        example.features.feature[CLASSIFY_FEATURE_KEY].float_list.value.extend(row.tolist())
    request.input.example_list.CopyFrom(examples)
    return prediction_log_pb2.PredictionLog(
        classify_log=prediction_log_pb2.ClassifyLog(request=request)
    )


def warmup_records(
    model_name: str, images: np.ndarray, png_bytes: list[bytes]
) -> list[prediction_log_pb2.PredictionLog]:
    """Warmup requests from float32 [N>=4, 784] test images and PNG-encoded digits."""
    if len(images) < 4 or not png_bytes:
        raise ValueError("warmup needs at least 4 images and one PNG")
    return [
        _predict_log(model_name, SERVING_DEFAULT, "images", images[:1]),
        _predict_log(model_name, SERVING_DEFAULT, "images", images[:4]),
        _predict_log(model_name, PREDICT_IMAGES, "images", images[:1]),
        _predict_log(model_name, PREDICT_PNG, "image_bytes", np.array(png_bytes[:2], dtype=object)),
        _classify_log(model_name, images[:2]),
    ]


def write_warmup(export_dir: Path, records: list[prediction_log_pb2.PredictionLog]) -> Path:
    path = Path(export_dir) / ASSETS_EXTRA / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record.SerializeToString())
    return path


def read_warmup(path: Path) -> list[prediction_log_pb2.PredictionLog]:
    records = []
    for raw in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(raw.numpy())
        records.append(log)
    return records
