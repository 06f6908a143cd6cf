"""What the NB201 supernet search loops (DARTS, XNAS) share: derivation, search splits, optimizers, accuracy.

The supernet module itself is a model (:class:`graphopt.models.nb201.NB201Supernet`); the IR side
(:func:`graphopt.supernet.nb201_graph` with ``arch=None``) describes the same space with the same parameter
names, so the chosen path is materialized through the IR from the trained weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from graphopt.models.nb201 import EDGE_ORDER as NB201_EDGES
from graphopt.models.nb201 import OPS as NB201_OPS
from graphopt.models.nb201 import NB201Supernet


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
