"""First-order DARTS (Liu et al., 2019) on the NB201 supernet: the baseline XNAS is compared with.

Same supernet, data halves, weight optimizer and derivation rule as :func:`graphopt.search.xnas.xnas_search`;
only the architecture update differs: ``alpha`` (edges x ops) is trained with Adam (lr 3e-4, betas
(0.5, 0.999), weight decay 1e-3, the DARTS recipe) on the validation loss of the softmax mixture, using the
current weights (first order: no unrolled step).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from graphopt.models.nb201 import NB201Supernet
from graphopt.search.supernet_train import (
    accuracy,
    cycle,
    derive_nb201,
    make_weight_optimizer,
    nb201_path_graph,
)
from graphopt.search.xnas import SearchResult, _loaders
from graphopt.supernet import NB201_EDGES, NB201_OPS, nb201_path_to_arch


def darts_search(*, data: str = "cifar10", C: int = 8, N: int = 1, epochs: int = 5, n_search: int = 2000,
                 batch: int = 64, seed: int = 0, w_lr: float = 0.025, a_lr: float = 3e-4,
                 downsample: int = 1, log: Any = None) -> SearchResult:
    """First-order DARTS; returns the derived path (argmax alpha per edge, excluding ``none``)."""
    torch.manual_seed(seed)
    t0 = time.time()
    tr, va, te = _loaders(data, n_search, batch, seed, downsample)
    net = NB201Supernet(C=C, N=N)
    alpha = torch.nn.Parameter(1e-3 * torch.randn(len(NB201_EDGES), len(NB201_OPS)))
    steps = epochs * len(tr)
    opt, sched = make_weight_optimizer(net, steps, lr=w_lr)
    aopt = torch.optim.Adam([alpha], lr=a_lr, betas=(0.5, 0.999), weight_decay=1e-3)
    keys = [f"e{i}{j}" for i, j in NB201_EDGES]
    traj: list[dict[str, Any]] = []
    val_it = cycle(va)
    step = 0
    for ep in range(epochs):
        net.train()
        for x, y in tr:
            xv, yv = next(val_it)
            aopt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xv, F.softmax(alpha, -1)), yv).backward()
            aopt.step()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x, F.softmax(alpha, -1).detach()), y).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            sched.step()
            step += 1
        p = F.softmax(alpha.detach(), -1)
        traj.append({"epoch": ep + 1, "step": step, "p": np.round(p.numpy(), 4).tolist(),
                     "path": derive_nb201(alpha.detach())})
        if log:
            log(f"darts epoch {ep + 1}: {derive_nb201(alpha.detach())}")
    path = derive_nb201(alpha.detach())
    net.eval()
    p = F.softmax(alpha.detach(), -1)
    sacc = accuracy(lambda x: net(x, p), te)
    res = SearchResult("darts", path, nb201_path_to_arch(path), traj, time.time() - t0, sacc,
                       {"alpha": alpha.detach().tolist(), "edges": keys})
    res.graph = nb201_path_graph(net, path)
    return res
