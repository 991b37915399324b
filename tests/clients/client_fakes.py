"""Tiny TF Serving look-alikes for the client unit tests: real gRPC and real HTTP on loopback.

They use only the clients' private protos (no TensorFlow), so the blocked-TensorFlow test can
run them too. The "model" is a fake MNIST: the class of an image is the index of its largest
value among its first 10 pixels; scores are one-hot-ish probabilities.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np

from clients import codec, protos

SIGNATURE_DEF_MAP_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
VERSIONS = (1, 2)
LABELS = {"stable": 1, "canary": 2}


def fake_digits(images: np.ndarray, version: int) -> dict[str, np.ndarray]:
    flat = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    classes = flat[:, :10].argmax(axis=1).astype(np.int64)
    if version == 2:  # a "new version" that answers differently: (class + 1) % 10
        classes = (classes + 1) % 10
    scores = np.full((len(flat), 10), 0.01, dtype=np.float32)
    scores[np.arange(len(flat)), classes] = 0.91
    return {"scores": scores, "classes": classes}


def signature_def_map():
    sig_map = protos.SignatureDefMap()
    for name in ("serving_default", "predict_images"):
        sig = sig_map.signature_def[name]
        sig.method_name = "tensorflow/serving/predict"
        images = sig.inputs["images"]
        images.name, images.dtype = "images:0", codec.DataType.DT_FLOAT
        codec.fill_shape_proto(images.tensor_shape, (-1, 784))
        scores = sig.outputs["scores"]
        scores.name, scores.dtype = "scores:0", codec.DataType.DT_FLOAT
        codec.fill_shape_proto(scores.tensor_shape, (-1, 10))
        if name == "serving_default":
            classes = sig.outputs["classes"]
            classes.name, classes.dtype = "classes:0", codec.DataType.DT_INT64
            codec.fill_shape_proto(classes.tensor_shape, (-1,))
    echo = sig_map.signature_def["echo_bytes"]
    echo.method_name = "tensorflow/serving/predict"
    data = echo.inputs["data"]
    data.name, data.dtype = "data:0", codec.DataType.DT_STRING
    codec.fill_shape_proto(data.tensor_shape, (-1,))
    out = echo.outputs["data_bytes"]
    out.name, out.dtype = "out:0", codec.DataType.DT_STRING
    codec.fill_shape_proto(out.tensor_shape, (-1,))
    return sig_map


@dataclass
class Behaviour:
    """What the fake servers do; tests tweak it between calls."""

    fail_first: int = 0  # answer UNAVAILABLE / 503 this many times first
    delay_s: float = 0.0  # sleep before answering predict
    abort: tuple[str, str] | None = None  # (code name, message) for every predict
    calls: int = 0
    reloads: list = field(default_factory=list)
    metadata_seen: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tick(self) -> bool:
        """Count a predict call; True when it must fail as unavailable."""
        with self.lock:
            self.calls += 1
            return self.calls <= self.fail_first


class ModelError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def resolve(name: str, version: int | None, label: str | None) -> int:
    if name != "mnist":
        raise ModelError("NOT_FOUND", f"Servable not found for request: Latest({name})")
    if label is not None:
        if label not in LABELS:
            raise ModelError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
        return LABELS[label]
    if version is not None:
        if version not in VERSIONS:
            raise ModelError(
                "NOT_FOUND", f"Servable not found for request: Specific({name}, {version})"
            )
        return version
    return max(VERSIONS)


def run_model(signature: str, inputs: dict[str, np.ndarray], version: int) -> dict:
    signature = signature or "serving_default"
    if signature == "echo_bytes":
        return {"data_bytes": inputs["data"]}
    if signature not in ("serving_default", "predict_images"):
        raise ModelError("FAILED_PRECONDITION", f'Serving signature key "{signature}" not found.')
    if set(inputs) != {"images"}:
        raise ModelError(
            "INVALID_ARGUMENT", f"input size does not match signature: {sorted(inputs)}"
        )
    images = inputs["images"]
    if images.dtype != np.float32:
        raise ModelError(
            "INVALID_ARGUMENT", f"Expects arg[0] to be float but {images.dtype} is provided"
        )
    out = fake_digits(images, version)
    if signature == "predict_images":
        out.pop("classes")
    return out


# ---------------------------------------------------------------------- gRPC


class FakeGrpcServer:
    """PredictionService + ModelService on 127.0.0.1, routed by method path."""

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        tls: tuple[bytes, bytes] | None = None,
        port: int = 0,
        server_id: str = "a",
    ) -> None:
        self.behaviour = behaviour or Behaviour()
        self.server_id = server_id
        self.hits = 0
        self.user_agents: list[str] = []
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[
                ("grpc.max_receive_message_length", 1 << 30),
                ("grpc.max_send_message_length", 1 << 30),
            ],
        )
        handlers = {}
        for name, (path, req_cls, resp_cls) in protos.RPCS.items():
            method = getattr(self, "_" + name, None)
            if method is None:
                continue
            handlers[path.rsplit("/", 1)[1]] = (
                grpc.unary_unary_rpc_method_handler(
                    self._wrap(method),
                    request_deserializer=req_cls.FromString,
                    response_serializer=resp_cls.SerializeToString,
                ),
                path.split("/")[1],
            )
        by_service: dict[str, dict] = {}
        for method_name, (handler, service) in handlers.items():
            by_service.setdefault(service, {})[method_name] = handler
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(s, m) for s, m in by_service.items()]
        )
        address = f"127.0.0.1:{port}"
        if tls is None:
            self.port = self._server.add_insecure_port(address)
        else:
            key, cert = tls
            creds = grpc.ssl_server_credentials([(key, cert)])
            self.port = self._server.add_secure_port(address, creds)
        self.target = f"127.0.0.1:{self.port}"

    def start(self) -> FakeGrpcServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(0).wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _wrap(self, method):
        def handler(request, context):
            self.hits += 1
            metadata = dict(context.invocation_metadata())
            self.user_agents.append(metadata.get("user-agent", ""))
            try:
                return method(request, context)
            except ModelError as exc:
                context.abort(getattr(grpc.StatusCode, exc.code), exc.message)

        return handler

    @staticmethod
    def _spec(model_spec):
        version = model_spec.version.value if model_spec.HasField("version") else None
        label = (
            model_spec.version_label
            if model_spec.WhichOneof("version_choice") == "version_label"
            else None
        )
        return resolve(model_spec.name, version, label)

    def _Predict(self, request, context):
        b = self.behaviour
        if b.tick():
            raise ModelError("UNAVAILABLE", "warming up")
        if b.delay_s:
            time.sleep(b.delay_s)
        if b.abort:
            raise ModelError(*b.abort)
        version = self._spec(request.model_spec)
        inputs = {k: codec.tensor_proto_to_ndarray(v) for k, v in request.inputs.items()}
        outputs = run_model(request.model_spec.signature_name, inputs, version)
        response = protos.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        for key, value in outputs.items():
            if request.output_filter and key not in request.output_filter:
                continue
            # Typed fields, as TF Serving answers by default.
            codec.fill_tensor_proto(response.outputs[key], value, use_tensor_content=False)
        context.set_trailing_metadata((("server-id", self.server_id),))
        return response

    def _GetModelMetadata(self, request, context):
        version = self._spec(request.model_spec)
        self.behaviour.metadata_seen.append(version)
        response = protos.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        packed = response.metadata["signature_def"]
        packed.type_url = SIGNATURE_DEF_MAP_URL
        packed.value = signature_def_map().SerializeToString()
        return response

    def _GetModelStatus(self, request, context):
        self._spec(protos.ModelSpec(name=request.model_spec.name))
        response = protos.GetModelStatusResponse()
        versions = VERSIONS
        if request.model_spec.HasField("version"):
            v = request.model_spec.version.value
            if v not in VERSIONS:
                raise ModelError("NOT_FOUND", f"Could not find version {v} of model mnist")
            versions = (v,)
        for v in sorted(versions, reverse=True):
            row = response.model_version_status.add()
            row.version = v
            row.state = protos.ModelVersionStatus.AVAILABLE
        return response

    def _Classify(self, request, context):
        self._spec(request.model_spec)
        response = protos.ClassificationResponse()
        for example in request.input.example_list.examples:
            pixels = list(example.features.feature["pixels"].float_list.value)
            item = response.result.classifications.add()
            for digit in range(3):
                cls = item.classes.add()
                cls.label, cls.score = (
                    str(digit),
                    float(pixels[digit]) if digit < len(pixels) else 0.0,
                )
        return response

    def _Regress(self, request, context):
        self._spec(request.model_spec)
        response = protos.RegressionResponse()
        for example in request.input.example_list.examples:
            values = example.features.feature["x"].float_list.value
            response.result.regressions.add().value = float(sum(values))
        return response

    def _HandleReloadConfigRequest(self, request, context):
        self.behaviour.reloads.append(request.config)
        response = protos.ReloadConfigResponse()
        names = [c.name for c in request.config.model_config_list.config]
        if len(names) != len(set(names)):
            response.status.error_code = 3
            response.status.error_message = (
                "Illegal to list model mnist multiple times in config list"
            )
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, response.status.error_message)
        return response


# ---------------------------------------------------------------------- REST

HTTP_OF = {
    "NOT_FOUND": 404,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "INTERNAL": 500,
    "RESOURCE_EXHAUSTED": 429,
}


def _json_value(arr: np.ndarray, b64: bool):
    if arr.dtype == object:
        flat = [
            {"b64": base64.b64encode(v).decode()} if b64 else v.decode() for v in arr.reshape(-1)
        ]
        return flat if arr.ndim == 1 else np.array(flat, dtype=object).reshape(arr.shape).tolist()
    return arr.tolist()


def _from_json(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list) and value and isinstance(value[0], (dict, str)):
        return np.array(
            [_from_json(v) if isinstance(v, dict) else v.encode() for v in value], dtype=object
        )
    return np.asarray(value, dtype=np.float32)


class FakeRestServer:
    """The /v1/models REST routes on 127.0.0.1 with TF Serving's JSON shapes and error bodies."""

    def __init__(self, behaviour: Behaviour | None = None, port: int = 0) -> None:
        self.behaviour = behaviour or Behaviour()
        self.peers: list[tuple[str, int]] = []  # client address of every request
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self):
                fake.peers.append(self.client_address)
                path = self.path
                verb = None
                if ":" in path.rsplit("/", 1)[-1]:
                    path, verb = path.rsplit(":", 1)
                parts = path.split("/")[3:]  # after /v1/models/
                name = parts[0]
                version = label = None
                rest = parts[1:]
                if rest[:1] == ["versions"]:
                    version, rest = int(rest[1]), rest[2:]
                elif rest[:1] == ["labels"]:
                    label, rest = rest[1], rest[2:]
                return name, version, label, rest, verb

            def do_GET(self):
                try:
                    name, version, label, rest, _ = self._route()
                    if rest == ["metadata"]:
                        v = resolve(name, version, label)
                        sigs = json.loads(_sig_map_json())
                        body = {
                            "model_spec": {"name": name, "signature_name": "", "version": str(v)},
                            "metadata": {"signature_def": {"signature_def": sigs}},
                        }
                        return self._send(200, json.dumps(body))
                    resolve(name, None, None)
                    versions = VERSIONS if version is None else (version,)
                    if version is not None and version not in VERSIONS:
                        raise ModelError(
                            "NOT_FOUND", f"Could not find version {version} of model {name}"
                        )
                    rows = [
                        {
                            "version": str(v),
                            "state": "AVAILABLE",
                            "status": {"error_code": "OK", "error_message": ""},
                        }
                        for v in sorted(versions, reverse=True)
                    ]
                    return self._send(200, json.dumps({"model_version_status": rows}))
                except ModelError as exc:
                    self._send(HTTP_OF[exc.code], json.dumps({"error": exc.message}, indent=4))

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                b = fake.behaviour
                try:
                    name, version, label, _, verb = self._route()
                    if verb == "predict" and b.tick():
                        raise ModelError("UNAVAILABLE", "warming up")
                    if b.delay_s:
                        time.sleep(b.delay_s)
                    if b.abort:
                        raise ModelError(*b.abort)
                    body = json.loads(raw)
                    v = resolve(name, version, label)
                    if verb == "predict":
                        return self._send(200, fake.predict(body, v))
                    if verb == "classify":
                        results = [
                            [[str(d), float(ex["pixels"][d])] for d in range(3)]
                            for ex in body["examples"]
                        ]
                        return self._send(200, json.dumps({"results": results}))
                    if verb == "regress":
                        return self._send(
                            200,
                            json.dumps(
                                {"results": [float(sum(ex["x"])) for ex in body["examples"]]}
                            ),
                        )
                    raise ModelError("INVALID_ARGUMENT", f"Malformed request: POST {self.path}")
                except ModelError as exc:
                    self._send(HTTP_OF[exc.code], json.dumps({"error": exc.message}, indent=4))

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def predict(self, body: dict, version: int) -> str:
        signature = body.get("signature_name", "")
        if "instances" in body:
            rows = body["instances"]
            if rows and isinstance(rows[0], dict) and set(rows[0]) != {"b64"}:
                inputs = {k: _from_json([r[k] for r in rows]) for k in rows[0]}
            else:
                key = "data" if signature == "echo_bytes" else "images"
                inputs = {key: _from_json(rows)}
            outputs = run_model(signature, inputs, version)
            if len(outputs) == 1:
                ((key, value),) = outputs.items()
                return json.dumps({"predictions": _json_value(value, key.endswith("_bytes"))})
            n = len(next(iter(outputs.values())))
            preds = [
                {k: _json_value(v[i : i + 1], k.endswith("_bytes"))[0] for k, v in outputs.items()}
                for i in range(n)
            ]
            return json.dumps({"predictions": preds})
        inputs_json = body["inputs"]
        if isinstance(inputs_json, dict) and set(inputs_json) != {"b64"}:
            inputs = {k: _from_json(v) for k, v in inputs_json.items()}
        else:
            inputs = {"images": _from_json(inputs_json)}
        outputs = run_model(signature, inputs, version)
        if len(outputs) == 1:
            ((key, value),) = outputs.items()
            return json.dumps({"outputs": _json_value(value, key.endswith("_bytes"))})
        return json.dumps(
            {"outputs": {k: _json_value(v, k.endswith("_bytes")) for k, v in outputs.items()}}
        )

    def start(self) -> FakeRestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _sig_map_json() -> str:
    """SignatureDefMap as TF Serving's REST metadata prints it (snake_case, sizes as strings)."""
    out = {}
    for name, sig in signature_def_map().signature_def.items():

        def infos(m):
            return {
                k: {
                    "dtype": codec.dtype_name(v.dtype),
                    "tensor_shape": {
                        "dim": [{"size": str(d.size), "name": ""} for d in v.tensor_shape.dim],
                        "unknown_rank": False,
                    },
                    "name": v.name,
                }
                for k, v in m.items()
            }

        out[name] = {
            "inputs": infos(sig.inputs),
            "outputs": infos(sig.outputs),
            "method_name": sig.method_name,
            "defaults": {},
        }
    return json.dumps(out)
