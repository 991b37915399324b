"""``python -m clients``: predict / status / metadata against loopback fake servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from client_fakes import FakeGrpcServer, FakeRestServer

from clients import cli, images

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def servers():
    with FakeGrpcServer() as g, FakeRestServer() as r:
        yield {"grpc": f"grpc://{g.target}", "rest": r.url}


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    paths = []
    for digit in (3, 8):
        picture = np.zeros((28, 28), np.float32)
        picture.reshape(-1)[digit] = 1.0  # the fake model's class: argmax of the first pixels
        path = folder / f"digit{digit}.png"
        path.write_bytes(images.to_png(picture))
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_predict_prints_digit_and_probability(servers, digit_files, transport, capsys):
    code = cli.main(["predict", "--target", servers[transport], "--version", "1", *digit_files])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out == [f"{digit_files[0]}: 3 (p=0.9100)", f"{digit_files[1]}: 8 (p=0.9100)"]


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_predict_json_and_labels(servers, digit_files, transport, capsys):
    assert cli.main(["predict", "--target", servers[transport], "--label", "canary", "--json",
                     *digit_files]) == 0  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    assert [r["digit"] for r in rows] == [4, 9]  # the fake version 2 answers class + 1
    assert rows[0]["file"] == digit_files[0] and len(rows[0]["probabilities"]) == 10
    assert rows[0]["version"] == (2 if transport == "grpc" else None)


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_status_and_metadata(servers, transport, capsys):
    assert cli.main(["status", "--target", servers[transport], "--model", "mnist"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "mnist version 2: AVAILABLE",
        "mnist version 1: AVAILABLE",
    ]
    assert cli.main(["metadata", "--target", servers[transport], "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["version"] == 2
    assert meta["signatures"]["serving_default"]["inputs"]["images"] == {
        "name": "images:0",
        "dtype": "DT_FLOAT",
        "shape": [-1, 784],
    }
    assert cli.main(["metadata", "--target", servers[transport]]) == 0
    assert "in  images: DT_FLOAT [-1, 784]" in capsys.readouterr().out


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "clients", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )  # fmt: skip


def test_errors_are_one_line_without_traceback(servers, digit_files, tmp_path):
    cases = [
        (["status", "--target", servers["grpc"], "--model", "nope"], "ModelNotFound"),
        (
            ["predict", "--target", servers["rest"], "--version", "7", digit_files[0]],
            "Specific(mnist, 7)",
        ),
        (["predict", "--target", servers["grpc"], str(tmp_path / "missing.png")], "cannot read"),
        (["status", "--target", "grpc://127.0.0.1:1", "--timeout", "1"], "Unavailable"),
        (["status", "--target", "ftp://x"], "not a gRPC target"),
    ]
    for args, needle in cases:
        proc = _run(*args)
        assert proc.returncode == 1, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert needle in lines[0] and "Traceback" not in proc.stderr
    usage = _run("predict", "--target", servers["grpc"], "--version", "1", "--label", "x", "a.png")
    assert usage.returncode == 2 and "not allowed with argument" in usage.stderr
