"""The serving side of the house: launch a backend, roll models out, and the embedded server.

Owns: ``backends`` (start/stop/inspect tensorflow/serving in Docker or the embedded server,
the server record, gRPC control of a running server), ``config`` (the one configuration
source, rendered per backend), ``modelserver`` (the embedded TF Serving stand-in),
``rollout`` (model-level rollout: labels, reload, rollout state) and ``cli``
(``python -m serving``).

Must never import: training or evaluation code. From ``export`` only the launcher side reads
the model repository (``export.repository``, ``export.rollout_state``); ``serving.modelserver``
imports nothing from ``export``, ``serving.backends``, ``serving.config`` or ``serving.rollout``.
"""
