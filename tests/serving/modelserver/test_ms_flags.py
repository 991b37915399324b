"""tensorflow_model_server's command line: TF's parsing rules, exit codes, start-up errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from serving.modelserver.flags import (
    FlagError,
    parse_channel_arguments,
    parse_flags,
)


def run_server(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving.modelserver", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_defaults_match_tensorflow_model_server():
    f = parse_flags([])
    assert (f.port, f.rest_api_port, f.model_name) == (8500, 0, "default")
    assert f.file_system_poll_wait_seconds == 1
    assert f.enable_model_warmup is True
    assert f.rest_api_timeout_in_ms == 30000
    assert f.max_num_load_retries == 5
    assert f.load_retry_interval_micros == 60_000_000


def test_name_value_form_and_booleans():
    f = parse_flags(
        [
            "--port=9000",
            "--rest_api_port=9001",
            "--model_name=mnist",
            "--enable_batching",
            "--enable_model_warmup=false",
            "--allow_version_labels_for_unavailable_models=true",
            "--grpc_channel_arguments=grpc.max_connection_age_ms=5000,x=y",
        ]
    )
    assert (f.port, f.rest_api_port, f.model_name) == (9000, 9001, "mnist")
    assert f.enable_batching is True
    assert f.enable_model_warmup is False
    assert f.allow_version_labels_for_unavailable_models is True
    assert parse_channel_arguments(f.grpc_channel_arguments) == [
        ("grpc.max_connection_age_ms", 5000),
        ("x", "y"),
    ]
    assert f.unknown == []


@pytest.mark.parametrize("arg", ["--port=abc", "--port=", "--enable_batching=1", "--port=1.5"])
def test_malformed_value_fails_parse(arg):
    with pytest.raises(FlagError):
        parse_flags([arg])


def test_space_separated_value_and_unknown_flags_are_left_over():
    f = parse_flags(["--port", "9000", "--no_such_flag=1", "--noenable_batching"])
    assert f.port == 8500
    assert f.unknown == ["--port", "9000", "--no_such_flag=1", "--noenable_batching"]


def test_bad_value_exits_255_with_usage():
    proc = run_server("--port=abc")
    assert proc.returncode == 255
    assert "--rest_api_port" in proc.stdout  # the usage text


def test_version_prints_two_lines_and_exits_0():
    proc = run_server("--version")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("TensorFlow ModelServer: ")
    assert lines[1].startswith("TensorFlow Library: ")


def test_unknown_argument_is_printed_and_ignored():
    # The unknown argument does not stop the parse; the missing base path then does.
    proc = run_server("--bogus=1")
    assert "unknown argument: --bogus=1" in proc.stdout
    assert "Both server_options.model_base_path and server_options.model_config_file are empty!" in proc.stderr
    assert proc.returncode == 255


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--port=0", "--model_base_path=/tmp/x"],
            "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set.",
        ),
        (
            ["--model_base_path=/tmp/x", "--batching_parameters_file=/tmp/b"],
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true.",
        ),
        (
            [
                "--model_base_path=/tmp/x",
                "--tensorflow_session_parallelism=2",
                "--tensorflow_intra_op_parallelism=2",
                "--tensorflow_inter_op_parallelism=2",
            ],
            "INVALID_ARGUMENT: Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all.",
        ),
        (
            ["--model_base_path=/tmp/x", "--use_alts_credentials", "--ssl_config_file=/tmp/s"],
            "Either use_alts_credentials must be false or ssl_config_file must be empty.",
        ),
        (
            ["--model_base_path=/tmp/x", "--use_alts_credentials"],
            "UNIMPLEMENTED: --use_alts_credentials is not supported by the embedded server: ALTS "
            "needs Google Cloud's ALTS handshaker service; use --ssl_config_file for TLS",
        ),
        (
            ["--model_base_path=/tmp/x", "--tensorflow_session_config_file=/nonexistent/s.config"],
            "INVALID_ARGUMENT: Invalid protobuf file: '/nonexistent/s.config'",
        ),
        (
            ["--model_base_path=/tmp/x", "--ssl_config_file=/nonexistent/ssl.config"],
            "INVALID_ARGUMENT: Invalid protobuf file: '/nonexistent/ssl.config'",
        ),
    ],
)
def test_start_up_flag_errors(args, message):
    proc = run_server(*args)
    assert proc.returncode == 255
    assert "Failed to start server. Error: " in proc.stderr
    assert message in proc.stderr


def test_unparsable_model_config_file(tmp_path):
    bad = tmp_path / "models.config"
    bad.write_text("model_config_list { config { name: 'x' nonsense: 1 } }")
    proc = run_server(f"--model_config_file={bad}")
    assert proc.returncode == 255
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in proc.stderr
    assert "Failed to start server. Error: INVALID_ARGUMENT" in proc.stderr


def test_invalid_model_config_is_rejected_before_loading(tmp_path):
    cfg = tmp_path / "models.config"
    cfg.write_text("model_config_list { config { name: 'x' base_path: 'relative/x' model_platform: 'tensorflow' } }")
    proc = run_server(f"--model_config_file={cfg}")
    assert proc.returncode == 255
    assert "Expected model x to have an absolute path or URI; got base_path()=relative/x" in proc.stderr


def test_initial_load_failure_exits_255(tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"garbage")
    proc = run_server(
        "--port=1",  # never bound: start-up fails before any listener opens
        f"--model_base_path={tmp_path / 'm'}",
        "--max_num_load_retries=0",
        timeout=120,
    )
    assert proc.returncode == 255
    assert "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available" in proc.stderr
    assert "{name: default version: 1}" in proc.stderr
