"""The ``approximate-gelu`` pass (passes/approximate_gelu.py): close to GELU but not exact, so not
semantics-preserving."""

from __future__ import annotations

import pytest
from _helpers import op_counts as ops

from graphopt.compare import verify
from graphopt.ir import DType, Graph, TensorType
from graphopt.pass_api import PassError, get_pass
from graphopt.pass_manager import PassManager


def test_approximate_gelu_is_close_but_not_exact():
    g = Graph("g")
    x = g.add_input("x", TensorType(DType.float32, (4, 64)))
    g.set_outputs([g.create_node("gelu", [x]).output])
    approx = PassManager("approximate-gelu", verify_numerics=True).run(g).graph  # not held to the original
    assert not get_pass("approximate-gelu").semantics_preserving and "tanh" in ops(approx)
    rep = verify(g, approx, rtol=0, atol=1e-3)
    assert rep.ok and rep.worst.max_abs > 0
    with pytest.raises(PassError, match="form must be"):
        get_pass("approximate-gelu")(g.copy(), form="cubic")
