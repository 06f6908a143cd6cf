"""The pattern rewriter (graphopt/rewrite.py): matches with outside uses are rejected, commutative matches and
constant literals, variables bound twice, DAG patterns that use one node twice."""

from __future__ import annotations

import numpy as np
from _helpers import assert_same as same

from graphopt.compare import verify as numeric_verify
from graphopt.ir import DType, Graph, TensorType, verify
from graphopt.ir import verify as verify_ir
from graphopt.pass_api import get_pass
from graphopt.rewrite import RewriteRule


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


def test_dag_pattern_requires_the_same_node_twice():
    """softmax's pattern uses one Exp twice; two different Exps of the same value must not match."""
    g = Graph("two_exps")
    x = g.add_input("x", TensorType(DType.float32, (2, 5)))
    ax = g.add_const("ax", np.asarray([-1], dtype=np.int64))
    e1 = g.create_node("exp", [x], name="e1").output
    e2 = g.create_node("exp", [x], name="e2").output
    s = g.create_node("reduce_sum", [e2, ax]).output
    g.set_outputs([g.create_node("div", [e1, s]).output])
    assert get_pass("fuse-softmax")(g) == {}
    g2 = Graph("one_exp")
    x = g2.add_input("x", TensorType(DType.float32, (2, 5)))
    ax = g2.add_const("ax", np.asarray([-1], dtype=np.int64))
    e = g2.create_node("exp", [x]).output
    g2.set_outputs([g2.create_node("div", [e, g2.create_node("reduce_sum", [e, ax]).output]).output])
    ref = g2.copy()
    assert get_pass("fuse-softmax")(g2) == {"softmax-plain": 1}
    verify_ir(g2)
    same(ref, g2)
