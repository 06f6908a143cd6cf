"""Metric-pool normalisation for PO-NAS: per-metric min-max over the pool into [0, 1]."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = ["PONAS_METRICS", "DEFAULT_TRANSFORMS", "signed_log", "normalize_metrics"]

#: The six metrics of the paper (step 1), in the order used throughout.
PONAS_METRICS: tuple[str, ...] = ("grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov")


def signed_log(v: np.ndarray) -> np.ndarray:
    """``sign(v)·log(1 + |v|)``: rank-preserving compression (NASLib reports synflow as log(score))."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sign(v) * np.log1p(np.abs(v))


#: Applied before min-max. synflow spans hundreds of orders of magnitude over NB201 (a raw min-max would send
#: all but a few architectures to 0), so it is log-compressed as NAS-Bench-Suite-Zero does; rank-preserving.
DEFAULT_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"synflow": signed_log}


def normalize_metrics(
    raw: np.ndarray,
    names: Sequence[str] | None = None,
    transforms: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> np.ndarray:
    """Min-max normalise each column of ``raw`` (pool × metrics) to [0, 1].

    Non-finite entries (e.g. a NaN jacob_cov of a disconnected cell) get 0 — the worst value, like NASLib's
    −1e8. A constant column maps to 0.5. ``transforms`` (default :data:`DEFAULT_TRANSFORMS`, keyed by metric
    name) are applied first.
    """
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
        out[ok, m] = (col[ok] - lo) / (hi - lo) if hi > lo else 0.5
    return out
