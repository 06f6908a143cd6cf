"""Mamba2 (Dao & Gu 2024, "Transformers are SSMs") in pure PyTorch: block, LM, chunked SSD and explicit M.

Block (as in the reference ``Mamba2Simple``): ``in_proj`` -> split (z, xBC, dt) -> depthwise causal conv1d on
xBC -> SiLU -> split (x, B, C) -> SSD with A = -exp(A_log) (scalar per head), dt = softplus(dt + dt_bias) ->
``+ D * x`` skip -> gated RMSNorm (``norm(y * silu(z))``, grouped per ``ngroups``) -> ``out_proj``.

SSD is computed by :func:`ssd_chunked`: the state-space-duality algorithm with chunks of ``chunk_size``
(intra-chunk quadratic form, per-chunk states, inter-chunk recurrence via a segment-sum decay matrix, state ->
output). Everything is cumsum / exp / masking / matmul on static shapes, so ``torch.export`` and the ONNX
exporter both handle it; sequences whose length is not a multiple of ``chunk_size`` are zero-padded at the
end (causal, so earlier outputs are unchanged) and cropped.

:func:`ssd_token_matrix` builds the semi-separable token-mixing matrix per batch and head,
``M[i, j] = (C_i . B_j) * exp(sum_{k=j+1..i} dt_k * A) * dt_j`` for ``i >= j`` else 0, with ``y = M @ x``
equal to the chunked scan. :meth:`Mamba2LM.forward_explicit` runs the model *through* these matrices and
returns them, so a training-free proxy can take ``torch.autograd.grad(loss, matrices)`` (dL/dM per layer).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GatedRMSNorm",
    "Mamba2",
    "Mamba2LM",
    "RMSNorm",
    "mamba2_tiny",
    "segsum",
    "ssd_chunked",
    "ssd_token_matrix",
]


def segsum(x: torch.Tensor) -> torch.Tensor:
    """Segment sums: ``out[..., i, j] = sum_{k=j+1..i} x[..., k]`` for i >= j, ``-inf`` above the diagonal.

    Built from one masked cumsum (stable, no subtraction of large prefix sums); ``exp(segsum(a))`` is the
    lower-triangular decay matrix with exact zeros above the diagonal.
    """
    t = x.shape[-1]
    xe = x.unsqueeze(-1).expand(*x.shape, t)  # xe[..., i, j] = x_i
    strict = torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=-1)
    xe = xe.masked_fill(~strict, 0.0)
    out = torch.cumsum(xe, dim=-2)
    lower = torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=0)
    return out.masked_fill(~lower, -math.inf)


def _groups_to_heads(t: torch.Tensor, nheads: int) -> torch.Tensor:
    """(b, l, g, n) -> (b, l, h, n), head h using group h // (h / g) (reference Mamba2 grouping)."""
    b, seq, g, n = t.shape
    if nheads % g != 0:
        raise ValueError(f"Mamba2: nheads={nheads} is not a multiple of ngroups={g}")
    return t.unsqueeze(3).expand(b, seq, g, nheads // g, n).reshape(b, seq, nheads, n)


def ssd_token_matrix(B: torch.Tensor, C: torch.Tensor, dt: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Explicit semi-separable SSD matrix M of shape (batch, heads, L, L).

    Args: ``B``, ``C`` (batch, L, ngroups, d_state); ``dt`` (batch, L, heads) after softplus; ``A`` (heads,)
    negative. ``y[:, i, h] = sum_j M[:, h, i, j] * x[:, j, h]`` reproduces :func:`ssd_chunked` (no D skip).
    """
    h = dt.shape[-1]
    Bh = _groups_to_heads(B, h).permute(0, 2, 1, 3)  # b h l n
    Ch = _groups_to_heads(C, h).permute(0, 2, 1, 3)
    a = (dt * A).permute(0, 2, 1)  # b h l
    decay = torch.exp(segsum(a))  # b h l l, zero above the diagonal
    cb = torch.matmul(Ch, Bh.transpose(-1, -2))  # b h l(i) l(j)
    return cb * decay * dt.permute(0, 2, 1).unsqueeze(-2)


def ssd_chunked(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """Chunked SSD scan (the "minimal SSD" algorithm written with matmuls), zero initial state.

    Args: ``x`` (b, L, h, p), ``dt`` (b, L, h) after softplus, ``A`` (h,), ``B``/``C`` (b, L, g, n).
    Returns y (b, L, h, p) with ``y_i = sum_{j<=i} M_ij x_j`` (see :func:`ssd_token_matrix`).
    """
    if chunk_size < 1:
        raise ValueError(f"ssd_chunked: chunk_size={chunk_size} must be >= 1")
    b, seq, h, p = x.shape
    Bh, Ch = _groups_to_heads(B, h), _groups_to_heads(C, h)
    n = Bh.shape[-1]
    xs = x * dt.unsqueeze(-1)
    a = dt * A
    pad = (-seq) % chunk_size
    if pad:
        xs = F.pad(xs, (0, 0, 0, 0, 0, pad))
        a = F.pad(a, (0, 0, 0, pad))
        Bh = F.pad(Bh, (0, 0, 0, 0, 0, pad))
        Ch = F.pad(Ch, (0, 0, 0, 0, 0, pad))
    nc = (seq + pad) // chunk_size
    cs = chunk_size
    # chunked layouts: (b, c, h, l, .)
    xc = xs.reshape(b, nc, cs, h, p).permute(0, 1, 3, 2, 4)
    Bc = Bh.reshape(b, nc, cs, h, n).permute(0, 1, 3, 2, 4)
    Cc = Ch.reshape(b, nc, cs, h, n).permute(0, 1, 3, 2, 4)
    ac = a.reshape(b, nc, cs, h).permute(0, 1, 3, 2)  # b c h l
    a_cum = torch.cumsum(ac, dim=-1)
    # 1. intra-chunk (diagonal blocks): (C B^T * L) x
    lmat = torch.exp(segsum(ac))  # b c h l s
    y_diag = torch.matmul(torch.matmul(Cc, Bc.transpose(-1, -2)) * lmat, xc)  # b c h l p
    # 2. state at the end of each chunk from its own inputs: sum_s decay_s B_s x_s^T
    decay_states = torch.exp(a_cum[..., -1:] - a_cum)  # b c h l
    states = torch.matmul((Bc * decay_states.unsqueeze(-1)).transpose(-1, -2), xc)  # b c h n p
    # 3. inter-chunk recurrence: new_states[z] = sum_{c<z} exp(segsum)[z, c] states[c]
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)  # b c+1 h n p
    chunk_a = F.pad(a_cum[..., -1].transpose(1, 2), (1, 0))  # b h c+1
    decay_chunk = torch.exp(segsum(chunk_a))  # b h c+1 c+1
    flat = states.reshape(b, nc + 1, h, n * p).transpose(1, 2)  # b h c+1 np
    carried = torch.matmul(decay_chunk, flat)[:, :, :-1]  # b h c np: state entering each chunk
    carried = carried.reshape(b, h, nc, n, p).transpose(1, 2)  # b c h n p
    # 4. state -> output within each chunk
    y_off = torch.matmul(Cc * torch.exp(a_cum).unsqueeze(-1), carried)  # b c h l p
    y = (y_diag + y_off).permute(0, 1, 3, 2, 4).reshape(b, nc * cs, h, p)
    return y[:, :seq] if pad else y


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * weight (written out so both exporters see primitives)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class GatedRMSNorm(nn.Module):
    """Mamba2 gated norm (norm_before_gate=False): RMSNorm(x * silu(z)) per group of ``dim / ngroups``."""

    def __init__(self, dim: int, ngroups: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        if dim % ngroups != 0:
            raise ValueError(f"GatedRMSNorm: dim={dim} not divisible by ngroups={ngroups}")
        self.eps = eps
        self.ngroups = ngroups
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = x * F.silu(z)
        shape = y.shape
        y = y.reshape(*shape[:-1], self.ngroups, shape[-1] // self.ngroups)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.reshape(shape) * self.weight


class Mamba2(nn.Module):
    """One Mamba2 mixer; ``nheads = expand * d_model / headdim``. Initialisation follows the reference
    (A ~ U[1, 16], dt ~ logU[1e-3, 1e-1] through inverse softplus, D = 1)."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 16,
        ngroups: int = 1,
        chunk_size: int = 8,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        if self.d_inner % headdim != 0:
            raise ValueError(f"Mamba2: expand*d_model={self.d_inner} not divisible by headdim={headdim}")
        self.headdim = headdim
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups != 0:
            raise ValueError(f"Mamba2: nheads={self.nheads} not divisible by ngroups={ngroups}")
        self.ngroups, self.chunk_size = ngroups, chunk_size
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, padding=d_conv - 1
        )
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm = GatedRMSNorm(self.d_inner, ngroups)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def _ssm_inputs(
        self, u: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return z (b,l,d_inner), x (b,l,h,p), B, C (b,l,g,n), dt (b,l,h), A (h,)."""
        b, seq, _ = u.shape
        z, xbc, dt = torch.split(self.in_proj(u), [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        xbc = F.silu(self.conv1d(xbc.transpose(1, 2))[..., :seq].transpose(1, 2))
        gn = self.ngroups * self.d_state
        x, B, C = torch.split(xbc, [self.d_inner, gn, gn], dim=-1)
        dt = F.softplus(dt + self.dt_bias)
        A = -torch.exp(self.A_log)
        x = x.reshape(b, seq, self.nheads, self.headdim)
        B = B.reshape(b, seq, self.ngroups, self.d_state)
        C = C.reshape(b, seq, self.ngroups, self.d_state)
        return z, x, B, C, dt, A

    def _finish(self, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = y + x * self.D.unsqueeze(-1)
        y = y.reshape(y.shape[0], y.shape[1], self.d_inner)
        return self.out_proj(self.norm(y, z))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(b, L, d_model) -> (b, L, d_model) via the chunked scan."""
        z, x, B, C, dt, A = self._ssm_inputs(u)
        return self._finish(ssd_chunked(x, dt, A, B, C, self.chunk_size), x, z)

    def token_matrix(self, u: torch.Tensor) -> torch.Tensor:
        """Explicit M (b, nheads, L, L) for input ``u``."""
        _, _, B, C, dt, A = self._ssm_inputs(u)
        return ssd_token_matrix(B, C, dt, A)

    def forward_explicit(
        self, u: torch.Tensor, m_offset: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same output as :meth:`forward` but computed as ``M @ x``; returns (output, M).

        ``m_offset`` (same shape as M) is added to M before use: handy for finite-difference checks.
        """
        z, x, B, C, dt, A = self._ssm_inputs(u)
        m = ssd_token_matrix(B, C, dt, A)
        m_used = m if m_offset is None else m + m_offset
        y = torch.matmul(m_used, x.transpose(1, 2)).transpose(1, 2)  # b l h p
        return self._finish(y, x, z), m


class _ResidualMamba(nn.Module):
    """Pre-norm residual wrapper: x + mixer(norm(x)) (or mixer(norm(x)) when residual=False)."""

    def __init__(self, mixer: Mamba2, residual: bool, dropout: float) -> None:
        super().__init__()
        self.norm = RMSNorm(mixer.d_model)
        self.mixer = mixer
        self.residual = residual
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.mixer(self.norm(x)))
        return x + y if self.residual else y

    def forward_explicit(
        self, x: torch.Tensor, m_offset: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y, m = self.mixer.forward_explicit(self.norm(x), m_offset)
        y = self.dropout(y)
        return (x + y if self.residual else y), m


class Mamba2LM(nn.Module):
    """Embedding -> n_layers residual Mamba2 blocks -> RMSNorm -> LM head (tied to the embedding by default).

    Input int64 token ids (B, L); output logits (B, L, vocab_size). ``residual=False`` drops the skip
    connections (to study rank collapse of stacked SSD layers).
    """

    def __init__(
        self,
        vocab_size: int = 256,
        d_model: int = 64,
        n_layers: int = 2,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 16,
        ngroups: int = 1,
        chunk_size: int = 8,
        residual: bool = True,
        tie_embeddings: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.emb_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            _ResidualMamba(
                Mamba2(d_model, d_state, d_conv, expand, headdim, ngroups, chunk_size), residual, dropout
            )
            for _ in range(n_layers)
        )
        self.norm_f = RMSNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.embedding.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.emb_dropout(self.embedding(input_ids))
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm_f(x))

    def forward_explicit(
        self, input_ids: torch.Tensor, m_offsets: list[torch.Tensor | None] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits computed through the explicit token matrices, plus the matrices ((B, H, L, L) per layer).

        The matrices are part of the autograd graph, so ``torch.autograd.grad(loss, mats)`` gives dL/dM_l
        (``retain_grad`` is also set so ``loss.backward()`` fills ``M.grad``). ``m_offsets[l]`` is added to
        M_l before use (finite-difference checks).
        """
        if m_offsets is not None and len(m_offsets) != len(self.layers):
            raise ValueError(f"Mamba2LM: m_offsets has {len(m_offsets)} entries, expected {len(self.layers)}")
        x = self.emb_dropout(self.embedding(input_ids))
        mats: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            x, m = layer.forward_explicit(x, None if m_offsets is None else m_offsets[i])
            if m.requires_grad:
                m.retain_grad()
            mats.append(m)
        return self.lm_head(self.norm_f(x)), mats

    def token_matrices(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        """The explicit SSD matrix of every layer (list of (B, nheads, L, L)).

        For dL/dM use :meth:`forward_explicit`, whose logits are computed through these same matrices.
        """
        return self.forward_explicit(input_ids)[1]


def mamba2_tiny(
    vocab_size: int = 256,
    d_model: int = 64,
    n_layers: int = 2,
    d_state: int = 16,
    d_conv: int = 4,
    expand: int = 2,
    headdim: int = 16,
    ngroups: int = 1,
    chunk_size: int = 8,
    residual: bool = True,
    dropout: float = 0.0,
) -> Mamba2LM:
    """Tiny Mamba2 LM (8 heads of 16 at d_model 64)."""
    return Mamba2LM(
        vocab_size,
        d_model,
        n_layers,
        d_state,
        d_conv,
        expand,
        headdim,
        ngroups,
        chunk_size,
        residual,
        dropout=dropout,
    )
