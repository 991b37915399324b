"""Ctrl-C (SIGINT) for ``export train``: before the publish rename nothing is published and the
command exits 130; after the rename the version is whole and is reported as published.

Why a handler of our own instead of Python's default KeyboardInterrupt:

* A process started with SIGINT ignored (any background job of a non-interactive shell:
  ``make export &``, a CI step run with ``&``) inherits SIG_IGN, and Python then installs no
  KeyboardInterrupt handler at all: Ctrl-C or ``kill -INT`` was silently lost and the export
  went on to publish. :meth:`InterruptGuard.installed` sets the handler unconditionally.
* KeyboardInterrupt is raised wherever the main thread happens to be, which in a Keras fit
  loop can be inside a library's ``__del__`` or cleanup code that swallows it. The handler
  therefore also records the request; the pipeline checks the record at every batch end and
  phase boundary and, last, right before the rename, so an interrupt cannot be lost on the
  way to the repository.
* Once the pipeline passes the point of no return (:meth:`InterruptGuard.commit`, called
  just before ``rename``), an interrupt is only recorded: raising between the rename and the
  report would leave a published version that the command claims it did not publish.

Test hook: ``EXPORT_TEST_PAUSE_AT=<point>`` (one of :data:`PAUSE_POINTS`) makes the export
print ``test hook: paused at <point>`` when it reaches that point and wait there (up to
:data:`PAUSE_MAX_S`, or until an interrupt arrives), so a test can interrupt or kill it at an
exact phase without guessing from sleeps. Unset, the hook does nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

PAUSE_ENV = "EXPORT_TEST_PAUSE_AT"
PAUSE_POINTS = ("load_data", "evaluate", "gate", "before_rename", "after_rename")
PAUSE_MAX_S = 60.0


@dataclass
class InterruptGuard:
    requested: bool = False  # a SIGINT arrived (sticky, even if a library swallowed the raise)
    committed: bool = False  # past the point of no return: interrupts are only recorded

    def _on_sigint(self, signum: int, frame: object) -> None:
        self.requested = True
        if not self.committed:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[InterruptGuard]:
        """Handle SIGINT with this guard for the block (main thread only; elsewhere the
        process's handler stays as it is)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def check(self) -> None:
        """Raise KeyboardInterrupt if an interrupt was requested and we may still stop."""
        if self.requested and not self.committed:
            raise KeyboardInterrupt

    def commit(self) -> None:
        """The point of no return, called right before the publish rename: raise if an
        interrupt is pending, else only record interrupts from now on."""
        self.committed = True  # first: a signal arriving now is recorded and seen below
        if self.requested:
            self.committed = False
            raise KeyboardInterrupt

    def pause(self, point: str, out: TextIO) -> None:
        """The test hook (see the module docstring)."""
        if os.environ.get(PAUSE_ENV) != point:
            return
        print(f"test hook: paused at {point} ({PAUSE_ENV})", file=out, flush=True)
        deadline = time.monotonic() + PAUSE_MAX_S
        while not self.requested and time.monotonic() < deadline:
            time.sleep(0.02)  # a SIGINT before commit() raises out of this sleep


def pause(guard: InterruptGuard | None, point: str, out: TextIO) -> None:
    if guard is not None:
        guard.pause(point, out)


def check(guard: InterruptGuard | None) -> None:
    if guard is not None:
        guard.check()
