"""graphopt: a graph-centric, compiler-style optimizer for neural networks.

Top-level API (imported lazily so ``import graphopt`` stays fast)::

    g = graphopt.load("model.onnx")            # or an nn.Module with example_inputs, .pt2, .json
    graphopt.save(g, "model.json")             # .onnx / .json / .pt / .py
    report = graphopt.verify(original, g)      # numeric comparison, names the worst output
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load": ("graphopt.modelio", "load_model"),
    "save": ("graphopt.modelio", "save_model"),
    "verify": ("graphopt.compare", "verify"),
    "Graph": ("graphopt.ir.graph", "Graph"),
    "to_torch": ("graphopt.backends.torch", "to_torch"),
    "to_onnx": ("graphopt.backends.onnx", "to_onnx"),
    "from_torch": ("graphopt.frontends.torch", "from_torch"),
    "load_onnx": ("graphopt.frontends.onnx", "load_onnx"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'graphopt' has no attribute {name!r}")


__all__ = list(_LAZY)
