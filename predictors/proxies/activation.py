"""Activation / Jacobian proxies: nwot (NASWOT), jacob_cov, zen (Zen-score).

* nwot (Mellor et al. 2021, v2, NASLib version): for every ReLU-family module, the binary code
  ``c = [pre-activation > 0]`` of each sample; ``K = Σ_relu (c cᵀ + (1−c)(1−c)ᵀ)`` (number of agreeing units
  between two samples); score ``log|det K|`` (``slogdet``). Train-mode copy, one minibatch. Extension (not
  in the paper, which only has ReLU networks): a model with *no* ReLU-family module takes its codes from its
  smooth rectifiers instead (GELU, SiLU, Mish, Hardswish, ELU/CELU/SELU: :data:`SMOOTH_RECTIFIERS`), with the
  same ``c = [pre-activation > 0]`` -- the side of the rectifier's kink each unit is on -- so transformers and
  EfficientNet-style models get a score instead of an error.
* jacob_cov (Mellor et al. v1, as in zero-cost-nas): Jacobian rows ``J_n = ∂(Σ_out f(x_n))/∂x_n``,
  correlation matrix ``Σ_J = corrcoef(J)``, eigenvalues λ, score ``−Σ (log(λ+k) + 1/(λ+k))`` with k = 1e-5.
  ``eigvalsh`` is used instead of ``eig`` (the matrix is symmetric; it only removes spurious imaginary parts).
* zen (Lin et al. 2021, NASLib version): re-initialise Conv/Linear weights with N(0,1) (bias 0) and norm
  layers with weight 1 / bias 0, draw Gaussian inputs x and ε of the batch's shape, features f before the
  global average pool, ``Δ = mean_n Σ |f(x) − f(x + 0.01·ε)|``, score ``log Δ + Σ_BN log sqrt(mean running_var)``
  (BN running statistics as updated by the two train-mode forwards). One repeat (NASLib; Zen-NAS uses 32).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .core import LossFn, ProxyResult, logits_of, register


def _is_relu(m: nn.Module) -> bool:
    # the reference matches 'ReLU' in the class name: ReLU, ReLU6, LeakyReLU ...
    return "ReLU" in type(m).__name__


#: torch module classes (and the IR proxy view's wrapper) whose input sign NASWOT reads when there is no ReLU
SMOOTH_RECTIFIERS = frozenset({"GELU", "SiLU", "Mish", "Hardswish", "ELU", "CELU", "SELU", "IRSmoothRectifier"})


def _is_smooth_rectifier(m: nn.Module) -> bool:
    return any(c.__name__ in SMOOTH_RECTIFIERS for c in type(m).__mro__)


@register("nwot", needs_targets=False)
def nwot(
    net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None, loss_fn: LossFn, **_: Any
) -> ProxyResult:
    """NASWOT ``log|K_H|`` of the binary ReLU codes of one minibatch (smooth-rectifier codes without ReLUs).

    ``per_layer`` (non-additive diagnostics) holds each ReLU module's own ``log|K_l|`` keyed by module name.
    Only activation *modules* are seen (a functional ``F.relu`` is invisible to hooks).
    """
    hooks = NwotHooks(net, inputs.shape[0])
    with torch.no_grad():
        net(inputs)
    hooks.remove()
    return hooks.result()


class NwotHooks:
    """Forward hooks on the ReLU-family modules that accumulate NASWOT's kernel ``K`` over one forward.

    Also used by :func:`.shared.compute_proxies`, which reads the codes off the shared train-mode forward.
    """

    def __init__(self, net: nn.Module, n: int) -> None:
        self.total_k = np.zeros((n, n), dtype=np.float64)
        self.per_k: dict[str, np.ndarray] = {}
        self.seconds = 0.0  # time spent inside the hooks (for the benchmark's per-proxy time attribution)
        mods = [(mn, m) for mn, m in net.named_modules() if _is_relu(m)]
        if not mods:  # the documented extension: GELU/SiLU/... networks
            mods = [(mn, m) for mn, m in net.named_modules() if _is_smooth_rectifier(m)]
        self.handles = [m.register_forward_hook(self._hook_for(mn)) for mn, m in mods]

    def _hook_for(self, name: str):
        def hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], _out: Any) -> None:
            t0 = time.perf_counter()
            a = inp[0].detach()
            if a.dim() == 4 and a.is_contiguous(memory_format=torch.channels_last):
                a = a.permute(0, 2, 3, 1)  # a free view; the feature order does not change c cᵀ
            n = self.total_k.shape[0]
            if a.shape[0] != n and a.numel() % n == 0:
                a = a.reshape(n, -1)  # the batch folded into the leading dim (MobileViT's unfolding): per sample
            c = (a.reshape(a.shape[0], -1) > 0).float()
            # c cᵀ + (1−c)(1−c)ᵀ = D − r_i − r_j + 2 c cᵀ (one matmul; integer-exact in float32 below 2^24)
            r = c.sum(1, keepdim=True)
            cc = (c @ c.t()).double()
            k = (c.shape[1] - r - r.t()).double().add_(cc, alpha=2.0).cpu().numpy()
            self.per_k[name] = self.per_k.get(name, 0.0) + k
            self.total_k[...] += k
            self.seconds += time.perf_counter() - t0

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def result(self) -> ProxyResult:
        if not self.per_k:
            raise ValueError("nwot: NASWOT reads which side of a rectifier's kink each unit is on, and this model "
                             "has no rectifier: no ReLU-family activation and no GELU, SiLU, Mish, Hardswish or "
                             "ELU-family one (as a module, an IR op, or the x*Sigmoid(x) / erf or tanh GELU formulas "
                             "exporters write), so NASWOT is undefined for it")
        per = {k: float(np.linalg.slogdet(v)[1]) for k, v in self.per_k.items()}
        return ProxyResult(float(np.linalg.slogdet(self.total_k)[1]), per, additive=False)


def jacob_cov_score(jacobian: np.ndarray, k: float = 1e-5) -> float:
    """``−Σ(log(λ+k) + 1/(λ+k))`` over the eigenvalues of the row correlation matrix of ``jacobian``."""
    corrs = np.corrcoef(jacobian)
    v = np.linalg.eigvalsh(corrs)
    return float(-np.sum(np.log(v + k) + 1.0 / (v + k)))


@register("jacob_cov", needs_targets=False)
def jacob_cov(
    net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None, loss_fn: LossFn, **_: Any
) -> ProxyResult:
    """Jacobian covariance score (NaN when a Jacobian row is constant, e.g. a disconnected network)."""
    x = inputs.detach().clone().requires_grad_(True)
    y = logits_of(net(x))
    y.backward(torch.ones_like(y))
    return jacob_cov_from_input_grad(x.grad)


def jacob_cov_from_input_grad(grad: torch.Tensor) -> ProxyResult:
    """jacob_cov from ``∂(Σ f)/∂x`` of the minibatch (rows = samples); NaN if the score is undefined."""
    jac = grad.detach().reshape(grad.shape[0], -1).double().cpu().numpy()
    with np.errstate(all="ignore"):
        try:
            score = jacob_cov_score(jac)
        except np.linalg.LinAlgError:
            score = math.nan
    return ProxyResult(score, {}, additive=False)


def _gaussian_init(net: nn.Module) -> None:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                # drawn in the logical (contiguous) order and copied, so a channels_last weight gets the same
                # values as a contiguous one (normal_ fills in memory order)
                m.weight.copy_(torch.empty(m.weight.shape, dtype=m.weight.dtype, device=m.weight.device).normal_())
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def pre_gap_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Features "before the global average pool" of a generic network, found with hooks (one forward).

    Rule: the input of the last global ``AdaptiveAvgPool*d`` module (output size 1) called, if any; otherwise the
    last output with more than 2 dims produced by a leaf module (e.g. NB201, whose pooling is functional: the
    output of ``lastact``'s ReLU); otherwise the model output.
    """
    pooled: list[torch.Tensor] = []
    spatial: list[torch.Tensor] = []

    def is_global(m: nn.Module) -> bool:
        size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,)
        return all(s == 1 for s in size)

    def pre(_m: nn.Module, inp: tuple[Any, ...]) -> None:
        pooled.append(inp[0])

    def post(_m: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.dim() > 2:
            spatial[:] = [out]  # only the last one is used: do not keep every activation alive

    handles = []
    for m in net.modules():
        if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)) and is_global(m):
            handles.append(m.register_forward_pre_hook(pre))
        elif not any(True for _ in m.children()):
            handles.append(m.register_forward_hook(post))
    try:
        out = net(x)
    finally:
        for h in handles:
            h.remove()
    if pooled:
        return pooled[-1]
    if spatial:
        return spatial[-1]
    return logits_of(out)


