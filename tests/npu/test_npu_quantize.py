"""INT8 QDQ quantization (graphopt/npu/quantize.py) keeps the graph outputs dequantized by default and tracks fp32 on
held-out inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from _helpers import export_torchscript_seeded as export
from torch import nn


def test_quantize_keeps_outputs_dequantized(tmp_path):
    """Entropy calibration + no 8-bit re-quantization of the graph output (the quantize_qdq defaults)."""
    from graphopt.npu.profiles import load_profile
    from graphopt.npu.quantize import CalibData, quantize_qdq

    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 10))
    path = export(net, (torch.randn(1, 3, 8, 8),), tmp_path / "cnn.onnx")
    fp32 = onnx.load(path)
    name = fp32.graph.input[0].name
    rng = np.random.default_rng(0)
    calib = CalibData([{name: rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(16)])
    prof = load_profile("generic-npu-int8")
    q = quantize_qdq(fp32, calib, prof)
    q_req = quantize_qdq(fp32, calib, prof, float_outputs=False)
    prod = {o: n.op_type for n in q.graph.node for o in n.output}
    assert prod[q.graph.output[0].name] == "Gemm"
    assert {n.op_type for n in q_req.graph.node if q_req.graph.output[0].name in n.output} == {"DequantizeLinear"}
    import onnxruntime as ort

    s_ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    s_q = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    xs = [{name: rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(16)]
    ref = np.concatenate([s_ref.run(None, x)[0] for x in xs]).ravel()
    got = np.concatenate([s_q.run(None, x)[0] for x in xs]).ravel()
    # int8 outputs track fp32 on held-out random inputs (16 random calibration samples: loose, not exact)
    assert np.corrcoef(ref, got)[0, 1] > 0.95
    with pytest.raises(Exception, match="calibration method"):
        quantize_qdq(fp32, calib, prof, method="kl")
