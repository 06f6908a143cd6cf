"""The table lookup and the search loop of ``benchmarks/autogo_nb201.py``: a search reads validation accuracies,
reports test accuracies and never queries an arch twice; the baselines spend the query budget."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from benchmod import benchmark_module
from graphopt.passes.autogo.nb201_space import NB201Space, arch_ops
from graphopt.predictors.gnn_features import default_op_vocab
from graphopt.predictors.nb201_dataset import DEFAULT_LABELS

ARCH = "|nor_conv_1x1~0|+|avg_pool_3x3~0|none~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|"

pytestmark = pytest.mark.skipif(not DEFAULT_LABELS.exists(), reason="shared NB201 data not available")


@pytest.fixture(scope="module")
def space() -> NB201Space:
    return NB201Space()


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("autogo_nb201.py", "autogo_nb201_bench") as mod:
        yield mod


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
