"""docker-compose.yml reads the same files, flags and image as the docker backend."""

from __future__ import annotations

from pathlib import Path

import yaml

from serving import config as cfg

ROOT = Path(__file__).resolve().parents[3]


def test_compose_matches_the_config_source():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    # The image is configurable; its default is the pinned one.
    assert service["image"] == f"${{MODEL_SERVER_IMAGE:-{cfg.TF_SERVING_IMAGE}}}"
    assert service["command"] == cfg.server_flags(cfg.CONTAINER_CONFIG_DIR)
    # The base publishes nothing (the host-network override could not take it back); the
    # override compose reads by itself publishes on loopback.
    assert "ports" not in service
    override = yaml.safe_load((ROOT / "docker-compose.override.yml").read_text())
    assert override["services"]["tfserving"]["ports"] == [
        "127.0.0.1:8500:8500",
        "127.0.0.1:8501:8501",
    ]
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


def test_host_network_override_moves_the_listeners_and_publishes_nothing():
    override = yaml.safe_load((ROOT / "docker-compose.host-network.yml").read_text())
    (service,) = override["services"].values()
    assert service["network_mode"] == "host"
    assert "ports" not in service and "networks" not in service
    entrypoint = service["entrypoint"]
    # The image's own entrypoint script, then flags that win over its --port/--rest_api_port.
    assert entrypoint[0] == "/usr/bin/tf_serving_entrypoint.sh"
    assert entrypoint[1:3] == ["--port=${GRPC_PORT:-8500}", "--rest_api_port=${REST_PORT:-8501}"]
    # The unset default is a flag tensorflow_model_server takes, at its default value.
    from serving.modelserver.flags import ServerFlags, parse_flags

    default = entrypoint[3].split(":-", 1)[1].rstrip("}")
    assert parse_flags([default]) == ServerFlags()
