"""One inference path, synchronous, keyed by method: lookup, checks, run, convert.

``plan_predict`` / ``plan_examples`` (classify, regress) / ``plan_multi_inference`` look up a
request's signature on a loaded ``Servable`` and run TF Serving's checks (predict_util.cc,
classifier.cc, regressor.cc, multi_inference.cc); they return ``Plan`` objects: the inputs to
feed one signature and how to turn its outputs into the result. ``Plan.run_sync`` runs it on
the calling thread. The data plane runs plans off the event loop (on the batching scheduler or
a thread pool, with a deadline and metrics); warmup replays records through ``run_sync``. So
both paths share every lookup, check and conversion, and the messages they raise.

Every failure is an ``errors.ServingError`` with TF Serving's code and message. Imports no
transport (REST, gRPC) and no TensorFlow (``Servable.run`` does that).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clients.wire import DataType, dtype_word
from serving.modelserver import errors
from serving.modelserver.servable import Servable
from serving.modelserver.types import (
    CLASSIFY_METHOD,
    PREDICT_METHOD,
    REGRESS_METHOD,
    ClassifyResult,
    InferenceTask,
    ModelRef,
    PredictResult,
    RegressResult,
    SignatureInfo,
)

Result = PredictResult | ClassifyResult | RegressResult


@dataclass
class Plan:
    """One signature run, checked and ready."""

    servable: Servable
    signature: str  # the signature key
    api: str  # "Predict" | "Classify" | "Regress": the metrics' api label
    inputs: dict[str, np.ndarray]
    rows: int | None  # examples in the request (batch rows), None when the inputs disagree
    finish: Callable[[Mapping[str, np.ndarray]], Any]  # outputs -> the typed result
    ready: dict[str, np.ndarray] | None = None  # outputs known without running (empty batch)
    # The output aliases to fetch (a predict request's output_filter, as TF Serving fetches
    # only those); empty: every output of the signature.
    fetch: tuple[str, ...] = ()

    def run_sync(self) -> Any:
        """Run on this thread (blocks; ``Servable.run`` is thread-safe) and convert."""
        outputs = self.ready
        if outputs is None:
            outputs = self.servable.run(self.signature, self.inputs, self.fetch)
        return self.finish(outputs)


# -- predict ---------------------------------------------------------------------------------

_PREDICT_METHODS = (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD)


def plan_predict(
    servable: Servable,
    ref: ModelRef,
    inputs: Mapping[str, np.ndarray],
    output_filter: Sequence[str] = (),
    *,
    method_check: bool = False,
) -> Plan:
    """predict_util.cc: signature, method name (``--enable_signature_method_name_check``),
    the number and aliases of the inputs (``Servable.prepare_inputs``: fewer only with
    SignatureDef defaults, which are filled in here so that batching sees whole requests),
    output filter; a zero-row batch needs no run. Shapes are the Session's to judge."""
    sig = servable.signatures.get(ref.signature)
    if sig is None:
        raise errors.FailedPrecondition(f'Serving signature key "{ref.signature}" not found.')
    if method_check and sig.method_name not in _PREDICT_METHODS:
        raise errors.FailedPrecondition(
            "Expected prediction signature method_name to be one of "
            f"{{{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. "
            f"Was: {sig.method_name}"
        )
    sent = {k: np.asarray(v) for k, v in inputs.items()}
    arrays = servable.prepare_inputs(sig.name, sent)
    wanted = _check_output_filter(sig, output_filter)
    rows = _batch_rows(sent)  # the request's own rows: a scalar default is no batch dimension
    ready = servable.empty_outputs(sig.name) if rows == 0 else None

    def finish(outputs: Mapping[str, np.ndarray]) -> PredictResult:
        chosen = {k: outputs[k] for k in wanted} if wanted else dict(outputs)
        return PredictResult(servable.model_name, servable.version, sig.name, chosen)

    return Plan(servable, sig.name, "Predict", arrays, rows, finish, ready, tuple(wanted))


