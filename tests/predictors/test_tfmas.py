"""TF-MAS: dL/dM vs finite differences, rank collapse without residuals, determinism, forced collapse, space."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from graphopt.predictors import tfmas

pytestmark = pytest.mark.usefixtures("one_thread")


class TinySSDStack(nn.Module):
    """Minimal stacked SSD LM computed through explicit token matrices (float64, no conv, no gating).

    ``M_ij = (C_i·B_j)·exp(Σ_{k=j+1..i} Δ_k A)·Δ_j`` for i ≥ j; ``y = M x`` per head.
    """

    def __init__(self, vocab=16, d=8, heads=2, headdim=4, d_state=3, n_layers=2, residual=True, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.heads, self.headdim, self.residual = heads, headdim, residual
        self.emb = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "x": nn.Linear(d, heads * headdim, bias=False),
                    "B": nn.Linear(d, d_state),
                    "C": nn.Linear(d, d_state),
                    "dt": nn.Linear(d, heads),
                    "out": nn.Linear(heads * headdim, d, bias=False),
                }
            )
            for _ in range(n_layers)
        )
        self.A_log = nn.Parameter(torch.rand(n_layers, heads))
        self.head = nn.Linear(d, vocab)
        self.double()

    @staticmethod
    def token_matrix(B, C, dt, A):
        L = B.shape[1]
        cs = torch.cumsum(dt * A, dim=1).permute(0, 2, 1)  # b h L
        seg = cs.unsqueeze(-1) - cs.unsqueeze(-2)  # (i, j) -> sum_{k=j+1..i}
        causal = torch.tril(torch.ones(L, L, dtype=torch.bool))
        decay = torch.exp(seg.masked_fill(~causal, float("-inf")))
        cb = torch.matmul(C, B.transpose(1, 2)).unsqueeze(1)  # b 1 L L
        return cb * decay * dt.permute(0, 2, 1).unsqueeze(-2)

    def forward_explicit(self, ids, m_offsets=None):
        h = self.emb(ids)
        b, L, _ = h.shape
        mats = []
        for k, lyr in enumerate(self.layers):
            x = lyr["x"](h).view(b, L, self.heads, self.headdim)
            m = self.token_matrix(lyr["B"](h), lyr["C"](h), F.softplus(lyr["dt"](h)), -torch.exp(self.A_log[k]))
            mu = m if m_offsets is None or m_offsets[k] is None else m + m_offsets[k]
            y = torch.einsum("bhij,bjhp->bihp", mu, x).reshape(b, L, -1)
            out = lyr["out"](y)
            h = h + out if self.residual else out
            mats.append(m)
        return self.head(h), mats


def _ids(b=2, L=6, vocab=16, seed=0):
    return torch.randint(0, vocab, (b, L), generator=torch.Generator().manual_seed(seed))


def _loss_with_offset(model: nn.Module, ids: torch.Tensor, mats, layer: int, idx, delta: float) -> float:
    offs = [None] * len(mats)
    offs[layer] = torch.zeros_like(mats[layer])
    offs[layer][idx] = delta
    with torch.no_grad():
        return float(tfmas.lm_loss(model.forward_explicit(ids, offs)[0], ids))


def _check_fd(model: nn.Module, ids: torch.Tensor, entries, eps: float = 1e-6) -> None:
    mats, grads, _ = tfmas.token_matrices_and_grads(model, ids)
    for layer, idx in entries:
        plus = _loss_with_offset(model, ids, mats, layer, idx, eps)
        minus = _loss_with_offset(model, ids, mats, layer, idx, -eps)
        assert float(grads[layer][idx]) == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-9)


def test_grad_wrt_token_matrix_matches_finite_differences() -> None:
    model = TinySSDStack(n_layers=2)
    ids = _ids()
    # lower-triangle, diagonal and an upper-triangle entry (the gradient of y = M x is dense)
    _check_fd(model, ids, [(0, (0, 1, 3, 1)), (1, (1, 0, 5, 5)), (1, (0, 0, 2, 0)), (0, (1, 1, 1, 4))])


def test_grad_wrt_zoo_mamba2_token_matrix_matches_finite_differences() -> None:
    mamba2 = pytest.importorskip("graphopt.models.mamba2")
    torch.manual_seed(0)
    model = mamba2.Mamba2LM(vocab_size=32, d_model=16, n_layers=2, d_state=4, headdim=8, chunk_size=4).double()
    _check_fd(model, _ids(2, 8, 32), [(0, (0, 1, 5, 2)), (1, (1, 3, 7, 7))])


def test_effective_rank_closed_forms() -> None:
    assert float(tfmas.effective_rank(torch.eye(5))) == pytest.approx(5.0)
    assert float(tfmas.effective_rank(torch.outer(torch.arange(1.0, 4), torch.ones(4)))) == pytest.approx(1.0)
    assert float(tfmas.effective_rank(torch.diag(torch.tensor([1.0, 1.0, 0.0])))) == pytest.approx(2.0)
    assert float(tfmas.effective_rank(torch.zeros(3, 3))) == 0.0
    assert float(tfmas.effective_rank(1e-150 * torch.eye(4, dtype=torch.float64))) == pytest.approx(4.0)


def test_effective_rank_of_token_matrix_product_falls_with_depth_without_residuals() -> None:
    model = TinySSDStack(n_layers=6, residual=False, d=16, headdim=8)
    mats, _, _ = tfmas.token_matrices_and_grads(model, _ids(2, 16))
    er = tfmas.token_product_erank(mats)
    assert er[0] > 2.0 * er[-1]
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(er))


def test_score_is_deterministic_and_side_effect_free() -> None:
    model = TinySSDStack().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = _ids()
    for score in tfmas.SCORES:
        a = tfmas.tfmas_score(model, ids, score=score, seed=1)
        b = tfmas.tfmas_score(model, ids, score=score, seed=1)
        assert a.score == b.score and a.per_layer == b.per_layer and a.score > 0
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(KeyError, match="available"):
        tfmas.tfmas_score(model, ids, score="nope")
    with pytest.raises(TypeError, match="forward_explicit"):
        tfmas.tfmas_score(nn.Linear(2, 2), ids)


def test_forced_collapse_lowers_the_gradient_rank_score() -> None:
    """Identical tokens make the first layer's token representations rank 1, so each head's dL/dM = (dL/dy) xᵀ
    has effective rank exactly 1; random tokens keep it high (for grad_erank and its layer-sum variant)."""
    model = TinySSDStack(n_layers=3, d=16, headdim=8)
    collapsed = tfmas.tfmas_score(model, torch.full((2, 12), 3), score="grad_erank")
    diverse = tfmas.tfmas_score(model, _ids(2, 12), score="grad_erank")
    n = len(model.layers)  # grad_erank averages over layers: per_layer holds erank_l / n
    assert collapsed.per_layer["layers.0"] * n == pytest.approx(model.heads, rel=1e-6)  # 1 per head
    assert diverse.per_layer["layers.0"] * n > 2 * model.heads
    assert collapsed.score < diverse.score
    batches = (torch.full((2, 12), 3), _ids(2, 12))
    sums = [tfmas.tfmas_score(model, ids, score="grad_erank_sum").score for ids in batches]
    assert sums[0] == pytest.approx(collapsed.score * n) and sums[0] < sums[1]


def test_default_rank_collapse_score_tracks_the_composed_token_mixing() -> None:
    """The default score is erank(M_L..M_1) / erank(M_1); its per-layer parts telescope to it (layer 0 gives 1,
    each later layer the rank it loses or adds). Without residuals a deep stack collapses, so it scores well below
    a shallow one; a single layer scores exactly 1."""
    assert tfmas.DEFAULT_SCORE == "rank_collapse"
    ids = _ids(2, 16)
    deep = TinySSDStack(n_layers=6, residual=False, d=16, headdim=8)
    mats, _, _ = tfmas.token_matrices_and_grads(deep, ids)
    er = tfmas.token_product_erank(mats)
    res = tfmas.tfmas_score(deep, ids)
    assert res.score == pytest.approx(er[-1] / er[0], rel=1e-9)
    assert res.per_layer["layers.0"] == pytest.approx(1.0)
    assert math.fsum(res.per_layer.values()) == pytest.approx(res.score, rel=1e-9)
    assert all(v <= 1e-9 for k, v in res.per_layer.items() if k != "layers.0")  # rank only falls without residuals
    assert res.score < 0.5
    shallow = TinySSDStack(n_layers=1, residual=False, d=16, headdim=8)
    assert tfmas.tfmas_score(shallow, ids).score == pytest.approx(1.0)


def test_space_param_count_ranges_and_sampling() -> None:
    cfg = tfmas.Mamba2Config(d_model=64, n_layers=3, d_state=16, headdim=16, ngroups=2, tie_embeddings=False)
    mamba2 = pytest.importorskip("graphopt.models.mamba2")
    assert isinstance(cfg.build(), mamba2.Mamba2LM)
    assert cfg.param_count() == sum(p.numel() for p in cfg.build().parameters())
    assert not tfmas.Mamba2Config(d_model=48, headdim=64, expand=1).is_valid()  # 48 not divisible by 64
    budget = 2_000_000
    ranges = tfmas.determine_ranges(budget)
    assert set(ranges) == set(tfmas.DEFAULT_GRIDS)
    assert 1024 not in ranges["d_model"] and 48 not in ranges["n_layers"]  # cannot fit 2M parameters
    samples = tfmas.sample_configs(ranges, 25, budget, seed=0)
    assert len(samples) == 25 and len(set(samples)) == 25
    assert all(c.is_valid() and 0.5 * budget <= c.param_count() <= budget for c in samples)
    assert samples == tfmas.sample_configs(ranges, 25, budget, seed=0)
    with pytest.raises(ValueError, match="no value of"):
        tfmas.determine_ranges(100)


def test_search_returns_sorted_deterministic_top_configs() -> None:
    pytest.importorskip("graphopt.models.mamba2")
    grids = {
        "d_model": (32, 64), "n_layers": (1, 2, 3), "d_state": (8, 16), "d_conv": (2, 4),
        "expand": (1, 2), "headdim": (16, 32), "ngroups": (1, 2),
    }  # fmt: skip
    kw = dict(n_samples=5, seed=0, top_k=3, seq_len=16, batch_size=2, grids=grids, lower_frac=0.2)
    top = tfmas.search(100_000, **kw)
    assert len(top) == 3
    assert [c.score for c in top] == sorted((c.score for c in top), reverse=True)
    assert all(c.params <= 100_000 for c in top)
    assert [(c.config, c.score) for c in top] == [(c.config, c.score) for c in tfmas.search(100_000, **kw)]
