"""What the kernel says about a server and its workers (Linux /proc): the benchmark's CPU and
memory per process, and which worker owns which client connection (tests)."""

from __future__ import annotations

import os
import re
from pathlib import Path

_SOCKET = re.compile(r"socket:\[(\d+)\]")


def children(pid: int) -> list[int]:
    """The worker processes of a control plane (its direct children), sorted."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return sorted(int(p) for p in text.split())


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def server_pids(pid: int) -> list[int]:
    """The server process and its workers (the control plane first)."""
    return [pid, *children(pid)]


def connections_by_pid(port: int, pids: list[int]) -> dict[int, int]:
    """Established connections on the server side of ``port``, counted per owning process."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "01" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    counts: dict[int, int] = {}
    for pid in pids:
        n = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                m = _SOCKET.fullmatch(os.readlink(fd))
            except OSError:
                continue
            if m and m.group(1) in inodes:
                n += 1
        counts[pid] = n
    return counts
