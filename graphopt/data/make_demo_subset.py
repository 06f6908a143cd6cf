"""Build the bundled CIFAR-10 demo subset ``graphopt/data/cifar10_demo.npz`` from the full JPEG file.

The demo subset lets graphopt run (and its examples work) where the full 55 MB file is not available. It is a
seeded, class-balanced draw: ``--train-per-class`` images of each class from the *held-out* part of the
training split (the 10% per class that ``load_dataset("cifar10", seed=0)`` keeps for validation, so that the
bundled trained ResNet-20, which was trained on the other 90%, has never seen them: the demo's validation
scores are honest) and ``--test-per-class`` from the test split, decoded to uint8 and stored with
``numpy.savez_compressed`` (keys ``x_train, y_train, x_test, y_test, classes``; no pickle). Re-running with the
same arguments reproduces the same images in the same order.

    python graphopt/data/make_demo_subset.py [--source PATH] [--out PATH] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from graphopt.eval.data import decode_jpeg_images, find_cifar10, heldout_indices


def make_subset(source: Path, out: Path, train_per_class: int = 200, test_per_class: int = 50,
                seed: int = 0) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    with np.load(source, allow_pickle=False) as z:
        arrays["classes"] = z["classes"]
        for split, per_class in (("train", train_per_class), ("test", test_per_class)):
            labels = z[f"{split}_labels"]
            pool = heldout_indices(labels) if split == "train" else np.arange(len(labels))
            idx = np.concatenate(
                [np.sort(rng.choice(pool[labels[pool] == c], per_class, replace=False))
                 for c in range(len(arrays["classes"]))]
            )
            arrays[f"x_{split}"] = decode_jpeg_images(z[f"{split}_jpeg"], z[f"{split}_offsets"], idx)
            arrays[f"y_{split}"] = labels[idx].astype(np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return {"train": len(arrays["y_train"]), "test": len(arrays["y_test"]), "bytes": out.stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=None, help="cifar10_jpeg.npz (default: graphopt's lookup)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "cifar10_demo.npz")
    ap.add_argument("--train-per-class", type=int, default=200)
    ap.add_argument("--test-per-class", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    source = args.source or find_cifar10(allow_demo=False)
    info = make_subset(source, args.out, args.train_per_class, args.test_per_class, args.seed)
    print(f"wrote {args.out}: {info['train']} train + {info['test']} test images, {info['bytes'] / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
