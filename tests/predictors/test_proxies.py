"""Zero-cost proxies: closed forms on tiny networks, invariances, registry contract, NB201 cross-checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from graphopt.predictors import proxies

pytestmark = pytest.mark.usefixtures("one_thread")


ALL = ["grad_norm", "snip", "grasp", "fisher", "synflow", "nwot", "jacob_cov", "zen", "flops", "params"]


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
    )  # fmt: skip


def cnn_batch(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 6, 6, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_registry_lists_all_proxies_and_rejects_unknown() -> None:
    assert sorted(proxies.names()) == sorted(ALL)
    with pytest.raises(KeyError, match="available"):
        proxies.compute("nope", small_cnn(), cnn_batch())
    with pytest.raises(ValueError, match="needs targets"):
        proxies.compute("snip", small_cnn(), cnn_batch()[0])


@pytest.mark.parametrize("name", ALL)
def test_contract_deterministic_no_side_effects_additive(name: str) -> None:
    net = small_cnn().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng_before = torch.get_rng_state()
    batch = cnn_batch()
    r1 = proxies.compute(name, net, batch, seed=3)
    r2 = proxies.compute(name, net, batch, seed=3)
    assert r1.score == r2.score and r1.per_layer == r2.per_layer
    assert math.isfinite(r1.score)
    assert not net.training  # mode untouched
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # weights/BN stats untouched
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(torch.get_rng_state(), rng_before)
    if r1.additive:
        assert math.isclose(sum(r1.per_layer.values()), r1.score, rel_tol=1e-9, abs_tol=1e-12)
    param_names = set(dict(net.named_parameters()))
    module_names = set(dict(net.named_modules()))
    assert set(r1.per_layer) <= param_names | module_names | {"__expressivity__"}


def test_synflow_linear_chain_closed_form() -> None:
    """Bias-free linear chain: with |W| and input 1, R = 1ᵀ|W2||W1|1 and every layer's Σ|θ⊙∂R/∂θ| equals R."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 2, bias=False))
    net[2].running_mean.fill_(5.0)  # BN is bypassed by synflow, so its statistics must not matter
    w1, w2 = net[0].weight.detach().abs().double().numpy(), net[3].weight.detach().abs().double().numpy()
    r_hand = float(np.ones(2) @ w2 @ w1 @ np.ones(3))
    res = proxies.compute("synflow", net, torch.randn(7, 3))
    assert res.per_layer["0.weight"] == pytest.approx(r_hand, rel=1e-12)
    assert res.per_layer["3.weight"] == pytest.approx(r_hand, rel=1e-12)
    assert res.score == pytest.approx(2 * r_hand, rel=1e-12)


def test_synflow_independent_of_input_data() -> None:
    net = small_cnn()
    a = proxies.compute("synflow", net, torch.randn(5, 3, 6, 6)).score
    b = proxies.compute("synflow", net, 100 * torch.rand(9, 3, 6, 6)).score
    assert a == b


def test_params_and_flops_of_one_conv() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert proxies.compute("params", conv, torch.randn(2, 3, 5, 5)).score == 3 * 8 * 9 + 8
    res = proxies.compute("flops", conv, torch.randn(2, 3, 5, 5))
    assert res.score == 2 * (8 * 5 * 5) * (3 * 9)  # 2 x MACs of one sample
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    res = proxies.compute("flops", grouped, torch.randn(3, 4, 6, 6))
    assert res.per_layer == {"0.weight": 2.0 * (4 * 4 * 4) * (2 * 9), "2.weight": 2.0 * 64 * 5}


def test_flops_counter_is_pluggable() -> None:
    res = proxies.compute("flops", small_cnn(), cnn_batch(), counter=lambda m, x: {"ir": 42.0})
    assert res.score == 42.0 and res.per_layer == {"ir": 42.0}


def test_snip_grad_norm_grasp_match_autograd_by_hand() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    params = [net[0].weight, net[2].weight]
    loss = F.cross_entropy(net(x), y)
    g = torch.autograd.grad(loss, params, create_graph=True)
    hg = torch.autograd.grad(sum((gi.detach() * gi).sum() for gi in g), params)  # H g
    snip = proxies.compute("snip", net, (x, y))
    gn = proxies.compute("grad_norm", net, (x, y))
    grasp = proxies.compute("grasp", net, (x, y))
    for key, p, gi, hgi in zip(["0.weight", "2.weight"], params, g, hg, strict=True):
        assert snip.per_layer[key] == pytest.approx(float((p * gi).abs().sum().detach()), rel=1e-5)
        assert gn.per_layer[key] == pytest.approx(float(gi.norm().detach()), rel=1e-5)
        assert grasp.per_layer[key] == pytest.approx(float((-p * hgi).sum().detach()), rel=1e-4, abs=1e-7)


