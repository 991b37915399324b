"""The control plane of ``--num_workers=N`` (N > 1): the parent process of the workers.

It owns what must exist once: the flags, the config files (read here, never in a worker),
version polling, the aspired state, labels and reloads. Its ModelManager is the ordinary one
(manager.py, with every TF Serving rule), except that "load a version" means "load and warm
it in every worker" and every state change is pushed to every worker and awaited
(``state_changed``) before the controller goes on. So:

* a version is AVAILABLE (status, labels, reload answers) only once every worker has it;
* a label can only move to such a version (manager._check_labels reads this availability);
* a version unloads only after every worker has switched away from it (the push with the
  version out of ``available`` is awaited before the one that drops it);
* HandleReloadConfigRequest, received by any worker, is applied here and answered after the
  final push reached every worker;
* GetModelStatus and metadata come from the pushed state, the same in every worker.

The listeners open (ready lines printed) only after the initial load reached every worker.
SIGTERM drains every worker and exits 0; the workers die with this process (PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from serving.modelserver import errors, event_loop
from serving.modelserver.batching import BatchingOptions
from serving.modelserver.config import ModelServerConfig
from serving.modelserver.flags import EXIT_BAD_FLAGS, ServerFlags
from serving.modelserver.manager import AVAILABLE, LOADING, UNLOADING, ModelManager
from serving.modelserver.metrics import Registry
from serving.modelserver.server import LoadedConfig, ModelServer, _status_text, manager_options
from serving.modelserver.workers.fleet import Fleet

log = logging.getLogger("serving.modelserver")


@dataclass
class RemoteServable:
    """What the control plane's controllers hold for a version loaded in the workers."""

    model_name: str
    version: int
    path: str


class ControlPlaneManager(ModelManager):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fleet: Fleet | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def load_version(self, name: str, version: int, path: str) -> Any:
        """Runs in a load thread (as ModelManager's does): blocks until every worker has it."""
        assert self.fleet is not None and self.loop is not None
        future = asyncio.run_coroutine_threadsafe(
            self.fleet.load_everywhere(name, version, path), self.loop
        )
        future.result()
        return RemoteServable(name, version, path)

    async def state_changed(self) -> None:
        if self.fleet is not None:
            await self.fleet.push_state()

    async def reload_config(self, config: ModelServerConfig) -> None:
        # Both ways in (HandleReloadConfigRequest via apply_config, and the config-file poll)
        # end here: labels and removals reach every worker before either answers.
        try:
            await super().reload_config(config)
        finally:
            await self.state_changed()

    def state(self, seq: int) -> dict[str, Any]:
        models: dict[str, Any] = {}
        for name, ctl in self.controllers.items():
            models[name] = {
                "available": sorted(ctl.available),
                "keep": sorted(
                    v for v, e in ctl.entries.items() if e.state in (LOADING, AVAILABLE, UNLOADING)
                ),
                "history": [
                    [v, st.state, st.error_code, st.error_message] for v, st in ctl.history.items()
                ],
                "removed": ctl.removed,
            }
        return {"seq": seq, "models": models, "labels": self.labels}


