"""benchmarks/optimize_trained.py runs end to end in its smoke mode (graphopt, the same-budget control and
Torch-Pruning in one script) and writes its table; smoke figures go to a temporary file, never to results/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_optimize_trained_smoke_run(tmp_path):
    pytest.importorskip("torch_pruning", reason="the bench extra (torch-pruning) is not installed")
    out = tmp_path / "o.json"
    env = {**os.environ, "GRAPHOPT_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "benchmarks/optimize_trained.py", "--quick", "--out", str(out),
                        "--cache", str(tmp_path / "cache")], cwd=ROOT,
                       capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["provenance"]["quick"] and doc["provenance"]["commit"] is not None
    methods = {row["method"] for row in doc["rows"]}
    assert methods == {"graphopt", "torch-pruning"}
    tp = [r for r in doc["rows"] if r.get("label", "").startswith("torch-pruning -25%")]
    assert tp and tp[0]["flops"] <= 0.75 * doc["rows"][0]["original"]["flops"] * 1.01
    assert any(line.startswith("| original as given") for line in doc["table"])
