"""Model config faults: an empty config never reaches a running server (TF Serving's rules).

ServerCore::ReloadConfig accepts a config with nothing set only as the very first config
("Taking no action for empty config."); after a ModelConfigList it refuses anything but another
ModelConfigList (FAILED_PRECONDITION), the config-file poller logs that and serving goes on.
HandleReloadConfigRequest refuses a config without model_config_list (INVALID_ARGUMENT). Only
an explicit ``model_config_list {}`` unloads every model.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fault_server import CONFIG_POLL_S, report

from clients import connect
from clients.errors import ClientError

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CANNOT_TRANSITION = (
    "PollFilesystemAndReloadConfig failed to ReloadConfig: Cannot transition to requested "
    "config. It is only legal to transition from one ModelConfigList to another."
)
NOT_SUPPORTED = (
    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
    "Only ModelConfigList is currently supported"
)


def test_config_file_truncated_then_rewritten_in_place(fault_server, digits) -> None:
    """What `>` and most editors do: the poller meets an empty file for a moment."""
    server = fault_server()
    text = server.config.read_text()
    load = server.load(digits).start()
    load.wait_for_requests(100)
    with open(server.config, "w") as handle:  # truncate: the file is empty from here on
        seen = server.wait_log(CANNOT_TRANSITION, timeout_s=10 * CONFIG_POLL_S)
        load.wait_for_requests(100)  # serving while the file is empty
        handle.write(text)  # the rewrite, in place
    polls_before = server.log_count("Model config file changed")
    load.wait_for_requests(200)
    # Two polls after the rewrite: the restored text equals the serving config, no reload.
    time.sleep(2.5 * CONFIG_POLL_S)
    result = load.stop()
    report("model config file truncated, then rewritten in place", result, server)
    assert result.failures == [], result.summary()
    assert seen, "the poller never refused the empty config:\n" + server.log_text()[-3000:]
    assert result.sent > 0
    assert "Unloading servable" not in server.log_text()
    assert server.log_count("Model config file changed") == polls_before


def test_reload_rpc_refuses_empty_config_and_empty_list_unloads(fault_server, digits) -> None:
    from clients.protos import ModelServerConfig

    server = fault_server()
    with connect(f"grpc://{server.grpc_target}", model="mnist") as client:
        with pytest.raises(ClientError) as refused:
            client.reload_config(ModelServerConfig())  # nothing set
        assert refused.value.code == "INVALID_ARGUMENT"
        assert refused.value.message == NOT_SUPPORTED
        assert int(client.predict_digits(digits.images[:1]).classes[0]) == digits.expected[0]

        client.reload_config("model_config_list {}")  # explicit: serve no models
        with pytest.raises(ClientError) as gone:
            client.predict_digits(digits.images[:1], version=1)
        assert gone.value.code == "NOT_FOUND"

        client.reload_config(server.config.read_text())  # and back
        assert int(client.predict_digits(digits.images[:1]).classes[0]) == digits.expected[0]
    assert "Unloading servable version {name: mnist version: 1}" in server.log_text()


def test_empty_config_file_at_start_takes_no_action(fault_server, digits) -> None:
    server = fault_server(start=False)
    text = server.config.read_text()
    server.config.write_text("")
    server.start()
    assert server.wait_log("Taking no action for empty config.", timeout_s=1)
    tmp = Path(f"{server.config}.tmp")
    tmp.write_text(text)
    os.replace(tmp, server.config)  # a first real config is accepted later
    assert server.wait_log("Successfully loaded servable version {name: mnist version: 1}")
    with connect(server.rest_url, model="mnist") as client:
        assert int(client.predict_digits(digits.images[:1]).classes[0]) == digits.expected[0]

