"""One loaded SavedModel version: its signatures (as the MetaGraphDef declares them) and how
to run them.

Signatures are read from ``saved_model.pb`` itself, not from the loaded object, because the
MetaGraphDef carries what TF Serving reports and checks: input/output TensorInfo (graph tensor
name, dtype, shape) and the method name (TF2's saver writes ``tensorflow/serving/predict``; an
exporter may rewrite it to ``.../classify``). The version itself runs in a TF1 Session
(``session_runtime``), as TF Serving runs every SavedModel. ``run`` is synchronous and
thread-safe; callers run it off the event loop (TensorFlow releases the GIL while it computes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clients import codec, wire
from clients.wire import DataType
from serving.modelserver import errors
from serving.modelserver.session_runtime import SessionBundle
from serving.modelserver.types import SignatureInfo, TensorSpec


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


@dataclass
class Servable:
    """A loaded version. ``batch_queues`` is filled lazily by the data plane."""

    model_name: str
    version: int
    path: str
    signatures: dict[str, SignatureInfo]
    signature_def_map: Any  # get_model_metadata_pb2.SignatureDefMap
    _bundle: SessionBundle | None = field(repr=False, default=None)
    # Per signature: alias -> the SignatureDef's default value (TF Serving feeds it when a
    # request leaves that input out).
    _defaults: dict[str, dict[str, np.ndarray]] = field(repr=False, default_factory=dict)
    batch_queues: dict[str, Any] = field(default_factory=dict, repr=False)
    _check_cache: dict[str, list] = field(default_factory=dict, repr=False)
    load_seconds: float = 0.0

    @classmethod
    def load(
        cls,
        model_name: str,
        version: int,
        path: str,
        tags: Sequence[str] = ("serve",),
        session_config: Any = None,
    ):
        """Load ``path`` into its own Session (``session_runtime``), TF1 and TF2 alike.

        ``session_config`` is the server's ConfigProto (``session_config.build``)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        start = time.monotonic()
        meta = read_meta_graph(path, tags)
        bundle = SessionBundle.load(path, tags, session_config)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        defaults: dict[str, dict[str, np.ndarray]] = {}
        for key, sig in meta.signature_def.items():
            sig_map.signature_def[key].CopyFrom(sig)
            if sig.defaults:
                try:
                    defaults[key] = {
                        alias: codec.tensor_proto_to_ndarray(proto)
                        for alias, proto in sig.defaults.items()
                    }
                except Exception as exc:
                    bundle.close()
                    raise errors.InvalidArgument(
                        f"tensor parsing error: default of signature {key}: {exc}"
                    ) from None
        return cls(
            model_name=model_name,
            version=version,
            path=path,
            signatures=signature_infos(meta),
            signature_def_map=sig_map,
            _bundle=bundle,
            _defaults=defaults,
            load_seconds=time.monotonic() - start,
        )

    def close(self) -> None:
        """Free the Session at once (for one-shot users; the server drops its reference)."""
        if self._bundle is not None:
            self._bundle.close()

    # -- validation ------------------------------------------------------------------------
    def check_inputs(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> None:
        """TF Serving's input checks (see ``prepare_inputs``), without filling defaults."""
        self.prepare_inputs(signature_name, inputs)

    def prepare_inputs(
        self, signature_name: str, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """predict_util.cc + saved_model/util.cc ``GetInputValues``: the number of inputs
        (fewer only when the SignatureDef has defaults), every alias known or defaulted, then
        this server's dtype check (TF Serving's wording). Shapes are left to the runtime, as
        in TF Serving. Returns the inputs with the signature's defaults filled in."""
        sig = self.signatures[signature_name]
        defaults = self._defaults.get(signature_name, {})
        sent, wanted = set(inputs), set(sig.inputs)
        if len(sent) > len(wanted) or (len(sent) < len(wanted) and not defaults):
            extra = sorted(sent - wanted)
            missing = sorted(wanted - sent)
            raise errors.InvalidArgument(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(extra)}}}. Missing but required: "
                f"{{{','.join(missing)}}}."
            )
        full = dict(inputs)
        for alias in sorted(wanted - sent):
            if alias not in defaults:
                raise errors.InvalidArgument(
                    f"Signature input alias: {alias}(feed name: {sig.inputs[alias].name}) not "
                    "found in request and no default value provided. Inputs expected to be in "
                    f"the request {{{','.join(sorted(sent))}}}, or default input alias set: "
                    f"{','.join(sorted(defaults))}"
                )
            full[alias] = defaults[alias]
        if sent - wanted:  # as many inputs as the signature, but some under unknown names
            raise errors.InvalidArgument(
                "Inputs contains invalid name. Used request inputs: "
                f"{','.join(sorted(sent & wanted))}, request input: {','.join(sorted(sent))}"
            )
        for index, alias, spec, native in self._input_checks(signature_name):
            arr = full[alias]
            if native is not None and arr.dtype == native:  # the usual case: no lookup
                continue
            try:
                got = int(wire.data_type_of(arr.dtype))
            except Exception:
                got = -1
            if got != spec.dtype:
                # The C runtime would say "Type mismatch: actual int32 vs. expect float";
                # TF Serving answers with the executor's wording, kept here.
                raise errors.InvalidArgument(
                    f"Expects arg[{index}] to be {wire.dtype_word(spec.dtype)} but "
                    f"{wire.dtype_word(got) if got >= 0 else str(arr.dtype)} is provided"
                )
        return full

    def _input_checks(self, signature_name: str) -> list[tuple[int, str, TensorSpec, Any]]:
        """Per signature, computed once: (arg index, alias, spec, numpy dtype of the spec or
        None) in TF's argument order (sorted aliases)."""
        checks = self._check_cache.get(signature_name)
        if checks is None:
            checks = []
            specs = sorted(self.signatures[signature_name].inputs.items())
            for index, (alias, spec) in enumerate(specs):
                try:
                    native = None if spec.dtype == DataType.DT_STRING else wire.numpy_dtype(spec.dtype)
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

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Run one signature on checked inputs: the SignatureDef's input tensors are fed
        (defaults where an input is left out), ``outputs`` (default: all) are fetched by their
        graph names. Thread-safe; blocks."""
        sig = self.signatures.get(signature_name)
        if sig is None or self._bundle is None:
            raise errors.FailedPrecondition(f"Serving signature key \"{signature_name}\" not found.")
        defaults = self._defaults.get(signature_name, {})
        feeds = []
        for alias, spec in sorted(sig.inputs.items()):
            arr = inputs.get(alias)
            if arr is None:
                arr = defaults.get(alias)
                if arr is None:
                    raise errors.InvalidArgument(
                        f"Signature input alias: {alias}(feed name: {spec.name}) not found in "
                        "request and no default value provided."
                    )
            feeds.append((spec.name, arr))
        aliases = list(outputs) or list(sig.outputs)
        fetches = [sig.outputs[a].name for a in aliases]
        results = self._bundle.run(feeds, fetches)
        return {alias: _as_output(value) for alias, value in zip(aliases, results, strict=True)}


def _as_output(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind in "SU":  # fixed-width bytes from a scalar string: the codec wants objects
        return arr.astype(object)
    return arr
