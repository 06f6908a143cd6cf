"""S3: E-T error, space evolution direction/threshold, weight entanglement, elastic ViT paths through the IR."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphopt.backends.torch import to_torch
from graphopt.ir.cost import graph_cost
from graphopt.ir.verify import verify
from graphopt.pass_api import PassError, get_pass
from graphopt.search.s3 import (
    DIMS,
    ElasticViT,
    config,
    et_error,
    evolutionary_search,
    evolve_space,
    fit_slope,
    s3_search,
    s3_supernet_graph,
    vit_params,
)
from graphopt.supernet import materialize, nb201_graph, search_space

torch.set_num_threads(1)
SPACE = {"depth": [1, 2, 3], "embed": [16, 24, 32], "mlp_ratio": [1.0, 2.0], "heads": [1, 2]}
BOUNDS = {"depth": (1, 6), "embed": (8, 64), "mlp_ratio": (0.5, 4.0), "heads": (1, 4)}
GAMMA = {"depth": 1, "embed": 8, "mlp_ratio": 0.5, "heads": 1}


def test_et_error_on_fixed_errors():
    q, q_e, q_t = et_error([0.5, 0.1, 0.3, 0.2, 0.4], top_k=2)
    assert q_e == pytest.approx(0.3) and q_t == pytest.approx(0.15) and q == pytest.approx(0.225)
    assert et_error([0.4], top_k=50) == pytest.approx((0.4, 0.4, 0.4))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=40), st.integers(1, 60))
def test_et_error_properties(errs, k):
    q, q_e, q_t = et_error(errs, k)
    assert q_t <= q_e + 1e-12
    assert q == pytest.approx(0.5 * (q_e + q_t))


def test_space_shifts_toward_lower_error_by_gamma():
    # synthetic error falls linearly in depth (slope -0.05 per block) and ignores the other dims
    err = lambda c: 0.9 - 0.05 * c["depth"]
    tau = {k: 0.01 for k in DIMS}
    log = evolve_space(SPACE, err, max_depth=6, bounds=BOUNDS, gamma=GAMMA, tau=tau, n_samples=4, top_k=2)
    assert log.per_dim["depth"]["w"] == pytest.approx(-0.05)
    assert log.space_after["depth"] == [2, 3, 4]
    for d in ("embed", "mlp_ratio", "heads"):
        assert log.space_after[d] == SPACE[d]
    # same slope, but under the threshold: nothing moves
    log2 = evolve_space(SPACE, err, max_depth=6, bounds=BOUNDS, gamma=GAMMA, tau={k: 0.06 for k in DIMS},
                        n_samples=4, top_k=2)
    assert log2.space_after == SPACE
    # error rising with embed: embed moves down by gamma; clipping at the bound shrinks the dimension
    err2 = lambda c: 0.1 + 0.01 * c["embed"]
    log3 = evolve_space({**SPACE, "depth": [4, 5, 6]}, lambda c: err2(c) - 0.05 * c["depth"], max_depth=6,
                        bounds=BOUNDS, gamma=GAMMA, tau=tau, n_samples=2, top_k=1)
    assert log3.space_after["embed"] == [8, 16, 24]
    assert log3.space_after["depth"] == [5, 6]


def test_fit_slope_closed_form():
    w, b = fit_slope([1, 2, 3, 4], [3.0, 5.0, 7.0, 9.0])
    assert w == pytest.approx(2.0) and b == pytest.approx(1.0)
    assert fit_slope([2], [0.3]) == (0.0, 0.3)


def _net() -> ElasticViT:
    torch.manual_seed(0)
    return ElasticViT(max_embed=32, max_depth=3, max_heads=2, max_mlp_ratio=2.0, head_dim=8, img_size=8, patch=4)


def test_subnet_update_touches_only_its_slice():
    net = _net()
    cfg = {"depth": 2, "embed": 16, "heads.0": 1, "heads.1": 2, "heads.2": 2,
           "mlp_ratio.0": 1.0, "mlp_ratio.1": 2.0, "mlp_ratio.2": 2.0}
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    torch.nn.functional.cross_entropy(net(x, cfg), y).backward()
    opt.step()
    after = dict(net.named_parameters())

    def changed(name: str) -> torch.Tensor:
        return before[name] != after[name].detach()

    # block 0: 1 head (8 wide), hidden 16; block 1: 2 heads, hidden 32; block 2 untouched
    assert not changed("blocks.0.attn.q.weight")[8:].any() and not changed("blocks.0.attn.q.weight")[:, 16:].any()
    assert changed("blocks.0.attn.q.weight")[:8, :16].any()
    assert not changed("blocks.0.mlp.fc1.weight")[16:].any() and changed("blocks.0.mlp.fc1.weight")[:16, :16].any()
    assert not changed("blocks.1.mlp.fc2.weight")[16:].any()
    assert not changed("patch_embed.weight")[16:].any() and not changed("pos_embed")[..., 16:].any()
    assert not changed("head.weight")[:, 16:].any()
    assert not any(changed(k).any() for k in before if k.startswith("blocks.2."))


def test_materialized_subnets_verify_run_and_match_supernet():
    net = _net().eval()
    sg = s3_supernet_graph(net)
    assert set(search_space(sg)) >= {"depth", "embed", "heads.0", "mlp_ratio.2"}
    rng = random.Random(0)
    x = torch.randn(2, 3, 8, 8)
    for _ in range(5):
        c = config(net.bounds(), rng, net.max_depth)
        g = materialize(sg, c)
        verify(g)
        torch.testing.assert_close(to_torch(g).eval()(x), net(x, c), rtol=1e-4, atol=1e-5)
        assert graph_cost(g).params == vit_params(c, net)


def test_expand_s3_rejects_non_vit():
    with pytest.raises(PassError, match="no blocks"):
        get_pass("expand-s3").fn(nb201_graph(None, C=4, N=1, image_size=8))


def test_evolutionary_search_respects_limit_and_improves():
    net = _net()
    size = lambda c: vit_params(c, net)
    limit = 12_000
    err = lambda c: 1.0 / (1 + c["depth"] * c["embed"])  # bigger is better, the limit must bind
    best, e, hist = evolutionary_search(net.bounds(), err, size, limit, max_depth=3, population=12, iterations=4,
                                        top_k=4, rng=random.Random(1))
    assert size(best) <= limit
    assert hist[-1]["best_error"] <= hist[0]["best_error"] and e <= hist[-1]["best_error"]


def test_s3_search_end_to_end_tiny():
    net = _net()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(3)]
    space = {"depth": [1, 2], "embed": [16, 24], "mlp_ratio": [1.0], "heads": [1]}
    res = s3_search(net, space, batches, batches[:1], steps_per_phase=3, evolution_steps=2, n_samples=2, top_k=1,
                    param_limit=40_000)
    assert len(res.spaces) == 3 and res.params <= 40_000
    verify(res.graph)
    assert to_torch(res.graph).eval()(torch.randn(1, 3, 8, 8)).shape == (1, 10)
    assert np.isfinite(res.error)
