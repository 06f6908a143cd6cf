"""Property tests: random small graphs from the registry; every built-in pass preserves the outputs."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphopt.compare import verify as numeric_verify
from graphopt.ir import DType, Graph, TensorType, verify
from graphopt.pass_manager import PassManager

UNARY = ["relu", "sigmoid", "tanh", "identity", "neg", "abs"]
PASSES = ["dce", "cse", "canonicalize", "fold-constants", "fuse-conv-bn",
          "(canonicalize,fold-constants,cse,dce)*"]


@st.composite
def graphs(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    g = Graph("random")
    x = g.add_input("x", TensorType(DType.float32, (2, 3, 4, 4)))
    vals = [x]
    for i in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["unary", "binary", "const", "transpose", "reshape", "convbn", "dropout0"]))
        a = draw(st.sampled_from(vals))
        if kind == "unary":
            v = g.create_node(draw(st.sampled_from(UNARY)), [a]).output
        elif kind == "binary":
            b = draw(st.sampled_from(vals))
            v = g.create_node(draw(st.sampled_from(["add", "mul", "sub", "max"])), [a, b]).output
        elif kind == "const":
            c = g.add_const(f"c{i}", np.float32(draw(st.sampled_from([0.0, 1.0, 2.0, -0.5]))))
            v = g.create_node(draw(st.sampled_from(["add", "mul", "sub", "div"])), [a, c]).output
        elif kind == "transpose":
            t = g.create_node("transpose", [a], {"perm": [0, 1, 3, 2]}).output
            v = g.create_node("transpose", [t], {"perm": draw(st.sampled_from([[0, 1, 3, 2], [0, 2, 1, 3]]))}).output
            if v.type.shape != a.type.shape:
                v = g.create_node("transpose", [v], {"perm": [0, 2, 1, 3]}).output
        elif kind == "reshape":
            s1 = g.add_const(f"s{i}", np.array([2, 3, 16], dtype=np.int64))
            s2 = g.add_const(f"t{i}", np.array([2, 3, 4, 4], dtype=np.int64))
            v = g.create_node("reshape", [g.create_node("reshape", [a, s1]).output, s2]).output
        elif kind == "dropout0":
            v = g.create_node("dropout", [a], {"ratio": 0.0}).output
        else:
            w = g.add_const(f"w{i}", rng.standard_normal((3, 3, 3, 3)).astype(np.float32), "param")
            conv = g.create_node("conv", [a, w], {"pads": [1, 1, 1, 1]}).output
            bn = [g.add_const(f"bn{i}_{k}", rng.uniform(0.5, 1.5, 3).astype(np.float32), kd)
                  for k, kd in (("s", "param"), ("b", "param"), ("m", "buffer"), ("v", "buffer"))]
            v = g.create_node("batch_norm", [conv, *bn]).output
        vals.append(v)
    outs = draw(st.lists(st.sampled_from(vals[1:]), min_size=1, max_size=2, unique_by=id))
    g.set_outputs(outs)
    return g


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(graphs(), st.sampled_from(PASSES))
def test_every_builtin_pass_preserves_outputs(g, pipeline):
    verify(g)
    res = PassManager(pipeline).run(g)
    verify(res.graph)
    rep = numeric_verify(g, res.graph, rtol=1e-4, atol=1e-5)
    assert rep.ok, f"{pipeline}: {rep}\n{g}\n{res.graph}"
