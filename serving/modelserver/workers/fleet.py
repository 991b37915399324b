"""The worker processes as the control plane sees them: spawn, load everywhere, push state,
restart the dead.

Membership is the heart of the consistency rules. A *member* is a worker that holds every
version the control plane considers loaded; loads go to all members and count only when all
of them succeeded (a member that dies meanwhile is dropped, not waited for); every state push
goes to all members and is awaited. A restarted worker loads what the members hold (and what
is being loaded right now), joins in the same event-loop step as its last check (no await in
between, so no version can slip past it), receives the state, and only then binds its
listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from serving.modelserver.workers.wire import Handler, Peer, PeerGone

log = logging.getLogger("serving.modelserver")

Key = tuple[str, int]
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


@dataclass
class WorkerHandle:
    index: int
    proc: subprocess.Popen
    peer: Peer
    pid: int
    member: bool = False
    bound: bool = False
    loaded: set[Key] = field(default_factory=set)


class Fleet:
    def __init__(
        self,
        num_workers: int,
        worker_argv: list[str],
        init: dict[str, Any],
        handler: Handler,
        build_state: Callable[[int], dict[str, Any]],
    ) -> None:
        self.num_workers = num_workers
        self.worker_argv = worker_argv
        self.init = init
        self.handler = handler
        self.build_state = build_state
        self.workers: dict[int, WorkerHandle] = {}
        self.in_flight: dict[Key, str] = {}  # being loaded into the members right now
        self.held: dict[Key, str] = {}  # loaded into every member, still wanted
        self.seq = 0
        self.serving = False  # listeners open (after the initial load)
        self.stopping = False
        self.restarts = 0
        self._tasks: set[asyncio.Task] = set()

    # -- processes -------------------------------------------------------------------------
    def members(self) -> list[WorkerHandle]:
        return [w for w in self.workers.values() if w.member]

    async def _spawn(self, index: int) -> WorkerHandle:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "serving.modelserver.workers.worker",
                    str(index),
                    str(child.fileno()),
                    str(os.getpid()),
                    *self.worker_argv,
                ],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        peer = Peer(parent, self.handler, f"worker {index}")
        await peer.start()
        handle = WorkerHandle(index, proc, peer, proc.pid)
        self.workers[index] = handle
        self._watch(handle)
        await peer.request("init", **self.init)
        log.info("Worker %d started (pid %d)", index, proc.pid)
        return handle

    def _watch(self, w: WorkerHandle) -> None:
        task = asyncio.get_running_loop().create_task(self._supervise(w))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self, w: WorkerHandle) -> None:
        await w.peer.closed.wait()
        w.member = False
        code = await asyncio.to_thread(w.proc.wait)
        if self.stopping:
            return
        log.error("Worker %d (pid %d) exited with %s; restarting it", w.index, w.pid, code)
        if self.workers.get(w.index) is w:
            del self.workers[w.index]
        for attempt in range(1_000_000):
            if self.stopping:
                return
            await asyncio.sleep(RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)])
            try:
                await self._restart(w.index)
                self.restarts += 1
                return
            except (PeerGone, OSError) as exc:
                log.error("Restart of worker %d failed: %s; trying again", w.index, exc)
            except Exception as exc:  # a load error: the new process is unusable
                log.error("Restart of worker %d failed: %s; trying again", w.index, exc)
                bad = self.workers.pop(w.index, None)
                if bad is not None:
                    with contextlib.suppress(ProcessLookupError):
                        bad.proc.kill()

    async def _restart(self, index: int) -> None:
        w = await self._spawn(index)
        started = time.monotonic()
        while True:
            wanted = {**self.held, **self.in_flight}
            missing = {k: p for k, p in wanted.items() if k not in w.loaded}
            if not missing:
                break
            await asyncio.gather(*(self._load_on(w, n, v, p) for (n, v), p in missing.items()))
        w.member = True  # same loop step as the check above: nothing loaded in between
        await self.push_state()
        if self.serving:
            await w.peer.request("bind")
            w.bound = True
        log.info(
            "Worker %d restarted (pid %d): %d version(s) loaded in %.1f s, listening",
            index,
            w.pid,
            len(w.loaded),
            time.monotonic() - started,
        )

    async def start(self) -> None:
        handles = await asyncio.gather(*(self._spawn(i) for i in range(self.num_workers)))
        for w in handles:
            w.member = True

    async def bind_all(self) -> None:
        await asyncio.gather(*(w.peer.request("bind") for w in self.members()))
        for w in self.members():
            w.bound = True
        self.serving = True

    async def stop(self, grace_s: float) -> None:
        """SIGTERM every worker (each drains its in-flight requests) and wait for them."""
        self.stopping = True
        workers = list(self.workers.values())
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s + 10.0
        for w in workers:
            try:
                await asyncio.to_thread(w.proc.wait, max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("Worker %d (pid %d) did not drain in time; killing it", w.index, w.pid)
                w.proc.kill()
                await asyncio.to_thread(w.proc.wait)
        for w in workers:
            w.peer.close()
        for task in list(self._tasks):
            task.cancel()

    # -- model state -----------------------------------------------------------------------
    async def _load_on(self, w: WorkerHandle, name: str, version: int, path: str) -> None:
        await w.peer.request("load", name=name, version=version, path=path)
        w.loaded.add((name, version))

    async def load_everywhere(self, name: str, version: int, path: str) -> None:
        """Load + warm one version in every member; raises the first member's load error."""
        key = (name, version)
        self.in_flight[key] = path
        try:
            targets = self.members()
            results = await asyncio.gather(
                *(self._load_on(w, name, version, path) for w in targets), return_exceptions=True
            )
            for w, result in zip(targets, results, strict=True):
                if isinstance(result, PeerGone) or not w.member:
                    continue  # it died: its replacement loads everything held before joining
                if isinstance(result, BaseException):
                    raise result
            if not self.members():
                raise PeerGone("no worker is running")
            self.held[key] = path
        finally:
            self.in_flight.pop(key, None)

    async def push_state(self) -> None:
        """Send the current state to every member and wait until each applied it."""
        self.seq += 1
        state = self.build_state(self.seq)
        keep = {(name, v) for name, m in state["models"].items() for v in m["keep"]}
        for key in list(self.held):
            if key not in keep:
                del self.held[key]
        for w in self.members():
            w.loaded &= keep | set(self.in_flight)
        targets = self.members()
        await asyncio.gather(
            *(w.peer.request("state", **state) for w in targets), return_exceptions=True
        )

    async def gather_snapshots(self) -> list[Any]:
        targets = [w for w in self.workers.values() if w.member]
        results = await asyncio.gather(
            *(w.peer.request("snapshot", timeout=30) for w in targets), return_exceptions=True
        )
        return [r for r in results if not isinstance(r, BaseException)]

    def pids(self) -> list[int]:
        return [w.pid for w in sorted(self.workers.values(), key=lambda w: w.index)]
