"""TF Serving config messages that ``tensorflow-serving-api`` does not ship.

``MonitoringConfig``/``PrometheusConfig``, ``BatchingParameters`` and ``SSLConfig`` are defined here with
TF Serving's full names (``tensorflow.serving.*``), field names and numbers, so
``google.protobuf.text_format`` parses the same files that ``tensorflow_model_server`` reads.
The ``.proto`` files beside this module document the schema; the descriptors are built in
Python so that no protoc step is needed at install time.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_F = descriptor_pb2.FieldDescriptorProto
_POOL = descriptor_pool.Default()


def _field(
    name: str,
    number: int,
    ftype: int,
    type_name: str = "",
    label: int = _F.LABEL_OPTIONAL,
) -> _F:
    field = _F(name=name, number=number, type=ftype, label=label)
    if type_name:
        field.type_name = type_name
    return field


def _build() -> None:
    try:  # already registered (module reloaded, or another copy built it)
        _POOL.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
        _POOL.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
        _POOL.FindMessageTypeByName("tensorflow.serving.SSLConfig")
        return
    except KeyError:
        pass

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    prom = monitoring.message_type.add(name="PrometheusConfig")
    prom.field.extend([_field("enable", 1, _F.TYPE_BOOL), _field("path", 2, _F.TYPE_STRING)])
    mon = monitoring.message_type.add(name="MonitoringConfig")
    mon.field.append(
        _field("prometheus_config", 1, _F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")
    )

    # wrappers.proto must be in the pool before a file that imports it.
    _POOL.FindFileByName(wrappers_pb2.DESCRIPTOR.name)
    batching = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    bp = batching.message_type.add(name="BatchingParameters")
    i64 = ".google.protobuf.Int64Value"
    bp.field.extend(
        [
            _field("max_batch_size", 1, _F.TYPE_MESSAGE, i64),
            _field("batch_timeout_micros", 2, _F.TYPE_MESSAGE, i64),
            _field("max_enqueued_batches", 3, _F.TYPE_MESSAGE, i64),
            _field("num_batch_threads", 4, _F.TYPE_MESSAGE, i64),
            _field("thread_pool_name", 5, _F.TYPE_MESSAGE, ".google.protobuf.StringValue"),
            _field("allowed_batch_sizes", 6, _F.TYPE_INT64, label=_F.LABEL_REPEATED),
            _field("pad_variable_length_inputs", 7, _F.TYPE_BOOL),
            _field(
                "enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, ".google.protobuf.BoolValue"
            ),
            _field("max_execution_batch_size", 9, _F.TYPE_MESSAGE, i64),
        ]
    )
    ssl = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/ssl_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    ssl.message_type.add(name="SSLConfig").field.extend(
        [
            _field("server_key", 1, _F.TYPE_STRING),
            _field("server_cert", 2, _F.TYPE_STRING),
            _field("custom_ca", 3, _F.TYPE_STRING),
            _field("client_verify", 4, _F.TYPE_BOOL),
        ]
    )
    _POOL.Add(monitoring)
    _POOL.Add(batching)
    _POOL.Add(ssl)


_build()

PrometheusConfig = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.PrometheusConfig")
)
MonitoringConfig = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
)
BatchingParameters = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
)

SSLConfig = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.SSLConfig")
)

__all__ = ["BatchingParameters", "MonitoringConfig", "PrometheusConfig", "SSLConfig"]
