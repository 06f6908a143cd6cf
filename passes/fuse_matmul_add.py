"""``fuse-matmul-add``: ``MatMul(A, B) + C`` on 2-D operands -> one ``Gemm``.

One node instead of two, and the op most runtimes and NPUs run as a single fully-connected layer. Only where ``C``
broadcasts unidirectionally to ``(M, N)`` (Gemm's rule) and the result is float.
"""

from __future__ import annotations

from graphopt.ir.graph import Graph
from graphopt.pass_api import graph_pass
from graphopt.rewrite import RewriteRule

from ._util import rank_of


def _matmul_add(op, a, b, c):
    return op.add(op.matmul(a, b), c)


def _check_matmul_add(match, a, b, c) -> bool:
    if rank_of(a) != 2 or rank_of(b) != 2 or c.type is None or c.type.shape is None:
        return False
    out = match.root.outputs[0].type
    mm = match.node_for("matmul").outputs[0].type
    if out is None or mm is None or out.shape != mm.shape or not out.dtype.is_float:
        return False  # C must broadcast unidirectionally to (M, N) (Gemm's rule)
    return len(c.type.shape) <= 2


def _gemm(op, a, b, c):
    return op.gemm(a, b, c)


MATMUL_ADD = RewriteRule(_matmul_add, _gemm, _check_matmul_add, name="matmul-add")


@graph_pass("fuse-matmul-add", "MatMul + Add on 2-D operands -> Gemm")
def fuse_matmul_add(graph: Graph) -> dict[str, int]:
    return {"gemm": MATMUL_ADD.apply(graph)}
