"""Fixtures for the model-server tests: tiny SavedModels and one shared server process."""

from __future__ import annotations

from pathlib import Path

import ms_models
import pytest
from ms_models import copy_version

from serving.modelserver.process import EmbeddedServerProcess


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    """Pristine models built once: echo/1, ver/1 (with warmup), ver/2, ver/3 (not published)."""
    root = tmp_path_factory.mktemp("ms_store")
    ms_models.build_echo_model(str(root / "echo" / "1"))
    for version in (1, 2, 3):
        ms_models.build_versioned_model(str(root / "ver" / str(version)), version, warmup=version == 1)
    return root


@pytest.fixture(scope="module")
def shared_server(model_store, tiny_mnist_repo, tmp_path_factory):
    """echo (1), ver (1, 2; labels stable=1, canary=2), mnist (tiny) on one server with
    Prometheus enabled. Read-only: tests must not change its config."""
    root = tmp_path_factory.mktemp("ms_shared")
    copy_version(model_store, "echo", 1, root / "echo")
    copy_version(model_store, "ver", 1, root / "ver")
    copy_version(model_store, "ver", 2, root / "ver")
    mnist_base = tiny_mnist_repo.repo / tiny_mnist_repo.model_name
    config = root / "models.config"
    config.write_text(
        f"""model_config_list {{
  config {{ name: "echo" base_path: "{root / 'echo'}" model_platform: "tensorflow" }}
  config {{
    name: "ver" base_path: "{root / 'ver'}" model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{ name: "mnist" base_path: "{mnist_base}" model_platform: "tensorflow" }}
}}
"""
    )
    monitoring = root / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    server = EmbeddedServerProcess(
        [
            f"--model_config_file={config}",
            f"--monitoring_config_file={monitoring}",
            "--allow_version_labels_for_unavailable_models",
            "--file_system_poll_wait_seconds=0",
        ]
    )
    server.start()
    yield server
    code = server.stop()
    assert code == 0, server.log_text()[-3000:]
