"""``decompose-gelu``: ``gelu`` -> primitives, for targets (ONNX below opset 20, NPUs) without a GELU op.

The exact GELU becomes ``x * (1 + erf(x / sqrt 2)) * 0.5`` (the TorchScript exporter's form, :func:`gelu_erf`, also
the NPU legalizer's builder); a tanh-approximate one (``approximate='tanh'``) becomes the tanh formula with the cube
as two Muls. Both are exact (up to float rounding), and ``fuse-gelu`` recognizes them again.
"""

from __future__ import annotations

from graphopt.ir.graph import Graph, Value
from graphopt.pass_api import graph_pass
from graphopt.rewrite import _ReplacementBuilder

from ._decompose_util import _run, const_like, gelu_tanh
from ._util import SQRT2


def gelu_erf(b: _ReplacementBuilder, x: Value) -> Value:
    """``x * (1 + erf(x / sqrt 2)) * 0.5`` (the TorchScript exporter's form)."""
    e = b.erf(b.div(x, const_like(b, SQRT2, x, "sqrt2")))
    return b.mul(b.mul(x, b.add(e, const_like(b, 1.0, x, "one"))), const_like(b, 0.5, x, "half"))


@graph_pass("decompose-gelu", "gelu -> Erf/Div/Mul/Add (exact) or the Tanh formula for approximate='tanh'")
def decompose_gelu(graph: Graph) -> dict[str, int]:
    def build(b, node):
        x = node.inputs[0]
        return gelu_tanh(b, x) if node.attrs.get("approximate") == "tanh" else gelu_erf(b, x)

    return {"gelu": _run(graph, "gelu", build, "decompose-gelu")}
