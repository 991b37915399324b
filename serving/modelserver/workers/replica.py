"""A worker's view of the model state: a ModelManager that polls nothing and decides nothing.

The control plane loads a version into every worker (``load``), and only when all of them
have it does the version become AVAILABLE there; then it pushes the whole state (``apply``):
per model the available versions, the versions to keep loaded (LOADING, AVAILABLE and
UNLOADING ones), the status history and the labels. Lookups (``latest``, ``specific``,
``label_version``, ``model_status``) are ModelManager's own, reading the replicas below, so
every worker answers exactly what the control plane decided. HandleReloadConfigRequest is
forwarded to the control plane, which answers after every worker applied the new config.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from serving.modelserver.manager import ModelManager
from serving.modelserver.servable import Servable
from serving.modelserver.types import VersionStatus

log = logging.getLogger("serving.modelserver")


@dataclass
class ModelReplica:
    """The fields of ModelController that the lookups read."""

    name: str
    available: dict[int, Servable] = field(default_factory=dict)
    latest: Servable | None = None
    history: dict[int, VersionStatus] = field(default_factory=dict)
    removed: bool = False


class ReplicaManager(ModelManager):
    def __init__(self, *args: Any, reload: Callable[[Any], Awaitable[None]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._reload = reload
        self.loaded: dict[tuple[str, int], Servable] = {}
        self._loading: dict[tuple[str, int], asyncio.Future] = {}
        self.seq = -1

    async def load(self, name: str, version: int, path: str) -> None:
        """Load + warm one version (not served until a state push makes it available)."""
        key = (name, version)
        if key in self.loaded:
            return
        pending = self._loading.get(key)
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(self.load_executor, self.load_version, name, version, path)
            self._loading[key] = pending
        try:
            servable = await asyncio.shield(pending)
        finally:
            self._loading.pop(key, None)
        self.loaded[key] = servable

    def apply(self, state: dict[str, Any]) -> None:
        """Publish one pushed state (synchronous: no request sees half of it)."""
        if state["seq"] <= self.seq:
            return  # pushes are sent in order; never go back to an older one
        self.seq = state["seq"]
        keep: set[tuple[str, int]] = set()
        seen: set[str] = set()
        for name, model in state["models"].items():
            seen.add(name)
            replica = self.controllers.get(name)
            if replica is None:
                replica = ModelReplica(name)
                self.controllers[name] = replica  # type: ignore[assignment]
            available: dict[int, Servable] = {}
            for version in model["available"]:
                servable = self.loaded.get((name, version))
                if servable is None:  # the control plane never makes that happen
                    log.error("State names %s/%d available but this worker lacks it", name, version)
                    continue
                available[version] = servable
            replica.available = available
            replica.latest = available[max(available)] if available else None
            replica.history = {
                row[0]: VersionStatus(row[0], row[1], row[2], row[3]) for row in model["history"]
            }
            replica.removed = model["removed"]
            keep.update((name, v) for v in model["keep"])
        for name in list(self.controllers):
            if name not in seen:
                del self.controllers[name]
        self.labels = {name: dict(labels) for name, labels in state["labels"].items()}
        for key in list(self.loaded):
            if key not in keep:
                # In-flight requests hold their own reference; TF frees it after them.
                del self.loaded[key]
                if self.metrics is not None:
                    self.metrics.set_version_available(key[0], key[1], False)
        if self.metrics is not None:
            for (name, version) in self.loaded:
                replica = self.controllers.get(name)
                if replica is not None and version in replica.available:
                    self.metrics.set_version_available(name, version, True)

    async def apply_config(self, config: Any, *, initial: bool = False) -> None:
        await self._reload(config)

    def start_polling(self) -> None:  # the control plane polls
        return

    async def stop(self) -> None:
        return
