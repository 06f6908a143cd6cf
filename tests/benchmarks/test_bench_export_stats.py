"""The statistics of ``benchmarks/export.py``: strict node-count comparison and latency ratios with intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from benchmod import benchmark_module

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ex():
    with benchmark_module("export.py", "export_bench") as mod:
        yield mod


def test_node_summary_counts_ties_apart(ex):
    rows = [{"model": "a", "nodes_vs": {"onnxsim": "equal", "onnxslim": "fewer", "onnxoptimizer": "fewer"}},
            {"model": "b", "nodes_vs": {"onnxsim": "fewer", "onnxslim": "more", "onnxoptimizer": "fewer"}},
            {"model": "c", "nodes_vs": {"onnxsim": "equal", "onnxslim": "equal", "onnxoptimizer": "fewer"}}]
    s = ex.node_summary(rows)
    assert (s["onnxsim"]["fewer"], s["onnxsim"]["equal"], s["onnxsim"]["more"]) == (1, 2, 0)
    assert s["onnxslim"]["models_more"] == ["b"] and s["onnxoptimizer"]["fewer"] == 3


def test_ratio_interval_covers_noise_and_excludes_a_real_gap(ex):
    rng = np.random.default_rng(0)
    base = 10 + rng.normal(0, 0.3, 30)
    same = ex.ratio_stats(list(base * (1 + rng.normal(0, 0.02, 30))), list(base))
    assert same["ci95"][0] <= 1.0 <= same["ci95"][1] and abs(same["median"] - 1) < 0.02
    faster = ex.ratio_stats(list(base * 0.9 * (1 + rng.normal(0, 0.01, 30))), list(base))
    assert faster["ci95"][1] < 1.0 and faster["median"] == pytest.approx(0.9, abs=0.01)
    rows = [{"latency": {"ours": {"rounds_ms": list(base * f)}, "onnxsim": {"rounds_ms": list(base)}}}
            for f in (0.95, 1.0, 1.05)]
    s = ex.summary_ratio(rows, "ours", "onnxsim")
    assert s["median"] == pytest.approx(1.0) and s["models"] == 3 and s["ci95"][0] <= 1.0 <= s["ci95"][1]
