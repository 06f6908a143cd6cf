"""The ``strip-dropout`` pass (passes/strip_dropout.py): with ``fold-softmax-flatten`` on SqueezeNet from the ONNX
"light" zoo in the onnx wheel, compared with onnxruntime."""

from __future__ import annotations

from pathlib import Path

import onnx
from _helpers import assert_same as same
from _helpers import op_counts as ops
from _helpers import run_passes as run

from graphopt.frontends.onnx import load_onnx

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def test_squeezenet_dropout_and_softmax_flatten():
    path = str(LIGHT / "light_squeezenet.onnx")
    g = load_onnx(path)
    assert ops(g)["dropout"] == 1 and ops(g)["flatten"] == 1
    f = run(g, "strip-dropout,fold-softmax-flatten,dce")
    assert "dropout" not in ops(f) and "flatten" not in ops(f) and "reshape" not in ops(f)
    same(path, f)
