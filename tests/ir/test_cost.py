"""Analytic node and graph costs (graphopt/ir/cost.py): closed forms, unknown (not guessed) under symbolic dims."""

from _helpers import conv_bn_relu_graph

from graphopt.ir import graph_cost


def test_conv_cost_closed_form():
    g = conv_bn_relu_graph(batch=2)
    conv = g.find_node("conv")
    from graphopt.ir import node_cost

    c = node_cost(conv)
    # out 2x8x4x4, each output: 3*3*3 MACs + bias add
    assert c.flops == 2 * (2 * 8 * 4 * 4) * 27 + 2 * 8 * 4 * 4
    assert c.params == 8 * 27 + 8
    assert c.bytes_written == 2 * 8 * 4 * 4 * 4
    assert graph_cost(g).params == 8 * 27 + 8 + 16
    assert graph_cost(conv_bn_relu_graph()).flops is None  # symbolic batch: unknown, not guessed
