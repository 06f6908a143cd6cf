"""The ``fuse-reshapes`` pass (passes/fuse_reshapes.py): an unsqueeze of a reshape collapses into one reshape."""

from __future__ import annotations

import numpy as np
from _helpers import assert_same as same
from _helpers import op_counts as ops
from _helpers import run_passes as run

from graphopt.ir import DType, Graph, TensorType


def test_fuse_reshapes_collapses_unsqueeze_of_reshape():
    g = Graph("r")
    x = g.add_input("x", TensorType(DType.float32, (2, 12)))
    s = g.add_const("s", np.asarray([2, 3, 4], dtype=np.int64))
    r = g.create_node("reshape", [x, s]).output
    u = g.create_node("unsqueeze", [r, g.add_const("ax", np.asarray([1], dtype=np.int64))]).output
    f = g.create_node("flatten", [u], {"axis": 2}).output
    g.set_outputs([g.create_node("relu", [f]).output])
    out = run(g, "fuse-reshapes,dce")
    assert dict(ops(out)) == {"reshape": 1, "relu": 1}
    same(g, out)
