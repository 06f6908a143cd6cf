"""PO-NAS as a screen in front of an evolutionary search: pool growth, the paper's warm-up rule, re-pretraining,
failed metrics, the IR-graph encoder input, and the evolution asking the screen which proposals to score."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from graphopt.predictors.ponas import PONASConfig, PONASScreen, ir_graph, nb201_graph
from scipy import stats

from graphopt.eval.store import ResultStore
from graphopt.ir import DType, Graph, TensorType
from graphopt.search.evolution import EvolutionConfig, ParetoEvolution

TINY = dict(hidden=16, heads=2, surrogate_dim=16, attn_heads=2, pretrain_epochs=3)
OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


def _archs(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out: set[str] = set()
    while len(out) < n:
        o = rng.integers(0, 5, 6)
        out.add(f"|{OPS[o[0]]}~0|+|{OPS[o[1]]}~0|{OPS[o[2]]}~1|+|{OPS[o[3]]}~0|{OPS[o[4]]}~1|{OPS[o[5]]}~2|")
    return sorted(out)


def _screen(metrics: dict[str, np.ndarray], **kw) -> PONASScreen:
    cfg = PONASConfig(**TINY, fit_steps=kw.pop("fit_steps", 60), patience=20, max_restarts=1)
    return PONASScreen(lambda a: metrics[a], ["m1", "m2", "m3"], key_fn=lambda a: a, graph_fn=nb201_graph,
                       config=cfg, **kw)


def test_before_n_init_values_the_ranking_is_the_mean_normalised_metric():
    archs = _archs(12, 0)
    raw = np.random.default_rng(0).random((12, 3))
    screen = _screen(dict(zip(archs, raw, strict=True)))
    screen.observe(archs[0], 0.5)
    screen.observe(archs[1], 0.6)  # 2 < n_init = 3 values: no surrogate yet
    order = screen.rank(archs)
    norm = (raw - raw.min(0)) / (raw.max(0) - raw.min(0))  # min-max over the pool, as the paper
    assert order == np.argsort(-norm.mean(1), kind="stable").tolist()
    assert screen.stats.pretrains == 0 and screen.stats.fits == 0


def test_surrogate_learns_which_metric_predicts_the_oracle():
    """The oracle is metric 2 (inverted) plus noise; after 16 observed archs the screen's scores of 40 unseen archs
    must rank them by that metric, while the mean normalised metric (the untrained rule) does not."""
    archs = _archs(56, 1)
    rng = np.random.default_rng(1)
    raw = rng.random((56, 3))
    truth = 1.0 - raw[:, 1] + 0.05 * rng.random(56)
    screen = _screen(dict(zip(archs, raw, strict=True)), fit_steps=300)
    for a, y in zip(archs[:16], truth[:16], strict=True):
        screen.observe(a, float(y))
    s = screen.scores(archs[16:])
    rho = stats.spearmanr(s, truth[16:])[0]
    rho_mean = stats.spearmanr(raw[16:].mean(1), truth[16:])[0]
    assert rho > 0.8 and rho > rho_mean + 0.3, (rho, rho_mean)
    assert screen.stats.pretrains == 1 and screen.stats.fits == 1
    screen.scores(archs[16:])  # nothing new: no refit
    assert screen.stats.fits == 1


def test_encoder_is_pretrained_again_when_the_pool_doubles():
    archs = _archs(40, 2)
    raw = np.random.default_rng(2).random((40, 3))
    screen = _screen(dict(zip(archs, raw, strict=True)))
    for a in archs[:4]:
        screen.observe(a, float(raw[archs.index(a), 0]))
    screen.rank(archs[4:7])  # pool 7: first pretraining
    assert (screen.stats.pretrains, screen.stats.pool) == (1, 7)
    screen.rank(archs[7:13])  # pool 13 < 14: same encoder, refit on the new normalisation
    assert screen.stats.pretrains == 1 and screen.stats.fits == 2
    screen.rank(archs[13:15])  # pool 15 >= 2 x 7
    assert screen.stats.pretrains == 2


def test_archs_with_a_failed_metric_rank_last_and_are_not_fitted_on():
    archs = _archs(10, 3)
    raw = np.random.default_rng(3).random((10, 3))
    raw[4, 2] = np.nan
    screen = _screen(dict(zip(archs, raw, strict=True)))
    screen.observe(archs[4], 1.0)  # a value for a failed arch does not count towards n_init
    for a in archs[:2]:
        screen.observe(a, 0.1)
    assert not screen.surrogate_ready
    screen.observe(archs[2], 0.2)
    assert screen.surrogate_ready
    order = screen.rank(archs[3:8])
    assert order[-1] == 1  # archs[4]
    assert np.isneginf(screen.scores([archs[4]])[0])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="oversample"):
        PONASScreen(lambda g: [0.0], ["m"], oversample=0)
    with pytest.raises(ValueError, match="n_init"):
        PONASScreen(lambda g: [0.0], ["m"], n_init=1)
    screen = PONASScreen(lambda a: [0.0, 1.0], ["m"], key_fn=lambda a: a, graph_fn=nb201_graph)
    with pytest.raises(ValueError, match="returned 2 values"):
        screen.observe(_archs(1, 0)[0], 0.5)


def _chain(ops: list[str], width: int = 4) -> Graph:
    g = Graph("toy")
    v = g.add_input("x", TensorType(DType.float32, (1, width)))
    for o in ops:
        v = g.create_node(o, [v]).output
    g.set_outputs([v])
    return g


def test_ir_graph_features_follow_the_canonical_order_and_edges():
    from graphopt.predictors.gnn_features import KERNEL_BUCKETS, default_op_vocab, raw_features

    g = _chain(["relu", "sigmoid", "relu"])
    d = ir_graph(g)
    vocab = default_op_vocab()
    f = raw_features(g, vocab)
    assert d.x.shape == (3, len(vocab) + 6 + KERNEL_BUCKETS + 1)
    assert torch.equal(d.edge_index, torch.from_numpy(f.edges)) and d.edge_index.tolist() == [[0, 1], [1, 2]]
    assert [vocab[i] for i in d.x[:, : len(vocab)].argmax(1).tolist()] == ["relu", "sigmoid", "relu"]
    assert torch.equal(d.x[:, -1], torch.from_numpy(f.bias))


class _FakeScreen:
    """Prefers graphs with more tanh nodes; records what it was asked and told."""

    oversample = 3

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.observed: list[tuple[str, float]] = []

    def rank(self, graphs):
        self.asked.append(len(graphs))
        key = [-sum(n.op == "tanh" for n in g.nodes) for g in graphs]
        return sorted(range(len(graphs)), key=lambda i: key[i])

    def observe(self, graph, score):
        from graphopt.ir.serialize import structure_hash

        self.observed.append((structure_hash(graph), score))


def test_evolution_scores_only_the_screens_choices(tmp_path):
    ops = ["relu", "sigmoid", "tanh"]

    def mutate(g, rng):
        new = [n.op for n in g.nodes]
        new[rng.randrange(len(new))] = rng.choice(ops)
        return _chain(new), []

    scored: list[Graph] = []

    def score(g, parent):
        scored.append(g)
        return {"score": float(sum(n.op == "relu" for n in g.nodes))}

    screen = _FakeScreen()
    store = ResultStore.open(tmp_path)
    evo = ParetoEvolution(mutate=mutate, score=score, cost=lambda g: 1.0, store=store, run_dir=tmp_path,
                          config=EvolutionConfig(iterations=2, parents_per_iter=1, mutants_per_parent=2, seed=0),
                          screen=screen)
    evo.run(_chain(["relu", "sigmoid", "sigmoid", "relu"]))
    st = evo.stats
    assert st["mutations"] == 2 * 1 * 2 * 3  # iterations x parents x mutants x oversample proposals
    assert st["scored"] == len(scored) == 1 + 2 * 2  # the seed, then mutants_per_parent per parent
    assert st["scored"] - 1 + st["screened_out"] + st["duplicates"] == st["mutations"]
    # every scored mutant was the screen's first choice among the proposals left at that moment
    assert screen.asked and all(n >= 1 for n in screen.asked)
    # the screen was told every score (the seed's at the start)
    assert [s for _, s in screen.observed] == [float(sum(n.op == "relu" for n in g.nodes)) for g in scored]
    tanh = [sum(n.op == "tanh" for n in g.nodes) for g in scored[1:]]
    assert max(tanh) >= 1  # the screen's preference reached the scored set
    store.close()


def test_evolution_without_a_screen_is_unchanged(tmp_path):
    """No screen: mutants are scored as they are proposed (same candidates as before the screen existed)."""
    ops = ["relu", "sigmoid", "tanh"]
    seen: list[str] = []

    def mutate(g, rng):
        new = [n.op for n in g.nodes]
        new[rng.randrange(len(new))] = rng.choice(ops)
        return _chain(new), []

    def score(g, parent):
        seen.append(",".join(n.op for n in g.nodes))
        return {"score": float(len(seen))}

    store = ResultStore.open(tmp_path)
    evo = ParetoEvolution(mutate=mutate, score=score, cost=lambda g: 1.0, store=store, run_dir=tmp_path,
                          config=EvolutionConfig(iterations=1, parents_per_iter=1, mutants_per_parent=3, seed=0))
    evo.run(_chain(["relu", "relu"]))
    rng = random.Random(0)
    rng.seed(0)
    expect, cur = [], ["relu", "relu"]
    for _ in range(3):
        new = list(cur)
        new[rng.randrange(2)] = rng.choice(ops)
        expect.append(",".join(new))
    assert seen[0] == "relu,relu"
    assert seen[1:] == [e for i, e in enumerate(expect) if e not in expect[:i] and e != "relu,relu"]
    assert evo.stats["screened_out"] == 0
    store.close()
