"""End to end: real SavedModels -> .tflite (LiteRT parity) + .mlpackage, published or refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from mobile_models import SAMPLE, SourceModel

from export.mobile.build import (
    MobileOptions,
    MobileResult,
    artefact_names,
    build_mobile,
    mobile_dir,
)
from export.mobile.report import MobileExportError, ParityThresholds


def _tree(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def published(good_model: SourceModel) -> tuple[MobileResult, dict[str, int]]:
    before = _tree(good_model.version_path)
    # The whole official test set: the softmax runs it in well under a second per .tflite.
    result = build_mobile(
        MobileOptions(
            repo=good_model.repo, model_name=good_model.model_name, version=good_model.version
        )
    )
    return result, before


def test_publishes_every_artefact_beside_the_version(published, good_model: SourceModel) -> None:
    result, before = published
    names = artefact_names(good_model.model_name)
    assert result.path == good_model.repo / "mobile" / good_model.model_name / str(
        good_model.version
    )
    assert sorted(p.name for p in result.path.iterdir()) == sorted([*names.values(), "parity.json"])
    assert (result.path / names["coreml"] / "Manifest.json").is_file()
    # Nothing hidden left behind, and the published SavedModel version is untouched.
    assert [p.name for p in result.path.parent.iterdir()] == [str(good_model.version)]
    assert _tree(good_model.version_path) == before


def test_parity_report_figures(published, good_model: SourceModel) -> None:
    result, _ = published
    report = json.loads((result.path / "parity.json").read_text())
    assert report["passed"] is True and report["failures"] == []
    assert report["images"] == 10000 and report["dataset"] == "the official MNIST test set"
    assert report["dataset_sha256"]["t10k-images-idx3-ubyte"].startswith("0fa7898d")
    assert 0.5 < report["reference_accuracy"] <= 1.0
    float32, int8 = report["tflite"]
    assert (float32["quantization"], int8["quantization"]) == ("float32", "dynamic_range_int8")
    assert float32["differing_predictions"] == 0
    assert float32["max_abs_score_diff"] < 1e-4
    assert float32["accuracy"] == report["reference_accuracy"]
    assert abs(int8["accuracy_delta_points"]) <= 0.1
    assert int8["size_bytes"] < float32["size_bytes"]
    for entry in (float32, int8):
        assert entry["nonfinite_outputs"] == 0 and entry["batch_size"] == 1
        assert entry["input_shape_signature"] == [-1, 784]
        assert entry["output_shape_signature"] == [-1, 10]
        data = (result.path / entry["artefact"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]


def test_tflite_runs_as_an_app_would(published, good_model: SourceModel) -> None:
    """Plain Interpreter, default [1, 784] input, one digit: same scores as the SavedModel."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from export.mnist_data import load_mnist, to_model_input

    result, _ = published
    image = to_model_input(load_mnist().test_images[:1])
    expected = (
        tf.saved_model.load(str(good_model.version_path))
        .signatures["predict_images"](images=tf.constant(image))["scores"]
        .numpy()
    )
    interpreter = Interpreter(
        model_path=str(result.path / artefact_names(good_model.model_name)["float32"])
    )
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert list(inp["shape"]) == [1, 784] and inp["dtype"] == np.float32
    interpreter.set_tensor(inp["index"], image)
    interpreter.invoke()
    scores = interpreter.get_tensor(out["index"])
    assert scores.shape == (1, 10)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert abs(float(scores.sum()) - 1.0) < 1e-5


def test_coreml_spec(published, good_model: SourceModel) -> None:
    import coremltools as ct

    result, _ = published
    summary = result.report.coreml
    assert summary is not None and summary.passed
    assert summary.model_type == "mlProgram"
    assert (summary.input_name, summary.input_shape, summary.input_dtype) == (
        "images",
        [1, 784],
        "FLOAT32",
    )
    assert summary.outputs == [{"name": "scores", "shape": [1, 10], "dtype": "FLOAT32"}]
    assert summary.compute_precision == "fp16"
    assert "macOS" in summary.numerical_parity
    # The package on disk says the same (loading the spec works on Linux; predicting does not).
    package = result.path / artefact_names(good_model.model_name)["coreml"]
    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    assert [o.name for o in spec.description.output] == ["scores"]


def test_existing_mobile_version_is_not_replaced_without_force(
    published, good_model: SourceModel
) -> None:
    result, _ = published
    before = _tree(result.path)
    with pytest.raises(MobileExportError, match="already exists; pass --force"):
        build_mobile(
            MobileOptions(
                repo=good_model.repo, model_name=good_model.model_name, version=good_model.version
            )
        )
    assert _tree(result.path) == before


