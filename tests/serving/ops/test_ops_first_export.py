"""`make serve` on a fresh clone: the repository does not exist yet, so `python -m serving up`
exports a first version (prepare_repo -> export_first_version -> `python -m export train`)
and then serves it; here with `--host 0.0.0.0`, which publishes the ports on every interface.

The server is only ever contacted through 127.0.0.1; that it listens on all interfaces is read
from the kernel's socket table (/proc/<pid>/net/tcp), not by connecting elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from serving_helpers import Predictor, predict_request

from serving.backends.record import RunDir
from serving.cli import EXIT_ERROR, main
from serving.modelserver.process import free_port

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[3]
TCP_LISTEN = "0A"


def _serving(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving", *args],
        cwd=PROJECT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def first_serve(tmp_path_factory):
    """`python -m serving up` on a repository path that does not exist (its parent does)."""
    root = tmp_path_factory.mktemp("first_export")
    repo, run_dir = root / "models", RunDir(root / "run")
    grpc_port, rest_port = free_port(), free_port()
    proc = _serving(
        "up", "--run-dir", str(run_dir.path), "--repo", str(repo), "--server", "embedded",
        "--arch", "softmax", "--host", "0.0.0.0",
        "--grpc-port", str(grpc_port), "--rest-port", str(rest_port), "--timeout", "300",
        timeout=900,
    )  # fmt: skip
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        record = run_dir.read_record()
        assert record is not None
        yield {"proc": proc, "repo": repo, "run_dir": run_dir, "record": record}
    finally:
        _serving("down", "--run-dir", str(run_dir.path), timeout=120)


def test_empty_repository_is_exported_first_then_served(first_serve) -> None:
    proc, repo, record = first_serve["proc"], first_serve["repo"], first_serve["record"]
    out = proc.stdout
    assert f"model repository {repo} does not exist yet: it will be created" in out
    assert f"no versions of mnist under {repo}: exporting one first" in out
    assert f"$ python -m export train --arch softmax --repo {repo} --model-name mnist" in out
    assert "published mnist version 1" in out  # the export's own last line
    assert sorted(p.name for p in (repo / "mnist").iterdir()) == ["1"]
    meta = json.loads((repo / "mnist" / "1" / "assets.extra" / "metadata.json").read_text())
    assert meta["architecture"] == "softmax"
    assert meta["metrics"]["test_accuracy"] >= meta["gate"]["threshold"] >= 0.92
    assert "version 1    AVAILABLE" in out
    url = f"{record.rest_url}/v1/models/mnist"
    with urllib.request.urlopen(url, timeout=30) as response:
        status = json.loads(response.read())["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("1", "AVAILABLE")]


def _listening_addresses(pid: int, port: int) -> set[str]:
    """Local addresses (hex, as the kernel prints them) of pid's TCP listeners on ``port``."""
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == TCP_LISTEN:
                found.add(address)
    return found


def test_host_0000_listens_on_every_interface_and_is_reached_on_loopback(
    first_serve, tiny_mnist_repo
) -> None:
    if not Path("/proc/self/net/tcp").exists():
        pytest.skip("needs Linux's /proc/<pid>/net/tcp")
    record = first_serve["record"]
    assert record.host == "0.0.0.0"
    # What the operator is told to use: loopback, never the wildcard address.
    assert record.grpc_target == f"127.0.0.1:{record.grpc_port}"
    assert (
        f"REST  http://127.0.0.1:{record.rest_port}/v1/models/mnist" in first_serve["proc"].stdout
    )
    wildcard = {"00000000", "00000000000000000000000000000000"}  # 0.0.0.0 and ::
    for port in (record.grpc_port, record.rest_port):
        addresses = _listening_addresses(record.pid, port)
        assert addresses and addresses <= wildcard, (port, addresses)
        assert "0100007F" not in addresses  # not only 127.0.0.1
    predictor = Predictor(record.grpc_target)
    try:
        assert predictor.version_for(predict_request(tiny_mnist_repo.test_images[:2])) == 1
    finally:
        predictor.close()


def test_a_failing_first_export_starts_nothing(tmp_path, capsys) -> None:
    """The export's exit status is reported and no server, record or pid file appears."""
    run_dir = RunDir(tmp_path / "run")
    repo = tmp_path / "models"
    ports = ("--grpc-port", str(free_port()), "--rest-port", str(free_port()))
    code = main(
        ["up", "--run-dir", str(run_dir.path), "--repo", str(repo), "--server", "embedded",
         "--arch", "no-such-arch", *ports]
    )  # fmt: skip
    assert code == EXIT_ERROR
    err = capsys.readouterr().err
    assert "export failed with exit code 2; nothing started" in err
    assert not run_dir.record_file.exists() and not run_dir.pid_file.exists()
    assert not (repo / "mnist").exists() or not any((repo / "mnist").iterdir())
