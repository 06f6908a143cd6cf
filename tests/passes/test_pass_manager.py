"""PassManager and pipeline strings (graphopt/pass_manager.py): groups and options, a cleanup pipeline that preserves
semantics, failing passes named (with the node they failed on) and the previous graph kept."""

from __future__ import annotations

import io
import warnings

import onnx
import pytest
import torch
from _helpers import MatAdd as _MatAdd
from _helpers import conv_bn_relu_graph

from graphopt.backends.torch import to_torch
from graphopt.frontends.onnx import load_onnx
from graphopt.ir import DType, TensorType
from graphopt.pass_api import PassError, get_pass, graph_pass
from graphopt.pass_manager import Group, PassManager, parse_pipeline


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


@graph_pass("test-fails-on-a-node", "raises while rewriting")
def _fails(graph):
    for node in graph.nodes:
        if node.op == "relu":
            raise ValueError("unexpected input type")
    return 0


def test_pass_manager_names_the_node_a_pass_failed_on():
    g = _MatAdd()
    g_ir = load_onnx(onnx.load_from_string(_onnx_bytes(g, (torch.randn(3, 6),))))
    with pytest.raises(PassError, match=r"'test-fails-on-a-node' failed at node \S+ \(relu\): unexpected"):
        PassManager("dce,test-fails-on-a-node").run(g_ir)


def _onnx_bytes(module, inputs) -> bytes:
    import io

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), inputs, buf, opset_version=17, dynamo=False)
    return buf.getvalue()
