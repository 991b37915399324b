"""Version discovery under a model's base path (file_system_storage_path_source.cc).

A child of the base path is a version iff its *whole* name parses as a signed 64-bit integer
the way abseil's SimpleAtoi does: surrounding ASCII whitespace and one leading ``+``/``-`` are
allowed, leading zeros too; anything else (``1.0``, ``0x10``, ``1e3``, ``12abc``, ``tmp``) is
ignored. Version paths are always ``base_path/<child name>``, with the child name taken from
the directory listing, so nothing a request says can reach outside the base path.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

log = logging.getLogger("serving.modelserver")

_INT = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)[ \t\n\v\f\r]*")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def parse_version(name: str) -> int | None:
    """SimpleAtoi<int64>: the version number of a child name, or None."""
    m = _INT.fullmatch(name)
    if m is None:
        return None
    value = int(m.group(2), 10)
    if m.group(1) == "-":
        value = -value
    if not INT64_MIN <= value <= INT64_MAX:
        return None
    return value


@dataclass(frozen=True)
class VersionDir:
    version: int
    path: str


class BasePathMissing(Exception):
    pass


def discover_versions(base_path: str) -> dict[int, VersionDir]:
    """Versions under base_path. Duplicate numbers: the lexicographically last name wins.

    Raises BasePathMissing when base_path cannot be listed (TF Serving then skips the whole
    poll for every model)."""
    try:
        names = sorted(os.listdir(base_path))
    except OSError as exc:
        raise BasePathMissing(f"Could not find base path {base_path}: {exc.strerror}") from None
    found: dict[int, VersionDir] = {}
    for name in names:
        version = parse_version(name)
        if version is None:
            continue
        if version in found:
            log.warning(
                "Duplicate version directories detected for version %d under %s; using %s",
                version,
                base_path,
                name,
            )
        found[version] = VersionDir(version, os.path.join(base_path, name))
    return found


def aspired_versions(policy, available: dict[int, VersionDir]) -> list[VersionDir]:
    """Apply a FileSystemStoragePathSourceConfig.ServableVersionPolicy (latest/all/specific)."""
    kind = policy.WhichOneof("policy_choice") if policy is not None else None
    ordered = sorted(available.values(), key=lambda v: v.version, reverse=True)
    if kind == "all":
        return ordered
    if kind == "specific":
        wanted = set(policy.specific.versions)
        missing = wanted - set(available)
        if missing:
            log.warning("Specific versions %s not found", sorted(missing))
        return [v for v in ordered if v.version in wanted]
    n = 1
    if kind == "latest":
        n = max(policy.latest.num_versions, 1)
    return ordered[:n]
