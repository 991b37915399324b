"""export's place in the house: it never imports serving or clients, and its modules stay small.

The static check reads every import statement under export/ (also the lazy ones inside
functions); the run-time check runs the gate's infra check in a child interpreter where
``serving`` and ``clients`` cannot be imported at all, so a hidden import would fail it.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from export.tiny import TinyModelRepo

PROJECT = Path(__file__).resolve().parents[2]
EXPORT = PROJECT / "export"
FORBIDDEN = ("serving", "clients")
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(EXPORT.rglob("*.py"))


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_export_never_imports_serving_or_clients() -> None:
    modules = _modules()
    assert len(modules) >= 20  # the scan really saw the package
    # The scan sees lazy imports too: pipeline imports signatures inside run_export.
    assert "export.signatures" in _imported(EXPORT / "pipeline.py")
    offenders = {
        str(path.relative_to(PROJECT)): sorted(
            name for name in _imported(path) if name.split(".")[0] in FORBIDDEN
        )
        for path in modules
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_modules_are_small_or_say_why() -> None:
    """Over MAX_LINES only with a reason in the module docstring (a paragraph "Size: ...")."""
    too_long = {}
    for path in _modules():
        lines = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and "Size:" not in doc:
            too_long[str(path.relative_to(PROJECT))] = lines
    assert too_long == {}


def test_mobile_lives_in_its_package_and_command() -> None:
    assert not list(EXPORT.glob("mobile*.py"))
    assert {p.name for p in (EXPORT / "mobile").glob("*.py")} >= {
        "__init__.py",
        "build.py",
        "tflite.py",
        "coreml.py",
        "report.py",
    }
    from export.cli import COMMAND_MODULES

    assert "export.commands.mobile" in COMMAND_MODULES
    assert all(name.startswith("export.commands.") for name in COMMAND_MODULES)


BLOCKED_RUN = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, sys

    class Refuse(importlib.abc.Loader):
        # Finding serving on disk is allowed; running any of its code is not.

        def create_module(self, spec):
            raise ImportError(f"{spec.name} must not be imported by export")

        def exec_module(self, module):
            raise ImportError(f"{module.__name__} must not be imported by export")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] not in ("serving", "clients"):
                return None
            others = (f for f in sys.meta_path if f is not self and hasattr(f, "find_spec"))
            real = next((r for f in others if (r := f.find_spec(name, path, target))), None)
            if real is None:
                return None
            spec = importlib.machinery.ModuleSpec(name, Refuse(), origin=real.origin)
            spec.submodule_search_locations = real.submodule_search_locations
            return spec

    sys.meta_path.insert(0, Block())
    try:
        import serving  # noqa: F401
    except ImportError as exc:
        print("BLOCKED", exc)
    import numpy as np
    from export.infra_check import infra_check

    staged, labels = sys.argv[1], np.load(sys.argv[2])
    images = np.load(sys.argv[3])
    good = infra_check(staged, "mnist", images, labels)
    wrong = infra_check(staged, "mnist", images, (labels + 1) % 10)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("serving", "clients"))
    print("GOOD", good.ok, good.detail)
    print("WRONG", wrong.ok, wrong.detail)
    print("LOADED", loaded)
    """
)


@pytest.mark.slow
def test_infra_check_runs_with_serving_unimportable(
    tmp_path: Path, tiny_mnist_repo: TinyModelRepo
) -> None:
    """The child server imports serving; the exporting process never does."""
    import numpy as np

    staged = tmp_path / ".staging-copy"
    shutil.copytree(tiny_mnist_repo.version_path, staged)
    np.save(tmp_path / "labels.npy", tiny_mnist_repo.predictions[:4])
    np.save(tmp_path / "images.npy", tiny_mnist_repo.test_images[:4])
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCKED_RUN,
            str(staged),
            str(tmp_path / "labels.npy"),
            str(tmp_path / "images.npy"),
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert lines["GOOD"].startswith("True served by the embedded model server"), lines
    assert lines["WRONG"].startswith("False served classes"), lines
    assert lines["LOADED"] == "[]"
    assert lines["BLOCKED"] == "serving must not be imported by export"  # the block works
