"""Which asyncio event loop serves: the standard one, or uvloop for measurement.

``MODELSERVER_EVENT_LOOP=uvloop`` runs the server (and every worker) on uvloop when it is
installed. It is off by default: on the benchmark machine it did not hold a gain (README,
Benchmarks); the switch stays so the measurement can be repeated.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("serving.modelserver")


def run(main: Coroutine[Any, Any, int]) -> int:
    if os.environ.get("MODELSERVER_EVENT_LOOP", "") == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("MODELSERVER_EVENT_LOOP=uvloop but uvloop is not installed; using asyncio")
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)
