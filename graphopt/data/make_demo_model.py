"""Build the bundled demo model ``graphopt/data/demo_resnet.onnx`` that ``make demo`` optimizes.

A ResNet-20 (option-A shortcuts, 0.27M parameters) from the model zoo, trained briefly on the full CIFAR-10
training split (``../shared/data``, or ``$GRAPHOPT_DATA_DIR``) so the demo starts from a model with a
meaningful accuracy rather than from noise, then lowered to the graphopt IR and emitted as ONNX (opset 18,
batch dimension symbolic) with graphopt's own backend. Same arguments, same file (seeded, 2 threads).

    python graphopt/data/make_demo_model.py [--epochs 4] [--out graphopt/data/demo_resnet.onnx]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from graphopt.models import example_inputs, get

from graphopt.backends.onnx import to_onnx
from graphopt.eval.data import load_dataset
from graphopt.eval.train import TrainConfig, seed_everything, train_model
from graphopt.frontends.torch import from_torch


def build(out: Path, epochs: float, seed: int = 0) -> dict[str, float]:
    seed_everything(seed)
    net = get("resnet20", seed=seed)
    splits = load_dataset("cifar10")
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=0.1, seed=seed, threads=2, evaluate_test=True)
    res = train_model(net, splits, cfg)
    net.eval()
    (x,) = example_inputs("resnet20", batch=2)
    g = from_torch(net, (x,), dynamic_batch=True)
    to_onnx(g, opset=18, path=out)
    return {"status": res.status, "val": res.val, "test": res.test, "train_seconds": res.train_time}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("demo_resnet.onnx"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    print(build(a.out, a.epochs, a.seed))


if __name__ == "__main__":
    main()
