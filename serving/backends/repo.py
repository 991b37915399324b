"""Read-only questions about the model repository, asked with the export package's own
ModelRepository and rollout-state code (one definition of a version and of rollout.json)."""

from __future__ import annotations

import os
from pathlib import Path

from export.repository import ModelRepository
from export.rollout_state import RolloutState, RolloutStateError, load_state
from serving.backends.record import BackendError


def check_repo(repo: Path) -> None:
    """Raise BackendError unless ``repo`` is a readable, listable directory."""
    if not repo.exists():
        raise BackendError(f"model repository {repo} does not exist")
    if not repo.is_dir():
        raise BackendError(f"model repository {repo} is not a directory")
    if not os.access(repo, os.R_OK | os.X_OK):
        raise BackendError(f"model repository {repo} is not readable (check its permissions)")


def published_versions(repo: Path, model: str) -> list[int]:
    """Published version numbers of ``model``, ascending."""
    try:
        return ModelRepository(repo, model).versions()
    except OSError as exc:
        raise BackendError(f"cannot list {repo / model}: {exc.strerror or exc}") from exc


def rollout_state(repo: Path, model: str) -> RolloutState | None:
    """The model's rollout state, or None while no rollout has begun (no stable version)."""
    try:
        state = load_state(repo, model)
    except (RolloutStateError, OSError) as exc:
        raise BackendError(f"rollout state unreadable: {exc}") from exc
    return state if state.stable is not None else None


def check_state_published(repo: Path, model: str, state: RolloutState | None) -> None:
    """Refuse to serve a rollout state that names versions which are not published."""
    if state is None:
        return
    published = set(published_versions(repo, model))
    for role in ("stable", "canary"):
        version = getattr(state, role)
        if version is not None and version not in published:
            raise BackendError(
                f"rollout.json names version {version} of {model} as {role}, but it is not "
                f"published under {repo / model} (published: {sorted(published) or 'none'})"
            )
