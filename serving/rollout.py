"""Model-level rollout on a running server: canary, promote, rollback (and pin).

State lives in ``<repo>/rollout.json`` (export.rollout_state; export's gate and retention
read it). Each operation computes the target state, renders its config with the one config
source and moves the server there in TF Serving's order:

1. if the target needs versions that are not AVAILABLE yet, load them *beside* what serves,
   with every label where it was (a label may only move to an AVAILABLE version);
2. once they are AVAILABLE, move the labels and drop versions no longer wanted (the server
   unloads them only after that, so the previous stable serves until the new one does).

A config is applied by writing the config file (atomically) and calling
ModelService.HandleReloadConfigRequest; if that RPC is unavailable the server's config-file
poll picks the file up and we wait for the result. A refused or failed step restores the
previous config, so what was serving keeps serving, and rollout.json changes only after the
whole operation succeeded.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from export.rollout_state import RolloutState, save_state
from serving.backends.control import ControlError, ModelControl, ReloadUnsupported
from serving.backends.lifecycle import describe, format_serving, make_backend
from serving.backends.record import BackendError, RunDir, ServerRecord
from serving.backends.repo import published_versions, rollout_state
from serving.config import CONFIG_POLL_SECONDS, ModelServing, VersionPolicy, serving_from_rollout
from serving.config.files import atomic_write_text

Say = Callable[[str], None]


class RolloutError(BackendError):
    """A rollout step was refused or failed; what was serving is unchanged."""


def parse_model_serving(text: str, model: str) -> ModelServing:
    """The ModelServing a rendered ModelServerConfig describes for ``model``."""
    from google.protobuf import text_format

    from clients.protos import ModelServerConfig

    config = text_format.Parse(text, ModelServerConfig())
    for entry in config.model_config_list.config:
        if entry.name != model:
            continue
        policy = entry.model_version_policy.WhichOneof("policy_choice")
        if policy == "specific":
            return ModelServing(
                name=model,
                policy=VersionPolicy.SPECIFIC,
                versions=tuple(entry.model_version_policy.specific.versions),
                labels=dict(entry.version_labels),
            )
        if policy in (None, "latest") and not entry.version_labels:
            return ModelServing(name=model)
        raise RolloutError(f"the running config uses a '{policy}' policy this tool does not manage")
    raise RolloutError(f"the running config does not serve a model named {model}")


@dataclass
class Rollout:
    record: ServerRecord
    run_dir: RunDir
    say: Say = print
    timeout_s: float = 180.0

    @property
    def model(self) -> str:
        return self.record.model_name

    @property
    def repo(self) -> Path:
        return Path(self.record.repo)

    # -- operations --------------------------------------------------------------------------
    def state(self) -> RolloutState | None:
        return rollout_state(self.repo, self.model)

    def pin(self, version: int | None = None) -> RolloutState:
        """Begin rollouts: serve one specific version with the stable label."""
        state = self.state()
        if state is not None:
            raise RolloutError(
                f"a rollout has begun already (stable={state.stable}); "
                "use canary / promote / rollback"
            )
        with self._control() as control:
            if version is None:
                available = control.available(self.model)
                if not available:
                    raise RolloutError(f"no version of {self.model} is AVAILABLE to pin")
                version = max(available)
        self._check_published(version)
        return self._move_to(RolloutState(stable=version), f"pin stable -> {version}")

    def canary(self, version: int) -> RolloutState:
        self._check_published(version)
        state = self.state()
        if state is None:
            with self._control() as control:
                available = control.available(self.model)
            if not available:
                raise RolloutError(f"no version of {self.model} is AVAILABLE to keep as stable")
            stable = max(available)
            if stable == version:
                raise RolloutError(
                    f"version {version} already serves as the newest version under the 'latest' "
                    f"policy; pin a stable version first (python -m serving rollout pin VERSION)"
                )
            self.say(f"no rollout state yet: version {stable}, which serves now, becomes stable")
            state = RolloutState(stable=stable)
        if version == state.stable:
            raise RolloutError(f"version {version} is already the stable version")
        if version == state.canary:
            raise RolloutError(f"version {version} is already the canary")
        target = RolloutState(
            stable=state.stable, previous_stable=state.previous_stable, canary=version
        )
        return self._move_to(target, f"canary -> {version} (stable stays {state.stable})")

    def promote(self) -> RolloutState:
        state = self.state()
        if state is None or state.canary is None:
            raise RolloutError("there is no canary to promote (python -m serving rollout canary N)")
        target = RolloutState(stable=state.canary, previous_stable=state.stable, canary=None)
        return self._move_to(target, f"promote canary {state.canary} to stable")

    def rollback(self) -> RolloutState:
        """Drop the canary if there is one; otherwise restore the previous stable."""
        state = self.state()
        if state is not None and state.canary is not None:
            target = RolloutState(stable=state.stable, previous_stable=state.previous_stable)
            return self._move_to(target, f"roll back canary {state.canary}")
        if state is None or state.previous_stable is None:
            raise RolloutError("nothing to roll back: no canary and no previous stable version")
        self._check_published(state.previous_stable)
        target = RolloutState(stable=state.previous_stable)
        return self._move_to(
            target, f"roll back stable {state.stable} to previous stable {state.previous_stable}"
        )

    def show(self) -> str:
        state = self.state()
        text = format_serving(describe(self.record))
        if state is None:
            return text + "\nrollout.json: no rollout has begun ('latest' policy)"
        return (
            text + f"\nrollout.json: stable={state.stable} "
            f"previous_stable={state.previous_stable} canary={state.canary}"
        )

    # -- mechanics ---------------------------------------------------------------------------
    def _check_published(self, version: int) -> None:
        published = published_versions(self.repo, self.model)
        if version not in published:
            raise RolloutError(
                f"version {version} of {self.model} is not published under "
                f"{self.repo / self.model} (published: {published or 'none'})"
            )

    @contextlib.contextmanager
    def _control(self) -> Iterator[ModelControl]:
        backend = make_backend(self.record.backend)
        if not backend.alive(self.record):
            raise RolloutError(
                f"the {self.record.backend} server recorded in {self.run_dir.record_file} "
                "is not running; start it with `make serve`"
            )
        with ModelControl(self.record.grpc_target) as control:
            yield control

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.run_dir.path.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir.path / "rollout.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RolloutError("another rollout command is running; try again") from None
            yield

    def current(self) -> tuple[ModelServing, str]:
        """What the server was last told to serve, and the config text that says it."""
        try:
            text = self.record.model_config_path.read_text()
        except OSError as exc:
            raise RolloutError(f"cannot read the running config: {exc}") from exc
        return parse_model_serving(text, self.model), text

    def _move_to(self, target_state: RolloutState, what: str) -> RolloutState:
        with self._lock(), self._control() as control:
            self.say(f"{self.model}: {what}")
            target = serving_from_rollout(self.model, target_state)
            current, current_text = self.current()
            available = control.available(self.model)
            missing = set(target.versions) - available
            if missing:
                keep = set(current.versions) if current.versions else available
                interim = ModelServing(
                    name=self.model,
                    policy=VersionPolicy.SPECIFIC,
                    versions=tuple(keep | set(target.versions)),
                    labels=current.labels,
                )
                self.say(
                    f"  loading version(s) {sorted(missing)} beside {sorted(keep)}; "
                    "labels stay where they are"
                )
                self.apply(control, interim, restore_text=current_text)
            self.say(
                "  labels "
                + (", ".join(f"{k} -> {v}" for k, v in target.labels.items()) or "none")
                + f"; versions {list(target.versions) or ['latest']}"
            )
            self.apply(control, target, restore_text=current_text)
            save_state(self.repo, self.model, target_state)
            self._wait_unloaded(control, target)
        self.say(self.show())
        return target_state

    def apply(self, control: ModelControl, serving: ModelServing, restore_text: str) -> None:
        """Make the server serve ``serving``; on failure put ``restore_text`` back and raise."""
        path = self.record.model_config_path
        atomic_write_text(path, serving.render(self.record.models_root))
        try:
            self._reload_and_wait(control, serving, path.read_text())
        except (ControlError, RolloutError) as exc:
            atomic_write_text(path, restore_text)
            with contextlib.suppress(ControlError):
                control.reload(restore_text)
            # The server's own words on a failed load (for a container, its log tail).
            tail = make_backend(self.record.backend).log_tail(self.record, 1500).strip()
            log = f"\nthe server's log ends:\n{tail}" if tail else ""
            raise RolloutError(f"{exc}; the previous config was restored{log}") from exc

    def _reload_and_wait(self, control: ModelControl, serving: ModelServing, text: str) -> None:
        try:
            control.reload(text)
            polled = False
        except ReloadUnsupported as exc:
            self.say(f"  {exc}; waiting for the config-file poll (every {CONFIG_POLL_SECONDS} s)")
            polled = True
        backend = make_backend(self.record.backend)
        abort = lambda: backend.exit_reason(self.record)  # noqa: E731
        if serving.policy is VersionPolicy.SPECIFIC:
            control.wait_available(self.model, serving.versions, self.timeout_s, abort)
        else:
            control.wait_available(self.model, None, self.timeout_s, abort)

        def labels_resolved() -> bool:
            return all(
                control.resolve_label(self.model, label) == version
                for label, version in serving.labels.items()
            )

        timeout = self.timeout_s if polled else 30.0
        control.wait_until("the labels to resolve as configured", labels_resolved, timeout, abort)

    def _wait_unloaded(
        self, control: ModelControl, target: ModelServing, timeout_s: float = 30.0
    ) -> None:
        if target.policy is not VersionPolicy.SPECIFIC:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if control.available(self.model) <= set(target.versions):
                return
            time.sleep(0.1)
        self.say("  (older versions are still unloading)")
