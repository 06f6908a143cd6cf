"""Fit the HW-NAS-Bench device predictors (Edge TPU, Pixel 3, Raspberry Pi 4, Edge GPU) on a class-disjoint split.

Protocol (:func:`fit_hwnas`): the NB201 networks are split by equivalence class (:func:`.hwnas.class_disjoint_split`,
``train_fraction`` of the networks on the training side, seeded); the held-out side is never read here. The one
choice made -- which part of the graph the device runs (:data:`.kernels.VIEWS`: all of it; the effective part; or
the folded part: does its compiler delete the paths that carry ``x * 0``, and does it still add the zeros?) -- is
made by class-disjoint 5-fold cross-validation on the training side, on the share of predictions within +-10 %
(ties: MAPE), together with the weight floor of the relative least squares (:data:`FLOORS`). The chosen
:class:`.models.AdditiveLinear` is then fitted on all training networks.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .hwnas import DEVICES, NetFeatures, class_disjoint_split, class_folds, load_hwnas, nb201_net_features
from .kernels import TFLITE_RULES, VIEWS
from .models import AdditiveLinear
from .predictor import LatencyPredictor, metrics

TARGET_OF_DEVICE = {"edgetpu": "edgetpu-like", "pixel3": "pixel3", "raspi4": "raspi4", "edgegpu": "edgegpu"}
"""Target name of each HW-NAS-Bench device's predictor (the Edge TPU one is tied to the edgetpu-like profile)."""
DEVICE_NAMES = {"edgetpu": "Coral Edge TPU (HW-NAS-Bench, int8 TFLite)", "pixel3": "Pixel 3 CPU (HW-NAS-Bench, TFLite)",
                "raspi4": "Raspberry Pi 4 CPU (HW-NAS-Bench, TFLite)",
                "edgegpu": "NVIDIA Jetson TX2 Edge GPU (HW-NAS-Bench)"}
PROFILE_OF_DEVICE = {"edgetpu": "edgetpu-like"}


def predict_sums(model: AdditiveLinear, sums: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The model's prediction for networks given as per-signature kernel-basis sums (equal to predicting each
    kernel and adding: the model is linear in the basis)."""
    out = np.full(len(sums), model.intercept)
    for i, d in enumerate(sums):
        for s, v in d.items():
            out[i] += model.kernel_ms(s, v)[0]
    return out


FLOORS = (0.0, 0.05)
"""Weight floors tried (:attr:`.models.AdditiveLinear.floor_quantile`)."""


def cv_view(nf: NetFeatures, y: np.ndarray, train: np.ndarray, view: str, k: int = 5, seed: int = 0,
            floor: float = 0.0) -> dict[str, float]:
    """Class-disjoint k-fold CV on the training networks for one view (and weight floor)."""
    sums = nf.view(view)
    preds = np.zeros(len(y))
    folds = class_folds(nf.keys, train, k, seed)
    for f in folds:
        rest = np.setdiff1d(train, f)
        m = AdditiveLinear(floor_quantile=floor).fit([sums[i] for i in rest], y[rest])
        preds[f] = predict_sums(m, [sums[i] for i in f])
    return metrics(preds[train], y[train])


def fit_hwnas(device: str, *, csv: str | None = None, train_fraction: float = 0.5, seed: int = 0,
              features: NetFeatures | None = None, subset: np.ndarray | None = None, log=None
              ) -> tuple[LatencyPredictor, dict[str, Any]]:
    """(predictor fitted on the training side, report with the split and the CV of both views).

    ``subset``: NB201 indices to use instead of all 15,625 (quick runs, tests); ``features``: precomputed
    :class:`NetFeatures` of exactly those networks."""
    if device not in DEVICES:
        raise ValueError(f"unknown HW-NAS-Bench device {device!r}; choose one of {', '.join(DEVICES)}")
    t0 = time.time()
    archs, lat = load_hwnas(csv)
    if subset is not None:
        archs = [archs[i] for i in subset]
        lat = {d: v[subset] for d, v in lat.items()}
    nf = features if features is not None else nb201_net_features(archs)
    if nf.archs != archs:
        raise ValueError("features were computed for other networks than the ones selected")
    y = lat[device]
    train_all, test_all = class_disjoint_split(nf.keys, train_fraction, seed)
    train = train_all[np.isfinite(y[train_all])]
    cv = {}
    for v in VIEWS:
        for fl in FLOORS:
            key = v if fl == 0 else f"{v}+floor{fl}"
            cv[key] = cv_view(nf, y, train, v, seed=seed, floor=fl)
            if log:
                log(f"{device}: CV ({key}) within10 {cv[key]['within10']:.4f} MAPE {cv[key]['mape']:.2f} %")
    best = max(cv, key=lambda c: (cv[c]["within10"], -cv[c]["mape"]))
    view, _, fl_s = best.partition("+floor")
    floor = float(fl_s) if fl_s else 0.0
    t1 = time.time()
    model = AdditiveLinear(floor_quantile=floor).fit([nf.view(view)[i] for i in train], y[train])
    fit_s = time.time() - t1
    train_m = metrics(predict_sums(model, [nf.view(view)[i] for i in train]), y[train])
    report = {"device": device, "n_networks": len(archs), "n_train": int(len(train)),
              "n_test": int(np.isfinite(y[test_all]).sum()),
              "n_classes": len(set(nf.keys)), "train_fraction": train_fraction, "seed": seed, "cv": cv,
              "view": view, "floor_quantile": floor, "train_metrics": train_m, "fit_s": round(fit_s, 3),
              "total_s": round(time.time() - t0, 1), "signatures": len(model.coef)}
    pred = LatencyPredictor(
        target=TARGET_OF_DEVICE[device], device=DEVICE_NAMES[device], model=model, rules=TFLITE_RULES,
        view=view, profile=PROFILE_OF_DEVICE.get(device),
        train={"data": "HW-NAS-Bench (zccombine_hw_cifar10.csv), NB201 C=16 N=5, 32x32, batch 1",
               "split": f"class-disjoint (effective-view equivalence), train_fraction={train_fraction}, seed={seed}",
               "n_train": int(len(train)), "cv": cv, "view": report["view"], "floor_quantile": floor,
               "fit_s": report["fit_s"],
               "domain": "NB201 cell networks; other architectures are extrapolation"})
    return pred, report


def split_for(device: str, nf: NetFeatures, y: np.ndarray, train_fraction: float = 0.5, *, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices with a measurement for ``device`` -- the split :func:`fit_hwnas` uses."""
    tr, te = class_disjoint_split(nf.keys, train_fraction, seed)
    return tr[np.isfinite(y[tr])], te[np.isfinite(y[te])]


__all__ = ["DEVICE_NAMES", "TARGET_OF_DEVICE", "cv_view", "fit_hwnas", "predict_sums", "split_for"]
