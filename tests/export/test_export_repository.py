"""Model repository: version numbering, atomic publish under crashes, concurrency, retention."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from export.repository import ModelRepository, RepositoryError
from export.retention import protected_versions
from export.rollout_state import RolloutState, save_state

PROJECT = Path(__file__).resolve().parents[2]


def _stage(repo: ModelRepository, payload: str = "x") -> Path:
    """A staged 'model' (the repository does not care what a version holds)."""
    repo.model_dir.mkdir(parents=True, exist_ok=True)
    staged = repo.model_dir / f".staging-{os.getpid()}-{os.urandom(6).hex()}"
    staged.mkdir()
    (staged / "saved_model.pb").write_text(payload)
    return staged


def _numeric_dirs(repo: ModelRepository) -> list[str]:
    return sorted(p.name for p in repo.model_dir.iterdir() if p.name.isdigit())


def test_versions_are_whole_name_integers(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, "mnist")
    assert repo.versions() == [] and repo.latest() is None
    for name in ("1", "2", "10", "9", "1a", ".3", "-4", "0x5", " 6", "12.0"):
        (repo.model_dir / name).mkdir(parents=True)
    (repo.model_dir / "77").write_text("a file, not a version")
    assert repo.versions() == [1, 2, 9, 10]
    assert repo.publish(_stage(repo)).version == 11


def test_publish_numbers_increase_and_content_is_whole(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, "mnist")
    seen = []
    for i in range(3):
        staged = _stage(repo, f"model {i}")

        def finalize(path: Path, version: int) -> None:
            # While the number is held, no numeric directory exists for it yet.
            assert not repo.version_path(version).exists()
            assert repo.reserved() == [version]
            (path / "version.txt").write_text(str(version))

        published = repo.publish(staged, finalize)
        seen.append(published.version)
        assert (published.path / "saved_model.pb").read_text() == f"model {i}"
        assert (published.path / "version.txt").read_text() == str(published.version)
        assert not staged.exists()
    assert seen == [1, 2, 3]
    assert sorted(p.name for p in repo.model_dir.iterdir()) == ["1", "2", "3"]  # no locks left


def test_staging_outside_model_dir_is_refused(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, "mnist")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(RepositoryError, match="must live in"):
        repo.publish(elsewhere)


def test_invalid_model_names() -> None:
    for name in ("", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            ModelRepository("/tmp", name)


def test_ctrl_c_during_publish_leaves_nothing(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, "mnist")

    def interrupted(path: Path, version: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), repo.staging() as staged:
        (staged / "saved_model.pb").write_text("half")
        repo.publish(staged, interrupted)
    assert list(repo.model_dir.iterdir()) == []
    assert repo.publish(_stage(repo)).version == 1


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from export.repository import ModelRepository

    repo = ModelRepository(sys.argv[1], "mnist")
    where = sys.argv[2]

    def die(*_):
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind: a hard crash

    with repo.staging() as staged:
        (staged / "saved_model.pb").write_text("partial")
        if where == "build":
            die()
        repo.publish(staged, die)  # dies holding the reserved number
    """
)


@pytest.mark.parametrize("where", ["build", "reserved"])
def test_hard_crash_leaves_no_numeric_dir_and_no_blocking_debris(
    tmp_path: Path, where: str
) -> None:
    repo = ModelRepository(tmp_path, "mnist")
    repo.publish(_stage(repo))  # version 1 exists beforehand
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path), where], cwd=PROJECT, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL
    assert _numeric_dirs(repo) == ["1"]
    debris = sorted(p.name for p in repo.model_dir.iterdir() if not p.name.isdigit())
    assert any(name.startswith(".staging-") for name in debris)
    if where == "reserved":
        assert ".version-2.lock" in debris
    # The next export is not blocked and cleans up after the dead one.
    assert repo.publish(_stage(repo)).version == 2
    assert sorted(p.name for p in repo.model_dir.iterdir()) == ["1", "2"]


def test_live_owners_debris_is_not_cleaned(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, "mnist")
    with repo.staging() as mine, repo.reserve() as held:
        assert repo.clean_stale() == []
        assert mine.exists() and held == 1
        # A concurrent publisher skips the held number.
        assert repo.publish(_stage(repo)).version == 2
    assert repo.versions() == [2]


