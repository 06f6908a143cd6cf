"""graphopt.eval.train: budgets, recorded losses, determinism, failure handling, metrics, weight inheritance."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from graphopt.eval.data import IGNORE_INDEX, ArrayDataset, BatchLoader, DatasetInfo, Splits, load_dataset
from graphopt.eval.train import (
    TrainConfig,
    TrainResult,
    _lr_factor,
    _make_optimizer,
    evaluate,
    inherit_weights,
    seed_everything,
    train_model,
)

DEMO = Path(__file__).resolve().parents[2] / "graphopt" / "data" / "cifar10_demo.npz"


def tiny_cnn(classes: int = 10, width: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes),
    )


@pytest.fixture(scope="module")
def cifar() -> Splits:
    return load_dataset("cifar10-demo", train_size=256, val_size=100, test_size=100)


@pytest.fixture(scope="module")
def colors() -> Splits:
    """Separable synthetic task: the class is the dominant colour channel (must be learned to ~100%)."""
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 100, (n, 16, 16, 3)).astype(np.uint8)
    x[np.arange(n), :, :, y] += 120
    info = DatasetInfo("colors", "classification", 3, (3, 16, 16), mean=(0.5,) * 3, std=(0.25,) * 3)
    mk = lambda a, b: ArrayDataset(torch.from_numpy(x[a:b]), torch.from_numpy(y[a:b]), info)
    return Splits(mk(0, 200), mk(200, 250), mk(250, 300), info)


def cfg(**kw) -> TrainConfig:
    base = dict(batch_size=32, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_learns_separable_task_and_records_every_step(colors):
    seed_everything(0)
    r = train_model(tiny_cnn(3), colors, cfg(epochs=4, lr=0.05, evaluate_test=True))
    assert r.ok and r.stop_reason == "epochs" and r.task == "classification"
    spe = 200 // 32  # drop_last
    assert r.steps_per_epoch == spe and r.steps == 4 * spe and r.epochs == 4.0
    assert len(r.step_losses) == r.steps and r.step_epochs == [e for e in range(4) for _ in range(spe)]
    for e in range(4):  # per-epoch train loss is the mean of that epoch's step losses
        assert r.epoch_train_loss[e] == pytest.approx(np.mean(r.step_losses[e * spe : (e + 1) * spe]))
    assert [h["epoch"] for h in r.val_history] == [0, 1, 2, 3]
    assert r.val["accuracy"] >= 0.95 and r.test["accuracy"] >= 0.95
    assert r.epoch_train_loss[-1] < r.epoch_train_loss[0]
    assert r.primary_metric == r.val["accuracy"]
    assert r.wall_time >= r.train_time > 0 and r.eval_time > 0
    assert r.num_params == sum(p.numel() for p in tiny_cnn(3).parameters())


def test_first_step_loss_matches_manual_computation(cifar):
    """The recorded loss is CE with label smoothing on the seeded, augmented first batch."""
    seed_everything(1)
    model = tiny_cnn()
    ref_model = copy.deepcopy(model)
    r = train_model(model, cifar, cfg(steps=1, label_smoothing=0.1, seed=7))
    loader = BatchLoader(cifar.train, 32, shuffle=True, augment=True, seed=7, drop_last=True)
    xb, yb = next(iter(loader))
    ref_model.train()
    expected = F.cross_entropy(ref_model(xb), yb, label_smoothing=0.1).item()
    assert r.step_losses == [pytest.approx(expected, rel=1e-5)]


def test_deterministic_under_seed(cifar):
    runs = []
    for seed in (0, 0, 1):
        seed_everything(123)
        runs.append(train_model(tiny_cnn(), cifar, cfg(steps=6, seed=seed, eval_every=0)))
    assert runs[0].step_losses == runs[1].step_losses
    assert runs[0].val == runs[1].val
    assert runs[0].step_losses != runs[2].step_losses


def test_budgets_steps_fractional_epochs_seconds_and_callback(cifar):
    seed_everything(0)
    r = train_model(tiny_cnn(), cifar, cfg(steps=5, epochs=10))
    assert r.steps == 5 and r.stop_reason == "steps" and r.val  # final evaluation after a partial epoch
    assert r.val_history[-1]["step"] == 5
    r = train_model(tiny_cnn(), cifar, cfg(epochs=1.5))
    assert r.steps == math.ceil(1.5 * 8) and r.stop_reason == "epochs" and r.step_epochs[-1] == 1
    assert len(r.epoch_train_loss) == 2  # the partial epoch is reported too
    r = train_model(tiny_cnn(), cifar, cfg(seconds=0.4, eval_every=0))
    assert r.stop_reason == "seconds" and r.steps >= 1 and 0.4 <= r.train_time < 5
    seen = []
    r = train_model(tiny_cnn(), cifar, cfg(epochs=5), on_epoch_end=lambda e, res: seen.append(e) or e == 1)
    assert r.stop_reason == "callback" and seen == [0, 1] and r.steps == 16
    with pytest.raises(ValueError, match="budget"):
        train_model(tiny_cnn(), cifar, TrainConfig())


def test_lr_schedule_closed_form():
    c = TrainConfig(steps=100, schedule="cosine", min_lr_ratio=0.1)
    assert _lr_factor(c, 0, 100, 0, 0.0) == pytest.approx(1.0)
    assert _lr_factor(c, 50, 100, 0, 0.0) == pytest.approx(0.1 + 0.9 * 0.5)
    assert _lr_factor(c, 100, 100, 0, 0.0) == pytest.approx(0.1)
    # linear warm-up over 10 steps, then cosine over the remaining 90
    assert [_lr_factor(c, s, 100, 10, 0.0) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert _lr_factor(c, 55, 100, 10, 0.0) == pytest.approx(0.1 + 0.9 * 0.5)
    assert _lr_factor(TrainConfig(steps=10, schedule="constant"), 7, 10, 0, 0.0) == 1.0
    timed = TrainConfig(seconds=10.0)
    assert _lr_factor(timed, 3, None, 0, 5.0) == pytest.approx(0.5)


def test_optimizers_and_weight_decay_groups():
    m = tiny_cnn()
    sgd = _make_optimizer(m, TrainConfig(steps=1))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    decayed = {id(p) for p in sgd.param_groups[0]["params"]}
    assert sgd.param_groups[0]["weight_decay"] == 5e-4 and sgd.param_groups[1]["weight_decay"] == 0.0
    assert decayed == {id(p) for p in m.parameters() if p.dim() > 1}
    adam = _make_optimizer(m, TrainConfig(steps=1, optimizer="adamw", lr=3e-3))
    assert isinstance(adam, torch.optim.AdamW) and adam.param_groups[0]["lr"] == 3e-3
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(steps=1, optimizer="lamb")


class NaNAfter(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.body, self.k, self.calls = tiny_cnn(), k, 0

    def forward(self, x):
        self.calls += 1
        out = self.body(x)
        return out * float("nan") if self.calls > self.k else out


def test_nan_loss_returns_failed_result_without_raising(cifar):
    r = train_model(NaNAfter(3), cifar, cfg(epochs=2, evaluate_test=True))
    assert r.status == "failed" and r.stop_reason == "failed"
    assert "non-finite" in r.reason and "step 3" in r.reason
    assert r.steps == 3 and len(r.step_losses) == 3 and all(math.isfinite(v) for v in r.step_losses)
    assert r.test is None
    json.dumps(r.to_dict(), allow_nan=False)


def test_channels_last_matches_contiguous(cifar):
    out = []
    for cl in (False, True):
        seed_everything(0)
        out.append(train_model(tiny_cnn(), cifar, cfg(steps=4, channels_last=cl, eval_every=0)))
    np.testing.assert_allclose(out[0].step_losses, out[1].step_losses, rtol=1e-4)


def test_threads_restored(cifar):
    before = torch.get_num_threads()
    train_model(tiny_cnn(), cifar, cfg(steps=1, threads=1))
    assert torch.get_num_threads() == before


class FixedOutput(nn.Module):
    """Returns precomputed logits in data order (evaluation does not shuffle)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits, self.pos = logits, 0
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        out = self.logits[self.pos : self.pos + len(x)]
        self.pos += len(x)
        return {"logits": out}


