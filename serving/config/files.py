"""The config directory a server reads: rendered model config + the static files beside it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

MODEL_CONFIG_FILE = "models.config"
BATCHING_FILE = "batching.config"
MONITORING_FILE = "monitoring.config"

# The committed files: batching.config, monitoring.config, and models.config (the rendering
# for /models with the 'latest' policy, for docker-compose users who run no Python).
STATIC_DIR = Path(__file__).resolve().parent


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` in one rename, so a polling server never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # readable by the container's user too
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_config_dir(config_dir: Path, model_config_text: str) -> Path:
    """Write ``models.config`` and copy the static batching/monitoring files into a dir."""
    config_dir.mkdir(parents=True, exist_ok=True)
    for name in (BATCHING_FILE, MONITORING_FILE):
        # Atomic too: a server (re)starting while `up` rewrites them must not read half.
        atomic_write_text(config_dir / name, (STATIC_DIR / name).read_text(encoding="utf-8"))
    atomic_write_text(config_dir / MODEL_CONFIG_FILE, model_config_text)
    return config_dir
