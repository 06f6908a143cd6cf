"""BatchNorm re-insertion (passes/reinsert_batch_norm.py) on a model whose exporter folded its BatchNorms: the
calibrated layers keep the function exactly in inference and nearly in training, fold back to the original, and
optimize uses them and hands back a model without them."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _helpers import SmallNet
from graphopt.passes.reinsert_batch_norm import folded_convs, insert_batch_norms

from graphopt.backends.torch import to_torch
from graphopt.eval.data import load_dataset
from graphopt.eval.distill import activation_stats
from graphopt.modelio import load_model
from graphopt.pass_manager import run_pipeline


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    torch.manual_seed(0)
    net = SmallNet()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    p = tmp_path_factory.mktemp("f") / "folded.onnx"
    torch.onnx.export(net.eval(), (torch.randn(1, 3, 32, 32),), str(p), dynamo=False, opset_version=17)
    assert not any(n.op_type == "BatchNormalization" for n in onnx.load(p).graph.node)  # the exporter folded them
    return p


def test_reinserted_batch_norm_keeps_the_function(folded):
    g = load_model(folded)
    convs = folded_convs(g)
    assert len(convs) == 4  # stem, two block convs, down
    data = load_dataset("cifar10-demo", seed=0, train_size=256).train
    names = [c.outputs[0].name for c in convs]
    added = insert_batch_norms(g, activation_stats(g, names, data, batches=4))
    assert len(added) == 4 and sum(n.op == "batch_norm" for n in g.nodes) == 4
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(str(folded), providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    m = to_torch(g).eval()
    got = m(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # in training mode it normalizes with batch statistics: close to the function on data like the calibration
    xb = torch.stack([data.x[i] for i in range(64)]).permute(0, 3, 1, 2).float().div(255)
    mean, std = torch.tensor(data.info.mean).view(1, 3, 1, 1), torch.tensor(data.info.std).view(1, 3, 1, 1)
    xb = (xb - mean) / std
    ev, tr = m.eval()(xb), m.train()(xb)
    assert float((ev - tr).abs().max() / ev.abs().max()) < 0.2
    folded_back = run_pipeline(g.copy(), "fuse-conv-bn,dce").graph
    assert not any(n.op == "batch_norm" for n in folded_back.nodes)
    np.testing.assert_allclose(to_torch(folded_back).eval()(torch.from_numpy(x)).detach().numpy(), want,
                               rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_optimize_reinserts_and_hands_back_a_folded_model(folded, tmp_path):
    from graphopt.search.autogo import OptimizeConfig, optimize

    lines: list[str] = []
    cfg = OptimizeConfig(data="cifar10-demo", budget_seconds=60, iterations=1, train_size=256, score_steps=3,
                         distill_steps=3, final_k=1, final_epochs=0.2, parents_per_iter=1, mutants_per_parent=1,
                         cost_window=(0.0, 1.5))
    optimize(load_model(folded), tmp_path / "out", cfg, run_dir=tmp_path / "run", log=lines.append)
    assert any("BatchNorm layers re-inserted" in s for s in lines)
    m = onnx.load(tmp_path / "out" / "best.onnx")
    assert not any(n.op_type == "BatchNormalization" for n in m.graph.node)
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