def test_evaluate_classification_accuracy_and_loss():
    info = DatasetInfo("c", "classification", 4, (3, 2, 2), mean=(0.0,) * 3, std=(1.0,) * 3)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    logits = torch.randn(7, 4)
    logits[torch.arange(7), y] += 5
    logits[5] = torch.tensor([9.0, 0, 0, 0])  # wrong
    ds = ArrayDataset(torch.zeros(7, 2, 2, 3, dtype=torch.uint8), y, info)
    m = evaluate(FixedOutput(logits), ds, batch_size=3)
    assert m["accuracy"] == pytest.approx(6 / 7)
    assert m["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_evaluate_segmentation_miou_closed_form():
    info = DatasetInfo("s", "segmentation", 3, (3, 2, 2), mean=(0.0,) * 3, std=(1.0,) * 3)
    target = torch.tensor([[[0, 0], [1, 1]], [[2, 2], [0, IGNORE_INDEX]]])
    pred = torch.tensor([[[0, 1], [1, 1]], [[2, 0], [0, 2]]])
    logits = F.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 10
    ds = ArrayDataset(torch.zeros(2, 2, 2, 3, dtype=torch.uint8), target, info)
    m = evaluate(FixedOutput(logits), ds)
    # class 0: inter 2, union 4 (t=3, p=3) ; class 1: inter 2, union 3 ; class 2: inter 1, union 2
    assert m["miou"] == pytest.approx((2 / 4 + 2 / 3 + 1 / 2) / 3)
    assert m["pixel_accuracy"] == pytest.approx(5 / 7)
    # logits at half resolution are upsampled to the mask size
    small = torch.zeros(1, 3, 1, 1)
    small[0, 1] = 5
    m2 = evaluate(FixedOutput(small), ArrayDataset(torch.zeros(1, 2, 2, 3, dtype=torch.uint8),
                                                    torch.ones(1, 2, 2, dtype=torch.long), info))
    assert m2["miou"] == 1.0


def test_evaluate_sequence_token_accuracy():
    info = DatasetInfo("q", "sequence", 5, (4,), vocab_size=5)
    y = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 4], [IGNORE_INDEX, 1, 2, IGNORE_INDEX]])
    pred = torch.tensor([[0, 0, 3, 4], [0, 1, 0, 0]])
    ds = ArrayDataset(torch.zeros(2, 4, dtype=torch.long), y, info)
    m = evaluate(FixedOutput(F.one_hot(pred, 5).float() * 10), ds)
    assert m["token_accuracy"] == pytest.approx(3 / 4) and m["sequence_accuracy"] == 0.5


