"""Which versions retention must never delete: those the rollout state names (stable,
previous stable, canary) and those a TF Serving model config file pins (specific versions
or version labels) for this model."""

from __future__ import annotations

import os
from pathlib import Path

from export.rollout_state import load_state

# Where a ModelServerConfig may sit beside the repository; an explicit path wins.
DEFAULT_SERVING_CONFIG = "models.config"
# Where `python -m serving up` keeps the config its running server reads (its run dir,
# $SERVING_RUN_DIR or .run/). Read as a plain path so that export never imports serving.
RUN_DIR_ENV = "SERVING_RUN_DIR"
DEFAULT_RUN_DIR = ".run"


class ServingConfigError(ValueError):
    pass


def versions_in_serving_config(config_path: Path, model_name: str) -> set[int]:
    """Versions that a ModelServerConfig text proto names for ``model_name``."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(Path(config_path).read_text(), config)
    except (OSError, text_format.ParseError) as exc:
        raise ServingConfigError(f"{config_path}: cannot read serving config ({exc})") from exc
    named: set[int] = set()
    for model in config.model_config_list.config:
        if model.name != model_name:
            continue
        named.update(int(v) for v in model.model_version_policy.specific.versions)
        named.update(int(v) for v in model.version_labels.values())
    return named


def protected_versions(
    repo_root: Path, model_name: str, serving_config: Path | None = None
) -> set[int]:
    """Rollout-state versions plus serving-config versions. Without an explicit path, every
    config that exists of ``<repo>/models.config`` and the running server's
    ``<run dir>/config/models.config`` is read: protecting a version too many is harmless,
    deleting one a server is loading is not."""
    protected = load_state(repo_root, model_name).named_versions()
    if serving_config is not None:
        configs = [Path(serving_config)]
    else:
        run_dir = Path(os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR)
        candidates = [Path(repo_root) / DEFAULT_SERVING_CONFIG, run_dir / "config" / DEFAULT_SERVING_CONFIG]
        configs = [path for path in candidates if path.exists()]
    for config in configs:
        protected |= versions_in_serving_config(config, model_name)
    return protected