@register("zen", needs_targets=False)
def zen(
    net: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | None,
    loss_fn: LossFn,
    mixup_gamma: float = 1e-2,
    features_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    **_: Any,
) -> ProxyResult:
    """Zen-score. Features = ``features_fn(net, x)`` if given, else :func:`pre_gap_features`.

    ``per_layer`` (additive): ``"<bn module>"`` → ``log sqrt(mean running_var)`` for each BatchNorm, and
    ``"__expressivity__"`` → ``log Δ``.
    """
    _gaussian_init(net)
    x = torch.randn(inputs.shape, dtype=inputs.dtype, device=inputs.device)
    eps = torch.randn(inputs.shape, dtype=inputs.dtype, device=inputs.device)
    mix = x + mixup_gamma * eps

    def features(t: torch.Tensor) -> torch.Tensor:
        return features_fn(net, t) if features_fn is not None else pre_gap_features(net, t)

    with torch.no_grad():
        f1 = features(x)
        f2 = features(mix)
        delta = (f1 - f2).abs().reshape(f1.shape[0], -1).sum(1).mean().double()
        per = {"__expressivity__": float(torch.log(delta))}
        for mn, m in net.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                per[mn] = float(torch.log(torch.sqrt(m.running_var.double().mean())))
    return ProxyResult(math.fsum(per.values()), per)
