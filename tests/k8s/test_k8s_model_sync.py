"""The model-sync script (k8s/base/model-sync/sync.sh) run for real against a local "bucket".

rclone is replaced by a small shell stand-in that maps ``store:<path>`` to a local directory and,
while copying, records whether the version's numeric directory was already visible: the
script's whole promise is that it never is before the copy is complete and checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "k8s" / "base" / "model-sync" / "sync.sh"

FAKE_RCLONE = r"""#!/bin/sh
# Stand-in for rclone: lsf and copy on local directories; "store:" is $FAKE_STORE.
set -eu
cmd=$1; shift
for arg in "$@"; do last=$arg; done
case "$cmd" in
  lsf)
    dir="$FAKE_STORE/${last#store:}"
    for entry in "$dir"/*; do [ -f "$entry" ] && basename "$entry"; done
    ;;
  copy)
    src=""; dst=""
    for arg in "$@"; do
      case "$arg" in --*) ;; *) if [ -z "$src" ]; then src=$arg; else dst=$arg; fi ;; esac
    done
    version=$(basename "$src")
    if [ -e "$(dirname "$dst")/$version" ]; then echo "$version" >>"$FAKE_LOG.visible"; fi
    case "$(basename "$dst")" in
      *[!0-9]*) ;;
      *) echo "$version" >>"$FAKE_LOG.visible" ;;  # copying straight into a version name
    esac
    if [ "${FAKE_FAIL:-}" = "$version" ]; then echo "network error" >&2; mkdir -p "$dst"; exit 5; fi
    mkdir -p "$dst"
    cp -R "$FAKE_STORE/${src#store:}/." "$dst/"
    echo "$version" >>"$FAKE_LOG.copied"
    ;;
  *) echo "unexpected rclone command $cmd" >&2; exit 9 ;;
esac
"""


def _publish(bucket: Path, version: int, *, ready: bool = True, variables: bool = True) -> None:
    vdir = bucket / "mnist" / str(version)
    (vdir / "variables").mkdir(parents=True)
    (vdir / "saved_model.pb").write_bytes(b"graph-%d" % version)
    if variables:
        (vdir / "variables" / "variables.index").write_bytes(b"index")
        (vdir / "variables" / "variables.data-00000-of-00001").write_bytes(b"w" * 64)
    if ready:
        (bucket / "mnist" / f"{version}.ready").write_text("")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    if shutil.which("sh") is None:
        pytest.skip("no POSIX shell")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "rclone"
    fake.write_text(FAKE_RCLONE)
    fake.chmod(0o755)
    (tmp_path / "bucket" / "mnist").mkdir(parents=True)
    return {
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_STORE": str(tmp_path / "bucket"),
        "FAKE_LOG": str(tmp_path / "log"),
        "MODEL_SOURCE": "store:mnist",
        "MODEL_TARGET": str(tmp_path / "models" / "mnist"),
        "TMPDIR": str(tmp_path),
    }


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _lines(path: str) -> list[str]:
    p = Path(path)
    return p.read_text().split() if p.exists() else []


def test_only_complete_versions_appear_and_only_by_rename(env):
    bucket, target = Path(env["FAKE_STORE"]), Path(env["MODEL_TARGET"])
    _publish(bucket, 1)
    _publish(bucket, 2)
    _publish(bucket, 3, ready=False)  # upload still running: no marker yet
    _publish(bucket, 4, variables=False)  # marker but broken content
    target.mkdir(parents=True)
    (target / "1").mkdir()
    (target / "1" / "sentinel").write_text("already served")  # published versions are immutable
    (target / ".incoming-9").mkdir()  # a crashed run's leftover

    proc = _run(env)

    assert proc.returncode == 1, proc.stdout + proc.stderr  # version 4 is an error
    assert "published version 2" in proc.stdout
    assert "version 4 lacks saved_model.pb or variables/" in proc.stderr
    assert sorted(p.name for p in target.iterdir()) == ["1", "2"]
    assert (target / "1" / "sentinel").read_text() == "already served"
    assert not (target / "1" / "saved_model.pb").exists()
    assert (target / "2" / "saved_model.pb").read_bytes() == b"graph-2"
    assert (target / "2" / "variables" / "variables.index").exists()
    assert _lines(env["FAKE_LOG"] + ".copied") == ["2", "4"]
    assert _lines(env["FAKE_LOG"] + ".visible") == []


def test_failed_copy_leaves_nothing_visible_and_a_rerun_completes(env):
    bucket, target = Path(env["FAKE_STORE"]), Path(env["MODEL_TARGET"])
    _publish(bucket, 5)
    _publish(bucket, 6)

    proc = _run({**env, "FAKE_FAIL": "6"})
    assert proc.returncode == 1
    assert "copy of version 6 failed" in proc.stderr
    assert sorted(p.name for p in target.iterdir()) == ["5"]

    again = _run(env)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in target.iterdir()) == ["5", "6"]
    assert "1 new version(s)" in again.stdout
    assert _lines(env["FAKE_LOG"] + ".visible") == []

    idle = _run(env)
    assert idle.returncode == 0 and "0 new version(s)" in idle.stdout


def test_missing_source_is_a_clear_error(env):
    env = {k: v for k, v in env.items() if k != "MODEL_SOURCE"}
    proc = _run(env)
    assert proc.returncode != 0
    assert "MODEL_SOURCE" in proc.stderr
    assert not Path(env["MODEL_TARGET"]).exists()
