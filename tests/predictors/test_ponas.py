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


def test_rank_normalisation() -> None:
    raw = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, 2.0], [2.0, 5.0, 4.0], [2.0, 5.0, 1e30]])
    out = normalize_metrics(raw, ["a", "b", "c"], method="rank")
    assert out[:, 0].tolist() == [0.0, 1.0, 0.5, 0.5]  # ties share their average rank
    assert out[:, 1].tolist() == [0.5] * 4  # constant column
    assert out[:, 2].tolist() == [0.0, 0.0, 0.5, 1.0]  # NaN -> worst; the outlier does not squeeze the others
    rng = np.random.default_rng(0)
    heavy = rng.lognormal(0.0, 8.0, (500, 1))  # heavy-tailed like synflow/grasp
    q = normalize_metrics(heavy, ["m"], method="rank")[:, 0]
    assert np.all(np.argsort(q, kind="stable") == np.argsort(heavy[:, 0], kind="stable"))  # monotone
    assert sorted(q.tolist()) == pytest.approx(np.linspace(0, 1, 500).tolist())  # uniform over the pool
    with pytest.raises(ValueError, match="method"):
        normalize_metrics(raw, method="zscore")
    pool = ArchPool([nb201_graph(a) for a in _random_nb201(4, 0)], raw, ["a", "b", "c"], normalization="rank")
    assert np.array_equal(pool.normalized, out)


def test_prior_starts_from_the_mean_metric_ranking() -> None:
    archs = _random_nb201(80, seed=3)
    metrics = np.random.default_rng(4).random((80, 5))
    pool = ArchPool([nb201_graph(a) for a in archs], metrics, [f"m{i}" for i in range(5)], archs)
    mean = pool.normalized.mean(1)
    with_prior = PONASRanker(PONASConfig(**TINY, prior=1.0), seed=0)
    with_prior.pretrain(pool)
    w = with_prior.weights()
    assert np.all(w > 0) and np.allclose(w.sum(1), 1.0, atol=1e-5)
    assert np.corrcoef(with_prior.score(), mean)[0, 1] > 0.95
    default = PONASRanker(PONASConfig(**TINY), seed=0)
    default.pretrain(pool)
    assert (default.weights() < 0).any()  # default init: random signed weights, not the mean ranking
    assert np.corrcoef(default.score(), mean)[0, 1] < np.corrcoef(with_prior.score(), mean)[0, 1]


def test_ensemble_scores_are_member_means_plus_kappa_std() -> None:
    archs = _random_nb201(50, seed=5)
    rng = np.random.default_rng(6)
    metrics = rng.random((50, 3))
    truth = metrics @ np.array([1.0, -0.5, 0.2])
    pool = ArchPool([nb201_graph(a) for a in archs], metrics, ["m1", "m2", "m3"], archs)
    cfg = dict(**TINY, fit_steps=60, patience=20, max_restarts=1, ensemble=3)
    ranker = PONASRanker(PONASConfig(**cfg), seed=0)
    ranker.pretrain(pool)
    evaluated = {i: float(truth[i]) for i in range(12)}
    loss = ranker.fit(evaluated)
    ms = ranker.member_scores()
    assert ms.shape == (3, 50) and ms.min() >= 0 and ms.max() <= 1 + 1e-6
    assert not np.allclose(ms[0], ms[1])  # members start from different initialisations
    assert np.allclose(ranker.score(), ms.mean(0))
    assert ranker.weights().shape == (50, 3)
    assert loss == pytest.approx(ranker.last_fit_loss) and np.isfinite(loss)
    ranker.config.kappa = 2.0
    assert np.allclose(ranker.score(), ms.mean(0) + 2.0 * ms.std(0))
    # member 0 of an ensemble is the single-surrogate ranker (same seeds), so K=1 reproduces the paper setting
    single = PONASRanker(PONASConfig(**{**cfg, "ensemble": 1}), seed=0)
    single.pretrain(pool)
    single.fit(evaluated)
    assert np.allclose(single.score(), ms[0], atol=1e-6)


def test_failed_metrics_are_never_queried() -> None:
    """An architecture whose metric computation failed (non-finite) normalises to 0 on that metric; with a
    negative weight the score reads it as 1 - 0 = best, so the search must not propose it."""
    archs = _random_nb201(30, seed=7)
    rng = np.random.default_rng(8)
    metrics = rng.random((30, 2))
    metrics[[4, 11], 0] = np.nan
    metrics[[4, 11], 1] = 0.0  # at the floor of the other metric too: top score for any negative weights
    truth = -metrics[:, 1]  # accuracy falls with metric 2: the surrogate learns negative weights
    pool = ArchPool([nb201_graph(a) for a in archs], metrics, ["m1", "m2"], archs)
    assert pool.candidates.tolist() == [i not in (4, 11) for i in range(30)]
    assert pool.normalized[4, 0] == 0.0
    calls: list[int] = []
    ranker = PONASRanker(PONASConfig(**TINY, fit_steps=40, patience=10, max_restarts=1), seed=0)
    res = ranker.search(pool, lambda i: calls.append(i) or float(np.nan_to_num(truth[i])), budget=28)
    assert len(calls) == 28 and not {4, 11} & set(calls) and len(res.evaluated) == 28
    with pytest.raises(ValueError, match="queryable"):
        ranker.search(pool, lambda i: 0.0, budget=29)
