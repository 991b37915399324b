"""`tools/k8s_validate.py config` re-renders the k8s copies; drift is reported, not ignored."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from serving import config as sc


@pytest.fixture
def scratch(kv, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """Point the tool at scratch copies of the two model configs and the static files."""
    base_dir = tmp_path / "base-config"
    shutil.copytree(kv.BASE_CONFIG_DIR, base_dir)
    track = tmp_path / "track" / "models.config"
    track.parent.mkdir()
    shutil.copyfile(kv.CANARY_MODEL_CONFIG, track)
    monkeypatch.setattr(kv, "BASE_CONFIG_DIR", base_dir)
    monkeypatch.setattr(kv, "CANARY_MODEL_CONFIG", track)
    monkeypatch.setattr(kv, "ROOT", tmp_path)
    return base_dir, track


def test_config_command_writes_a_rollout_step(kv, scratch, capsys):
    base_dir, track = scratch
    assert kv.main(["config", "--stable", "3", "--canary", "4"]) == 0
    base_text = (base_dir / sc.MODEL_CONFIG_FILE).read_text()
    assert kv.step_of(base_text) == kv.RolloutStep(stable=3)
    assert "specific { versions: 3 }" in base_text
    assert kv.step_of(track.read_text()) == kv.RolloutStep(stable=3, canary=4)
    assert kv.labels_in(track.read_text()) == {"canary": 4, "stable": 3}
    assert kv.config_errors({}) == []
    assert "wrote" in capsys.readouterr().out


def test_promote_step_leaves_no_canary(kv, scratch):
    _, track = scratch
    assert kv.main(["config", "--stable", "4"]) == 0
    assert kv.step_of(track.read_text()) == kv.RolloutStep(stable=4)
    assert kv.config_errors({}) == []


def test_drift_is_reported(kv, scratch):
    base_dir, track = scratch
    batching = base_dir / sc.BATCHING_FILE
    batching.write_text(batching.read_text().replace("value: 64", "value: 32"))
    track.write_text(sc.render_model_config("/models", kv.RolloutStep(stable=7, canary=8)))
    errors = kv.config_errors({})
    assert any("batching.config differs" in e for e in errors), errors
    assert any("canary track serves stable 7 but the base serves stable" in e for e in errors)


def test_hand_edited_or_latest_model_config_is_reported(kv, scratch):
    base_dir, _ = scratch
    model_config = base_dir / sc.MODEL_CONFIG_FILE
    model_config.write_text(model_config.read_text().replace("/models/mnist", "/models/other"))
    assert any("is not a serving.config rendering" in e for e in kv.config_errors({}))
    model_config.write_text(sc.render_model_config("/models", None))
    assert any("uses the latest policy" in e for e in kv.config_errors({}))


def test_args_and_image_drift_are_reported(kv, rendered):
    import copy

    objs = copy.deepcopy(rendered["dev"])
    deployment = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "mnist")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["image"] = "tensorflow/serving:2.19.0"
    container["args"] = [a for a in container["args"] if "enable_batching" not in a]
    errors = kv.config_errors({"dev": objs})
    assert any("image 'tensorflow/serving:2.19.0'" in e for e in errors), errors
    assert any("args" in e for e in errors), errors


def test_negative_versions_are_refused(kv, scratch, capsys):
    with pytest.raises(SystemExit) as exc:
        kv.main(["config", "--stable", "-1"])
    assert exc.value.code == 2
    assert "non-negative" in capsys.readouterr().err
