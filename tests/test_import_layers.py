"""The import contracts of pyproject.toml ([tool.importlinter]) hold, checked by import-linter.

Why a staged tree: in the source tree ``passes/``, ``predictors/`` and ``models/`` sit beside ``graphopt/`` and
become ``graphopt.passes``, ``.predictors`` and ``.models`` only through ``package-dir``; import-linter (grimp)
reads the files of the ``graphopt`` folder, so it is pointed at a copy laid out as the installed package is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _staged(tmp: Path) -> Path:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    dest = tmp / "graphopt"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "data", "weights", "profiles")
    shutil.copytree(ROOT / mapping["graphopt"], dest, ignore=ignore)
    for pkg, folder in mapping.items():
        if pkg != "graphopt":
            shutil.copytree(ROOT / folder, tmp / pkg.replace(".", "/"), ignore=ignore, dirs_exist_ok=True)
    return tmp


def _lint(tree: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT), "--config", str(config), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=300)


pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is in the dev extra")


def test_imports_flow_one_way(tmp_path):
    res = _lint(_staged(tmp_path), ROOT / "pyproject.toml")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken" in res.stdout


def test_a_backward_import_breaks_the_layers_contract(tmp_path):
    """The check can fail: an ``ir`` module importing a pass is reported, naming both ends."""
    tree = _staged(tmp_path)
    (tree / "graphopt" / "ir" / "_backward.py").write_text("from graphopt.passes import canonicalize  # noqa\n")
    res = _lint(tree, ROOT / "pyproject.toml")
    assert res.returncode != 0
    assert "graphopt.ir._backward -> graphopt.passes.canonicalize" in res.stdout
