"""Registry, result type and shared helpers for graphopt's zero-cost proxies.

Every proxy is computed on a *deep copy* of the caller's model, inside a forked RNG seeded with ``seed``,
so the caller's weights, ``.training`` flags, gradients and global RNG state are never touched and two calls
with the same seed give the same number.

Conventions follow Abdelfattah et al. 2021 ("Zero-Cost Proxies for Lightweight NAS", official code
``SamsungLabs/zero-cost-nas``) and NAS-Bench-Suite-Zero (NASLib ``predictors/pruners``) for NB201:
the copy is put in **train mode** (BatchNorm uses batch statistics, as in the reference code, where the fresh
network is in train mode), "prunable" layers are ``Conv*d`` and ``nn.Linear`` (the reference uses
``Conv2d``/``Linear``; ``Conv1d``/``Conv3d`` are added so sequence models are covered — for NB201 the sets
coincide), and per-layer values are keyed by the *parameter name* of the layer weight
(``"cells.3.op.1.weight"``) so they can later be attached to IR nodes. Non-finite scores are returned as-is
(NaN/inf); NASLib maps them to ``-1e8`` when ranking — callers that rank should do the same (see :func:`finite_or`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ProxyResult",
    "ProxySpec",
    "compute",
    "names",
    "register",
    "spec",
    "finite_or",
    "PRUNABLE_TYPES",
    "weight_layers",
    "logits_of",
]

#: Layers whose weights carry per-parameter proxy values (the reference code uses Conv2d and Linear).
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ProxyResult:
    """Result of one proxy on one network.

    ``per_layer`` maps a parameter name (e.g. ``"stem.0.weight"``) — or, for contributions that belong to no
    parameter, a module name — to that layer's contribution. When ``additive`` is true,
    ``sum(per_layer.values()) == score`` (up to float rounding): the score decomposes over layers, which is
    what IR annotation needs. Non-additive proxies (nwot, jacob_cov) set ``additive=False`` and report
    per-layer *diagnostics* (or nothing) instead.
    """

    score: float
    per_layer: dict[str, float] = field(default_factory=dict)
    additive: bool = True


@dataclass(frozen=True)
class ProxySpec:
    """Registry entry: the implementation and what it needs."""

    name: str
    fn: Callable[..., ProxyResult]
    needs_targets: bool
    higher_is_better: bool
    doc: str


_REGISTRY: dict[str, ProxySpec] = {}


def register(
    name: str, *, needs_targets: bool = True, higher_is_better: bool = True
) -> Callable[[Callable[..., ProxyResult]], Callable[..., ProxyResult]]:
    """Register ``fn(net, inputs, targets, loss_fn, **kw) -> ProxyResult`` under ``name``.

    ``net`` is already a private train-mode deep copy; implementations may mutate it freely.
    """

    def deco(fn: Callable[..., ProxyResult]) -> Callable[..., ProxyResult]:
        if name in _REGISTRY:
            raise KeyError(f"proxy {name!r} is already registered")
        _REGISTRY[name] = ProxySpec(name, fn, needs_targets, higher_is_better, (fn.__doc__ or "").strip())
        return fn

    return deco


def names() -> list[str]:
    """Names of all registered proxies, in registration order."""
    return list(_REGISTRY)


def spec(name: str) -> ProxySpec:
    """Registry entry of ``name`` (raises a KeyError listing the valid names)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown proxy {name!r}; available: {', '.join(names())}") from None


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
        return batch[0], batch[1]
    raise TypeError(
        f"batch must be an input tensor or a pair (inputs, targets) of tensors; got {type(batch).__name__}"
    )


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def compute(
    name: str,
    model: nn.Module,
    batch: Any,
    loss_fn: LossFn = F.cross_entropy,
    seed: int = 0,
    **kwargs: Any,
) -> ProxyResult:
    """Compute proxy ``name`` of ``model`` on one minibatch.

    ``batch`` is ``(inputs, targets)`` (or just ``inputs`` for the label-free proxies: synflow, nwot,
    jacob_cov, zen, params, flops). ``loss_fn(logits, targets)`` is used by the gradient proxies (default
    cross-entropy). Extra keyword arguments go to the proxy (documented on each implementation).
    The caller's model is deep-copied; its weights, mode, gradients and the global RNG are left untouched.
    """
    entry = spec(name)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs, targets = _split_batch(batch)
    if entry.needs_targets and targets is None:
        raise ValueError(f"proxy {name!r} needs targets: pass batch=(inputs, targets)")
    device = _model_device(model)
    inputs = inputs.to(device)
    targets = targets.to(device) if targets is not None else None
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        net = copy.deepcopy(model)
        net.train()
        net.zero_grad(set_to_none=True)
        for p in net.parameters():
            p.requires_grad_(True)
        result = entry.fn(net, inputs, targets, loss_fn, **kwargs)
    return result


def finite_or(value: float, fallback: float = -1e8) -> float:
    """NASLib's convention for ranking: a NaN/inf proxy value becomes ``fallback`` (ranked last)."""
    return value if math.isfinite(value) else fallback


def weight_layers(
    net: nn.Module, types: tuple[type[nn.Module], ...] = PRUNABLE_TYPES
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(weight_parameter_name, module)`` for every prunable layer, each weight tensor once."""
    seen: set[int] = set()
    for mname, m in net.named_modules():
        if isinstance(m, types) and isinstance(getattr(m, "weight", None), torch.Tensor):
            if id(m.weight) in seen:
                continue
            seen.add(id(m.weight))
            yield (f"{mname}.weight" if mname else "weight"), m


def logits_of(out: Any) -> torch.Tensor:
    """The prediction tensor of a model output: a tensor, ``out.logits``, or the last element of a tuple.

    (NB201's reference network returns ``(features, logits)``, hence "last element".)
    """
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits") and isinstance(out.logits, torch.Tensor):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[-1], torch.Tensor):
        return out[-1]
    raise TypeError(f"cannot find the logits in a model output of type {type(out).__name__}")


def total(per_layer: dict[str, float]) -> float:
    """Sum of per-layer values in float64 (math.fsum: order-independent)."""
    return math.fsum(per_layer.values())
