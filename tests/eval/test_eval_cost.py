"""Analytic activation memory and measured latency of IR graphs."""


import numpy as np
from _helpers import conv_bn_relu_graph

from graphopt.eval.cost import activation_memory, analytic_cost, onnx_latency, torch_latency
from graphopt.ir import DType, Graph, TensorType


def test_peak_activation_memory_of_a_chain_and_a_branch():
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, (1, 1000)))  # 4000 bytes
    a = g.create_node("relu", [x]).output
    b = g.create_node("sigmoid", [a]).output
    c = g.create_node("add", [a, b]).output  # a stays live until here
    g.set_outputs([c])
    total, peak = activation_memory(g)
    assert total == 3 * 4000
    # at the add: x is dead (last use relu), a, b live and c being written
    assert peak == 3 * 4000


def test_analytic_cost_and_measured_latency_are_positive():
    g = conv_bn_relu_graph(batch=2)
    c = analytic_cost(g)
    assert c.flops > 0 and c.params == 8 * 27 + 8 + 16
    assert c.peak_activation_bytes >= 2 * 8 * 4 * 4 * 4
    assert torch_latency(g, runs=3) > 0
    assert onnx_latency(g, runs=3) > 0
    assert np.isfinite(onnx_latency(g, runs=3))
