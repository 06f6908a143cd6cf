"""The two model families a latency predictor uses, both in numpy/scipy (no new dependency), both JSON-serializable.

* :class:`AdditiveLinear` -- for devices measured only end to end (HW-NAS-Bench gives one latency per network):
  ``latency = intercept + sum over kernels of w[sig(k)] . phi(k)`` with ``phi = (1, MFLOPs, activation MB, weight
  MB)`` per kernel signature (``conv3x3s1+bn``, ``binary:add``, ...). Because the model is a sum over kernels, the
  per-network labels fit it by least squares on per-network sums of ``phi``, and it still yields a per-kernel
  breakdown. Coefficients are non-negative (no kernel saves time) and fitted on relative error (the figure of
  merit is the share within +-10 %). Signatures never seen in training use the mean coefficients of their coarse
  kind (and are reported as extrapolated).
* :class:`GBM` -- for kernels measured one by one (onnxruntime's profiler gives per-kernel times): gradient-boosted
  regression trees (histogram splits, squared loss, shrinkage, L2 leaf penalty, early stopping on a held-out
  fraction of the *training* data), written here in ~150 lines of numpy since scikit-learn / LightGBM are not
  dependencies. Prediction is vectorized over all trees at once (a 1,000-kernel graph in a few ms).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

BASIS = ("one", "mflops", "act_mb", "weight_mb")


def kernel_basis(feats: dict[str, float]) -> np.ndarray:
    """``phi(k)`` of :class:`AdditiveLinear`: (1, MFLOPs, activation MB read+written, weight MB)."""
    return np.array([1.0, feats["flops"] * 1e-6, (feats["in_bytes"] + feats["out_bytes"]) * 1e-6,
                     feats["w_bytes"] * 1e-6])


# -------------------------------------------------------------------------------------------- additive linear
@dataclass
class AdditiveLinear:
    """``intercept + sum_k coef[sig(k)] . kernel_basis(k)`` (milliseconds)."""

    coef: dict[str, list[float]] = field(default_factory=dict)
    intercept: float = 0.0
    kind_coef: dict[str, list[float]] = field(default_factory=dict)
    ridge: float = 1e-4
    floor_quantile: float = 0.0

    def fit(self, sums: list[dict[str, np.ndarray]], y: np.ndarray) -> AdditiveLinear:
        """``sums[i]``: per signature, the sum of ``kernel_basis`` over graph ``i``'s kernels; ``y``: latencies."""
        from scipy.optimize import lsq_linear

        sigs = sorted({s for d in sums for s in d})
        nb = len(BASIS)
        A = np.zeros((len(sums), 1 + nb * len(sigs)))
        A[:, 0] = 1.0
        col = {s: 1 + nb * i for i, s in enumerate(sigs)}
        for i, d in enumerate(sums):
            for s, v in d.items():
                A[i, col[s]:col[s] + nb] = v
        y = np.asarray(y, dtype=np.float64)
        scale = np.abs(A).max(axis=0)  # column scaling: the ridge then treats columns alike
        scale[scale == 0] = 1.0
        An = A / scale
        # relative error, but a network far faster than the rest (a device that folded it to a constant: 0.003 ms
        # among 10 ms ones) must not dominate the fit: weights are capped at the floor_quantile-th latency
        floor = np.quantile(y, self.floor_quantile) if self.floor_quantile > 0 else 1e-9
        w_rel = 1.0 / np.maximum(y, max(floor, 1e-9))
        M = An * w_rel[:, None]
        b = y * w_rel
        if self.ridge > 0:
            M = np.vstack([M, np.sqrt(self.ridge * len(y)) * np.eye(M.shape[1])[1:]])
            b = np.concatenate([b, np.zeros(M.shape[1] - 1)])
        lb = np.zeros(A.shape[1])
        lb[0] = -np.inf  # the intercept may be negative (a constant the per-kernel terms overcount)
        res = lsq_linear(M, b, bounds=(lb, np.full(A.shape[1], np.inf)), lsmr_tol="auto", max_iter=5000)
        w = res.x / scale
        self.intercept = float(w[0])
        self.coef = {s: [float(x) for x in w[col[s]:col[s] + nb]] for s in sigs}
        by_kind: dict[str, list[list[float]]] = {}
        for s, c in self.coef.items():
            by_kind.setdefault(kind_of_sig(s), []).append(c)
        self.kind_coef = {k: [float(x) for x in np.mean(v, axis=0)] for k, v in by_kind.items()}
        return self

    def kernel_ms(self, sig: str, phi: np.ndarray) -> tuple[float, bool]:
        """(milliseconds, seen in training) of one kernel."""
        c = self.coef.get(sig)
        if c is not None:
            return float(np.dot(c, phi)), True
        c = self.kind_coef.get(kind_of_sig(sig))
        return (float(np.dot(c, phi)) if c is not None else 0.0), False

    def to_dict(self) -> dict[str, Any]:
        return {"type": "additive-linear", "basis": list(BASIS), "intercept_ms": self.intercept, "coef": self.coef,
                "kind_coef": self.kind_coef, "ridge": self.ridge, "floor_quantile": self.floor_quantile}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdditiveLinear:
        return cls(coef={k: list(v) for k, v in d["coef"].items()}, intercept=float(d["intercept_ms"]),
                   kind_coef={k: list(v) for k, v in d.get("kind_coef", {}).items()}, ridge=float(d.get("ridge", 0)),
                   floor_quantile=float(d.get("floor_quantile", 0.0)))


