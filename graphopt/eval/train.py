"""Train and evaluate any ``torch.nn.Module`` on a :mod:`graphopt.eval.data` dataset.

The backends hand over plain modules, so this file knows nothing about the IR. One call, :func:`train_model`,
trains under a budget (epochs, steps and/or seconds -- whichever runs out first), evaluates, and returns a
:class:`TrainResult` that records *every* step's training loss together with the epoch it belongs to
(training-speed estimators such as TSE sum those losses per epoch), per-epoch train loss/accuracy, validation
metrics and timings. A non-finite loss ends training with ``status="failed"`` instead of raising, so one
diverging candidate cannot stop a search.

Model outputs: a tensor, a tuple/list (first element is used) or a mapping with ``"logits"``. Shapes:
classification (B, C) (or (B, C, 1, 1)); segmentation (B, C, h, w), bilinearly resized to the mask size when
smaller; sequence (B, L, V).
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from graphopt.eval.data import ArrayDataset, BatchLoader, DatasetInfo, Splits

__all__ = [
    "PRIMARY_METRIC",
    "TrainConfig",
    "TrainResult",
    "default_threads",
    "evaluate",
    "primary_metric",
    "inherit_weights",
    "seed_everything",
    "train_model",
]


def default_threads() -> int:
    """``$GRAPHOPT_NUM_THREADS`` if set, else the CPU cores available to this process that are not already busy.

    Executors set ``GRAPHOPT_NUM_THREADS`` in their workers to ``cores // workers``: several processes each
    running OpenMP with all cores oversubscribe the CPU and can be ~10x slower than one thread each. The same
    happens beside any other busy process: on a 2-core machine with another training running, a 2-thread
    optimize scored 3 candidates in 30 s and a 1-thread one 91 in 57 s. So the count is the affinity-aware core
    count minus the 1-minute load average (at least 1), read once per process so that runs in one process stay
    comparable.
    """
    env = os.environ.get("GRAPHOPT_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return _free_cores()


@functools.cache
def _free_cores() -> int:
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = max(1, os.cpu_count() or 1)
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - no load average on this platform
        busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; call before building a model so its initialization is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainConfig:
    """Training recipe. At least one of ``epochs``/``steps``/``seconds``; training stops at the first reached.

    ``lr``/``weight_decay`` default per optimizer (SGD: 0.05 / 5e-4, AdamW: 1e-3 / 0.01). Weight decay skips
    1-D parameters (biases, norm scales) unless ``decay_norm_and_bias``. The cosine schedule decays from
    ``lr`` to ``lr * min_lr_ratio`` over the step budget after a linear warm-up of
    ``max(warmup_steps, warmup_epochs * steps_per_epoch)`` steps; with a pure time budget its progress is
    elapsed/``seconds`` (then runs are not bit-reproducible, since step counts depend on speed). ``seconds``
    counts training time only (validation passes are excluded).
    ``threads`` defaults to :func:`default_threads` (all cores; restored afterwards). Determinism: same
    seed, data, thread count and model initialization give identical step losses on CPU.
    """

    epochs: float | None = None
    steps: int | None = None
    seconds: float | None = None
    batch_size: int = 128
    eval_batch_size: int = 512
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float | None = None
    decay_norm_and_bias: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 0
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    augment: bool = True
    seed: int = 0
    threads: int | None = None
    channels_last: bool = False
    eval_every: int = 1
    evaluate_test: bool = False
    device: str = "cpu"
    #: with a ``teacher`` passed to :func:`train_model`: loss = (1 - kd_alpha) * CE + kd_alpha * T^2 * KL(teacher/T ||
    #: student/T) (Hinton et al. 2015; alpha 0.9 and T 4 are the CIFAR settings of Tian et al.'s RepDistiller)
    kd_alpha: float = 0.9
    kd_temperature: float = 4.0

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        for name in ("epochs", "steps", "seconds"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {v}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.kd_alpha <= 1 or self.kd_temperature <= 0:
            raise ValueError(f"kd_alpha must be in [0, 1] and kd_temperature > 0, got {self.kd_alpha}, "
                             f"{self.kd_temperature}")

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (0.05 if self.optimizer == "sgd" else 1e-3)

    @property
    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 5e-4 if self.optimizer == "sgd" else 0.01

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite_or_none(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite_or_none(x) for x in v]
    return v


@dataclass
class TrainResult:
    """Outcome of one training run. ``to_dict`` gives plain JSON types (non-finite floats become None).

    ``step_losses[i]`` is the training loss of optimizer step ``i`` (on the augmented minibatch, before the
    update) and ``step_epochs[i]`` the 0-based epoch it belongs to. ``val_history`` holds one entry per
    evaluation (``epoch``, ``step`` and the metrics); ``val`` is the last one without those two keys.
    """

    status: Literal["ok", "failed"]
    task: str
    reason: str | None = None
    stop_reason: str = ""
    steps: int = 0
    epochs: float = 0.0
    steps_per_epoch: int = 0
    step_losses: list[float] = field(default_factory=list)
    step_epochs: list[int] = field(default_factory=list)
    epoch_train_loss: list[float] = field(default_factory=list)
    epoch_train_acc: list[float] = field(default_factory=list)
    epoch_times: list[float] = field(default_factory=list)
    val_history: list[dict[str, float]] = field(default_factory=list)
    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] | None = None
    num_params: int = 0
    wall_time: float = 0.0
    train_time: float = 0.0
    eval_time: float = 0.0
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def primary_metric(self) -> float | None:
        """Validation accuracy / mIoU / token accuracy, whichever the task reports."""
        for k in ("accuracy", "miou", "token_accuracy"):
            if k in self.val:
                return self.val[k]
        return None

    def to_dict(self) -> dict[str, Any]:
        return _finite_or_none(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ----------------------------------------------------------------------------------------------------------
# Loss and metrics
# ----------------------------------------------------------------------------------------------------------


def _logits(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping) and "logits" in out:
        return out["logits"]
    if isinstance(out, list | tuple) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"model output of type {type(out).__name__} is not a tensor, tuple or mapping with 'logits'")


def _shape_logits(logits: torch.Tensor, y: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """Bring logits to (N, C) / (N, C, H, W) / (N, L, V) for the task, with a clear error otherwise."""
    task = info.task
    if task == "classification":
        if logits.dim() > 2 and all(s == 1 for s in logits.shape[2:]):
            logits = logits.flatten(1)
        if logits.dim() != 2 or logits.shape[0] != y.shape[0]:
            raise ValueError(f"classification needs logits (B, C); model returned {tuple(logits.shape)}")
    elif task == "segmentation":
        if logits.dim() != 4:
            raise ValueError(f"segmentation needs logits (B, C, H, W); model returned {tuple(logits.shape)}")
        if logits.shape[2:] != y.shape[1:]:
            logits = F.interpolate(logits, size=y.shape[1:], mode="bilinear", align_corners=False)
    elif logits.dim() != 3 or logits.shape[:2] != y.shape:
        raise ValueError(f"sequence tasks need logits (B, L, V) with (B, L)={tuple(y.shape)}; "
                         f"model returned {tuple(logits.shape)}")
    if logits.shape[-1 if task == "sequence" else 1] < info.num_classes:
        raise ValueError(f"model predicts {logits.shape[-1 if task == 'sequence' else 1]} classes but dataset "
                         f"{info.name!r} has {info.num_classes}")
    return logits


def _loss(logits: torch.Tensor, y: torch.Tensor, info: DatasetInfo, smoothing: float = 0.0) -> torch.Tensor:
    if info.task == "sequence":
        logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    return F.cross_entropy(logits, y, ignore_index=info.ignore_index, label_smoothing=smoothing)


def _kd_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, info: DatasetInfo,
             temperature: float) -> torch.Tensor:
    """T^2-scaled KL(teacher || student) over the class axis, averaged over samples/pixels/tokens with a target."""
    axis = -1 if info.task == "sequence" else 1
    kl = F.kl_div(F.log_softmax(student / temperature, axis), F.log_softmax(teacher / temperature, axis),
                  reduction="none", log_target=True).sum(axis)
    valid = (y != info.ignore_index).to(kl.dtype) if info.task != "classification" else torch.ones_like(kl)
    return kl.mul(valid).sum() / valid.sum().clamp_min(1) * temperature**2


def _correct(logits: torch.Tensor, y: torch.Tensor, info: DatasetInfo) -> tuple[int, int]:
    """(correct, counted) predictions: samples, pixels or target tokens (ignore_index skipped)."""
    pred = logits.argmax(-1 if info.task == "sequence" else 1)
    valid = y != info.ignore_index
    return int(((pred == y) & valid).sum()), int(valid.sum())


#: the metric each task is judged by (higher is better): what a search scores and compares candidates with
PRIMARY_METRIC = {"classification": "accuracy", "segmentation": "miou", "sequence": "token_accuracy"}


def primary_metric(metrics: dict[str, float], task: str) -> float:
    """The task's :data:`PRIMARY_METRIC` from :func:`evaluate`'s output (0.0 for an empty split)."""
    if not metrics:
        return 0.0
    key = PRIMARY_METRIC.get(task)
    if key is None or key not in metrics:
        raise KeyError(f"no primary metric for task {task!r} in {sorted(metrics)}")
    return float(metrics[key])


@torch.inference_mode()
def evaluate(
    model: nn.Module, data: ArrayDataset, *, batch_size: int = 512, channels_last: bool = False,
    device: str = "cpu",
) -> dict[str, float]:
    """Metrics of ``model`` on ``data`` (eval mode, no augmentation).

    classification: ``loss``, ``accuracy``; segmentation: ``loss``, ``pixel_accuracy``, ``miou`` (mean over
    classes present in target or prediction; background 0 included); sequence: ``loss``, ``token_accuracy``
    (over positions with a target) and ``sequence_accuracy`` (all targets of a sequence right).
    """
    info = data.info
    if len(data) == 0:
        return {}
    was_training = model.training
    model.eval()
    total_loss, n_items, correct, counted, seq_ok = 0.0, 0, 0, 0, 0
    conf = torch.zeros(info.num_classes, info.num_classes, dtype=torch.long) if info.task == "segmentation" else None
    try:
        for xb, yb in BatchLoader(data, batch_size, channels_last=channels_last):
            xb, yb = xb.to(device), yb.to(device)
            logits = _shape_logits(_logits(model(xb)), yb, info).float()
            valid = yb != info.ignore_index
            nv = int(valid.sum())
            if nv:
                total_loss += float(_loss(logits, yb, info)) * nv
            c, k = _correct(logits, yb, info)
            correct, counted, n_items = correct + c, counted + k, n_items + nv
            if conf is not None:
                pred = logits.argmax(1)[valid].clamp_max(info.num_classes - 1).cpu()
                t = yb[valid].cpu()
                conf += torch.bincount(t * info.num_classes + pred, minlength=info.num_classes**2).view_as(conf)
            if info.task == "sequence":
                pred = logits.argmax(-1)
                seq_ok += int((((pred == yb) | ~valid).all(1)).sum())
    finally:
        model.train(was_training)
    out = {"loss": total_loss / max(n_items, 1)}
    if info.task == "classification":
        out["accuracy"] = correct / max(counted, 1)
    elif info.task == "segmentation":
        assert conf is not None
        inter = conf.diag().double()
        union = conf.sum(0).double() + conf.sum(1).double() - inter
        present = union > 0
        out["pixel_accuracy"] = correct / max(counted, 1)
        out["miou"] = float((inter[present] / union[present]).mean()) if present.any() else 0.0
    else:
        out["token_accuracy"] = correct / max(counted, 1)
        out["sequence_accuracy"] = seq_ok / len(data)
    return out


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------


def _param_groups(model: nn.Module, wd: float, decay_all: bool) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if decay_all or p.dim() > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": wd}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg.resolved_weight_decay, cfg.decay_norm_and_bias)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.resolved_lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.resolved_lr, betas=cfg.betas)


def _lr_factor(cfg: TrainConfig, step: int, total: int | None, warmup: int, elapsed: float) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = 0.0
    if total is not None:
        progress = (step - warmup) / max(1, total - warmup)
    if cfg.seconds is not None:
        progress = max(progress, elapsed / cfg.seconds)
    progress = min(max(progress, 0.0), 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def train_model(
    model: nn.Module,
    data: Splits | ArrayDataset,
    config: TrainConfig | None = None,
    *,
    val: ArrayDataset | None = None,
    test: ArrayDataset | None = None,
    on_epoch_end: Callable[[int, TrainResult], bool | None] | None = None,
    teacher: nn.Module | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` (a :class:`Splits` or a train :class:`ArrayDataset`).

    With a ``teacher`` (eval mode, frozen) the loss adds knowledge distillation on the logits
    (``config.kd_alpha``, ``config.kd_temperature``): how a trained model's knowledge is carried into a rewritten one.

    Validation runs every ``config.eval_every`` epochs and once at the end (``val`` defaults to
    ``data.val``); the test split is evaluated at the end only if ``config.evaluate_test`` (or ``test`` is
    given). ``on_epoch_end(epoch, partial_result)`` may return True to stop early (``stop_reason="callback"``).
    Never raises for a diverging model: a NaN/inf loss returns ``status="failed"`` with the reason.
    """
    cfg = config or TrainConfig(epochs=1)
    if cfg.epochs is None and cfg.steps is None and cfg.seconds is None:
        raise ValueError("TrainConfig needs a budget: set epochs, steps or seconds")
    if isinstance(data, Splits):
        train_ds = data.train
        val = val if val is not None else data.val
        if test is None and cfg.evaluate_test:
            test = data.test
    else:
        train_ds = data
    if len(train_ds) == 0:
        raise ValueError(f"training split of {train_ds.info.name!r} is empty")
    info = train_ds.info
    t_start = time.perf_counter()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or default_threads())
    try:
        return _train(model, train_ds, val, test, cfg, info, on_epoch_end, t_start, teacher)
    finally:
        torch.set_num_threads(prev_threads)


