"""Concurrent gRPC + REST load for the fault suite, every answer checked.

``ClientLoad`` runs a few threads per transport, each with its own client from ``clients``
(the project's own gRPC and REST clients, retries off so that every failure is seen; each
first makes one unrecorded request to set up its connection), sending
one-digit predict requests for as long as the case runs, bounded in count and in time. Each
answer must carry the expected digit; anything else (an error, a wrong digit) is a failure,
recorded with its start and end time so a case can tell failures inside a restart's downtime
from failures outside it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from clients import connect
from clients.base import NO_RETRY

PACE_S = 0.02  # between a thread's requests: load that leaves the 2 cores to the server too
MAX_REQUESTS_PER_THREAD = 12000
MAX_SECONDS = 240.0
WARMUP_S = 60.0
CLIENT_TIMEOUT_S = 15.0  # generous: the 2-core CI machine is shared


@dataclass(frozen=True)
class Outcome:
    transport: str
    start: float  # time.monotonic()
    end: float
    error: str | None  # None: answered with the expected digit


@dataclass
class LoadReport:
    outcomes: list[Outcome]
    seconds: float

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]

    def count(self, transport: str) -> int:
        return sum(1 for o in self.outcomes if o.transport == transport)

    def failures_outside(self, start: float, end: float) -> list[Outcome]:
        """Failures that did not end inside [start, end] (a restart's downtime)."""
        return [o for o in self.failures if not start <= o.end <= end]

    def downtime(self) -> float:
        """From the first failure's start to the end of the last failure (0 without any)."""
        failed = self.failures
        if not failed:
            return 0.0
        return max(o.end for o in failed) - min(o.start for o in failed)

    def ok_after(self, moment: float) -> int:
        return sum(1 for o in self.outcomes if o.error is None and o.start >= moment)

    def summary(self) -> str:
        errors: dict[str, int] = {}
        for o in self.failures:
            key = (o.error or "")[:160]
            errors[key] = errors.get(key, 0) + 1
        lines = [
            f"requests sent {self.sent} (gRPC {self.count('grpc')}, REST {self.count('rest')}) "
            f"in {self.seconds:.1f} s, failed {len(self.failures)}, "
            f"downtime {self.downtime():.2f} s"
        ]
        lines += [f"  {n} x {text}" for text, n in sorted(errors.items(), key=lambda kv: -kv[1])]
        return "\n".join(lines)


@dataclass
class ClientLoad:
    grpc_target: str
    rest_url: str
    images: np.ndarray  # float32 [n, 784]
    expected: np.ndarray  # int64 [n]: the digit every served version answers
    threads_per_transport: int = 2
    model: str = "mnist"
    max_requests_per_thread: int = MAX_REQUESTS_PER_THREAD
    max_seconds: float = MAX_SECONDS
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _results: list[list[Outcome]] = field(default_factory=list)
    _started: float = 0.0
    _warm: list[int] = field(default_factory=list)

    def start(self) -> ClientLoad:
        self._started = time.monotonic()
        targets = [("grpc", f"grpc://{self.grpc_target}"), ("rest", self.rest_url)]
        for transport, target in targets:
            for index in range(self.threads_per_transport):
                mine: list[Outcome] = []
                self._results.append(mine)
                thread = threading.Thread(
                    target=self._run,
                    args=(transport, target, index, mine),
                    name=f"load-{transport}-{index}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()
        # Faults come only once every client has its connection: the first connect is not a
        # fault (on a starved machine it can take several attempts).
        deadline = time.monotonic() + WARMUP_S
        while len(self._warm) < len(self._threads) and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def _run(self, transport: str, target: str, index: int, mine: list[Outcome]) -> None:
        deadline = self._started + self.max_seconds
        client = connect(target, model=self.model, timeout_s=CLIENT_TIMEOUT_S, retry=NO_RETRY)
        n = index
        try:
            warm_until = time.monotonic() + WARMUP_S
            while time.monotonic() < warm_until and not self._stop.is_set():
                try:
                    client.predict_digits(self.images[:1])  # not recorded: connection set-up
                    break
                except Exception:
                    self._stop.wait(0.1)
            self._warm.append(index)
            while (
                not self._stop.is_set()
                and len(mine) < self.max_requests_per_thread
                and time.monotonic() < deadline
            ):
                i = n % len(self.images)
                n += 1
                start = time.monotonic()
                try:
                    got = client.predict_digits(self.images[i : i + 1])
                    digit = int(got.classes[0])
                    error = None if digit == int(self.expected[i]) else (
                        f"wrong digit {digit}, expected {int(self.expected[i])}"
                    )
                except Exception as exc:  # every failure counts, whatever its type
                    error = f"{type(exc).__name__}: {exc}"
                mine.append(Outcome(transport, start, time.monotonic(), error))
                self._stop.wait(PACE_S)
        finally:
            client.close()

    def wait_for_requests(self, count: int, timeout_s: float = 30.0) -> None:
        """Block until ``count`` more answers arrived (so a case observes load on each side
        of its fault), bounded by ``timeout_s``."""
        target = self._done() + count
        deadline = time.monotonic() + timeout_s
        while self._done() < target and time.monotonic() < deadline:
            time.sleep(0.02)

    def wait_for_ok(self, count: int, after: float, timeout_s: float = 60.0) -> None:
        """Block until ``count`` requests that started after ``after`` were answered right."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ok = sum(
                1 for r in self._results for o in list(r) if o.error is None and o.start >= after
            )
            if ok >= count:
                return
            time.sleep(0.05)

    def _done(self) -> int:
        return sum(len(r) for r in self._results)

    def stop(self) -> LoadReport:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CLIENT_TIMEOUT_S + 5)
        outcomes = sorted((o for r in self._results for o in r), key=lambda o: o.start)
        return LoadReport(outcomes, time.monotonic() - self._started)
