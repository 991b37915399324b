"""Model-level rollout under real load on the embedded server.

16 client threads send gRPC Predict requests by label (``stable`` / ``canary``) for the whole
story: a new version is published (nothing changes), canaried, promoted, rolled back to the
previous stable, canaried again and rolled back (canary dropped). Every request must succeed
and every response must come from a version its label named at that time; a request that
overlaps a step may see either side of it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest
from serving_helpers import Predictor, copy_repo, predict_request, publish_copy, read_state

from serving.backends.control import ModelControl
from serving.backends.lifecycle import UpOptions, down, up
from serving.backends.record import RunDir
from serving.cli import main
from serving.config import ModelServing, VersionPolicy
from serving.modelserver.process import free_port
from serving.modelserver.workers import procinfo
from serving.rollout import Rollout, RolloutError

pytestmark = pytest.mark.slow

WORKERS = 2  # the embedded backend's worker processes: the rollout must hold across them
THREADS = 16
CANARY_THREADS = 6  # the rest ask for 'stable'
MAX_REQUESTS_PER_THREAD = 4000
LOAD_TIME_LIMIT_S = 150.0
PHASE_MIN_S = 0.5


@pytest.fixture
def fresh_server(tiny_mnist_repo, tmp_path):
    """A server of its own for each test (a start takes seconds): a private copy of the tiny
    repository with version 1 only, no rollout begun ('latest' policy). No test sees what
    another one published, pinned or rolled out, so each passes alone and in any order."""
    repo = copy_repo(tiny_mnist_repo, tmp_path / "models")
    run_dir = RunDir(tmp_path / "run")
    opts = UpOptions(
        repo=repo, server="embedded", grpc_port=free_port(), rest_port=free_port(),
        run_dir=run_dir, export_if_empty=False, timeout_s=120,
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EMBEDDED_NUM_WORKERS", str(WORKERS))
        record = up(opts, say=lambda _: None)
    try:
        assert len(procinfo.children(record.pid)) == WORKERS
        yield {"repo": repo, "run_dir": run_dir, "record": record}
    finally:
        down(run_dir, say=lambda _: None)


@pytest.fixture
def server(fresh_server):
    """A fresh server where the rollout has begun: version 1 pinned as stable (no canary)."""
    record, run_dir = fresh_server["record"], fresh_server["run_dir"]
    Rollout(record, run_dir, say=lambda _: None, timeout_s=120).pin(1)
    assert labels_now(record) == {"stable": 1, "canary": 1}
    assert read_state(fresh_server["repo"]) == {
        "stable": 1,
        "previous_stable": None,
        "canary": None,
    }
    return fresh_server


@dataclass
class Step:
    """A rollout step ran in [start, end]; labels map to ``after`` once it ends."""

    name: str
    start: float
    end: float
    after: dict[str, int]


@dataclass
class Load:
    target: str
    images: object
    stop: threading.Event = field(default_factory=threading.Event)
    results: list[list[tuple[str, float, float, int]]] = field(default_factory=list)
    failures: list[list[str]] = field(default_factory=list)

    def run(self, index: int) -> None:
        label = "canary" if index < CANARY_THREADS else "stable"
        request = predict_request(self.images[index % len(self.images)][None, :], label=label)
        predictor = Predictor(self.target)
        mine, failed = self.results[index], self.failures[index]
        deadline = time.monotonic() + LOAD_TIME_LIMIT_S
        try:
            while (
                not self.stop.is_set()
                and len(mine) + len(failed) < MAX_REQUESTS_PER_THREAD
                and time.monotonic() < deadline
            ):
                start = time.monotonic()
                try:
                    version = predictor.version_for(request)
                except Exception as exc:  # every failure is recorded and fails the test
                    failed.append(f"{label}: {type(exc).__name__}: {exc}")
                    continue
                mine.append((label, start, time.monotonic(), version))
        finally:
            predictor.close()


def allowed_versions(label: str, start: float, end: float, initial: dict, steps: list[Step]):
    """Versions ``label`` named at some moment of [start, end]: the steady mapping of every
    gap between steps the request overlaps, and both sides of every step it overlaps."""
    allowed: set[int] = set()
    mapping, previous_end = initial, float("-inf")
    for step in steps:
        if start < step.start and end > previous_end:
            allowed.add(mapping[label])
        if start <= step.end and end >= step.start:
            allowed |= {mapping[label], step.after[label]}
        mapping, previous_end = step.after, step.end
    if end > previous_end:
        allowed.add(mapping[label])
    return allowed


def labels_now(record) -> dict[str, int]:
    with ModelControl(record.grpc_target) as control:
        return {label: control.resolve_label("mnist", label) for label in ("stable", "canary")}


def test_canary_promote_rollback_under_load(fresh_server, tiny_mnist_repo):
    record, repo, run_dir = fresh_server["record"], fresh_server["repo"], fresh_server["run_dir"]
    log: list[str] = []
    rollout = Rollout(record, run_dir, say=log.append, timeout_s=120)
    rollout.pin()  # from the 'latest' policy: what serves now (1) becomes stable
    initial = labels_now(record)
    assert initial == {"stable": 1, "canary": 1}

    load = Load(record.grpc_target, tiny_mnist_repo.test_images)
    load.results = [[] for _ in range(THREADS)]
    load.failures = [[] for _ in range(THREADS)]
    threads = [threading.Thread(target=load.run, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()

    # The load's connections reach every worker (seen from the kernel).
    deadline = time.monotonic() + 60
    while sum(len(r) for r in load.results) < THREADS and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = procinfo.children(record.pid)
    spread = procinfo.connections_by_pid(record.grpc_port, workers)
    assert len(workers) == WORKERS and all(n > 0 for n in spread.values()), spread

    steps: list[Step] = []

    def step(name: str, action) -> None:
        time.sleep(PHASE_MIN_S)  # let every phase see traffic
        start = time.monotonic()
        action()
        steps.append(Step(name, start, time.monotonic(), labels_now(record)))

    try:
        # Publishing under the 'specific' policy changes nothing for clients.
        step("publish", lambda: publish_copy(repo))
        with ModelControl(record.grpc_target) as control:
            assert 2 not in control.available("mnist")
        step("canary 2", lambda: rollout.canary(2))
        step("promote", rollout.promote)
        step("rollback", rollout.rollback)
        step("canary 2 again", lambda: rollout.canary(2))
        step("rollback canary", rollout.rollback)
        time.sleep(PHASE_MIN_S)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)

    expected_after = {
        "publish": {"stable": 1, "canary": 1},
        "canary 2": {"stable": 1, "canary": 2},
        "promote": {"stable": 2, "canary": 2},
        "rollback": {"stable": 1, "canary": 1},
        "canary 2 again": {"stable": 1, "canary": 2},
        "rollback canary": {"stable": 1, "canary": 1},
    }
    assert {s.name: s.after for s in steps} == expected_after
    assert read_state(repo) == {"stable": 1, "previous_stable": None, "canary": None}

    failures = [f for per_thread in load.failures for f in per_thread]
    responses = [r for per_thread in load.results for r in per_thread]
    wrong = [
        (label, version, allowed_versions(label, s, e, initial, steps))
        for label, s, e, version in responses
        if version not in allowed_versions(label, s, e, initial, steps)
    ]
    counts: dict[tuple[str, int], int] = {}
    for label, _, _, version in responses:
        counts[label, version] = counts.get((label, version), 0) + 1
    print(
        f"\nrollout under load: {len(responses)} responses, {len(failures)} failures, "
        f"{len(wrong)} from a version the label did not name; by (label, version): "
        f"{dict(sorted(counts.items()))}; steps: "
        + ", ".join(f"{s.name} {s.end - s.start:.2f}s" for s in steps)
    )
    assert failures == [], failures[:5]
    assert wrong == [], wrong[:5]
    assert all(load.results), "every thread got responses"
    # Each side of every flip was really exercised.
    assert counts.get(("canary", 2), 0) > 0 and counts.get(("stable", 2), 0) > 0
    assert counts.get(("canary", 1), 0) > 0 and counts.get(("stable", 1), 0) > 0
    assert any(
        "loading version(s) [2] beside [1]; labels stay where they are" in line for line in log
    )


def test_unknown_version_is_refused_and_nothing_changes(server, capsys):
    run_dir, repo = server["run_dir"], server["repo"]
    state_before = (repo / "rollout.json").read_text()
    config_before = (run_dir.config_dir / "models.config").read_text()
    labels_before = labels_now(server["record"])
    assert main(["rollout", "canary", "99", "--run-dir", str(run_dir.path)]) == 1
    assert "version 99 of mnist is not published" in capsys.readouterr().err
    assert (repo / "rollout.json").read_text() == state_before
    assert (run_dir.config_dir / "models.config").read_text() == config_before
    assert labels_now(server["record"]) == labels_before


def test_label_on_a_version_that_is_not_loaded_is_refused(server):
    """TF Serving's rule, enforced by the server: an existing label moves only to an
    AVAILABLE version. The refused config is rolled back on disk and on the server."""
    record, run_dir, repo = server["record"], server["run_dir"], server["repo"]
    unloaded = publish_copy(repo)
    stable = labels_now(record)["stable"]
    config_path = run_dir.config_dir / "models.config"
    config_before = config_path.read_text()
    rollout = Rollout(record, run_dir, say=lambda _: None, timeout_s=30)
    hasty = ModelServing(
        name="mnist",
        policy=VersionPolicy.SPECIFIC,
        versions=(stable, unloaded),
        labels={"stable": stable, "canary": unloaded},
    )
    with ModelControl(record.grpc_target) as control:
        with pytest.raises(RolloutError) as exc:
            rollout.apply(control, hasty, restore_text=config_before)
        assert "not currently available" in str(exc.value)
        assert "the previous config was restored" in str(exc.value)
        assert config_path.read_text() == config_before
        assert labels_now(record) == {"stable": stable, "canary": stable}
        assert unloaded not in control.available("mnist")


def test_rollout_steps_without_their_precondition(server, capsys):
    argv = ["--run-dir", str(server["run_dir"].path)]
    assert main(["rollout", "promote", *argv]) == 1
    assert "there is no canary to promote" in capsys.readouterr().err
    assert main(["rollout", "pin", *argv]) == 1
    assert "a rollout has begun already" in capsys.readouterr().err
    assert main(["rollout", "canary", "1", *argv]) == 1
    assert "version 1 is already the stable version" in capsys.readouterr().err
    assert main(["rollout", "promote", "--repo", "/elsewhere", *argv]) == 1
    assert "the running server serves" in capsys.readouterr().err


def test_without_the_reload_rpc_the_config_poll_applies_each_step(server, monkeypatch):
    """Fallback path: HandleReloadConfigRequest unreachable -> the server's config-file poll
    (--model_config_file_poll_wait_seconds) applies the written files, in the same order."""
    from serving.backends import control as control_module

    def no_rpc(self, config_text):
        raise control_module.ReloadUnsupported("config reload over gRPC: UNIMPLEMENTED (test)")

    record, run_dir, repo = server["record"], server["run_dir"], server["repo"]
    canary = publish_copy(repo)
    log: list[str] = []
    monkeypatch.setattr(control_module.ModelControl, "reload", no_rpc)
    Rollout(record, run_dir, say=log.append, timeout_s=60).canary(canary)
    assert labels_now(record) == {"stable": 1, "canary": canary}
    assert any("waiting for the config-file poll" in line for line in log)
    monkeypatch.undo()
    Rollout(record, run_dir, say=lambda _: None, timeout_s=60).rollback()
    assert labels_now(record) == {"stable": 1, "canary": 1}


def test_running_config_round_trips_through_the_parser(server):
    from serving.rollout import parse_model_serving

    text = (server["run_dir"].config_dir / "models.config").read_text()
    parsed = parse_model_serving(text, "mnist")
    assert parsed.render(server["record"].models_root) == text
    with pytest.raises(RolloutError, match="does not serve a model named other"):
        parse_model_serving(text, "other")


def test_a_canary_that_never_loads_leaves_stable_serving(server, tiny_mnist_repo):
    """A broken version never becomes AVAILABLE: the step gives up, restores the previous
    config (which un-aspires the broken version) and stable keeps answering."""
    from export.repository import ModelRepository

    record, run_dir, repo = server["record"], server["run_dir"], server["repo"]
    repository = ModelRepository(repo, "mnist")
    with repository.staging() as staged:
        (staged / "saved_model.pb").write_bytes(b"this is not a SavedModel")
        (staged / "variables").mkdir()
        broken = repository.publish(staged).version
    state_before = read_state(repo)
    config_before = (run_dir.config_dir / "models.config").read_text()
    with pytest.raises(RolloutError) as exc:
        Rollout(record, run_dir, say=lambda _: None, timeout_s=5).canary(broken)
    assert f"version(s) [{broken}] of mnist did not become AVAILABLE" in str(exc.value)
    assert "the previous config was restored" in str(exc.value)
    assert read_state(repo) == state_before
    assert (run_dir.config_dir / "models.config").read_text() == config_before
    assert labels_now(record) == {"stable": 1, "canary": 1}
    predictor = Predictor(record.grpc_target)
    try:
        request = predict_request(tiny_mnist_repo.test_images[:1], label="stable")
        assert predictor.version_for(request) == 1
    finally:
        predictor.close()
