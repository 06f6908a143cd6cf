"""Metric-pool normalisation for PO-NAS: per-metric min-max (paper) or rank/quantile over the pool into [0, 1].

The paper min-max normalises each metric over the pool (``method="minmax"``, the default). Zero-cost proxies are
heavy-tailed (synflow spans hundreds of orders of magnitude, grasp/fisher have a few huge outliers), so a min-max
map squeezes most of the pool into a narrow band and the "mean normalised metric" used for the initial queries is
dominated by the outliers of a few metrics (on the NB201 pool the 3 architectures with the highest mean min-max
value of the six paper metrics have 12-epoch accuracies 40–49 %, i.e. bottom 3 %). ``method="rank"`` maps each
metric to its pool quantile ``(rank − 1)/(n − 1)`` (ties share their average rank): still in [0, 1], monotone in
the raw value (so ``x`` and ``1 − x`` keep their meaning in the score), but every metric is uniform over the pool
and outliers no longer dominate. Which one to use is left open by the paper (it only says "normalised"); the
NB201 benchmark uses ``rank`` and records the choice in its JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = ["PONAS_METRICS", "NORMALIZATIONS", "DEFAULT_TRANSFORMS", "signed_log", "normalize_metrics"]

#: The six metrics of the paper (step 1), in the order used throughout.
PONAS_METRICS: tuple[str, ...] = ("grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov")


def signed_log(v: np.ndarray) -> np.ndarray:
    """``sign(v)·log(1 + |v|)``: rank-preserving compression (NASLib reports synflow as log(score))."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sign(v) * np.log1p(np.abs(v))


#: Accepted ``method`` values of :func:`normalize_metrics`.
NORMALIZATIONS: tuple[str, ...] = ("minmax", "rank")

#: Applied before min-max (irrelevant for ``rank``: they are monotone). synflow spans hundreds of orders of
#: magnitude over NB201 (a raw min-max would send all but a few architectures to 0), so it is log-compressed as
#: NAS-Bench-Suite-Zero does; rank-preserving.
DEFAULT_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"synflow": signed_log}


def normalize_metrics(
    raw: np.ndarray,
    names: Sequence[str] | None = None,
    transforms: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    method: str = "minmax",
) -> np.ndarray:
    """Normalise each column of ``raw`` (pool × metrics) to [0, 1] by min-max (default) or pool quantile.

    Non-finite entries (e.g. a NaN jacob_cov of a disconnected cell) get 0 — the worst value, like NASLib's
    −1e8 — and are left out of the min/max or ranks of the finite ones. A constant column maps to 0.5 under
    both methods. ``transforms`` (default :data:`DEFAULT_TRANSFORMS`, keyed by metric name) are applied first.
    ``method="rank"``: finite entries get ``(average rank − 1)/(n_finite − 1)``.
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalize_metrics: method must be one of {NORMALIZATIONS}, got {method!r}")
    x = np.array(raw, dtype=np.float64, copy=True)
    if x.ndim != 2:
        raise ValueError(f"normalize_metrics: raw must be 2-D (pool, metrics), got shape {x.shape}")
    if names is not None and len(names) != x.shape[1]:
        raise ValueError(f"normalize_metrics: {len(names)} names for {x.shape[1]} metric columns")
    tf = DEFAULT_TRANSFORMS if transforms is None else transforms
    out = np.zeros_like(x)
    for m in range(x.shape[1]):
        col = x[:, m]
        if names is not None and names[m] in tf:
            col = tf[names[m]](col)
        ok = np.isfinite(col)
        if not ok.any():
            continue
        lo, hi = col[ok].min(), col[ok].max()
        if not hi > lo:
            out[ok, m] = 0.5
        elif method == "rank":
            out[ok, m] = (rankdata(col[ok]) - 1.0) / max(1, int(ok.sum()) - 1)
        else:
            out[ok, m] = (col[ok] - lo) / (hi - lo)
    return out
