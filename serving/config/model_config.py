"""What serves (model, version policy, labels) and its ModelServerConfig rendering.

:class:`ModelServing` is the single source: the model name, the directory under the models
root that holds its versions, the version policy and the labels. Backends differ only in the
models root (``/models`` in a container, an absolute host path for the embedded server), so
the text proto is rendered per backend from the same object.

Policy by intent:
* no rollout state (plain ``make serve``): ``latest`` - the newest published version serves,
  new versions are picked up by the file-system poll;
* a rollout has begun (``rollout.json`` names a stable version): ``specific`` versions with
  labels ``stable`` and ``canary``, so publishing a version changes nothing until an operator
  canaries it.
"""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

LABEL_STABLE = "stable"
LABEL_CANARY = "canary"


class VersionPolicy(enum.StrEnum):
    LATEST = "latest"
    SPECIFIC = "specific"


class RolloutLike(Protocol):
    """The fields of export.rollout_state.RolloutState this module reads."""

    stable: int | None
    previous_stable: int | None
    canary: int | None


@dataclass(frozen=True)
class ModelServing:
    """One model's serving intent, independent of where the repository is mounted."""

    name: str
    policy: VersionPolicy = VersionPolicy.LATEST
    versions: tuple[int, ...] = ()
    labels: Mapping[str, int] = field(default_factory=dict)
    base_dir: str | None = None  # directory under the models root; defaults to ``name``
    latest_num_versions: int = 1

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"invalid model name {self.name!r}")
        if self.policy is VersionPolicy.LATEST and (self.versions or self.labels):
            # TF Serving would accept labels here, but a label on a moving 'latest' version is
            # exactly the ambiguity rollout state exists to avoid.
            raise ValueError("the latest policy takes no explicit versions or labels")
        if self.policy is VersionPolicy.SPECIFIC and not self.versions:
            raise ValueError("the specific policy needs at least one version")
        for label, version in self.labels.items():
            if version not in self.versions:
                raise ValueError(
                    f"label {label!r} names version {version}, which is not among the served "
                    f"versions {sorted(self.versions)}"
                )
        object.__setattr__(self, "versions", tuple(sorted(set(self.versions))))
        object.__setattr__(self, "labels", dict(sorted(self.labels.items())))

    @property
    def directory(self) -> str:
        return self.base_dir or self.name

    def base_path(self, models_root: str) -> str:
        if not posixpath.isabs(models_root):
            # TF Serving rejects relative base paths at load time; fail at render time instead.
            raise ValueError(f"models root must be absolute, got {models_root!r}")
        return posixpath.join(models_root.rstrip("/") or "/", self.directory)

    def render(self, models_root: str) -> str:
        """The ModelServerConfig text proto with ``base_path`` under ``models_root``."""
        lines = [
            "# Rendered by serving.config from the one serving config source; do not edit.",
            "model_config_list {",
            "  config {",
            f"    name: {_quote(self.name)}",
            f"    base_path: {_quote(self.base_path(models_root))}",
            '    model_platform: "tensorflow"',
        ]
        if self.policy is VersionPolicy.LATEST:
            lines.append(
                f"    model_version_policy {{ latest {{ num_versions: {self.latest_num_versions} }} }}"
            )
        else:
            versions = " ".join(f"versions: {v}" for v in self.versions)
            lines.append(f"    model_version_policy {{ specific {{ {versions} }} }}")
        for label, version in self.labels.items():
            lines.append(f"    version_labels {{ key: {_quote(label)} value: {version} }}")
        lines += ["  }", "}", ""]
        return "\n".join(lines)


def _quote(text: str) -> str:
    """A text-proto string literal (host paths may hold quotes or backslashes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serving_from_rollout(model_name: str, rollout: RolloutLike | None) -> ModelServing:
    """The steady-state serving intent for a rollout state (None: no rollout has begun).

    With a stable version: serve stable (and the canary, if any) as specific versions;
    ``stable`` names the stable version and ``canary`` the canary, or the stable version when
    no canary is in progress, so clients that always send a slice of traffic to ``canary``
    never hit an unknown label.
    """
    if rollout is None or rollout.stable is None:
        return ModelServing(name=model_name)
    stable = int(rollout.stable)
    canary = int(rollout.canary) if rollout.canary is not None else stable
    return ModelServing(
        name=model_name,
        policy=VersionPolicy.SPECIFIC,
        versions=(stable, canary),
        labels={LABEL_STABLE: stable, LABEL_CANARY: canary},
    )


def render_model_config(
    models_root: str, rollout: RolloutLike | None, model_name: str = "mnist"
) -> str:
    """Render the ModelServerConfig text for a backend.

    ``models_root`` is ``/models`` for docker, docker-compose and Kubernetes, and the absolute
    host path of the model repository for the embedded server; ``rollout`` is the repository's
    rollout state for ``model_name`` (None before any rollout).
    """
    return serving_from_rollout(model_name, rollout).render(models_root)
