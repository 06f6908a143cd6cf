"""The ``convert-opset`` pass (passes/convert_opset.py): lowers ops an older opset lacks (the zoo BERT through the
torch frontend) and names the ops it cannot express."""

from __future__ import annotations

import pytest
import torch
from _helpers import assert_same as same
from _helpers import op_counts as ops
from _helpers import run_passes as run

from graphopt.backends.onnx import to_onnx
from graphopt.compare import verify
from graphopt.ir import DType, Graph, TensorType
from graphopt.pass_api import PassError
from graphopt.pass_manager import PassManager


def test_bert_torch_frontend_convert_opset_and_attention():
    from graphopt import models
    from graphopt.frontends.torch import from_torch

    net = models.get("bert_tiny", seed=0).eval()
    (tok,) = models.example_inputs("bert_tiny", batch=1)
    g = from_torch(net, (tok,))
    assert ops(g)["gelu"] == 2 and ops(g)["layer_norm"] == 5
    low = PassManager("convert-opset[opset=16]").run(g).graph
    assert low.meta["opset"] == 16 and "gelu" not in ops(low) and "layer_norm" not in ops(low)
    m = to_onnx(low, opset=16)
    with torch.no_grad():
        ref = net(tok)
    ref = ref[0] if isinstance(ref, tuple | list) else ref
    got = verify(net, m, [tok])
    assert got.ok, str(got)
    att = run(g, "canonicalize,fuse-attention,dce")
    assert ops(att)["attention"] == 2
    same(g, att, rtol=1e-4, atol=1e-5)


def test_convert_opset_names_ops_it_cannot_express():
    g = Graph("celu")
    x = g.add_input("x", TensorType(DType.float32, (2, 3)))
    g.set_outputs([g.create_node("celu", [x], name="my_celu").output])
    with pytest.raises(PassError, match=r"celu \(needs opset 12; nodes my_celu\)"):
        PassManager("convert-opset[opset=11]").run(g)
    with pytest.raises(PassError, match="outside the supported range"):
        PassManager("convert-opset[opset=3]").run(g)
