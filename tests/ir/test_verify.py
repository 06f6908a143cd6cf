"""The IR verifier (graphopt/ir/verify.py) names the offending node."""

import pytest
from _helpers import conv_bn_relu_graph

from graphopt.ir import DType, TensorType, VerificationError, verify


def test_verifier_names_offending_node():
    g = conv_bn_relu_graph()
    relu = g.find_node("relu")
    relu.outputs[0].type = TensorType(DType.float32, ("batch", 9, 4, 4))
    with pytest.raises(VerificationError, match="node relu"):
        verify(g)
    g = conv_bn_relu_graph()
    # Move relu's consumer before it: a use of a value defined later (what a cycle looks like in order).
    g.move_before(g.find_node("flat"), g.find_node("relu"))
    with pytest.raises(VerificationError, match="node flat .* later node"):
        verify(g)
    g.toposort()
    verify(g)
