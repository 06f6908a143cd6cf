"""pyproject.toml lists every package: setuptools' explicit ``packages`` list silently leaves out a new folder."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_folder_with_an_init_is_a_listed_package():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for pkg, folder in setup["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
                continue
            dotted = ".".join([pkg, *rel.parts])
            if not any(dotted.startswith(other + ".") or dotted == other
                       for other in setup["package-dir"] if other != pkg and other.startswith(pkg + ".")):
                found.add(dotted)
    assert found == set(setup["packages"]), (sorted(found - set(setup["packages"])),
                                             sorted(set(setup["packages"]) - found))
