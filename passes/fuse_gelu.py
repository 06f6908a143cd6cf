"""``fuse-gelu``: the erf and tanh GELU formulas, written as primitives, -> one ``gelu`` op (ONNX ``Gelu``, opset 20).

Exporters (TorchScript ONNX before opset 20, TF converters, hand-written models) emit GELU as a chain of primitives;
one fused node is faster in the PyTorch backend, easier for targets that have the op, and shorter. Each variant an
exporter is known to produce is one pattern (onnxscript-rewriter style), kept in :mod:`._activation_patterns` with
the other activation patterns that analyses look for.

``convert-opset`` turns ``gelu`` back into primitives below opset 20, so the default fp32 export pipeline only fuses
what its opset has.
"""

from __future__ import annotations

from graphopt.ir.graph import Graph
from graphopt.pass_api import graph_pass
from graphopt.rewrite import apply_rules

from ._activation_patterns import GELU_RULES


@graph_pass("fuse-gelu", "Fuse the erf and tanh GELU formulas into one gelu op (ONNX Gelu, opset 20)")
def fuse_gelu(graph: Graph) -> dict[str, int]:
    return apply_rules(graph, GELU_RULES)
