"""Kernel grouping and the per-kernel GBM predictor (cpu-ort family) on synthetic devices with known costs."""

from __future__ import annotations

import numpy as np
import pytest
from graphopt.predictors.latency import fit_cpu
from graphopt.predictors.latency.kernels import ORT_RULES, TFLITE_RULES, group_kernels
from graphopt.predictors.latency.models import GBM


@pytest.fixture
def fast_weights(monkeypatch):
    """Sampled networks with constant weights (the test never runs them): building them is then instant."""

    def w(self, shape, name="w"):
        return self.g.add_const(name, np.broadcast_to(np.float32(0.01), shape), "param")

    monkeypatch.setattr(fit_cpu._Builder, "w", w)


def _synthetic_us(k) -> float:
    """A device: per-kind launch cost, compute at a per-kind rate, memory at 8 GB/s, depthwise 4x slower."""
    launch = {"conv": 3.0, "conv_dw": 2.0, "linear": 2.5, "matmul": 2.0, "softmax": 1.5, "layernorm": 2.0}
    rate = {"conv": 3e4, "conv_dw": 4e3, "conv_grp": 1e4, "linear": 2.5e4, "matmul": 1.5e4}  # FLOPs per µs
    f = k.feats
    compute = f["flops"] / rate.get(k.kind, 2e3)
    memory = (f["in_bytes"] + f["out_bytes"] + f["w_bytes"]) / 8e3
    return launch.get(k.kind, 1.0) + max(compute, memory) + 0.2 * compute


def _records(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        g = fit_cpu.sample_graph(rng, f"s{i}")
        ks, _, _ = group_kernels(g, ORT_RULES)
        labels = [_synthetic_us(k) for k in ks]
        out.append({**fit_cpu.kernel_record(ks, labels, sum(labels) / 1e3 + 0.02 + 0.004 * len(ks)), "graph": g})
    return out


def test_gbm_predictor_recovers_a_synthetic_device(fast_weights):
    train = _records(160, 0)
    pred, rep = fit_cpu.fit_cpu_ort(train)
    assert rep["overhead_ms"] == pytest.approx(0.02, abs=0.01) and rep["per_kernel_ms"] == pytest.approx(0.004,
                                                                                                        abs=0.002)
    test = _records(40, 1)  # unseen networks of the same space
    rel_tot, rel_k = [], []
    for r in test:
        p = pred.predict(r["graph"])
        rel_tot.append(abs(p.total_ms - r["wall_ms"]) / r["wall_ms"])
        rel_k += [abs(kp.ms * 1e3 - lab) / lab for kp, lab in zip(p.kernels, r["labels_us"], strict=True)]
    assert np.mean(np.array(rel_tot) <= 0.10) >= 0.85, sorted(rel_tot)[-8:]
    assert np.median(rel_k) < 0.08
    # saved and loaded, it predicts the same
    from graphopt.predictors.latency.predictor import LatencyPredictor

    again = LatencyPredictor.from_dict(pred.to_dict())
    g = test[0]["graph"]
    assert again.predict(g).total_ms == pytest.approx(pred.predict(g).total_ms, rel=1e-12)


def test_gbm_fits_a_smooth_function_and_stops_early():
    rng = np.random.default_rng(0)
    X = rng.random((3000, 6))
    y = np.sin(3 * X[:, 0]) + X[:, 1] ** 2 + 0.5 * (X[:, 2] > 0.5) + 0.02 * rng.standard_normal(3000)
    m = GBM(seed=0).fit(X[:2400], y[:2400])
    err = np.sqrt(np.mean((m.predict(X[2400:]) - y[2400:]) ** 2))
    assert err < 0.06 and 0 < m.history["trees"] <= m.max_trees
    m2 = GBM.from_dict(m.to_dict())
    assert np.array_equal(m2.predict(X[2400:]), m.predict(X[2400:]))


def test_grouping_rules_differ_by_runtime(fast_weights):
    """onnxruntime fuses the residual Add into the conv (NCHWc Sum) but not SiLU; TFLite-style targets fuse
    ReLU into Add but keep the residual Add a kernel of its own."""
    from graphopt.ir import DType, Graph, TensorType

    b = fit_cpu._Builder(np.random.default_rng(0), "res")
    x = b.g.add_input("x", TensorType(DType.float32, (1, 8, 8, 8)))
    y = b.node("add", [b.bn(b.conv(x, 8, 3)), x])
    z = b.act(y, "relu")
    b.g.set_outputs([z])
    ort = group_kernels(b.g, ORT_RULES)[0]
    tfl = group_kernels(b.g, TFLITE_RULES)[0]
    assert [k.ops for k in ort] == [["conv", "batch_norm", "add", "relu"]]
    assert [k.ops for k in tfl] == [["conv", "batch_norm"], ["add", "relu"]]
    assert ort[0].sig == "conv3x3s1+bn+add+act"
    # features: FLOPs of the fused members add up, weights are counted once, the residual is a second input
    f = ort[0].feats
    assert f["n_inputs"] == 1 and f["has_add"] == 1 and f["w_bytes"] == (8 * 8 * 9 + 4 * 8) * 4
    g2 = Graph("folded")  # a node computed from constants only is folded, not a kernel
    c = g2.add_const("c", np.ones((4,), np.float32))
    inp = g2.add_input("x", TensorType(DType.float32, (4,)))
    s = g2.create_node("relu", [c]).output
    g2.set_outputs([g2.create_node("add", [inp, s]).output])
    ks, folded, dead = group_kernels(g2, ORT_RULES)
    assert [n.op for n in folded] == ["relu"] and [k.ops for k in ks] == [["add"]] and not dead
