"""PO-NAS: score/loss formulas, graph conversion, the query loop contract, and the synthetic group test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from graphopt.predictors.ponas import (
    ArchPool,
    PONASConfig,
    PONASRanker,
    graph_from_dag,
    nb201_graph,
    normalize_metrics,
    normalize_weights,
    online_loss,
    ponas_score,
)

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = dict(hidden=16, heads=2, surrogate_dim=16, attn_heads=4, pretrain_epochs=3, pretrain_batch=64)


def test_score_formula_on_fixed_inputs() -> None:
    w = torch.tensor([0.5, -0.25, 0.25])
    x = torch.tensor([0.2, 0.4, 1.0])
    assert float(ponas_score(w, x)) == pytest.approx(0.5 * 0.2 + 0.25 * (1 - 0.4) + 0.25 * 1.0)
    wt = normalize_weights(torch.tensor([[2.0, -1.0, 1.0]]))
    assert wt[0].tolist() == pytest.approx([0.5, -0.25, 0.25])


def test_score_stays_in_unit_interval() -> None:
    g = torch.Generator().manual_seed(0)
    w = normalize_weights(torch.randn(5000, 6, generator=g) * 10)
    x = torch.rand(5000, 6, generator=g)
    x[:100] = (x[:100] > 0.5).float()  # include the corners
    s = ponas_score(w, x)
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0 + 1e-6


def test_online_loss_on_fixed_inputs() -> None:
    # s is an exact increasing affine function of y: Pearson 1, no mis-ordered pair, aligned gaps -> 0
    y = torch.tensor([1.0, 3.0, 2.0])
    assert float(online_loss(0.2 * y - 0.1, y)) == pytest.approx(0.0, abs=1e-6)
    # one mis-ordered pair (worked out by hand): 1 - 0.5 (Pearson) + 0.5 * 3 (align) + 100 * 0.2/3 (hinge)
    s, y = torch.tensor([0.1, 0.5, 0.3]), torch.tensor([1.0, 2.0, 3.0])
    assert float(online_loss(s, y)) == pytest.approx(0.5 + 1.5 + 100 * 0.2 / 3, rel=1e-5)


def test_metric_normalisation() -> None:
    raw = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, 2.0], [2.0, 5.0, 4.0]])
    out = normalize_metrics(raw, ["a", "b", "c"])
    assert out[:, 0].tolist() == [0.0, 1.0, 0.5]
    assert out[:, 1].tolist() == [0.5, 0.5, 0.5]  # constant column
    assert out[:, 2].tolist() == [0.0, 0.0, 1.0]  # NaN -> worst
    syn = normalize_metrics(np.array([[1e10], [1e40], [1e80]]), ["synflow"])[:, 0]
    assert syn[1] == pytest.approx((math.log1p(1e40) - math.log1p(1e10)) / (math.log1p(1e80) - math.log1p(1e10)))


def test_nb201_graph_structure() -> None:
    g = nb201_graph("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|")
    assert g.x.shape == (8, 7) and torch.all(g.x.sum(1) == 1)
    edges = set(map(tuple, g.edge_index.t().tolist()))
    # op nodes: 1=e01 2=e02 3=e03 4=e12 5=e13 6=e23, 7 = output
    assert edges == {(0, 1), (0, 2), (0, 3), (1, 4), (1, 5), (2, 6), (4, 6), (3, 7), (5, 7), (6, 7)}
    with pytest.raises(ValueError, match="bad edge"):
        nb201_graph("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")


def _random_nb201(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    ops = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
    out = set()
    while len(out) < n:
        o = rng.integers(0, 5, 6)
        out.add(
            f"|{ops[o[0]]}~0|+|{ops[o[1]]}~0|{ops[o[2]]}~1|+|{ops[o[3]]}~0|{ops[o[4]]}~1|{ops[o[5]]}~2|"
        )
    return sorted(out)


def test_search_never_reevaluates_and_respects_budget() -> None:
    archs = _random_nb201(60, seed=0)
    rng = np.random.default_rng(1)
    metrics = rng.random((60, 3))
    truth = metrics @ np.array([1.0, 0.5, -0.5]) + 0.1 * rng.random(60)
    pool = ArchPool([nb201_graph(a) for a in archs], metrics, ["m1", "m2", "m3"], archs)
    calls: list[int] = []

    def oracle(i: int) -> float:
        calls.append(i)
        return float(truth[i])

    ranker = PONASRanker(PONASConfig(**TINY, fit_steps=40, patience=10, max_restarts=1), seed=0)
    res = ranker.search(pool, oracle, budget=9, n_init=3, final_k=3)
    assert len(calls) == 9 and len(set(calls)) == 9
    assert list(res.evaluated) == calls
    top3 = np.argsort(-metrics.mean(1), kind="stable")[:3].tolist()
    assert calls[:3] == top3  # starts from the best mean normalised metric
    assert res.final_candidates == calls[-3:]
    assert res.best_value == max(truth[calls])
    s = ranker.score(pool)
    assert s.shape == (60,) and s.min() >= 0 and s.max() <= 1 + 1e-6


def test_synthetic_groups_learn_sign_flipped_weights() -> None:
    """Group A's accuracy follows metric 1, group B's follows 1 - metric 2: the learned per-architecture weights
    must put a positive weight on metric 1 for A and a negative weight on metric 2 for B."""
    rng = np.random.default_rng(0)
    vocab = ["in", "conv", "pool", "out"]
    n = 40
    graphs = [graph_from_dag(["in", "conv", "conv", "out"], [(0, 1), (1, 2), (2, 3)], vocab) for _ in range(n)]
    graphs += [graph_from_dag(["in", "pool", "out"], [(0, 1), (1, 2), (0, 2)], vocab) for _ in range(n)]
    metrics = rng.random((2 * n, 3))
    y = np.concatenate([metrics[:n, 0], 1.0 - metrics[n:, 1]])
    pool = ArchPool(graphs, metrics, ["m1", "m2", "m3"])
    cfg = PONASConfig(**TINY, fit_steps=400, fit_lr=3e-3, patience=100, max_restarts=2, tie_eps=0.01)
    ranker = PONASRanker(cfg, seed=0)
    ranker.pretrain(pool)
    loss = ranker.fit({i: float(y[i]) for i in range(2 * n)})
    w = ranker.weights()
    wa, wb = w[:n].mean(0), w[n:].mean(0)
    assert wa[0] > 0.3 and abs(wa[0]) == max(abs(wa))  # A: metric 1, positive
    assert wb[1] < -0.3 and abs(wb[1]) == max(abs(wb))  # B: metric 2, inverted
    s = ranker.score()
    assert np.corrcoef(s, y)[0, 1] > 0.9 and loss < 0.5
