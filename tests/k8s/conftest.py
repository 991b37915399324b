"""Fixtures for the Kubernetes manifest tests: the validator module and rendered overlays."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "k8s_validate.py"


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_validate", TOOL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def kv() -> ModuleType:
    return _load_tool()


@pytest.fixture(scope="session")
def kubectl(kv: ModuleType) -> str:
    found = kv.find_kubectl()
    if found is None:
        pytest.skip("kubectl (with kustomize) is not installed; .ci/run installs the Debian package")
    return found


@pytest.fixture(scope="session")
def rendered(kv: ModuleType, kubectl: str) -> dict[str, list[dict[str, Any]]]:
    """Every overlay (and k8s/kserve), rendered once: {"dev": [...], "prod": [...], ...}."""
    return {path.name: kv.render(path, kubectl) for path in kv.overlay_dirs()}


@pytest.fixture
def k8s_copy(tmp_path: Path) -> Path:
    """A scratch copy of k8s/ to break on purpose."""
    target = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", target)
    return target
