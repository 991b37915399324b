"""Aspired versions, availability-preserving loads/unloads, labels and status.

One ``ModelController`` per configured model runs on the event loop. The file-system source
(``sources.py``) tells it which versions are aspired (after the model's version policy); each
round the controller (availability_preserving_policy.cc + aspired_versions_manager.cc):

1. loads new aspired versions, highest first, off the event loop (SavedModel load + warmup),
   retrying ``max_num_load_retries`` times ``load_retry_interval`` apart; a version that keeps
   failing ends in END with its error and stays failed while it is aspired;
2. unloads versions that are no longer aspired, but only once an aspired version is AVAILABLE
   (or nothing is aspired at all): a failed new version never takes the old one down.

``ModelManager`` owns the controllers, the version labels (server_core.cc's rules), config
(re)loads with HandleReloadConfigRequest's semantics, and the status history that
GetModelStatus reports (every version ever seen, END after unload, descending).

Size: one job, the version lifecycle; the controller's round (load, retry, unload only once
an aspired version serves) and the manager's config/label rules check each other's state
under one lock-free event-loop discipline, so splitting them would spread one state machine
over two files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from clients.wire import VersionState
from serving.modelserver import errors
from serving.modelserver.config import (
    ModelConfig,
    ModelServerConfig,
    validate_model_server_config,
)
from serving.modelserver.servable import Servable
from serving.modelserver.sources import (
    BasePathMissing,
    VersionDir,
    aspired_versions,
    discover_versions,
)
from serving.modelserver.types import VersionStatus
from serving.modelserver.warmup import run_warmup

log = logging.getLogger("serving.modelserver")

# The states a version passes through, by name (the wire vocabulary's ModelVersionStatus.State).
START, LOADING, AVAILABLE, UNLOADING, END = (
    VersionState.START.name,
    VersionState.LOADING.name,
    VersionState.AVAILABLE.name,
    VersionState.UNLOADING.name,
    VersionState.END.name,
)


@dataclass
class ManagerOptions:
    file_system_poll_wait_seconds: float = 1.0
    max_num_load_retries: int = 5
    load_retry_interval_s: float = 60.0
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    allow_version_labels_for_unavailable_models: bool = False
    saved_model_tags: tuple[str, ...] = ("serve",)
    # The ConfigProto every Session gets (session_config.build); None: TensorFlow's defaults.
    session_config: Any = None


@dataclass
class VersionEntry:
    version: int
    path: str
    state: str = START
    servable: Servable | None = None
    error: errors.ServingError | None = None

    def status(self) -> VersionStatus:
        if self.error is None:
            return VersionStatus(self.version, self.state)
        return VersionStatus(self.version, self.state, self.error.code.name, self.error.message)


class ModelController:
    """The versions of one model."""

    def __init__(self, manager: ModelManager, config: ModelConfig) -> None:
        self.manager = manager
        self.config = config
        self.name = config.name
        self.entries: dict[int, VersionEntry] = {}  # the manager's harnesses
        self.history: dict[int, VersionStatus] = {}  # the state monitor
        self.aspired: list[VersionDir] | None = None  # None until the first successful poll
        self.available: dict[int, Servable] = {}
        self.latest: Servable | None = None
        self.removed = False
        self._changed = asyncio.Event()
        self._idle = True
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def set_aspired(self, versions: list[VersionDir]) -> None:
        self.aspired = versions
        self._idle = False
        self._changed.set()

    def settled(self) -> bool:
        """Every aspired version reached AVAILABLE or END (what startup/reload wait for)."""
        if self.aspired is None or not self.aspired or not self._idle:
            return False
        return all(
            v.version in self.entries and self.entries[v.version].state in (AVAILABLE, END)
            for v in self.aspired
        )

    def failures(self) -> list[tuple[int, errors.ServingError]]:
        out = []
        for v in self.aspired or []:
            e = self.entries.get(v.version)
            if e is not None and e.state == END and e.error is not None:
                out.append((v.version, e.error))
        return out

    # -- the control loop ------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the model's control loop
                log.exception("Version reconciliation failed for model %s", self.name)
            if not self._changed.is_set():
                self._idle = True

    def _record(self, entry: VersionEntry) -> None:
        self.history[entry.version] = entry.status()

    def _publish(self) -> None:
        available = {
            v: e.servable
            for v, e in self.entries.items()
            if e.state == AVAILABLE and e.servable is not None
        }
        self.available = available
        self.latest = available[max(available)] if available else None

    async def _reconcile(self) -> None:
        aspired = {v.version: v for v in (self.aspired or [])}
        for version, entry in list(self.entries.items()):
            if entry.state == END and version not in aspired:
                del self.entries[version]  # un-aspired failure: may be retried if it returns
        for vdir in sorted(aspired.values(), key=lambda v: v.version, reverse=True):
            if vdir.version in self.entries:
                continue
            entry = VersionEntry(vdir.version, vdir.path)
            self.entries[vdir.version] = entry
            self._record(entry)
            await self._load(entry)
            self._publish()
        await self._unload_unaspired(set(aspired))

    async def _load(self, entry: VersionEntry) -> None:
        mgr = self.manager
        entry.state = LOADING
        self._record(entry)
        log.info("Loading servable version {name: %s version: %d}", self.name, entry.version)
        attempts = 1 + max(0, mgr.options.max_num_load_retries)
        loop = asyncio.get_running_loop()
        for attempt in range(attempts):
            try:
                entry.servable = await loop.run_in_executor(
                    mgr.load_executor, mgr.load_version, self.name, entry.version, entry.path
                )
                entry.state = AVAILABLE
                entry.error = None
                self._record(entry)
                log.info(
                    "Successfully loaded servable version {name: %s version: %d}",
                    self.name,
                    entry.version,
                )
                if mgr.metrics is not None:
                    mgr.metrics.set_version_available(self.name, entry.version, True)
                return
            except errors.ServingError as exc:
                entry.error = exc
            except Exception as exc:  # anything TF throws during load
                entry.error = errors.Unknown(str(exc))
            log.error(
                "Loading servable: {name: %s version: %d} failed: %s",
                self.name,
                entry.version,
                entry.error,
            )
            if attempt + 1 < attempts:
                await asyncio.sleep(mgr.options.load_retry_interval_s)
                still_aspired = any(v.version == entry.version for v in self.aspired or [])
                if not still_aspired:  # un-aspired versions cancel their retries
                    break
                log.info("Retrying load of {name: %s version: %d}", self.name, entry.version)
        entry.state = END
        self._record(entry)

    async def _unload_unaspired(self, aspired: set[int]) -> None:
        loaded = sorted(
            v for v, e in self.entries.items() if v not in aspired and e.state == AVAILABLE
        )
        if not loaded:
            return
        ready = any(
            self.entries[v].state == AVAILABLE for v in aspired if v in self.entries
        )
        if aspired and not ready:
            # Keep serving: only the newest un-aspired version needs to stay.
            loaded = loaded[:-1]
        for version in loaded:
            await self._unload(self.entries[version])

    async def _unload(self, entry: VersionEntry) -> None:
        entry.state = UNLOADING
        self._record(entry)
        self._publish()
        log.info("Unloading servable version {name: %s version: %d}", self.name, entry.version)
        # In-flight requests hold their own reference to the servable; TF frees it after them.
        entry.servable = None
        entry.state = END
        self._record(entry)
        del self.entries[entry.version]
        if self.manager.metrics is not None:
            self.manager.metrics.set_version_available(self.name, entry.version, False)


@dataclass
class _PollState:
    task: asyncio.Task | None = None
    stopped: bool = False


class ModelManager:
    def __init__(
        self, options: ManagerOptions, load_executor: Executor, metrics: Any = None
    ) -> None:
        self.options = options
        self.load_executor = load_executor
        self.metrics = metrics
        self.config = ModelServerConfig()
        self.controllers: dict[str, ModelController] = {}
        self.labels: dict[str, dict[str, int]] = {}
        self._config_lock = asyncio.Lock()
        self._poll = _PollState()

    # -- loading (runs in a worker thread) ---------------------------------------------------
    def load_version(self, name: str, version: int, path: str) -> Servable:
        start = time.monotonic()
        try:
            servable = Servable.load(
                name, version, path, self.options.saved_model_tags, self.options.session_config
            )
        except Exception:
            if self.metrics is not None:
                self.metrics.record_model_load(
                    name, version, time.monotonic() - start, ok=False, model_path=path
                )
            raise
        if self.metrics is not None:
            self.metrics.record_model_load(
                name, version, servable.load_seconds, ok=True, model_path=path
            )
        if self.options.enable_model_warmup:
            wstart = time.monotonic()
            try:
                report = run_warmup(servable, self.options.num_request_iterations_for_warmup)
            except Exception:
                if self.metrics is not None:
                    self.metrics.record_warmup(path, time.monotonic() - wstart, 0, ok=False)
                raise
            if report is not None and self.metrics is not None:
                self.metrics.record_warmup(path, report.seconds, report.records, ok=True)
        return servable

    # -- configuration ---------------------------------------------------------------------
    async def apply_config(self, config: ModelServerConfig, *, initial: bool = False) -> None:
        """Replace the config; wait until newly added models are AVAILABLE (or failed).

        Raises errors.ServingError as HandleReloadConfigRequest reports it."""
        async with self._config_lock:
            validate_model_server_config(config, None if initial else self.config)
            new_labels = self._check_labels(config)
            old_names = {m.name for m in self.config.model_config_list.config}
            wanted = {m.name: m for m in config.model_config_list.config}
            added = [n for n in wanted if n not in old_names]
            self.labels = new_labels
            for name, model in wanted.items():
                ctl = self.controllers.get(name)
                if ctl is None:
                    ctl = ModelController(self, model)
                    self.controllers[name] = ctl
                    ctl.start()
                else:
                    ctl.config = model
                    ctl.removed = False
            for name, ctl in self.controllers.items():
                if name not in wanted and not ctl.removed:
                    ctl.removed = True
                    ctl.set_aspired([])  # unload everything it serves
            self.config = config
            await self.poll_once()
        # Outside the lock: polling must go on while we wait (a new model's first version may
        # appear only later).
        await self._wait_available(added)

    def _check_labels(self, config: ModelServerConfig) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        allow = self.options.allow_version_labels_for_unavailable_models
        for model in config.model_config_list.config:
            if not model.version_labels:
                continue
            ctl = self.controllers.get(model.name)
            available = set(ctl.available) if ctl is not None and not ctl.removed else set()
            old = self.labels.get(model.name, {})
            for label, version in model.version_labels.items():
                if version in available:
                    continue
                if allow and (label not in old or old[label] == version):
                    continue
                raise errors.FailedPrecondition(
                    f"Request to assign label to version {version} of model {model.name}, "
                    "which is not currently available for inference"
                )
            result[model.name] = dict(model.version_labels)
        return result

    async def _wait_available(self, names: list[str]) -> None:
        ctls = [self.controllers[n] for n in names]
        warned = time.monotonic()
        while not all(c.settled() for c in ctls):
            if time.monotonic() - warned > 30:
                warned = time.monotonic()
                waiting = [c.name for c in ctls if not c.settled()]
                log.info("Waiting for models to become available: %s", waiting)
            await asyncio.sleep(0.02)
        failures = [(c.name, v, err) for c in ctls for v, err in c.failures()]
        if failures:
            parts = "".join(
                f"{{name: {name} version: {v}}} due to error: {err.code.name}: {err.message}, "
                for name, v, err in failures
            )
            raise errors.Unknown(
                f"{len(failures)} servable(s) did not become available: {{{parts}}}"
            )

    # -- the file-system source ------------------------------------------------------------
    async def poll_once(self) -> None:
        """One poll of every base path; a missing base path skips the whole round."""
        active = [c for c in self.controllers.values() if not c.removed]
        found: dict[str, list[VersionDir]] = {}
        for ctl in active:
            try:
                versions = await asyncio.to_thread(discover_versions, ctl.config.base_path)
            except BasePathMissing as exc:
                log.error("File system storage path source: %s; skipping this poll", exc)
                return
            aspired = aspired_versions(ctl.config.model_version_policy, versions)
            if not versions:
                log.warning(
                    "No versions of servable %s found under base path %s. Did you forget to "
                    "name your leaf directory as a number (eg. '/1/')?",
                    ctl.name,
                    ctl.config.base_path,
                )
            found[ctl.name] = aspired
        for ctl in active:
            new = found[ctl.name]
            if ctl.aspired is None or [(v.version, v.path) for v in new] != [
                (v.version, v.path) for v in ctl.aspired
            ]:
                ctl.set_aspired(new)

    def start_polling(self) -> None:
        wait = self.options.file_system_poll_wait_seconds
        if wait <= 0:  # 0: poll once (done by apply_config); <0: never poll again
            return
        self._poll.task = asyncio.get_running_loop().create_task(self._poll_loop(wait))

    async def _poll_loop(self, wait: float) -> None:
        while not self._poll.stopped:
            await asyncio.sleep(wait)
            try:
                async with self._config_lock:
                    await self.poll_once()
            except Exception:
                log.exception("File system poll failed")

    async def stop(self) -> None:
        self._poll.stopped = True
        if self._poll.task is not None:
            self._poll.task.cancel()
        for ctl in self.controllers.values():
            await ctl.stop()

    # -- lookups (event loop; plain dict reads) --------------------------------------------
    def _controller(self, name: str) -> ModelController | None:
        ctl = self.controllers.get(name)
        return None if ctl is None or ctl.removed else ctl

    def latest(self, name: str) -> Servable:
        ctl = self._controller(name)
        servable = ctl.latest if ctl is not None else None
        if servable is None:
            raise errors.NotFound(f"Servable not found for request: Latest({name})")
        return servable

    def specific(self, name: str, version: int) -> Servable:
        ctl = self._controller(name)
        servable = ctl.available.get(version) if ctl is not None else None
        if servable is None:
            raise errors.NotFound(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def label_version(self, name: str, label: str) -> int:
        version = self.labels.get(name, {}).get(label)
        if version is None:
            raise errors.InvalidArgument(f"Unrecognized servable version label: {label}")
        return version

    def model_status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        ctl = self.controllers.get(name)
        history = ctl.history if ctl is not None else {}
        if not history:
            raise errors.NotFound(f"Could not find any versions of model {name}")
        if version is not None:
            if version not in history:
                raise errors.NotFound(f"Could not find version {version} of model {name}")
            return [history[version]]
        return [history[v] for v in sorted(history, reverse=True)]

    def all_servables(self) -> list[Servable]:
        return [s for c in self.controllers.values() for s in c.available.values()]
