"""The class-disjoint NB201 split of ``benchmarks/psc_nb201.py``: equivalent cells share a class, and no class (so
no architecture with an equivalent effective cell) is on two sides of the split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from benchmod import benchmark_module
from graphopt.predictors.gnn_features import PackedGraphs, default_op_vocab, raw_features
from graphopt.predictors.nb201_dataset import DEFAULT_LABELS, build_nb201_ir, load_nb201_labels

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("psc_nb201.py", "psc_nb201_bench") as mod:
        yield mod


# (a, b): the same effective cell written two ways
EQUIVALENT = [
    # a dead conv: node 2 is fed only by none edges, so 2->3 computes nothing that reaches the output
    ("|skip_connect~0|+|none~0|none~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
     "|skip_connect~0|+|none~0|none~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"),
    # nodes 1 and 2 relabelled (no 1->2 edge)
    ("|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|nor_conv_1x1~1|skip_connect~2|",
     "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|skip_connect~1|nor_conv_1x1~2|"),
    # an edge out of a node that never reaches the output is dead whatever its op
    ("|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|nor_conv_3x3~0|none~1|none~2|",
     "|nor_conv_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|nor_conv_3x3~0|none~1|none~2|"),
]
DIFFERENT = [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
     "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"),
    ("|skip_connect~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|",
     "|skip_connect~0|+|none~0|none~1|+|none~0|nor_conv_1x1~1|none~2|"),
]


@pytest.mark.parametrize("a,b", EQUIVALENT)
def test_equivalent_cells_share_a_class(bench, a, b):
    assert bench.cell_class(a) == bench.cell_class(b)


@pytest.mark.parametrize("a,b", DIFFERENT)
def test_different_cells_do_not(bench, a, b):
    assert bench.cell_class(a) != bench.cell_class(b)


def test_dead_edges_leave_the_effective_features_unchanged(bench):
    """Cells that differ only in dead edges give the predictor identical effective-graph features; relabelled
    cells need not (the IR sums a node's inputs in source order), which is why the classes are the union of both
    keys."""
    vocab = default_op_vocab()
    archs = [x for pair in EQUIVALENT + DIFFERENT for x in pair]
    feats = [raw_features(build_nb201_ir(x, N=1), vocab, effective=True) for x in archs]
    keys = bench.feature_keys(PackedGraphs.from_features(feats, np.zeros(len(archs)), vocab, archs))
    for k in (0, 2):
        assert keys[2 * k] == keys[2 * k + 1], EQUIVALENT[k]
    for k in range(len(EQUIVALENT), len(archs) // 2):
        assert keys[2 * k] != keys[2 * k + 1]
    classes = bench.equivalence_classes(archs, keys)
    assert len({classes[2 * k] for k in range(len(EQUIVALENT))} | {classes[2 * k + 1] for k in range(3)}) == 3


def test_union_merges_either_key(bench):
    archs = [EQUIVALENT[0][0], EQUIVALENT[1][0], DIFFERENT[0][0]]
    classes = bench.equivalence_classes(archs, ["f0", "f1", "f0"])  # archs 0 and 2 share a feature key
    assert classes[0] == classes[2] != classes[1]


@pytest.mark.skipif(not DEFAULT_LABELS.exists(), reason="shared NB201 data not available")
def test_split_of_all_nb201_is_class_disjoint(bench):
    archs, _ = load_nb201_labels()
    classes = bench.equivalence_classes(archs)
    test, val, train = bench.class_split(classes, (0.2, 0.15), seed=0)
    assert len(test) + len(val) + len(train) == len(archs)
    assert len(set(test.tolist()) | set(val.tolist()) | set(train.tolist())) == len(archs)
    sides = [set(classes[p].tolist()) for p in (test, val, train)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    keys = [bench.cell_class(a) for a in archs]  # no held-out arch has an equivalent cell in training
    train_keys = {keys[i] for i in train}
    assert not any(keys[i] in train_keys for i in test)
    assert 0.2 <= len(test) / len(archs) < 0.21 and 0.15 <= len(val) / (len(archs) - len(test)) < 0.16
    # the old random split did leak: most held-out archs had an equivalent in training
    perm = np.random.default_rng(0).permutation(len(archs))
    old_train = {keys[i] for i in perm[:-3125]}
    assert sum(keys[i] in old_train for i in perm[-3125:]) > 1000
    again = bench.class_split(classes, (0.2, 0.15), seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(again, (test, val, train), strict=True))
