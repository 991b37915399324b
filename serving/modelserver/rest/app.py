"""TF Serving's HTTP/REST surface on aiohttp (spec section 2): the app and its routes.

``create_rest_app`` returns an ``aiohttp.web.Application`` that the server mounts on the REST
port. It only translates: URLs (``urls``) and bodies (``body``, ``predict_body``, ``examples``)
in, ``types.DataPlane`` calls, JSON out (``responses``, ``model_info``); every failure goes
through ``errors.as_serving_error`` once and leaves as its HTTP status and TF Serving's error
body.

Dispatch follows TF Serving's layers: the Prometheus path (exact match) first, then anything
whose *raw* path-and-query matches ``(?i)/v1/.*`` goes to the API handler, everything else is a
404 HTML page.

Work placement: small bodies (an MNIST image is ~16 KB of JSON) are parsed and formatted on the
event loop, where a thread hop would cost more than the work; large bodies and large outputs go
to the default thread pool so the loop keeps serving other connections. Inference itself runs
in the data plane, off the loop.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.abc import AbstractMatchInfo
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from serving.modelserver import errors
from serving.modelserver.errors import Code, InvalidArgument
from serving.modelserver.metrics import Metrics
from serving.modelserver.rest import examples, model_info, predict_body, responses, urls
from serving.modelserver.rest.body import DEFAULT_MAX_BODY_BYTES, read_body
from serving.modelserver.types import DataPlane, ModelRef

log = logging.getLogger("serving.modelserver.rest")

# Bodies / outputs above these sizes are handled on a worker thread instead of the loop.
OFFLOAD_BODY_BYTES = 64 * 1024
OFFLOAD_OUTPUT_ELEMENTS = 16 * 1024

JSON_CONTENT_TYPE = "application/json"

# Options for the ``web.AppRunner`` that serves this app: TF Serving inflates only gzip bodies
# (handled in ``body``, with its 100 MiB limit); aiohttp's own inflating would also accept
# deflate and answer br with a text 400. ``web.AppRunner(app, **RUNNER_OPTIONS)``.
RUNNER_OPTIONS: dict[str, Any] = {"access_log": None, "auto_decompress": False}

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


def _json_response(body: bytes, status: int = 200) -> web.Response:
    resp = web.Response(body=body, status=status)
    resp.headers["Content-Type"] = JSON_CONTENT_TYPE
    return resp


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
        if urls.V1.fullmatch(raw) is None:
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
            route = urls.match(request.method, raw)
            api = route.api
            model_name = urls.decode_name(route.name)
            ref = ModelRef(
                model_name, urls.decode_version(route.version), urls.decode_label(route.label)
            )
            if route.kind == "predict":
                out = await self._predict(ref, await read_body(request, self.max_body_bytes))
            elif api:
                body = await read_body(request, self.max_body_bytes)
                out = await self._classify_regress(api, ref, body)
            elif route.kind == "metadata":
                out = await self._metadata(ref)
            else:
                # TF Serving ignores /labels/<l> for status (spec 2.7).
                out = model_info.format_status(self.dataplane.model_status(model_name, ref.version))
            resp = _json_response(out)
        except Exception as exc:  # noqa: BLE001 - a bug must not take the server down
            err = errors.as_serving_error(
                exc, unexpected=errors.Internal, where=f"REST {request.method} {raw}"
            )
            code = err.code
            if err.empty_http_body:
                log.debug("REST %s %s: %s", request.method, raw, err.message)
                resp = _json_response(b"", status=err.http_status)
            else:
                resp = _json_response(responses.format_error(err.message), status=err.http_status)
        self.metrics.record_request(model_name, api, "REST", code)
        if code == Code.OK:
            self.metrics.observe_latency(model_name, api, "REST", time.perf_counter() - start)
        return resp

    async def _offload(self, heavy: bool, fn: Callable[..., T], *args: Any) -> T:
        if not heavy:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # -- routes ----------------------------------------------------------------------------

    async def _predict(self, ref: ModelRef, body: bytes) -> bytes:
        heavy = len(body) > OFFLOAD_BODY_BYTES
        req = await self._offload(heavy, predict_body.parse_predict_body, body)
        ref = ModelRef(ref.name, ref.version, ref.label, req.signature_name)
        _, sig = self.dataplane.resolve_signature(ref)
        if not sig.inputs:
            raise InvalidArgument(
                f"Failed to get input map for signature: {req.signature_name or 'DEFAULT'}"
            )
        inputs = await self._offload(heavy, predict_body.decode_predict_inputs, req, sig.inputs)
        # The data plane enforces timeout_s around inference (DEADLINE_EXCEEDED -> 504).
        result = await self.dataplane.predict(ref, inputs, timeout_s=self.timeout_s)
        size = sum(getattr(a, "size", 0) for a in result.outputs.values())
        return await self._offload(
            size > OFFLOAD_OUTPUT_ELEMENTS,
            responses.format_predict_response,
            result.outputs,
            req.row_format,
        )

    async def _classify_regress(self, api: str, ref: ModelRef, body: bytes) -> bytes:
        heavy = len(body) > OFFLOAD_BODY_BYTES
        req = await self._offload(heavy, examples.parse_examples_body, body, api)
        ref = ModelRef(ref.name, ref.version, ref.label, req.signature_name)
        if api == "classify":
            cls = await self.dataplane.classify(
                ref, req.examples, req.context, timeout_s=self.timeout_s
            )
            return responses.format_classify_response(cls.classifications)
        reg = await self.dataplane.regress(ref, req.examples, req.context, timeout_s=self.timeout_s)
        return responses.format_regress_response(reg.values)

    async def _metadata(self, ref: ModelRef) -> bytes:
        md = self.dataplane.model_metadata(ref)
        sig_json = await self._offload(True, model_info.signature_def_json, md)
        return model_info.format_metadata(md, sig_json)


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
