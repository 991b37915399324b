"""Tiny training -> publish -> reload with TensorFlow -> every signature answers correctly."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.mnist_data import DEFAULT_DATA_DIR, read_checksums
from export.signatures import CLASSIFY_FEATURE_KEY, CLASSIFY_METHOD, PREDICT_METHOD
from export.tiny import TinyModelRepo

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def loaded(tiny_mnist_repo: TinyModelRepo):
    return tf.saved_model.load(str(tiny_mnist_repo.version_path))


def _example(pixels: np.ndarray) -> bytes:
    example = tf.train.Example()
    example.features.feature[CLASSIFY_FEATURE_KEY].float_list.value.extend(pixels.tolist())
    return example.SerializeToString()


def _png(image_u8: np.ndarray, mode: str = "L", scale: int = 1, fmt: str = "PNG") -> bytes:
    image = Image.fromarray(image_u8, mode="L").convert(mode)
    if scale != 1:
        image = image.resize((28 * scale, 28 * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_published_layout(tiny_mnist_repo: TinyModelRepo) -> None:
    model_dir = tiny_mnist_repo.repo / tiny_mnist_repo.model_name
    assert sorted(p.name for p in model_dir.iterdir()) == [str(tiny_mnist_repo.version)]
    version = tiny_mnist_repo.version_path
    for name in (
        "saved_model.pb",
        "variables/variables.index",
        "assets.extra/tf_serving_warmup_requests",
        "assets.extra/metadata.json",
        "assets.extra/training_report.json",
        "assets.extra/training_report.png",
    ):
        assert (version / name).is_file(), name
    assert (version / "assets.extra/training_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_method_names_in_metagraph(tiny_mnist_repo: TinyModelRepo) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((tiny_mnist_repo.version_path / "saved_model.pb").read_bytes())
    sigs = proto.meta_graphs[0].signature_def
    assert sigs["classify"].method_name == CLASSIFY_METHOD
    for name in ("serving_default", "predict_images", "predict_png"):
        assert sigs[name].method_name == PREDICT_METHOD
    assert set(sigs["classify"].inputs) == {"inputs"}
    assert set(sigs["classify"].outputs) == {"classes", "scores"}
    assert set(sigs["serving_default"].outputs) == {"scores", "classes"}
    assert set(sigs["predict_images"].outputs) == {"scores"}
    images = sigs["predict_images"].inputs["images"]
    assert [d.size for d in images.tensor_shape.dim] == [-1, 784]
    assert images.dtype == tf.float32.as_datatype_enum


def test_fingerprint_matches_rewritten_saved_model(tiny_mnist_repo: TinyModelRepo) -> None:
    from tensorflow.core.protobuf import fingerprint_pb2
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

    stored = fingerprint_pb2.FingerprintDef()
    stored.ParseFromString((tiny_mnist_repo.version_path / "fingerprint.pb").read_bytes())
    fresh = fingerprint_pb2.FingerprintDef()
    fresh.ParseFromString(fingerprinting.CreateFingerprintDef(str(tiny_mnist_repo.version_path)))
    assert stored.saved_model_checksum == fresh.saved_model_checksum
    assert stored.signature_def_hash == fresh.signature_def_hash


def test_float_signatures(loaded, tiny_mnist_repo: TinyModelRepo) -> None:
    x = tf.constant(tiny_mnist_repo.test_images)
    out = loaded.signatures["serving_default"](images=x)
    scores, classes = out["scores"].numpy(), out["classes"].numpy()
    assert scores.shape == (len(x), 10) and classes.dtype == np.int64
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(classes, scores.argmax(axis=1))
    np.testing.assert_array_equal(classes, tiny_mnist_repo.predictions)
    assert np.mean(classes == tiny_mnist_repo.test_labels) >= 0.75  # a trained model, not noise
    same = loaded.signatures["predict_images"](images=x)["scores"].numpy()
    np.testing.assert_allclose(same, scores, atol=1e-6)


def test_classify_through_its_method_name(loaded, tiny_mnist_repo: TinyModelRepo) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((tiny_mnist_repo.version_path / "saved_model.pb").read_bytes())
    names = [
        n for n, s in proto.meta_graphs[0].signature_def.items() if s.method_name == CLASSIFY_METHOD
    ]
    assert names == ["classify"]
    examples = [_example(row) for row in tiny_mnist_repo.test_images[:16]]
    out = loaded.signatures[names[0]](inputs=tf.constant(examples))
    classes, scores = out["classes"].numpy(), out["scores"].numpy()
    assert classes.shape == (16, 10)
    assert classes[0].tolist() == [str(d).encode() for d in range(10)]
    np.testing.assert_array_equal(scores.argmax(axis=1), tiny_mnist_repo.predictions[:16])


def test_image_bytes_signature_with_real_png(
    loaded, tiny_mnist_repo: TinyModelRepo, tmp_path: Path
) -> None:
    digit = tiny_mnist_repo.test_images_u8[0]
    path = tmp_path / "digit.png"
    Image.fromarray(digit, mode="L").save(path)  # a real PNG file, as a client would hold
    out = loaded.signatures["predict_png"](image_bytes=tf.constant([path.read_bytes()]))
    assert int(out["classes"].numpy()[0]) == tiny_mnist_repo.predictions[0]
    float_scores = loaded.signatures["predict_images"](
        images=tf.constant(tiny_mnist_repo.test_images[:1])
    )
    np.testing.assert_allclose(out["scores"].numpy(), float_scores["scores"].numpy(), atol=1e-5)

    # Same contract through RGB, a larger picture and JPEG: the same digits come out (mostly).
    batch = [_png(img, mode="RGB", scale=2) for img in tiny_mnist_repo.test_images_u8[:16]]
    batch += [_png(img, fmt="JPEG") for img in tiny_mnist_repo.test_images_u8[:16]]
    got = loaded.signatures["predict_png"](image_bytes=tf.constant(batch))["classes"].numpy()
    expected = np.concatenate([tiny_mnist_repo.predictions[:16]] * 2)
    assert np.mean(got == expected) >= 0.85

    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures["predict_png"](image_bytes=tf.constant([b"not an image"]))


def test_warmup_records_replay(loaded, tiny_mnist_repo: TinyModelRepo) -> None:
    from export.warmup import read_warmup

    records = read_warmup(tiny_mnist_repo.version_path / "assets.extra/tf_serving_warmup_requests")
    # The README's promise: 5 records that together cover every signature of the version.
    assert len(records) == 5
    kinds = [r.WhichOneof("log_type") for r in records]
    assert kinds.count("predict_log") == 4 and kinds.count("classify_log") == 1
    covered = {
        getattr(r, kind).request.model_spec.signature_name
        for r, kind in zip(records, kinds, strict=True)
    }
    every = {"serving_default", "predict_images", "predict_png", "classify"}
    assert covered == set(loaded.signatures) == every
    for record in records:
        if record.WhichOneof("log_type") == "predict_log":
            request = record.predict_log.request
            assert request.model_spec.name == tiny_mnist_repo.model_name
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            out = loaded.signatures[request.model_spec.signature_name](
                **{k: tf.constant(v) for k, v in inputs.items()}
            )
            assert out["scores"].shape[1] == 10
        else:
            request = record.classify_log.request
            examples = [e.SerializeToString() for e in request.input.example_list.examples]
            out = loaded.signatures[request.model_spec.signature_name](inputs=tf.constant(examples))
            assert out["scores"].shape == (len(examples), 10)


def test_metadata(tiny_mnist_repo: TinyModelRepo) -> None:
    meta = json.loads((tiny_mnist_repo.version_path / "assets.extra/metadata.json").read_text())
    assert meta["version"] == tiny_mnist_repo.version
    assert meta["architecture"] == "softmax"
    assert meta["metrics"]["test_accuracy"] == pytest.approx(tiny_mnist_repo.accuracy)
    assert meta["data"]["sha256_uncompressed"] == read_checksums(DEFAULT_DATA_DIR)
    assert meta["runtime"]["tensorflow"] == tf.__version__
    assert meta["precision"]["served"] == "float32"
    assert meta["signatures"]["classify"] == CLASSIFY_METHOD
    assert meta["code"]["git_revision"]
    assert {"train_s", "export_s", "evaluate_s", "total_s"} <= set(meta["timings_s"])
    assert meta["parameters"]["seed"] == 0


def test_saved_model_cli_shows_signatures(
    tiny_mnist_repo: TinyModelRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `saved_model_cli show --dir <version> --all` prints (run in-process: the CLI's own
    printing function, without paying for a second TensorFlow import)."""
    from tensorflow.python.tools import saved_model_cli

    if hasattr(saved_model_cli, "_show_all"):
        saved_model_cli._show_all(str(tiny_mnist_repo.version_path))
        text = capsys.readouterr().out
    else:  # the private helper moved: run the real command
        cli = Path(sys.executable).with_name("saved_model_cli")
        shown = subprocess.run(
            [str(cli), "show", "--dir", str(tiny_mnist_repo.version_path), "--all"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert shown.returncode == 0, shown.stderr
        text = shown.stdout
    for name in ("serving_default", "predict_images", "classify", "predict_png"):
        assert f"signature_def['{name}']" in text
    assert "Method name is: tensorflow/serving/classify" in text
    assert "inputs['image_bytes'] tensor_info" in text
    assert "shape: (-1, 784)" in text


def test_serving_module_tracks_plain_tf_variables_in_float32() -> None:
    """The module tracks tf.Variables (not Keras 3 wrappers, which the TFLite converter drops)
    and computes in float32 even for a model built under the bf16 policy."""
    from export.models import build_model
    from export.signatures import build_serving_module, predict_images_function

    bf16_model = build_model("softmax", "mixed_bfloat16")
    module = build_serving_module(bf16_model, "softmax")
    assert module.model_variables and all(
        isinstance(v, tf.Variable) for v in module.model_variables
    )
    assert all(v.dtype == tf.float32 for v in module.model_variables)
    concrete = predict_images_function(module)
    x = np.random.default_rng(0).random((3, 784), np.float32)
    scores = concrete(images=tf.constant(x))["scores"]
    assert scores.dtype == tf.float32 and scores.shape == (3, 10)
    ops = {op.type for op in concrete.graph.get_operations()}
    assert "MatMul" in ops
    matmuls = [op for op in concrete.graph.get_operations() if op.type == "MatMul"]
    assert all(op.outputs[0].dtype == tf.float32 for op in matmuls)
