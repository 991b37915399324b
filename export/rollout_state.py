"""The rollout state file, ``<repo>/rollout.json``: which version of each model is stable,
which was stable before, and which is the canary.

Shape: ``{"<model_name>": {"stable": int|null, "previous_stable": int|null, "canary": int|null}}``.
The serving rollout writes it; the export gate reads ``stable`` and retention protects every
version it names. Saves are atomic (temp file + os.replace) so readers never see half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROLLOUT_FILE = "rollout.json"
_FIELDS = ("stable", "previous_stable", "canary")


class RolloutStateError(ValueError):
    pass


@dataclass(frozen=True)
class RolloutState:
    stable: int | None = None
    previous_stable: int | None = None
    canary: int | None = None

    def named_versions(self) -> set[int]:
        """Every version this state names (retention must keep them)."""
        return {v for v in (self.stable, self.previous_stable, self.canary) if v is not None}

    @classmethod
    def from_dict(cls, data: object, where: str = ROLLOUT_FILE) -> RolloutState:
        if not isinstance(data, dict):
            raise RolloutStateError(f"{where}: expected an object, got {type(data).__name__}")
        unknown = set(data) - set(_FIELDS)
        if unknown:
            raise RolloutStateError(f"{where}: unknown keys {sorted(unknown)}")
        values: dict[str, int | None] = {}
        for key in _FIELDS:
            value = data.get(key)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
            ):
                raise RolloutStateError(f"{where}.{key}: expected a version number or null")
            values[key] = value
        return cls(**values)


def rollout_path(repo_root: Path | str) -> Path:
    return Path(repo_root) / ROLLOUT_FILE


def load_rollout(repo_root: Path | str) -> dict[str, RolloutState]:
    """Every model's state; a missing file is an empty state."""
    path = rollout_path(repo_root)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise RolloutStateError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RolloutStateError(f"{path}: expected an object keyed by model name")
    return {name: RolloutState.from_dict(state, f"{path}:{name}") for name, state in data.items()}


def load_state(repo_root: Path | str, model_name: str) -> RolloutState:
    """One model's state; empty (all null) when the file or the model is absent."""
    return load_rollout(repo_root).get(model_name, RolloutState())


def save_rollout(repo_root: Path | str, states: dict[str, RolloutState]) -> None:
    """Write every model's state atomically."""
    path = rollout_path(repo_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {name: asdict(state) for name, state in sorted(states.items())}
    fd, tmp = tempfile.mkstemp(prefix=".rollout.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_state(repo_root: Path | str, model_name: str, state: RolloutState) -> None:
    """Replace one model's state, keeping the others (read-modify-write; callers that race
    must serialise themselves)."""
    states = load_rollout(repo_root)
    states[model_name] = state
    save_rollout(repo_root, states)
