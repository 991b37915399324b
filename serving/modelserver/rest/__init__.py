"""The REST wing of the embedded server: TF Serving's HTTP/REST API, translated to the data plane.

Owns: the aiohttp app and its routes (``app``), the URL grammar (``urls``), request bodies and
their limits (``body``: size limit, gzip), TF Serving's JSON dialect (``json_parser``), JSON ->
tensor (``tensors``, ``predict_body``), tf.Example JSON (``examples``) and response bodies
(``responses``, ``model_info``).

Must never import: the manager, the servables, batching or the concrete data plane (only the
``types.DataPlane`` protocol), the gRPC surface, TensorFlow, ``export``.
"""

from __future__ import annotations

from serving.modelserver.rest.app import REST_API_KEY, RUNNER_OPTIONS, RestApi, create_rest_app

__all__ = ["REST_API_KEY", "RUNNER_OPTIONS", "RestApi", "create_rest_app"]
