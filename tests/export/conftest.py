"""Fixtures for the export tests."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Mirror:
    url: str  # base URL, ends with "/"
    root: Path  # the directory it serves
    requested: list[str] = field(default_factory=list)  # paths asked for, in order


@pytest.fixture
def mirror_server(tmp_path: Path) -> Iterator[Mirror]:
    """A loopback HTTP server serving a directory, recording what it was asked for."""
    mirror = Mirror("", tmp_path / "mirror")
    mirror.root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(mirror.root), **kwargs)

        def do_GET(self) -> None:
            mirror.requested.append(self.path)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    mirror.url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield mirror
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def mirror(mirror_server: Mirror) -> tuple[str, Path]:
    """(base URL, directory) of :func:`mirror_server`."""
    return mirror_server.url, mirror_server.root
