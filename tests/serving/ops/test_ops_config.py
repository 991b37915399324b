"""The one config source: image pin, per-backend renderings, static files, shared flags."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from google.protobuf import text_format

from serving import config as cfg
from serving.config.model_config import ModelServing, VersionPolicy


def parse(text: str):
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def rollout(stable, canary=None, previous=None):
    return SimpleNamespace(stable=stable, canary=canary, previous_stable=previous)


def test_image_is_pinned_to_the_exporting_tensorflow():
    import tensorflow as tf

    repo, _, tag = cfg.TF_SERVING_IMAGE.rpartition(":")
    assert repo == "tensorflow/serving"
    assert tag.count(".") == 2 and tag.replace(".", "").isdigit(), "pin an exact release tag"
    assert tag.split(".")[:2] == tf.__version__.split(".")[:2]


@pytest.mark.parametrize(
    "state", [None, rollout(None), rollout(3), rollout(3, canary=4, previous=2)]
)
def test_renderings_agree_apart_from_base_path(state, tmp_path):
    host_root = str(tmp_path / "repo")
    rendered = {
        root: parse(cfg.render_model_config(root, state)) for root in ("/models", host_root)
    }
    for root, message in rendered.items():
        (model,) = message.model_config_list.config
        assert model.base_path == f"{root}/mnist"
        assert model.model_platform == "tensorflow"
        model.base_path = ""
    assert rendered["/models"] == rendered[host_root]


def test_policy_by_intent():
    (plain,) = parse(cfg.render_model_config("/models", None)).model_config_list.config
    assert plain.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert plain.model_version_policy.latest.num_versions == 1
    assert not plain.version_labels

    (canary,) = parse(cfg.render_model_config("/models", rollout(3, 4, 2))).model_config_list.config
    assert list(canary.model_version_policy.specific.versions) == [3, 4]
    assert dict(canary.version_labels) == {"stable": 3, "canary": 4}

    # No canary in progress: 'canary' follows stable so canary traffic never hits an
    # unknown label; the previous stable is not kept loaded.
    (steady,) = parse(
        cfg.render_model_config("/models", rollout(4, None, 3))
    ).model_config_list.config
    assert list(steady.model_version_policy.specific.versions) == [4]
    assert dict(steady.version_labels) == {"stable": 4, "canary": 4}


def test_committed_compose_config_is_the_rendering_for_containers():
    committed = (cfg.STATIC_DIR / cfg.MODEL_CONFIG_FILE).read_text()
    assert committed == cfg.render_model_config(cfg.CONTAINER_MODELS_ROOT, None)


def test_awkward_host_paths_survive_quoting(tmp_path):
    root = str(tmp_path / 'we"ird\\dir')
    (model,) = parse(cfg.render_model_config(root, rollout(1))).model_config_list.config
    assert model.base_path == root + "/mnist"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"policy": VersionPolicy.SPECIFIC}, "at least one version"),
        (
            {"policy": VersionPolicy.SPECIFIC, "versions": (1,), "labels": {"stable": 2}},
            "version 2",
        ),
        ({"versions": (1,)}, "latest policy"),
        ({"name": "a/b"}, "invalid model name"),
    ],
)
def test_inconsistent_intent_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelServing(**{"name": "mnist", **kwargs})


def test_relative_models_root_is_refused():
    with pytest.raises(ValueError, match="absolute"):
        cfg.render_model_config("models", None)


def test_flags_point_at_a_complete_config_dir(tmp_path):
    config_dir = cfg.write_config_dir(tmp_path / "cfg", cfg.render_model_config("/models", None))
    flags = cfg.server_flags(str(config_dir))
    values = dict(flag.removeprefix("--").split("=", 1) for flag in flags)
    for key in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        assert (tmp_path / "cfg" / values[key].rsplit("/", 1)[1]).is_file()
        assert values[key].startswith(str(config_dir))
    assert values["allow_version_labels_for_unavailable_models"] == "true"
    assert values["enable_batching"] == "true"
    assert int(values["model_config_file_poll_wait_seconds"]) > 0
    assert values["grpc_channel_arguments"].startswith("grpc.max_connection_age_ms=")
    # Only --name=value: TF's flag parser ignores the space-separated form.
    assert all(flag.startswith("--") and "=" in flag for flag in flags)


def test_static_files_hold_what_the_server_needs():
    monitoring = (cfg.STATIC_DIR / cfg.MONITORING_FILE).read_text()
    assert "enable: true" in monitoring
    assert 'path: "/monitoring/prometheus/metrics"' in monitoring
    batching = (cfg.STATIC_DIR / cfg.BATCHING_FILE).read_text()
    assert "max_batch_size { value:" in batching


def test_every_rendering_and_static_file_passes_the_servers_own_readers(tmp_path):
    """The embedded server reads these files exactly as the container does."""
    from serving.modelserver.config import (
        read_batching_options,
        read_model_server_config,
        read_monitoring_config,
        validate_model_server_config,
    )

    for state in (None, rollout(3, canary=4, previous=2)):
        config_dir = cfg.write_config_dir(
            tmp_path / "cfg", cfg.render_model_config(str(tmp_path / "repo"), state)
        )
        validate_model_server_config(
            read_model_server_config(str(config_dir / cfg.MODEL_CONFIG_FILE))
        )
    monitoring = read_monitoring_config(str(config_dir / cfg.MONITORING_FILE))
    assert monitoring.enabled and monitoring.path == "/monitoring/prometheus/metrics"
    batching = read_batching_options(str(config_dir / cfg.BATCHING_FILE))
    assert batching.max_batch_size == 64
