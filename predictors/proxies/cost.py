"""Cost proxies: params and FLOPs.

``flops`` counts ``2 × MACs`` of Conv*d and Linear layers (biases, norms, activations and pooling are not
counted) with forward hooks on a batch-1 forward. It is *pluggable* in two ways so that IR-derived costs can
replace it later: :func:`register_flops_rule` adds/overrides the per-module rule for a module type, and
``compute("flops", ..., counter=fn)`` replaces the whole counter with ``fn(model, x) -> {name: flops}``.
NAS-Bench-Suite-Zero reports MFLOPs (and its NB201 numbers are MACs, as NB201's API counts them) and
millions of parameters; here raw counts are returned — rank correlations are unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from .core import LossFn, ProxyResult, register, total

#: per-module FLOP rule: (module, input tensor, output tensor) -> FLOPs for that call (whole batch)
FlopsRule = Callable[[nn.Module, torch.Tensor, torch.Tensor], float]


def _conv_flops(m: nn.Module, _x: torch.Tensor, y: torch.Tensor) -> float:
    k = math.prod(m.weight.shape[1:])  # (Cin / groups) * prod(kernel)
    return 2.0 * y.numel() * k


def _linear_flops(m: nn.Module, _x: torch.Tensor, y: torch.Tensor) -> float:
    return 2.0 * y.numel() * m.in_features


_RULES: dict[type[nn.Module], FlopsRule] = {
    nn.Conv1d: _conv_flops,
    nn.Conv2d: _conv_flops,
    nn.Conv3d: _conv_flops,
    nn.Linear: _linear_flops,
}


def register_flops_rule(module_type: type[nn.Module], rule: FlopsRule) -> None:
    """Add or replace the FLOP rule used for modules of exactly ``module_type`` (subclasses included)."""
    _RULES[module_type] = rule


def _rule_for(m: nn.Module) -> FlopsRule | None:
    for t in type(m).__mro__:
        if t in _RULES:
            return _RULES[t]
    return None


def count_flops(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """FLOPs per module of one forward of ``x`` (whole batch), keyed ``"<module>.weight"`` when the module
    has a weight, else by module name. Modules called several times are summed."""
    per: dict[str, float] = {}
    handles = []
    for mn, m in model.named_modules():
        rule = _rule_for(m)
        if rule is None:
            continue
        key = f"{mn}.weight" if isinstance(getattr(m, "weight", None), torch.Tensor) else mn

        def hook(
            mod: nn.Module, inp: tuple[Any, ...], out: Any, key: str = key, rule: FlopsRule = rule
        ) -> None:
            per[key] = per.get(key, 0.0) + float(rule(mod, inp[0], out))

        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return per


@register("flops", needs_targets=False, higher_is_better=True)
def flops(
    net: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | None,
    loss_fn: LossFn,
    counter: Callable[[nn.Module, torch.Tensor], dict[str, float]] | None = None,
    **_: Any,
) -> ProxyResult:
    """FLOPs (2×MACs of Conv/Linear) of one sample (``inputs[:1]``); ``counter`` overrides the counter.

    As a NAS proxy, larger nets rank higher (the NAS-Bench-Suite-Zero convention), hence higher-is-better.
    """
    net.eval()
    per = (counter or count_flops)(net, inputs[:1])
    return ProxyResult(total(per), dict(per))


@register("params", needs_targets=False, higher_is_better=True)
def params(
    net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None, loss_fn: LossFn, **_: Any
) -> ProxyResult:
    """Number of trainable parameters, per parameter name (shared tensors counted once)."""
    per: dict[str, float] = {}
    seen: set[int] = set()
    for n, p in net.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            per[n] = float(p.numel())
    return ProxyResult(total(per), per)
