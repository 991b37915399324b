"""Messages between the control plane and a worker: length-prefixed JSON over a socketpair.

Either side may send a request (``kind`` + payload) and await its answer; requests are
answered in any order, matched by id. A handler that raises ``errors.ServingError`` sends its
code and message back and the caller re-raises the same error class (``errors.from_code``),
so e.g. a failed HandleReloadConfigRequest reaches the gRPC client unchanged. Requests that
arrive are dispatched in arrival order (tasks start FIFO), which the ``state`` pushes rely on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from serving.modelserver import errors

log = logging.getLogger("serving.modelserver")

_HEADER = struct.Struct("!I")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class PeerGone(Exception):
    """The other process closed the connection (exited or was killed)."""


def error_from(code: int, message: str) -> errors.ServingError:
    try:
        wanted = errors.Code(code)
    except ValueError:
        wanted = errors.Code.UNKNOWN
    for cls in errors.ServingError.__subclasses__():
        if getattr(cls, "code", None) == wanted:
            return cls(message)
    return errors.ServingError(message, wanted)


class Peer:
    def __init__(self, sock: socket.socket, handler: Handler, name: str) -> None:
        self.sock = sock
        self.handler = handler
        self.name = name
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self._handlers: set[asyncio.Task] = set()
        self.closed = asyncio.Event()

    async def start(self) -> None:
        self._reader, self._writer = await asyncio.open_unix_connection(
            sock=self.sock, limit=MAX_MESSAGE_BYTES
        )
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    def _send(self, message: dict[str, Any]) -> None:
        if self._writer is None or self.closed.is_set():
            raise PeerGone(self.name)
        body = orjson.dumps(message)
        self._writer.write(_HEADER.pack(len(body)) + body)

    async def request(self, kind: str, timeout: float | None = None, **payload: Any) -> Any:
        rid = next(self._ids)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._send({"id": rid, "kind": kind, "body": payload})
            assert self._writer is not None
            await self._writer.drain()
            return await asyncio.wait_for(fut, timeout)
        except (ConnectionError, RuntimeError) as exc:
            raise PeerGone(f"{self.name}: {exc}") from None
        finally:
            self._pending.pop(rid, None)

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                head = await self._reader.readexactly(_HEADER.size)
                (size,) = _HEADER.unpack(head)
                message = orjson.loads(await self._reader.readexactly(size))
                if "kind" in message:
                    task = asyncio.get_running_loop().create_task(self._answer(message))
                    self._handlers.add(task)
                    task.add_done_callback(self._handlers.discard)
                    continue
                fut = self._pending.get(message["id"])
                if fut is None or fut.done():
                    continue
                if message.get("ok"):
                    fut.set_result(message.get("result"))
                else:
                    fut.set_exception(error_from(message["code"], message["message"]))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(PeerGone(self.name))

    async def _answer(self, message: dict[str, Any]) -> None:
        try:
            result = await self.handler(message["kind"], message["body"])
            reply = {"id": message["id"], "ok": True, "result": result}
        except errors.ServingError as exc:
            reply = {"id": message["id"], "ok": False, "code": int(exc.code), "message": exc.message}
        except Exception as exc:  # a bug answers UNKNOWN instead of hanging the caller
            log.exception("%s: handling %s failed", self.name, message["kind"])
            reply = {"id": message["id"], "ok": False, "code": 2, "message": str(exc)}
        with contextlib.suppress(PeerGone, ConnectionError, RuntimeError):
            self._send(reply)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
        self.closed.set()