def _train(model: nn.Module, train_ds: ArrayDataset, val: ArrayDataset | None, test: ArrayDataset | None,
           cfg: TrainConfig, info: DatasetInfo, on_epoch_end: Callable[[int, TrainResult], bool | None] | None,
           t_start: float, teacher: nn.Module | None = None) -> TrainResult:
    torch.manual_seed(cfg.seed)  # dropout and other in-training randomness
    device = torch.device(cfg.device)
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval().requires_grad_(False)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    loader = BatchLoader(train_ds, cfg.batch_size, shuffle=True, augment=cfg.augment and info.task != "sequence",
                         seed=cfg.seed, drop_last=len(train_ds) >= cfg.batch_size, channels_last=cfg.channels_last)
    spe = len(loader)
    budgets = []
    if cfg.epochs is not None:
        budgets.append(max(1, math.ceil(cfg.epochs * spe)))
    if cfg.steps is not None:
        budgets.append(cfg.steps)
    total = min(budgets) if budgets else None
    warmup = max(cfg.warmup_steps, int(round(cfg.warmup_epochs * spe)))
    opt = _make_optimizer(model, cfg)
    base_lrs = [g["lr"] for g in opt.param_groups]
    res = TrainResult(status="ok", task=info.task, steps_per_epoch=spe, seed=cfg.seed, config=cfg.to_dict(),
                      num_params=sum(p.numel() for p in model.parameters()))
    eval_time = 0.0
    train_clock = time.perf_counter()
    step, epoch, stop = 0, 0, ""

    def run_eval(ep: int) -> None:
        nonlocal eval_time
        if val is None or len(val) == 0:
            return
        t0 = time.perf_counter()
        m = evaluate(model, val, batch_size=cfg.eval_batch_size, channels_last=cfg.channels_last,
                     device=cfg.device)
        eval_time += time.perf_counter() - t0
        res.val_history.append({"epoch": ep, "step": step, **m})

    while not stop:
        t_epoch = time.perf_counter()
        loader.set_epoch(epoch)
        loss_sum, n_batches, correct, counted, seen = 0.0, 0, 0, 0, 0
        for xb, yb in loader:
            seen += 1
            elapsed = time.perf_counter() - train_clock - eval_time
            f = _lr_factor(cfg, step, total, warmup, elapsed)
            for g, base in zip(opt.param_groups, base_lrs, strict=True):
                g["lr"] = base * f
            if info.task != "classification" and not bool((yb != info.ignore_index).any()):
                continue  # no target in this batch: cross-entropy would be 0/0
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            logits = _shape_logits(_logits(model(xb)), yb, info)
            loss = _loss(logits.float(), yb, info, cfg.label_smoothing)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = _shape_logits(_logits(teacher(xb)), yb, info).float()
                loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * _kd_loss(logits.float(), t_logits, yb, info,
                                                                           cfg.kd_temperature)
            lv = float(loss.detach())
            if not math.isfinite(lv):
                res.status, res.stop_reason = "failed", "failed"
                res.reason = f"non-finite training loss ({lv}) at step {step} (epoch {epoch})"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                gn = float(nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
                if not math.isfinite(gn):
                    res.status, res.stop_reason = "failed", "failed"
                    res.reason = f"non-finite gradient norm at step {step} (epoch {epoch})"
                    break
            opt.step()
            res.step_losses.append(lv)
            res.step_epochs.append(epoch)
            c, k = _correct(logits.detach(), yb, info)
            loss_sum, n_batches, correct, counted = loss_sum + lv, n_batches + 1, correct + c, counted + k
            step += 1
            if total is not None and step >= total:
                stop = "steps" if cfg.steps is not None and step >= cfg.steps else "epochs"
            elif cfg.seconds is not None and time.perf_counter() - train_clock - eval_time >= cfg.seconds:
                stop = "seconds"
            if stop:
                break
        if seen and not n_batches and res.status == "ok":
            res.status = "failed"
            res.reason = f"no training batch of epoch {epoch} has a target (all labels are ignore_index)"
        if res.status == "failed":
            stop = res.stop_reason = "failed"
        if n_batches:
            res.epoch_train_loss.append(loss_sum / n_batches)
            res.epoch_train_acc.append(correct / max(counted, 1))
            res.epoch_times.append(time.perf_counter() - t_epoch)
        if stop == "failed":
            break
        complete = seen == spe
        if complete and cfg.eval_every > 0 and (epoch + 1) % cfg.eval_every == 0:
            run_eval(epoch)
        if not stop and on_epoch_end is not None:
            res.steps, res.epochs = step, step / spe
            if on_epoch_end(epoch, res):
                stop = "callback"
        epoch += 1
    res.steps, res.epochs = step, step / spe
    res.stop_reason = stop
    if res.status == "ok":
        if not res.val_history or res.val_history[-1]["step"] != step:
            run_eval(epoch - 1)
        if res.val_history:
            res.val = {k: v for k, v in res.val_history[-1].items() if k not in ("epoch", "step")}
        if test is not None and len(test):
            t0 = time.perf_counter()
            res.test = evaluate(model, test, batch_size=cfg.eval_batch_size, channels_last=cfg.channels_last,
                                device=cfg.device)
            eval_time += time.perf_counter() - t0
    res.eval_time = eval_time
    res.wall_time = time.perf_counter() - t_start
    res.train_time = res.wall_time - eval_time
    return res


# ----------------------------------------------------------------------------------------------------------
# Weight inheritance
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def inherit_weights(
    child: nn.Module, parent_state: Mapping[str, torch.Tensor] | nn.Module
) -> tuple[list[str], list[str]]:
    """Copy every parent tensor whose name and shape match into ``child`` (parameters and buffers).

    Returns ``(copied, skipped)``: names of the child's state entries that were copied, and those left at
    their current values (absent in the parent or with another shape). Dtypes are cast to the child's.
    """
    state = parent_state.state_dict() if isinstance(parent_state, nn.Module) else parent_state
    copied, skipped = [], []
    for name, tensor in child.state_dict(keep_vars=True).items():
        src = state.get(name)
        if src is not None and tuple(src.shape) == tuple(tensor.shape):
            tensor.data.copy_(src.detach().to(device=tensor.device, dtype=tensor.dtype))
            copied.append(name)
        else:
            skipped.append(name)
    return copied, skipped
