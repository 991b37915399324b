"""``python -m export train`` exit statuses seen from the command line, as make and CI see them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export.commands.train import EXIT_REFUSED
from export.mnist_data import DEFAULT_DATA_DIR, EXPECTED_LAYOUTS

PROJECT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gate_refusal_exits_3_and_publishes_nothing(tmp_path: Path, mirror_server) -> None:
    """A real (tiny) training the gate refuses: exit status 3, the reason on stdout and
    stderr, no version and no debris. The data comes from MNIST_MIRRORS (a dead mirror, then
    a loopback one), so the environment variable is exercised through the command line too."""
    for name in EXPECTED_LAYOUTS:
        shutil.copy(DEFAULT_DATA_DIR / f"{name}.gz", mirror_server.root / f"{name}.gz")
    repo, data_dir = tmp_path / "models", tmp_path / "data"
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MNIST_MIRRORS": f"http://127.0.0.1:9/,{mirror_server.url}",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "export", "train", "--arch", "softmax", "--repo", str(repo),
         "--epochs", "1", "--train-limit", "600", "--learning-rate", "0.01",
         "--min-accuracy", "0.999", "--no-report-png",
         "--data-dir", str(data_dir), "--fetch-data"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == EXIT_REFUSED == 3, proc.stderr[-3000:]
    assert "is below the softmax threshold 0.9990" in proc.stdout
    assert "gate: REFUSED: test accuracy 0." in proc.stdout
    assert "not published: mnist softmax test accuracy 0." in proc.stdout
    assert "export refused: test accuracy 0." in proc.stderr
    assert "published mnist version" not in proc.stdout
    # Nothing published and nothing left behind (the staging directory went with the refusal).
    assert not [p for p in repo.rglob("*") if p.is_file()]
    assert [p.name for p in (repo / "mnist").iterdir()] == []
    # The four files came from the loopback mirror, verified, after the dead one failed.
    assert f"data: {data_dir} verified" in proc.stdout
    assert sorted(mirror_server.requested) == sorted(f"/{name}.gz" for name in EXPECTED_LAYOUTS)
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(
        f"{name}.gz" for name in EXPECTED_LAYOUTS
    )
