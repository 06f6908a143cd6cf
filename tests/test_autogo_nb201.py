"""NB201-restricted AutoGO mutation, IR → arch-string mapping, table lookup and the search loop of
``benchmarks/autogo_nb201.py``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmod import benchmark_module
from graphopt.passes.autogo.nb201_space import (
    NB201Space,
    NotNB201,
    arch_ops,
    arch_string,
    graph_to_arch,
    parse_nb201,
)
from graphopt.predictors.gnn_features import default_op_vocab, raw_features
from graphopt.predictors.nb201_dataset import DEFAULT_LABELS, build_nb201_ir

from graphopt.ir import DType, Graph, TensorType, verify
from graphopt.ir.serialize import structure_hash

ROOT = Path(__file__).resolve().parents[1]
ARCH = "|nor_conv_1x1~0|+|avg_pool_3x3~0|none~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|"

pytestmark = pytest.mark.skipif(not DEFAULT_LABELS.exists(), reason="shared NB201 data not available")


@pytest.fixture(scope="module")
def space() -> NB201Space:
    return NB201Space()


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("autogo_nb201.py", "autogo_nb201_bench") as mod:
        yield mod


def _same_features(a: Graph, b: Graph) -> bool:
    fa, fb = raw_features(a, default_op_vocab()), raw_features(b, default_op_vocab())
    return all(np.array_equal(getattr(fa, k), getattr(fb, k)) for k in ("op", "res", "kernel", "bias", "edges"))


@pytest.mark.parametrize("arch", [
    ARCH,
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|nor_conv_3x3~0|skip_connect~1|avg_pool_3x3~2|",
])
def test_builder_graphs_map_back_to_their_arch(arch: str) -> None:
    assert arch_string(arch_ops(arch)) == arch
    cells = parse_nb201(build_nb201_ir(arch, N=2))
    assert len(cells) == 6 and all(c.arch == arch for c in cells)


def test_mutation_verifies_and_maps_back(space: NB201Space) -> None:
    rng = np.random.default_rng(0)
    g = build_nb201_ir(ARCH)
    seen = set()
    for _ in range(6):
        m = space.mutate(g, rng)
        verify(m.graph, check_types=True)  # full re-inference of every node's shape
        assert m.arch == graph_to_arch(m.graph) and m.arch != m.parent_arch
        arch_ops(m.arch)  # a valid NB201 string
        changed = [e for e, a, b in zip(range(6), arch_ops(m.parent_arch), arch_ops(m.arch), strict=True) if a != b]
        assert 1 <= len(changed) <= 3 and max(changed) - min(changed) < 3  # a run of 1-3 consecutive edges
        ref = build_nb201_ir(m.arch)  # the same network as the table's arch: structure and PSC features
        assert structure_hash(m.graph) == structure_hash(ref)
        assert _same_features(m.graph, ref)
        assert m.graph.outputs[0].type == g.outputs[0].type
        seen.add(m.arch)
        g = m.graph  # chain: mutate the mutant
    assert len(seen) >= 3


def test_mutation_runs_the_graph(space: NB201Space) -> None:
    from graphopt.backends.torch import to_torch

    g = build_nb201_ir(ARCH, N=1)
    m = space.mutate(g, np.random.default_rng(3))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = to_torch(m.graph)(x)
    y = y[0] if isinstance(y, (tuple, list)) else y
    assert tuple(y.shape) == (2, 10) and torch.isfinite(y).all()


def test_non_nb201_graphs_are_rejected(space: NB201Space) -> None:
    g = build_nb201_ir(ARCH, N=2)
    cells = parse_nb201(g)
    ops = dict(zip([(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)], ["nor_conv_3x3"] * 6, strict=True))
    one_cell, _ = space._rebuild(g, cells[:1], ops, np.random.default_rng(0))  # only cell 0 changes
    with pytest.raises(NotNB201, match="different genotypes"):
        graph_to_arch(one_cell)
    small = Graph("tiny")
    x = small.add_input("x", TensorType(DType.float32, (1, 3, 8, 8)))
    y = small.create_node("relu", [x]).outputs[0]
    small.set_outputs([y])
    with pytest.raises(NotNB201, match="stem"):
        graph_to_arch(small)


def test_table_reads_validation_for_search_and_test_for_report(bench) -> None:
    with DEFAULT_LABELS.open(newline="") as fh:
        test_rows = [r for _, r in zip(range(3), csv.DictReader(fh), strict=False)]
    with bench.VALID_CSV.open(newline="") as fh:
        val_rows = {r["arch_str"]: r for r in csv.DictReader(fh)}
    table = bench.NB201Table.load()
    for r in test_rows:
        a = r["ArchitectureString"]
        assert table.test_accuracy(a) == pytest.approx(float(r["CIFAR10TestAccuracy200Epochs"]), abs=1e-4)
        assert table.validation(a) == pytest.approx(float(val_rows[a]["c10valid_hp12_valacc"]), abs=1e-6)
        assert table.cost[a] == pytest.approx(float(val_rows[a]["c10valid_hp12_cost_s"]))
    vals = np.sort(np.array(list(table.val.values())))
    assert table.validation(table.median_arch()) == pytest.approx(vals[len(vals) // 2])
    with pytest.raises(KeyError, match="not an NB201"):
        table.validation("|conv~0|")


class _NoTest:
    """A table whose test accuracies raise: a search that reads them fails the test."""

    def __init__(self, table) -> None:
        self.t = table

    def __getattr__(self, k):
        if k in ("test_accuracy", "_test"):
            raise AssertionError("a search read the test table")
        return getattr(self.t, k)


@pytest.fixture(scope="module")
def table(bench):
    return bench.NB201Table.load()


def test_oracle_counts_distinct_queries_and_charges_time(bench, table) -> None:
    o = bench.Oracle(table)
    a, b = ARCH, "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    assert o(a) == table.validation(a) and o(a) == table.validation(a) and o(b) == table.validation(b)
    assert o.queries == [a, b] and len(o) == 2 and o.evaluations == 3
    assert o.time_s == pytest.approx(table.cost[a] + table.cost[b])
    timed = bench.Oracle(table, charge_repeats=True)
    timed(a), timed(a)
    assert len(timed) == 1 and timed.time_s == pytest.approx(2 * table.cost[a])
    with pytest.raises(ValueError, match="may not be queried"):
        bench.Oracle(table, forbidden={a})(a)


def test_selection_is_by_validation_and_reports_test(bench, table) -> None:
    # two archs whose validation and test orders disagree: the answer follows validation
    archs = sorted(table.archs, key=table.validation)[-400:]
    a, b = next((x, y) for x in archs for y in archs if table.validation(x) > table.validation(y)
                and table.test_accuracy(x) < table.test_accuracy(y))
    o = bench.Oracle(table)
    o(b), o(a)
    traj = bench.selection_trajectory(o, table)
    assert traj["selected"] == [b, a] and traj["test"][-1] == table.test_accuracy(a)
    assert traj["val"] == [table.validation(b), table.validation(a)]


@pytest.mark.parametrize("method", ["rea", "random_search"])
def test_baselines_spend_the_query_budget_without_reading_test(bench, table, method) -> None:
    fn = getattr(bench, method)
    o = bench.Oracle(_NoTest(table))
    fn(o, seed=3, budget=25)
    assert len(o) == 25 and len(set(o.queries)) == 25
    again = bench.Oracle(_NoTest(table))
    fn(again, seed=3, budget=25)
    assert again.queries == o.queries  # seeded
    timed = bench.Oracle(_NoTest(table), charge_repeats=True)
    fn(timed, seed=0, time_budget=2000.0)
    last = timed.queries[-1]
    assert 2000.0 <= timed.time_s < 2000.0 + table.cost[last] + max(table.cost.values())


def test_rea_mutation_changes_exactly_one_edge(bench) -> None:
    import random

    rng = random.Random(0)
    for _ in range(20):
        child = bench._mutate_one_edge(ARCH, rng)
        assert sum(x != y for x, y in zip(arch_ops(ARCH), arch_ops(child), strict=True)) == 1


def test_few_query_search_never_queries_twice(bench, space: NB201Space, table) -> None:
    from graphopt.predictors.psc import PSCPredictor, default_weights_path

    torch.set_num_threads(1)
    pred = PSCPredictor.load(default_weights_path())
    mut = bench.Mutator(space, list(pred.cfg.vocab))
    ranker = bench.fixed_ranker("fixed", pred, mut, {}, {})
    forbidden = {"|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|"}
    oracle = bench.Oracle(_NoTest(table), forbidden=forbidden)
    bench.search(ARCH, oracle, mut, ranker, seed=0, budget=9, parents=2, proposals=6, batch=4)
    q = oracle.queries
    assert len(q) == 9 and len(set(q)) == 9 and q[0] == ARCH and not forbidden & set(q)
    assert [oracle.answers[a] for a in q] == [table.validation(a) for a in q]
    assert mut.built >= 4 and all(a in mut.feats for a in q[1:])


def test_online_ranker_trains_only_on_queried_archs(bench, space: NB201Space, table) -> None:
    torch.set_num_threads(1)
    mut = bench.Mutator(space, default_op_vocab())
    timing: dict = {}
    ranker = bench.online_ranker(mut, None, every=4, steps=8, seed=0, timing=timing)
    seen: list[int] = []
    update = ranker.update
    ranker.update = lambda q: (seen.append(len(q)), update(q))[1]
    oracle = bench.Oracle(_NoTest(table))
    bench.search(ARCH, oracle, mut, ranker, seed=1, budget=10, parents=2, proposals=5, batch=3)
    assert len(set(oracle.queries)) == 10 and oracle.queries[0] == ARCH
    assert timing["retrains"] >= 1 and max(seen) <= 10  # the start arch (never a mutant) has features too
