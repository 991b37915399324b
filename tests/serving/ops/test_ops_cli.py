"""Bad input to `python -m serving`: a clear message, a non-zero exit, nothing disturbed.

These cases fail before any server starts, so they run in milliseconds.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from serving.backends.record import RunDir, ServerRecord
from serving.cli import EXIT_ERROR, EXIT_NOT_SERVING, main
from serving.modelserver.process import free_port

PROJECT = Path(__file__).resolve().parents[3]


@pytest.fixture
def run_dir(tmp_path) -> RunDir:
    return RunDir(tmp_path / "run")


def serve(run_dir: RunDir, *args: str) -> int:
    return main(["up", "--run-dir", str(run_dir.path), "--server", "embedded", *args])


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_missing_repository(run_dir, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "models"
    assert serve(run_dir, "--repo", str(missing)) == EXIT_ERROR
    assert f"model repository {missing} does not exist" in capsys.readouterr().err
    assert not run_dir.record_file.exists() and not run_dir.pid_file.exists()


def test_repository_that_is_a_file(run_dir, tmp_path, capsys):
    not_a_dir = tmp_path / "models"
    not_a_dir.write_text("oops")
    assert serve(run_dir, "--repo", str(not_a_dir)) == EXIT_ERROR
    assert "is not a directory" in capsys.readouterr().err
    assert not_a_dir.read_text() == "oops"


NOBODY = 65534  # the conventional unprivileged uid/gid


def _as_unprivileged() -> list[str]:
    """A command prefix that drops root to NOBODY (root reads every directory, and CI runs as
    root); empty when the tests already run unprivileged."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and util-linux's setpriv is not installed")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def test_unreadable_repository():
    """`serve` as a user who may not read the repository: refused, nothing written."""
    prefix = _as_unprivileged()
    # Not under tmp_path: pytest's base temp dir is private to its owner (0700), and the
    # unprivileged user must get as far as the repository itself.
    with tempfile.TemporaryDirectory(prefix="ops-unreadable-") as scratch:
        root = Path(scratch)
        root.chmod(0o755)
        locked = root / "models"
        (locked / "mnist" / "1").mkdir(parents=True)
        locked.chmod(0)
        run_dir = root / "run"
        run_dir.mkdir(mode=0o777)
        run_dir.chmod(0o777)  # writable for the child: a wrong refusal would show up in it
        ports = ("--grpc-port", str(free_port()), "--rest-port", str(free_port()))
        try:
            proc = subprocess.run(
                [*prefix, sys.executable, "-m", "serving", "up", "--run-dir", str(run_dir),
                 "--server", "embedded", "--repo", str(locked), *ports],
                cwd=PROJECT,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                capture_output=True,
                text=True,
                timeout=120,
            )  # fmt: skip
        finally:
            locked.chmod(0o755)
        assert proc.returncode == EXIT_ERROR, proc.stdout + proc.stderr
        assert f"model repository {locked} is not readable (check its permissions)" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert list(run_dir.iterdir()) == []  # no record, no pid file, no config
        assert (locked / "mnist" / "1").is_dir()  # the repository is untouched


def test_empty_repository_without_export(run_dir, tmp_path, capsys):
    (tmp_path / "models" / "mnist" / "not-a-version").mkdir(parents=True)
    assert serve(run_dir, "--repo", str(tmp_path / "models"), "--no-export") == EXIT_ERROR
    assert "no published versions of mnist" in capsys.readouterr().err


def test_port_in_use(run_dir, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = ("--grpc-port", str(port), "--rest-port", str(free_port()))
        code = serve(run_dir, "--repo", str(tmp_path), *ports)
    assert code == EXIT_ERROR
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
    assert not run_dir.record_file.exists()


def test_stale_pid_file_is_reported_and_removed(run_dir, capsys):
    run_dir.path.mkdir(parents=True)
    pid = dead_pid()
    run_dir.pid_file.write_text(f"{pid}\n")
    assert main(["status", "--run-dir", str(run_dir.path)]) == EXIT_NOT_SERVING
    out = capsys.readouterr().out
    assert f"removing stale pid file {run_dir.pid_file} (pid {pid} is not running)" in out
    assert "not serving" in out
    assert not run_dir.pid_file.exists()


def test_pid_file_of_an_unrelated_live_process_is_stale(run_dir, capsys):
    # A recycled pid now belongs to something else (here: this pytest process).
    run_dir.path.mkdir(parents=True)
    run_dir.pid_file.write_text(f"{os.getpid()}\n")
    assert main(["down", "--run-dir", str(run_dir.path)]) == 0
    assert "removing stale pid file" in capsys.readouterr().out
    assert not run_dir.pid_file.exists()


def test_stale_server_record_is_reported_and_removed(run_dir, tmp_path, capsys):
    record = ServerRecord(
        backend="embedded", model_name="mnist", repo=str(tmp_path), models_root=str(tmp_path),
        config_dir=str(run_dir.config_dir), host="127.0.0.1", grpc_port=1, rest_port=2,
        pid=dead_pid(),
    )  # fmt: skip
    run_dir.write_record(record)
    assert main(["status", "--run-dir", str(run_dir.path)]) == EXIT_NOT_SERVING
    assert "removing stale server record" in capsys.readouterr().out
    assert not run_dir.record_file.exists()


def test_corrupt_server_record(run_dir, capsys):
    run_dir.path.mkdir(parents=True)
    run_dir.record_file.write_text("{not json")
    assert main(["status", "--run-dir", str(run_dir.path)]) == EXIT_ERROR
    assert "is unreadable" in capsys.readouterr().err
    assert run_dir.record_file.read_text() == "{not json"  # never deleted behind your back


def test_rollout_without_a_server(run_dir, capsys):
    assert main(["rollout", "promote", "--run-dir", str(run_dir.path)]) == EXIT_ERROR
    assert "nothing is serving" in capsys.readouterr().err


def test_down_without_a_server(run_dir, capsys):
    assert main(["down", "--run-dir", str(run_dir.path)]) == 0
    assert "nothing is serving" in capsys.readouterr().out


def test_unknown_backend_is_refused_by_the_parser(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        serve(run_dir, "--repo", str(tmp_path), "--server", "podman")
    assert exc.value.code == 2
    assert "invalid choice: 'podman'" in capsys.readouterr().err


def test_rollout_state_naming_unpublished_versions(run_dir, tmp_path, capsys):
    repo = tmp_path / "models"
    (repo / "mnist" / "1").mkdir(parents=True)
    (repo / "rollout.json").write_text(
        json.dumps({"mnist": {"stable": 1, "previous_stable": None, "canary": 7}})
    )
    ports = ("--grpc-port", str(free_port()), "--rest-port", str(free_port()))
    assert serve(run_dir, "--repo", str(repo), *ports) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "rollout.json names version 7 of mnist as canary" in err
    assert "published: [1]" in err
    assert not run_dir.record_file.exists()


def test_operator_commands_do_not_import_tensorflow(tmp_path) -> None:
    """status / rollout talk to the server with the clients' private protos: no TensorFlow
    import (seconds, and its stderr noise) for a command that only asks the server."""
    code = (
        "import sys\n"
        "import serving.cli, serving.rollout, serving.backends.control, serving.backends.lifecycle\n"
        "from serving.cli import main\n"
        f"rc = main(['status', '--run-dir', {str(tmp_path)!r}])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_serving'))\n"
        "print(rc, loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == f"{EXIT_NOT_SERVING} []"