def test_trains_segmentation_and_sequence_tasks():
    seg = load_dataset("cifar_paste", n_train=64, n_val=16, n_test=16, source=DEMO, canvas=32, size=(8, 16))
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, stride=2), nn.ReLU(), nn.Conv2d(8, 11, 1))
    r = train_model(model, seg, cfg(epochs=1, batch_size=16))
    assert r.ok and 0 <= r.val["miou"] <= 1 and "pixel_accuracy" in r.val

    seq = load_dataset("assoc_recall", n_train=256, n_val=64, n_test=64, num_pairs=4, num_queries=2,
                       vocab_size=16)

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.rnn, self.out = nn.Embedding(16, 32), nn.GRU(32, 32, batch_first=True), nn.Linear(32, 16)

        def forward(self, x):
            return self.out(self.rnn(self.emb(x))[0]), None  # tuple output: first element is used

    seed_everything(0)
    r = train_model(Tagger(), seq, cfg(epochs=2, optimizer="adamw", lr=3e-3))
    assert r.ok and "token_accuracy" in r.val and r.epoch_train_loss[-1] < r.epoch_train_loss[0]


def test_wrong_output_shape_is_a_clear_error(cifar):
    with pytest.raises(ValueError, match="predicts 5 classes"):
        train_model(tiny_cnn(5), cifar, cfg(steps=1))


def test_inherit_weights_copies_matching_names_and_shapes():
    torch.manual_seed(0)
    parent = tiny_cnn(width=8)
    parent[1].running_mean.fill_(0.5)
    child = tiny_cnn(width=8)
    child[4] = nn.Conv2d(8, 16, 5, padding=2)  # same name, other shape
    child_before = copy.deepcopy(child.state_dict())
    copied, skipped = inherit_weights(child, parent.state_dict())
    assert set(skipped) == {"4.weight"} and "4.bias" in copied and "1.running_mean" in copied
    assert set(copied) | set(skipped) == set(child.state_dict())
    for name in copied:
        torch.testing.assert_close(child.state_dict()[name], parent.state_dict()[name])
    torch.testing.assert_close(child.state_dict()["4.weight"], child_before["4.weight"])
    copied2, _ = inherit_weights(tiny_cnn(width=8), parent)  # a module works too
    assert len(copied2) == len(parent.state_dict())


def test_result_round_trips_through_json(colors):
    r = train_model(tiny_cnn(3), colors, cfg(steps=3))
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    r2 = TrainResult.from_dict(d)
    assert r2.step_losses == r.step_losses and r2.val == r.val and r2.config["steps"] == 3


def test_batches_without_targets_are_skipped_and_all_ignored_data_fails():
    info = DatasetInfo("q", "sequence", 6, (4,), vocab_size=6)
    x = torch.randint(0, 6, (8, 4))
    y = torch.full((8, 4), IGNORE_INDEX)
    y[4:, 2] = 3  # the first batch of 4 (unshuffled order is irrelevant: check both outcomes)

    class Emb(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.e = nn.Embedding(6, 6)

        def forward(self, t):
            return self.e(t)

    r = train_model(Emb(), ArrayDataset(x, y, info), cfg(epochs=2, batch_size=4))
    assert r.ok and all(math.isfinite(v) for v in r.step_losses) and 2 <= r.steps <= 4
    r = train_model(Emb(), ArrayDataset(x, torch.full((8, 4), IGNORE_INDEX), info), cfg(epochs=2, batch_size=4))
    assert r.status == "failed" and "no training batch" in r.reason and r.steps == 0
