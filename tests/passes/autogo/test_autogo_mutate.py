"""AutoGO segment mutation: resolution propagation (integer program), instantiation, stitching, lineage."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from _helpers import GraphNet as Net
from _helpers import graph_resnet as resnet
from graphopt.passes.autogo import (
    SegmentDB,
    canonical_segment,
    graph_tokens,
    instantiate,
    mine,
    mutate,
    replace_segment,
    solve_resolution,
)

from graphopt.backends.torch import to_torch
from graphopt.ir import DType, Graph, IRError, TensorType, verify


# ---------------------------------------------------------------------------------------------- builders
def inception(name="incep", seed=0):
    """Branches concatenated on channels, pooling, depthwise conv and squeeze-excite (broadcast mul)."""
    b = Net(name, seed=seed)
    x = b.cbr(b.x, 16)
    for _ in range(2):
        a = b.cbr(x, 8, 1)
        c = b.cbr(b.cbr(x, 8, 1), 8, 3)
        x = b.op("concat", a, c, axis=1)
        d = b.op("relu", b.bn(b.conv(x, 16, 3, 1, group=16)))
        s = b.op("sigmoid", b.conv(b.op("global_avg_pool", d), 16, 1))
        x = b.op("max_pool", b.op("mul", d, s), kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    return b.head(x)


@pytest.fixture(scope="module")
def small_db():
    graphs = [resnet("r_a"), resnet("r_b", widths=(8, 16, 32)), inception("i_a"), resnet("r_c", widths=(16, 32))]
    vocab = mine(graphs, vocab_size=300)
    return SegmentDB.build(graphs, vocab), vocab


# ------------------------------------------------------------------------------------ resolution propagation
def _chain(shape=(2, 8, 16, 16)):
    """conv3x3 -> bn -> relu -> conv3x3 -> bn, 8 channels at 16x16 (as mined)."""
    b = Net("seg", shape)
    y = b.bn(b.conv(b.op("relu", b.bn(b.conv(b.x, 8))), 8))
    return b.done(y)


def test_resolution_finds_the_known_optimum():
    seg = _chain()
    a = solve_resolution(seg, [(8, 16, 16)], [(16, 8, 8)])
    assert a, a
    convs = [n for n in seg.nodes if n.op == "conv"]
    # Cheapest by the descendant-weighted objective: keep the first conv, let the last one halve H/W and double C
    # (changes: conv2 output 3*8 with weight 2, bn2 3*8 with weight 1 = 72).
    assert a.strides == {convs[0].name: 1, convs[1].name: 2}
    assert a.shapes[convs[0].outputs[0].name] == (8, 16, 16)
    assert a.shapes[convs[1].outputs[0].name] == (16, 8, 8)
    assert a.objective == pytest.approx(72.0)
    # Identity boundary: the mined shapes are optimal with zero change.
    same = solve_resolution(seg, [(8, 16, 16)], [(8, 16, 16)])
    assert same and same.objective == pytest.approx(0.0)
    # Quartering needs stride 4 somewhere or 2+2, and x4 channels needs both convs to double.
    q = solve_resolution(seg, [(2, 8, 16, 16)], [(2, 32, 4, 4)])
    assert q and q.shapes[convs[0].outputs[0].name][0] == 16 and q.shapes[convs[1].outputs[0].name][0] == 32
    assert q.strides[convs[0].name] * q.strides[convs[1].name] == 4


def test_resolution_concat_sums_channels_and_ceil_strides():
    b = Net("cat", (2, 8, 7, 7))
    y = b.op("concat", b.conv(b.x, 8, 1), b.bn(b.conv(b.x, 8, 3)), axis=1)
    seg = b.done(b.op("relu", y))
    a = solve_resolution(seg, [(8, 7, 7)], [(24, 4, 4)])  # 24 = 16 + 8 channels, 7 -> ceil(7/2) = 4
    assert a, a
    c1, c2 = [n for n in seg.nodes if n.op == "conv"]
    assert a.shapes[c1.outputs[0].name][0] + a.shapes[c2.outputs[0].name][0] == 24
    assert {a.strides[c1.name], a.strides[c2.name]} == {2}
    assert not solve_resolution(seg, [(8, 7, 7)], [(40, 7, 7)])  # 40 > 16 + 16
    assert not solve_resolution(seg, [(8, 7, 7)], [(16, 3, 3)])  # 7 -> 3 is no stride in {1, 2, 4}
    g = instantiate(seg, a, [TensorType(DType.float32, (2, 8, 7, 7))], np.random.default_rng(0))
    verify(g)
    out = to_torch(g)(torch.randn(2, 8, 7, 7))
    assert tuple(out.shape) == (2, 24, 4, 4)


def test_resolution_reports_infeasible_cases():
    seg = _chain()
    up = solve_resolution(seg, [(8, 16, 16)], [(8, 32, 32)])
    assert not up and "upsample" in up.reason
    too_wide = solve_resolution(seg, [(8, 16, 16)], [(64, 16, 16)])  # x8 > x2 * x2
    assert not too_wide and "HiGHS" in too_wide.reason
    odd = solve_resolution(seg, [(7, 16, 16)], [(3, 16, 16)])  # 7 -> 3 channels: no ratio of 2, 1, 1/2 twice
    assert not odd
    b = Net("rs", (2, 8, 4, 4))
    shape = b.g.add_const("shape", np.array([2, -1], dtype=np.int64))
    unsup = solve_resolution(b.done(b.op("reshape", b.op("relu", b.x), shape)), [(8, 4, 4)], [(8, 4, 4)])
    assert not unsup and "reshape" in unsup.reason
    b = Net("gp", (2, 8, 4, 4))
    gp = solve_resolution(b.done(b.op("global_avg_pool", b.x)), [(8, 4, 4)], [(8, 2, 2)])
    assert not gp and "global pooling" in gp.reason


def test_instantiated_segment_runs_with_new_shapes():
    seg = _chain()
    a = solve_resolution(seg, [(8, 16, 16)], [(16, 8, 8)])
    g = instantiate(seg, a, [TensorType(DType.float32, (3, 8, 16, 16))], np.random.default_rng(0))
    verify(g)
    y = to_torch(g).eval()(torch.randn(3, 8, 16, 16))
    assert tuple(y.shape) == (3, 16, 8, 8)
    w = [v for v in g.constants.values() if v.shape == (16, 8, 3, 3)]
    assert w and 0.05 < float(np.std(w[0].const)) < 0.2  # Kaiming fan_out: sqrt(2 / (16*9)) = 0.118


# -------------------------------------------------------------------------------------------------- mutation
def _forbidden(g: Graph) -> set[str]:
    ins = {id(v) for v in g.inputs}
    outs = {id(v) for v in g.outputs}
    gap = [n for n in g.nodes if n.op == "global_avg_pool"][-1]  # the head's pooling (SE blocks may mutate)
    bad = {gap.name} | {n.name for n in g.nodes if n.op in ("flatten", "gemm")}
    bad |= {n.name for n in g.nodes if any(v is not None and id(v) in ins for v in n.inputs)}
    bad |= {n.name for n in g.nodes if any(id(o) in outs for o in n.outputs)}
    return bad


@pytest.mark.parametrize("parent_name", ["resnet", "inception"])
def test_mutants_verify_run_and_keep_the_output_shape(small_db, parent_name):
    db, vocab = small_db
    parent = resnet("parent", widths=(8, 16)) if parent_name == "resnet" else inception("parent", seed=5)
    x = torch.randn(2, 3, 16, 16)
    ref_shape = tuple(to_torch(parent).eval()(x).shape)
    params = {v.name: v.const for v in parent.constants.values()}
    fits, ok = set(), 0
    for seed in range(8):
        reasons: list[str] = []
        m = mutate(parent, db, vocab, np.random.default_rng(seed), reasons=reasons)
        if m is None:
            assert reasons  # a failed mutation says why
            continue
        ok += 1
        child, rec = m.graph, m.mutation
        verify(child)  # full re-inference of every node
        assert tuple(to_torch(child).eval()(x).shape) == ref_shape
        assert not set(rec.source_nodes) & _forbidden(parent)
        assert rec.source_nodes == [n for s in rec.source_segments for n in s] or sorted(rec.source_nodes) == sorted(
            n for s in rec.source_segments for n in s)
        assert 1 <= len(rec.source_segments) <= 3
        assert db.get(rec.db_segment).ops == rec.db_ops
        assert rec.fit in ("exact", "propagated")
        fits.add(rec.fit)
        new = [n for n in child.nodes if "provenance" in n.meta]
        assert [n.name for n in new] == rec.new_nodes or sorted(n.name for n in new) == sorted(rec.new_nodes)
        assert all(n.meta["provenance"]["db_segment"] == rec.db_segment for n in new)
        for name in rec.carried:  # carried weights are the parent's arrays under the parent's names
            assert np.array_equal(child.constants[name].const, params[name])
        names = {n.name for n in child.nodes}
        kept = [n for n in parent.nodes if n.name not in rec.source_nodes]
        assert all(n.name in names for n in kept)
        assert parent.meta.get("autogo_mutations") is None and child.meta["autogo_mutations"] == 1
        assert rec.flops_after is not None and rec.flops_before is not None
    assert ok >= 4, f"only {ok}/8 mutations succeeded"
    assert "propagated" in fits


def test_mutation_is_reproducible_and_accepts_stdlib_rng(small_db):
    db, vocab = small_db
    parent = resnet("parent")
    a = mutate(parent, db, vocab, np.random.default_rng(7))
    b = mutate(parent, db, vocab, np.random.default_rng(7))
    assert a is not None and b is not None
    ja, jb = a.mutation.to_json(), b.mutation.to_json()
    ja.pop("solve_s"), jb.pop("solve_s")
    assert ja == jb
    assert [n.op for n in a.graph.nodes] == [n.op for n in b.graph.nodes]
    c = mutate(parent, db, vocab, random.Random(3))
    assert c is None or isinstance(c.lineage, dict)


def test_chained_mutations_keep_verifying(small_db):
    db, vocab = small_db
    g = resnet("parent")
    rng = np.random.default_rng(11)
    done = 0
    for _ in range(6):
        m = mutate(g, db, vocab, rng)
        if m is not None:
            g = m.graph
            done += 1
    assert done >= 3
    verify(g)
    assert g.meta["autogo_mutations"] == done
    assert tuple(to_torch(g).eval()(torch.randn(2, 3, 16, 16)).shape) == (2, 10)
    tags = {n.meta["provenance"]["mutation"] for n in g.nodes if "provenance" in n.meta}
    assert len(tags) >= 2


def test_replace_segment_rejects_cycles_and_bad_boundaries():
    g = resnet("p")
    nodes, _ = graph_tokens(g)
    # conv + (skip its bn) + relu: not convex, the bn would have to run both before and after the replacement.
    i = [k for k, n in enumerate(nodes) if n.op == "conv"][1]
    conv, bn, relu = nodes[i:i + 3]
    assert (conv.op, bn.op, relu.op) == ("conv", "batch_norm", "relu")
    cs = canonical_segment(g, [conv, relu])
    rep_in = [v.type for v in cs.inputs]
    b = Graph("rep")
    ins = [b.add_input(f"i{k}", t) for k, t in enumerate(rep_in)]
    outs = [b.create_node("relu", [ins[-1]], name="r").output, b.create_node("identity", [ins[0]], name="c").output]
    by_shape = {}
    for o in outs:
        by_shape.setdefault(o.type, []).append(o)
    b.set_outputs([by_shape[v.type].pop(0) for v in cs.outputs])
    with pytest.raises(IRError, match="cycle"):
        replace_segment(g, [conv, relu], b)
    # Wrong output count
    c = Graph("rep2")
    c.set_outputs([c.create_node("relu", [c.add_input("i", rep_in[0])], name="r").output] * 0)
    with pytest.raises(IRError, match="outputs"):
        replace_segment(g, [conv, bn, relu], c)


def test_zoo_resnet20_with_shipped_database():
    pytest.importorskip("graphopt.frontends.torch")
    from graphopt.passes.autogo import default_db_path, load_default_db

    from graphopt import models
    from graphopt.frontends.torch import from_torch

    if not default_db_path().exists():
        pytest.skip("shipped segment database not built yet")
    db, vocab = load_default_db()
    net = models.get("resnet20", seed=0).eval()
    (x,) = models.example_inputs("resnet20", batch=2)
    parent = from_torch(net, (x,))
    rng = np.random.default_rng(0)
    ok = 0
    for _ in range(6):
        m = mutate(parent, db, vocab, rng)
        if m is None:
            continue
        ok += 1
        verify(m.graph)
        y = to_torch(m.graph).eval()(x)
        assert tuple(y.shape) == (2, 10)
    assert ok >= 4


# ------------------------------------------------------------------------------------- token sequences
class _MLP(torch.nn.Module):
    """A transformer MLP block on (N, L, C) tokens: LayerNorm, Linear C->4C, GELU, Linear 4C->C, residual."""

    def __init__(self, c: int = 192, hidden: int = 768) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(c)
        self.fc1, self.fc2 = torch.nn.Linear(c, hidden), torch.nn.Linear(hidden, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x))))


def _token_segment(c: int = 192, hidden: int = 768, L: int = 65) -> Graph:
    from graphopt.frontends.torch import from_torch

    torch.manual_seed(0)
    return from_torch(_MLP(c, hidden).eval(), (torch.randn(2, L, c),))


def test_token_segment_resolution_finds_the_known_optimum_and_runs():
    """An MLP block mined at width 192 (hidden 768) fitted between width-256 tokens: the hidden width that
    changes least from 768 within {2x, 1x, 1/2x} of 256 is 512, and the instantiated block runs."""
    from graphopt.passes.autogo import propagatable
    from graphopt.passes.autogo.resolution import is_token_segment

    seg = _token_segment()
    assert is_token_segment(seg) and propagatable(seg) is True
    a = solve_resolution(seg, [(65, 256)], [(65, 256)])
    assert a, a
    fc1 = next(n for n in seg.nodes if n.op == "matmul")
    assert a.shapes[fc1.outputs[0].name] == (512, 65, 1)
    assert all(s[1] == 65 and s[2] == 1 for s in a.shapes.values())  # tokens are never resampled
    rep = instantiate(seg, a, [TensorType(DType.float32, (3, 65, 256))], np.random.default_rng(0))
    verify(rep)
    x = torch.randn(3, 65, 256)
    y = to_torch(rep).eval()(x)
    assert tuple(y.shape) == (3, 65, 256) and torch.isfinite(y).all()
    weights = {v.name: v.const for v in rep.constants.values() if v.const.ndim == 2}
    assert sorted(w.shape for w in weights.values()) == [(256, 512), (512, 256)]
    for w in weights.values():  # nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), not zeros
        bound = 1 / np.sqrt(w.shape[1])
        assert 0.3 * bound < np.abs(w).max() <= bound
    assert not np.allclose(y.detach().numpy(), x.numpy())  # the new weights do something


def test_token_segment_reports_infeasible_and_unsupported_cases():
    from graphopt.passes.autogo import propagatable

    from graphopt.frontends.torch import from_torch

    seg = _token_segment()
    bad = solve_resolution(seg, [(65, 256)], [(33, 256)])  # tokens cannot be dropped by a linear block
    assert not bad and "no per-node L/C assignment maps inputs [(65, 256)] to outputs [(33, 256)]" in bad.reason

    class Attn(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x @ x.transpose(1, 2), -1) @ x

    att = from_torch(Attn().eval(), (torch.randn(2, 65, 64),))
    why = propagatable(att)
    assert isinstance(why, str) and "not supported by resolution propagation on tokens" in why


def test_nlc_values_mark_tokens_but_not_conv1d_channels():
    from graphopt.passes.autogo.resolution import nlc_values

    from graphopt.frontends.torch import from_torch

    class Mixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(16, 16)
            self.conv = torch.nn.Conv1d(16, 16, 3, padding=1)

        def forward(self, x):  # x: (N, L, C) tokens; the conv sees (N, C, L)
            h = torch.relu(self.fc(x))
            return torch.relu(self.conv(h.transpose(1, 2)))

    g = from_torch(Mixed().eval(), (torch.randn(2, 10, 16),))
    marked = nlc_values(g)
    by_op = {n.op: n for n in g.nodes}
    assert id(by_op["matmul"].outputs[0]) in marked  # the linear layer's output
    assert id(g.nodes[[n.op for n in g.nodes].index("relu")].outputs[0]) in marked  # through the activation
    conv = by_op["conv"]
    assert id(conv.inputs[0]) not in marked and id(conv.outputs[0]) not in marked
    assert not any(id(o) in marked for o in g.outputs)  # relu after the conv is (N, C, L)


def test_vit_mutants_fit_token_segments_and_keep_linear_layers_whole():
    """On the zoo ViT with the shipped database, some mutants replace an MLP-like run by a token segment fitted
    by propagation; every mutant verifies and runs, and no source splits a linear layer from its weight."""
    from graphopt.passes.autogo import default_db_path, load_default_db

    from graphopt import models
    from graphopt.frontends.torch import from_torch

    if not default_db_path().exists():
        pytest.skip("shipped segment database not built yet")
    db, vocab = load_default_db()
    net = models.get("vit_tiny", seed=0).eval()
    (x,) = models.example_inputs("vit_tiny", batch=2)
    parent = from_torch(net, (x,))
    producers = {o.name: n for n in parent.nodes for o in n.outputs}
    rng = np.random.default_rng(0)
    fits = []
    for _ in range(12):
        m = mutate(parent, db, vocab, rng)
        if m is None:
            continue
        verify(m.graph)
        assert tuple(to_torch(m.graph).eval()(x).shape) == (2, 10)
        fits.append(m.mutation.fit)
        src = set(m.mutation.source_nodes)
        for name in src:  # a replaced matmul's weight transpose was replaced with it
            n = next(n for n in parent.nodes if n.name == name)
            if n.op == "matmul" and n.inputs[1].producer is not None and n.inputs[1].producer.op == "transpose":
                assert producers[n.inputs[1].name].name in src
    assert len(fits) >= 8 and fits.count("propagated") >= 4, fits
