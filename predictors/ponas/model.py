"""PO-NAS networks and losses: GAT encoder, label-free pretraining heads, per-metric weighting surrogate.

* :class:`GATEncoder` — 2 ``GATConv`` layers (hidden 128 = 4 heads × 32, ELU), mean pooling. Every directed
  edge is also used reversed, with a 2-d edge attribute telling the direction (so a 2-layer GAT sees both
  predecessors and successors without losing edge direction; our choice — the paper does not say).
* :class:`PretrainHeads` — metric regression from the graph embedding and masked-node reconstruction from
  node embeddings; loss ``0.5·MSE(metrics) + 0.3·MSE(masked node features)``, 20 % of nodes masked (their
  features replaced by a learned mask vector).
* :class:`Surrogate` — on the frozen encoder: the graph embedding is projected to ``a``; one learned
  embedding ``e_m`` per metric is the query of an 8-head cross-attention whose keys/values are ``a`` and the
  projected node embeddings of the architecture (our choice: attending over a single vector would be a constant map);
  gate ``g = σ(W[attn ⊙ a; e_m])``, ``fused = attn·g + attn``, an MLP gives the raw weight ``w_m(a)``,
  ``w̃_m = w_m / Σ_m |w_m|``. Initialisation (not given by the paper): PyTorch defaults, except that with
  ``prior > 0`` the bias of the last MLP layer starts at ``prior`` for every metric, so an untrained surrogate
  gives every architecture (nearly) equal positive weights, i.e. ``s(a) ≈`` the mean normalised metric — the
  same combined ranking the paper uses to pick the first queries. Fitting then moves the weights only where the
  evaluated architectures ask for it, instead of starting from random per-architecture weights whose ranking of
  the unevaluated pool is arbitrary.
* :func:`ponas_score` — ``s(a) = Σ_m relu(w̃_m)·x_m + relu(−w̃_m)·(1 − x_m)`` ∈ [0, 1].
* :func:`online_loss` — ``(1 − Pearson(s, y)) + 0.5·L_align + 100·mean_pairs relu(−Δs·Δy)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.nn import GATConv, global_mean_pool
from torch_geometric.utils import to_dense_batch

__all__ = [
    "GATEncoder",
    "PretrainHeads",
    "Surrogate",
    "normalize_weights",
    "ponas_score",
    "pearson",
    "align_loss",
    "pairwise_hinge",
    "online_loss",
]


class GATEncoder(nn.Module):
    """Graph → (node embeddings, graph embedding) with 2 GAT layers and mean pooling."""

    def __init__(self, in_dim: int, hidden: int = 128, heads: int = 4, n_layers: int = 2) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"GATEncoder: hidden={hidden} must be divisible by heads={heads}")
        self.in_dim, self.hidden = in_dim, hidden
        dims = [in_dim] + [hidden] * n_layers
        self.convs = nn.ModuleList(
            GATConv(dims[i], hidden // heads, heads=heads, edge_dim=2, add_self_loops=True, fill_value=0.0)
            for i in range(n_layers)
        )

    @staticmethod
    def both_directions(edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Edges plus their reverses, with edge attributes ``[1, 0]`` (forward) / ``[0, 1]`` (reverse)."""
        e = edge_index.size(1)
        ei = torch.cat([edge_index, edge_index.flip(0)], dim=1)
        attr = torch.zeros(2 * e, 2, device=edge_index.device)
        attr[:e, 0] = 1.0
        attr[e:, 1] = 1.0
        return ei, attr

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ei, attr = self.both_directions(edge_index)
        h = x
        for conv in self.convs:
            h = F.elu(conv(h, ei, attr))
        if batch is None:
            batch = torch.zeros(h.size(0), dtype=torch.long, device=h.device)
        return h, global_mean_pool(h, batch)


