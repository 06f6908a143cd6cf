"""Graph editing (graphopt/ir/graph.py): insert/replace/erase with use lists, toposort, subgraph extraction, copies
that share no metadata."""

import pytest
import torch
from _helpers import conv_bn_relu_graph

from graphopt.backends.torch import to_torch
from graphopt.ir import DType, Graph, IRError, TensorType, verify
from graphopt.ir.infer import infer_graph


def test_insert_replace_erase_and_use_lists():
    g = conv_bn_relu_graph()
    relu = g.find_node("relu")
    with g.inserting_after(relu):
        s = g.create_node("sigmoid", [relu.output], name="sig")
    flat = g.find_node("flat")
    flat.set_input(0, s.output)
    assert [u.node.name for u in s.output.uses] == ["flat"]
    assert relu.output.users[0].name in ("shape", "sig")
    verify(g)
    g.replace_all_uses(s.output, relu.output)
    g.erase_node(s)
    verify(g)
    with pytest.raises(IRError, match="used by"):
        g.erase_node(relu)


def test_toposort_reports_cycles():
    g = conv_bn_relu_graph()
    relu = g.find_node("relu")
    bn = g.find_node("bn")
    bn.set_input(0, relu.output)  # bn -> relu -> bn
    with pytest.raises(IRError, match="cycle"):
        g.toposort()


def test_subgraph_extraction_boundaries():
    g = conv_bn_relu_graph()
    nodes = [g.find_node("bn"), g.find_node("relu")]
    sub, b_in, b_out = g.subgraph(nodes)
    assert [v.name for v in b_in] == ["conv"]
    assert [v.name for v in b_out] == ["relu"]
    assert set(sub.constants) == {"bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"}
    verify(sub)
    nxg = g.to_networkx()
    assert nxg.number_of_nodes() == len(g)
    assert nxg.has_edge("bn", "relu")


def test_copy_does_not_share_nested_meta():
    """Before: copy() did dict(meta), so the copy's _sym_sentinels (and any list in node meta) was the
    original's object; inferring new symbols in a copy changed the original."""
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, ("batch", 4)))
    r = g.create_node("relu", [x], name="r")
    r.meta["provenance"] = ["frontend"]
    g.set_outputs([r.output])
    table = g.meta["_sym_sentinels"]
    before = dict(table)
    c = g.copy()
    c.inputs[0].type = TensorType(DType.float32, ("other", 4))
    infer_graph(c)
    c.nodes[0].meta["provenance"].append("pass")
    assert "other" in c.meta["_sym_sentinels"]
    assert g.meta["_sym_sentinels"] is table and table == before
    assert r.meta["provenance"] == ["frontend"]


def test_subgraph_accepts_a_one_shot_iterator():
    """Before: the node set was rebuilt per graph node (quadratic), which also exhausted a generator after
    the first node, silently dropping the rest."""
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, (2, 3)))
    a = g.create_node("relu", [x], name="a")
    b = g.create_node("neg", [a.output], name="b")
    c = g.create_node("exp", [b.output], name="c")
    d = g.create_node("add", [c.output, a.output], name="d")
    g.set_outputs([d.output])
    sub, b_in, b_out = g.subgraph(n for n in g.nodes if n.name in ("b", "c"))
    assert [n.name for n in sub.nodes] == ["b", "c"]
    assert b_in == [a.output] and b_out == [c.output]
    xs = torch.randn(5, 3)
    torch.testing.assert_close(to_torch(sub)(xs), torch.exp(-xs))
