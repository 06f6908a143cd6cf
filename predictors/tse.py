"""Training-speed estimators (Ru et al., "Speedy Performance Estimation for NAS", NeurIPS 2021).

Input: the per-step training losses logged *during* SGD (no re-evaluation) and the epoch index of each step,
as the trainer records them (``step_losses: list[float]``, ``step_epochs: list[int]``). With
``L̄_t`` = mean of the step losses of epoch t (t = 1..T in order of the epoch indices present):

* ``TSE     = Σ_{t=1..T} L̄_t``
* ``TSE-E   = Σ_{t=T−E+1..T} L̄_t`` (last E epochs; E = 1 works best in the paper)
* ``TSE-EMA = Σ_{t=1..T} γ^{T−t} L̄_t`` with γ = 0.999 (the paper's convention, used by default).

The authors' comparison script instead keeps a running average ``ema ← 0.1·ema + 0.9·L̄_t`` (a weight of 0.9
on the newest epoch, initialised with ``L̄_1``) and reports its final value; it is available as
``tse_ema(..., convention="script")`` but is not the default because it is not the estimator the paper defines
(and γ = 1 no longer reduces it to TSE).

All three are *lower is better* (a faster-training architecture generalises better): rank with
:func:`rank_key` (``−value``, higher is better) or sort ascending.

Budget heuristic: ``T_o`` = first epoch whose mean training loss is below 0.1; stop summing at ``0.9·T_o``
(:func:`budget_from_epoch_losses`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "epoch_means",
    "tse",
    "tse_e",
    "tse_ema",
    "rank_key",
    "budget_from_epoch_losses",
]


def epoch_means(
    step_losses: Sequence[float], step_epochs: Sequence[int], T: int | None = None
) -> list[float]:
    """``[L̄_1, ..., L̄_T]``: the mean logged step loss of each epoch, epochs ordered by their index.

    ``T`` keeps only the first T epochs present (default: all). Epoch indices need not start at 0 or 1.
    """
    if len(step_losses) != len(step_epochs):
        raise ValueError(
            f"step_losses ({len(step_losses)}) and step_epochs ({len(step_epochs)}) must have the same length"
        )
    if not step_losses:
        raise ValueError("no step losses: train for at least one step before computing TSE")
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for loss, ep in zip(step_losses, step_epochs, strict=True):
        sums[int(ep)] = sums.get(int(ep), 0.0) + float(loss)
        counts[int(ep)] = counts.get(int(ep), 0) + 1
    epochs = sorted(sums)
    if T is not None:
        if T < 1 or T > len(epochs):
            raise ValueError(f"T={T} is outside 1..{len(epochs)} (the number of logged epochs)")
        epochs = epochs[:T]
    return [sums[e] / counts[e] for e in epochs]


def tse(step_losses: Sequence[float], step_epochs: Sequence[int], T: int | None = None) -> float:
    """Sum over epochs 1..T of the per-epoch mean training loss (lower is better)."""
    return math.fsum(epoch_means(step_losses, step_epochs, T))


def tse_e(
    step_losses: Sequence[float], step_epochs: Sequence[int], E: int = 1, T: int | None = None
) -> float:
    """Sum of the per-epoch mean training losses of the last ``E`` epochs up to T (lower is better)."""
    means = epoch_means(step_losses, step_epochs, T)
    if E < 1:
        raise ValueError(f"E must be >= 1, got {E}")
    return math.fsum(means[-E:])


def tse_ema(
    step_losses: Sequence[float],
    step_epochs: Sequence[int],
    gamma: float = 0.999,
    T: int | None = None,
    convention: str = "paper",
) -> float:
    """Exponentially weighted TSE (lower is better).

    ``convention="paper"``: ``Σ_t γ^{T−t} L̄_t`` (γ = 1 gives TSE). ``convention="script"``: the authors'
    script's running average ``ema ← (1−γ)·ema + γ·L̄_t`` started at ``L̄_1`` — pass ``gamma=0.9`` to get their
    ``0.1·ema + 0.9·L̄_t``.
    """
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    means = epoch_means(step_losses, step_epochs, T)
    if convention == "paper":
        n = len(means)
        return math.fsum(gamma ** (n - 1 - i) * m for i, m in enumerate(means))
    if convention == "script":
        ema = means[0]
        for m in means[1:]:
            ema = (1.0 - gamma) * ema + gamma * m
        return ema
    raise ValueError(f"convention must be 'paper' or 'script', got {convention!r}")


def rank_key(value: float) -> float:
    """Sort key where higher is better (``−value``): TSE variants are lower-is-better."""
    return -value


def budget_from_epoch_losses(
    epoch_losses: Sequence[float], threshold: float = 0.1, fraction: float = 0.9
) -> int | None:
    """Number of epochs to sum given per-epoch training losses of a reference run: ``max(1, ⌊fraction·T_o⌋)``
    where ``T_o`` (1-based) is the first epoch with loss below ``threshold``; ``None`` if it never gets there.
    """
    for t, loss in enumerate(epoch_losses, start=1):
        if loss < threshold:
            return max(1, int(math.floor(fraction * t)))
    return None
