"""``benchmarks/eval.py`` reports the executor overhead as a raw difference of warm measurements."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ev():
    # imported by its own name from benchmarks/ (on sys.path, which spawned workers inherit), so the workers
    # can unpickle the candidate function
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("eval")
    finally:
        sys.modules.pop("eval", None)


def test_overhead_is_the_raw_difference_of_warm_medians(ev):
    import statistics

    r = ev.bench_executor(n=3, reps=2, workers=1)
    t = r["per_candidate_s"]
    assert len(t["in_process"]) == len(t["sequential"]) == len(t["parallel"]) == 2
    med = {k: statistics.median(v) for k, v in t.items()}
    assert r["overhead_sequential_s"] == pytest.approx(med["sequential"] - med["in_process"])  # sign kept
    assert r["overhead_parallel_s"] == pytest.approx(med["parallel"] * 1 - med["in_process"])
    assert r["torch_threads_in_process_and_per_worker"] >= 1
