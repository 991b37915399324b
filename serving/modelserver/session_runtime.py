"""A SavedModel version run the way TF Serving's ``SavedModelBundle`` runs it: one
``tf.compat.v1.Session`` over its own ``tf.Graph``, fed and fetched by graph tensor name.

Why a Session and not ``tf.saved_model.load(...).signatures``: TF Serving loads every
SavedModel, TF1 and TF2 alike, with the C++ SavedModel loader into a Session (tags, assets,
``main_op`` / ``legacy_init_op`` / ``__saved_model_init_op``, table initializers) and runs a
signature as the feeds and fetches of its SignatureDef. Wrapping a TF1 graph as a function
breaks graphs that a Session runs fine (``saved_model_half_plus_three`` fails with "Shape must be
rank 1 but is rank 0 for node ParseExample"), and a concrete function checks input shapes
against its signature where TF Serving leaves shapes to the kernels.

Each (feeds, fetches) pair gets one callable made from ``CallableOptions``
(``Session._make_callable_from_options``, TF's C callable API). ``Session.run`` and
``Session.make_callable(..., feed_list=...)`` both check feed shapes in Python against the
placeholder ("Cannot feed value of shape (1,) for Tensor x:0, which has shape (None, 1)"); the C
callable does not, like TF Serving's C++ ``Session::Run``. It is also the cheapest way in: no
per-call graph lookup or fetch mapping in Python. Callables are thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from serving.modelserver import errors


def _tf():
    import tensorflow as tf  # imported lazily: ~2.5 s, only needed once a model loads

    return tf


def _serving_error(exc: Exception) -> errors.ServingError:
    """A TensorFlow error as the ServingError with the same canonical code."""
    tf = _tf()
    if isinstance(exc, tf.errors.OpError):
        return errors.ServingError(exc.message, errors.Code(exc.error_code))
    return errors.Internal(str(exc))


class SessionBundle:
    """One loaded SavedModel: its Session and the MetaGraphDef the loader returned."""

    def __init__(self, session: Any, meta_graph: Any) -> None:
        self.session = session
        self.meta_graph = meta_graph
        self._callables: dict[tuple[tuple[str, ...], tuple[str, ...]], Callable] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, export_dir: str, tags: Sequence[str], config: Any = None) -> SessionBundle:
        """Load ``export_dir``'s MetaGraphDef tagged ``tags`` into a new Session.

        ``config`` is the ConfigProto every session of the server shares (threads, the bf16
        rewriter, ...). Raises ServingError: a TensorFlow error keeps its code, anything else
        (a graph the loader cannot import) is UNKNOWN, as the C++ loader reports it."""
        tf = _tf()
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph, config=config)
        try:
            with graph.as_default():
                meta = tf.compat.v1.saved_model.loader.load(session, list(tags), export_dir)
        except tf.errors.OpError as exc:
            session.close()
            raise errors.ServingError(
                f"Failed to load SavedModel at {export_dir}: {exc.message}",
                errors.Code(exc.error_code),
            ) from None
        except Exception as exc:  # import/restore failures the loader raises as Python errors
            session.close()
            raise errors.Unknown(f"Failed to load SavedModel at {export_dir}: {exc}") from None
        # Nothing may add ops once serving starts: a finalized graph turns such a bug into an
        # error instead of a slowly growing graph.
        graph.finalize()
        return cls(session, meta)

    def callable(self, feeds: tuple[str, ...], fetches: tuple[str, ...]) -> Callable:
        """The C callable for these graph tensor names, made once and cached."""
        key = (feeds, fetches)
        fn = self._callables.get(key)
        if fn is not None:
            return fn
        from tensorflow.core.protobuf import config_pb2

        with self._lock:
            fn = self._callables.get(key)
            if fn is None:
                options = config_pb2.CallableOptions(feed=list(feeds), fetch=list(fetches))
                try:
                    fn = self.session._make_callable_from_options(options)
                except Exception as exc:  # a fetch or feed name the graph does not have
                    raise _serving_error(exc) from None
                self._callables[key] = fn
        return fn

    def run(
        self, feeds: Sequence[tuple[str, np.ndarray]], fetches: Sequence[str]
    ) -> list[np.ndarray]:
        """Feed (tensor name, value) pairs, return the fetched tensors in ``fetches`` order."""
        fn = self.callable(tuple(name for name, _ in feeds), tuple(fetches))
        values = [_feedable(arr) for _, arr in feeds]
        tf = _tf()
        try:
            results = fn(*values)
        except tf.errors.OpError as exc:
            raise errors.ServingError(exc.message, errors.Code(exc.error_code)) from None
        except (TypeError, ValueError) as exc:  # a value the C API cannot turn into a tensor
            raise errors.InvalidArgument(str(exc)) from None
        return [np.asarray(r) for r in results]

    def close(self) -> None:
        """Free the Session now (dropping the last reference does the same, later)."""
        self._callables.clear()
        self.session.close()


def _feedable(arr: np.ndarray) -> np.ndarray:
    # The C API copies from a C-contiguous buffer; a strided view (e.g. a column slice from
    # the batcher) must be compacted first.
    if arr.dtype != object and not arr.flags.c_contiguous:
        return np.ascontiguousarray(arr)
    return arr