def test_fisher_matches_formula_on_one_linear_layer() -> None:
    """Reference formula: per output channel ½·mean_n (a·∂L/∂a)², broadcast over the channel's in_features."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    a = lin(x)
    (ga,) = torch.autograd.grad(F.cross_entropy(a, y), a)
    hand = float((0.5 * (a * ga).pow(2).mean(0)).sum().detach()) * 4
    assert proxies.compute("fisher", lin, (x, y)).score == pytest.approx(hand, rel=1e-5)
    relu_net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3))
    res = proxies.compute("fisher", relu_net, (x, y), site="relu")
    assert set(res.per_layer) == {"1"} and res.score >= 0


def test_nwot_closed_form_and_permutation_invariance() -> None:
    # identity "network" followed by ReLU: codes are the input signs, K_ij = #units where signs agree
    x = torch.tensor([[1.0, -1, 2, -3], [1, 1, -1, -1], [-1, 2, 2, 5], [3, -2, -2, 1]])
    c = (x > 0).double().numpy()
    k = c @ c.T + (1 - c) @ (1 - c).T
    res = proxies.compute("nwot", nn.Sequential(nn.Identity(), nn.ReLU()), x)
    assert res.score == pytest.approx(float(np.linalg.slogdet(k)[1]), rel=1e-12)

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    perm = torch.randperm(16)
    permuted = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        permuted[0].weight.copy_(net[0].weight[perm])
        permuted[0].bias.copy_(net[0].bias[perm])
        permuted[2].weight.copy_(net[2].weight[:, perm])
        permuted[2].bias.copy_(net[2].bias)
    xb = torch.randn(10, 5)
    assert torch.allclose(net(xb), permuted(xb), atol=1e-6)
    assert proxies.compute("nwot", net, xb).score == pytest.approx(proxies.compute("nwot", permuted, xb).score)


def test_jacob_cov_closed_form_for_linear_model() -> None:
    """f(x) = Wx: every Jacobian row is 1ᵀW, so the correlation matrix is all ones: eigenvalues {N, 0, ...}."""
    n, k = 6, 1e-5
    net = nn.Linear(10, 3, bias=False)
    res = proxies.compute("jacob_cov", net, torch.randn(n, 10))
    hand = -((math.log(n + k) + 1 / (n + k)) + (n - 1) * (math.log(k) + 1 / k))
    assert res.score == pytest.approx(hand, rel=1e-6)
    assert res.additive is False


def test_zen_reinitialises_weights_and_depends_on_seed() -> None:
    a, b = small_cnn(), small_cnn()
    with torch.no_grad():
        for p in b.parameters():
            p.mul_(3.0)
    batch = cnn_batch()
    za = proxies.compute("zen", a, batch, seed=1)
    assert za.score == proxies.compute("zen", b, batch, seed=1).score  # caller's weights are irrelevant
    assert za.score != proxies.compute("zen", a, batch, seed=2).score
    assert set(za.per_layer) == {"__expressivity__", "1", "4"}


def test_nb201_cross_check_with_nas_bench_suite_zero() -> None:
    """params is exact against NAS-Bench-Suite-Zero; log synflow is weight-init dependent but close."""
    nb201 = pytest.importorskip("graphopt.models.nb201")
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    torch.manual_seed(0)
    net = nb201.NB201Net(arch, C=16, N=5, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    assert proxies.compute("params", net, x).score == 802426  # zccombine_nb201_zc_proxies.csv: 0.802426 M
    assert math.log(proxies.compute("synflow", net, x).score) == pytest.approx(83.04, abs=0.3)


@pytest.mark.parametrize("arch", [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|",
    "|none~0|+|nor_conv_1x1~0|none~1|+|avg_pool_3x3~0|skip_connect~1|nor_conv_3x3~2|",
])  # fmt: skip
def test_compute_proxies_shared_passes_equal_separate_calls(arch: str) -> None:
    """One shared forward/backward (compute_proxies) gives every proxy's separate value, per layer too."""
    nb201 = pytest.importorskip("graphopt.models.nb201")
    torch.manual_seed(0)
    net = nb201.NB201Net(arch, C=8, N=1, num_classes=10).eval()
    g = torch.Generator().manual_seed(2)
    batch = (torch.randn(10, 3, 16, 16, generator=g), torch.randint(0, 10, (10,), generator=g))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng_before = torch.get_rng_state()
    shared, times = proxies.compute_proxies(net, batch, seed=4, return_times=True, channels_last=False)
    assert list(shared) == proxies.names()
    assert set(proxies.SHARED) <= set(times) and "shared_pass" in times
    for name in proxies.names():
        sep = proxies.compute(name, net, batch, seed=4)
        assert shared[name].score == pytest.approx(sep.score, rel=1e-6, abs=1e-12), name
        assert set(shared[name].per_layer) == set(sep.per_layer), name
        for key, v in sep.per_layer.items():
            assert shared[name].per_layer[key] == pytest.approx(v, rel=1e-6, abs=1e-12), (name, key)
    assert not net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng_before)
    # a subset, in the caller's order; fisher counted once although three backward passes ran through its hooks
    sub = proxies.compute_proxies(net, batch, ["jacob_cov", "fisher", "grasp"], seed=4)
    assert list(sub) == ["jacob_cov", "fisher", "grasp"]
    assert sub["fisher"].score == pytest.approx(shared["fisher"].score, rel=1e-6)


