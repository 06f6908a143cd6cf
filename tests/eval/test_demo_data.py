"""The bundled demo subset's training images come from the part of CIFAR-10's training split that the bundled
trained ResNet-20 never saw (the seed-0 validation split of ``load_dataset("cifar10")``): the demo's
validation scores of a trained model are honest only then."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from graphopt.eval.data import (
    DEMO_FILE,
    bundled_data_dir,
    find_cifar10,
    heldout_indices,
    load_cifar10_arrays,
    load_dataset,
)


def _digests(x: np.ndarray) -> set[bytes]:
    return {hashlib.sha1(img.tobytes()).digest() for img in x}


def test_heldout_indices_are_load_datasets_validation_split():
    labels = np.repeat(np.arange(10), 50)
    idx = heldout_indices(labels, 0.1, seed=3)
    assert len(idx) == 50 and all((labels[idx] == c).sum() == 5 for c in range(10))
    x = np.arange(500, dtype=np.uint8).repeat(3 * 2 * 2).reshape(500, 2, 2, 3)  # image i is filled with i % 256
    from graphopt.eval.data import DatasetInfo, _to_splits

    info = DatasetInfo(name="t", task="classification", num_classes=10, input_shape=(3, 2, 2))
    s = _to_splits(x, labels, x[:10], labels[:10], info, val_fraction=0.1, test_fraction=0.0, seed=3)
    assert sorted(s.val.x[:, 0, 0, 0].tolist()) == sorted((idx % 256).tolist())


def test_demo_training_images_were_held_out_from_the_reference_training():
    try:
        full = find_cifar10(allow_demo=False)
    except Exception:  # noqa: BLE001
        pytest.skip("the full CIFAR-10 file is not available (../shared/data or $GRAPHOPT_DATA_DIR)")
    a = load_cifar10_arrays(full)
    held = _digests(a["x_train"][heldout_indices(a["y_train"])])
    trained_on = _digests(load_dataset("cifar10", seed=0).train.x.numpy())
    demo = load_cifar10_arrays(bundled_data_dir() / DEMO_FILE)
    d = _digests(demo["x_train"])
    assert len(d) == len(demo["x_train"]) and d <= held and not d & trained_on
