"""The clients install and run with TensorFlow blocked from import."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tensorflow_serving", "keras", "tf_keras"):
                raise ImportError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, BlockTensorFlow())
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker did not block")

    import numpy as np
    import clients
    from clients import cli, codec, connect, images, protos
    from client_fakes import FakeGrpcServer, FakeRestServer

    picture = np.zeros((28, 28), np.float32)
    picture.reshape(-1)[6] = 1.0
    png = sys.argv[1]
    open(png, "wb").write(images.to_png(picture))
    with FakeGrpcServer() as g, FakeRestServer() as r:
        for target in (g.target, r.url):
            with connect(target, "mnist", timeout_s=5) as c:
                assert c.predict_digits(images.load_images([png]), version=1).classes.tolist() == [6]
                assert c.model_metadata().signatures["serving_default"].inputs["images"].dtype == "DT_FLOAT"
        assert cli.main(["predict", "--target", "grpc://" + g.target, "--version", "1", png]) == 0
    msg = codec.ndarray_to_tensor_proto(np.ones((2, 3), np.float32))
    assert codec.tensor_proto_to_ndarray(msg).sum() == 6
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_serving"))
    assert not loaded, loaded
    print("NO-TF-OK")
    """
)


def test_clients_work_with_tensorflow_blocked(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "six.png")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NO-TF-OK" in proc.stdout
    assert ": 6 (p=" in proc.stdout
