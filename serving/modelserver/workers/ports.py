"""Start-up checks for the listeners: flags that do not combine with workers, held ports.

SO_REUSEPORT lets every worker bind the same port, but it would equally let a second server
(same user) join a port that another process already listens on, and the kernel would then
spread connections over both servers. So before anything binds, the port is probed with a
socket *without* SO_REUSEPORT: that bind fails while any other socket listens on the port.
"""

from __future__ import annotations

import errno
import socket

from serving.modelserver import errors
from serving.modelserver.flags import ServerFlags


def _startup_error(error: errors.ServingError):
    from serving.modelserver.server import StartupError  # server imports this module lazily

    return StartupError(error)


def validate_worker_flags(flags: ServerFlags) -> None:
    if flags.num_workers < 1:
        raise _startup_error(
            errors.InvalidArgument(f"--num_workers must be at least 1, got {flags.num_workers}")
        )
    if flags.num_workers > 1 and flags.grpc_socket_path:
        # A Unix socket has one owner; workers cannot share it the way SO_REUSEPORT shares TCP.
        raise _startup_error(
            errors.InvalidArgument(
                "--grpc_socket_path cannot be combined with --num_workers > 1: a Unix socket "
                "is owned by one process. Use --num_workers=1 with --grpc_socket_path, or the "
                "TCP port (--port) with several workers."
            )
        )


def port_is_held(host: str, port: int) -> bool:
    """True when another socket already listens on ``host:port``."""
    if port == 0:
        return False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: connections in TIME_WAIT from an earlier server do not count as held.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def check_ports_free(flags: ServerFlags) -> None:
    """Refuse ports another process holds (raises server.StartupError)."""
    wanted = [("gRPC", flags.port)]
    if flags.rest_api_port and flags.rest_api_port != flags.port:
        wanted.append(("REST", flags.rest_api_port))
    for what, port in wanted:
        try:
            held = port_is_held(flags.bind_address, port)
        except OSError as exc:
            raise _startup_error(
                errors.Unknown(f"Failed to bind to address {flags.bind_address}:{port}: {exc}")
            ) from None
        if held:
            raise _startup_error(
                errors.Unknown(
                    f"Failed to bind to address {flags.bind_address}:{port}: the {what} port is "
                    "already in use by another process"
                )
            )

