"""docker-compose.yml reads the same files, flags and image as the docker backend."""

from __future__ import annotations

from pathlib import Path

import yaml

from serving import config as cfg

ROOT = Path(__file__).resolve().parents[3]


def test_compose_matches_the_config_source():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    assert service["image"] == cfg.TF_SERVING_IMAGE
    assert service["command"] == cfg.server_flags(cfg.CONTAINER_CONFIG_DIR)
    assert "127.0.0.1:8500:8500" in service["ports"]
    assert "127.0.0.1:8501:8501" in service["ports"]
    mounts = {v.rsplit(":", 2)[1]: v for v in service["volumes"]}
    assert mounts[cfg.CONTAINER_MODELS_ROOT].endswith(":ro")
    config_mount = mounts[cfg.CONTAINER_CONFIG_DIR]
    assert config_mount.endswith(":ro")
    # The default config dir is the committed one, and it holds every file the flags name.
    default_dir = config_mount.split(":-", 1)[1].split("}", 1)[0]
    for flag in service["command"]:
        if flag.endswith(".config"):
            name = flag.rsplit("/", 1)[1]
            assert (ROOT / default_dir / name).is_file(), name
