"""Gradient-based zero-cost proxies: grad_norm, snip, grasp, fisher, synflow.

Formulas (Abdelfattah et al. 2021, reference code ``SamsungLabs/zero-cost-nas`` and NASLib's copy used by
NAS-Bench-Suite-Zero), for every prunable layer weight θ (Conv*d / Linear):

* grad_norm: ``‖∂L/∂θ‖₂`` per layer, summed.
* snip:      ``Σ |θ ⊙ ∂L/∂θ|`` (the reference differentiates a mask of ones, which is the same number).
* grasp:     ``Σ −θ ⊙ (H g)`` with ``g = ∂L/∂θ`` from a first pass and ``H g = ∂(gᵀ·∂L/∂θ)/∂θ`` from a
  second, double-backward pass (the reference's sign: "accuracy seems to be negatively correlated, so we add
  −ve sign"), T = 1. Double backward is grasp's cost (~half of all proxies' time on NB201). Two cheaper ways
  to get ``H g`` were measured on NB201 networks (batch 64, 1 thread) and rejected: central finite
  differences of the gradient along g are ~2x faster but are not the same quantity on ReLU networks (the
  step crosses ReLU kinks whose second derivative autograd treats as zero: the grasp value even changed sign,
  for steps of 1e-2 to 1e-4 of ‖θ‖); forward-over-reverse (``torch.func.jvp`` of ``grad``) gives the exact
  value but took 2.1x longer than double backward.
* fisher:    per output channel k of a layer, ``½·mean_n(Σ_spatial a·∂L/∂a)²`` on the layer's output
  activation a; the reference then *broadcasts* the channel value to all ``θ[k]`` weights of that channel
  before summing, i.e. the layer value is ``Σ_k fisher_k · numel(θ[k])``. Reproduced exactly.
* synflow:   float64 copy, every parameter/buffer replaced by its absolute value, BatchNorm bypassed (the
  reference's ``bn=False`` copy), all-ones input of batch size 1, ``R = Σ output``, value ``Σ |θ ⊙ ∂R/∂θ|``.
  The raw sum is returned (NASLib's NB201 wrapper reports ``log`` of it; ranks are identical).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from .core import PRUNABLE_TYPES, LossFn, ProxyResult, logits_of, register, total, weight_layers

# per-layer formulas, shared by the single-proxy functions below and by :func:`.shared.compute_proxies`
# (``layers`` = ``[(weight name, weight, dL/dweight or None), ...]``)
LayerGrads = list[tuple[str, torch.Tensor, "torch.Tensor | None"]]


def grad_norm_from_grads(layers: LayerGrads) -> ProxyResult:
    per = {n: float(g.double().norm()) if g is not None else 0.0 for n, _w, g in layers}
    return ProxyResult(total(per), per)


def snip_from_grads(layers: LayerGrads) -> ProxyResult:
    per = {n: float((w.detach() * g).abs().double().sum()) if g is not None else 0.0 for n, w, g in layers}
    return ProxyResult(total(per), per)


def grasp_z(grad_w: Sequence[torch.Tensor | None], grad_f: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    """``z = Σ stopgrad(g) · g`` whose gradient w.r.t. the weights is the Hessian-gradient product ``H g``."""
    z = None
    for gw, gf in zip(grad_w, grad_f, strict=True):
        if gw is not None and gf is not None:
            term = (gw.detach() * gf).sum()
            z = term if z is None else z + term
    return z


def grasp_from_hg(layers: LayerGrads) -> ProxyResult:
    """GraSP per layer from ``H g`` (third tuple element): ``Σ −θ ⊙ H g``."""
    per = {n: float((-w.detach() * hg).double().sum()) if hg is not None else 0.0 for n, w, hg in layers}
    return ProxyResult(total(per), per)


def _weight_grads(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn) -> None:
    net.zero_grad(set_to_none=True)
    loss = loss_fn(logits_of(net(inputs)), targets)
    loss.backward()


@register("grad_norm")
def grad_norm(
    net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn, **_: Any
) -> ProxyResult:
    """Sum over prunable layers of the L2 norm of the loss gradient w.r.t. the layer weight."""
    _weight_grads(net, inputs, targets, loss_fn)
    return grad_norm_from_grads([(n, m.weight, m.weight.grad) for n, m in weight_layers(net)])


@register("snip")
def snip(
    net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn, **_: Any
) -> ProxyResult:
    """SNIP connection sensitivity ``Σ|θ ⊙ ∂L/∂θ|`` per prunable layer."""
    _weight_grads(net, inputs, targets, loss_fn)
    return snip_from_grads([(n, m.weight, m.weight.grad) for n, m in weight_layers(net)])


@register("grasp")
def grasp(
    net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn, **_: Any
) -> ProxyResult:
    """GraSP ``Σ −θ ⊙ (H g)`` per prunable layer (Hessian-gradient product by double backward)."""
    layers = list(weight_layers(net))
    weights = [m.weight for _, m in layers]
    net.zero_grad(set_to_none=True)
    loss = loss_fn(logits_of(net(inputs)), targets)
    grad_w = torch.autograd.grad(loss, weights, allow_unused=True)
    loss = loss_fn(logits_of(net(inputs)), targets)
    grad_f = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
    z = grasp_z(grad_w, grad_f)
    if z is not None and z.requires_grad:
        z.backward()
    return grasp_from_hg([(n, m.weight, m.weight.grad) for n, m in layers])


@register("fisher")
def fisher(
    net: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
    site: str = "layer",
    **_: Any,
) -> ProxyResult:
    """Fisher potential (Theis et al. 2018 / Turner et al. 2020) of channel activations.

    ``site="layer"`` (default; the official zero-cost-nas / NAS-Bench-Suite-Zero code): activations are the
    outputs of the prunable Conv/Linear layers and each channel value is broadcast over that channel's weights
    (×``numel(θ[k])``); keys are weight names. ``site="relu"``: activations are the outputs of ReLU-family
    modules (the paper's wording), channel axis 1, no broadcast; keys are module names. Every call of a module
    is counted (the reference keeps only the last one: the same for single-use modules). For a Linear layer
    applied to (N, ..., C) activations the channel axis is the last one (the reference would treat axis 1 as
    channels; identical for the 2-D activations of NB201's classifier).
    """
    hooks = FisherHooks(net, site)
    net.zero_grad(set_to_none=True)
    loss_fn(logits_of(net(inputs)), targets).backward()
    hooks.remove()
    return hooks.result()


class FisherHooks:
    """Forward hooks that record fisher's channel values during the backward passes of the loss.

    ``enabled`` gates the accumulation: :func:`.shared.compute_proxies` runs other backward passes (jacob_cov,
    grasp) through the same graph and switches it off for them, so exactly one loss backward is counted.
    """

    def __init__(self, net: nn.Module, site: str = "layer") -> None:
        if site not in ("layer", "relu"):
            raise ValueError(f"fisher: site must be 'layer' or 'relu', got {site!r}")
        self.enabled = True
        self.seconds = 0.0  # time spent inside the hooks (for the benchmark's per-proxy time attribution)
        self.acc: dict[str, torch.Tensor] = {}
        self.bcast: dict[str, int] = {}
        self.handles = []
        if site == "layer":
            for n, m in weight_layers(net):
                self.handles.append(m.register_forward_hook(self._capture(n, isinstance(m, nn.Linear))))
                self.bcast[n] = math.prod(m.weight.shape[1:])
        else:
            for mn, m in net.named_modules():
                if "ReLU" in type(m).__name__:
                    self.handles.append(m.register_forward_hook(self._capture(mn)))
                    self.bcast[mn] = 1

    def _capture(self, key: str, channel_last: bool = False):
        acc = self.acc

        def accumulate(act: torch.Tensor, grad: torch.Tensor) -> None:
            if not self.enabled:
                return
            t0 = time.perf_counter()
            if channel_last and act.dim() > 2:  # Linear on (N, ..., C): channels are the last axis
                act, grad = act.movedim(-1, 1), grad.movedim(-1, 1)
            g_nk = (act * grad).sum(dim=tuple(range(2, act.dim()))) if act.dim() > 2 else act * grad
            del_k = g_nk.double().pow(2).mean(0).mul(0.5)
            acc[key] = acc[key] + del_k if key in acc else del_k
            self.seconds += time.perf_counter() - t0

        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.requires_grad:
                t0 = time.perf_counter()
                a = out.detach().clone()  # guard against later in-place ops on `out`
                out.register_hook(lambda g, a=a: accumulate(a, g.detach()))
                self.seconds += time.perf_counter() - t0

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def result(self) -> ProxyResult:
        per = {k: float(self.acc[k].abs().sum()) * self.bcast[k] if k in self.acc else 0.0 for k in self.bcast}
        return ProxyResult(total(per), per)


def _bypass_batchnorm(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.forward = lambda x: x  # instance attribute shadows the class method (net is a private copy)


@register("synflow", needs_targets=False)
def synflow(
    net: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | None,
    loss_fn: LossFn,
    types: tuple[type[nn.Module], ...] = PRUNABLE_TYPES,
    **_: Any,
) -> ProxyResult:
    """SynFlow ``Σ|θ ⊙ ∂R/∂θ|`` with ``R = Σ f_|θ|(1)`` in float64, BatchNorm bypassed.

    Data-independent by construction: only the shape of ``inputs`` is used. Run in eval mode (dropout off;
    with BN bypassed this equals the reference's train-mode copy for dropout-free nets such as NB201).
    """
    _bypass_batchnorm(net)
    net.double().eval()
    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            if t.is_floating_point():
                t.abs_()
    net.zero_grad(set_to_none=True)
    shape = [1, *inputs.shape[1:]]
    x = torch.ones(
        shape, dtype=torch.float64 if inputs.is_floating_point() else inputs.dtype, device=inputs.device
    )
    logits_of(net(x)).sum().backward()
    per = {
        n: float((m.weight.detach() * m.weight.grad).abs().sum()) if m.weight.grad is not None else 0.0
        for n, m in weight_layers(net, types)
    }
    return ProxyResult(total(per), per)
