"""REST transport: TF Serving's ``/v1/models/...`` API over a pooled ``requests.Session``.

JSON rules (TF Serving's ``json_tensor``): row format (``instances``, the default) or columnar
(``inputs``, ``columnar=True``); bytes go out as ``{"b64": ...}`` and come back decoded from
``{"b64": ...}`` objects; ``NaN``/``Infinity``/``-Infinity`` tokens are written and read.
REST drops output names for single-output signatures and carries no dtypes, so the client
reads the signature once (metadata, cached per model spec) and returns the same named,
typed numpy arrays as the gRPC client. ``output_filter`` is applied on the client side
(TF Serving's REST API has no such field). Deadlines: the remaining time of the call is
given to ``requests`` as connect and read timeouts.

Size: one job, the REST transport; most of its length is the JSON <-> tensor rules of the
client side (b64, non-finite tokens, single-output names, columnar vs row), which mirror the
server's and read best next to the calls that use them.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
import requests
from requests.adapters import HTTPAdapter

from clients import codec
from clients.base import DEFAULT_TIMEOUT_S, PredictionClient, RetryPolicy
from clients.errors import (
    ClientError,
    DeadlineExceeded,
    InvalidInput,
    ProtocolError,
    Unavailable,
    error_for_http,
)
from clients.examples import json_feature_value
from clients.types import (
    Classifications,
    ModelMetadata,
    ModelSpec,
    PredictResult,
    Signature,
    TensorInfo,
    VersionStatus,
)

DEFAULT_SIGNATURE = "serving_default"


def parse_rest_target(target: str) -> str:
    if not target.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP target: {target!r}")
    return target.rstrip("/")


class RestClient(PredictionClient):
    transport = "rest"

    def __init__(
        self,
        base_url: str,
        model: str | ModelSpec | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        columnar: bool = False,
        session: requests.Session | None = None,
        pool_maxsize: int = 32,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(model, timeout_s=timeout_s, retry=retry)
        self.base_url = parse_rest_target(base_url)
        self.columnar = columnar
        self._own_session = session is None
        if session is None:
            session = requests.Session()
            # Keep-alive connections, reused across calls and threads; no urllib3 retries
            # (this client retries itself, only where it is safe).
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        session.verify = verify
        # Passed again on every request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE
        # override Session.verify, which would silently ignore an explicit CA file.
        self._verify = verify
        if cert is not None:
            session.cert = cert
        session.headers.update({"Content-Type": "application/json", **(headers or {})})
        self.session = session

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    # ------------------------------------------------------------------ http
    def _url(self, spec: ModelSpec, suffix: str = "") -> str:
        url = f"{self.base_url}/v1/models/{quote(spec.name, safe='')}"
        if spec.version is not None:
            url += f"/versions/{int(spec.version)}"
        elif spec.label is not None:
            url += f"/labels/{quote(spec.label, safe='')}"
        return url + suffix

    def _request(self, method: str, url: str, body: Any, deadline: float) -> Any:
        data = None if body is None else encode_json(body)
        timeout_s = self._time_left(deadline)  # what is left after encoding the body
        try:
            response = self.session.request(
                method, url, data=data, timeout=(timeout_s, timeout_s), verify=self._verify
            )
        except requests.exceptions.ConnectTimeout as exc:  # nothing was sent: safe to retry
            raise Unavailable(
                f"connect to {self.base_url} timed out: {exc}", code="UNAVAILABLE", transport="rest"
            ) from None
        except requests.exceptions.Timeout:
            raise DeadlineExceeded(
                f"no answer from {self.base_url} within {timeout_s:.3g} s",
                code="DEADLINE_EXCEEDED",
                transport="rest",
            ) from None
        except requests.exceptions.ConnectionError as exc:
            if _timed_out(exc):  # the deadline passed while the body was being sent
                raise DeadlineExceeded(
                    f"no answer from {self.base_url} within {timeout_s:.3g} s",
                    code="DEADLINE_EXCEEDED",
                    transport="rest",
                ) from None
            raise Unavailable(
                f"cannot reach {self.base_url}: {_short(exc)}", code="UNAVAILABLE", transport="rest"
            ) from None
        text = response.content
        if response.status_code != 200:
            message = response.reason or ""
            if text:
                try:
                    parsed = json.loads(text)
                    if isinstance(parsed, dict) and "error" in parsed:
                        message = str(parsed["error"])
                except ValueError:
                    message = text[:500].decode("utf-8", "replace")
            raise error_for_http(response.status_code, message)
        try:
            return json.loads(text)  # accepts NaN / Infinity / -Infinity tokens
        except ValueError as exc:
            raise ProtocolError(f"server sent invalid JSON: {exc}", transport="rest") from None

    # ------------------------------------------------------------------ operations
    def _do_predict(
        self,
        spec: ModelSpec,
        inputs: Mapping[str, np.ndarray] | np.ndarray,
        output_filter: Sequence[str],
        deadline: float,
    ) -> PredictResult:
        try:
            sig: Signature | None = self._signature(spec, deadline=deadline)
        except InvalidInput:
            # No such signature in the metadata: send anyway, so the caller gets the server's
            # own error message (outputs of an unknown signature cannot be named anyway).
            sig = None
        body: dict[str, Any] = {}
        if spec.signature:
            body["signature_name"] = spec.signature
        if self.columnar:
            if isinstance(inputs, Mapping):
                body["inputs"] = {k: tensor_to_json(v) for k, v in inputs.items()}
            else:
                body["inputs"] = tensor_to_json(inputs)
        else:
            body["instances"] = rows_to_json(inputs)
        reply = self._request("POST", self._url(spec, ":predict"), body, deadline)
        outputs = parse_predict_json(reply, sig)
        if output_filter:
            missing = [k for k in output_filter if k not in outputs]
            if missing:
                raise InvalidInput(
                    f"output tensor alias not found in signature: {missing[0]} Outputs expected "
                    f"to be in the set {{{','.join(sorted(outputs))}}}.",
                    code="INVALID_ARGUMENT",
                    transport="rest",
                )
            outputs = {k: outputs[k] for k in output_filter}
        return PredictResult(
            outputs=outputs,
            model_name=spec.name,
            version=None,
            signature_name=spec.signature or DEFAULT_SIGNATURE,
        )

    def _examples_body(self, spec: ModelSpec, examples: list[Mapping], context: Mapping | None):
        def one(features: Mapping) -> dict:
            if not isinstance(features, Mapping):
                raise ValueError("an example is a mapping of feature names")
            return {str(k): json_feature_value(str(k), v) for k, v in features.items()}

        body: dict[str, Any] = {"examples": [one(e) for e in examples]}
        if context is not None:
            body["context"] = one(context)
        if spec.signature:
            body["signature_name"] = spec.signature
        return body

    def _do_classify(
        self, spec: ModelSpec, examples: list[Mapping], context: Mapping | None, deadline: float
    ) -> list[Classifications]:
        body = self._examples_body(spec, examples, context)
        reply = self._request("POST", self._url(spec, ":classify"), body, deadline)
        results = _field(reply, "results")
        return [[(str(label), float(score)) for label, score in item] for item in results]

    def _do_regress(
        self, spec: ModelSpec, examples: list[Mapping], context: Mapping | None, deadline: float
    ) -> list[float]:
        body = self._examples_body(spec, examples, context)
        reply = self._request("POST", self._url(spec, ":regress"), body, deadline)
        return [float(v) for v in _field(reply, "results")]

    def _do_status(self, spec: ModelSpec, deadline: float) -> list[VersionStatus]:
        reply = self._request("GET", self._url(spec), None, deadline)
        rows = []
        for row in _field(reply, "model_version_status"):
            status = row.get("status") or {}
            rows.append(
                VersionStatus(
                    version=int(row.get("version", 0)),
                    state=str(row.get("state", "UNKNOWN")),
                    error_code=str(status.get("error_code", "OK")),
                    error_message=str(status.get("error_message", "")),
                )
            )
        return rows

    def _do_metadata(self, spec: ModelSpec, deadline: float) -> ModelMetadata:
        meta_spec = ModelSpec(spec.name, spec.version, spec.label)
        reply = self._request("GET", self._url(meta_spec, "/metadata"), None, deadline)
        model_spec = reply.get("model_spec") or {}
        sig_defs = (((reply.get("metadata") or {}).get("signature_def")) or {}).get("signature_def")
        if not isinstance(sig_defs, dict):
            raise ProtocolError("metadata reply has no signature_def map", transport="rest")
        return ModelMetadata(
            model_name=str(model_spec.get("name", spec.name)),
            version=int(model_spec.get("version") or 0),
            signatures={k: _signature_from_json(v) for k, v in sig_defs.items()},
        )


# ---------------------------------------------------------------------- JSON encoding


class _RawJSON:
    """Pre-rendered JSON text for a float tensor, spliced in by ``encode_json``."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def encode_json(body: Any) -> bytes:
    """JSON bytes; NaN / Infinity / -Infinity written as TF Serving's tokens."""
    raws: list[str] = []
    nonce = os.urandom(8).hex()

    def default(obj: Any) -> Any:
        if isinstance(obj, _RawJSON):
            raws.append(obj.text)
            return f"\x00{nonce}:{len(raws) - 1}\x00"
        raise TypeError(f"cannot write {type(obj).__name__} as JSON")

    text = json.dumps(body, allow_nan=True, separators=(",", ":"), default=default)
    if raws:
        pattern = re.compile(r'"\\u0000' + nonce + r':(\d+)\\u0000"')
        text = pattern.sub(lambda m: raws[int(m.group(1))], text)
    return text.encode("utf-8")


