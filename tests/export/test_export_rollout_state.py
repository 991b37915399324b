"""rollout.json: missing file, round trip, validation, atomic replace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.rollout_state import (
    RolloutState,
    RolloutStateError,
    load_rollout,
    load_state,
    rollout_path,
    save_rollout,
    save_state,
)


def test_missing_file_is_empty_state(tmp_path: Path) -> None:
    assert load_rollout(tmp_path) == {}
    assert load_state(tmp_path, "mnist") == RolloutState(None, None, None)


def test_round_trip_and_shape(tmp_path: Path) -> None:
    save_state(tmp_path, "mnist", RolloutState(stable=3, previous_stable=2, canary=4))
    save_state(tmp_path, "other", RolloutState(stable=1))
    save_state(tmp_path, "mnist", RolloutState(stable=4, previous_stable=3))
    data = json.loads(rollout_path(tmp_path).read_text())
    assert data == {
        "mnist": {"stable": 4, "previous_stable": 3, "canary": None},
        "other": {"stable": 1, "previous_stable": None, "canary": None},
    }
    assert load_state(tmp_path, "mnist").named_versions() == {3, 4}
    assert [p.name for p in tmp_path.iterdir()] == ["rollout.json"]  # no temp files left


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"mnist": 3}',
        '{"mnist": {"stable": "3"}}',
        '{"mnist": {"stable": true}}',
        '{"mnist": {"stable": -1}}',
        '{"mnist": {"stabel": 3}}',
    ],
)
def test_malformed_files_are_refused_clearly(tmp_path: Path, content: str) -> None:
    rollout_path(tmp_path).write_text(content)
    with pytest.raises(RolloutStateError, match="rollout.json"):
        load_rollout(tmp_path)


def test_failed_save_keeps_the_old_file(tmp_path: Path) -> None:
    save_rollout(tmp_path, {"mnist": RolloutState(stable=1)})

    with pytest.raises(TypeError):  # fails inside json.dump, after the temp file exists
        save_rollout(tmp_path, {"mnist": RolloutState(stable=object())})  # type: ignore[arg-type]
    assert load_state(tmp_path, "mnist").stable == 1
    assert [p.name for p in tmp_path.iterdir()] == ["rollout.json"]
