"""The ``dedup-constants`` pass (passes/dedup_constants.py): identical branches of Inception v1 (ONNX "light" zoo)
merged, compared with onnxruntime."""

from __future__ import annotations

from pathlib import Path

import onnx
from _helpers import assert_same as same
from _helpers import op_counts as ops
from _helpers import run_passes as run

from graphopt.frontends.onnx import load_onnx

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def test_inception_dedup_constants_merges_identical_branches():
    path = str(LIGHT / "light_inception_v1.onnx")
    g = load_onnx(path)
    f = run(g, "dedup-constants,dce")
    assert ops(g)["conv"] - ops(f)["conv"] == 2  # two convs with identical weights on the same input
    same(path, f)
