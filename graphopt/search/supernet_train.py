"""PyTorch weight-sharing supernets used by the search loops (DARTS/XNAS on NB201; S3 and DPS build theirs).

The search loops train these modules directly (fast, weight sharing); the IR side
(:func:`graphopt.supernet.nb201_graph` with ``arch=None``) describes the same space with the same parameter
names, so the chosen path is materialized through the IR from the trained weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from graphopt.models.nb201 import macro_skeleton, make_op
from graphopt.supernet import NB201_EDGES, NB201_OPS


class MixedEdge(nn.Module):
    """All candidate ops of one edge. ``forward(x, w, active)`` returns ``sum_i w[i] * op_i(x)`` over ``active``.

    With ``record=True`` the outputs of the active ops and ``dL/dy`` (via a tensor hook on the mixed output)
    are kept, so :meth:`rewards` can compute XNAS's ``r_i = -<dL/dy, f_i(x)>`` without a second backward.
    """

    def __init__(self, channels: int, ops: Sequence[str] = NB201_OPS) -> None:
        super().__init__()
        self.names = list(ops)
        self.ops = nn.ModuleList(make_op(o, channels) for o in ops)
        self.record = False
        self._outs: list[tuple[list[int], list[torch.Tensor], list[torch.Tensor]]] = []

    def forward(self, x: torch.Tensor, w: torch.Tensor, active: Sequence[int] | None = None) -> torch.Tensor:
        idx = list(range(len(self.ops))) if active is None else list(active)
        outs = [self.ops[i](x) for i in idx]
        y = outs[0] * w[idx[0]]
        for k in range(1, len(idx)):
            y = y + outs[k] * w[idx[k]]
        if self.record and y.requires_grad:
            grads: list[torch.Tensor] = []
            y.register_hook(lambda g, store=grads: store.append(g.detach()))
            self._outs.append((idx, [o.detach() for o in outs], grads))
        return y

    def rewards(self, clip: float | None = None) -> torch.Tensor:
        """Per-op reward summed over the recorded applications (each clipped to ``|r| <= clip``); clears state."""
        r = torch.zeros(len(self.ops))
        for idx, outs, grads in self._outs:
            if not grads:
                continue
            g = grads[0]
            ri = torch.stack([-(g * o).sum() for o in outs])
            if clip is not None:
                ri = ri.clamp(-clip, clip)
            r[idx] += ri
        self._outs = []
        return r


class NB201SuperCell(nn.Module):
    def __init__(self, channels: int, ops: Sequence[str] = NB201_OPS) -> None:
        super().__init__()
        self.edges = nn.ModuleDict({f"e{i}{j}": MixedEdge(channels, ops) for i, j in NB201_EDGES})

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active: Sequence[Sequence[int]] | None) -> torch.Tensor:
        nodes = [x]
        for j in range(1, 4):
            acc = None
            for e, (i, jj) in enumerate(NB201_EDGES):
                if jj != j:
                    continue
                out = self.edges[f"e{i}{j}"](nodes[i], weights[e], None if active is None else active[e])
                acc = out if acc is None else acc + out
            nodes.append(acc)
        return nodes[-1]


class NB201Supernet(nn.Module):
    """NB201 macro network whose cells are :class:`NB201SuperCell` s; all cells share one architecture.

    ``forward(x, weights, active)``: ``weights`` is ``(6, 5)`` (edge x op, NB201 edge/op order), ``active``
    optional per-edge op index lists (wiped-out or unsampled ops are not computed). A one-hot ``weights`` with
    ``active`` = the chosen op per edge runs a single path (SPOS-style).
    """

    def __init__(self, C: int = 16, N: int = 5, num_classes: int = 10, ops: Sequence[str] = NB201_OPS) -> None:
        super().__init__()
        self.C, self.N, self.ops = C, N, list(ops)
        self.stem, self.cells, self.lastact, c_prev = macro_skeleton(C, N, lambda c: NB201SuperCell(c, ops))
        self.classifier = nn.Linear(c_prev, num_classes)

    @property
    def n_super_cells(self) -> int:
        return 3 * self.N

    def mixed_edges(self) -> dict[str, list[MixedEdge]]:
        """``{edge_key: [MixedEdge of every cell]}``."""
        out: dict[str, list[MixedEdge]] = {f"e{i}{j}": [] for i, j in NB201_EDGES}
        for c in self.cells:
            if isinstance(c, NB201SuperCell):
                for k, m in c.edges.items():
                    out[k].append(m)  # type: ignore[arg-type]
        return out

    def set_record(self, on: bool) -> None:
        for ms in self.mixed_edges().values():
            for m in ms:
                m.record = on
                m._outs = []

    def forward(self, x: torch.Tensor, weights: torch.Tensor,
                active: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, weights, active) if isinstance(cell, NB201SuperCell) else cell(x)
        x = torch.flatten(F.adaptive_avg_pool2d(self.lastact(x), 1), 1)
        return self.classifier(x)

    def arch_parameters_shape(self) -> tuple[int, int]:
        return (len(NB201_EDGES), len(self.ops))


def derive_nb201(weights: torch.Tensor, active: Sequence[Sequence[int]] | None = None,
                 ops: Sequence[str] = NB201_OPS, exclude: Sequence[str] = ("none",)) -> dict[str, str]:
    """Per edge the op with the largest weight among active ops, excluding ``exclude`` (XNAS/DARTS rule)."""
    path = {}
    for e, (i, j) in enumerate(NB201_EDGES):
        cand = list(range(len(ops))) if active is None else list(active[e])
        allowed = [k for k in cand if ops[k] not in exclude] or cand
        best = max(allowed, key=lambda k: float(weights[e, k]))
        path[f"e{i}{j}"] = ops[best]
    return path


# ------------------------------------------------------------------------------------------ shared harness
def search_splits(data: str = "cifar10", n_search: int = 2000, seed: int = 0, **kw):
    """``(train_half, val_half, test)`` for a bilevel search: ``n_search`` training images split in two halves
    (DARTS protocol: weights on one half, architecture on the other); ``test`` is capped at ``n_search``."""
    from graphopt.eval.data import load_dataset

    splits = load_dataset(data, seed=seed, train_size=n_search, test_size=min(n_search, 10000), **kw)
    n = len(splits.train)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g).numpy()
    return splits.train.take(perm[: n // 2]), splits.train.take(perm[n // 2:]), splits.test


def cycle(loader):
    """Endless iteration over a BatchLoader (reshuffled every pass)."""
    while True:
        yield from loader


def make_weight_optimizer(model: nn.Module, steps: int, lr: float = 0.025, momentum: float = 0.9,
                          weight_decay: float = 3e-4):
    """SGD + cosine schedule (DARTS search recipe, lr_min = lr/25)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps), eta_min=lr / 25)
    return opt, sched


@torch.no_grad()
def accuracy(model_fn, loader) -> float:
    """Top-1 accuracy (%) of ``model_fn(x)`` over a loader."""
    correct = total = 0
    for x, y in loader:
        correct += int((model_fn(x).argmax(1) == y).sum())
        total += int(y.numel())
    return 100.0 * correct / max(1, total)


def nb201_path_graph(net: NB201Supernet, path: dict[str, str], batch: int | str = "N"):
    """Materialize ``path`` from the trained supernet through the IR (supernet graph -> concrete graph)."""
    from graphopt.supernet import materialize, nb201_graph

    sg = nb201_graph(None, C=net.C, N=net.N, num_classes=net.classifier.out_features, state_dict=net.state_dict(),
                     batch=batch)
    return materialize(sg, path)
