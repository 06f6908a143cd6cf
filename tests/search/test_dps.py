"""DPS: angle score, Pareto selection, stage scheduler, diversity, multi-path supernet through the IR."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from graphopt.backends.torch import to_torch
from graphopt.ir.verify import verify
from graphopt.search.dps import (
    FUSE,
    DPSHRNet,
    StageScheduler,
    angle,
    diverse,
    dps_path_graph,
    dps_search,
    hsic,
    pareto_front,
    random_path,
)
from graphopt.supernet import space_size

torch.set_num_threads(1)


def _path(op: str, width: float = 1.0, fuse: int = 0) -> dict:
    p = {f"op.{b}": op for b in range(3)} | {f"width.{b}": width for b in range(3)}
    return p | {f"fuse.{i}.{j}": fuse for i, j in FUSE}


def test_angle_zero_at_init_and_grows_only_for_trained_paths():
    torch.manual_seed(0)
    net = DPSHRNet()
    a, b = _path("conv3"), _path("dw5")
    w0a, w0b = net.path_weights(a), net.path_weights(b)
    assert angle(w0a, net.path_weights(a)) == 0.0 and angle(w0b, net.path_weights(b)) == 0.0
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 11, (4, 16, 16))
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x, a), y).backward()
        opt.step()
    assert angle(w0a, net.path_weights(a)) > 1e-4
    assert angle(w0b, net.path_weights(b)) == 0.0


def test_pareto_front_fixed_example():
    s = [[1, 5], [2, 4], [2, 3], [0, 6], [1, 4], [3, 1]]
    assert pareto_front(s) == [0, 1, 3, 5]
    assert pareto_front([[1.0], [3.0], [2.0], [3.0]]) == [1, 3]  # ties are not dominated


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=15))
def test_pareto_front_is_exactly_the_non_dominated_set(rows):
    front = set(pareto_front(rows))

    def dominates(a, b):
        return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))

    for i, r in enumerate(rows):
        assert (i in front) == (not any(dominates(o, r) for o in rows))


def test_stage_scheduler_fires_exactly_on_criterion():
    s = StageScheduler(tau_star=0.7)
    a = [0.1, 0.5, 0.3, 0.9, 0.7]
    assert s.stage == "S1"
    assert not s.observe(a, 1)  # first ranking: nothing to compare
    assert not s.observe(a[::-1], 2)  # tau = -1 (well, reversed values): no switch
    assert s.stage == "S1"
    assert s.observe([v + 1 for v in a[::-1]], 3)  # same ranking as the previous one: tau = 1 > 0.7
    assert s.stage == "S2" and s.history[-1]["step"] == 3 and s.history[-1]["tau"] == pytest.approx(1.0)
    assert not s.observe(a, 4)  # a new stage starts a new series
    assert not s.observe([0.1, 0.5, 0.9, 0.3, 0.7], 5)  # tau = 0.6 <= 0.7
    assert s.stage == "S2"
    assert s.observe([0.2, 0.6, 1.0, 0.4, 0.8], 6)
    assert s.stage == "S3"
    for k in range(3):  # the last stage never moves on
        assert not s.observe(a, 7 + k)
    assert [h["to"] for h in s.history] == ["S2", "S3"]


def test_diversity_rejects_duplicates_and_close_paths():
    rng = random.Random(0)
    p, q = random_path(rng), random_path(rng)
    assert diverse([p, dict(p), q], [0, 1, 2], delta=1) == [0, 2]
    close = dict(p)
    close["op.0"] = "dw3" if p["op.0"] != "dw3" else "conv3"
    assert diverse([p, close], [0, 1], delta=2) == [0]
    assert diverse([p, close], [0, 1], delta=1) == [0, 1]


def test_hsic_detects_dependence():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    noise = torch.randn(64, 4, generator=g)
    assert hsic(x, x) > 2 * hsic(x, noise)
    assert hsic(x, x + 0.1 * noise) > hsic(x, x + 2.0 * noise) > hsic(x, noise)
    # closed form (biased estimator, Gaussian kernel with median bandwidth) in numpy
    xn, yn = x.numpy().astype(np.float64), (x + noise).numpy().astype(np.float64)

    def k(a):
        d = ((a[:, None] - a[None]) ** 2).sum(-1)
        return np.exp(-d / np.median(d[d > 0]))

    n = 64
    h = np.eye(n) - 1 / n
    ref = np.trace(k(xn) @ h @ k(yn) @ h) / (n - 1) ** 2
    assert hsic(x, x + noise) == pytest.approx(ref, rel=1e-3)


def test_materialized_paths_verify_run_and_match_supernet():
    torch.manual_seed(0)
    net = DPSHRNet().eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 16, 16)
    rng = random.Random(0)
    for _ in range(4):
        p = random_path(rng)
        g = dps_path_graph(net, p, image_size=16)
        verify(g)
        assert not any(n.op == "choice" for n in g.nodes)
        torch.testing.assert_close(to_torch(g).eval()(x), net(x, p), rtol=1e-4, atol=1e-5)


def test_supernet_graph_space():
    from graphopt.search.dps import dps_supernet_graph

    assert space_size(dps_supernet_graph(DPSHRNet(), image_size=16)) == (4 * 2) ** 3 * 2**6


def test_dps_and_spos_tiny_search():
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 11, (4, 16, 16), generator=g))
            for _ in range(3)]
    it = iter(range(10**6))

    def nb():
        return data[next(it) % len(data)]

    torch.manual_seed(0)
    r = dps_search(DPSHRNet(), nb, data[:1], data[1:], steps=8, K=4, eval_every=2, n_probe=4, n_final=3,
                   tau_star=-1.0)  # criterion always fires once a ranking can be compared
    # probes ranked at steps 2, 4 (fires: S1 -> S2), 6 (new series), 8 (fires: S2 -> S3)
    assert [(h["step"], h["from"], h["to"]) for h in r.stages] == [(4, "S1", "S2"), (8, "S2", "S3")]
    torch.manual_seed(0)
    s = dps_search(DPSHRNet(), nb, data[:1], data[1:], strategy="spos", steps=10**6, update_budget=r.updates,
                   n_final=3)
    assert s.updates == r.updates and not s.stages
    graph = dps_path_graph(DPSHRNet(), r.path, image_size=16)
    verify(graph)
    assert to_torch(graph).eval()(torch.randn(1, 3, 16, 16)).shape == (1, 11, 16, 16)
    assert np.isfinite(r.val_miou)


def test_expand_dps_on_lowered_hrnet_lite():
    from graphopt import models
    from graphopt.frontends.torch import from_torch
    from graphopt.pass_api import get_pass
    from graphopt.supernet import materialize, sample_path, search_space

    torch.manual_seed(0)
    m = models.get("hrnet_lite", widths=(8, 16, 32), num_blocks=(1, 1, 1)).eval()
    x = torch.randn(1, 3, 32, 32)
    g = from_torch(m, (x,))
    rep = get_pass("expand-dps").fn(g)
    assert len(rep["blocks"]) == 6 and len(rep["fusions"]) == 8  # 1+2+3 branch blocks; 2 + 6 fusion adds
    verify(g)
    sp = search_space(g)
    assert space_size(g) == (4 * 2) ** 6 * 2**8
    # the original network is one path of the supernet, with its own weights
    orig = {k: ("conv3" if k.startswith("op.") else 1.0 if k.startswith("width.") else "1") for k in sp}
    torch.testing.assert_close(to_torch(materialize(g, orig)).eval()(x), m(x))
    for s in range(3):
        cg = materialize(g, sample_path(g, s))
        verify(cg)
        assert to_torch(cg).eval()(x).shape == (1, 11, 32, 32)
    # dropping every fusion removes the cross-branch adds
    no_fuse = {**orig, **{k: "0" for k in sp if k.startswith("fuse.")}}
    assert len(materialize(g, no_fuse)) < len(materialize(g, orig))
