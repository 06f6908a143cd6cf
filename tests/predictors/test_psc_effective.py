"""Effective view of a graph for the GNN features: dead ``x * 0`` paths removed, equal computations equal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graphopt.predictors.gnn_features import default_op_vocab, effective_view, raw_features
from graphopt.predictors.nb201_dataset import build_nb201_ir
from graphopt.predictors.psc import PSCConfig, PSCPredictor, segment_parts

from graphopt.ir import DType, Graph, TensorType

VOCAB = default_op_vocab()


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("op", "res", "kernel", "bias", "edges"))


def dead_branch_graph(dead_op: str = "relu") -> Graph:
    """y = relu(x) + dead_op(x * 0): the second branch is constant (zero for relu)."""
    g = Graph("dead")
    x = g.add_input("x", TensorType(DType.float32, (1, 4, 8, 8)))
    live = g.create_node("relu", [x], name="live").output
    z = g.create_node("mul", [x, g.add_const("zero", np.array(0.0, np.float32))], name="zero").output
    dead = g.create_node(dead_op, [z], name="dead").output
    y = g.create_node("add", [live, dead], name="sum").output
    out = g.create_node("sigmoid", [y], name="out").output
    g.set_outputs([out])
    return g


def test_dead_branch_is_removed_and_add_forwards_the_live_operand():
    g = dead_branch_graph()
    view = effective_view(g)
    assert [n.name for n in view.nodes] == ["live", "out"]
    f = raw_features(g, VOCAB, effective=True)
    assert f.names == ["live", "out"]
    assert f.edges.tolist() == [[0], [1]]  # out reads live through the removed add
    # the full view keeps all five nodes
    assert raw_features(g, VOCAB).num_nodes == 5


def test_nonzero_constant_multiplier_is_live():
    g = Graph("scale")
    x = g.add_input("x", TensorType(DType.float32, (1, 4)))
    y = g.create_node("mul", [x, g.add_const("two", np.array(2.0, np.float32))], name="scale").output
    g.set_outputs([g.create_node("relu", [y], name="r").output])
    assert [n.name for n in effective_view(g).nodes] == ["scale", "r"]


def test_nb201_archs_differing_only_in_dead_ops_get_identical_features():
    # node 1 = none(x0), so whatever edge 1->2 and 1->3 carry is fed zeros: conv vs pool there is dead
    a = "|none~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_1x1~2|"
    b = "|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_1x1~2|"
    ga, gb = build_nb201_ir(a, C=8, N=1), build_nb201_ir(b, C=8, N=1)
    assert not _same(raw_features(ga, VOCAB), raw_features(gb, VOCAB))
    assert _same(raw_features(ga, VOCAB, effective=True), raw_features(gb, VOCAB, effective=True))
    # and a live difference still shows
    c = "|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    assert not _same(raw_features(ga, VOCAB, effective=True),
                     raw_features(build_nb201_ir(c, C=8, N=1), VOCAB, effective=True))


def test_nb201_cell_with_dead_output_collapses_to_one_node():
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|"
    f = raw_features(build_nb201_ir(arch, C=8, N=1), VOCAB, effective=True)
    assert f.num_nodes == 1 and f.edges.shape == (2, 0)
    assert VOCAB[f.op[0]] == "gemm"


def test_effective_features_of_the_real_torch_lowering_match_the_builder():
    frontend = pytest.importorskip("graphopt.frontends.torch")
    from graphopt import models

    arch = "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
    net = models.get("nb201", arch_str=arch, C=8, N=1).eval()
    ref = frontend.from_torch(net, (torch.zeros(1, 3, 32, 32),))
    fr, fm = raw_features(ref, VOCAB, effective=True), raw_features(build_nb201_ir(arch, C=8, N=1), VOCAB,
                                                                         effective=True)
    assert _same(fr, fm)
    assert fm.num_nodes < raw_features(ref, VOCAB).num_nodes


def test_segment_of_dead_nodes_scores_with_an_empty_segment_part():
    g = dead_branch_graph()
    view = effective_view(g)
    parts = segment_parts(g, ["dead", "zero"], view.nodes, ignore_missing=True)
    assert parts.tolist() == [0, 0]
    with pytest.raises(KeyError):
        segment_parts(g, ["dead"], view.nodes)
    pred = PSCPredictor(PSCConfig(effective=True, seg_lengths=[1], max_splits=4))
    pred.cfg.y_quantiles = list(np.linspace(10, 90, 257))
    assert np.isfinite(pred.score(g, ["dead"])) and np.isfinite(pred.score(g, ["live"]))
    # a segment with live and dead nodes: only the live ones form S
    assert segment_parts(g, ["live", "dead"], view.nodes, ignore_missing=True).tolist() == [1, 2]


def test_configs_saved_before_the_flag_load_as_full_view(tmp_path):
    pred = PSCPredictor(PSCConfig())
    pred.save(tmp_path / "p.pt")
    blob = torch.load(tmp_path / "p.pt", weights_only=True)
    assert blob["config"]["effective"] is True
    del blob["config"]["effective"]
    torch.save(blob, tmp_path / "old.pt")
    assert PSCPredictor.load(tmp_path / "old.pt").cfg.effective is False
    assert PSCPredictor.load(tmp_path / "p.pt").cfg.effective is True
