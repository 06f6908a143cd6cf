"""Build the bundled demo model ``graphopt/data/demo_resnet.onnx`` that ``make demo`` optimizes.

The trained ResNet-20 (option-A shortcuts, 0.27M parameters) whose weights ship in
``models/weights/resnet20_cifar10.pt``; how they were trained, and to what accuracy, is in the ``.json`` beside
them (``python -m graphopt.models.train_reference``). It is written as a user's exported file usually is: ONNX
with a **fixed batch of 1** (graphopt relaxes it when it optimizes), BatchNorm kept as its own op, opset 18,
and the record's accuracies and preprocessing in the model's metadata. Same weights, same file.

    python graphopt/data/make_demo_model.py [--weights models/weights/resnet20_cifar10.pt] [--out ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from graphopt.models import get

from graphopt.backends.onnx import to_onnx
from graphopt.eval.data import CIFAR10_MEAN, CIFAR10_STD
from graphopt.frontends.torch import from_torch
from graphopt.ir.serialize import atomic_write_bytes

WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "weights" / "resnet20_cifar10.pt"


def build(weights: Path, out: Path) -> dict:
    net = get("resnet20", seed=0)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()
    g = from_torch(net, (torch.zeros(1, 3, 32, 32),))  # static shapes: batch fixed at 1
    model = to_onnx(g, opset=18)
    record = json.loads(weights.with_suffix(".json").read_text()) if weights.with_suffix(".json").exists() else {}
    meta = {"graphopt.preprocess": json.dumps({"scale": "1/255", "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD),
                                               "layout": "NCHW", "color": "RGB"}),
            "graphopt.training": json.dumps({k: record.get(k) for k in ("val_accuracy", "test_accuracy", "recipe")})}
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    atomic_write_bytes(out, model.SerializeToString())
    return {"out": str(out), "val_accuracy": record.get("val_accuracy"), "test_accuracy": record.get("test_accuracy")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("demo_resnet.onnx"))
    a = ap.parse_args()
    print(build(a.weights, a.out))


if __name__ == "__main__":
    main()
