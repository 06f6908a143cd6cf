"""Train a zoo model to a reference accuracy on CIFAR-10, resumably, and record how.

``graphopt optimize`` is meant for a *trained* model; this script makes the trained models its demo, tests and
benchmarks start from. The recipe is the CIFAR ResNet one of He et al. (SGD + Nesterov momentum 0.9, weight
decay 5e-4 on weights only, batch 128, 4-px crop + flip), with a cosine schedule after a one-epoch linear
warm-up instead of the paper's step decay at 32k/48k iterations, so that fewer epochs fit a CPU session.

Data: the ``cifar10`` splits of :func:`graphopt.eval.data.load_dataset` at seed 0, i.e. 45,000 training
images; the 5,000-image validation split (10% per class, seed 0) is **not** trained on, so that
``graphopt optimize --data cifar10`` (same split) selects candidates on images the model never saw. The test
split is evaluated once, after the last epoch, for the record.

Every epoch ends with an atomic checkpoint (model, optimizer, epoch, recipe) in ``--work``; running the same
command again resumes from it, bit-for-bit the same data order (the loader is seeded per epoch).
``--export-checkpoint`` writes the weights and record of the last checkpoint without training further
(``"complete": false`` and ``epochs_completed`` in the record say so). The result:
``--out`` (a state_dict, ``.pt``) and ``--out`` with ``.json`` (recipe, data, seed, val/test accuracy, epochs
and wall time per epoch, machine, commit).

    python -m graphopt.models.train_reference resnet20 --epochs 50 \
        --out models/weights/resnet20_cifar10.pt --work graphopt-runs/reference-resnet20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from graphopt.models import get

from graphopt.eval.data import BatchLoader, load_dataset
from graphopt.eval.train import evaluate, seed_everything
from graphopt.ir.serialize import atomic_write_bytes


def recipe(args: argparse.Namespace) -> dict[str, Any]:
    return {"model": args.model, "epochs": args.epochs, "batch_size": 128, "optimizer": "sgd", "nesterov": True,
            "momentum": 0.9, "lr": args.lr, "weight_decay": 5e-4, "weight_decay_on": "conv/linear weights only",
            "schedule": "linear warm-up 1 epoch, then cosine to 0", "augment": "4-px pad crop + horizontal flip",
            "label_smoothing": 0.0, "seed": args.seed, "data": f"{args.data} (load_dataset seed 0; for cifar10: 45k "
            f"train, 5k val held out, 10k test)", "channels_last": True, "threads": torch.get_num_threads()}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return "unknown"


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(args: argparse.Namespace) -> dict[str, Any]:
    seed_everything(args.seed)
    splits = load_dataset(args.data, seed=0)
    net = get(args.model, seed=args.seed).to(memory_format=torch.channels_last)
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    loader = BatchLoader(splits.train, 128, shuffle=True, augment=True, seed=args.seed, drop_last=True,
                         channels_last=True)
    spe = len(loader)
    total, warm = args.epochs * spe, spe

    def lr_at(step: int) -> float:
        if step < warm:
            return args.lr * (step + 1) / warm
        return args.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    rec = recipe(args)
    ckpt = Path(args.work) / "checkpoint.pt"
    history: list[dict[str, float]] = []
    start_epoch = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state["recipe"]["epochs"] != args.epochs or state["recipe"]["model"] != args.model:
            sys.exit(f"{ckpt} was written for {state['recipe']['model']} / {state['recipe']['epochs']} epochs; "
                     f"use another --work folder or the same settings")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"], state["history"]
        print(f"resuming {args.model} at epoch {start_epoch}/{args.epochs} from {ckpt}", flush=True)
    if args.export_checkpoint:
        if not history:
            sys.exit(f"{ckpt}: no checkpoint to export yet")
        return _finish(net, splits, history, rec, args, complete=False)
    for epoch in range(start_epoch, args.epochs):
        net.train()
        loader.set_epoch(epoch)
        t0, loss_sum, correct, n = time.perf_counter(), 0.0, 0, 0
        for i, (xb, yb) in enumerate(loader):
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * spe + i)
            out = net(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(yb)
            correct += int((out.argmax(1) == yb).sum())
            n += len(yb)
        val = evaluate(net, splits.val, batch_size=512)["accuracy"]
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n, "val_acc": val,
                        "seconds": time.perf_counter() - t0})
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / n:.4f} train {correct / n:.4f} val {val:.4f} "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)
        _atomic_torch_save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                            "history": history, "recipe": rec}, ckpt)
    return _finish(net, splits, history, rec, args, complete=True)


def _finish(net, splits, history: list[dict[str, float]], rec: dict[str, Any], args: argparse.Namespace,
            complete: bool) -> dict[str, Any]:
    net.eval()
    test = evaluate(net, splits.test, batch_size=512)["accuracy"]  # once, for the record
    net = net.to(memory_format=torch.contiguous_format)
    out = Path(args.out)
    _atomic_torch_save({k: v.contiguous() for k, v in net.state_dict().items()}, out)
    doc = {"recipe": rec, "complete": complete, "epochs_completed": len(history),
           "val_accuracy": history[-1]["val_acc"], "test_accuracy": test, "history": history,
           "train_seconds": sum(h["seconds"] for h in history), "command": " ".join(sys.argv),
           "commit": _commit(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__}}
    atomic_write_bytes(out.with_suffix(".json"), json.dumps(doc, indent=1).encode())
    print(f"{args.model}: val {doc['val_accuracy']:.4f}, test {test:.4f} -> {out}", flush=True)
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="zoo model name (graphopt.models.names())")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="cifar10", help="dataset name for graphopt.eval.data.load_dataset")
    ap.add_argument("--out", required=True, help="weights file (.pt); the record goes beside it as .json")
    ap.add_argument("--work", required=True, help="checkpoint folder; the same command resumes from it")
    ap.add_argument("--export-checkpoint", action="store_true",
                    help="write --out from the last checkpoint (recorded as complete: false) and stop")
    train(ap.parse_args())


if __name__ == "__main__":
    main()
