"""Reload a built version the way TensorFlow Serving loads it: a TF1 Session over its own graph.

The gate must refuse what a model server cannot serve. ``tf.saved_model.load`` accepts some
SavedModels that the SavedModel loader of a Session (TF Serving's, and the embedded server's
``serving/modelserver/session_runtime.py``) cannot restore: a ``tf.Module`` that tracks a Keras 3
model object instead of its plain variables fails with "Could not find variable ...". So the
reload check goes through ``tf.compat.v1.saved_model.loader.load`` and runs signatures through
callables made from ``CallableOptions`` (feeds and fetches of the SignatureDef), as the server
does. Kept inside ``export/`` on purpose: export never imports the server's internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class SessionModel:
    def __init__(self, session: Any, meta_graph: Any) -> None:
        self.session = session
        self.meta_graph = meta_graph
        self._callables: dict[tuple[str, tuple[str, ...]], Any] = {}

    @classmethod
    def load(cls, export_dir: str, tags: Sequence[str] = ("serve",)) -> SessionModel:
        """Raises whatever the loader raises (the gate reports it as a failed reload)."""
        import tensorflow as tf

        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph)
        try:
            with graph.as_default():
                meta = tf.compat.v1.saved_model.loader.load(session, list(tags), export_dir)
        except Exception:
            session.close()
            raise
        graph.finalize()
        return cls(session, meta)

    @property
    def signature_keys(self) -> list[str]:
        return sorted(self.meta_graph.signature_def)

    def call(self, signature: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Feed ``inputs`` by alias (every input of the signature), fetch every output."""
        from tensorflow.core.protobuf import config_pb2

        sig = self.meta_graph.signature_def[signature]
        aliases = tuple(sorted(inputs))
        key = (signature, aliases)
        fn = self._callables.get(key)
        if fn is None:
            options = config_pb2.CallableOptions(
                feed=[sig.inputs[a].name for a in aliases],
                fetch=[t.name for t in sig.outputs.values()],
            )
            fn = self.session._make_callable_from_options(options)
            self._callables[key] = fn
        values = fn(*[inputs[a] for a in aliases])
        return {alias: np.asarray(v) for alias, v in zip(sig.outputs, values, strict=True)}

    def close(self) -> None:
        self._callables.clear()
        self.session.close()
