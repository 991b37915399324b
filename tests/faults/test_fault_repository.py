"""Repository faults under load: exporters killed, versions written badly, a full disk.

The server serves the tiny model's version 1 under policy ``latest``, polling the repository
every second, while gRPC and REST clients check every answer. No case may fail a request.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from fault_server import report

from export.repository import ModelRepository

pytestmark = [pytest.mark.faults, pytest.mark.slow]

# Short exports into the served repository (what `make export` runs, only smaller).
SHORT_EXPORT = ["--arch", "softmax", "--train-limit", "2000", "--epochs", "5",
                "--min-accuracy", "0.1", "--force", "--no-report-png"]  # fmt: skip
# The tiny model's own recipe (export/tiny.py): a re-export answers the same digits.
TINY_RECIPE = ["--arch", "softmax", "--train-limit", "6000", "--epochs", "3",
               "--learning-rate", "0.01", "--seed", "0", "--min-accuracy", "0.5", "--force",
               "--no-report-png"]  # fmt: skip


def _numeric(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.name.isdigit())


def _hidden(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.name.startswith("."))


def test_exporter_killed_while_training(fault_server, digits, export_cli) -> None:
    server = fault_server()
    load = server.load(digits).start()
    run = export_cli([*SHORT_EXPORT, "--repo", str(server.repo)])
    run.wait_line("epoch 1/5 done")
    run.proc.send_signal(signal.SIGKILL)
    run.finish()
    load.wait_for_requests(200)
    result = load.stop()
    report("kill -9 of an exporter while training", result, server,
           f"  repository after: {_numeric(server.base)} {_hidden(server.base)}")  # fmt: skip
    assert result.failures == [], result.summary()
    assert _numeric(server.base) == ["1"]
    assert "version: 2" not in server.log_text()


def test_exporter_killed_inside_its_publish_window(fault_server, digits, export_cli) -> None:
    """Lock written, staging complete, rename not done: kill -9 leaves hidden debris only."""
    server = fault_server()
    load = server.load(digits).start()
    run = export_cli(
        [*SHORT_EXPORT, "--repo", str(server.repo)],
        env={"EXPORT_TEST_PAUSE_AT": "before_rename"},
    )
    run.wait_line("test hook: paused at before_rename")
    debris = _hidden(server.base)
    run.proc.send_signal(signal.SIGKILL)
    run.finish()
    load.wait_for_requests(300)  # > 1 s of polls with the debris in place
    result = load.stop()
    removed = sorted(p.name for p in ModelRepository(server.repo, "mnist").clean_stale())
    report("kill -9 of an exporter inside its publish window", result, server,
           f"  debris left: {debris}; removed by the next export's cleanup: {removed}")  # fmt: skip
    assert result.failures == [], result.summary()
    assert ".version-2.lock" in debris and any(d.startswith(".staging-") for d in debris)
    assert _numeric(server.base) == ["1"]
    assert removed == debris and _hidden(server.base) == []
    assert "version: 2" not in server.log_text()


def test_version_copied_in_non_atomically(fault_server, digits) -> None:
    """saved_model.pb first; variables only after the server has tried (and failed) to load."""
    server = fault_server()
    load = server.load(digits).start()
    source, target = server.base / "1", server.base / "2"
    target.mkdir()
    shutil.copy2(source / "saved_model.pb", target / "saved_model.pb")
    failed_load = server.wait_log("Loading servable: {name: mnist version: 2} failed")
    load.wait_for_requests(100)
    for part in source.iterdir():
        if part.name != "saved_model.pb":
            copy = shutil.copytree if part.is_dir() else shutil.copy2
            copy(part, target / part.name)
    loaded = server.wait_log("Successfully loaded servable version {name: mnist version: 2}")
    unloaded = server.wait_log("Unloading servable version {name: mnist version: 1}")
    load.wait_for_requests(200)
    result = load.stop()
    report("a version copied in non-atomically (saved_model.pb first)", result, server)
    assert result.failures == [], result.summary()
    assert failed_load and loaded and unloaded


def test_garbage_saved_model_pb(fault_server, digits) -> None:
    server = fault_server()
    load = server.load(digits).start()
    target = server.base / "2"
    target.mkdir()
    (target / "saved_model.pb").write_bytes(b"\x08\x01garbage, not a SavedModel" * 40)
    retried = server.wait_log("Loading servable: {name: mnist version: 2} failed", count=2)
    load.wait_for_requests(200)
    result = load.stop()
    report("a garbage saved_model.pb", result, server)
    assert result.failures == [], result.summary()
    assert retried
    assert "Unloading servable version {name: mnist version: 1}" not in server.log_text()


def test_newest_version_deleted_under_latest(fault_server, digits) -> None:
    server = fault_server(start=False)
    shutil.copytree(server.base / "1", server.base / ".tmp-2")
    (server.base / ".tmp-2").rename(server.base / "2")
    server.start()  # latest: version 2 serves
    load = server.load(digits).start()
    load.wait_for_requests(100)
    shutil.rmtree(server.base / "2")  # what an operator's rm -rf does
    back = server.wait_log("Successfully loaded servable version {name: mnist version: 1}")
    gone = server.wait_log("Unloading servable version {name: mnist version: 2}")
    load.wait_for_requests(200)
    result = load.stop()
    report("deleting the newest version under policy latest", result, server)
    assert result.failures == [], result.summary()
    assert back and gone


@contextlib.contextmanager
def _small_tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs for the full-disk case: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full-disk case (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


def _fill(path: Path, leave_bytes: int) -> Path:
    """Fill the file system holding ``path`` up to ``leave_bytes`` free."""
    filler = path / "filler"
    free = shutil.disk_usage(path).free
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave_bytes))
    return filler


def test_export_into_a_full_disk(fault_server, digits, export_cli, tmp_path) -> None:
    with _small_tmpfs(tmp_path / "disk", "2m") as disk:
        server = fault_server(repo=disk / "models")
        load = server.load(digits).start()
        filler = _fill(disk, 48 * 1024)
        run = export_cli([*SHORT_EXPORT, "--repo", str(server.repo)])
        code = run.finish()
        after_failure = (_numeric(server.base), _hidden(server.base))
        load.wait_for_requests(200)
        # What a kill -9'd exporter would have left, to be cleaned by the next export.
        dead = subprocess.Popen(["true"])
        dead.wait()
        (server.base / f".staging-{dead.pid}-0123456789ab").mkdir()
        (server.base / f".staging-{dead.pid}-0123456789ab" / "saved_model.pb").write_bytes(b"x")
        filler.unlink()
        second = export_cli([*TINY_RECIPE, "--repo", str(server.repo)])
        second_code = second.finish()
        loaded = server.wait_log("Successfully loaded servable version {name: mnist version: 2}")
        load.wait_for_requests(200)
        result = load.stop()
        message = [line for line in run.stderr.splitlines() if "no space left" in line]
        report("an export into a full disk (2 MB tmpfs)", result, server,
               f"  export exit {code}: {message[:1]}\n"
               f"  repository after it: {after_failure}\n"
               f"  next export exit {second_code}; repository: {_numeric(server.base)} "
               f"{_hidden(server.base)}")  # fmt: skip
        assert code == 5, run.stderr[-3000:]
        assert message and "nothing was published" in message[0]
        assert after_failure == (["1"], []), after_failure
        assert result.failures == [], result.summary()
        assert second_code == 0, second.stderr[-3000:]
        assert "removed debris of dead exports" in second.stdout
        assert _numeric(server.base) == ["1", "2"] and _hidden(server.base) == []
        assert loaded
        server.stop()
