"""Pass API, pattern rewriter and PassManager on real graphs."""

import io
import sys
import textwrap

import numpy as np
import pytest
import torch

from graphopt.backends.torch import to_torch
from graphopt.compare import verify as numeric_verify
from graphopt.ir import DType, Graph, TensorType, verify
from graphopt.pass_api import PassError, get_pass, graph_pass, load_pass_module
from graphopt.pass_manager import Group, PassManager, parse_pipeline
from graphopt.rewrite import RewriteRule

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_ir_core import conv_bn_relu_graph  # noqa: E402


def chain_graph() -> Graph:
    g = Graph("chain")
    x = g.add_input("x", TensorType(DType.float32, (2, 4)))
    two = g.add_const("two", np.array(2.0, dtype=np.float32))
    a = g.create_node("mul", [two, x], name="m1").output  # constant on the left: commutative match
    r1 = g.create_node("relu", [a], name="r1").output
    r2 = g.create_node("relu", [r1], name="r2").output
    s = g.create_node("sigmoid", [r1], name="s").output  # r1 is used outside relu(relu(.))
    r3 = g.create_node("relu", [s], name="r3").output
    r4 = g.create_node("relu", [r3], name="r4").output
    g.set_outputs([r2, r4])
    return g


def test_pattern_rewrite_rejects_matches_with_outside_uses():
    rule = RewriteRule(lambda op, x: op.relu(op.relu(x)), lambda op, x: op.relu(x), name="double-relu")
    g = chain_graph()
    before = g.copy()
    assert rule.apply(g) == 1  # r3/r4 rewritten; r1/r2 kept because r1 also feeds sigmoid
    verify(g)
    assert {n.name for n in g.nodes} >= {"r1", "r2"} and "r3" not in {n.name for n in g.nodes}
    assert numeric_verify(before, g).ok


def test_commutative_match_and_constant_literal():
    seen = []

    def check(match, x):
        seen.append(match.root.name)
        return True

    rule = RewriteRule(lambda op, x: op.mul(x, 2.0), lambda op, x: op.add(x, x), check, name="mul2-to-add")
    g = chain_graph()
    before = g.copy()
    assert rule.apply(g) == 1
    assert seen == ["m1"]
    assert "add" in {n.op for n in g.nodes}
    assert numeric_verify(before, g).ok


def test_variable_bound_twice_must_be_same_value():
    rule = RewriteRule(lambda op, x: op.add(x, x), lambda op, x: op.mul(x, 2.0), name="add-self")
    g = Graph()
    a = g.add_input("a", TensorType(DType.float32, (3,)))
    b = g.add_input("b", TensorType(DType.float32, (3,)))
    s = g.create_node("add", [a, b]).output
    g.set_outputs([s])
    assert rule.apply(g) == 0
    g2 = Graph()
    a = g2.add_input("a", TensorType(DType.float32, (3,)))
    g2.set_outputs([g2.create_node("add", [a, a]).output])
    assert rule.apply(g2) == 1


def test_pipeline_string_groups_and_options():
    items = parse_pipeline("specialize-shapes[batch=4],(canonicalize,cse,dce)*,fuse-conv-bn")
    assert items[0].options == {"batch": 4}
    assert isinstance(items[1], Group) and [p.name for p in items[1].items] == ["canonicalize", "cse", "dce"]
    with pytest.raises(PassError, match="Available passes"):
        parse_pipeline("dce,no-such-pass")
    with pytest.raises(PassError, match="Did you mean fold-constants"):
        get_pass("fold-constant")


def test_default_cleanup_pipeline_preserves_semantics_and_fuses_bn():
    g = conv_bn_relu_graph()
    out = io.StringIO()
    res = PassManager("specialize-shapes[batch=3],(canonicalize,fold-constants,cse,dce)*,fuse-conv-bn,dce",
                      verify_numerics=True, print_after={"fuse-conv-bn"}, out=out).run(g)
    ops = [n.op for n in res.graph.nodes]
    assert ops == ["conv", "relu", "reshape"]
    assert "graph after fuse-conv-bn" in out.getvalue()
    x = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(to_torch(res.graph).eval()(x), to_torch(g).eval()(x), rtol=1e-4, atol=1e-5)
    assert res.summary()["fuse-conv-bn"]["changes"] == {"conv-bias-bn": 1}
    assert [n.op for n in g.nodes][:3] == ["conv", "batch_norm", "relu"]  # the input graph is untouched


@graph_pass("test-raises", "a user pass that raises")
def _raises(graph):
    raise RuntimeError("boom at node relu")


@graph_pass("test-breaks-ir", "a user pass that leaves a dangling use")
def _breaks(graph):
    relu = graph.find_node("relu")
    relu.outputs[0].type = TensorType(DType.float32, (1, 2, 3))
    return 1


@graph_pass("test-wrong-math", "changes the numbers")
def _wrong(graph):
    relu = graph.find_node("relu")
    relu.op = "sigmoid"
    return 1


def test_failing_user_passes_are_named_and_previous_graph_kept():
    g = conv_bn_relu_graph()
    with pytest.raises(PassError, match="'test-raises' failed: boom at node relu"):
        PassManager("dce,test-raises").run(g)
    with pytest.raises(PassError, match="'test-breaks-ir' broke the IR: .*node relu"):
        PassManager("test-breaks-ir").run(g)
    res = PassManager("test-breaks-ir,canonicalize", on_error="skip").run(g)
    assert [r.status for r in res.records] == ["failed", "ok"]
    assert res.graph.find_node("relu").outputs[0].type == g.find_node("relu").outputs[0].type
    with pytest.raises(PassError, match="changed the graph's outputs"):
        PassManager("test-wrong-math", verify_numerics=True).run(g)


def test_static_shape_requirement_names_dim():
    @graph_pass("test-needs-static", requires=("static_shapes",))
    def needs_static(graph):
        return 0

    with pytest.raises(PassError, match="symbolic dim 'batch'.*--input-shape"):
        PassManager("test-needs-static").run(conv_bn_relu_graph())
    PassManager("specialize-shapes,test-needs-static").run(conv_bn_relu_graph())


def test_load_user_pass_module(tmp_path, monkeypatch):
    (tmp_path / "my_passes.py").write_text(textwrap.dedent('''
        from graphopt.pass_api import graph_pass

        @graph_pass("drop-relu-user", "Replace relu by identity (for testing)")
        def drop_relu(graph):
            n = 0
            for node in graph.nodes_by_op().get("relu", []):
                graph.replace_all_uses(node.output, node.inputs[0])
                graph.erase_node(node)
                n += 1
            return {"relu": n}
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_pass_module("my_passes:drop_relu")
    assert loaded[0].name == "drop-relu-user"
    res = PassManager("drop-relu-user").run(conv_bn_relu_graph())
    assert "relu" not in {n.op for n in res.graph.nodes}
    with pytest.raises(PassError, match="cannot import"):
        load_pass_module("no_such_module_xyz:fn")
