"""One loaded SavedModel version: its signatures (as the MetaGraphDef declares them) and how
to run them.

Signatures are read from ``saved_model.pb`` itself, not from the loaded object, because the
MetaGraphDef carries what TF Serving reports and checks: input/output TensorInfo (graph tensor
name, dtype, shape) and the method name (TF2's saver writes ``tensorflow/serving/predict``; an
exporter may rewrite it to ``.../classify``). ``run`` is synchronous and thread-safe; callers
run it off the event loop (TensorFlow releases the GIL while it computes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clients import wire
from clients.wire import DataType
from serving.modelserver import errors
from serving.modelserver.types import SignatureInfo, TensorSpec


def _tf():
    import tensorflow as tf  # imported lazily: ~2.5 s, only needed once a model loads

    return tf


def read_meta_graph(export_dir: str, tags: Sequence[str]):
    """The MetaGraphDef of ``export_dir`` whose tag set equals ``tags``."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    pb = os.path.join(export_dir, "saved_model.pb")
    pbtxt = os.path.join(export_dir, "saved_model.pbtxt")
    try:
        if os.path.exists(pb):
            with open(pb, "rb") as fh:
                saved.ParseFromString(fh.read())
        elif os.path.exists(pbtxt):
            from google.protobuf import text_format

            with open(pbtxt, encoding="utf-8") as fh:
                text_format.Parse(fh.read(), saved)
        else:
            raise errors.NotFound(
                "Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
                f"{export_dir}"
            )
    except errors.ServingError:
        raise
    except Exception as exc:  # corrupt file
        raise errors.DataLoss(f"Could not parse SavedModel at {export_dir}: {exc}") from None
    wanted = set(tags)
    for meta in saved.meta_graphs:
        if set(meta.meta_info_def.tags) == wanted:
            return meta
    available = [list(m.meta_info_def.tags) for m in saved.meta_graphs]
    raise errors.NotFound(
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(wanted))} }}."
        f" To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
        f"`saved_model_cli` (available: {available})"
    )


def _tensor_spec(info) -> TensorSpec:
    shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
    return TensorSpec(name=info.name, dtype=info.dtype, shape=shape)


def signature_infos(meta) -> dict[str, SignatureInfo]:
    out: dict[str, SignatureInfo] = {}
    for key, sig in meta.signature_def.items():
        out[key] = SignatureInfo(
            name=key,
            method_name=sig.method_name,
            inputs={k: _tensor_spec(v) for k, v in sig.inputs.items()},
            outputs={k: _tensor_spec(v) for k, v in sig.outputs.items()},
        )
    return out


def _shape_text(shape: Sequence[int] | None) -> str:
    return "<unknown>" if shape is None else "[" + ",".join(str(d) for d in shape) + "]"


