"""TF Serving's HTTP/REST surface on aiohttp (spec section 2).

``create_rest_app`` returns an ``aiohttp.web.Application`` that the server mounts on the REST
port. It only translates: URLs and JSON in, ``types.DataPlane`` calls, JSON out, and
``errors.ServingError`` -> HTTP status through ``errors.HTTP_STATUS``.

Dispatch follows TF Serving's layers: the Prometheus path (exact match) first, then anything
whose *raw* path-and-query matches ``(?i)/v1/.*`` goes to the API handler, everything else is a
404 HTML page. Inside the API handler the URL grammar is TF Serving's two RE2 patterns applied to
the still-percent-encoded path *including* the query string (so ``GET /v1/models/m?x=1`` asks
for a model named ``m?x=1``, as TF Serving does).

Work placement: small bodies (an MNIST image is ~16 KB of JSON) are parsed and formatted on the
event loop, where a thread hop would cost more than the work; large bodies and large outputs go
to the default thread pool so the loop keeps serving other connections. Inference itself runs
in the data plane, off the loop.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
import warnings
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.abc import AbstractMatchInfo
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from serving.modelserver import json_tensor
from serving.modelserver.errors import (
    Code,
    Internal,
    InvalidArgument,
    ServingError,
)
from serving.modelserver.metrics import Metrics
from serving.modelserver.types import DataPlane, ModelRef, SignatureInfo

log = logging.getLogger(__name__)

# TF Serving has no request-body limit of its own (libevent's default is unlimited); a stand-in
# that holds bodies in memory needs one. 256 MiB is ~16,000 MNIST images of JSON.
DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024
# util/net_http/compression/gzip_zlib.h: gzip request bodies may inflate to 100 MiB.
MAX_GZIP_UNCOMPRESSED_BYTES = 100 * 1024 * 1024
# Bodies / outputs above these sizes are handled on a worker thread instead of the loop.
OFFLOAD_BODY_BYTES = 64 * 1024
OFFLOAD_OUTPUT_ELEMENTS = 16 * 1024

JSON_CONTENT_TYPE = "application/json"

# Options for the ``web.AppRunner`` that serves this app: TF Serving inflates only gzip bodies
# (handled here, with its 100 MiB limit); aiohttp's own inflating would also accept deflate and
# answer br with a text 400. ``web.AppRunner(app, **RUNNER_OPTIONS)``.
RUNNER_OPTIONS: dict[str, Any] = {"access_log": None, "auto_decompress": False}

_V1 = re.compile(r"(?i)/v1/.*", re.DOTALL)
# http_rest_api_util.cc; NAME/LABEL = [^/:]+, DIGITS = \d+ (RE2's \d is ASCII only).
_POST = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE | re.ASCII | re.DOTALL,
)
_GET = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?",
    re.IGNORECASE | re.ASCII | re.DOTALL,
)
_INT64_MAX = 2**63 - 1
_HEX = frozenset("0123456789abcdefABCDEF")

_NOT_FOUND_HTML = (
    "<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
    "The requested URL {path} was not found on this server.</BODY></HTML>\n"
)
_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}

T = TypeVar("T")
REST_API_KEY = web.AppKey("rest_api", "RestApi")


class _EmptyBodyError(Exception):
    """URL-level conversion failures: TF Serving answers 400 with an empty body."""


class _BodyTooLarge(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def url_unescape(text: str) -> str:
    """Percent-decode like libcurl's unescape (``%XX`` only; ``+`` stays ``+``).

    Unlike libcurl, a ``%`` not followed by two hex digits, or bytes that are not UTF-8, fail:
    model names and labels are UTF-8 text in the config, so such a name can never match.
    """
    if "%" not in text:
        return text
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise ValueError(text)
            out.append(int(pair, 16))
            i += 3
        else:
            out += ch.encode("utf-8", "surrogateescape")
            i += 1
    return out.decode("utf-8")


def _decode_name(raw: str) -> str:
    try:
        return url_unescape(raw)
    except (ValueError, UnicodeError):
        raise _EmptyBodyError(f"Failed to decode model name:{raw}") from None


def _decode_label(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        return url_unescape(raw)
    except (ValueError, UnicodeError):
        raise _EmptyBodyError(f"Failed to decode model version label:{raw}") from None


def _decode_version(digits: str | None) -> int | None:
    if digits is None:
        return None
    value = int(digits)
    if value > _INT64_MAX:
        raise _EmptyBodyError(f"Failed to convert version: {digits} to numeric.")
    return value


def _json_response(body: bytes, status: int = 200) -> web.Response:
    resp = web.Response(body=body, status=status)
    resp.headers["Content-Type"] = JSON_CONTENT_TYPE
    return resp


def _dtype_enum_name(dtype: int) -> str:
    return "DT_" + json_tensor.dtype_name(dtype).upper()


def _signature_json(sig: SignatureInfo) -> dict[str, Any]:
    """SignatureDef as protobuf's JSON printer writes it (fallback when no proto is given)."""

    def tensor_info(spec: Any) -> dict[str, Any]:
        if spec.shape is None:
            shape: dict[str, Any] = {"dim": [], "unknown_rank": True}
        else:
            shape = {
                "dim": [{"size": str(d), "name": ""} for d in spec.shape],
                "unknown_rank": False,
            }
        return {"dtype": _dtype_enum_name(spec.dtype), "tensor_shape": shape, "name": spec.name}

    return {
        "inputs": {k: tensor_info(v) for k, v in sig.inputs.items()},
        "outputs": {k: tensor_info(v) for k, v in sig.outputs.items()},
        "method_name": sig.method_name,
        "defaults": {},
    }


