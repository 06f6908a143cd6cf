"""Op registry messages (graphopt/ir/registry.py): an unsupported op says how to register one."""

from __future__ import annotations

import pytest

from graphopt.ir import DType, Graph, TensorType, UnsupportedOpError
from graphopt.ir.registry import unsupported_message


def test_unsupported_op_message_says_how_to_register():
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, (1,)))
    with pytest.raises(UnsupportedOpError, match="Register one with"):
        g.create_node("frobnicate", [x])


def test_unsupported_op_message_suggests_a_snake_case_name():
    msg = unsupported_message("MaxRoiPoolND", node="n1")
    assert "'max_roi_pool_nd'" in msg and "onnx='MaxRoiPoolND'" in msg and "'n1'" in msg
