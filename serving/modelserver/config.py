"""Text-proto configuration files, read and validated the way tensorflow_model_server does.

* ``--model_config_file``: ``tensorflow.serving.ModelServerConfig`` (the class that
  ``tensorflow-serving-api`` ships); without it a one-model config is synthesised from
  ``--model_name``/``--model_base_path`` (main.cc).
* ``--batching_parameters_file``: ``BatchingParameters`` (``protos/``), turned into
  ``batching.BatchingOptions`` with TF's defaults for omitted fields.
* ``--monitoring_config_file``: ``MonitoringConfig`` (``protos/``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.modelserver import errors
from serving.modelserver.batching import BatchingOptions
from serving.modelserver.protos import BatchingParameters, MonitoringConfig

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
SUPPORTED_PLATFORMS = ("tensorflow",)


class ConfigError(errors.InvalidArgument):
    """A config file that does not parse; ``detail`` is protobuf's parser message."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


def parse_text_proto_file(path: str, message):
    """Parse a text-proto file into ``message`` (an instance) or raise ConfigError.

    TF Serving logs ``Error parsing text-format <full name>: <line>:<col>: <what>`` and fails
    with ``Invalid protobuf file: '<path>'``; ConfigError carries both.
    """
    full_name = message.DESCRIPTOR.full_name
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"Invalid protobuf file: '{path}'", f"{exc}") from None
    try:
        text_format.Parse(text, message)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"Invalid protobuf file: '{path}'",
            f"Error parsing text-format {full_name}: {exc}",
        ) from None
    return message


def single_model_config(model_name: str, model_base_path: str) -> ModelServerConfig:
    """main.cc: platform tensorflow, default (latest 1) version policy."""
    config = ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = model_name
    model.base_path = model_base_path
    model.model_platform = "tensorflow"
    return config


def read_model_server_config(path: str) -> ModelServerConfig:
    return parse_text_proto_file(path, ModelServerConfig())


def _is_absolute_or_uri(path: str) -> bool:
    return os.path.isabs(path) or "://" in path


def validate_model_server_config(
    config: ModelServerConfig, previous: ModelServerConfig | None = None
) -> None:
    """server_core.cc's checks, with its messages. Raises errors.ServingError."""
    kind = config.WhichOneof("config")
    if kind == "custom_model_config":
        raise errors.InvalidArgument(
            "ServerModelConfig type not supported by HandleReloadConfigRequest. "
            "Only ModelConfigList is currently supported"
        )
    seen: set[str] = set()
    old_platforms = {}
    if previous is not None:
        old_platforms = {m.name: _platform(m) for m in previous.model_config_list.config}
    for model in config.model_config_list.config:
        if model.name in seen:
            raise errors.InvalidArgument(
                f"Illegal to list model {model.name} multiple times in config list"
            )
        seen.add(model.name)
        platform = _platform(model)
        if not platform:
            raise errors.InvalidArgument(
                "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                f"ModelServerConfig::model_platform, model name is {model.name}"
            )
        if platform not in SUPPORTED_PLATFORMS:
            raise errors.InvalidArgument(
                f"Model {model.name} requests unsupported platform {platform}"
            )
        if model.name in old_platforms and old_platforms[model.name] != platform:
            raise errors.InvalidArgument(
                f"Illegal to change a model's platform. For model {model.name} platform was "
                f"{old_platforms[model.name]} and new platform requested is {platform}"
            )
        if not _is_absolute_or_uri(model.base_path):
            raise errors.InvalidArgument(
                f"Expected model {model.name} to have an absolute path or URI; "
                f"got base_path()={model.base_path}"
            )
        if "://" in model.base_path:
            raise errors.Unimplemented(
                f"File system scheme of {model.base_path} is not supported by the embedded "
                "server (local paths only)"
            )


def _platform(model: ModelConfig) -> str:
    if model.model_platform:
        return model.model_platform
    # Deprecated model_type enum: TENSORFLOW = 1, OTHER = 2.
    return "tensorflow" if model.model_type == 1 else ""


# --- batching -------------------------------------------------------------------------------


def batching_options_from_proto(params, *, from_file: bool) -> BatchingOptions:
    """TF's defaults for omitted fields (shared_batch_scheduler.h), then TF Serving's checks."""
    opts = BatchingOptions(
        thread_pool_name="batch_threads" if from_file else "model_server_batch_threads"
    )
    if params.HasField("max_batch_size"):
        opts.max_batch_size = params.max_batch_size.value
    if params.HasField("batch_timeout_micros"):
        opts.batch_timeout_micros = params.batch_timeout_micros.value
    if params.HasField("max_enqueued_batches"):
        opts.max_enqueued_batches = params.max_enqueued_batches.value
    if params.HasField("num_batch_threads"):
        opts.num_batch_threads = params.num_batch_threads.value
    if params.HasField("thread_pool_name"):
        opts.thread_pool_name = params.thread_pool_name.value
    opts.allowed_batch_sizes = tuple(params.allowed_batch_sizes)
    opts.pad_variable_length_inputs = params.pad_variable_length_inputs
    if params.HasField("enable_large_batch_splitting"):
        opts.enable_large_batch_splitting = params.enable_large_batch_splitting.value
    if params.HasField("max_execution_batch_size"):
        opts.max_execution_batch_size = params.max_execution_batch_size.value
    opts.validate()
    return opts


def read_batching_options(path: str) -> BatchingOptions:
    if not path:
        return batching_options_from_proto(BatchingParameters(), from_file=False)
    return batching_options_from_proto(
        parse_text_proto_file(path, BatchingParameters()), from_file=True
    )


# --- monitoring -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PrometheusSettings:
    enabled: bool = False
    path: str = DEFAULT_PROMETHEUS_PATH


def read_monitoring_config(path: str) -> PrometheusSettings:
    if not path:
        return PrometheusSettings()
    config = parse_text_proto_file(path, MonitoringConfig())
    prom = config.prometheus_config
    return PrometheusSettings(enabled=prom.enable, path=prom.path or DEFAULT_PROMETHEUS_PATH)
