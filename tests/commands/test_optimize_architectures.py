"""``graphopt optimize`` beyond ResNet-20: a MobileNetV3-style net (squeeze-excitation, hard-swish) exported by
torch.onnx with its default fixed batch of 1, a ResNet-18-style net and a small ViT. In each the search tries
mutations and the run ends within its budget; a model that cannot be scored ends with one line and exit 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from graphopt import models
from graphopt.backends.onnx import to_onnx
from graphopt.frontends.torch import from_torch

GRAPHOPT = [sys.executable, "-m", "graphopt.cli", "optimize"]
BUDGET = 60
SMALL = ["--train-size", "300", "--score-steps", "4", "--distill-steps", "4", "--final-k", "1", "--final-epochs",
         "1", "--parents", "2", "--mutants", "2", "--cost-window", "1.5", "--budget", f"{BUDGET}s"]


class SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int = 3) -> None:
        super().__init__()
        h = c_in * expand
        self.body = nn.Sequential(nn.Conv2d(c_in, h, 1, bias=False), nn.BatchNorm2d(h), nn.Hardswish(),
                                  nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h),
                                  nn.Hardswish(), SE(h), nn.Conv2d(h, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV3Like(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(InvertedResidual(16, 16, 1), InvertedResidual(16, 24, 2),
                                    InvertedResidual(24, 24, 1))
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _run(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", "GRAPHOPT_NUM_THREADS": "1"}
    t0 = time.monotonic()
    r = subprocess.run(GRAPHOPT + args, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    return r, time.monotonic() - t0


def _mobilenetv3_onnx(path: Path) -> Path:
    torch.manual_seed(0)
    torch.onnx.export(MobileNetV3Like().eval(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False,
                      opset_version=17)  # fixed batch 1, as torch.onnx writes by default
    return path


def _zoo_onnx(path: Path, name: str, **kw) -> Path:
    net = models.get(name, seed=0, **kw).eval()
    to_onnx(from_torch(net, (torch.randn(2, 3, 32, 32),), dynamic_batch=True), path=path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenetv3", "resnet18", "vit"])
def test_search_tries_mutations_and_ends_within_budget(arch, tmp_path):
    if arch == "mobilenetv3":
        model = _mobilenetv3_onnx(tmp_path / "m.onnx")
    elif arch == "resnet18":
        model = _zoo_onnx(tmp_path / "m.onnx", "resnet18", base_width=8, small_input=True)
    else:
        model = _zoo_onnx(tmp_path / "m.onnx", "vit_tiny", embed_dim=32, depth=2, num_heads=2)
    r, wall = _run([str(model), "-o", str(tmp_path / "out"), *SMALL], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    doc = json.loads((tmp_path / "out" / "pareto.json").read_text())
    assert doc["stats"]["mutations"] >= 3, doc["stats"]
    assert doc["stats"]["scored"] >= 2, doc["stats"]  # the original and at least one mutant
    # the budget's own clock (from loading the data to the written outputs) within 10%; the whole command adds
    # starting Python, importing torch and loading the model, which on a loaded machine took up to 25 s more
    (total,) = re.findall(r"total (\d+)s \(budget", " ".join((r.stdout + r.stderr).split()))
    assert int(total) <= 1.10 * BUDGET, total
    assert wall <= 1.10 * BUDGET + 60, wall
    assert doc["seed"]["test_accuracy"] is not None and doc["best"]["val_accuracy"] is not None


def test_a_model_that_cannot_be_scored_ends_with_one_line_and_exit_2(tmp_path):
    """Five logits for a ten-class dataset: the original cannot be trained, so there is nothing to search."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 5)).eval()
    p = tmp_path / "five.onnx"
    to_onnx(from_torch(net, (torch.randn(2, 3, 32, 32),), dynamic_batch=True), path=p)
    r, _ = _run([str(p), "-o", str(tmp_path / "out"), *SMALL], tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "could not be scored" in r.stderr and "5 classes" in r.stderr