def _b64(value: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(value).decode("ascii")}


def _nest(flat: list, shape: tuple[int, ...]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


@functools.lru_cache(maxsize=64)
def _format_of(shape: tuple[int, ...], leaf: str) -> str:
    if not shape:
        return leaf
    inner = _format_of(shape[1:], leaf)
    return "[" + ",".join([inner] * shape[0]) + "]"


def _float_json(arr: np.ndarray) -> Any:
    """Float tensors as text, 9 significant digits for float32 (always enough to give back the
    same float32) instead of the 17 that Python prints for the widened double: half the bytes
    and about twice as fast as json.dumps(arr.tolist())."""
    if not np.isfinite(arr).all() or np.signbit(arr[arr == 0]).any():
        return arr.tolist()  # json.dumps writes NaN / Infinity / -Infinity, and -0.0
    leaf = "%.17g" if arr.dtype == np.float64 else "%.9g"
    return _RawJSON(_format_of(arr.shape, leaf) % tuple(arr.reshape(-1).tolist()))


def tensor_to_json(arr: np.ndarray) -> Any:
    """A numpy array as TF Serving's JSON: nested lists; bytes as {"b64": ...}."""
    kind = arr.dtype.kind
    if kind in "OSU":
        flat = []
        for value in arr.reshape(-1).tolist():
            if isinstance(value, str):
                flat.append(value)
            elif isinstance(value, (bytes, bytearray, np.bytes_)):
                flat.append(_b64(bytes(value)))
            else:
                raise ValueError(f"string tensors hold bytes or str, got {type(value).__name__}")
        return _nest(flat, arr.shape)
    if kind == "c":
        raise ValueError("complex tensors cannot be sent over REST (TF Serving's JSON has none)")
    if kind not in "biuf":
        raise codec.UnsupportedDTypeError(f"unsupported dtype {arr.dtype} for REST")
    if kind == "f" and arr.size:
        return _float_json(arr)
    return arr.tolist()


def rows_to_json(inputs: Mapping[str, np.ndarray] | np.ndarray) -> list:
    """Row format: one element per batch entry; named objects when inputs are named."""
    if not isinstance(inputs, Mapping):
        if inputs.ndim == 0:
            raise ValueError("row format needs a batch dimension; use columnar=True")
        return tensor_to_json(inputs)  # a JSON list: one element per batch entry
    if not inputs:
        raise ValueError("no inputs given")
    sizes = set()
    for name, arr in inputs.items():
        if arr.ndim == 0:
            raise ValueError(f"input {name!r} has no batch dimension; use columnar=True")
        sizes.add(arr.shape[0])
    if len(sizes) != 1:
        raise ValueError(f"row format needs one batch size for all inputs, got {sorted(sizes)}")
    n = sizes.pop()
    return [
        {name: tensor_to_json(np.asarray(arr[i], dtype=arr.dtype)) for name, arr in inputs.items()}
        for i in range(n)
    ]


# ---------------------------------------------------------------------- JSON decoding


def _field(reply: Any, key: str) -> Any:
    if not isinstance(reply, dict) or key not in reply:
        raise ProtocolError(f"reply has no {key!r}", transport="rest")
    return reply[key]


def _decode_strings(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ProtocolError(f"unexpected value {value!r} in a string tensor", transport="rest")


def json_to_tensor(value: Any, info: TensorInfo | None) -> np.ndarray:
    """A JSON tensor as numpy, typed by the signature's TensorInfo where known."""
    dtype = None
    if info is not None:
        try:
            dtype = codec.numpy_dtype(codec.DataType[info.dtype])
        except (KeyError, codec.UnsupportedDTypeError):
            dtype = None
    if dtype is not None and dtype == np.dtype(object):
        decoded = _decode_strings(value)
        arr = np.empty(np.shape(decoded) if decoded != [] else (0,), dtype=object)
        if arr.ndim == 0:
            arr[()] = decoded
        else:
            arr[...] = decoded
        return arr
    try:
        arr = np.array(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"cannot read tensor from JSON: {exc}", transport="rest") from None
    if arr.size == 0 and info is not None and info.shape and all(d >= 0 for d in info.shape[1:]):
        arr = arr.reshape((0, *info.shape[1:]))
    return arr


def parse_predict_json(reply: Any, sig: Signature | None) -> dict[str, np.ndarray]:
    outputs_info = sig.outputs if sig is not None else {}
    if isinstance(reply, dict) and "predictions" in reply:
        rows = reply["predictions"]
        if not isinstance(rows, list):
            raise ProtocolError("'predictions' is not a list", transport="rest")
        if rows and isinstance(rows[0], dict) and set(rows[0]) != {"b64"}:
            keys = list(rows[0])
            return {k: json_to_tensor([row[k] for row in rows], outputs_info.get(k)) for k in keys}
        if not rows and len(outputs_info) > 1:
            return {k: json_to_tensor([], info) for k, info in outputs_info.items()}
        name, info = _single_output(outputs_info, "predictions")
        return {name: json_to_tensor(rows, info)}
    if isinstance(reply, dict) and "outputs" in reply:
        outputs = reply["outputs"]
        if (
            isinstance(outputs, dict)
            and set(outputs) != {"b64"}
            and (len(outputs_info) != 1 or set(outputs) <= set(outputs_info))
        ):
            return {k: json_to_tensor(v, outputs_info.get(k)) for k, v in outputs.items()}
        name, info = _single_output(outputs_info, "outputs")
        return {name: json_to_tensor(outputs, info)}
    raise ProtocolError("predict reply has neither 'predictions' nor 'outputs'", transport="rest")


def _single_output(outputs_info: Mapping[str, TensorInfo], fallback: str):
    if len(outputs_info) == 1:
        name = next(iter(outputs_info))
        return name, outputs_info[name]
    return fallback, None


def _tensor_info_from_json(info: Mapping[str, Any]) -> TensorInfo:
    shape_json = info.get("tensor_shape") or {}
    if shape_json.get("unknown_rank"):
        shape = None
    else:
        shape = tuple(int(d.get("size", 0)) for d in shape_json.get("dim", []))
    return TensorInfo(name=str(info.get("name", "")), dtype=str(info.get("dtype", "")), shape=shape)


def _signature_from_json(sig: Mapping[str, Any]) -> Signature:
    return Signature(
        method_name=str(sig.get("method_name", "")),
        inputs={k: _tensor_info_from_json(v) for k, v in (sig.get("inputs") or {}).items()},
        outputs={k: _tensor_info_from_json(v) for k, v in (sig.get("outputs") or {}).items()},
    )


def _timed_out(exc: BaseException, depth: int = 0) -> bool:
    """True when a socket timeout hides inside a requests/urllib3 connection error."""
    if isinstance(exc, TimeoutError):
        return True
    if depth > 5:
        return False
    nested = [a for a in getattr(exc, "args", ()) if isinstance(a, BaseException)]
    nested += [e for e in (exc.__cause__, exc.__context__) if e is not None]
    return any(_timed_out(e, depth + 1) for e in nested)


def _short(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "Connection reset"):
        if marker in text:
            return marker
    return text[:200]


__all__ = ["ClientError", "RestClient", "parse_predict_json", "rows_to_json", "tensor_to_json"]
