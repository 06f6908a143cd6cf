"""AutoGO's PSC (Prefix–Segment–Context) accuracy predictor, and the whole-graph GNN baseline beside it.

**Splits.** A graph's nodes are put in the canonical topological order shared with AutoGO mining/mutation
(:func:`graphopt.passes.autogo.tokens.canonical_order`). A split cuts that sequence into three contiguous parts:
prefix P = nodes before the segment, segment S = a contiguous run, context C = nodes after it (P or C may be
empty; an empty part embeds as the zero vector). Edges that cross parts are dropped, so the three parts are
encoded as three separate graphs. For a segment given by node names (a mutant's replaced nodes, which need not
be contiguous in the order) a node outside S goes to P if it comes before S's first node, to C if after its
last, and, between the two, to P when it is an ancestor of an S node, else to C.

*Training splits*: every epoch draws ``splits_per_graph`` fresh random splits per labeled graph (segment length
uniform in ``1..max_seg_len``, start uniform), each carrying the graph's label — a bounded random sample of
"every (P, S, C) split", re-drawn each epoch. *Scoring splits* (:func:`graph_splits`) are deterministic:
windows tiling the order (so every node is in some segment) at lengths ``seg_lengths``, thinned evenly to at
most ``max_splits``; :meth:`PSCPredictor.score_graph` is the mean over them.

**Model.** Node features of :mod:`.gnn_features` (32 dims) → 6 ``GraphConv`` (k-GNN) layers, hidden 32, tanh,
mean pooling per part, one encoder shared by P, S and C → concatenation (96) → MLP (96→64→ReLU→1). The
whole-graph baseline (``mode="whole"``) runs the same encoder on the unsplit graph → MLP (32→64→1).
Message direction (the paper does not say): ``edges="alternate"`` — odd layers aggregate from producers, even
layers from consumers, so direction is kept and a node still sees both sides. Measured on NB201 (4,000 training
graphs, 4 epochs, 500 held out, Spearman): alternate .965, undirected .937 (lr 3e-3; .914 at 1e-3), forward only
.903 (lr 1e-3).

**Labels** are Gaussianized ranks (``label_transform="rank"``: normal scores of the training ranks; scores map
back to accuracy units by interpolating 257 stored training quantiles, a monotone map). Why: NB201 accuracies
have a long low tail (2 % of the cells sit at 10 %) that dominates an MSE on z-scored labels; measured Spearman
.914 (rank) vs .826 (z-score) in the setting above. ``"zscore"`` remains available.

**Training**: MSE, Adam, batch 32 splits, gradient-norm clip 5 (paper), with a cosine learning-rate decay and
lr 5e-3 instead of the paper's 1e-4: on 2 CPU cores we get far fewer steps than the paper's 40 GPU epochs of
all splits, and 5e-3 + cosine reaches Spearman ≥ 0.98 on held-out NB201 within ~6 epochs (1e-3: .914, 1e-2:
.917 vs 5e-3: .965 in the 4,000-graph setting; see ``benchmarks/psc_nb201.py``). The shipped weights use the
paper's 40 epochs (one fresh random split per graph per epoch). Optional self-supervised pretraining
(:func:`pretrain_state`: regress label-free :func:`graph_statistics` of unlabeled graphs) helps a lot when
only 128/512 graphs are labeled (see *Few labels*).

**Few labels** (128 / 512 graphs, the FLAN comparison of ``benchmarks/psc_nb201.py``). Measured on a
validation split of the NB201 *training* portion (600 graphs; one training subset; τ = Kendall): the 2,000-step
recipe memorizes 128 labels (final MSE 0.002 on Gaussianized ranks) yet the held-out τ peaks early and then
stays flat (early stopping on a 20 % fold: best epoch 14 of 62, τ .715 vs .711 without) — the error is variance
of a model fitted to few labels, not late overfitting. A pairwise logistic ranking loss added to the MSE
(``rank_loss=1``) did not help (.701; .686 with early stopping). Early stopping on 26-graph folds is too noisy
(members stop at epochs 2-7, τ .65-.68 each). A lower lr (1e-3) gave .711 against .718 at 5e-3 (20 epochs).
The self-supervised pretraining is worth +.10 (single model, 20 epochs: none .621; 1, 2, 4, 6 pretraining
epochs .700, .718, .698, .687 — longer is not better). What reduced the variance is an ensemble of seeds
(:func:`train_ensemble`, mean latent score, :class:`PSCEnsemble`): on the held-out NB201 graphs (mean ± std
over 3 training subsets) 3 members reached τ .710 ± .008 at 128 graphs (members alone .696) and 2 members
.815 ± .005 at 512 (alone .804), against the single-model .688 / .801 before. The larger step was the feature
view (``effective=True``, :func:`.gnn_features.effective_view`): the lowered network writes ``none`` as
``mul(x, 0)`` and keeps every path it kills, so a conv fed only by zeros looked live to 6 layers of ±3-hop
message passing. Reading only the data-dependent graph (dead paths removed, 156 instead of 214 nodes on
average; equal computations give equal features, and the cells at 10 % collapse to one shared graph) gives,
same recipe and subsets: τ .778 ± .015 at 128 (members alone .772) and .861 ± .002 at 512 (alone .855).
On the effective graph longer pretraining pays again (on the full view it did not): 4 epochs give .793 ± .008
at 128 and .864 ± .007 at 512, 6 epochs .797 ± .011 and .869 ± .005 — FLAN's GIN, which reads the 8-node
cell, reports .785 / .877. Old weight
files have no ``effective`` entry and load with the full view they were trained on.
``val_fraction`` (early stopping; in an ensemble one fold per member) stays available, off by default.

**Mutant rule** (:meth:`PSCPredictor.fits`): a mutant whose replaced nodes are S* is kept when
PSC(P, S*, C) > mean PSC over the splits of the parent graph. With ``graphopt.passes.autogo.mutate``:
``pred.fits(parent, m.graph, m.mutation.new_nodes)``.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from graphopt.ir.graph import Graph

from .gnn_features import (
    FEATURE_DIM,
    NodeEmbedding,
    PackedGraphs,
    RawFeatures,
    canonical_nodes,
    default_op_vocab,
    effective_view,
    raw_features,
    view_features,
)

__all__ = ["GNNEncoder", "PSCConfig", "PSCEnsemble", "PSCNet", "PSCPredictor", "default_weights_path",
           "graph_splits", "graph_statistics", "predict_packed", "pretrain_state", "segment_parts", "train_ensemble",
           "train_predictor", "val_folds"]


def default_weights_path() -> Path:
    """The shipped NB201-trained weights (``models/weights/psc_nb201.pt``, package data of graphopt.models)."""
    import graphopt.models

    return Path(graphopt.models.__file__).parent / "weights" / "psc_nb201.pt"


# ------------------------------------------------------------------------------------------------------ splits
def graph_splits(n: int, seg_lengths: Sequence[int] = (4, 8, 16), max_splits: int = 32) -> list[tuple[int, int]]:
    """Deterministic scoring splits of an ``n``-node order as ``(start, end)`` segment ranges.

    The tiling at the longest length (grown to ``ceil(n / max_splits)`` for very large graphs) is always kept
    whole, so every node lies in some segment; windows of the shorter lengths fill the remaining budget, picked
    evenly along the order.
    """
    if n <= 0:
        raise ValueError("graph_splits: the graph has no nodes")
    lens = sorted({max(1, min(int(L), n)) for L in seg_lengths}, reverse=True)
    cover_len = max(lens[0], math.ceil(n / max_splits))
    cover = [(s, min(s + cover_len, n)) for s in range(0, n, cover_len)]
    extra: list[tuple[int, int]] = []
    for L in lens[1:] if cover_len == lens[0] else lens:
        extra += [(s, min(s + L, n)) for s in range(0, n, L)]
    extra = [sp for sp in extra if sp not in set(cover)]
    budget = max_splits - len(cover)
    if budget > 0 and extra:
        pick = np.unique(np.linspace(0, len(extra) - 1, min(budget, len(extra))).round().astype(int))
        cover += [extra[i] for i in pick]
    return sorted(set(cover))


def segment_parts(graph: Graph, segment: Iterable[str], order: Sequence | None = None, *,
                  ignore_missing: bool = False) -> np.ndarray:
    """Part id per canonical position (0 = P, 1 = S, 2 = C) for a segment given by node names (module doc).

    ``order`` may be a subset of the graph's nodes (the live nodes of an effective view); with
    ``ignore_missing`` segment names outside it are skipped, and a segment with none left is all prefix (S
    empty: the replaced nodes compute nothing that reaches an output).
    """
    nodes = list(order) if order is not None else canonical_nodes(graph)
    pos = {n.name: i for i, n in enumerate(nodes)}
    seg = list(dict.fromkeys(segment))
    if not seg:
        raise ValueError(f"empty segment for graph {graph.name!r}; pass at least one node name")
    missing = [s for s in seg if s not in pos]
    if missing and not ignore_missing:
        raise KeyError(f"segment nodes {missing[:5]} are not nodes of graph {graph.name!r}")
    seg = [s for s in seg if s in pos]
    if not seg:
        return np.zeros(len(nodes), dtype=np.int64)
    sp = sorted(pos[s] for s in seg)
    first, last = sp[0], sp[-1]
    parts = np.full(len(nodes), 2, dtype=np.int64)
    parts[:first] = 0
    parts[sp] = 1
    if last - first + 1 > len(sp):  # non-contiguous: ancestors of S between first and last go to P
        anc: set[int] = set()
        seen: set[int] = set()
        stack = [nodes[i] for i in sp]
        idx = {id(n): i for i, n in enumerate(nodes)}
        while stack:
            nd = stack.pop()
            for p in nd.input_producers():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                i = idx.get(id(p))  # None: a node outside ``order`` (removed by an effective view); walk through
                if i is None or i > first:
                    if i is not None:
                        anc.add(i)
                    stack.append(p)
        for i in range(first + 1, last):
            if parts[i] != 1 and i in anc:
                parts[i] = 0
    return parts


# ------------------------------------------------------------------------------------------------------- model
@dataclass
class PSCConfig:
    """Everything needed to rebuild a predictor (JSON-able; saved next to the weights)."""

    mode: str = "psc"  # "psc" or "whole"
    hidden: int = FEATURE_DIM
    layers: int = 6
    mlp_hidden: int = 64
    edges: str = "alternate"  # "alternate", "undirected" or "forward" (see GNNEncoder)
    label_transform: str = "rank"  # "rank" (Gaussianized ranks) or "zscore"
    y_quantiles: list[float] = field(default_factory=list)
    vocab: list[str] = field(default_factory=default_op_vocab)
    y_mean: float = 0.0
    y_std: float = 1.0
    max_seg_len: int = 24
    seg_lengths: list[int] = field(default_factory=lambda: [4, 8, 16])
    max_splits: int = 32
    # features of the data-dependent graph only (gnn_features.effective_view: dead ``x * 0`` paths removed);
    # configs saved before this field existed load with False, the features they were trained on
    effective: bool = True
    # training record (informational)
    epochs: int = 40
    batch_size: int = 32
    lr: float = 5e-3
    lr_schedule: str = "cosine"  # "cosine" (to 0 over the run) or "constant"
    weight_decay: float = 0.0  # > 0: AdamW with decoupled weight decay (regularizes small training sets)
    rank_loss: float = 0.0  # weight of a pairwise logistic ranking loss added to the MSE (0 = MSE only)
    pretrain_epochs: int = 0  # epochs of self-supervised pretraining when train_predictor gets ``pretrain``
    grad_clip: float = 5.0
    splits_per_graph: int = 1
    seed: int = 0
    # early stopping (0 = off, the default): hold out fold ``val_fold`` of ``round(1 / val_fraction)`` seeded
    # folds of the training graphs, score them (Kendall τ) after every epoch, keep the best epoch's weights
    val_fraction: float = 0.0
    val_fold: int = 0
    train_info: dict[str, Any] = field(default_factory=dict)


class GNNEncoder(nn.Module):
    """Node embedding → ``layers`` × (GraphConv, tanh) → mean pool per group.

    ``edges`` sets the message direction over producer→consumer edges: ``undirected`` (both ways, one weight),
    ``forward`` (from producers only) or ``alternate`` (odd layers from producers, even layers from consumers).
    """

    def __init__(self, num_ops: int, hidden: int = 32, layers: int = 6, edges: str = "undirected") -> None:
        super().__init__()
        from torch_geometric.nn import GraphConv

        if edges not in ("undirected", "forward", "alternate"):
            raise ValueError(f"edges must be undirected, forward or alternate, got {edges!r}")
        self.edges = edges
        self.embed = NodeEmbedding(num_ops)
        dims = [FEATURE_DIM] + [hidden] * layers
        self.convs = nn.ModuleList(GraphConv(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x_op: torch.Tensor, x_res: torch.Tensor, x_kernel: torch.Tensor, x_bias: torch.Tensor,
                edge_index: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
        from torch_geometric.utils import scatter

        h = self.embed(x_op, x_res, x_kernel, x_bias)
        rev = edge_index.flip(0)
        if self.edges == "undirected":
            edge_index = torch.cat([edge_index, rev], dim=1)
        for i, conv in enumerate(self.convs):
            h = torch.tanh(conv(h, rev if self.edges == "alternate" and i % 2 else edge_index))
        return scatter(h, group, dim=0, dim_size=num_groups, reduce="mean")


class PSCNet(nn.Module):
    """PSC (3 pooled parts, concatenated) or whole-graph (1 pooled graph) head over a shared encoder."""

    def __init__(self, cfg: PSCConfig) -> None:
        super().__init__()
        if cfg.mode not in ("psc", "whole"):
            raise ValueError(f"PSCConfig.mode must be 'psc' or 'whole', got {cfg.mode!r}")
        self.parts = 3 if cfg.mode == "psc" else 1
        self.encoder = GNNEncoder(len(cfg.vocab), cfg.hidden, cfg.layers, cfg.edges)
        self.head = nn.Sequential(nn.Linear(cfg.hidden * self.parts, cfg.mlp_hidden), nn.ReLU(),
                                  nn.Linear(cfg.mlp_hidden, 1))

    def forward(self, batch: dict[str, torch.Tensor], num_samples: int) -> torch.Tensor:
        z = self.encoder(batch["x_op"], batch["x_res"], batch["x_kernel"], batch["x_bias"], batch["edge_index"],
                         batch["group"], num_samples * self.parts)
        return self.head(z.view(num_samples, -1)).squeeze(-1)


# ----------------------------------------------------------------------------------------------------- batching
class _Source:
    """Feature arrays (as tensors, vocabulary ids) that batches are gathered from: a PackedGraphs or one graph."""

    def __init__(self, op, res, kernel, bias, node_ptr, edges, edge_ptr) -> None:
        self.op = torch.as_tensor(op, dtype=torch.long)
        self.res = torch.as_tensor(np.asarray(res, dtype=np.float32))
        self.kernel = torch.as_tensor(np.asarray(kernel, dtype=np.int64))
        self.bias = torch.as_tensor(np.asarray(bias, dtype=np.float32))
        self.node_ptr = np.asarray(node_ptr, dtype=np.int64)
        self.edges = np.asarray(edges, dtype=np.int64)
        self.edge_ptr = np.asarray(edge_ptr, dtype=np.int64)

    @staticmethod
    def packed(p: PackedGraphs, vocab: Sequence[str]) -> _Source:
        return _Source(p.op_ids(vocab), p.res, p.kernel, p.bias, p.node_ptr, p.edges, p.edge_ptr)

    @staticmethod
    def single(f: RawFeatures) -> _Source:
        return _Source(f.op, f.res, f.kernel, f.bias, [0, f.num_nodes], f.edges, [0, f.edges.shape[1]])

    def num_nodes(self, g: int) -> int:
        return int(self.node_ptr[g + 1] - self.node_ptr[g])

    def batch(self, gids: np.ndarray, parts: list[np.ndarray] | np.ndarray | None) -> dict[str, torch.Tensor]:
        """Gather samples ``gids`` (repeats allowed); ``parts`` = per-sample part ids (len = n nodes), or a
        [B, 2] array of (start, end) segment ranges, or None (whole graphs)."""
        gids = np.asarray(gids, dtype=np.int64)
        cnt = self.node_ptr[gids + 1] - self.node_ptr[gids]
        off = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        total = int(cnt.sum())
        rep = np.repeat(np.arange(len(gids)), cnt)
        local = np.arange(total) - off[rep]
        node_idx = self.node_ptr[gids][rep] + local
        if parts is None:
            part = np.zeros(total, dtype=np.int64)
            nparts = 1
        elif isinstance(parts, np.ndarray) and parts.ndim == 2:
            part = (local >= parts[rep, 0]).astype(np.int64) + (local >= parts[rep, 1])
            nparts = 3
        else:
            part = np.concatenate(parts).astype(np.int64)
            nparts = 3
        ecnt = self.edge_ptr[gids + 1] - self.edge_ptr[gids]
        erep = np.repeat(np.arange(len(gids)), ecnt)
        eoff = np.concatenate([[0], np.cumsum(ecnt)[:-1]])
        eidx = self.edge_ptr[gids][erep] + (np.arange(int(ecnt.sum())) - eoff[erep])
        src = self.edges[0, eidx] + off[erep]
        dst = self.edges[1, eidx] + off[erep]
        if nparts == 3:
            keep = part[src] == part[dst]
            src, dst = src[keep], dst[keep]
        ei = np.stack([src, dst])
        ni = torch.from_numpy(node_idx)
        return {"x_op": self.op[ni], "x_res": self.res[ni], "x_kernel": self.kernel[ni], "x_bias": self.bias[ni],
                "edge_index": torch.from_numpy(np.ascontiguousarray(ei)),
                "group": torch.from_numpy(rep * nparts + part)}


def _random_splits(rng: np.random.Generator, n: np.ndarray, max_len: int) -> np.ndarray:
    """One random (start, end) segment per entry of ``n`` (lengths uniform in 1..min(max_len, n))."""
    L = np.minimum(rng.integers(1, max_len + 1, size=len(n)), n)
    a = (rng.random(len(n)) * (n - L + 1)).astype(np.int64)
    return np.stack([a, a + L], axis=1)


# ------------------------------------------------------------------------------------------------- predictor
class PSCPredictor:
    """A trained PSC (or whole-graph) predictor: scores IR graphs and segments in accuracy units (label %)."""

    def __init__(self, cfg: PSCConfig, net: PSCNet | None = None) -> None:
        self.cfg = cfg
        self.net = net if net is not None else PSCNet(cfg)
        self.net.eval()
        self._parent_cache: OrderedDict[str, float] = OrderedDict()

    # -------------------------------------------------------------- persistence
    def save(self, path: Path | str) -> None:
        """``torch.save`` of ``{"config": <JSON-able dict>, "state_dict": ...}`` (loadable with weights_only)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({"format": "graphopt-psc-v1", "config": asdict(self.cfg),
                    "state_dict": {k: v.detach().clone() for k, v in self.net.state_dict().items()}}, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path | str) -> PSCPredictor:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"PSC weights {path} not found; train them with `graphopt predictor train -o "
                                    f"{path}`")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != "graphopt-psc-v1":
            raise ValueError(f"{path} is not a graphopt PSC predictor file (missing format 'graphopt-psc-v1')")
        preds = []
        for b in [blob, *blob.get("members", [])]:
            pred = PSCPredictor(PSCConfig(**{"effective": False, **b["config"]}))
            pred.net.load_state_dict(b["state_dict"])
            pred.net.eval()
            preds.append(pred)
        return preds[0] if len(preds) == 1 else PSCEnsemble(preds)

    @classmethod
    def load_default(cls) -> PSCPredictor:
        """The shipped NB201 weights (:func:`default_weights_path`)."""
        return cls.load(default_weights_path())

    # -------------------------------------------------------------- labels
    def to_accuracy(self, z: np.ndarray | float) -> np.ndarray:
        """Map the network's latent output back to label units (accuracy %); monotone."""
        z = np.asarray(z, dtype=np.float64)
        if self.cfg.label_transform == "rank":
            q = np.asarray(self.cfg.y_quantiles, dtype=np.float64)
            return np.interp(z, _normal_grid(len(q)), q)
        return z * self.cfg.y_std + self.cfg.y_mean

    # -------------------------------------------------------------- scoring
    def features(self, graph: Graph) -> tuple[RawFeatures, list]:
        """Features and the nodes they describe, in order (only the live ones with ``cfg.effective``)."""
        order = canonical_nodes(graph)
        if self.cfg.effective:  # one view for both: features and the node order that segments map onto
            view = effective_view(graph, order)
            return view_features(view, self.cfg.vocab, graph.name), view.nodes
        return raw_features(graph, self.cfg.vocab, order), order

    @torch.no_grad()
    def _latent(self, src: _Source, gids: np.ndarray, parts, chunk: int = 256) -> np.ndarray:
        out = []
        for i in range(0, len(gids), chunk):
            sl = slice(i, i + chunk)
            p = parts[sl] if parts is not None else None
            b = src.batch(gids[sl], p)
            out.append(self.net(b, len(gids[sl])).numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def _latent_segment(self, graph: Graph, segment: Iterable[str]) -> float:
        f, order = self.features(graph)
        src = _Source.single(f)
        parts = None if self.cfg.mode == "whole" else [segment_parts(graph, segment, order,
                                                                        ignore_missing=self.cfg.effective)]
        return float(self._latent(src, np.zeros(1, np.int64), parts)[0])

    def _latent_splits(self, f: RawFeatures, splits: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
        src = _Source.single(f)
        if self.cfg.mode == "whole":
            return self._latent(src, np.zeros(1, np.int64), None)
        sp = np.asarray(splits if splits is not None else
                        graph_splits(f.num_nodes, self.cfg.seg_lengths, self.cfg.max_splits), dtype=np.int64)
        return self._latent(src, np.zeros(len(sp), np.int64), sp.reshape(-1, 2))

    def score(self, graph: Graph, segment: Iterable[str]) -> float:
        """PSC(P, S, C) in accuracy units for the segment S given by node names (whole mode ignores S)."""
        return float(self.to_accuracy(self._latent_segment(graph, segment)))

    def score_splits(self, graph: Graph, splits: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
        """Scores of ``(start, end)`` canonical-position splits (default: :func:`graph_splits`)."""
        f, _ = self.features(graph)
        return self.to_accuracy(self._latent_splits(f, splits))

    def _latent_graph(self, graph: Graph) -> float:
        f, _ = self.features(graph)
        return float(self._latent_splits(f).mean())

    def score_graph(self, graph: Graph) -> float:
        """Mean PSC over the deterministic splits of ``graph`` (averaged in the network's latent space, then
        mapped to accuracy units); the whole-graph prediction in ``whole`` mode."""
        return float(self.to_accuracy(self._latent_graph(graph)))

    def fits(self, parent: Graph, mutant: Graph, segment: Iterable[str], margin: float = 0.0) -> bool:
        """AutoGO's acceptance rule: PSC(P, S*, C) of the mutant (S* = its replaced nodes, by name) must beat
        the mean PSC over the parent's splits (by more than ``margin`` accuracy points). Compared in latent
        space when ``margin`` is 0 (exact, no ties from the label mapping); parent means are cached by
        structure hash."""
        from graphopt.ir.serialize import structure_hash

        key = structure_hash(parent)
        if key not in self._parent_cache:
            self._parent_cache[key] = self._latent_graph(parent)
            if len(self._parent_cache) > 256:
                self._parent_cache.popitem(last=False)
        zp, zm = self._parent_cache[key], self._latent_segment(mutant, segment)
        if margin == 0.0:
            return zm > zp
        return float(self.to_accuracy(zm)) > float(self.to_accuracy(zp)) + margin


class PSCEnsemble(PSCPredictor):
    """Several predictors trained on the same labels (seeds, early-stopping folds: :func:`train_ensemble`);
    every score is the mean of the members' latent scores, mapped to accuracy by the first member's label map
    (identical across members, the transform is fitted on the same training labels). Same API as
    :class:`PSCPredictor`; saved as one file that :meth:`PSCPredictor.load` reads back as an ensemble."""

    def __init__(self, members: Sequence[PSCPredictor]) -> None:
        members = list(members)
        if not members:
            raise ValueError("PSCEnsemble: no members")
        if len({(m.cfg.mode, tuple(m.cfg.vocab), m.cfg.label_transform) for m in members}) != 1:
            raise ValueError("PSCEnsemble: members differ in mode, vocabulary or label transform")
        super().__init__(members[0].cfg, members[0].net)
        self.members = members

    def _latent(self, src: _Source, gids: np.ndarray, parts, chunk: int = 256) -> np.ndarray:
        return np.mean([PSCPredictor._latent(m, src, gids, parts, chunk) for m in self.members], axis=0)

    def save(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        blobs = [{"config": asdict(m.cfg), "state_dict": {k: v.detach().clone() for k, v in
                                                          m.net.state_dict().items()}} for m in self.members]
        torch.save({"format": "graphopt-psc-v1", **blobs[0], "members": blobs[1:]}, tmp)
        tmp.replace(path)


def _normal_grid(k: int) -> np.ndarray:
    """Standard-normal scores of ``k`` evenly spaced quantile levels (the rank transform's grid)."""
    from scipy.stats import norm

    return norm.ppf((np.arange(k) + 0.5) / k)


def predict_packed(pred: PSCPredictor, data: PackedGraphs, chunk: int = 256, latent: bool = False) -> np.ndarray:
    """Graph-level predictions (mean latent over scoring splits in PSC mode, mapped to accuracy unless
    ``latent``) for every graph of ``data``."""
    src = _Source.packed(data, pred.cfg.vocab)
    n = data.num_nodes
    if pred.cfg.mode == "whole":
        z = pred._latent(src, np.arange(len(data)), None, chunk)
    else:
        gids, sps = [], []
        for g in range(len(data)):
            s = graph_splits(int(n[g]), pred.cfg.seg_lengths, pred.cfg.max_splits)
            gids += [g] * len(s)
            sps += s
        zs = pred._latent(src, np.asarray(gids, np.int64), np.asarray(sps, np.int64), chunk)
        z = np.bincount(gids, weights=zs, minlength=len(data)) / np.bincount(gids, minlength=len(data))
    return z if latent else pred.to_accuracy(z)


def _fit_labels(cfg: PSCConfig, y: np.ndarray) -> np.ndarray:
    """Set the config's label statistics from training labels; returns the training targets."""
    from scipy.stats import norm, rankdata

    cfg.y_mean = float(y.mean())
    cfg.y_std = float(y.std()) or 1.0
    if cfg.label_transform == "rank":
        k = 257
        cfg.y_quantiles = [float(v) for v in np.quantile(y, (np.arange(k) + 0.5) / k)]
        return norm.ppf((rankdata(y) - 0.5) / len(y)).astype(np.float32)
    if cfg.label_transform != "zscore":
        raise ValueError(f"label_transform must be 'rank' or 'zscore', got {cfg.label_transform!r}")
    return ((y - cfg.y_mean) / cfg.y_std).astype(np.float32)


# -------------------------------------------------------------------------------------------------- training
def graph_statistics(data: PackedGraphs, vocab: Sequence[str] | None = None) -> np.ndarray:
    """Label-free structural statistics per graph (the self-supervised pretraining targets), z-scored.

    Columns: log2(1 + weighted MACs) and log2(1 + weights) of conv/gemm nodes (from Cin, Cout, kernel, Hout,
    Wout; groups ignored), the longest producer→consumer path counted in conv/gemm nodes, log2 of the number
    of source→sink paths, log2 of the node count, and the fraction of nodes of each op type in ``data``.
    """
    names = list(data.op_names)
    weighted = np.array([n in ("conv", "conv_transpose", "gemm", "matmul") for n in names])
    res = np.round(np.exp2(np.asarray(data.res, dtype=np.float64) * 12.0))  # undo log2(v)/12
    hin, hout, win, wout, cin, cout = res.T
    k = np.maximum(np.asarray(data.kernel, dtype=np.float64), 1.0)
    w_node = weighted[data.op.astype(np.int64)]
    params = np.where(w_node, cin * cout * k * k, 0.0)
    macs = params * np.where(w_node, hout * wout, 0.0)
    G = len(data)
    gid = np.repeat(np.arange(G), data.num_nodes)
    out = np.zeros((G, 5 + len(names)))
    out[:, 0] = np.log2(1 + np.bincount(gid, macs, G))
    out[:, 1] = np.log2(1 + np.bincount(gid, params, G))
    for g in range(G):
        a, b = data.node_ptr[g], data.node_ptr[g + 1]
        e = data.edges[:, data.edge_ptr[g]:data.edge_ptr[g + 1]].astype(np.int64)
        n = b - a
        wn = w_node[a:b].astype(np.float64)
        longest, paths = wn.copy(), np.zeros(n)
        has_in = np.zeros(n, bool)
        has_in[e[1]] = True
        paths[~has_in] = 1.0
        order = np.argsort(e[1], kind="stable")  # canonical positions are topological: process by consumer
        src, dst = e[0][order], e[1][order]
        for s_, d_ in zip(src.tolist(), dst.tolist(), strict=True):
            longest[d_] = max(longest[d_], longest[s_] + wn[d_])
            paths[d_] += paths[s_]
        sinks = np.ones(n, bool)
        sinks[e[0]] = False
        out[g, 2] = longest.max()
        out[g, 3] = np.log2(1 + paths[sinks].sum())
        out[g, 4] = np.log2(n)
        out[g, 5:] = np.bincount(data.op[a:b].astype(np.int64), minlength=len(names)) / n
    sd = out.std(0)
    return ((out - out.mean(0)) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


class _AuxNet(nn.Module):
    """The predictor's encoder with a separate multi-output head (self-supervised pretraining)."""

    def __init__(self, net: PSCNet, outputs: int, hidden: int) -> None:
        super().__init__()
        self.net = net
        self.aux = nn.Sequential(nn.Linear(net.head[0].in_features, hidden), nn.ReLU(), nn.Linear(hidden, outputs))

    def forward(self, batch: dict[str, torch.Tensor], num_samples: int) -> torch.Tensor:
        enc = self.net.encoder
        z = enc(batch["x_op"], batch["x_res"], batch["x_kernel"], batch["x_bias"], batch["edge_index"],
                batch["group"], num_samples * self.net.parts)
        return self.aux(z.view(num_samples, -1))


def _fit(module: nn.Module, src: _Source, n: np.ndarray, targets: torch.Tensor, cfg: PSCConfig, epochs: int,
         lr: float, per: int, rng: np.random.Generator, log: Callable[[str], None] | None, t0: float,
         time_budget: float | None, after_epoch: Callable[[dict], None] | None = None, tag: str = ""
         ) -> tuple[list[dict], bool]:
    """The training loop shared by supervised training and pretraining (module doc, *Training*)."""
    params = [p for p in module.parameters() if p.requires_grad]
    opt = (torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay) if cfg.weight_decay > 0
           else torch.optim.Adam(params, lr=lr))
    steps = max(1, epochs * math.ceil(len(n) * per / cfg.batch_size))
    if cfg.lr_schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {cfg.lr_schedule!r}")
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda k: 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps))) if cfg.lr_schedule == "cosine"
        else (lambda k: 1.0))
    history: list[dict] = []
    stop = False
    for epoch in range(epochs):
        module.train()
        gids = rng.permutation(np.repeat(np.arange(len(n)), per))
        splits = _random_splits(rng, n[gids], cfg.max_seg_len) if cfg.mode == "psc" else None
        tot, cnt = 0.0, 0
        for i in range(0, len(gids), cfg.batch_size):
            g = gids[i:i + cfg.batch_size]
            b = src.batch(g, splits[i:i + cfg.batch_size] if splits is not None else None)
            out, tgt = module(b, len(g)), targets[torch.from_numpy(g)]
            loss = nn.functional.mse_loss(out, tgt)
            if cfg.rank_loss > 0 and out.dim() == 1:
                diff = out[:, None] - out[None, :]
                sign = torch.sign(tgt[:, None] - tgt[None, :])
                mask = sign != 0
                if mask.any():
                    loss = loss + cfg.rank_loss * nn.functional.softplus(-sign[mask] * diff[mask]).mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(g)
            cnt += len(g)
            if time_budget is not None and time.time() - t0 > time_budget:
                stop = True
                break
        rec = {"epoch": epoch + 1, "loss": tot / max(cnt, 1), "seconds": round(time.time() - t0, 1)}
        module.eval()
        if after_epoch is not None:
            after_epoch(rec)
        history.append(rec)
        if log is not None:
            log(tag + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
        if stop:
            break
    return history, stop


def pretrain_state(pool: PackedGraphs, cfg: PSCConfig, log: Callable[[str], None] | None = None
                   ) -> dict[str, torch.Tensor]:
    """Self-supervised pretraining: a fresh network whose encoder learned to regress :func:`graph_statistics`
    of the (unlabeled) ``pool`` for ``cfg.pretrain_epochs`` epochs (one split per graph per epoch); returns its
    state dict, to pass as ``init_state`` to several :func:`train_predictor` runs."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1)
    net = PSCNet(cfg)
    stats = torch.from_numpy(graph_statistics(pool))
    aux = _AuxNet(net, stats.shape[1], cfg.mlp_hidden)
    _fit(aux, _Source.packed(pool, cfg.vocab), pool.num_nodes, stats, cfg, cfg.pretrain_epochs, cfg.lr, 1, rng,
         log, time.time(), None, tag="[pretrain] ")
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def val_folds(n: int, val_fraction: float, seed: int) -> list[np.ndarray]:
    """``round(1 / val_fraction)`` disjoint, seeded folds of ``range(n)`` (the early-stopping hold-outs)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    k = max(2, round(1.0 / val_fraction))
    return np.array_split(np.random.default_rng(seed + 7919).permutation(n), k)


def train_predictor(train: PackedGraphs, cfg: PSCConfig | None = None, *, val: PackedGraphs | None = None,
                    pretrain: PackedGraphs | None = None, init_state: dict[str, torch.Tensor] | None = None,
                    log: Callable[[str], None] | None = None, time_budget: float | None = None,
                    fold_seed: int | None = None) -> PSCPredictor:
    """Train a PSC (or whole-graph, ``cfg.mode="whole"``) predictor on labeled packed graphs.

    Each epoch draws ``cfg.splits_per_graph`` random splits per graph (one sample per graph in whole mode),
    shuffles them and takes Adam steps on batches of ``cfg.batch_size`` with MSE on transformed labels
    (``cfg.label_transform``), gradient-norm clipping and a cosine learning-rate decay. Deterministic for a
    given ``cfg.seed`` (single-threaded ops aside). ``time_budget`` (seconds) stops early between batches.

    ``pretrain`` (graphs whose labels are ignored, e.g. the whole unlabeled search space) first runs
    :func:`pretrain_state` on them — self-supervised pretraining that helps when few labeled graphs exist (the
    128/512-graph setting); ``init_state`` starts from such a state instead. The head is then trained on labels.

    ``cfg.val_fraction > 0``: early stopping — fold ``cfg.val_fold`` of :func:`val_folds` (seeded by
    ``fold_seed``, default ``cfg.seed``) is held out of training, its Kendall τ (graph score = mean over the
    scoring splits, as at test time) is measured after every epoch, and the weights of the best epoch are kept.
    The label transform is always fitted on all of ``train``. ``val`` only records ``val_spearman`` per epoch.
    """
    cfg = cfg if cfg is not None else PSCConfig()
    if len(train) == 0:
        raise ValueError("train_predictor: no training graphs")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    y = torch.from_numpy(_fit_labels(cfg, np.asarray(train.y, dtype=np.float64)))
    t0 = time.time()
    if pretrain is not None and cfg.pretrain_epochs > 0 and init_state is None:
        init_state = pretrain_state(pretrain, cfg, log)
    pred = PSCPredictor(cfg)
    net = pred.net
    if init_state is not None:
        net.load_state_dict(init_state)
    per = cfg.splits_per_graph if cfg.mode == "psc" else 1
    fit_set, hold = train, None
    if cfg.val_fraction > 0:
        folds = val_folds(len(train), cfg.val_fraction, cfg.seed if fold_seed is None else fold_seed)
        hold_idx = folds[cfg.val_fold % len(folds)]
        keep = np.setdiff1d(np.arange(len(train)), hold_idx)
        if len(hold_idx) < 2 or len(keep) == 0:
            raise ValueError(f"val_fraction={cfg.val_fraction}: too few graphs ({len(train)}) to hold out a fold")
        fit_set, hold = train.subset(keep), train.subset(hold_idx)
        y = y[torch.from_numpy(keep)]
    best: dict[str, Any] = {"tau": -math.inf, "epoch": 0, "state": None}

    def validate(rec: dict) -> None:
        from scipy.stats import kendalltau, spearmanr

        if val is not None and len(val):
            rec["val_spearman"] = float(spearmanr(predict_packed(pred, val, latent=True), val.y)[0])
        if hold is not None:
            tau = float(kendalltau(predict_packed(pred, hold, latent=True), hold.y)[0])
            tau = -1.0 if math.isnan(tau) else tau
            rec["hold_kendall"] = tau
            if tau > best["tau"]:
                best.update(tau=tau, epoch=rec["epoch"], state={k: v.detach().clone() for k, v in
                                                                net.state_dict().items()})

    history, stop = _fit(net, _Source.packed(fit_set, cfg.vocab), fit_set.num_nodes, y, cfg, cfg.epochs, cfg.lr,
                         per, rng, log, t0, time_budget, validate)
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    net.eval()
    cfg.train_info = {"graphs": len(fit_set), "epochs_run": len(history), "seconds": round(time.time() - t0, 1),
                      "final_loss": history[-1]["loss"] if history else None, "stopped_by_budget": stop,
                      "pretrained": init_state is not None}
    if hold is not None:
        cfg.train_info.update({"held_out": len(hold), "best_epoch": best["epoch"], "best_hold_kendall": best["tau"]})
    return pred


def train_ensemble(train: PackedGraphs, cfg: PSCConfig | None = None, members: int = 5, *,
                   pretrain: PackedGraphs | None = None, init_state: dict[str, torch.Tensor] | None = None,
                   log: Callable[[str], None] | None = None) -> PSCPredictor:
    """``members`` predictors (seeds ``cfg.seed + i``) averaged in latent space (:class:`PSCEnsemble`).

    With ``cfg.val_fraction > 0`` member ``i`` holds out fold ``i`` of the same seeded folds for early stopping
    (a cross-validation ensemble: every training graph is fitted by most members and held out by one or
    none). ``pretrain`` is run once and shared. ``members=1`` returns a plain :class:`PSCPredictor`.
    """
    from dataclasses import replace

    cfg = cfg if cfg is not None else PSCConfig()
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    if pretrain is not None and cfg.pretrain_epochs > 0 and init_state is None:
        init_state = pretrain_state(pretrain, cfg, log)
    preds = []
    for i in range(members):
        mcfg = replace(cfg, seed=cfg.seed + i, val_fold=cfg.val_fold + i, train_info={})
        mlog = (lambda s, i=i: log(f"[member {i}] {s}")) if log is not None else None
        preds.append(train_predictor(train, mcfg, init_state=init_state, log=mlog, fold_seed=cfg.seed))
    return preds[0] if members == 1 else PSCEnsemble(preds)