@dataclass
class Servable:
    """A loaded version. ``batch_queues`` is filled lazily by the data plane."""

    model_name: str
    version: int
    path: str
    signatures: dict[str, SignatureInfo]
    signature_def_map: Any  # get_model_metadata_pb2.SignatureDefMap
    _functions: dict[str, Any] = field(repr=False, default_factory=dict)
    _loaded: Any = field(repr=False, default=None)
    batch_queues: dict[str, Any] = field(default_factory=dict, repr=False)
    _check_cache: dict[str, list] = field(default_factory=dict, repr=False)
    load_seconds: float = 0.0

    @classmethod
    def load(cls, model_name: str, version: int, path: str, tags: Sequence[str] = ("serve",)):
        from tensorflow_serving.apis import get_model_metadata_pb2

        start = time.monotonic()
        meta = read_meta_graph(path, tags)
        tf = _tf()
        try:
            loaded = tf.saved_model.load(path, tags=list(tags))
        except Exception as exc:
            raise errors.Unknown(f"Failed to load SavedModel at {path}: {exc}") from None
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in meta.signature_def.items():
            sig_map.signature_def[key].CopyFrom(sig)
        functions = {k: loaded.signatures[k] for k in loaded.signatures.keys()}  # noqa: SIM118
        return cls(
            model_name=model_name,
            version=version,
            path=path,
            signatures=signature_infos(meta),
            signature_def_map=sig_map,
            _functions=functions,
            _loaded=loaded,
            load_seconds=time.monotonic() - start,
        )

    # -- validation ------------------------------------------------------------------------
    def check_inputs(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> None:
        """predict_util.cc's input-set check, then dtype and shape against the signature."""
        sig = self.signatures[signature_name]
        sent, wanted = set(inputs), set(sig.inputs)
        if sent != wanted:
            extra = sorted(sent - wanted)
            missing = sorted(wanted - sent)
            raise errors.InvalidArgument(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(extra)}}}. Missing but required: "
                f"{{{','.join(missing)}}}."
            )
        for index, alias, spec, native in self._input_checks(signature_name):
            arr = inputs[alias]
            if native is not None and arr.dtype == native:  # the usual case: no lookup
                got = spec.dtype
            else:
                got = int(wire.data_type_of(arr.dtype))
            if got != spec.dtype:
                raise errors.InvalidArgument(
                    f"Expects arg[{index}] to be {wire.dtype_word(spec.dtype)} but "
                    f"{wire.dtype_word(got)} is provided"
                )
            if spec.shape is not None:
                ok = len(spec.shape) == arr.ndim and all(
                    d < 0 or d == n for d, n in zip(spec.shape, arr.shape, strict=True)
                )
                if not ok:
                    raise errors.InvalidArgument(
                        f"The shape of input '{alias}' is {_shape_text(arr.shape)}, which is "
                        f"incompatible with the signature's shape {_shape_text(spec.shape)}"
                    )

    def _input_checks(self, signature_name: str) -> list[tuple[int, str, TensorSpec, Any]]:
        """Per signature, computed once: (arg index, alias, spec, numpy dtype of the spec or
        None) in TF's argument order (sorted aliases)."""
        checks = self._check_cache.get(signature_name)
        if checks is None:
            checks = []
            specs = sorted(self.signatures[signature_name].inputs.items())
            for index, (alias, spec) in enumerate(specs):
                try:
                    string = spec.dtype == DataType.DT_STRING
                    native = None if string else wire.numpy_dtype(spec.dtype)
                except Exception:  # a dtype the codec does not map: always take the slow path
                    native = None
                checks.append((index, alias, spec, native))
            self._check_cache[signature_name] = checks
        return checks

    # -- running ---------------------------------------------------------------------------
    def empty_outputs(self, signature_name: str) -> dict[str, np.ndarray] | None:
        """Outputs for a zero-row batch, without calling TF (the CNN's conv rejects batch 0).

        None when some output's batch dimension is fixed (then TF must decide)."""
        sig = self.signatures[signature_name]
        out = {}
        for alias, spec in sig.outputs.items():
            if spec.shape is None:
                shape: tuple[int, ...] = (0,)
            elif not spec.shape or spec.shape[0] not in (-1, 0):
                return None
            else:
                shape = (0, *(max(d, 0) for d in spec.shape[1:]))
            dt = object if spec.dtype == DataType.DT_STRING else wire.numpy_dtype(spec.dtype)
            out[alias] = np.empty(shape, dtype=dt)
        return out

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one signature on already validated inputs. Thread-safe; blocks."""
        fn = self._functions.get(signature_name)
        if fn is None:
            raise errors.FailedPrecondition(f"Serving signature key \"{signature_name}\" not found.")
        tf = _tf()
        feed = {}
        for alias, arr in inputs.items():
            if arr.dtype == object:
                feed[alias] = tf.constant(arr.tolist() if arr.ndim else arr.item(), dtype=tf.string)
            else:
                feed[alias] = tf.convert_to_tensor(arr)
        try:
            result = fn(**feed)
        except tf.errors.OpError as exc:
            raise errors.ServingError(exc.message, errors.Code(exc.error_code)) from None
        except (TypeError, ValueError) as exc:
            raise errors.InvalidArgument(str(exc)) from None
        return {k: _to_numpy(v) for k, v in result.items()}


def _to_numpy(tensor) -> np.ndarray:
    arr = tensor.numpy()
    if arr.dtype.kind in "SU":  # TF hands back fixed-width bytes only for scalars' .numpy()
        arr = arr.astype(object)
    return arr if isinstance(arr, np.ndarray) else np.asarray(arr)
