"""The ``fuse-matmul-add`` pass (passes/fuse_matmul_add.py): MatMul + Add to Gemm, and back with ``gemm-to-matmul``,
on a module exported with torch.onnx (TorchScript exporter, opset 17, as users do); the result is compared with
onnxruntime on the exported file."""

from __future__ import annotations

import torch
from _helpers import MatAdd as _MatAdd
from _helpers import assert_same as same
from _helpers import export_torchscript as export
from _helpers import op_counts as ops
from _helpers import run_passes as run

from graphopt.frontends.onnx import load_onnx


def test_matmul_add_to_gemm_and_back(tmp):
    path = export(_MatAdd(), (torch.randn(3, 6),), tmp / "mm.onnx")
    g = load_onnx(path)
    assert {"matmul", "add"} <= set(ops(g))
    f = run(g, "fuse-matmul-add,dce")
    assert ops(f)["gemm"] == 1 and "matmul" not in ops(f)
    same(path, f)
    b = run(f, "gemm-to-matmul")
    assert "gemm" not in ops(b)
    same(path, b)