def test_unknown_version_is_refused(good_model: SourceModel) -> None:
    with pytest.raises(MobileExportError, match=r"no version 99 \(published: "):
        build_mobile(
            MobileOptions(repo=good_model.repo, model_name=good_model.model_name, version=99)
        )


def _refused(model: SourceModel, pattern: str, shown: list[str] | None = None) -> MobileExportError:
    with pytest.raises(MobileExportError, match=pattern) as info:
        build_mobile(
            MobileOptions(
                repo=model.repo, model_name=model.model_name, version=model.version, limit=SAMPLE
            ),
            show=(shown if shown is not None else []).append,
        )
    # Nothing published, nothing half-built left behind.
    parent = mobile_dir(model.repo, model.model_name)
    assert not parent.exists()
    return info.value


def test_tflite_without_its_weights_is_refused(broken_models: dict[str, SourceModel]) -> None:
    """The Keras-tracked export: TF answers correctly, the converter silently drops the
    weights and the .tflite computes with whatever memory it finds (NaN or random scores)."""
    shown: list[str] = []
    error = _refused(broken_models["keras_tracked"], "refused, nothing published", shown)
    # float32 must agree on every prediction, so garbage always fails it. (The int8 bound is on
    # accuracy only, and this model was trained on noise: garbage can match its ~10% by chance.)
    mine = [
        line
        for line in str(error).splitlines()
        if line.startswith("  - keras_tracked_float32.tflite: ")
    ]
    assert any("NaN/Inf scores" in line or "differ" in line for line in mine), mine
    assert any("converter dropped the weights" in line for line in mine), mine
    # The figures are shown even though the export is refused.
    assert len(shown) == 1 and "result: REFUSED" in shown[0]
    assert "keras_tracked_float32.tflite" in shown[0] and "FAIL" in shown[0]


def test_savedmodel_nan_outputs_are_refused(broken_models: dict[str, SourceModel]) -> None:
    _refused(broken_models["nan_source"], "the SavedModel itself returns NaN/Inf scores")


def test_wrong_output_shape_is_refused(broken_models: dict[str, SourceModel]) -> None:
    _refused(
        broken_models["wrong_shape"],
        r"output 'scores' is float32 \[None, 5\], expected float32 \[None, 10\]",
    )


def test_converted_tflite_with_wrong_shape_is_refused(
    broken_models: dict[str, SourceModel],
) -> None:
    """The same check on the converted file itself (a graph that slipped past the signature)."""
    from export.mobile import tflite as mobile_tflite

    model = mobile_tflite.convert(
        broken_models["wrong_shape"].version_path, "predict_images", mobile_tflite.FLOAT32
    )
    with pytest.raises(
        MobileExportError, match=r"x.tflite: wrong tensors: output 'scores' has shape \[-1, 5\]"
    ):
        mobile_tflite.inspect_io(model, "predict_images", "x.tflite")


def test_coreml_spec_with_wrong_shape_is_flagged(broken_models: dict[str, SourceModel]) -> None:
    from export.mobile import coreml as mobile_coreml

    options = mobile_coreml.CoreMLOptions(precision="fp32")
    model = mobile_coreml.convert(
        broken_models["wrong_shape"].version_path, "predict_images", options
    )
    summary = mobile_coreml.summarize(model, "x.mlpackage", 0, 0.0, options)
    assert summary.compute_precision == "fp32"
    assert summary.failures == ["output shape is [1, 5], expected [1, 10]"]


def test_project_tiny_model_converts_with_parity_on_a_sample(project_model: SourceModel) -> None:
    """What the export pipeline publishes must convert: no NaN, identical float32 predictions.

    On a 500-image sample one image is 0.2 points, so the int8 bound here is two images
    (0.4 points) instead of the full set's 0.1 points; the report records the bound used.
    """
    result = build_mobile(
        MobileOptions(
            repo=project_model.repo,
            model_name=project_model.model_name,
            version=project_model.version,
            limit=SAMPLE,
            int8_thresholds=ParityThresholds(max_accuracy_delta_points=2 * 100 / SAMPLE),
        )
    )
    float32, int8 = result.report.tflite
    assert result.report.passed, result.report.failures
    assert (float32.images, float32.differing_predictions, float32.nonfinite_outputs) == (
        SAMPLE,
        0,
        0,
    )
    assert int8.thresholds == "accuracy within 0.4 points"
    assert json.loads((result.path / "parity.json").read_text())["dataset"] == (
        f"the first {SAMPLE} images of the official MNIST test set (a sample)"
    )


def test_missing_test_set_is_refused(good_model: SourceModel, tmp_path: Path) -> None:
    with pytest.raises(MobileExportError, match=r"test set: .*-ubyte.gz: file not found"):
        build_mobile(
            MobileOptions(
                repo=good_model.repo,
                model_name=good_model.model_name,
                version=good_model.version,
                data_dir=tmp_path,
                force=True,
            )
        )