def kind_of_sig(sig: str) -> str:
    """``conv3x3s1+bn`` -> ``conv``; ``binary:add`` -> ``binary``."""
    head = sig.split("+", 1)[0].split(":", 1)[0]
    i = len(head)
    while i > 0 and (head[i - 1].isdigit() or head[i - 1] in "xs?"):
        i -= 1
    return head[:i] or head


# ------------------------------------------------------------------------------------------------------ GBM
@dataclass
class GBM:
    """Gradient-boosted regression trees of fixed depth on squared loss (see module doc)."""

    depth: int = 5
    learning_rate: float = 0.08
    max_trees: int = 600
    min_leaf: int = 4
    l2: float = 1.0
    max_bins: int = 48
    valid_fraction: float = 0.15
    patience: int = 40
    seed: int = 0
    base: float = 0.0
    feat: np.ndarray | None = None  # (T, 2^depth - 1) split feature per internal node
    thr: np.ndarray | None = None  # (T, 2^depth - 1) go right when x > thr
    leaf: np.ndarray | None = None  # (T, 2^depth) leaf values (already scaled by the learning rate)
    history: dict[str, Any] = field(default_factory=dict)

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None,
            sample_weight: np.ndarray | None = None) -> GBM:
        """Fit; ``groups`` (e.g. the sampled graph each kernel came from) keeps a group on one side of the early-
        stopping hold-out, so the stopping point is not chosen on near-duplicates of training rows;
        ``sample_weight`` weights each row's squared error."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        rng = np.random.default_rng(self.seed)
        n, d = X.shape
        gid = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
        ng = gid.max() + 1
        hold_g = rng.random(ng) < self.valid_fraction
        va = hold_g[gid]
        tr = ~va
        if va.sum() < 10 or tr.sum() < 10:
            tr[:] = True
            va[:] = False
        # bin edges per feature from quantiles of the training rows
        edges = []
        B = np.zeros((n, d), dtype=np.int32)
        for j in range(d):
            qs = np.unique(np.quantile(X[tr, j], np.linspace(0, 1, self.max_bins + 1)[1:-1]))
            edges.append(qs)
            B[:, j] = np.searchsorted(qs, X[:, j], side="left")
        self.base = float(np.average(y[tr], weights=sw[tr]))
        pred = np.full(n, self.base)
        n_int, n_leaf = 2 ** self.depth - 1, 2 ** self.depth
        feats, thrs, leaves = [], [], []
        best, best_t, stall = np.inf, 0, 0
        curve = []
        Btr, ytr_idx = B[tr], np.where(tr)[0]
        wtr = sw[ytr_idx]
        for _t in range(self.max_trees):
            r = y[ytr_idx] - pred[ytr_idx]
            wr = wtr * r
            node = np.zeros(len(ytr_idx), dtype=np.int64)
            f_t = np.zeros(n_int, dtype=np.int64)
            th_t = np.full(n_int, np.inf)
            for level in range(self.depth):
                first = 2 ** level - 1
                width = 2 ** level
                local = node - first
                best_gain = np.zeros(width)
                best_f = np.zeros(width, dtype=np.int64)
                best_b = np.full(width, -1, dtype=np.int64)
                nb = self.max_bins + 1
                for j in range(d):
                    key = local * nb + Btr[:, j]
                    s = np.bincount(key, weights=wr, minlength=width * nb).reshape(width, nb)
                    h = np.bincount(key, weights=wtr, minlength=width * nb).reshape(width, nb)
                    c = np.bincount(key, minlength=width * nb).reshape(width, nb).astype(np.float64)
                    cs, ch, cc = np.cumsum(s, axis=1), np.cumsum(h, axis=1), np.cumsum(c, axis=1)
                    ts, th, tc = cs[:, -1:], ch[:, -1:], cc[:, -1:]
                    rs, rh, rc = ts - cs, th - ch, tc - cc
                    gain = cs ** 2 / (ch + self.l2) + rs ** 2 / (rh + self.l2) - ts ** 2 / (th + self.l2)
                    gain[(cc < self.min_leaf) | (rc < self.min_leaf)] = 0.0
                    bi = gain.argmax(axis=1)
                    g = gain[np.arange(width), bi]
                    better = g > best_gain
                    best_gain[better], best_f[better], best_b[better] = g[better], j, bi[better]
                for w in range(width):
                    if best_b[w] >= 0 and best_gain[w] > 0:
                        j, b = best_f[w], best_b[w]
                        f_t[first + w] = j
                        th_t[first + w] = edges[j][b] if b < len(edges[j]) else np.inf
                    else:  # no split: everything goes left
                        f_t[first + w] = 0
                        th_t[first + w] = np.inf
                go_right = Btr[np.arange(len(node)), f_t[node]] > _bin_of(th_t[node], edges, f_t[node])
                node = 2 * node + 1 + go_right
            leaf_id = node - n_int
            s = np.bincount(leaf_id, weights=wr, minlength=n_leaf)
            c = np.bincount(leaf_id, weights=wtr, minlength=n_leaf)
            lv = self.learning_rate * s / (c + self.l2)
            feats.append(f_t)
            thrs.append(th_t)
            leaves.append(lv)
            pred += lv[_route(X, f_t[None], th_t[None], self.depth)[:, 0]]
            if va.any():
                err = float(np.average((y[va] - pred[va]) ** 2, weights=sw[va]))
                curve.append(err)
                if err < best - 1e-9:
                    best, best_t, stall = err, len(feats), 0
                else:
                    stall += 1
                    if stall >= self.patience:
                        break
            else:
                best_t = len(feats)
        self.feat = np.array(feats[:best_t])
        self.thr = np.array(thrs[:best_t])
        self.leaf = np.array(leaves[:best_t])
        self.history = {"trees": int(best_t), "valid_mse": float(best) if va.any() else None,
                        "n_train": int(tr.sum()), "n_valid": int(va.sum())}
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if self.feat is None or len(self.feat) == 0:
            return np.full(len(X), self.base)
        leaf = _route(X, self.feat, self.thr, self.depth)  # (n, T)
        return self.base + self.leaf[np.arange(self.leaf.shape[0])[None, :], leaf].sum(axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "gbm", "depth": self.depth, "learning_rate": self.learning_rate, "base": self.base,
                "feat": self.feat.tolist() if self.feat is not None else [],
                "thr": [[_enc(x) for x in row] for row in self.thr] if self.thr is not None else [],
                "leaf": self.leaf.tolist() if self.leaf is not None else [], "history": self.history}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GBM:
        m = cls(depth=int(d["depth"]), learning_rate=float(d["learning_rate"]))
        m.base = float(d["base"])
        m.feat = np.array(d["feat"], dtype=np.int64).reshape(-1, 2 ** m.depth - 1)
        m.thr = np.array([[_dec(x) for x in row] for row in d["thr"]], dtype=np.float64).reshape(-1, 2 ** m.depth - 1)
        m.leaf = np.array(d["leaf"], dtype=np.float64).reshape(-1, 2 ** m.depth)
        m.history = d.get("history", {})
        return m


def _enc(x: float) -> float | str:
    return "inf" if np.isinf(x) else float(x)


def _dec(x: float | str) -> float:
    return np.inf if x == "inf" else float(x)


def _bin_of(thr: np.ndarray, edges: list[np.ndarray], f: np.ndarray) -> np.ndarray:
    """Bin index whose upper edge is ``thr`` (for routing training rows by their bins: x > thr <=> bin > b)."""
    out = np.empty(len(thr), dtype=np.int64)
    for j in np.unique(f):
        m = f == j
        out[m] = np.where(np.isinf(thr[m]), len(edges[j]) + 10, np.searchsorted(edges[j], thr[m], side="left"))
    return out


def _route(X: np.ndarray, feat: np.ndarray, thr: np.ndarray, depth: int) -> np.ndarray:
    """Leaf index of every row in every tree: ``(n, T)``."""
    n, T = len(X), feat.shape[0]
    node = np.zeros((n, T), dtype=np.int64)
    tcol = np.arange(T)[None, :]
    rows = np.arange(n)[:, None]
    for _ in range(depth):
        f = feat[tcol, node]
        node = 2 * node + 1 + (X[rows, f] > thr[tcol, node])
    return node - (2 ** depth - 1)
