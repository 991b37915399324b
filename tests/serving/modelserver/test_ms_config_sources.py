"""Config files (ModelServerConfig / BatchingParameters / MonitoringConfig) and version discovery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import text_format

from serving.modelserver import errors
from serving.modelserver.config import (
    ModelServerConfig,
    read_batching_options,
    read_monitoring_config,
    single_model_config,
    validate_model_server_config,
)
from serving.modelserver.protos import BatchingParameters, MonitoringConfig
from serving.modelserver.sources import aspired_versions, discover_versions, parse_version

CASES = Path("/work/shared/docs/tfs_rest_cases.jsonl")


def cfg(text: str) -> ModelServerConfig:
    return text_format.Parse(text, ModelServerConfig())


def test_batching_parameters_have_tf_serving_field_numbers():
    fields = {f.name: f.number for f in BatchingParameters.DESCRIPTOR.fields}
    assert fields["max_batch_size"] == 1
    assert fields["batch_timeout_micros"] == 2
    assert fields["max_enqueued_batches"] == 3
    assert fields["num_batch_threads"] == 4
    assert fields["thread_pool_name"] == 5
    assert fields["allowed_batch_sizes"] == 6
    assert fields["pad_variable_length_inputs"] == 7
    assert BatchingParameters.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    assert MonitoringConfig.DESCRIPTOR.full_name == "tensorflow.serving.MonitoringConfig"


def test_batching_file_as_in_tf_serving_docs(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text(
        "max_batch_size { value: 128 }\n"
        "batch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 1000000 }\n"
        "num_batch_threads { value: 8 }\n"
    )
    opts = read_batching_options(str(path))
    assert (opts.max_batch_size, opts.batch_timeout_micros) == (128, 0)
    assert (opts.max_enqueued_batches, opts.num_batch_threads) == (1000000, 8)
    assert opts.thread_pool_name == "batch_threads"


def test_batching_defaults_without_file():
    opts = read_batching_options("")
    assert (opts.max_batch_size, opts.batch_timeout_micros, opts.max_enqueued_batches) == (
        1000,
        0,
        10,
    )
    assert opts.thread_pool_name == "model_server_batch_threads"


def test_allowed_batch_sizes_must_end_at_max_batch_size(tmp_path):
    path = tmp_path / "b.config"
    path.write_text("max_batch_size { value: 64 } allowed_batch_sizes: 8 allowed_batch_sizes: 32")
    with pytest.raises(errors.InvalidArgument, match="last entry was 32; expected 64"):
        read_batching_options(str(path))


def test_monitoring_config(tmp_path):
    path = tmp_path / "monitoring.config"
    path.write_text('prometheus_config { enable: true, path: "/metrics" }')
    assert read_monitoring_config(str(path)).path == "/metrics"
    path.write_text("prometheus_config { enable: true }")
    assert read_monitoring_config(str(path)).path == "/monitoring/prometheus/metrics"
    assert read_monitoring_config("").enabled is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model_config_list { config { name: 'm' base_path: '/a' } }",
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform, model name is m",
        ),
        (
            "model_config_list { config { name: 'm' base_path: '/a' model_platform: 'tensorflow' }"
            " config { name: 'm' base_path: '/b' model_platform: 'tensorflow' } }",
            "Illegal to list model m multiple times in config list",
        ),
        (
            "model_config_list { config { name: 'm' base_path: 'a' model_platform: 'tensorflow' } }",
            "Expected model m to have an absolute path or URI; got base_path()=a",
        ),
        (
            "model_config_list { config { name: 'm' base_path: '/a' model_platform: 'pytorch' } }",
            "Model m requests unsupported platform pytorch",
        ),
        (
            "custom_model_config { }",
            "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
            "ModelConfigList is currently supported",
        ),
    ],
)
def test_model_config_validation(text, message):
    with pytest.raises(errors.InvalidArgument) as info:
        validate_model_server_config(cfg(text))
    assert info.value.message == message


def test_single_model_config_is_what_main_synthesises():
    config = single_model_config("mnist", "/models/mnist")
    validate_model_server_config(config)
    model = config.model_config_list.config[0]
    assert (model.name, model.base_path, model.model_platform) == ("mnist", "/models/mnist", "tensorflow")
    assert not model.HasField("model_version_policy")


def test_version_names_follow_simple_atoi():
    case = next(
        json.loads(line)
        for line in CASES.read_text().splitlines()
        if line.strip() and json.loads(line)["kind"] == "version_dir_parse"
    )
    got = [parse_version(name) for name in case["input"]["child_names"]]
    assert got == case["expected"]["version"]


def _policy(text: str):
    model = cfg(f"model_config_list {{ config {{ name: 'm' {text} }} }}").model_config_list.config[0]
    return model.model_version_policy


def test_discovery_and_policies(tmp_path):
    for name in ["1", "3", "0002", "tmp", "4.tmp", "10"]:
        (tmp_path / name).mkdir()
    found = discover_versions(str(tmp_path))
    assert sorted(found) == [1, 2, 3, 10]
    assert found[2].path == str(tmp_path / "0002")
    assert [v.version for v in aspired_versions(_policy(""), found)] == [10]
    latest2 = _policy("model_version_policy { latest { num_versions: 2 } }")
    assert [v.version for v in aspired_versions(latest2, found)] == [10, 3]
    every = _policy("model_version_policy { all {} }")
    assert [v.version for v in aspired_versions(every, found)] == [10, 3, 2, 1]
    specific = _policy("model_version_policy { specific { versions: 1 versions: 7 } }")
    assert [v.version for v in aspired_versions(specific, found)] == [1]


def test_duplicate_version_numbers_last_name_wins(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "0001").mkdir()
    assert discover_versions(str(tmp_path))[1].path == str(tmp_path / "1")
