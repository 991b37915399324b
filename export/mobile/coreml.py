"""Core ML: convert one concrete function to an mlprogram and check what its spec promises.

coremltools converts one concrete function, not a multi-signature SavedModel and not a Keras 3
model object, so the converter gets the loaded SavedModel's ``predict_images`` function. Core ML
can only *run* a model on macOS; on Linux the check is the spec: input name, shape and type,
outputs, and the precision the program computes in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.mobile.report import CoreMLSummary, MobileExportError

INPUT_NAME = "images"
OUTPUT_NAME = "scores"
INPUT_WIDTH = 784
NUM_CLASSES = 10
PRECISIONS = ("fp16", "fp32")
NUMERICAL_PARITY = (
    "not run: Core ML predicts only on macOS; on macOS run the .mlpackage over the test set "
    "and compare with parity.json's SavedModel accuracy"
)


@dataclass(frozen=True)
class CoreMLOptions:
    precision: str = "fp16"  # mlprogram default: weights and activations in float16
    deployment_target: str = "iOS15"  # the first release that runs mlprogram


def convert(saved_model_dir: Path, signature: str, options: CoreMLOptions) -> Any:
    """The converted ``ct.models.MLModel`` with input ``images`` [1, 784] and output ``scores``."""
    import coremltools as ct
    import tensorflow as tf

    if options.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {options.precision!r}")
    loaded = tf.saved_model.load(str(saved_model_dir))
    if signature not in loaded.signatures:
        raise MobileExportError(
            f"SavedModel {saved_model_dir} has no signature {signature!r} "
            f"(has {sorted(loaded.signatures)})"
        )
    function = loaded.signatures[signature]
    precision = ct.precision.FLOAT16 if options.precision == "fp16" else ct.precision.FLOAT32
    try:
        model = ct.convert(
            [function],
            source="tensorflow",
            convert_to="mlprogram",
            # A fixed batch of one: what an app feeds, and what the Neural Engine runs best.
            inputs=[ct.TensorType(name=INPUT_NAME, shape=(1, INPUT_WIDTH))],
            compute_precision=precision,
            minimum_deployment_target=getattr(ct.target, options.deployment_target),
        )
    except Exception as exc:  # coremltools raises many types (ValueError, NotImplementedError...)
        raise MobileExportError(
            f"Core ML conversion of signature {signature!r} failed: {exc}"
        ) from exc
    return _name_output(model)


def _name_output(model: Any) -> Any:
    """TF2 graphs name their outputs Identity*; an app should read ``scores``."""
    import coremltools as ct
    from coremltools.models.utils import rename_feature

    spec = model.get_spec()
    outputs = [o.name for o in spec.description.output]
    if len(outputs) != 1 or outputs[0] == OUTPUT_NAME:
        return model  # the spec check reports a wrong number of outputs
    rename_feature(spec, outputs[0], OUTPUT_NAME)
    image_input, scores_output = spec.description.input[0], spec.description.output[0]
    image_input.shortDescription = "784 floats in [0, 1]: 28x28 row by row, white digit on black"
    scores_output.shortDescription = "probability of each digit 0-9"
    return ct.models.MLModel(spec, weights_dir=model.weights_dir)


def _array_shape(feature: Any) -> tuple[list[int], bool]:
    """Default shape of a multiarray feature and whether its batch dimension is flexible."""
    array = feature.type.multiArrayType
    shape = [int(d) for d in array.shape]
    flexible = False
    which = array.WhichOneof("ShapeFlexibility")
    if which == "shapeRange" and array.shapeRange.sizeRanges:
        first = array.shapeRange.sizeRanges[0]
        flexible = first.upperBound != first.lowerBound
    elif which == "enumeratedShapes":
        flexible = len({tuple(s.shape)[0] for s in array.enumeratedShapes.shapes}) > 1
    return shape, flexible


def _array_dtype(feature: Any) -> str:
    from coremltools.proto import FeatureTypes_pb2

    if feature.type.WhichOneof("Type") != "multiArrayType":
        return feature.type.WhichOneof("Type") or "unknown"
    return FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(
        feature.type.multiArrayType.dataType
    )


def _program_dtypes(spec: Any) -> tuple[set[str], set[str]]:
    """(dtypes computed by non-const ops, dtypes of float constants = weights)."""
    from coremltools.proto import MIL_pb2

    computed: set[str] = set()
    weights: set[str] = set()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                for output in op.outputs:
                    name = MIL_pb2.DataType.Name(output.type.tensorType.dataType)
                    if not name.startswith("FLOAT"):
                        continue
                    (weights if op.type == "const" else computed).add(name)
    return computed, weights


def summarize(
    model: Any, artefact: str, size_bytes: int, seconds: float, options: CoreMLOptions
) -> CoreMLSummary:
    """Read the spec and list what an app would trip over."""
    spec = model.get_spec()
    kind = spec.WhichOneof("Type") or "unknown"
    inputs = list(spec.description.input)
    outputs = list(spec.description.output)
    failures: list[str] = []
    if kind != "mlProgram":
        failures.append(f"model type is {kind}, expected mlProgram")
    if len(inputs) != 1:
        failures.append(f"expected 1 input, got {[i.name for i in inputs]}")
    input_shape, flexible = _array_shape(inputs[0]) if inputs else ([], False)
    input_name = inputs[0].name if inputs else ""
    input_dtype = _array_dtype(inputs[0]) if inputs else ""
    if input_name != INPUT_NAME:
        failures.append(f"input is named {input_name!r}, expected {INPUT_NAME!r}")
    if (
        len(input_shape) != 2
        or input_shape[1] != INPUT_WIDTH
        or (input_shape[0] != 1 and not flexible)
    ):
        failures.append(
            f"input shape is {input_shape}, expected [1, {INPUT_WIDTH}] or a flexible batch"
        )
    if input_dtype != "FLOAT32":
        failures.append(f"input type is {input_dtype}, expected FLOAT32")
    output_info = []
    for out in outputs:
        shape, _ = (
            _array_shape(out) if out.type.WhichOneof("Type") == "multiArrayType" else ([], False)
        )
        output_info.append({"name": out.name, "shape": shape, "dtype": _array_dtype(out)})
    if [o["name"] for o in output_info] != [OUTPUT_NAME]:
        failures.append(
            f"outputs are {[o['name'] for o in output_info]}, expected [{OUTPUT_NAME!r}]"
        )
    elif output_info[0]["shape"][-1:] != [NUM_CLASSES] or len(output_info[0]["shape"]) != 2:
        failures.append(f"output shape is {output_info[0]['shape']}, expected [1, {NUM_CLASSES}]")
    computed, weights = _program_dtypes(spec) if kind == "mlProgram" else (set(), set())
    precision = "fp16" if "FLOAT16" in computed else ("fp32" if computed else "unknown")
    if precision != options.precision:
        failures.append(f"program computes in {precision}, {options.precision} was asked for")
    return CoreMLSummary(
        artefact=artefact,
        model_type=kind,
        specification_version=int(spec.specificationVersion),
        minimum_deployment_target=options.deployment_target,
        input_name=input_name,
        input_shape=input_shape,
        input_flexible_batch=flexible,
        input_dtype=input_dtype,
        outputs=output_info,
        compute_precision=precision,
        weight_dtypes=sorted(weights),
        size_bytes=size_bytes,
        seconds=round(seconds, 3),
        numerical_parity=NUMERICAL_PARITY,
        failures=failures,
    )


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def convert_and_check(
    *, saved_model_dir: Path, signature: str, destination: Path, options: CoreMLOptions
) -> CoreMLSummary:
    """Convert, save the .mlpackage at ``destination``, and summarise its spec."""
    started = time.perf_counter()
    model = convert(saved_model_dir, signature, options)
    model.save(str(destination))
    seconds = time.perf_counter() - started
    return summarize(model, destination.name, directory_size(destination), seconds, options)
