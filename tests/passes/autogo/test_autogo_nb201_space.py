"""NB201-restricted AutoGO mutation and the IR -> arch-string mapping (passes/autogo/nb201_space.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graphopt.passes.autogo.nb201_space import NB201Space, NotNB201, arch_ops, arch_string, graph_to_arch, parse_nb201
from graphopt.predictors.gnn_features import default_op_vocab, raw_features
from graphopt.predictors.nb201_dataset import DEFAULT_LABELS, build_nb201_ir

from graphopt.ir import DType, Graph, TensorType, verify
from graphopt.ir.serialize import structure_hash

ARCH = "|nor_conv_1x1~0|+|avg_pool_3x3~0|none~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|"

pytestmark = pytest.mark.skipif(not DEFAULT_LABELS.exists(), reason="shared NB201 data not available")


@pytest.fixture(scope="module")
def space() -> NB201Space:
    return NB201Space()


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
