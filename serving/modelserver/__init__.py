"""Embedded, flag- and wire-compatible stand-in for ``tensorflow_model_server``.

Owns: flags and config files (``flags``, ``config``, ``protos``), version discovery
(``sources``), the model manager (``manager``), one loaded version (``servable``), warmup
(``warmup``), the one inference path (``inference``), dynamic batching (``batching``), the data
plane (``dataplane``, behind the ``types.DataPlane`` protocol), the transports (``rest/``,
``grpc_api``), typed errors (``errors``), metrics (``metrics``) and the process (``server``,
``process``).

Must never import: ``export`` (the model repository is read as directories, like TF Serving
does), ``serving.backends``, ``serving.config``, ``serving.rollout``. From ``clients`` only the
wire vocabulary, the codec and the plain types. The transports see the data plane only
through ``types.DataPlane``.
"""