class PretrainHeads(nn.Module):
    """Label-free pretraining objective: predict the normalised metrics and reconstruct masked nodes."""

    def __init__(self, encoder: GATEncoder, n_metrics: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.mask_token = nn.Parameter(torch.zeros(encoder.in_dim))
        self.metric_head = nn.Sequential(
            nn.Linear(encoder.hidden, encoder.hidden), nn.ELU(), nn.Linear(encoder.hidden, n_metrics)
        )
        self.recon_head = nn.Linear(encoder.hidden, encoder.in_dim)

    def loss(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor,
        metrics: torch.Tensor,
        mask_ratio: float = 0.2,
        w_metric: float = 0.5,
        w_recon: float = 0.3,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        mask = torch.rand(x.size(0), generator=generator) < mask_ratio
        if not mask.any():
            mask[torch.randint(x.size(0), (1,), generator=generator)] = True
        xm = torch.where(mask.unsqueeze(1), self.mask_token.expand_as(x), x)
        node_h, graph_h = self.encoder(xm, edge_index, batch)
        l_metric = F.mse_loss(self.metric_head(graph_h), metrics)
        l_recon = F.mse_loss(self.recon_head(node_h[mask]), x[mask])
        return w_metric * l_metric + w_recon * l_recon


def normalize_weights(w: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``w̃ = w / Σ_m |w_m|`` along the last axis (so Σ|w̃| = 1)."""
    return w / (w.abs().sum(-1, keepdim=True) + eps)


def ponas_score(w_tilde: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``Σ_m relu(w̃_m)·x_m + relu(−w̃_m)·(1 − x_m)``; in [0, 1] when x ∈ [0, 1] and Σ|w̃| ≤ 1."""
    return (F.relu(w_tilde) * x + F.relu(-w_tilde) * (1.0 - x)).sum(-1)


class Surrogate(nn.Module):
    """Per-architecture signed metric weights from frozen encoder features (see module docstring)."""

    def __init__(self, enc_dim: int, n_metrics: int, d: int = 64, heads: int = 8, prior: float = 0.0) -> None:
        super().__init__()
        self.proj_a = nn.Linear(enc_dim, d)
        self.proj_nodes = nn.Linear(enc_dim, d)
        self.metric_emb = nn.Parameter(torch.randn(n_metrics, d) * 0.1)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.gate = nn.Linear(2 * d, d)
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        if prior:
            nn.init.constant_(self.mlp[-1].bias, float(prior))

    def raw_weights(
        self, graph_h: torch.Tensor, node_h: torch.Tensor, node_mask: torch.Tensor
    ) -> torch.Tensor:
        """``w_m(a)`` (P, M). ``node_h``: (P, Nmax, enc_dim) padded; ``node_mask`` True = real node."""
        a = self.proj_a(graph_h)  # P d
        kv = torch.cat([a.unsqueeze(1), self.proj_nodes(node_h)], dim=1)  # P (1+N) d
        pad = torch.cat([torch.zeros_like(node_mask[:, :1]), ~node_mask], dim=1)
        q = self.metric_emb.unsqueeze(0).expand(a.size(0), -1, -1)  # P M d
        attn, _ = self.attn(q, kv, kv, key_padding_mask=pad, need_weights=False)
        g = torch.sigmoid(self.gate(torch.cat([attn * a.unsqueeze(1), q], dim=-1)))
        fused = attn * g + attn
        return self.mlp(fused).squeeze(-1)

    def forward(self, graph_h: torch.Tensor, node_h: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        """Normalised signed weights ``w̃`` (P, M)."""
        return normalize_weights(self.raw_weights(graph_h, node_h, node_mask))


def dense_nodes(node_h: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad per-graph node embeddings to (P, Nmax, d) with a validity mask."""
    return to_dense_batch(node_h, batch)


def pearson(s: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of two 1-D tensors (0 when either is constant)."""
    sc, yc = s - s.mean(), y - y.mean()
    return (sc * yc).sum() / (sc.norm() * yc.norm() + eps)


def _pairs(v: torch.Tensor) -> torch.Tensor:
    i, j = torch.triu_indices(v.numel(), v.numel(), offset=1, device=v.device)
    return v[i] - v[j]


def align_loss(s: torch.Tensor, y: torch.Tensor, tie_eps: float = 0.1, eps: float = 1e-8) -> torch.Tensor:
    """Magnitude alignment: MSE between the standardised ``|Δs|`` and ``|Δy|`` over pairs that are
    near-ties (``|Δy| < tie_eps``) or correctly ordered (``Δs·Δy > 0``); 0 if there are none.

    Standardisation (z-score over all pairs) is our reading of "standardized |Δs| vs |Δy|".
    """
    ds, dy = _pairs(s), _pairs(y)
    if ds.numel() < 2:
        return s.sum() * 0.0
    zs = (ds.abs() - ds.abs().mean()) / (ds.abs().std() + eps)
    zy = (dy.abs() - dy.abs().mean()) / (dy.abs().std() + eps)
    keep = (dy.abs() < tie_eps) | (ds * dy > 0)
    if not keep.any():
        return s.sum() * 0.0
    return ((zs - zy)[keep] ** 2).mean()


def pairwise_hinge(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean_pairs relu(−Δs·Δy)``: penalises every mis-ordered pair by the product of the gaps."""
    ds, dy = _pairs(s), _pairs(y)
    if ds.numel() == 0:
        return s.sum() * 0.0
    return F.relu(-ds * dy).mean()


def online_loss(
    s: torch.Tensor,
    y: torch.Tensor,
    w_align: float = 0.5,
    w_hinge: float = 100.0,
    tie_eps: float = 0.1,
) -> torch.Tensor:
    """``(1 − Pearson(s, y)) + 0.5·L_align + 100·hinge`` on the evaluated set (y in the oracle's units)."""
    return (1.0 - pearson(s, y)) + w_align * align_loss(s, y, tie_eps) + w_hinge * pairwise_hinge(s, y)
