"""The one serving configuration source, rendered per backend.

Everything a backend needs to start TensorFlow Serving (or the embedded stand-in) comes from
here: the pinned image, ports, in-container paths, the model server config (rendered from
:class:`ModelServing` with a backend-specific models root), the static batching and monitoring
files, and the flags every backend passes. Docker, the embedded server, docker-compose and the
Kubernetes manifests all read these, so they cannot drift apart.

Owns: the pinned image, ports and paths, the rendered model server config, the static
batching/monitoring files and the common server flags. Must never import: ``serving.backends``,
``serving.modelserver``, ``serving.rollout``, ``export``, TensorFlow (it is plain data and text).
"""

from __future__ import annotations

from serving.config.files import (
    BATCHING_FILE,
    MODEL_CONFIG_FILE,
    MONITORING_FILE,
    STATIC_DIR,
    write_config_dir,
)
from serving.config.flags import (
    CONFIG_POLL_SECONDS,
    GRPC_MAX_CONNECTION_AGE_GRACE_MS,
    GRPC_MAX_CONNECTION_AGE_MS,
    server_flags,
)
from serving.config.model_config import (
    LABEL_CANARY,
    LABEL_STABLE,
    ModelServing,
    VersionPolicy,
    render_model_config,
    serving_from_rollout,
)

# One pinned tensorflow/serving image for docker, docker-compose and Kubernetes. Its
# major.minor must match the TensorFlow that exports the SavedModels (tests assert it).
TF_SERVING_IMAGE = "tensorflow/serving:2.21.0"

# The project's drop-in for that image (``make image``, tools/image/): the embedded server
# behind the same entrypoint, env and ports, tagged with the project's version.
LOCAL_IMAGE_REPOSITORY = "mnist-serving/model-server"
# An image label saying the server inside honours --bind_address (TF Serving's binary has no
# such flag and always listens on every interface).
IMAGE_BIND_ADDRESS_LABEL = "mnist-serving.bind-address"


def local_image() -> str:
    """``mnist-serving/model-server:<project version>``, the tag ``make image`` builds."""
    return f"{LOCAL_IMAGE_REPOSITORY}:{project_version()}"


def project_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("mnist-serving")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        import re
        from pathlib import Path

        text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
        match = re.search(r'^version = "([^"]+)"$', text, re.MULTILINE)
        return match.group(1) if match else "0"


MODEL_NAME = "mnist"
GRPC_PORT = 8500
REST_PORT = 8501

# Where the container (docker, compose, k8s) sees the model repository and the config dir.
CONTAINER_MODELS_ROOT = "/models"
CONTAINER_CONFIG_DIR = "/config"

__all__ = [
    "BATCHING_FILE",
    "CONFIG_POLL_SECONDS",
    "CONTAINER_CONFIG_DIR",
    "CONTAINER_MODELS_ROOT",
    "GRPC_MAX_CONNECTION_AGE_GRACE_MS",
    "GRPC_MAX_CONNECTION_AGE_MS",
    "GRPC_PORT",
    "IMAGE_BIND_ADDRESS_LABEL",
    "LOCAL_IMAGE_REPOSITORY",
    "LABEL_CANARY",
    "LABEL_STABLE",
    "MODEL_CONFIG_FILE",
    "MODEL_NAME",
    "MONITORING_FILE",
    "ModelServing",
    "REST_PORT",
    "STATIC_DIR",
    "TF_SERVING_IMAGE",
    "VersionPolicy",
    "render_model_config",
    "serving_from_rollout",
    "server_flags",
    "local_image",
    "project_version",
    "write_config_dir",
]