@pytest.mark.parametrize("with_grasp", [True, False])
def test_compute_proxies_channels_last_changes_only_rounding(with_grasp: bool) -> None:
    """The NHWC copy (default for 4-D CPU batches) gives the NCHW values up to float rounding, zen's random
    Gaussian weights included (they are drawn in logical order, not memory order), and leaves the caller's
    layout alone."""
    nb201 = pytest.importorskip("graphopt.models.nb201")
    torch.manual_seed(0)
    net = nb201.NB201Net("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|",
                         C=8, N=1, num_classes=10)
    g = torch.Generator().manual_seed(3)
    batch = (torch.randn(12, 3, 16, 16, generator=g), torch.randint(0, 10, (12,), generator=g))
    names = [n for n in proxies.names() if with_grasp or n != "grasp"]
    nchw = proxies.compute_proxies(net, batch, names, seed=2, channels_last=False)
    nhwc = proxies.compute_proxies(net, batch, names, seed=2, channels_last=True)
    for name in names:
        assert nhwc[name].score == pytest.approx(nchw[name].score, rel=1e-4), name
        for key, v in nchw[name].per_layer.items():
            assert nhwc[name].per_layer[key] == pytest.approx(v, rel=1e-3, abs=1e-9), (name, key)
    assert all(p.is_contiguous() for p in net.parameters())  # the caller's model keeps its layout


def test_compute_proxies_options_fall_back_to_separate_call() -> None:
    net, batch = small_cnn(), cnn_batch()
    got = proxies.compute_proxies(net, batch, ["fisher", "snip"], options={"fisher": {"site": "relu"}})
    assert got["fisher"].score == proxies.compute("fisher", net, batch, site="relu").score
    assert set(got["fisher"].per_layer) == {"2", "5"}  # ReLU module names: the option was applied
    with pytest.raises(ValueError, match="needs targets"):
        proxies.compute_proxies(net, batch[0], ["nwot", "snip"])
    with pytest.raises(KeyError, match="available"):
        proxies.compute_proxies(net, batch, ["nope"])


def test_compute_proxies_model_with_non_persistent_buffer_uses_separate_copies() -> None:
    """A buffer missing from the state_dict cannot be reset on a re-used copy: those proxies fall back."""

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = small_cnn()
            self.register_buffer("calls", torch.tensor(0.0), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # every forward changes the buffer, which matters
            self.calls += 1
            return self.body(x * self.calls)

    net = Scaled()
    assert "calls" not in net.state_dict()
    batch = cnn_batch()
    got = proxies.compute_proxies(net, batch, ["zen", "synflow", "snip", "params"], seed=1, channels_last=False)
    for name, res in got.items():
        assert res.score == pytest.approx(proxies.compute(name, net, batch, seed=1).score, rel=1e-9), name


def test_compute_proxies_falls_back_to_nchw_for_a_model_that_cannot_take_channels_last() -> None:
    """``x.view(n, -1)`` on an NHWC activation raises; the automatic layout choice then recomputes in NCHW."""

    class ViewNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4 * 6 * 6, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.bn(self.conv(x)))
            return self.fc(h.view(h.shape[0], -1))

    torch.manual_seed(0)
    net, batch = ViewNet(), cnn_batch()
    with pytest.raises(RuntimeError, match="view"):
        proxies.compute_proxies(net, batch, ["snip", "zen"], channels_last=True)
    got = proxies.compute_proxies(net, batch, ["snip", "zen"])
    want = proxies.compute_proxies(net, batch, ["snip", "zen"], channels_last=False)
    assert {k: r.score for k, r in got.items()} == {k: r.score for k, r in want.items()}


def test_nwot_reads_a_batch_folded_into_the_leading_dim_per_sample() -> None:
    """MobileViT unfolds patches by folding the batch into the leading dim ([B, C, H, W] -> [B*32, 2, 2, 2])
    before its activations: NASWOT's codes are per sample, so each sample's rows are grouped back (the batch is
    the outermost factor), as if the activation read [B, -1]. It failed with a broadcast error."""

    class Net(nn.Module):
        def __init__(self, folded: bool) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.folded, self.conv, self.act = folded, nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            y = y.reshape(x.shape[0] * 9, 2, 2, 4) if self.folded else y.reshape(x.shape[0], -1)
            return self.act(y).reshape(x.shape[0], -1).sum(1, keepdim=True)

    x, _ = cnn_batch(6)
    folded = proxies.compute("nwot", Net(True), x)
    flat = proxies.compute("nwot", Net(False), x)
    assert math.isfinite(folded.score) and folded.score == pytest.approx(flat.score, rel=1e-9)
