"""Several proxies of one network from shared passes: :func:`compute_proxies`.

Calling :func:`.core.compute` once per proxy repeats work: grad_norm, snip and fisher each deep-copy the model and
run the same loss forward/backward; grasp runs that forward/backward again plus a second forward; jacob_cov and
nwot each run their own train-mode forward on the same minibatch. :func:`compute_proxies` runs the proxies of
:data:`SHARED` on *one* private train-mode copy with *one* forward (input made differentiable if jacob_cov is
asked for; NASWOT's ReLU hooks and fisher's activation hooks attached to it) and then:

1. the loss gradient w.r.t. the prunable weights only (``autograd.grad``, graph retained; fisher's hooks on)
   → grad_norm, snip, fisher, and grasp's ``g``;
2. jacob_cov's input Jacobian ``∂(Σ f)/∂x`` (``autograd.grad`` w.r.t. the input only; fisher's hooks off);
3. grasp's ``H g``: the gradient of ``Σ stopgrad(g)·g`` (fisher off), where ``g`` is step 1's gradient, taken
   with ``create_graph`` when grasp is asked for (one loss backward instead of GraSP's two; same values).

Every number equals the single-proxy one up to float rounding (the test suite checks it on a real network):
the train-mode forward of a fixed batch is deterministic and BatchNorm uses batch statistics, so one forward is
the same as the several the single-proxy functions run; what is skipped is only work whose result nothing reads
(gradients of BatchNorm parameters and, for grad_norm/snip/fisher, of the input). The per-layer formulas are the
same functions (:mod:`.gradient`, :mod:`.activation`).

Deep-copying a module is slow in Python (~0.1 s for an NB201 network, more than a forward of params/flops/synflow),
so params, flops, zen and synflow (:data:`REUSE_ORDER`) then run their unchanged registered functions on the *same*
copy, reset before each by loading the caller's ``state_dict`` (weights *and* buffers: the BatchNorm statistics
the shared forward and zen's forwards update) and putting it in the state :func:`.core.compute` gives its copy
(train mode, no gradients, every parameter trainable, RNG seeded); synflow, which converts the copy to float64
and bypasses its BatchNorm modules, comes last. A model with non-persistent buffers (not restorable from its
state) and any proxy given options or registered by the user go through :func:`.core.compute`.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import activation, gradient
from .core import LossFn, ProxyResult, _model_device, _split_batch, compute, logits_of, spec, weight_layers

__all__ = ["REUSE_ORDER", "SHARED", "compute_proxies"]

#: proxies computed from the shared forward / backward passes (with their default options)
SHARED: tuple[str, ...] = ("grad_norm", "snip", "fisher", "grasp", "jacob_cov", "nwot")
#: proxies run afterwards on the same copy, reset to the caller's state before each (synflow last: it changes
#: the copy's dtype and bypasses its BatchNorm modules)
REUSE_ORDER: tuple[str, ...] = ("params", "flops", "zen", "synflow")


def compute_proxies(
    model: nn.Module,
    batch: Any,
    names: list[str] | tuple[str, ...] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    seed: int = 0,
    options: dict[str, dict[str, Any]] | None = None,
    return_times: bool = False,
    channels_last: bool | None = None,
) -> dict[str, ProxyResult] | tuple[dict[str, ProxyResult], dict[str, float]]:
    """Compute the proxies ``names`` (default: all registered) of ``model`` on one minibatch.

    Same arguments and same results as ``{n: compute(n, model, batch, loss_fn, seed, **options.get(n, {}))}``,
    but the proxies of :data:`SHARED` without options share one model copy and one forward pass (see the module
    docstring), and params/flops/zen/synflow re-use that copy. A proxy with options (e.g. ``fisher`` with
    ``site="relu"``) or registered by the user is computed by :func:`.core.compute`. The caller's model, its
    gradients and the global RNG are left untouched.

    With ``return_times=True`` also returns wall seconds by stage: ``"shared_pass"`` (the model copy, forward and
    loss backward shared by grad_norm/snip/fisher/grasp/jacob_cov/nwot; ``"copy"`` instead when none of them is
    asked for), and per proxy the work only it needs (its hooks, extra backward passes and reductions; the reset
    and the whole registered function for params/flops/zen/synflow; the whole :func:`.core.compute` call for the
    others).

    ``channels_last`` (default: when the inputs are a 4-D float batch on the CPU) converts the private copy and
    the batch to the NHWC memory format: oneDNN's convolutions then skip a layout reorder per layer, which makes
    the NB201 forward/backward ~1.6x faster on one CPU thread (``benchmarks/estimators_nb201.py``). Values change
    only by float rounding (summation order inside the convolutions); ``False`` keeps the caller's layout.
    """
    from .core import names as all_names

    names = list(all_names() if names is None else names)
    options = options or {}
    for n in names:
        spec(n)  # unknown name -> KeyError listing the valid ones
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs, targets = _split_batch(batch)
    for n in names:
        if spec(n).needs_targets and targets is None:
            raise ValueError(f"proxy {n!r} needs targets: pass batch=(inputs, targets)")
    device = _model_device(model)
    inputs = inputs.to(device)
    targets = targets.to(device) if targets is not None else None
    shared = [n for n in names if n in SHARED and not options.get(n)]
    state = model.state_dict()
    # the copy can be reset by loading the caller's state only if the state holds every buffer
    restorable = {n for n, _ in model.named_buffers()} <= set(state)
    reuse = [n for n in REUSE_ORDER if n in names and not options.get(n)] if restorable else []
    results: dict[str, ProxyResult] = {}
    times: dict[str, float] = {}
    if shared or reuse:
        nhwc = _use_channels_last(channels_last, inputs)
        try:
            results = _on_one_copy(model, state, inputs, targets, shared, reuse, loss_fn, seed, nhwc, times)
        except RuntimeError:
            if channels_last is not None or not nhwc:
                raise
            # the automatic NHWC choice met a model that cannot take it (e.g. ``x.view(n, -1)`` on a
            # channels_last activation): recompute in the caller's layout
            times.clear()
            results = _on_one_copy(model, state, inputs, targets, shared, reuse, loss_fn, seed, False, times)
    for n in names:
        if n not in results:
            t0 = time.perf_counter()
            results[n] = compute(n, model, (inputs, targets), loss_fn=loss_fn, seed=seed, **options.get(n, {}))
            times[n] = time.perf_counter() - t0
    results = {n: results[n] for n in names}
    return (results, times) if return_times else results


def _on_one_copy(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor | None,
    shared: list[str],
    reuse: list[str],
    loss_fn: LossFn,
    seed: int,
    nhwc: bool,
    times: dict[str, float],
) -> dict[str, ProxyResult]:
    """The proxies ``shared`` (one forward/backward) then ``reuse`` on one private copy of ``model``."""
    results: dict[str, ProxyResult] = {}
    t0 = time.perf_counter()
    net, x = copy.deepcopy(model), inputs  # the copy and its batch (in NHWC when chosen)
    # grasp's double backward is ~1.5x *slower* in NHWC (BatchNorm's double-backward reductions and
    # threshold_backward on mixed layouts), so a shared pass that includes grasp stays NCHW
    if nhwc and "grasp" not in shared:
        net, x = _to_channels_last(net, x)
    times["shared_pass" if shared else "copy"] = time.perf_counter() - t0
    if shared:
        results.update(_shared_pass(net, x, targets, shared, loss_fn, seed, times))
    if nhwc and reuse and "grasp" in shared:
        t0 = time.perf_counter()
        net, x = _to_channels_last(net, x)
        times[reuse[0]] = time.perf_counter() - t0
    for n in reuse:
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(seed)  # as core.compute, then the copy is put in the state compute() gives it
            if n != reuse[0] or shared:
                net.load_state_dict(state)
            net.train()
            net.zero_grad(set_to_none=True)
            for p in net.parameters():
                p.requires_grad_(True)
            results[n] = spec(n).fn(net, x, targets, loss_fn)
        times[n] = times.get(n, 0.0) + time.perf_counter() - t0
    return results


def _to_channels_last(net: nn.Module, inputs: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    return net.to(memory_format=torch.channels_last), inputs.contiguous(memory_format=torch.channels_last)


def _use_channels_last(flag: bool | None, inputs: torch.Tensor) -> bool:
    if flag is not None:
        return flag and inputs.dim() == 4
    return inputs.dim() == 4 and inputs.is_floating_point() and inputs.device.type == "cpu"


def _shared_pass(
    net: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | None,
    names: list[str],
    loss_fn: LossFn,
    seed: int,
    times: dict[str, float],
) -> dict[str, ProxyResult]:
    needs_loss = [n for n in names if spec(n).needs_targets]
    out: dict[str, ProxyResult] = {}
    t_start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)  # as core.compute (nothing below draws random numbers for these proxies)
        net.train()
        net.zero_grad(set_to_none=True)
        for p in net.parameters():
            p.requires_grad_(True)
        layers = list(weight_layers(net))
        weights = [m.weight for _, m in layers]
        fisher = gradient.FisherHooks(net) if "fisher" in names else None
        nwot = activation.NwotHooks(net, inputs.shape[0]) if "nwot" in names else None
        x = inputs.detach().clone().requires_grad_(True) if "jacob_cov" in names else inputs
        logits = logits_of(net(x))
        if fisher is not None:
            fisher.remove()
        if nwot is not None:
            nwot.remove()
        loss = loss_fn(logits, targets) if needs_loss else None
        grads: tuple[torch.Tensor | None, ...] = ()
        grad_f: tuple[torch.Tensor | None, ...] = ()
        if needs_loss:
            # grasp needs the loss gradient as a differentiable function of the weights: taking the one shared
            # backward with create_graph gives the same values and saves grasp a second loss backward
            grad_f = torch.autograd.grad(loss, weights, retain_graph=True, create_graph="grasp" in names,
                                         allow_unused=True)
            grads = tuple(None if g is None else g.detach() for g in grad_f)
        if fisher is not None:
            fisher.enabled = False
        hook_s = (fisher.seconds if fisher else 0.0) + (nwot.seconds if nwot else 0.0)
        times["shared_pass"] = times.get("shared_pass", 0.0) + time.perf_counter() - t_start - hook_s
        layer_grads = [(n, m.weight, g) for (n, m), g in zip(layers, grads, strict=True)]
        for name, fn in (("grad_norm", gradient.grad_norm_from_grads), ("snip", gradient.snip_from_grads)):
            if name in names:
                t0 = time.perf_counter()
                out[name] = fn(layer_grads)
                times[name] = time.perf_counter() - t0
        if fisher is not None:
            t0 = time.perf_counter()
            out["fisher"] = fisher.result()
            times["fisher"] = time.perf_counter() - t0 + fisher.seconds
        if nwot is not None:
            t0 = time.perf_counter()
            out["nwot"] = nwot.result()
            times["nwot"] = time.perf_counter() - t0 + nwot.seconds
        if "jacob_cov" in names:
            t0 = time.perf_counter()
            (jx,) = torch.autograd.grad(logits, x, torch.ones_like(logits), retain_graph="grasp" in names)
            out["jacob_cov"] = activation.jacob_cov_from_input_grad(jx)
            times["jacob_cov"] = time.perf_counter() - t0
        if "grasp" in names:
            t0 = time.perf_counter()
            z = gradient.grasp_z(grads, grad_f)
            hg: tuple[torch.Tensor | None, ...] = (None,) * len(weights)
            if z is not None and z.requires_grad:
                hg = torch.autograd.grad(z, weights, allow_unused=True)
            out["grasp"] = gradient.grasp_from_hg([(n, m.weight, h) for (n, m), h in zip(layers, hg, strict=True)])
            times["grasp"] = time.perf_counter() - t0
    return out
