"""The ``fuse-slices`` pass (passes/fuse_slices.py): the zoo ResNet-20 exported with torch.onnx (and the default
export pipeline on it), compared with onnxruntime."""

from __future__ import annotations

from _helpers import assert_same as same
from _helpers import export_torchscript as export
from _helpers import op_counts as ops
from _helpers import run_passes as run

from graphopt.backends.onnx import to_onnx
from graphopt.frontends.onnx import load_onnx


def test_resnet20_slices_and_default_pipeline(tmp):
    from graphopt import models
    from graphopt.export import default_pipeline

    path = export(models.get("resnet20", seed=0), tuple(models.example_inputs("resnet20", batch=1)),
                  tmp / "resnet20.onnx")
    g = load_onnx(path)
    f = run(g, "canonicalize,fold-constants,dce,fuse-slices,dce")
    assert ops(f)["slice"] == ops(run(g, "canonicalize,fold-constants,dce"))["slice"] // 2 == 2
    same(path, f)
    full = run(g, default_pipeline(18))
    assert len(full) == 54  # onnxsim 0.8.1: 54, onnxoptimizer: 70
    same(path, to_onnx(full, opset=18))
