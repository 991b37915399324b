"""The gate: decisions from figures, and the real pipeline refusing / accepting tiny models."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export.gate import (
    Evaluation,
    GateConfig,
    StableReference,
    decide,
    stable_reference,
)
from export.metadata import write_metadata
from export.repository import ModelRepository
from export.rollout_state import RolloutState, save_state
from export.tiny import TinyModelRepo

PROJECT = Path(__file__).resolve().parents[2]


def _evaluation(accuracy: float, errors: dict[str, str] | None = None) -> Evaluation:
    return Evaluation(accuracy, np.zeros(1, np.int64), errors or {}, ["serving_default"])


def test_default_thresholds_per_architecture() -> None:
    assert GateConfig().threshold("softmax") == 0.92
    assert GateConfig().threshold("cnn") == 0.992
    assert GateConfig(min_accuracy=0.5).threshold("cnn") == 0.5


def test_accepts_a_good_model() -> None:
    decision = decide(
        _evaluation(0.9931), "cnn", GateConfig(), StableReference(3, 0.9935, "rollout state")
    )
    assert decision.accepted and not decision.reasons


def test_refuses_below_threshold() -> None:
    decision = decide(_evaluation(0.9915), "cnn", GateConfig(), None)
    assert not decision.accepted
    assert "below the cnn threshold 0.9920" in decision.reasons[0]


def test_refuses_worse_than_stable_unless_forced() -> None:
    stable = StableReference(3, 0.9950, "rollout state")
    refused = decide(_evaluation(0.9925), "cnn", GateConfig(tolerance=0.002), stable)
    assert not refused.accepted and "stable version 3" in refused.reasons[0]
    assert "--force" in refused.reasons[0]
    within = decide(_evaluation(0.9931), "cnn", GateConfig(tolerance=0.002), stable)
    assert within.accepted
    forced = decide(_evaluation(0.9925), "cnn", GateConfig(tolerance=0.002, force=True), stable)
    assert forced.accepted and any("forced" in note for note in forced.notes)


def test_force_never_skips_threshold_or_signature_checks() -> None:
    forced = GateConfig(force=True)
    assert not decide(_evaluation(0.5), "softmax", forced, None).accepted
    broken = decide(_evaluation(0.99, {"predict_png": "InvalidArgumentError"}), "cnn", forced, None)
    assert not broken.accepted and "predict_png" in broken.reasons[0]


def test_stable_without_metrics_skips_comparison() -> None:
    decision = decide(
        _evaluation(0.93), "softmax", GateConfig(), StableReference(2, None, "newest published")
    )
    assert decision.accepted and "no metrics" in " ".join(decision.notes)


def test_stable_reference_prefers_rollout_state(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, "mnist")
    assert stable_reference(repo) is None
    for version, accuracy in ((1, 0.95), (2, 0.97), (3, 0.96)):
        write_metadata(repo.version_path(version), {"metrics": {"test_accuracy": accuracy}})
    assert stable_reference(repo) == StableReference(3, 0.96, "newest published")
    save_state(tmp_path, "mnist", RolloutState(stable=2, previous_stable=1))
    assert stable_reference(repo) == StableReference(2, 0.97, "rollout state")
    save_state(tmp_path, "mnist", RolloutState(stable=9))  # names a version that is gone
    assert stable_reference(repo).version == 3


def _tiny_request(repo_root: Path, **gate: object):
    from export.gate import GateConfig
    from export.pipeline import ExportRequest
    from export.training import TrainConfig

    return ExportRequest(
        repo_root=repo_root,
        model_name="mnist",
        train=TrainConfig(
            arch="softmax",
            epochs=1,
            learning_rate=1e-2,
            train_limit=3000,
            validate_each_epoch=False,
            progress_every=0,
        ),
        gate=GateConfig(**gate),  # type: ignore[arg-type]
        report_png=False,
    )


def test_pipeline_refuses_worse_than_stable_and_publishes_nothing(
    tmp_path: Path, tiny_mnist_repo: TinyModelRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    from export.pipeline import run_export

    # Stable: a copy of the tiny model whose metadata claims a much better accuracy.
    repo = ModelRepository(tmp_path, "mnist")
    shutil.copytree(tiny_mnist_repo.version_path, repo.version_path(1))
    meta_path = repo.version_path(1) / "assets.extra/metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["metrics"]["test_accuracy"] = 0.99
    meta_path.write_text(json.dumps(meta))

    out = io.StringIO()
    refused = run_export(_tiny_request(tmp_path, min_accuracy=0.3), out=out)
    assert not refused.published and refused.version is None
    assert "REFUSED" in out.getvalue() and "worse than stable version 1" in out.getvalue()
    assert "export refused" in capsys.readouterr().err
    assert sorted(p.name for p in repo.model_dir.iterdir()) == ["1"]  # no version, no debris

    forced = run_export(_tiny_request(tmp_path, min_accuracy=0.3, force=True), out=io.StringIO())
    assert forced.published and forced.version == 2
    assert sorted(p.name for p in repo.model_dir.iterdir()) == ["1", "2"]

    threshold = run_export(
        _tiny_request(tmp_path, min_accuracy=0.999, force=True), out=io.StringIO()
    )
    assert (
        not threshold.published and "below the softmax threshold" in threshold.decision.reasons[0]
    )
    assert repo.versions() == [1, 2]


def test_cli_train_and_list(tmp_path: Path) -> None:
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "export",
            "train",
            "--arch",
            "softmax",
            "--repo",
            str(tmp_path),
            "--model-name",
            "digits",
            "--epochs",
            "1",
            "--seed",
            "3",
            "--train-limit",
            "3000",
            "--learning-rate",
            "0.01",
            "--min-accuracy",
            "0.3",
            "--infra-check",
            "--keep",
            "1",
            "--no-report-png",
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert train.returncode == 0, train.stderr[-2000:]
    assert "precision: float32" in train.stdout
    assert "published digits version 1" in train.stdout
    assert "gate: infra check: served by the embedded model server" in train.stdout
    assert "test accuracy 0." in train.stdout
    save_state(tmp_path, "digits", RolloutState(stable=1))
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "export",
            "list",
            "--repo",
            str(tmp_path),
            "--model-name",
            "digits",
            "--json",
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0
    row = json.loads(listed.stdout)
    assert row["version"] == 1 and row["architecture"] == "softmax" and row["seed"] == 3
    assert 0.3 <= row["test_accuracy"] <= 1.0
    assert row["roles"] == ["stable"]

    (tmp_path / "rollout.json").write_text("{broken")
    broken_state = subprocess.run(
        [sys.executable, "-m", "export", "train", "--arch", "softmax", "--repo", str(tmp_path)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert broken_state.returncode == 2 and "rollout.json" in broken_state.stderr
    (tmp_path / "rollout.json").unlink()

    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "export",
            "train",
            "--arch",
            "softmax",
            "--repo",
            str(tmp_path),
            "--data-dir",
            str(tmp_path / "no-data"),
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 4 and "file not found" in bad.stderr

    unreachable = subprocess.run(
        [
            sys.executable,
            "-m",
            "export",
            "train",
            "--repo",
            str(tmp_path),
            "--data-dir",
            str(tmp_path / "empty"),
            "--fetch-data",
            "--mirror",
            "http://127.0.0.1:9/",
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 4
    assert "no mirror served" in unreachable.stderr and "127.0.0.1:9" in unreachable.stderr


def test_infra_check_serves_the_version(tmp_path: Path, tiny_mnist_repo: TinyModelRepo) -> None:
    from export.infra_check import infra_check

    staged = tmp_path / ".staging-copy"
    shutil.copytree(tiny_mnist_repo.version_path, staged)
    images, expected = tiny_mnist_repo.test_images[:8], tiny_mnist_repo.predictions[:8]
    good = infra_check(staged, "mnist", images, expected)
    assert good.ok, good.detail
    wrong = infra_check(staged, "mnist", images, (expected + 1) % 10)
    assert not wrong.ok and "differ" in wrong.detail

    # A warmup file that is not a TFRecord fails the load, as in TF Serving.
    (staged / "assets.extra/tf_serving_warmup_requests").write_bytes(b"garbage" * 10)
    broken = infra_check(staged, "mnist", images, expected, startup_timeout_s=60)
    assert not broken.ok and "did not load" in broken.detail
    # The server's own last lines, not TensorFlow's noise: why the load failed, and that
    # the server gave up.
    assert "Please verify your warmup data is in TFRecord format" in broken.detail
    assert "Failed to start server. Error: " in broken.detail, broken.detail
    decision = decide(_evaluation(0.95), "softmax", GateConfig(min_accuracy=0.5), None, broken)
    assert not decision.accepted and decision.reasons[0].startswith("infra check")


def test_a_version_that_does_not_reload_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from export.gate import evaluate_saved_model

    (tmp_path / "saved_model.pb").write_bytes(b"not a SavedModel")
    evaluation = evaluate_saved_model(tmp_path, np.zeros((2, 28, 28), np.uint8), np.zeros(2))
    assert "(reload)" in evaluation.signature_errors
    decision = decide(evaluation, "cnn", GateConfig(force=True), None)
    assert not decision.accepted and "(reload)" in decision.reasons[0]


def test_a_version_only_tf_saved_model_load_can_run_is_refused(tmp_path: Path) -> None:
    """A module that tracks a Keras 3 model object (not its plain variables): eager
    tf.saved_model.load runs it, a Session (how model servers load it) cannot."""
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    from export.gate import evaluate_saved_model

    class TracksKerasModel(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])

        @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="images")])
        def serve(self, images):
            scores = tf.nn.softmax(self.model(images))
            return {"scores": scores, "classes": tf.argmax(scores, 1)}

    module = TracksKerasModel()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    eager = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    assert eager(images=tf.zeros([2, 784]))["classes"].shape == (2,)

    evaluation = evaluate_saved_model(tmp_path, np.zeros((2, 28, 28), np.uint8), np.zeros(2))
    assert "Could not find variable" in evaluation.signature_errors["serving_default"]
    decision = decide(evaluation, "softmax", GateConfig(force=True), None)
    assert not decision.accepted and "serving_default" in decision.reasons[0]


# --- Ctrl-C at every phase of `export train` (export/interrupts.py) --------------------------
# The moment comes from the export's own output: a progress line, or the documented test hook
# EXPORT_TEST_PAUSE_AT=<point>, which prints "test hook: paused at <point>" and waits there.

QUICK = ["--arch", "softmax", "--train-limit", "2000", "--epochs", "1", "--min-accuracy", "0.1",
         "--no-report-png"]  # fmt: skip
# Full training set, 3 epochs x 235 steps: seconds of training after the step-50 line.
TRAINING = ["--arch", "softmax", "--epochs", "3", "--min-accuracy", "0.1", "--no-report-png"]


def _ignore_sigint() -> None:
    # What a background job of a non-interactive shell (`cmd &`) inherits.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _assert_nothing_published(run, repo: Path, code: int) -> None:
    assert code == 130, f"exit {code}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr[-3000:]}"
    assert "interrupted; nothing was published" in run.stderr
    assert "published mnist version" not in run.stdout
    model_dir = repo / "mnist"
    leftovers = sorted(p.name for p in model_dir.iterdir()) if model_dir.exists() else []
    assert leftovers == [], leftovers  # no version, no staging directory, no lock


@pytest.mark.slow
@pytest.mark.parametrize(
    ("phase", "args", "pause", "moment", "not_reached"),
    [
        ("data loading", QUICK, "load_data", "test hook: paused at load_data", "training "),
        ("training", TRAINING, None, "step 50/235", "export: writing"),
        ("evaluation", QUICK, "evaluate", "test hook: paused at evaluate", "gate: deciding"),
        ("gate", QUICK, "gate", "test hook: paused at gate", "publish: reserving"),
        ("before rename", QUICK, "before_rename", "test hook: paused at before_rename",
         "is in place"),
    ],  # fmt: skip
    ids=["data", "training", "evaluation", "gate", "before-rename"],
)
def test_ctrl_c_before_the_rename_publishes_nothing(
    tmp_path: Path, export_cli, phase, args, pause, moment, not_reached
) -> None:
    import signal

    env = {"EXPORT_TEST_PAUSE_AT": pause} if pause else {}
    run = export_cli([*args, "--repo", str(tmp_path)], env=env)
    run.wait_line(moment)
    run.proc.send_signal(signal.SIGINT)
    code = run.finish()
    _assert_nothing_published(run, tmp_path, code)
    assert not_reached not in run.stdout, f"{phase}: the export went on:\n{run.stdout}"


@pytest.mark.slow
def test_ctrl_c_during_training_publishes_nothing(tmp_path: Path, export_cli) -> None:
    """Started with SIGINT ignored (a background job of a non-interactive shell), Python sets
    no KeyboardInterrupt handler: the interrupt used to be lost and the export published."""
    import signal

    run = export_cli([*TRAINING, "--repo", str(tmp_path)], preexec_fn=_ignore_sigint)
    run.wait_line("step 50/235")
    run.proc.send_signal(signal.SIGINT)
    code = run.finish()
    _assert_nothing_published(run, tmp_path, code)
    assert "export: writing" not in run.stdout


@pytest.mark.slow
def test_ctrl_c_after_the_rename_keeps_the_whole_version(tmp_path: Path, export_cli) -> None:
    import signal

    run = export_cli(
        [*QUICK, "--repo", str(tmp_path), "--keep", "1"],
        env={"EXPORT_TEST_PAUSE_AT": "after_rename"},
    )
    run.wait_line("test hook: paused at after_rename")
    run.proc.send_signal(signal.SIGINT)
    code = run.finish()
    assert code == 0, f"exit {code}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr[-3000:]}"
    assert "published mnist version 1 " in run.stdout
    assert "interrupted after version 1 was published" in run.stderr
    assert "nothing was published" not in run.stderr
    model_dir = tmp_path / "mnist"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1"]  # no debris, no lock
    version = model_dir / "1"
    for part in ("saved_model.pb", "variables/variables.index", "assets.extra/metadata.json",
                 "assets.extra/tf_serving_warmup_requests"):  # fmt: skip
        assert (version / part).is_file(), part
    assert json.loads((version / "assets.extra/metadata.json").read_text())["version"] == 1
