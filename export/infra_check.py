"""The gate's optional infra check: serve the built version with a real model server and ask
it for predictions over REST, before the version is published.

The server is the project's embedded TF Serving stand-in, started as a child process through
its launcher (``serving.modelserver.process``), so export knows nothing of serving's insides.
It loads the staged SavedModel through a temporary base path whose version ``1`` is a symlink
to the staging directory, replays the warmup records (a failing record fails the load, as in
TF Serving) and must answer REST predict with the classes the gate computed in-process.
"""

from __future__ import annotations

import json
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class InfraResult:
    ok: bool
    detail: str


def infra_check(
    staged: Path,
    model_name: str,
    images: np.ndarray,
    expected_classes: np.ndarray,
    startup_timeout_s: float = 120.0,
) -> InfraResult:
    """Serve ``staged`` and compare REST predictions for float32 ``images`` [N, 784]."""
    try:
        from serving.modelserver.process import EmbeddedServerProcess, ServerStartError
    except ImportError as exc:
        return InfraResult(False, f"no model server to run the infra check with ({exc})")

    with tempfile.TemporaryDirectory(prefix="export-infra-") as base:
        (Path(base) / "1").symlink_to(Path(staged).resolve(), target_is_directory=True)
        server = EmbeddedServerProcess(
            # No load retries: a version that fails to load once is refused now, not in minutes.
            args=["--max_num_load_retries=0"],
            model_name=model_name,
            model_base_path=base,
            startup_timeout_s=startup_timeout_s,
        )
        try:
            server.start()
        except ServerStartError as exc:
            return InfraResult(
                False, f"model server did not load the version: {_essence(str(exc))}"
            )
        try:
            body = json.dumps({"instances": images.tolist()}).encode()
            request = urllib.request.Request(
                f"{server.rest_url}/v1/models/{model_name}:predict",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return InfraResult(False, f"REST predict failed: {exc}")
        finally:
            server.stop()
    try:
        classes = [int(row["classes"]) for row in answer["predictions"]]
    except (KeyError, TypeError, ValueError):
        return InfraResult(False, f"unexpected REST predict answer: {str(answer)[:300]}")
    if classes != [int(c) for c in expected_classes]:
        return InfraResult(
            False,
            f"served classes {classes} differ from the reloaded model's {list(expected_classes)}",
        )
    return InfraResult(
        True, f"served by the embedded model server; REST predict on {len(classes)} digits agreed"
    )


def _essence(log_tail: str) -> str:
    """The server's own error lines, without TensorFlow's start-up noise."""
    lines = [
        line.strip()
        for line in log_tail.splitlines()
        if "serving/modelserver" in line or line.startswith(("Failed", "model server"))
    ]
    return " | ".join(lines[-3:]) if lines else log_tail[-500:]