def _check_output_filter(sig: SignatureInfo, output_filter: Sequence[str]) -> list[str]:
    wanted: list[str] = []
    for alias in output_filter:
        if alias not in sig.outputs:
            raise errors.InvalidArgument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                f"the set {{{','.join(sorted(sig.outputs))}}}."
            )
        if alias in wanted:
            raise errors.InvalidArgument(f"duplicate output tensor alias: {alias}")
        wanted.append(alias)
    return wanted


def _batch_rows(inputs: Mapping[str, np.ndarray]) -> int | None:
    """The common dim-0 size of the inputs, or None when there is none."""
    sizes = {a.shape[0] for a in inputs.values() if a.ndim >= 1}
    if len(sizes) == 1 and all(a.ndim >= 1 for a in inputs.values()):
        return sizes.pop()
    return None


# -- classify / regress ----------------------------------------------------------------------


def _check_example_input(sig: SignatureInfo) -> None:
    if len(sig.inputs) != 1:
        raise errors.InvalidArgument("Expected one input Tensor.")
    if next(iter(sig.inputs.values())).dtype != DataType.DT_STRING:
        raise errors.InvalidArgument("Expected input Tensor of type DT_STRING.")


def check_classify_signature(sig: SignatureInfo) -> None:
    """classifier.cc: one string input; outputs classes (string) and/or scores (float)."""
    _check_example_input(sig)
    classes = sig.outputs.get("classes")
    scores = sig.outputs.get("scores")
    if classes is None and scores is None:
        raise errors.InvalidArgument(
            "Expected classification signature outputs to contain at least one of "
            '"classes" or "scores".'
        )
    if classes is not None and classes.dtype != DataType.DT_STRING:
        raise errors.InvalidArgument(
            f"Expected classes Tensor of DT_STRING. Got: {dtype_word(classes.dtype)}"
        )
    if scores is not None and scores.dtype != DataType.DT_FLOAT:
        raise errors.InvalidArgument(
            f"Expected scores Tensor of DT_FLOAT. Got: {dtype_word(scores.dtype)}"
        )


def check_regress_signature(sig: SignatureInfo) -> None:
    """regressor.cc: one string input; a float output named ``outputs``."""
    _check_example_input(sig)
    outputs = sig.outputs.get("outputs")
    if outputs is None:
        raise errors.InvalidArgument(
            'No regression outputs found in signature: expected output named "outputs".'
        )
    if outputs.dtype != DataType.DT_FLOAT:
        raise errors.InvalidArgument(
            f"Expected output Tensor of DT_FLOAT.  Got: {dtype_word(outputs.dtype)}"
        )


def to_classifications(
    outputs: Mapping[str, np.ndarray], num_examples: int
) -> list[list[tuple[bytes, float | None]]]:
    classes = outputs.get("classes")
    scores = outputs.get("scores")
    for name, arr in (("classes", classes), ("scores", scores)):
        if arr is None:
            continue
        if arr.ndim != 2 or arr.shape[0] != num_examples:
            raise errors.InvalidArgument(
                f"Expected Tensor shape: [{num_examples} num_classes] but got "
                f"{_shape_text(arr.shape)} for output {name}"
            )
    if classes is not None and scores is not None and classes.shape != scores.shape:
        raise errors.InvalidArgument(
            f"Tensors class and score should match in shape. Got classes shape "
            f"{_shape_text(classes.shape)} and scores shape {_shape_text(scores.shape)}"
        )
    width = (classes if classes is not None else scores).shape[1]
    result = []
    for i in range(num_examples):
        row = []
        for j in range(width):
            label = bytes(classes[i, j]) if classes is not None else b""
            score = float(scores[i, j]) if scores is not None else None
            row.append((label, score))
        result.append(row)
    return result


def to_regressions(outputs: Mapping[str, np.ndarray], num_examples: int) -> list[float]:
    arr = outputs["outputs"]
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != num_examples:
        raise errors.InvalidArgument(
            f"Expected output Tensor shape to be either [{num_examples}] or "
            f"[{num_examples} x 1] but got {_shape_text(arr.shape)}"
        )
    return [float(v) for v in arr]


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


@dataclass(frozen=True)
class _ExampleMethod:
    api: str
    kind: str  # as TF Serving words it in the method-name check
    check: Callable[[SignatureInfo], None]
    result: Callable[[Servable, str, Mapping[str, np.ndarray], int], Any]


