"""TF-MAS: training-free architecture search for Mamba2 from the SSD token-mixing matrices (NeurIPS 2025).

The paper's proxy "only requires the transformation matrix between two tensors within the network and its
gradient", motivated by *rank collapse* in stacked SSD blocks. Its exact formula is not public (no code when
this was written), so the score ``F`` is pluggable (:data:`SCORES`) and the default is our documented choice.

**Matrices.** For every layer l and head h, the SSD layer computes ``y = M x`` with the semi-separable matrix
``M_ij = (C_iᵀB_j)·exp(Σ_{k=j+1..i} Δ_k A)·Δ_j`` (i ≥ j). At initialisation we run one LM batch *through* the
explicit matrices (any model with ``forward_explicit(input_ids) -> (logits, [M_l (B, H, L, L)])``, e.g.
``graphopt.models.mamba2.Mamba2LM``) and take ``G_l = ∂L/∂M_l`` of the next-token cross-entropy. ``G_l`` is the
dense gradient of the product ``y = M x`` (upper-triangle entries included): ``G = (∂L/∂y) xᵀ`` per head.

**Default F = "rank_collapse"**: ``erank(M_L ⋯ M_1) / erank(M_1)``, the effective rank (Roy & Vetterli:
``exp`` of the entropy of the normalised singular values) of the token mixing composed through the whole SSD
stack, relative to the first layer's, averaged over batch and heads. It is the rank-collapse phenomenon itself:
a stack whose composed mixing loses rank with depth scores low. ``per_layer`` telescopes (layer 0 contributes 1,
layer l the rank change it causes, over the first layer's rank), so ``graphopt inspect`` shows which layers
collapse. It uses the matrices only; the gradient-based alternatives: ``"grad_erank"``
(``(1/L) Σ_l Σ_h mean_b erank(G_{l,b,h})`` with ``G_l = ∂L/∂M_l``, the previous default), ``"grad_erank_sum"``
(sum over layers), ``"saliency"`` (``Σ_l |⟨M_l, G_l⟩|``, SNIP-like) and ``"erank_gradnorm"``
(``Σ_l Σ_h mean_b erank(M) · ‖G‖_F / mean ‖G‖_F``). Higher is better for all.

Evidence for the choice (``benchmarks/tfmas_design.py``): 16 candidate F were scored on a *design set* of 32
Mamba2 configs (sample seed 1; ~30–60k parameters, 300 AdamW steps on multi-query associative recall) and the
best by design-set Spearman ρ was reported on the *held-out* 32 configs of ``benchmarks/estimators_nb201.py``:
rank_collapse .709 design / .662 held-out, grad_erank .381 / .319, params .197 / .131, synflow .837 / .669 (so
the pick doubles the old default's ρ and ties synflow, not ahead of it).
The earlier choice of grad_erank rested on 14 configs of an order-2 Markov LM (τ .69 and .76 on two sets).

**Search space** (SSMamba2-style): d_model, n_layers, d_state (default 128), d_conv (4), expand (2), headdim (64),
ngroups (1); ``nheads = expand·d_model/headdim`` must be an integer divisible by ngroups.

**Range determination** (our procedure; the paper's is not public): given a parameter budget B and candidate
grids, the range of each hyper-parameter is the set of grid values v for which *some* configuration with that
value — the other non-size hyper-parameters at their defaults, d_model and n_layers free over their grids — is
valid and has between ``lower_frac·B`` and ``B`` parameters. Sampling is uniform over the product of the
ranges, rejecting invalid or out-of-window configurations (parameters counted in closed form, no model built).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .proxies.core import ProxyResult

__all__ = [
    "DEFAULT_GRIDS",
    "DEFAULT_SCORE",
    "SCORES",
    "Mamba2Config",
    "TFMASCandidate",
    "determine_ranges",
    "effective_rank",
    "lm_loss",
    "sample_configs",
    "search",
    "tfmas_score",
    "token_matrices_and_grads",
    "token_product_erank",
]


def effective_rank(a: torch.Tensor) -> torch.Tensor:
    """Effective rank ``exp(H(σ/Σσ))`` of the last two dims (batched, float64, scale-invariant); 0 for a zero
    matrix."""
    s = torch.linalg.svdvals(a.double())
    tot = s.sum(-1, keepdim=True)
    nonzero = tot > 0
    p = torch.where(nonzero, s / torch.where(nonzero, tot, torch.ones_like(tot)), torch.zeros_like(s))
    h = -torch.special.xlogy(p, p).sum(-1)
    return torch.where(nonzero.squeeze(-1), torch.exp(h), torch.zeros_like(h))


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: logits[:, :-1] predict input_ids[:, 1:]."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), input_ids[:, 1:].reshape(-1))


def token_matrices_and_grads(
    model: nn.Module,
    input_ids: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = lm_loss,
) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """``([M_l], [∂L/∂M_l], L)`` for one batch; every tensor detached, shape (B, H, L, L) per layer."""
    fwd = getattr(model, "forward_explicit", None)
    if fwd is None:
        raise TypeError(
            f"{type(model).__name__} has no forward_explicit(input_ids) -> (logits, [M_l]); TF-MAS needs the "
            "explicit SSD token matrices (see graphopt.models.mamba2.Mamba2LM)"
        )
    with torch.enable_grad():
        logits, mats = fwd(input_ids)
        if not mats:
            raise ValueError(f"{type(model).__name__}.forward_explicit returned no token matrices")
        loss = loss_fn(logits, input_ids)
        grads = torch.autograd.grad(loss, mats, allow_unused=True)
    grads = [torch.zeros_like(m) if g is None else g for m, g in zip(mats, grads, strict=True)]
    return [m.detach() for m in mats], [g.detach() for g in grads], float(loss.detach())


ScoreFn = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], dict[str, float]]


def _grad_erank(mats: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> dict[str, float]:
    n = len(grads)
    return {f"layers.{i}": float(effective_rank(g).mean(0).sum()) / n for i, g in enumerate(grads)}


def _grad_erank_sum(mats: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> dict[str, float]:
    return {f"layers.{i}": float(effective_rank(g).mean(0).sum()) for i, g in enumerate(grads)}


def _saliency(mats: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> dict[str, float]:
    pairs = enumerate(zip(mats, grads, strict=True))
    return {f"layers.{i}": float((m.double() * g.double()).sum().abs()) for i, (m, g) in pairs}


def _erank_gradnorm(mats: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> dict[str, float]:
    norms = [g.double().flatten(2).norm(dim=-1) for g in grads]  # (B, H) per layer
    ref = torch.cat([n.flatten() for n in norms]).mean().clamp_min(1e-30)
    return {
        f"layers.{i}": float((effective_rank(m) * (n / ref)).mean(0).sum())
        for i, (m, n) in enumerate(zip(mats, norms, strict=True))
    }


def _rank_collapse(mats: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> dict[str, float]:
    er = token_product_erank(mats)
    first = max(er[0], 1e-12)
    return {f"layers.{i}": (er[0] if i == 0 else er[i] - er[i - 1]) / first for i in range(len(er))}


#: Pluggable scores ``F(mats, grads) -> {layer key: contribution}``; the proxy is the sum (higher is better).
SCORES: dict[str, ScoreFn] = {
    "rank_collapse": _rank_collapse,
    "grad_erank": _grad_erank,
    "grad_erank_sum": _grad_erank_sum,
    "saliency": _saliency,
    "erank_gradnorm": _erank_gradnorm,
}
#: the score used when none is named (see the module docstring for why)
DEFAULT_SCORE = "rank_collapse"


def tfmas_score(
    model: nn.Module,
    input_ids: torch.Tensor,
    score: str | ScoreFn = DEFAULT_SCORE,
    seed: int = 0,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = lm_loss,
) -> ProxyResult:
    """TF-MAS proxy of ``model`` on one token batch (keys of ``per_layer``: ``"layers.<l>"``).

    Runs in train mode on the model as given (call it on a freshly initialised model: the proxy is defined at
    initialisation); the caller's mode is restored and no parameter is modified. Deterministic under ``seed``.
    """
    fn = SCORES[score] if isinstance(score, str) and score in SCORES else score
    if not callable(fn):
        raise KeyError(f"unknown TF-MAS score {score!r}; available: {', '.join(SCORES)}")
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.train()
            mats, grads, _ = token_matrices_and_grads(model, input_ids, loss_fn)
    finally:
        model.train(was_training)
    per = fn(mats, grads)
    return ProxyResult(math.fsum(per.values()), per)


def token_product_erank(mats: Sequence[torch.Tensor]) -> list[float]:
    """Mean effective rank of the composed token mixing ``M_l ⋯ M_1`` for l = 1..L (over batch and heads).

    Used to exhibit rank collapse: without residual connections it falls with depth.
    """
    out, prod = [], None
    for m in mats:
        prod = m.double() if prod is None else torch.matmul(m.double(), prod)
        out.append(float(effective_rank(prod).mean()))
    return out


# ---------------------------------------------------------------------------------------------------- space
@dataclass(frozen=True)
class Mamba2Config:
    """One point of the Mamba2 search space (see module docstring)."""

    d_model: int = 256
    n_layers: int = 8
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    vocab_size: int = 256
    tie_embeddings: bool = True

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    def is_valid(self) -> bool:
        """Positive sizes, headdim | expand·d_model, ngroups | nheads."""
        sizes = (self.d_model, self.n_layers, self.d_state, self.d_conv, self.expand, self.headdim, self.ngroups)
        if min(sizes) < 1 or self.d_inner % self.headdim:
            return False
        return self.nheads >= 1 and self.nheads % self.ngroups == 0

    def param_count(self) -> int:
        """Parameters of ``graphopt.models.mamba2.Mamba2LM`` with this config, in closed form."""
        d, di, h, n, g = self.d_model, self.d_inner, self.nheads, self.d_state, self.ngroups
        conv_dim = di + 2 * g * n
        layer = (
            d  # pre-norm
            + d * (di + conv_dim + h)  # in_proj
            + conv_dim * self.d_conv
            + conv_dim  # depthwise conv1d + bias
            + 3 * h  # dt_bias, A_log, D
            + di  # gated RMSNorm
            + di * d  # out_proj
        )
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return self.vocab_size * d + self.n_layers * layer + d + head

    def build(self, seed: int = 0, residual: bool = True, chunk_size: int = 8) -> nn.Module:
        """A freshly initialised ``Mamba2LM`` (from the model zoo) with this config."""
        from graphopt.models.mamba2 import Mamba2LM

        if not self.is_valid():
            raise ValueError(f"invalid Mamba2 config {self}: need headdim | expand*d_model and ngroups | nheads")
        torch.manual_seed(seed)
        return Mamba2LM(
            vocab_size=self.vocab_size,
            d_model=self.d_model,
            n_layers=self.n_layers,
            d_state=self.d_state,
            d_conv=self.d_conv,
            expand=self.expand,
            headdim=self.headdim,
            ngroups=self.ngroups,
            chunk_size=chunk_size,
            residual=residual,
            tie_embeddings=self.tie_embeddings,
        )


#: Candidate values of each searchable hyper-parameter (ranges are cut from these by :func:`determine_ranges`).
DEFAULT_GRIDS: dict[str, tuple[int, ...]] = {
    "d_model": (32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024),
    "n_layers": (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48),
    "d_state": (16, 32, 64, 128, 256),
    "d_conv": (2, 3, 4),
    "expand": (1, 2, 3, 4),
    "headdim": (16, 32, 64, 128),
    "ngroups": (1, 2, 4, 8),
}
_SIZE_KEYS = ("d_model", "n_layers")


def determine_ranges(
    param_budget: int,
    base: Mamba2Config | None = None,
    grids: Mapping[str, Sequence[int]] | None = None,
    lower_frac: float = 0.5,
) -> dict[str, list[int]]:
    """Budget-feasible range of every hyper-parameter (see module docstring); raises if one is empty."""
    base = base or Mamba2Config()
    grids = dict(DEFAULT_GRIDS if grids is None else grids)
    if param_budget <= 0 or not 0.0 <= lower_frac < 1.0:
        raise ValueError(f"determine_ranges: need param_budget > 0 and 0 <= lower_frac < 1 ({param_budget=}, "
                         f"{lower_frac=})")
    lo = lower_frac * param_budget

    def feasible(cfg: Mamba2Config) -> bool:
        return cfg.is_valid() and lo <= cfg.param_count() <= param_budget

    ranges: dict[str, list[int]] = {}
    for key, values in grids.items():
        keep = []
        for v in values:
            cfg = replace(base, **{key: v})
            free = [k for k in _SIZE_KEYS if k != key]
            if any(
                feasible(replace(cfg, **dict(zip(free, combo, strict=True))))
                for combo in itertools.product(*(grids[k] for k in free))
            ):
                keep.append(int(v))
        if not keep:
            raise ValueError(
                f"determine_ranges: no value of {key} in {list(values)} fits a budget of {param_budget} parameters "
                f"(window [{lo:.0f}, {param_budget}]); widen the grids or change the budget"
            )
        ranges[key] = keep
    return ranges


def sample_configs(
    ranges: Mapping[str, Sequence[int]],
    n: int,
    param_budget: int,
    lower_frac: float = 0.5,
    seed: int = 0,
    base: Mamba2Config | None = None,
    max_tries: int = 200_000,
) -> list[Mamba2Config]:
    """Up to ``n`` distinct valid configs drawn uniformly from the product of ``ranges`` within the window."""
    base = base or Mamba2Config()
    rng = random.Random(seed)
    keys = list(ranges)
    out: list[Mamba2Config] = []
    seen: set[Mamba2Config] = set()
    for _ in range(max_tries):
        if len(out) >= n:
            break
        cfg = replace(base, **{k: rng.choice(list(ranges[k])) for k in keys})
        if cfg in seen or not cfg.is_valid():
            continue
        if not lower_frac * param_budget <= cfg.param_count() <= param_budget:
            continue
        seen.add(cfg)
        out.append(cfg)
    return out


@dataclass
class TFMASCandidate:
    """A scored configuration (``score`` higher is better)."""

    config: Mamba2Config
    score: float
    params: int
    per_layer: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"config": asdict(self.config), "score": self.score, "params": self.params}


def search(
    param_budget: int,
    n_samples: int = 50,
    seed: int = 0,
    top_k: int = 5,
    input_ids: torch.Tensor | None = None,
    batch_size: int = 4,
    seq_len: int = 64,
    score: str | ScoreFn = DEFAULT_SCORE,
    base: Mamba2Config | None = None,
    grids: Mapping[str, Sequence[int]] | None = None,
    lower_frac: float = 0.5,
) -> list[TFMASCandidate]:
    """Sample ``n_samples`` configs within the budget, score each at initialisation, return the ``top_k``.

    ``input_ids`` should be real text token ids (B, L) below ``base.vocab_size``; without it a seeded uniform
    random batch of shape (batch_size, seq_len) is used (enough to exercise the proxy, not to rank for a task).
    """
    base = base or Mamba2Config()
    ranges = determine_ranges(param_budget, base, grids, lower_frac)
    configs = sample_configs(ranges, n_samples, param_budget, lower_frac, seed, base)
    if input_ids is None:
        gen = torch.Generator().manual_seed(seed)
        input_ids = torch.randint(0, base.vocab_size, (batch_size, seq_len), generator=gen)
    elif int(input_ids.max()) >= base.vocab_size:
        raise ValueError(f"search: input_ids contain ids >= vocab_size={base.vocab_size}")
    scored = []
    for k, cfg in enumerate(configs):
        model = cfg.build(seed=seed + k)
        r = tfmas_score(model, input_ids, score=score, seed=seed)
        scored.append(TFMASCandidate(cfg, r.score, cfg.param_count(), r.per_layer))
    scored.sort(key=lambda c: -c.score)
    return scored[:top_k]
