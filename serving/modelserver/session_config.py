"""The one ConfigProto every model Session gets, built from the flags in server.cc's order.

server.cc (``Server::BuildAndStart``), for the TensorFlow platform:

1. ``--tensorflow_session_config_file``: a ConfigProto text file, parsed first;
2. ``gpu_options.per_process_gpu_memory_fraction`` = ``--per_process_gpu_memory_fraction``;
3. threads: all three parallelism flags > 0 is an error; else if intra or inter > 0, both
   ``intra_op_parallelism_threads`` and ``inter_op_parallelism_threads`` are set from those two
   flags (one of them may be 0 = TensorFlow's choice); else both are set to
   ``--tensorflow_session_parallelism``. So the file's own thread counts never survive: the
   last branch overwrites them with 0 (auto) when no flag is given. That is TF Serving's
   behaviour and it is kept.
4. ``--mixed_precision=bfloat16`` (saved_model_bundle_factory.cc): the oneDNN bf16 graph
   rewriter, ``graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = ON``; any
   other non-empty value logs a warning and changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from serving.modelserver import errors

log = logging.getLogger("serving.modelserver")

BFLOAT16 = "bfloat16"


@dataclass(frozen=True)
class SessionFlags:
    """The flags that shape the ConfigProto (a subset of ``flags.ServerFlags``)."""

    tensorflow_session_config_file: str = ""
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    per_process_gpu_memory_fraction: float = 0.0
    mixed_precision: str = ""

    @classmethod
    def from_flags(cls, flags: Any) -> SessionFlags:
        return cls(**{name: getattr(flags, name) for name in cls.__dataclass_fields__})


def build(flags: SessionFlags) -> Any:
    """The ConfigProto for every session; raises ``config.ConfigError`` for an unreadable
    file and ``errors.InvalidArgument`` for conflicting parallelism flags."""
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2

    from serving.modelserver.config import parse_text_proto_file

    proto = config_pb2.ConfigProto()
    if flags.tensorflow_session_config_file:
        parse_text_proto_file(flags.tensorflow_session_config_file, proto)
    proto.gpu_options.per_process_gpu_memory_fraction = flags.per_process_gpu_memory_fraction
    intra = flags.tensorflow_intra_op_parallelism
    inter = flags.tensorflow_inter_op_parallelism
    both = flags.tensorflow_session_parallelism
    if intra > 0 and inter > 0 and both > 0:
        raise errors.InvalidArgument(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. "
            "You cannot configure all."
        )
    if intra > 0 or inter > 0:
        proto.intra_op_parallelism_threads = intra
        proto.inter_op_parallelism_threads = inter
    else:
        proto.intra_op_parallelism_threads = both
        proto.inter_op_parallelism_threads = both
    if flags.mixed_precision == BFLOAT16:
        log.info("Running inference with bfloat16 auto mixed precision")
        proto.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = (
            rewriter_config_pb2.RewriterConfig.ON
        )
    elif flags.mixed_precision:
        log.warning(
            "%s auto mixed precision is not supported. Valid option: bfloat16",
            flags.mixed_precision,
        )
    return proto


def apply_to_eager_context(proto: Any) -> None:
    """Give TensorFlow's eager context (warmup's TFRecord reader) the same thread counts.

    Thread pools are created with the first device, process-wide; this must run before
    TensorFlow executes anything, hence before the first model loads."""
    intra, inter = proto.intra_op_parallelism_threads, proto.inter_op_parallelism_threads
    if intra <= 0 and inter <= 0:
        return
    import tensorflow as tf

    try:
        if intra > 0:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter > 0:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError as exc:  # context already initialised: the sessions still get them
        log.warning("Could not apply thread counts to the eager context: %s", exc)
