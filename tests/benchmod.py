"""Import a benchmark script (``benchmarks/<script>``) as a module, for tests of its helpers."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def benchmark_module(script: str, name: str) -> Iterator[ModuleType]:
    """The module of ``benchmarks/<script>`` under ``name``, registered in ``sys.modules`` while in use (dataclasses
    resolve annotations through it); ``benchmarks/`` goes on ``sys.path`` for the scripts' ``import _results``."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / script)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(name, None)
