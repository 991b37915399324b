"""The tensorflow_model_server flags every backend passes (docker, embedded, compose, k8s).

Ports are not here: the tensorflow/serving image's entrypoint already passes
``--port=8500 --rest_api_port=8501``; the embedded backend adds them itself.
"""

from __future__ import annotations

import posixpath

from serving.config.files import BATCHING_FILE, MODEL_CONFIG_FILE, MONITORING_FILE

# The config file is re-read this often: the fallback path for applying a rollout step when
# ModelService.HandleReloadConfigRequest is not reachable, and how Kubernetes picks up an
# edited ConfigMap. Every file the rollout writes is a valid step, so a poll at any moment
# applies something safe.
CONFIG_POLL_SECONDS = 5

# How often the version directories are listed (TF Serving's default): a new version under
# the 'latest' policy starts loading within a second of its atomic publish.
FILE_SYSTEM_POLL_SECONDS = 1

# Long-lived gRPC connections pin a client to one replica behind a Kubernetes Service; ageing
# them out lets clients re-resolve and spread again, and in-flight calls finish during the
# grace. Age + grace (+10% jitter) stays below the pod's 30 s preStop pause, so every
# connection to a terminating pod is closed cleanly (GOAWAY) before TF Serving's abrupt exit.
GRPC_MAX_CONNECTION_AGE_MS = 20_000
GRPC_MAX_CONNECTION_AGE_GRACE_MS = 5_000


def server_flags(config_dir: str) -> list[str]:
    """Flags for a server whose config files live in ``config_dir`` (as the server sees it).

    ``--allow_version_labels_for_unavailable_models`` is always on: once a rollout has begun
    the config file names labels, and any backend may (re)start cold from that file (a
    container restart, a new pod, ``make serve`` again). Without the flag TF Serving refuses a
    config whose labels name versions that are not loaded yet, i.e. every labelled config at
    start-up. Rollout itself never depends on the relaxation: it moves a label only to a
    version it has seen AVAILABLE.
    """
    join = posixpath.join
    return [
        f"--model_config_file={join(config_dir, MODEL_CONFIG_FILE)}",
        f"--model_config_file_poll_wait_seconds={CONFIG_POLL_SECONDS}",
        f"--file_system_poll_wait_seconds={FILE_SYSTEM_POLL_SECONDS}",
        "--allow_version_labels_for_unavailable_models=true",
        "--enable_batching=true",
        f"--batching_parameters_file={join(config_dir, BATCHING_FILE)}",
        f"--monitoring_config_file={join(config_dir, MONITORING_FILE)}",
        "--grpc_channel_arguments="
        f"grpc.max_connection_age_ms={GRPC_MAX_CONNECTION_AGE_MS},"
        f"grpc.max_connection_age_grace_ms={GRPC_MAX_CONNECTION_AGE_GRACE_MS}",
    ]
