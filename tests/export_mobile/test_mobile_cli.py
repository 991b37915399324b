"""The command line: figures on stdout, refusal with a non-zero exit and a clear message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mobile_models import SourceModel

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "export", "mobile", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_prints_parity_and_refuses_to_overwrite(
    good_model: SourceModel, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(good_model.version_path, repo / good_model.model_name / "7")
    args = ["--repo", str(repo), "--model-name", good_model.model_name]

    first = _run(*args)  # no --version: the newest published one
    assert first.returncode == 0, first.stderr[-3000:]
    name = good_model.model_name
    assert f"{name}_float32.tflite" in first.stdout and f"{name}_int8.tflite" in first.stdout
    assert "numerical parity: not run: Core ML predicts only on macOS" in first.stdout
    assert "result: PASS" in first.stdout
    published = repo / "mobile" / name / "7"
    assert f"published {published}" in first.stdout
    assert "10,000 images of the official MNIST test set" in first.stdout
    assert json.loads((published / "parity.json").read_text())["images"] == 10000

    again = _run(*args, "--version", "7")
    assert again.returncode == 1
    assert "REFUSED" in again.stderr and "already exists; pass --force" in again.stderr