def _classify_result(servable: Servable, sig: str, out: Mapping[str, np.ndarray], n: int):
    return ClassifyResult(servable.model_name, servable.version, sig, to_classifications(out, n))


def _regress_result(servable: Servable, sig: str, out: Mapping[str, np.ndarray], n: int):
    return RegressResult(servable.model_name, servable.version, sig, to_regressions(out, n))


# The methods that take tf.Examples, keyed by the signature method name they run as.
EXAMPLE_METHODS: dict[str, _ExampleMethod] = {
    CLASSIFY_METHOD: _ExampleMethod(
        "Classify", "classification", check_classify_signature, _classify_result
    ),
    REGRESS_METHOD: _ExampleMethod(
        "Regress", "regression", check_regress_signature, _regress_result
    ),
}


def plan_examples(
    servable: Servable,
    ref: ModelRef,
    method: str,
    examples: Sequence[bytes],
    context: bytes | None = None,
    *,
    method_check: bool = False,
) -> Plan:
    """Classify or regress (``method`` is CLASSIFY_METHOD or REGRESS_METHOD)."""
    how = EXAMPLE_METHODS[method]
    sig = servable.signatures.get(ref.signature)
    if sig is None:
        raise errors.InvalidArgument(f"No signature was found with the name: {ref.signature}")
    if method_check and sig.method_name != method:
        raise errors.InvalidArgument(
            f"Expected {how.kind} signature method_name to be {method}. Was: {sig.method_name}"
        )
    how.check(sig)
    tensor = example_tensor(examples, context)
    alias = next(iter(sig.inputs))
    count = len(examples)

    def finish(outputs: Mapping[str, np.ndarray]) -> Any:
        return how.result(servable, sig.name, outputs, count)

    return Plan(servable, sig.name, how.api, {alias: tensor}, count, finish)


def example_tensor(examples: Sequence[bytes], context: bytes | None) -> np.ndarray:
    """The serialized-Example input of a classify/regress signature.

    With a context, TF Serving feeds each example merged with the context; concatenating the
    serialized messages is protobuf's merge (the example's own features win on a clash)."""
    if not examples:
        raise errors.InvalidArgument("Input is empty.")
    arr = np.empty(len(examples), dtype=object)
    for i, ex in enumerate(examples):
        arr[i] = (context + ex) if context else bytes(ex)
    return arr


def examples_from_input(input_proto: Any) -> tuple[list[bytes], bytes | None]:
    """``tensorflow.serving.Input`` -> serialized Examples (+ serialized context)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in input_proto.example_list.examples], None
    if kind == "example_list_with_context":
        lst = input_proto.example_list_with_context
        return [e.SerializeToString() for e in lst.examples], lst.context.SerializeToString()
    raise errors.InvalidArgument("Input is empty.")


# -- multi-inference -------------------------------------------------------------------------


def check_tasks(tasks: Sequence[InferenceTask]) -> None:
    """multi_inference.cc: one model, distinct signatures, classify/regress only."""
    if not tasks:
        raise errors.InvalidArgument("Expected at least one task")
    name = tasks[0].ref.name
    seen: set[str] = set()
    for task in tasks:
        if task.ref.name != name:
            raise errors.InvalidArgument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name"
            )
        if task.ref.signature in seen:
            raise errors.InvalidArgument(f"Duplicate evaluation of signature: {task.ref.signature}")
        seen.add(task.ref.signature)
        if task.method_name not in EXAMPLE_METHODS:
            raise errors.Unimplemented(f"Unsupported signature method_name: {task.method_name}")


def plan_multi_inference(
    servable: Servable,
    tasks: Sequence[InferenceTask],
    examples: Sequence[bytes],
    context: bytes | None = None,
    *,
    method_check: bool = False,
) -> list[Plan]:
    """One plan per task, on ``servable`` (the version resolved from the first task); call
    ``check_tasks`` before resolving it."""
    return [
        plan_examples(
            servable, task.ref, task.method_name, examples, context, method_check=method_check
        )
        for task in tasks
    ]
