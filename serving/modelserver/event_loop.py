"""Which asyncio event loop serves: uvloop when it is installed, else the standard one.

uvloop is part of the ``serving`` extra. Measured on the 2-core machine (2 workers, batching
on, 32 concurrent 1-image requests, interleaved A/B runs on a quiet machine): gRPC served
+6% to +40% more requests per second on uvloop in 7 of 8 pairs, REST +8% on average
(README, Benchmarks). grpc.aio runs on any asyncio loop; aiohttp lists uvloop as a supported one.

``MODELSERVER_EVENT_LOOP=asyncio`` keeps the standard loop (for an A/B rerun, or where uvloop
misbehaves); ``MODELSERVER_EVENT_LOOP=uvloop`` insists on uvloop and warns when it is missing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("serving.modelserver")

ENV = "MODELSERVER_EVENT_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's default loop."""
    choice = os.environ.get(ENV, "").strip().lower()
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            log.warning("%s=uvloop but uvloop is not installed; using asyncio", ENV)
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, int]) -> int:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
