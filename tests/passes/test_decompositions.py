"""The small-op decompositions (``decompose-group-norm``, ``-hard-swish``, ``-hard-sigmoid``, ``-mish``,
``-batchnorm``, ``-softmax``: passes/decompose_*.py) are exact, and the decomposed graph exports to an older opset
matching onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import assert_same as same
from _helpers import op_counts as ops
from _helpers import run_passes as run

from graphopt.backends.onnx import to_onnx
from graphopt.ir import DType, Graph, TensorType


def _chain_graph() -> Graph:
    g = Graph("acts")
    x = g.add_input("x", TensorType(DType.float32, (2, 4, 5, 5)))
    scale = g.add_const("gn_scale", np.linspace(0.5, 1.5, 4).astype(np.float32), "param")
    bias = g.add_const("gn_bias", np.linspace(-1, 1, 4).astype(np.float32), "param")
    y = g.create_node("group_norm", [x, scale, bias], {"num_groups": 2, "epsilon": 1e-5}).output
    y = g.create_node("hard_swish", [y]).output
    y = g.create_node("hard_sigmoid", [y], {"alpha": 0.3, "beta": 0.4}).output
    y = g.create_node("mish", [y]).output
    mean = g.add_const("m", np.linspace(-0.2, 0.2, 4).astype(np.float32), "buffer")
    var = g.add_const("v", np.linspace(0.5, 2.0, 4).astype(np.float32), "buffer")
    y = g.create_node("batch_norm", [y, scale, bias, mean, var]).output
    g.set_outputs([g.create_node("log_softmax", [y], {"axis": 1}).output])
    return g


@pytest.mark.parametrize("pipeline, gone", [
    ("decompose-group-norm", "group_norm"),
    ("decompose-hard-swish", "hard_swish"),
    ("decompose-hard-swish[form=clip]", "hard_swish"),
    ("decompose-hard-sigmoid", "hard_sigmoid"),
    ("decompose-mish", "mish"),
    ("decompose-batchnorm", "batch_norm"),
    ("decompose-softmax", "log_softmax"),
])
def test_decompositions_are_exact(pipeline, gone):
    g = _chain_graph()
    out = run(g, pipeline)
    assert gone not in ops(out)
    same(g, out, rtol=1e-4, atol=1e-5)


def test_decomposed_graph_exports_to_old_opset_and_matches_onnxruntime():
    g = _chain_graph()
    low = run(g, "convert-opset[opset=13],decompose-hard-sigmoid")
    assert not {"group_norm", "mish", "hard_swish"} & set(ops(low))
    same(g, to_onnx(low, opset=13), rtol=1e-4, atol=1e-5)
