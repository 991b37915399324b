"""The one staging/publish helper (export.repository.StagingArea) that versions and mobile
artefacts share: hidden build, rename into place, replace, debris of dead processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from export.repository import ModelRepository, RepositoryError, StagingArea, TargetExists


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _build(area: StagingArea, payload: str, target: Path, replace: bool = False) -> Path:
    with area.staging() as staged:
        (staged / "artefact.bin").write_text(payload)
        return area.publish(staged, target, replace=replace)


def test_publish_renames_a_whole_directory_and_leaves_nothing_hidden(tmp_path: Path) -> None:
    area = StagingArea(tmp_path / "mobile" / "mnist")
    target = area.parent / "3"
    assert _build(area, "one", target) == target
    assert (target / "artefact.bin").read_text() == "one"
    assert [p.name for p in area.parent.iterdir()] == ["3"]


def test_existing_target_needs_replace_and_replace_swaps_whole(tmp_path: Path) -> None:
    area = StagingArea(tmp_path / "m")
    target = area.parent / "1"
    _build(area, "old", target)
    with pytest.raises(TargetExists) as info:
        _build(area, "new", target)
    assert info.value.target == target
    assert (target / "artefact.bin").read_text() == "old"  # untouched by the refusal
    _build(area, "new", target, replace=True)
    assert (target / "artefact.bin").read_text() == "new"
    assert [p.name for p in area.parent.iterdir()] == ["1"]  # the old copy is gone


def test_a_failed_replace_puts_the_old_copy_back(tmp_path: Path) -> None:
    area = StagingArea(tmp_path / "m")
    target = area.parent / "1"
    _build(area, "old", target)
    vanished = area.parent / ".staging-0-000000000000"  # rename(2) of it fails: ENOENT
    with pytest.raises(FileNotFoundError):
        area.publish(vanished, target, replace=True)
    assert (target / "artefact.bin").read_text() == "old"
    assert [p.name for p in area.parent.iterdir()] == ["1"]


def test_target_outside_the_area_is_refused(tmp_path: Path) -> None:
    area = StagingArea(tmp_path / "m")
    with area.staging() as staged, pytest.raises(RepositoryError, match="must live in"):
        area.publish(staged, tmp_path / "elsewhere")


def test_refused_first_build_prunes_the_parents_it_created(tmp_path: Path) -> None:
    area = StagingArea(tmp_path / "repo" / "mobile" / "mnist")
    (tmp_path / "repo").mkdir()
    with area.staging(prune_created_parents=2) as staged:
        assert staged.parent == area.parent and staged.name.startswith(".staging-")
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == []  # mobile/ gone too
    # Without pruning (model versions) the model directory stays.
    with StagingArea(tmp_path / "repo" / "mnist").staging():
        pass
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["mnist"]


def test_stale_staging_of_dead_processes_is_cleaned_live_ones_kept(tmp_path: Path) -> None:
    area = StagingArea(tmp_path / "m")
    area.parent.mkdir()
    dead = area.parent / f".staging-{_dead_pid()}-0123456789ab"
    legacy = area.parent / f".staging-7-{_dead_pid()}-0123456789ab"  # the old mobile naming
    live = area.parent / f".staging-{os.getpid()}-0123456789ab"
    version = area.parent / "7"
    for path in (dead, legacy, live, version):
        path.mkdir()
    removed = area.clean_stale_staging()
    assert sorted(removed) == sorted([dead, legacy])
    assert sorted(p.name for p in area.parent.iterdir()) == sorted([live.name, "7"])
    # Old enough, even a live owner's directory is debris.
    assert StagingArea(area.parent, stale_after_s=-1).clean_stale_staging() == [live]


def test_model_repository_publishes_through_the_same_helper(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, "mnist")
    assert repo.area == StagingArea(repo.model_dir, repo.stale_after_s)
    with repo.staging() as staged:
        (staged / "saved_model.pb").write_text("x")
        published = repo.publish(staged)
    assert published.path == repo.version_path(1)
    assert sorted(p.name for p in repo.model_dir.iterdir()) == ["1"]
