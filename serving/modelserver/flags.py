"""tensorflow_model_server's command line, parsed with TensorFlow's flag rules.

TF's parser (``tensorflow/core/util/command_line_flags.cc``) accepts only ``--name=value``;
booleans also accept a bare ``--name``; a value that does not parse fails the whole parse
(usage printed, exit 255); arguments that match no flag are left over and main.cc prints
``unknown argument: <first>`` plus the usage and carries on.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields

SERVER_VERSION = "2.21.0-embedded"
EXIT_BAD_FLAGS = 255  # main.cc returns -1


@dataclass
class ServerFlags:
    """One attribute per flag, named as the flag, with tensorflow_model_server's defaults."""

    port: int = 8500
    grpc_socket_path: str = ""
    rest_api_port: int = 0
    rest_api_num_threads: int = 4 * (os.cpu_count() or 1)
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    enable_batching: bool = False
    batching_parameters_file: str = ""
    enable_per_model_batching_parameters: bool = False
    allow_version_labels_for_unavailable_models: bool = False
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    num_load_threads: int = 0
    num_unload_threads: int = 0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    file_system_poll_wait_seconds: int = 1
    flush_filesystem_caches: bool = True
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    tensorflow_session_config_file: str = ""
    use_alts_credentials: bool = False
    ssl_config_file: str = ""
    platform_config_file: str = ""
    per_process_gpu_memory_fraction: float = 0.0
    saved_model_tags: str = "serve"
    grpc_channel_arguments: str = ""
    grpc_max_threads: int = 4 * (os.cpu_count() or 1)
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    version: bool = False
    monitoring_config_file: str = ""
    remove_unused_fields_from_bundle_metagraph: bool = True
    prefer_tflite_model: bool = False
    num_tflite_pools: int = os.cpu_count() or 1
    num_tflite_interpreters_per_pool: int = 1
    enable_signature_method_name_check: bool = False
    xla_cpu_compilation_enabled: bool = False
    xla_gpu_compilation_enabled: bool = False
    enable_profiler: bool = True
    thread_pool_factory_config_file: str = ""
    mixed_precision: str = ""
    skip_initialize_tpu: bool = False
    enable_grpc_healthcheck_service: bool = False
    enable_serialization_as_tensor_content: bool = False
    # Extension (not in tensorflow_model_server): the address both listeners bind. TF Serving
    # always binds all interfaces; tests and local use pass 127.0.0.1.
    bind_address: str = "0.0.0.0"
    # Extension: how long SIGTERM waits for in-flight requests before exiting.
    shutdown_grace_seconds: float = 10.0
    # Extension: worker processes sharing the ports (SO_REUSEPORT) under one control plane
    # (serving/modelserver/workers/). 1 = the single-process server.
    num_workers: int = 1

    unknown: list[str] = field(default_factory=list)


_EXTENSIONS = {"bind_address", "shutdown_grace_seconds", "num_workers"}


def _flag_fields() -> list:
    return [f for f in fields(ServerFlags) if f.name != "unknown"]


def usage() -> str:
    lines = ["usage: python -m serving.modelserver", "Flags:"]
    for f in _flag_fields():
        kind = {bool: "bool", int: "int64", float: "float", str: "string"}[_type(f)]
        default = f.default
        if isinstance(default, bool):
            default = str(default).lower()
        note = " (extension, not a tensorflow_model_server flag)" if f.name in _EXTENSIONS else ""
        lines.append(f"\t--{f.name}={default!s:<12}\t{kind}{note}")
    return "\n".join(lines) + "\n"


def _type(f) -> type:
    return {"bool": bool, "int": int, "float": float, "str": str}.get(f.type, f.type)


class FlagError(ValueError):
    pass


def _parse_value(kind: type, name: str, raw: str | None):
    if kind is bool:
        if raw is None or raw == "true":
            return True
        if raw == "false":
            return False
        raise FlagError(f"Couldn't interpret value ={raw} for flag {name}.")
    if raw is None:
        return None  # not this flag's syntax: TF leaves it as an unknown argument
    try:
        if kind is int:
            if raw.strip() != raw or not raw:
                raise ValueError(raw)
            value = int(raw, 10)
            if not -(2**63) <= value < 2**63:
                raise ValueError(raw)
            return value
        if kind is float:
            return float(raw)
    except ValueError:
        raise FlagError(f"Couldn't interpret value ={raw} for flag {name}.") from None
    return raw


def parse_flags(argv: list[str]) -> ServerFlags:
    """Parse argv (without the program name). Raises FlagError for a malformed value."""
    flags = ServerFlags()
    by_name = {f.name: f for f in _flag_fields()}
    for arg in argv:
        if arg == "--help":
            raise FlagError("--help")
        if not arg.startswith("--"):
            flags.unknown.append(arg)
            continue
        name, eq, raw = arg[2:].partition("=")
        spec = by_name.get(name)
        if spec is None:
            flags.unknown.append(arg)
            continue
        value = _parse_value(_type(spec), name, raw if eq else None)
        if value is None:
            flags.unknown.append(arg)
            continue
        setattr(flags, name, value)
    return flags


def parse_or_exit(argv: list[str]) -> ServerFlags:
    """main.cc's behaviour: bad value -> usage, exit 255; unknown argument -> print, continue."""
    try:
        flags = parse_flags(argv)
    except FlagError as exc:
        if str(exc) != "--help":
            print(f"ERROR: {exc}", file=sys.stderr)
        print(usage(), file=sys.stdout, flush=True)
        raise SystemExit(EXIT_BAD_FLAGS) from None
    if flags.unknown:
        print(f"unknown argument: {flags.unknown[0]}\n{usage()}", file=sys.stdout, flush=True)
    return flags


def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """``--grpc_channel_arguments=k=v,k=v``; values that look like integers become ints."""
    result: list[tuple[str, int | str]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        try:
            result.append((key.strip(), int(value.strip())))
        except ValueError:
            result.append((key.strip(), value.strip()))
    return result
