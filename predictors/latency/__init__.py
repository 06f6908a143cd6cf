"""Latency you can trust without the device: measured (onnxruntime profiler) and learned per-target predictors.

* :mod:`.measure` -- ``graphopt profile``: onnxruntime latency on this machine plus per-node times from its own
  profiler, mapped onto IR nodes (fused kernels attributed);
* :mod:`.kernels` -- IR graph -> executed kernels (Conv+BN+ReLU as one) and their features;
* :mod:`.models` -- additive linear model (end-to-end labels) and gradient-boosted trees (per-kernel labels);
* :mod:`.predictor` -- a fitted predictor for one target (JSON), its per-kernel breakdown;
* :mod:`.hwnas`, :mod:`.fit_hwnas` -- HW-NAS-Bench devices on a class-disjoint NB201 split;
* :mod:`.fit_cpu` -- ``cpu-ort``: fitted on kernels it samples and measures itself;
* :mod:`.analytic` -- the analytic NPU roofline, vectorized and calibrated against measurements.

Targets: the fitted predictors shipped in ``data/`` (``cpu-ort``, ``edgetpu-like``, ``pixel3``, ``raspi4``,
``edgegpu``), any NPU profile without one (``generic-npu-int8``, ``ethos-u55-like``: the analytic estimate of
:mod:`graphopt.npu.latency`), or a path to a predictor ``.json`` written by ``graphopt latency fit``.

From a search: ``predict_latency_ms(graph, "edgetpu-like")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph

from .predictor import KernelPrediction, LatencyPrediction, LatencyPredictor

DATA_DIR = Path(__file__).resolve().parent / "data"

__all__ = ["DATA_DIR", "AnalyticTarget", "LatencyPrediction", "LatencyPredictor", "available_targets",
           "load_target", "predict_latency_ms", "target_path"]


def fitted_targets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(DATA_DIR.glob("*.json"))}


def available_targets() -> dict[str, str]:
    """{target name: what it predicts}: fitted predictors first, then NPU profiles priced analytically."""
    from graphopt.npu.profiles import available_profiles

    out: dict[str, str] = {}
    for name, path in fitted_targets().items():
        try:
            out[name] = LatencyPredictor.load(path).device
        except (OSError, ValueError, KeyError):
            out[name] = "(unreadable predictor file)"
    for name in available_profiles():
        out.setdefault(name, "analytic roofline of the profile's [perf] table (no fitted predictor)")
    return out


def target_path(target: str) -> Path | None:
    return fitted_targets().get(target)


@dataclass
class AnalyticTarget:
    """An NPU profile without a fitted predictor: :func:`graphopt.npu.latency.estimate_latency`, per node."""

    target: str

    def predict(self, graph: Graph) -> LatencyPrediction:
        from graphopt.npu.latency import estimate_latency
        from graphopt.npu.profiles import load_profile

        from .kernels import _kind
        from .measure import static_graph

        prof = load_profile(self.target)
        g = static_graph(graph)
        rep = estimate_latency(g, prof)
        host = set(rep.fallback_nodes)
        ks = [KernelPrediction(n.name, _kind(n), n.op, [n.name], [n.op], rep.per_node_us[n.name] / 1e3,
                               n.name not in host) for n in g.nodes]
        return LatencyPrediction(self.target, prof.description, "analytic-roofline", rep.total_ms, 0.0, ks,
                                 off_npu=list(rep.fallback_nodes),
                                 notes=["analytic estimate (uncalibrated roofline of the profile's [perf] table); "
                                        "ops the profile lacks run on the host"]
                                 + (["symbolic input dims bound to 1"] if g is not graph else []))

    def total_ms(self, graph: Graph) -> float:
        return self.predict(graph).total_ms


_CACHE: dict[str, LatencyPredictor | AnalyticTarget] = {}


def load_target(target: str | Path) -> LatencyPredictor | AnalyticTarget:
    """The predictor for ``target`` (a name of :func:`available_targets` or a predictor ``.json`` path); an unknown
    name is a :class:`~graphopt.errors.GraphoptError` listing the targets."""
    key = str(target)
    if key in _CACHE:
        return _CACHE[key]
    p = Path(key)
    if p.suffix == ".json" and p.exists():
        try:
            pred: LatencyPredictor | AnalyticTarget = LatencyPredictor.load(p)
        except (ValueError, KeyError) as e:
            raise GraphoptError(f"--target {key}: not a latency predictor file ({e}); write one with "
                                f"`graphopt latency fit`") from None
    elif key in fitted_targets():
        pred = LatencyPredictor.load(fitted_targets()[key])
    else:
        from graphopt.npu.profiles import available_profiles

        if key in available_profiles():
            pred = AnalyticTarget(key)
        else:
            import difflib

            names = list(available_targets())
            close = [n for n in names if n.startswith(key) or key.startswith(n)]
            close += [n for n in difflib.get_close_matches(key, names, n=2) if n not in close]
            hint = f" (did you mean {' or '.join(repr(c) for c in close[:2])}?)" if close else ""
            raise GraphoptError(f"unknown latency target {key!r}{hint}; targets: {', '.join(names)} "
                                f"(or a predictor .json written by `graphopt latency fit`)")
    _CACHE[key] = pred
    return pred


def predict_latency_ms(graph: Graph, target: str) -> float:
    """Predicted latency of ``graph`` on ``target`` in milliseconds (symbolic dims bound to 1)."""
    return load_target(target).total_ms(graph)
