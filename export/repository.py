"""The model repository: ``<root>/<model_name>/<version>/``, as TF Serving reads it.

Rules (why each exists):
- A version is a directory whose whole name is a decimal integer; TF Serving loads every such
  directory it sees, so nothing numeric ever appears before it is complete.
- A version is built in a hidden, non-numeric staging directory on the same filesystem and
  renamed into place: rename(2) is atomic, so a poller sees no version or a whole one.
- Version numbers are reserved with an exclusive lock file (``.version-<N>.lock``, O_EXCL),
  never with an empty numeric directory, so two exporters get different numbers.
- A crash or Ctrl-C leaves at most a staging directory or a lock file owned by a dead process;
  both are non-numeric (invisible to servers) and the next publish removes them.
- Published versions are immutable; deletion (retention) renames a version to a hidden name
  first, so a server never sees half a version.
- One staging/publish helper, :class:`StagingArea`, builds and renames both versions and the
  derived mobile artefacts (``<root>/mobile/<model_name>/<version>/``, export.mobile).
The repository is meant for a local filesystem: ownership of debris is judged by process id.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

VERSION_RE = re.compile(r"^[0-9]+$")
STAGING_PREFIX = ".staging-"
DELETING_PREFIX = ".deleting-"
# Derived artefacts (mobile models) live under <root>/mobile/<model_name>/<version>/.
MOBILE_DIR = "mobile"
LOCK_RE = re.compile(r"^\.version-([0-9]+)\.lock$")
# .staging-<pid>-<hex>. Mobile exports once named theirs .staging-<version>-<pid>-<hex>; the
# optional group lets their debris be recognised (and cleaned) too.
STAGING_RE = re.compile(r"^\.staging-(?:[0-9]+-)?([0-9]+)-[0-9a-f]+$")
REPLACED_PREFIX = ".replaced-"
DEFAULT_STALE_AFTER_S = 24 * 3600.0  # debris of a live process older than this is stale too


class RepositoryError(RuntimeError):
    pass


@dataclass(frozen=True)
class PublishedVersion:
    version: int
    path: Path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush a staged version's files before it becomes visible (a crash then can't expose
    a version with empty files)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _owner_dead_or_old(pid: int, path: Path, stale_after_s: float) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return not pid_alive(pid) or age > stale_after_s


class TargetExists(RepositoryError):
    """A publish without ``replace`` found its target already there."""

    def __init__(self, target: Path) -> None:
        super().__init__(f"{target} already exists")
        self.target = target


@dataclass(frozen=True)
class StagingArea:
    """Hidden build directories in ``parent`` that become visible by one rename(2).

    The one staging/publish pattern of the house: model versions (:class:`ModelRepository`)
    and mobile artefacts (export.mobile) are both built in ``.staging-<pid>-<hex>`` beside
    their target, flushed, and renamed into place, so a reader sees nothing or everything.
    """

    parent: Path
    stale_after_s: float = DEFAULT_STALE_AFTER_S

    @contextlib.contextmanager
    def staging(self, prune_created_parents: int = 0) -> Iterator[Path]:
        """A fresh hidden build directory; removed on exit (also on Ctrl-C) unless it was
        published (renamed away) meanwhile. Up to ``prune_created_parents`` levels of
        directories this call had to create (``parent`` first) are removed again if they
        end up empty, so a refused first build leaves no trace."""
        chain = [self.parent, *self.parent.parents][:prune_created_parents]
        created = [p for p in chain if not p.exists()]
        self.parent.mkdir(parents=True, exist_ok=True)
        path = self.parent / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            for directory in created:  # innermost first
                with contextlib.suppress(OSError):  # not empty: something was published
                    directory.rmdir()

    def is_stale_staging(self, entry: Path) -> bool:
        """``entry`` is a staging directory of a dead process (or an old one)."""
        match = STAGING_RE.match(entry.name)
        return bool(match) and _owner_dead_or_old(int(match.group(1)), entry, self.stale_after_s)

    def clean_stale_staging(self) -> list[Path]:
        """Remove the staging directories of processes that died mid-build."""
        removed: list[Path] = []
        if not self.parent.is_dir():
            return removed
        for entry in self.parent.iterdir():
            if self.is_stale_staging(entry):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        return removed

    def publish(
        self,
        staged: Path,
        target: Path,
        *,
        replace: bool = False,
        before_rename: Callable[[], None] | None = None,
    ) -> Path:
        """Flush ``staged`` and rename(2) it to ``target`` (a child of ``parent``).

        Without ``replace`` an existing target raises :class:`TargetExists` (and rename onto
        a non-empty directory fails, so a racer cannot be clobbered either); with it the old
        directory is first renamed to a hidden name and deleted once the new one is in place.
        An OSError of the rename itself propagates unchanged."""
        if Path(target).parent != self.parent:
            raise RepositoryError(f"{target}: a publish target must live in {self.parent}")
        fsync_tree(staged)  # a crash right after the rename must not expose empty files
        if before_rename is not None:
            before_rename()  # last chance to refuse (the export's Ctrl-C point of no return)
        old: Path | None = None
        if target.exists():
            if not replace:
                raise TargetExists(target)
            old = self.parent / f"{REPLACED_PREFIX}{target.name}-{uuid.uuid4().hex[:12]}"
            os.rename(target, old)
        try:
            os.rename(staged, target)
        except OSError:
            if old is not None:  # put the old copy back: a failed replace loses nothing
                with contextlib.suppress(OSError):
                    os.rename(old, target)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(self.parent)
        return target


class ModelRepository:
    """One model's versions under ``<root>/<model_name>/``."""

    def __init__(
        self, root: Path | str, model_name: str, stale_after_s: float = DEFAULT_STALE_AFTER_S
    ) -> None:
        if not model_name or "/" in model_name or model_name.startswith("."):
            raise ValueError(f"invalid model name {model_name!r}")
        self.root = Path(root)
        self.model_name = model_name
        self.model_dir = self.root / model_name
        self.stale_after_s = stale_after_s
        self.area = StagingArea(self.model_dir, stale_after_s)

    # ----- reading -------------------------------------------------------------------------

    def versions(self) -> list[int]:
        """Published versions, ascending."""
        if not self.model_dir.is_dir():
            return []
        return sorted(
            int(entry.name)
            for entry in self.model_dir.iterdir()
            if VERSION_RE.match(entry.name) and entry.is_dir()
        )

    def latest(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def version_path(self, version: int) -> Path:
        return self.model_dir / str(version)

    def published(self) -> list[PublishedVersion]:
        return [PublishedVersion(v, self.version_path(v)) for v in self.versions()]

    def reserved(self) -> list[int]:
        """Numbers currently held by lock files (live or not yet cleaned)."""
        if not self.model_dir.is_dir():
            return []
        return sorted(
            int(m.group(1)) for e in self.model_dir.iterdir() if (m := LOCK_RE.match(e.name))
        )

    # ----- staging -------------------------------------------------------------------------

    def staging(self) -> contextlib.AbstractContextManager[Path]:
        """A fresh hidden build directory beside the versions (:meth:`StagingArea.staging`)."""
        return self.area.staging()

    # ----- reservation and publishing -------------------------------------------------------

    def _lock_path(self, version: int) -> Path:
        return self.model_dir / f".version-{version}.lock"

    @contextlib.contextmanager
    def reserve(self, max_attempts: int = 1000) -> Iterator[int]:
        """Hold the next version number until the block ends (lock file, O_EXCL)."""
        self.model_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(max_attempts):
            candidate = max([0, *self.versions(), *self.reserved()]) + 1
            lock = self._lock_path(candidate)
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue  # someone else holds it: look again
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(
                        {"pid": os.getpid(), "host": socket.gethostname(), "created": time.time()},
                        handle,
                    )
            except BaseException:  # a full disk or a Ctrl-C: leave no ownerless empty lock
                lock.unlink(missing_ok=True)
                raise
            # A racer may have published this number (or a higher one) between our listing
            # and our lock; versions must stay new and increasing.
            if any(v >= candidate for v in self.versions()):
                lock.unlink(missing_ok=True)
                continue
            try:
                yield candidate
            finally:
                lock.unlink(missing_ok=True)
            return
        raise RepositoryError(f"{self.model_dir}: could not reserve a version number")

    def publish(
        self,
        staged: Path,
        finalize: Callable[[Path, int], None] | None = None,
        before_rename: Callable[[int], None] | None = None,
    ) -> PublishedVersion:
        """Make ``staged`` the next version: reserve a number, let ``finalize`` write
        version-specific files into the staged directory, flush, rename. Returns the version.

        ``before_rename(version)`` runs last before the rename; raising there publishes nothing
        (the export's Ctrl-C point of no return)."""
        staged = Path(staged)
        if staged.parent.resolve() != self.model_dir.resolve():
            raise RepositoryError(f"{staged}: staged directory must live in {self.model_dir}")
        self.clean_stale()
        with self.reserve() as version:
            if finalize is not None:
                finalize(staged, version)
            # Atomic; never replaces: the number is ours and fresh.
            hook = None if before_rename is None else (lambda: before_rename(version))
            target = self.area.publish(staged, self.version_path(version), before_rename=hook)
        return PublishedVersion(version, target)

    # ----- cleanup and retention -----------------------------------------------------------

    def clean_stale(self) -> list[Path]:
        """Remove debris of crashed exports: staging dirs and locks of dead processes, and
        half-finished deletions. Returns what was removed."""
        removed: list[Path] = []
        if not self.model_dir.is_dir():
            return removed
        for entry in self.model_dir.iterdir():
            if STAGING_RE.match(entry.name):
                if self.area.is_stale_staging(entry):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry)
            elif LOCK_RE.match(entry.name):
                if self._lock_is_stale(entry):
                    entry.unlink(missing_ok=True)
                    removed.append(entry)
            elif entry.name.startswith(DELETING_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        return removed

    def _lock_is_stale(self, lock: Path) -> bool:
        try:
            owner = json.loads(lock.read_text() or "{}")
        except (OSError, ValueError):
            owner = {}
        pid = owner.get("pid")
        if not isinstance(pid, int):
            # Being written right now, or garbage: stale only once it is old.
            try:
                return time.time() - lock.stat().st_mtime > 60.0
            except FileNotFoundError:
                return False
        if owner.get("host") not in (None, socket.gethostname()):
            return time.time() - float(owner.get("created", 0)) > self.stale_after_s
        return _owner_dead_or_old(pid, lock, self.stale_after_s)

    def mobile_path(self, version: int) -> Path:
        """Where the version's derived mobile artefacts live (beside, never inside, it)."""
        return self.root / MOBILE_DIR / self.model_name / str(version)

    def delete_version(self, version: int) -> None:
        """Remove a version and its derived artefacts: hide each by rename first, then delete
        the hidden copy, so nobody ever reads half of either."""
        targets = [(self.version_path(version), self.model_dir)]
        if self.mobile_path(version).exists():
            targets.append((self.mobile_path(version), self.mobile_path(version).parent))
        for path, parent in targets:
            hidden = parent / f"{DELETING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
            os.rename(path, hidden)
            shutil.rmtree(hidden, ignore_errors=True)

    def apply_retention(self, keep: int, protected: Iterable[int] = ()) -> list[int]:
        """Keep the newest ``keep`` versions and every protected one; delete the rest.
        Returns the deleted versions."""
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        versions = self.versions()
        kept = set(versions[-keep:]) | set(protected)
        doomed = [v for v in versions if v not in kept]
        for version in doomed:
            self.delete_version(version)
        return doomed
