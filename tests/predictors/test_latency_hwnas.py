"""HW-NAS-Bench latency predictors: NB201 equivalence classes, the class-disjoint split, additive fits on real data."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest
from graphopt.predictors.latency.hwnas import (
    NB201_OPS,
    class_disjoint_split,
    class_folds,
    class_key,
    default_csv,
    load_hwnas,
    nb201_net_features,
    tuple_to_arch,
)
from graphopt.predictors.nb201_dataset import build_nb201_ir

DATA = default_csv()
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"shared NAS data not found at {DATA}")


def _arch(t):
    return tuple_to_arch(t)


@needs_data
def test_tuple_encoding_matches_the_nb201_index_file():
    archs, lat = load_hwnas()
    with (DATA.parent / "nb201_index_tuple_archstr.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(archs) == len(rows) == 15625
    assert archs == [r["arch_str"] for r in rows]
    # Edge TPU: the 4,699 unmeasured networks (-1 in the file) are NaN, never a negative latency
    assert np.isnan(lat["edgetpu"]).sum() == 4699 and np.nanmin(lat["edgetpu"]) > 0
    assert all(np.isfinite(lat[d]).all() for d in ("pixel3", "raspi4", "edgegpu"))


def test_equivalence_class_is_the_psc_effective_view():
    # node 1 = none(x0): whatever edges 1->2 and 1->3 carry is dead, so these two compute the same function
    a = _arch((1, 2, 0, 2, 4, 3))
    b = _arch((1, 2, 0, 4, 3, 3))
    c = _arch((1, 2, 0, 4, 3, 2))  # differs on a live edge (2->3)
    ka, kb, kc = (class_key(build_nb201_ir(x, C=8, N=1)) for x in (a, b, c))
    assert ka == kb != kc


def test_fast_effective_liveness_equals_the_psc_effective_view():
    from graphopt.predictors.gnn_features import effective_view
    from graphopt.predictors.latency.kernels import effective_live

    rng = np.random.default_rng(3)
    archs = [_arch(tuple(int(x) for x in rng.integers(0, 5, 6))) for _ in range(40)]
    archs += [_arch((1, 1, 1, 1, 1, 1)), _arch((2, 1, 1, 2, 1, 1)), _arch((0, 1, 1, 1, 0, 1))]
    for a in archs:
        g = build_nb201_ir(a, C=4, N=2)
        assert {n.name for n in effective_live(g)} == {n.name for n in effective_view(g).nodes}, a


def _mixed_archs() -> list[str]:
    """Networks with many equivalents (node 1 dead: e12, e13 free) plus ones without."""
    dead = [(1, e02, e03, e12, e13, e23) for e02, e03, e23 in [(2, 3, 0), (4, 2, 3), (0, 2, 2)]
            for e12, e13 in itertools.product(range(5), repeat=2)]
    live = [tuple(int(x) for x in np.random.default_rng(i).integers(0, 5, 6)) for i in range(45)]
    return [_arch(t) for t in dead + live]


def test_class_disjoint_split_puts_no_equivalent_cells_on_both_sides(tmp_path):
    archs = _mixed_archs()
    nf = nb201_net_features(archs, cache_dir=tmp_path)
    classes = {}
    for a, k in zip(archs, nf.keys, strict=True):
        classes.setdefault(k, []).append(a)
    assert max(len(v) for v in classes.values()) >= 20  # the dead-node-1 families collapse
    for seed in range(4):
        tr, te = class_disjoint_split(nf.keys, 0.5, seed)
        assert len(set(tr) | set(te)) == len(archs) and not set(tr) & set(te)
        assert not {nf.keys[i] for i in tr} & {nf.keys[i] for i in te}
        assert 0.3 < len(tr) / len(archs) < 0.8
    folds = class_folds(nf.keys, np.arange(len(archs)), k=4)
    keys_per_fold = [{nf.keys[i] for i in f} for f in folds]
    assert sum(len(f) for f in folds) == len(archs)
    assert all(not (a & b) for a, b in itertools.combinations(keys_per_fold, 2))
    # the cache returns the same features
    again = nb201_net_features(archs, cache_dir=tmp_path)
    assert again.keys == nf.keys and all(set(x) == set(y) for x, y in zip(again.view("folded"), nf.view("folded"),
                                                                           strict=True))


def _random_chain(rng: np.random.Generator, i: int):
    """A chain of independently drawn ops at a random width and resolution (so every kernel's cost is
    identifiable from end-to-end totals, unlike NB201 where each conv comes with its ReLU)."""
    from graphopt.ir import DType, Graph, TensorType

    g = Graph(f"chain{i}")
    c, h = int(rng.choice([4, 8, 16, 24])), int(rng.choice([8, 16, 32]))
    x = g.add_input("x", TensorType(DType.float32, (1, c, h, h)))
    prev = x
    for j in range(int(rng.integers(3, 14))):
        op = rng.choice(["conv3", "conv1", "relu", "pool", "add", "sigmoid"])
        if op in ("conv3", "conv1"):
            k = 3 if op == "conv3" else 1
            w = g.add_const(f"w{j}", np.broadcast_to(np.float32(0.1), (c, c, k, k)), "param")
            y = g.create_node("conv", [x, w], {"kernel_shape": [k, k], "strides": [1, 1],
                                               "pads": [k // 2] * 4, "dilations": [1, 1], "group": 1}).output
        elif op == "pool":
            y = g.create_node("avg_pool", [x], {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1] * 4}).output
        elif op == "add":
            y = g.create_node("add", [x, prev]).output
        else:
            y = g.create_node(str(op), [x]).output
        prev, x = x, y
    g.set_outputs([x])
    return g


def test_additive_model_recovers_a_known_per_kernel_cost_formula():
    """A synthetic device whose kernel cost is a known function of (kind, FLOPs, bytes): fitted on end-to-end
    totals only, the model predicts every kernel of unseen networks."""
    from graphopt.predictors.latency.hwnas import _sums
    from graphopt.predictors.latency.kernels import TFLITE_RULES, group_kernels
    from graphopt.predictors.latency.models import AdditiveLinear, kernel_basis
    from graphopt.predictors.latency.predictor import LatencyPredictor

    rng = np.random.default_rng(0)
    cost = {}

    def true_ms(k) -> float:
        if k.sig not in cost:
            cost[k.sig] = rng.uniform(0.002, 0.02), rng.uniform(0.01, 0.2), rng.uniform(0.05, 1.0)
        a, b, c = cost[k.sig]
        return a + b * k.feats["flops"] * 1e-6 + c * (k.feats["in_bytes"] + k.feats["out_bytes"]) * 1e-6

    graphs = [_random_chain(rng, i) for i in range(160)]
    kernels = [group_kernels(g, TFLITE_RULES)[0] for g in graphs]
    y = np.array([0.05 + sum(true_ms(k) for k in ks) for ks in kernels])
    model = AdditiveLinear(ridge=0.0).fit([_sums(ks) for ks in kernels[:120]], y[:120])
    assert {"conv3x3s1", "conv1x1s1+act", "binary:add", "avgpool3x3s1"} <= set(model.coef)
    assert model.intercept == pytest.approx(0.05, abs=1e-3)
    assert all(np.all(np.asarray(c) >= 0) for c in model.coef.values())
    pred = LatencyPredictor("synthetic", "synthetic device", model, TFLITE_RULES)
    for g, ks, yy in zip(graphs[120:], kernels[120:], y[120:], strict=True):
        p = pred.predict(g)
        assert p.total_ms == pytest.approx(yy, rel=1e-3)
        assert p.overhead_ms == pytest.approx(model.intercept)
        for kp, k in zip(p.kernels, ks, strict=True):
            assert kp.seen and kp.ms == pytest.approx(true_ms(k), rel=1e-3), kp.sig
            assert kp.ms == pytest.approx(float(np.dot(model.coef[k.sig], kernel_basis(k.feats))))


@needs_data
def test_fit_on_real_edgetpu_latencies_uses_training_classes_only(tmp_path):
    """fit_hwnas on 140 real networks: the split is class-disjoint, the choice of view is made by CV on the
    training side, and the fitted predictor's total for an IR graph equals the model applied to the sums."""
    from graphopt.predictors.latency.fit_hwnas import fit_hwnas, predict_sums
    from graphopt.predictors.latency.predictor import LatencyPredictor, metrics

    archs_all, lat = load_hwnas()
    subset = np.flatnonzero(np.isfinite(lat["edgetpu"]))[:: 80][:140]
    archs = [archs_all[i] for i in subset]
    nf = nb201_net_features(archs, cache_dir=tmp_path)
    pred, rep = fit_hwnas("edgetpu", subset=subset, features=nf, train_fraction=0.6)
    assert rep["n_train"] + rep["n_test"] == len(subset)
    assert {"full", "effective", "folded"} <= set(rep["cv"]) and rep["view"] in rep["cv"]
    tr, te = class_disjoint_split(nf.keys, 0.6, 0)
    assert not {nf.keys[i] for i in tr} & {nf.keys[i] for i in te}
    path = pred.save(tmp_path / "edgetpu.json")
    again = LatencyPredictor.load(path)
    i = int(te[0])
    g = build_nb201_ir(archs[i])
    assert again.predict(g).total_ms == pytest.approx(float(predict_sums(pred.model, [nf.view(pred.view)[i]])[0]),
                                                      rel=1e-9)
    # an honest held-out check on real measurements: even 84 training networks rank the rest well
    p = predict_sums(pred.model, [nf.view(pred.view)[j] for j in te])
    m = metrics(p, lat["edgetpu"][subset][te])
    assert m["spearman"] > 0.8 and m["within10"] > 0.5, m
    # the profile tie: the Edge TPU predictor reports which nodes the edgetpu-like profile cannot run
    assert again.profile == "edgetpu-like" and again.predict(g).off_npu == []


def test_nb201_ops_cover_the_encoding():
    assert sorted(NB201_OPS.values()) == sorted(["skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1",
                                                 "avg_pool_3x3"])
