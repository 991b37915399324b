"""tools/docker_engine.sh (make docker-engine / docker-engine-stop) where it cannot start an
engine: one line with the reason, exit 0 (CI goes on; the docker tests skip with it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "tools" / "docker_engine.sh"


def run(tmp_path: Path, *command: str, as_user: bool = False) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "RUN_DIR": str(tmp_path / "run"),
        # A socket nobody listens on: this engine "does not answer" whatever runs here.
        "DOCKER_ENGINE_SOCKET": str(tmp_path / "dead.sock"),
    }
    prefix: list[str] = []
    if as_user:
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    return subprocess.run(
        [*prefix, "bash", str(SCRIPT), *command],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root to drop to an unprivileged uid with setpriv",
)
def test_without_root_it_says_why_in_one_line_and_exits_0():
    # Not under pytest's tmp dir: its root-only parent would hide the run dir from the uid.
    with tempfile.TemporaryDirectory(prefix="engine-test-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "run").mkdir()
        tmp_path.chmod(0o755)
        (tmp_path / "run").chmod(0o777)
        check_without_root(tmp_path)


def check_without_root(tmp_path: Path) -> None:
    result = run(tmp_path, "start", as_user=True)
    assert result.returncode == 0, result.stderr
    line = (
        f"docker engine: none answers on {tmp_path / 'dead.sock'} and starting one needs root "
        "(docker tests will skip)"
    )
    assert result.stdout.splitlines() == [line]
    # The reason is kept for the docker tests' skip message.
    assert (tmp_path / "run" / "docker-engine.problem").read_text().strip() == line


def test_stop_touches_only_a_daemon_it_started(tmp_path):
    (tmp_path / "run").mkdir()
    # A pid file naming a live process that is not a dockerd (this test's own pid).
    (tmp_path / "run" / "dockerd.pid").write_text(f"{os.getpid()}\n")
    result = run(tmp_path, "stop")
    assert result.returncode == 0
    assert "no dockerd started by this project" in result.stdout
    assert not (tmp_path / "run" / "dockerd.pid").exists()
    assert run(tmp_path, "bogus").returncode == 2