class RestApi:
    """Request handlers bound to one data plane and one metrics registry."""

    def __init__(
        self,
        dataplane: DataPlane,
        metrics: Metrics,
        *,
        rest_api_timeout_ms: int = 0,
        monitoring_path: str | None = None,
        enable_cors: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.timeout_s = rest_api_timeout_ms / 1000.0 if rest_api_timeout_ms > 0 else None
        self.monitoring_path = monitoring_path or None
        self.enable_cors = enable_cors
        self.max_body_bytes = max_body_bytes

    # -- dispatch --------------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path
        if self.monitoring_path is not None and raw.split("?", 1)[0] == self.monitoring_path:
            return self._prometheus(raw)
        if _V1.fullmatch(raw) is None:
            page = _NOT_FOUND_HTML.format(path=html.escape(raw.split("?", 1)[0]))
            return web.Response(status=404, text=page, content_type="text/html")
        if request.method == "OPTIONS":
            return self._preflight(request)
        resp = await self._api(request, raw)
        if self.enable_cors:
            resp.headers.update(_CORS_HEADERS)
        return resp

    def _prometheus(self, raw: str) -> web.Response:
        if raw != self.monitoring_path:
            return web.Response(
                status=400,
                text=f"Unexpected path: {raw}. Should be {self.monitoring_path}",
                content_type="text/plain",
            )
        return web.Response(text=self.metrics.render(), content_type="text/plain")

    def _preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        if "http://" in origin or "https://" in origin:
            resp = web.Response(status=200)
            if self.enable_cors:
                resp.headers.update(_CORS_HEADERS)
            return resp
        return web.Response(status=400)

    async def _api(self, request: web.Request, raw: str) -> web.Response:
        start = time.perf_counter()
        model_name = ""
        api = ""
        code = Code.OK
        try:
            method = request.method
            if method == "POST":
                m = _POST.fullmatch(raw)
                if m is None or m.group(4) not in ("predict", "classify", "regress"):
                    raise InvalidArgument(f"Malformed request: {method} {raw}")
                api = m.group(4)
                model_name = _decode_name(m.group(1))
                ref = ModelRef(
                    name=model_name,
                    version=_decode_version(m.group(2)),
                    label=_decode_label(m.group(3)),
                )
                body = await self._read_body(request)
                if api == "predict":
                    out = await self._predict(ref, body)
                else:
                    out = await self._classify_regress(api, ref, body)
            elif method == "GET":
                m = _GET.fullmatch(raw)
                if m is None:
                    raise InvalidArgument(f"Malformed request: {method} {raw}")
                if m.group(1) is None:
                    raise InvalidArgument("Missing model name in request.")
                model_name = _decode_name(m.group(1))
                version = _decode_version(m.group(2))
                label = _decode_label(m.group(3))
                if m.group(4) == "metadata":
                    out = await self._metadata(ModelRef(model_name, version, label))
                else:
                    # TF Serving ignores /labels/<l> for status (spec 2.7).
                    out = self._status(model_name, version)
            else:
                raise InvalidArgument(f"Malformed request: {method} {raw}")
            resp = _json_response(out)
        except _EmptyBodyError as e:
            code = Code.INVALID_ARGUMENT
            log.debug("REST %s %s: %s", request.method, raw, e)
            resp = _json_response(b"", status=400)
        except _BodyTooLarge as e:
            code = Code.RESOURCE_EXHAUSTED
            resp = _json_response(json_tensor.format_error(e.message), status=413)
        except ServingError as e:
            code = e.code
            resp = _json_response(json_tensor.format_error(e.message), status=e.http_status)
        except Exception as e:  # a bug must not take the server down; report it as INTERNAL
            log.exception("REST %s %s failed", request.method, raw)
            err = Internal(f"{type(e).__name__}: {e}")
            code = err.code
            resp = _json_response(json_tensor.format_error(err.message), status=err.http_status)
        self.metrics.record_request(model_name, api, "REST", code)
        if code == Code.OK:
            self.metrics.observe_latency(model_name, api, "REST", time.perf_counter() - start)
        return resp

    # -- body ------------------------------------------------------------------------------

    async def _read_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise _BodyTooLarge(self._too_large_message(request.content_length))
        if "gzip" not in request.headers.get("Content-Encoding", "").lower():
            try:
                return await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise _BodyTooLarge(self._too_large_message(None)) from None
        return await self._read_gzip_body(request)

    async def _read_gzip_body(self, request: web.Request) -> bytes:
        """gzip bodies may inflate to 100 MiB, as in TF Serving.

        aiohttp's server inflates request bodies itself unless ``auto_decompress=False``; either
        way the limit is enforced on the inflated bytes while reading, so a small "gzip bomb"
        never gets buffered whole.
        """
        chunks: list[bytes] = []
        total = 0
        inflater: Any = None
        try:
            async for chunk in request.content.iter_any():
                if not chunks and inflater is None and chunk[:2] == b"\x1f\x8b":
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # still compressed
                if inflater is not None:
                    chunk = inflater.decompress(chunk, MAX_GZIP_UNCOMPRESSED_BYTES + 1 - total)
                    if inflater.unconsumed_tail:
                        total = MAX_GZIP_UNCOMPRESSED_BYTES + 1
                total += len(chunk)
                if total > MAX_GZIP_UNCOMPRESSED_BYTES:
                    raise InvalidArgument(
                        "Decompressed request body exceeds the limit of "
                        f"{MAX_GZIP_UNCOMPRESSED_BYTES} bytes"
                    )
                chunks.append(chunk)
        except ServingError:
            raise
        except Exception as e:  # zlib.error, aiohttp's ContentEncodingError, ...
            raise InvalidArgument(f"Failed to decompress gzip request body: {e}") from None
        return b"".join(chunks)

    def _too_large_message(self, size: int | None) -> str:
        got = f" of {size} bytes" if size is not None else ""
        return f"Request body{got} exceeds the limit of {self.max_body_bytes} bytes"

    async def _offload(self, heavy: bool, fn: Callable[..., T], *args: Any) -> T:
        if not heavy:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # -- routes ----------------------------------------------------------------------------

    async def _predict(self, ref: ModelRef, body: bytes) -> bytes:
        heavy = len(body) > OFFLOAD_BODY_BYTES
        req = await self._offload(heavy, json_tensor.parse_predict_body, body)
        ref = ModelRef(ref.name, ref.version, ref.label, req.signature_name)
        _, sig = self._resolve_signature(ref)
        if not sig.inputs:
            raise InvalidArgument(
                f"Failed to get input map for signature: {req.signature_name or 'DEFAULT'}"
            )
        inputs = await self._offload(heavy, json_tensor.decode_predict_inputs, req, sig.inputs)
        # The data plane enforces timeout_s around inference (DEADLINE_EXCEEDED -> 504).
        result = await self.dataplane.predict(ref, inputs, timeout_s=self.timeout_s)
        size = sum(getattr(a, "size", 0) for a in result.outputs.values())
        return await self._offload(
            size > OFFLOAD_OUTPUT_ELEMENTS,
            json_tensor.format_predict_response,
            result.outputs,
            req.row_format,
        )

    def _resolve_signature(self, ref: ModelRef) -> tuple[int, SignatureInfo]:
        try:
            return self.dataplane.resolve_signature(ref)
        except ServingError as e:
            # The REST handler words a missing signature its own way (and always as 400).
            if (
                e.code != Code.NOT_FOUND
                and "signature" in e.message.lower()
                and ("not found" in e.message.lower())
            ):
                raise InvalidArgument(
                    f'Serving signature name: "{ref.signature}" not found in signature def'
                ) from None
            raise

    async def _classify_regress(self, api: str, ref: ModelRef, body: bytes) -> bytes:
        heavy = len(body) > OFFLOAD_BODY_BYTES
        req = await self._offload(heavy, json_tensor.parse_examples_body, body, api)
        ref = ModelRef(ref.name, ref.version, ref.label, req.signature_name)
        if api == "classify":
            cls = await self.dataplane.classify(
                ref, req.examples, req.context, timeout_s=self.timeout_s
            )
            return json_tensor.format_classify_response(cls.classifications)
        reg = await self.dataplane.regress(ref, req.examples, req.context, timeout_s=self.timeout_s)
        return json_tensor.format_regress_response(reg.values)

    def _status(self, name: str, version: int | None) -> bytes:
        rows = self.dataplane.model_status(name, version, None)
        rows = sorted(rows, key=lambda r: r.version, reverse=True)
        doc = {
            "model_version_status": [
                {
                    "version": str(r.version),
                    "state": r.state,
                    "status": {
                        "error_code": _code_name(r.error_code),
                        "error_message": r.error_message,
                    },
                }
                for r in rows
            ]
        }
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2)

    async def _metadata(self, ref: ModelRef) -> bytes:
        md = self.dataplane.model_metadata(ref)
        spec = {"name": md.model_name, "signature_name": "", "version": str(md.version)}
        if md.signature_def_map is not None:
            sig_json = await self._offload(True, _proto_json, md.signature_def_map)
        else:
            sig_json = orjson.dumps(
                {"signature_def": {k: _signature_json(v) for k, v in md.signatures.items()}},
                option=orjson.OPT_INDENT_2,
            ).decode()
        # http_rest_api_util.cc glues two printer outputs together exactly like this.
        text = (
            '{\n"model_spec":'
            + orjson.dumps(spec, option=orjson.OPT_INDENT_2).decode()
            + ',\n"metadata": {"signature_def": '
            + sig_json
            + "}\n}\n"
        )
        return text.encode()