def default_thread_flags(flags: ServerFlags) -> list[str]:
    """TensorFlow's intra-op pool defaults to one thread per core in *each* process; N workers
    would oversubscribe the cores N times. Unless set, each worker gets its share. (The
    inter-op pool stays TensorFlow's: one inter-op thread would serialize concurrent calls.)"""
    if (
        flags.tensorflow_session_parallelism
        or flags.tensorflow_intra_op_parallelism
        or flags.tensorflow_inter_op_parallelism
    ):
        return []
    share = max(1, (os.cpu_count() or 1) // flags.num_workers)
    return [f"--tensorflow_intra_op_parallelism={share}"]


def worker_batching(batching: BatchingOptions | None, num_workers: int) -> dict[str, Any] | None:
    """The batching options one worker runs with. ``num_batch_threads`` is the server's number
    of batches in flight (TF Serving's one shared scheduler); each worker has its own
    scheduler, so each gets its share, at least one. Measured on 2 cores with 2 workers at 32
    concurrent 1-image requests: 2 threads in each worker ran batches of ~3 images, 1 in each
    ran batches of ~6 and served about a fifth more requests (README, Benchmarks)."""
    if batching is None:
        return None
    options = dataclasses.asdict(batching)
    options["num_batch_threads"] = max(1, batching.num_batch_threads // num_workers)
    return options


class ControlPlane(ModelServer):
    def __init__(self, flags: ServerFlags, configs: LoadedConfig, argv: list[str]) -> None:
        super().__init__(flags, configs)
        batching = configs.batching
        tls = configs.tls
        init = {
            "batching": worker_batching(batching, flags.num_workers),
            "prometheus": dataclasses.asdict(configs.prometheus),
            # Certificates cross as base64 (the wire is JSON).
            "tls": None if tls is None else {
                k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
                for k, v in dataclasses.asdict(tls).items()
            },
        }
        self.fleet = Fleet(
            flags.num_workers,
            [*argv, *default_thread_flags(flags)],
            init,
            self._handle,
            self._state,
        )

    def _state(self, seq: int) -> dict[str, Any]:
        return self.manager.state(seq)

    async def _build(self) -> None:
        f = self.flags
        self.metrics = None
        self.load_executor = ThreadPoolExecutor(
            max_workers=max(2, f.num_load_threads or 4 * (os.cpu_count() or 1)),
            thread_name_prefix="load",
        )
        options = manager_options(f)
        self.manager = ControlPlaneManager(options, self.load_executor, None)
        self.manager.fleet = self.fleet
        self.manager.loop = asyncio.get_running_loop()

    async def _handle(self, kind: str, body: dict[str, Any]) -> Any:
        """Requests from a worker."""
        if kind == "reload":
            config = ModelServerConfig.FromString(base64.b64decode(body["config"]))
            await self.manager.apply_config(config)
            return True
        if kind == "metrics":
            total = Registry()
            for snap in await self.fleet.gather_snapshots():
                total.add_snapshot(snap)
            return total.render()
        raise errors.Unimplemented(f"unknown worker request {kind}")

    async def run(self) -> int:
        await self._build()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        grace = max(0.0, self.flags.shutdown_grace_seconds)
        try:
            await self.fleet.start()
        except Exception as exc:
            print(f"Failed to start server. Error: UNKNOWN: workers did not start: {exc}",
                  file=sys.stderr, flush=True)
            await self.fleet.stop(grace)
            return EXIT_BAD_FLAGS
        self.manager.start_polling()
        initial = loop.create_task(
            self.manager.apply_config(self.configs.model_config, initial=True)
        )
        stopper = loop.create_task(self._stop.wait())
        await asyncio.wait([initial, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not initial.done():
            initial.cancel()
            await self.manager.stop()
            await self.fleet.stop(grace)
            return 0
        stopper.cancel()
        try:
            initial.result()
        except errors.ServingError as exc:
            print(f"Failed to start server. Error: {_status_text(exc)}", file=sys.stderr, flush=True)
            await self.manager.stop()
            await self.fleet.stop(grace)
            return EXIT_BAD_FLAGS
        config_poll = None
        if self.flags.model_config_file and self.flags.model_config_file_poll_wait_seconds > 0:
            config_poll = loop.create_task(self._poll_config_file())
        try:
            await self.fleet.bind_all()
        except errors.ServingError as exc:
            address = f"{self.flags.bind_address}:{self.flags.port}"
            print(
                f"Failed to start server. Error: UNKNOWN: Failed to bind to address {address}: "
                f"{exc.message}",
                file=sys.stderr,
                flush=True,
            )
            await self.manager.stop()
            await self.fleet.stop(grace)
            return EXIT_BAD_FLAGS
        log.info(
            "%d workers serving (pids %s)",
            self.flags.num_workers,
            " ".join(str(p) for p in self.fleet.pids()),
        )
        self.grpc_port = self.flags.port
        self._announce("grpc", self.flags.port)
        if self.flags.rest_api_port and self.flags.rest_api_port != self.flags.port:
            self.rest_port = self.flags.rest_api_port
            self._announce("rest", self.flags.rest_api_port)

        await self._stop.wait()
        log.info("Received stop signal; draining every worker")
        if config_poll is not None:
            config_poll.cancel()
        await self.fleet.stop(grace)
        await self.manager.stop()
        self.load_executor.shutdown(wait=False, cancel_futures=True)
        log.info("Server stopped")
        return 0


def run_control_plane(flags: ServerFlags, configs: LoadedConfig, argv: list[str]) -> int:
    return event_loop.run(ControlPlane(flags, configs, argv).run())