PUBLISH_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from export.repository import ModelRepository

    repo = ModelRepository(sys.argv[1], "mnist")
    start = float(sys.argv[2])
    while time.time() < start:  # line up with the other processes
        time.sleep(0.005)
    for i in range(int(sys.argv[3])):
        with repo.staging() as staged:
            (staged / "saved_model.pb").write_text(f"{os.getpid()}-{i}")
            print(repo.publish(staged).version, flush=True)
    """
)


def test_concurrent_publishes_from_processes_get_distinct_versions(tmp_path: Path) -> None:
    import time

    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISH_SCRIPT, str(tmp_path), str(start), "3"],
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    versions = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        versions += [int(line) for line in out.split()]
    # Distinct numbers, one per publish. Gaps are allowed: a reservation that sees a higher
    # version published meanwhile gives its number up, so versions stay increasing in time.
    assert len(versions) == 12 and len(set(versions)) == 12
    repo = ModelRepository(tmp_path, "mnist")
    assert repo.versions() == sorted(versions)
    contents = {(repo.version_path(v) / "saved_model.pb").read_text() for v in repo.versions()}
    assert len(contents) == 12  # every publish landed whole, none overwrote another
    # Nothing else is left behind: no lock files, no staging directories.
    assert sorted(p.name for p in repo.model_dir.iterdir()) == sorted(str(v) for v in versions)


def test_concurrent_publishes_from_threads(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, "mnist")
    results: list[int] = []
    barrier = threading.Barrier(6)

    def work() -> None:
        staged = _stage(repo)
        barrier.wait(timeout=30)
        results.append(repo.publish(staged).version)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    # Distinct numbers (gaps allowed, see the process test), every one published whole.
    assert len(results) == 6 and len(set(results)) == 6
    assert repo.versions() == sorted(results)
    assert sorted(p.name for p in repo.model_dir.iterdir()) == sorted(str(v) for v in results)


def test_retention_keeps_newest_and_protected(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, "mnist")
    for _ in range(7):
        repo.publish(_stage(repo))
    assert repo.apply_retention(keep=2, protected={1, 3}) == [2, 4, 5]
    assert repo.versions() == [1, 3, 6, 7]
    assert not [p for p in repo.model_dir.iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError):
        repo.apply_retention(keep=0)
    # Deleting old versions never lowers the next number.
    assert repo.publish(_stage(repo)).version == 8


def test_protected_versions_from_rollout_state_and_serving_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVING_RUN_DIR", str(tmp_path / "no-run-dir"))
    save_state(tmp_path, "mnist", RolloutState(stable=4, previous_stable=2, canary=None))
    save_state(tmp_path, "other", RolloutState(stable=9))
    assert protected_versions(tmp_path, "mnist") == {2, 4}
    config = tmp_path / "models.config"  # the default location is read when present
    config.write_text(
        textwrap.dedent(
            """
            model_config_list {
              config {
                name: "mnist"
                base_path: "/models/mnist"
                model_platform: "tensorflow"
                model_version_policy { specific { versions: 5 versions: 6 } }
                version_labels { key: "canary" value: 7 }
              }
              config { name: "other" base_path: "/models/other" model_platform: "tensorflow"
                       model_version_policy { specific { versions: 1 } } }
            }
            """
        )
    )
    assert protected_versions(tmp_path, "mnist") == {2, 4, 5, 6, 7}
    explicit = tmp_path / "elsewhere.config"
    explicit.write_text(
        'model_config_list { config { name: "mnist" base_path: "/m" model_platform: "tensorflow" version_labels { key: "stable" value: 3 } } }'
    )
    assert protected_versions(tmp_path, "mnist", explicit) == {2, 3, 4}
    repo = ModelRepository(tmp_path, "mnist")
    for _ in range(8):
        repo.publish(_stage(repo))
    repo.apply_retention(keep=1, protected=protected_versions(tmp_path, "mnist"))
    assert repo.versions() == [2, 4, 5, 6, 7, 8]


def test_protected_versions_include_the_running_servers_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "config").mkdir(parents=True)
    (run_dir / "config" / "models.config").write_text(
        'model_config_list { config { name: "mnist" base_path: "/m" model_platform: "tensorflow" '
        "model_version_policy { specific { versions: 3 versions: 5 } } } }"
    )
    repo_root = tmp_path / "repo"
    repo_root.mkdir()
    monkeypatch.setenv("SERVING_RUN_DIR", str(run_dir))
    assert protected_versions(repo_root, "mnist") == {3, 5}
    # An explicit config replaces the defaults.
    explicit = tmp_path / "explicit.config"
    explicit.write_text('model_config_list { config { name: "mnist" base_path: "/m" model_platform: "tensorflow" } }')
    assert protected_versions(repo_root, "mnist", explicit) == set()


def test_deleting_a_version_removes_its_mobile_artefacts(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, "mnist")
    first = repo.publish(_stage(repo)).version
    second = repo.publish(_stage(repo)).version
    for version in (first, second):
        repo.mobile_path(version).mkdir(parents=True)
        (repo.mobile_path(version) / "mnist_float32.tflite").write_bytes(b"tflite")
    assert repo.apply_retention(keep=1) == [first]
    assert not repo.mobile_path(first).exists()
    assert (repo.mobile_path(second) / "mnist_float32.tflite").read_bytes() == b"tflite"
    assert sorted(p.name for p in repo.mobile_path(second).parent.iterdir()) == [str(second)]


def test_stale_lock_of_dead_process_is_removed(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, "mnist")
    repo.model_dir.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    (repo.model_dir / ".version-1.lock").write_text(
        json.dumps({"pid": pid, "host": os.uname().nodename})
    )
    (repo.model_dir / f".staging-{pid}-abcdef").mkdir()
    (repo.model_dir / ".deleting-3-abc").mkdir()
    assert len(repo.clean_stale()) == 3
    assert list(repo.model_dir.iterdir()) == []