def _code_name(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return Code.UNKNOWN.name


def _proto_json(message: Any) -> str:
    from google.protobuf import json_format

    return json_format.MessageToJson(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        indent=1,
        ensure_ascii=False,
    )


def create_rest_app(
    dataplane: DataPlane,
    metrics: Metrics,
    *,
    rest_api_timeout_ms: int = 0,
    monitoring_path: str | None = None,
    enable_cors: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> web.Application:
    """The REST application for one server.

    ``rest_api_timeout_ms`` <= 0 means no inference timeout (TF Serving's flag default is
    30000; the server passes the flag through). ``monitoring_path`` serves Prometheus text when
    set (the server passes ``prometheus_config.path`` only when ``enable: true``).
    ``enable_cors`` is ``--rest_api_enable_cors_support``.
    """
    api = RestApi(
        dataplane,
        metrics,
        rest_api_timeout_ms=rest_api_timeout_ms,
        monitoring_path=monitoring_path,
        enable_cors=enable_cors,
        max_body_bytes=max_body_bytes,
    )
    # aiohttp checks client_max_size while reading; keep it a little above ours so that our own
    # check (with the clearer message) normally fires first.
    with warnings.catch_warnings():  # aiohttp calls a custom router deprecated; it still works
        warnings.simplefilter("ignore", DeprecationWarning)
        app = web.Application(client_max_size=max_body_bytes + 1, router=_CatchAllRouter())
    app[REST_API_KEY] = api
    app.router.add_route("*", "/{tail:.*}", api.dispatch)
    return app


class _CatchAllRouter(web.UrlDispatcher):
    """The app has one catch-all route (dispatch reads the raw path itself), so a plain
    ``/...`` path needs no URL parsing and matching: aiohttp's resolve builds a yarl URL and
    runs the route's regex, about a tenth of the event loop's time per predict request.
    Paths with escapes (or not starting with ``/``) take aiohttp's own resolve, as before."""

    def __init__(self) -> None:
        super().__init__()
        self._catch_all: Any = None

    async def resolve(self, request: web.Request) -> AbstractMatchInfo:
        raw = request.raw_path
        if raw[:1] == "/" and "%" not in raw:
            route = self._catch_all
            if route is None:
                routes = list(self.routes())
                if len(routes) == 1 and routes[0].method == "*":
                    route = self._catch_all = routes[0]
            if route is not None:
                return UrlMappingMatchInfo({"tail": raw.split("?", 1)[0][1:]}, route)
        return await super().resolve(request)
