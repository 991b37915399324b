"""One worker process of ``--num_workers``: listeners on the shared ports, no decisions.

    python -m serving.modelserver.workers.worker <id> <control fd> <parent pid> <server flags>

The control plane starts it with one end of a socketpair. The worker sets PR_SET_PDEATHSIG so
the kernel sends it SIGTERM when the control plane dies (and exits at once if that already
happened), then waits for requests: ``init`` (batching and monitoring settings, read once by
the control plane), ``load``, ``state``, ``bind`` (open the REST and gRPC listeners with
SO_REUSEPORT), ``snapshot`` (its metrics). SIGTERM, or the control plane closing the socket,
drains in-flight requests within ``--shutdown_grace_seconds`` and exits 0.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from typing import Any

from serving.modelserver import errors, event_loop
from serving.modelserver.batching import BatchingOptions
from serving.modelserver.config import ModelServerConfig, PrometheusSettings
from serving.modelserver.flags import parse_flags
from serving.modelserver.server import LoadedConfig, ModelServer, setup_logging
from serving.modelserver.workers.replica import ReplicaManager
from serving.modelserver.workers.wire import Peer

log = logging.getLogger("serving.modelserver")

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGTERM when the parent exits; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        raise SystemExit(0)


class WorkerServer(ModelServer):
    def __init__(self, flags, worker_id: int, sock: socket.socket) -> None:
        super().__init__(flags, LoadedConfig(ModelServerConfig(), None, PrometheusSettings()))
        self.worker_id = worker_id
        self.reuse_port = True
        self.peer = Peer(sock, self._handle, f"worker {worker_id}")
        self._built = False
        self._grpc_server: Any = None
        self._runner: Any = None

    def _make_manager(self, options):
        return ReplicaManager(options, self.load_executor, self.metrics, reload=self._reload)

    def _announce(self, what: str, port: int) -> None:
        # Not the ready lines: the control plane prints those once every worker has bound.
        log.info("Worker %d (pid %d) listening: %s port %d", self.worker_id, os.getpid(), what, port)

    def _customize_rest_app(self, app) -> None:
        prom = self.configs.prometheus
        if not prom.enabled:
            return
        from aiohttp import web

        path = prom.path

        @web.middleware
        async def summed_metrics(request, handler):
            # The monitoring path shows the sum over all workers; the control plane collects.
            if request.raw_path == path:
                text = await self.peer.request("metrics", timeout=30)
                return web.Response(text=text, content_type="text/plain")
            return await handler(request)

        app.middlewares.append(summed_metrics)

    async def _reload(self, config) -> None:
        blob = base64.b64encode(config.SerializeToString()).decode()
        await self.peer.request("reload", config=blob)

    async def _handle(self, kind: str, body: dict[str, Any]) -> Any:
        if kind == "state":
            self.manager.apply(body)  # synchronous: applied in arrival order
            return body["seq"]
        if kind == "init":
            from serving.modelserver import session_config
            from serving.modelserver.grpc_security import TlsSettings

            batching = body["batching"]
            tls = body.get("tls")
            self.configs = LoadedConfig(
                ModelServerConfig(),
                None if batching is None else BatchingOptions(
                    **{**batching, "allowed_batch_sizes": tuple(batching["allowed_batch_sizes"])}
                ),
                PrometheusSettings(**body["prometheus"]),
                # From this worker's own flags (its share of the intra-op threads included).
                session_config.build(session_config.SessionFlags.from_flags(self.flags)),
                None if tls is None else TlsSettings(
                    **{k: base64.b64decode(v) if isinstance(v, str) else v for k, v in tls.items()}
                ),
            )
            if not self._built:
                await self._build()
                self._built = True
            return {"pid": os.getpid()}
        if kind == "load":
            await self.manager.load(body["name"], body["version"], body["path"])
            return True
        if kind == "bind":
            return await self._bind()
        if kind == "snapshot":
            return self.metrics.registry.snapshot()
        raise errors.Unimplemented(f"unknown control message {kind}")

    async def _bind(self) -> dict[str, int | None]:
        if self._grpc_server is None:
            self._grpc_server = await self._start_grpc()
            if self._grpc_server is None:
                raise errors.Unknown(f"worker {self.worker_id} could not bind the gRPC port")
            if self.flags.rest_api_port and self.flags.rest_api_port != self.flags.port:
                self._runner = await self._start_rest()
                if self._runner is None:
                    raise errors.Unknown(f"worker {self.worker_id} could not bind the REST port")
        return {"grpc": self.grpc_port, "rest": self.rest_port}

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await self.peer.start()
        stopper = loop.create_task(self._stop.wait())
        gone = loop.create_task(self.peer.closed.wait())
        await asyncio.wait([stopper, gone], return_when=asyncio.FIRST_COMPLETED)
        grace = max(0.0, self.flags.shutdown_grace_seconds)
        stops = []
        if self._grpc_server is not None:
            stops.append(self._grpc_server.stop(grace))
        if self._runner is not None:
            stops.append(self._runner.cleanup())
        await asyncio.gather(*stops, return_exceptions=True)
        self.peer.close()
        if self._built:
            self.infer_executor.shutdown(wait=False, cancel_futures=True)
            self.load_executor.shutdown(wait=False, cancel_futures=True)
        for task in (stopper, gone):
            task.cancel()
        return 0


def main(argv: list[str]) -> int:
    worker_id, fd, parent_pid, *flag_args = argv
    setup_logging()
    die_with_parent(int(parent_pid))
    sock = socket.socket(fileno=int(fd))
    flags = parse_flags(flag_args)
    with contextlib.suppress(KeyboardInterrupt):
        return event_loop.run(WorkerServer(flags, int(worker_id), sock).run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
