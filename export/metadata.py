"""Version metadata: what a published version is, how it was made, how good it is.

Written to ``<version>/assets.extra/metadata.json`` (TF Serving ignores unknown files in
assets.extra); read back by ``list`` and by the gate to compare with the stable version.
"""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

METADATA_FILE = "metadata.json"
ASSETS_EXTRA = "assets.extra"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def git_revision(cwd: Path = PROJECT_ROOT) -> str:
    """``<commit>`` or ``<commit>-dirty``; ``unknown`` outside a git checkout."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "export"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def runtime_versions() -> dict[str, str]:
    import keras
    import numpy
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
    }


def metadata_path(version_dir: Path) -> Path:
    return Path(version_dir) / ASSETS_EXTRA / METADATA_FILE


def write_metadata(version_dir: Path, metadata: dict) -> Path:
    path = metadata_path(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return path


def read_metadata(version_dir: Path) -> dict | None:
    """The version's metadata, or None when it has none or it is unreadable."""
    try:
        data = json.loads(metadata_path(version_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
