"""S3: searching the search space of vision transformers (Chen et al., NeurIPS 2021), CPU-sized.

* Supernet with **weight entanglement** (:class:`ElasticViT`): every subnet uses the leading slices of the
  largest weights, so a subnet's gradient is zero outside its slice; one uniformly sampled subnet per step.
* **E-T error** (:func:`et_error`): ``Q = (Q_e + Q_t) / 2`` with ``Q_e`` the mean error of the sampled
  architectures and ``Q_t`` the mean error of their ``top_k`` best (the paper uses top-50 of the sampled set).
* **Space evolution** (:func:`evolve_space`): the space factorizes into one value list per dimension
  (``depth``, ``embed``, ``mlp_ratio``, ``heads``). For each value ``v`` of dimension ``i``, ``Q(v)`` is the
  E-T error of ``n_samples`` architectures drawn uniformly in the space with dimension ``i`` then pinned to
  ``v`` (per-block dims: every block uses ``v``); the same draws serve every ``v`` (paired sampling, so the
  slope reflects ``v`` and not the noise of the other dimensions); ``Q ~ w_i v + b_i`` is fit by least
  squares. Documented choice for the update (the paper's exact equation could not be checked offline):
  when ``|w_i| > tau_i`` every value moves by ``-gamma_i * sign(w_i)`` (towards lower error), clipped to
  the supernet's bounds (so values may merge: the dimension shrinks); otherwise it stays. The supernet is
  then trained further on the new space.
* **Final search** (:func:`evolutionary_search`): top-k parents, uniform crossover, mutation, under a
  parameter limit; fitness = supernet validation error with inherited weights.
* The ViT-tiny plain (single-stage) layout is used, so dimensions are per network rather than per stage;
  window size does not apply (global attention). The chosen subnet is emitted through the IR:
  :func:`vit_graph` (largest network) -> ``expand-s3`` -> :func:`graphopt.supernet.materialize`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from graphopt.ir.graph import Graph
from graphopt.ir.types import DType, TensorType

DIMS = ("depth", "embed", "mlp_ratio", "heads")
PER_BLOCK = ("mlp_ratio", "heads")


# ---------------------------------------------------------------------------------------------- supernet
class ElasticBlock(nn.Module):
    def __init__(self, E: int, H: int, M: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(E, eps=1e-6)
        self.attn = nn.ModuleDict({k: nn.Linear(E, H) for k in ("q", "k", "v")})
        self.attn["proj"] = nn.Linear(H, E)
        self.norm2 = nn.LayerNorm(E, eps=1e-6)
        self.mlp = nn.ModuleDict({"fc1": nn.Linear(E, M), "fc2": nn.Linear(M, E)})

    def forward(self, x: torch.Tensor, e: int, heads: int, hidden: int, hd: int) -> torch.Tensor:
        b, n, _ = x.shape
        hh = heads * hd
        h = F.layer_norm(x, (e,), self.norm1.weight[:e], self.norm1.bias[:e], 1e-6)
        qkv = [F.linear(h, self.attn[k].weight[:hh, :e], self.attn[k].bias[:hh]).reshape(b, n, heads, hd)
               .transpose(1, 2) for k in ("q", "k", "v")]
        att = torch.softmax(qkv[0] @ qkv[1].transpose(-2, -1) * hd**-0.5, -1)
        o = (att @ qkv[2]).transpose(1, 2).reshape(b, n, hh)
        x = x + F.linear(o, self.attn["proj"].weight[:e, :hh], self.attn["proj"].bias[:e])
        h = F.layer_norm(x, (e,), self.norm2.weight[:e], self.norm2.bias[:e], 1e-6)
        h = F.gelu(F.linear(h, self.mlp["fc1"].weight[:hidden, :e], self.mlp["fc1"].bias[:hidden]))
        return x + F.linear(h, self.mlp["fc2"].weight[:e, :hidden], self.mlp["fc2"].bias[:e])


class ElasticViT(nn.Module):
    """Weight-entangled ViT supernet; ``forward(x, cfg)`` runs the subnet ``cfg`` (a path, see :func:`config`)."""

    def __init__(self, max_embed: int = 64, max_depth: int = 6, max_heads: int = 4, max_mlp_ratio: float = 4.0,
                 head_dim: int = 16, img_size: int = 16, patch: int = 4, num_classes: int = 10) -> None:
        super().__init__()
        E, H, M = max_embed, max_heads * head_dim, int(round(max_mlp_ratio * max_embed))
        self.max_embed, self.max_depth, self.max_heads, self.max_mlp_ratio = E, max_depth, max_heads, max_mlp_ratio
        self.head_dim, self.img_size, self.patch, self.num_classes = head_dim, img_size, patch, num_classes
        self.patch_embed = nn.Conv2d(3, E, patch, stride=patch)
        tokens = (img_size // patch) ** 2 + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, E))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, E))
        self.blocks = nn.ModuleList(ElasticBlock(E, H, M) for _ in range(max_depth))
        self.norm = nn.LayerNorm(E, eps=1e-6)
        self.head = nn.Linear(E, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, cfg: Mapping[str, Any]) -> torch.Tensor:
        e, d = int(cfg["embed"]), int(cfg["depth"])
        x = F.conv2d(x, self.patch_embed.weight[:e], self.patch_embed.bias[:e], stride=self.patch)
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token[..., :e].expand(x.shape[0], -1, -1), x], 1) + self.pos_embed[..., :e]
        for i in range(d):
            hidden = int(round(float(cfg[f"mlp_ratio.{i}"]) * e))
            x = self.blocks[i](x, e, int(cfg[f"heads.{i}"]), hidden, self.head_dim)
        x = F.layer_norm(x, (e,), self.norm.weight[:e], self.norm.bias[:e], 1e-6)
        return F.linear(x[:, 0], self.head.weight[:, :e], self.head.bias)

    def bounds(self) -> dict[str, list[Any]]:
        """Every value the supernet can run, per dimension (the choices ``expand-s3`` is given)."""
        hd = self.head_dim
        return {"depth": list(range(1, self.max_depth + 1)),
                "embed": list(range(hd, self.max_embed + 1, hd // 2 if hd > 1 else 1)),
                "mlp_ratio": [r / 2 for r in range(1, int(2 * self.max_mlp_ratio) + 1)],
                "heads": list(range(1, self.max_heads + 1))}


def config(space: Mapping[str, Sequence[Any]], rng: random.Random, max_depth: int,
           fixed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A subnet drawn uniformly from ``space`` (per-block dims drawn per block); ``fixed`` pins dims."""
    fixed = dict(fixed or {})
    cfg: dict[str, Any] = {"depth": fixed.get("depth", rng.choice(list(space["depth"]))),
                           "embed": fixed.get("embed", rng.choice(list(space["embed"])))}
    for i in range(max_depth):
        for k in PER_BLOCK:
            cfg[f"{k}.{i}"] = fixed.get(k, rng.choice(list(space[k])))
    return cfg


def vit_params(cfg: Mapping[str, Any], net: ElasticViT) -> int:
    """Parameter count of a subnet (what ``graph_cost`` reports for its materialized graph)."""
    e, hd = int(cfg["embed"]), net.head_dim
    tokens = (net.img_size // net.patch) ** 2 + 1
    n = e * 3 * net.patch**2 + e + e + tokens * e + 2 * e + e * net.num_classes + net.num_classes
    for i in range(int(cfg["depth"])):
        hh = int(cfg[f"heads.{i}"]) * hd
        m = int(round(float(cfg[f"mlp_ratio.{i}"]) * e))
        n += 4 * e + 3 * (e * hh + hh) + hh * e + e + e * m + m + m * e + e
    return n


# ------------------------------------------------------------------------------------------- IR emission
def vit_graph(net: ElasticViT, batch: int | str = "N") -> Graph:
    """The supernet's largest network as an IR graph in the layout ``expand-s3`` expects (weights shared)."""
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    hd = net.head_dim
    g = Graph("elastic_vit")

    def w(name: str, arr: np.ndarray | None = None):
        return g.constants.get(name) or g.add_const(name, sd[name] if arr is None else arr, "param")

    def lin(x, prefix: str, name: str):
        y = g.create_node("matmul", [x, w(prefix + ".weight_t", sd[prefix + ".weight"].T.copy())],
                          name=name + ".matmul").output
        return g.create_node("add", [y, w(prefix + ".bias")], name=name).output

    def ln(x, prefix: str):
        return g.create_node("layer_norm", [x, w(prefix + ".weight"), w(prefix + ".bias")],
                             {"axis": -1, "epsilon": 1e-6}, name=prefix).output

    def shape_const(name: str, vals: list[int]):
        return g.add_const(name, np.asarray(vals, dtype=np.int64))

    x = g.add_input("x", TensorType(DType.float32, (batch, 3, net.img_size, net.img_size)))
    y = g.create_node("conv", [x, w("patch_embed.weight"), w("patch_embed.bias")],
                      {"kernel_shape": [net.patch] * 2, "strides": [net.patch] * 2, "pads": [0] * 4},
                      name="patch_embed").output
    y = g.create_node("reshape", [y, shape_const("patch_embed.shape", [0, 0, -1])], name="patch_embed.reshape").output
    y = g.create_node("transpose", [y], {"perm": [0, 2, 1]}, name="patch_embed.transpose").output
    zero = g.add_const("cls.zero", np.array(0.0, dtype=np.float32))
    first = g.create_node("slice", [y, shape_const("cls.starts", [0]), shape_const("cls.ends", [1]),
                                    shape_const("cls.axes", [1])], name="cls.slice").output
    cls = g.create_node("add", [g.create_node("mul", [first, zero], name="cls.zeros").output, w("cls_token")],
                        name="cls.expand").output
    y = g.create_node("concat", [cls, y], {"axis": 1}, name="cls.concat").output
    y = g.create_node("add", [y, w("pos_embed")], name="pos_embed.add").output
    scale = g.add_const("attn.scale", np.array(hd**-0.5, dtype=np.float32))
    for i in range(net.max_depth):
        p = f"blocks.{i}"
        h = ln(y, p + ".norm1")
        heads = []
        for k, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
            t = lin(h, f"{p}.attn.{k}", f"{p}.attn.{k}")
            t = g.create_node("reshape", [t, shape_const(f"{p}.attn.{k}.shape", [0, 0, net.max_heads, hd])],
                              name=f"{p}.attn.{k}.reshape").output
            heads.append(g.create_node("transpose", [t], {"perm": perm}, name=f"{p}.attn.{k}.transpose").output)
        a = g.create_node("matmul", heads[:2], name=f"{p}.attn.qk").output
        a = g.create_node("softmax", [g.create_node("mul", [a, scale], name=f"{p}.attn.scale").output],
                          {"axis": -1}, name=f"{p}.attn.softmax").output
        o = g.create_node("matmul", [a, heads[2]], name=f"{p}.attn.av").output
        o = g.create_node("transpose", [o], {"perm": [0, 2, 1, 3]}, name=f"{p}.attn.out.transpose").output
        o = g.create_node("reshape", [o, shape_const(f"{p}.attn.out.shape", [0, 0, net.max_heads * hd])],
                          name=f"{p}.attn.out.reshape").output
        y = g.create_node("add", [y, lin(o, f"{p}.attn.proj", f"{p}.attn.proj")], name=f"{p}.add1").output
        h = ln(y, p + ".norm2")
        h = g.create_node("gelu", [lin(h, f"{p}.mlp.fc1", f"{p}.mlp.fc1")], name=f"{p}.mlp.act").output
        y = g.create_node("add", [y, lin(h, f"{p}.mlp.fc2", f"{p}.mlp.fc2")], name=f"{p}.add2").output
    y = ln(y, "norm")
    idx = g.add_const("cls.index", np.array(0, dtype=np.int64))
    y = g.create_node("gather", [y, idx], {"axis": 1}, name="cls.take").output
    y = lin(y, "head", "head")
    g.set_outputs([y])
    return g


def s3_supernet_graph(net: ElasticViT, space: Mapping[str, Sequence[Any]] | None = None,
                      batch: int | str = "N") -> Graph:
    """``vit_graph`` + ``expand-s3`` with the supernet's bounds (or ``space``) as choices."""
    from graphopt.pass_api import get_pass

    g = vit_graph(net, batch)
    b = dict(net.bounds())
    if space:
        b = {k: sorted(set(b[k]) | set(space[k])) for k in b}
    get_pass("expand-s3").fn(g, **b)
    return g


# -------------------------------------------------------------------------------------------- E-T error
def et_error(errors: Sequence[float], top_k: int = 50) -> tuple[float, float, float]:
    """``(Q, Q_e, Q_t)``: mean error, mean of the ``top_k`` lowest errors, and their average."""
    e = np.sort(np.asarray(errors, dtype=np.float64))
    if e.size == 0:
        raise ValueError("et_error: no architecture errors given")
    q_e = float(e.mean())
    q_t = float(e[: max(1, min(top_k, e.size))].mean())
    return 0.5 * (q_e + q_t), q_e, q_t


def fit_slope(values: Sequence[float], qs: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``Q ~ w v + b``; a single value has slope 0."""
    v = np.asarray(values, dtype=np.float64)
    q = np.asarray(qs, dtype=np.float64)
    if v.size < 2 or np.ptp(v) == 0:
        return 0.0, float(q.mean())
    w, b = np.polyfit(v, q, 1)
    return float(w), float(b)


def shift_values(values: Sequence[float], w: float, gamma: float, tau: float, lo: float, hi: float) -> list[float]:
    """One evolution step of one dimension: move by ``-gamma*sign(w)`` when ``|w| > tau``, clip, dedupe."""
    if abs(w) <= tau:
        return list(values)
    step = -gamma * math.copysign(1.0, w)
    out = sorted({min(hi, max(lo, type(v)(v + step) if isinstance(v, int) and float(step).is_integer()
                                  else v + step)) for v in values})
    return [int(v) if float(v).is_integer() and all(isinstance(x, int) for x in values) else v for v in out]


def _pin(cfg: Mapping[str, Any], dim: str, v: Any, max_depth: int) -> dict[str, Any]:
    out = dict(cfg)
    if dim in PER_BLOCK:
        for i in range(max_depth):
            out[f"{dim}.{i}"] = v
    else:
        out[dim] = v
    return out


@dataclass
class EvolutionLog:
    space_before: dict[str, list[Any]]
    space_after: dict[str, list[Any]]
    per_dim: dict[str, dict[str, Any]] = field(default_factory=dict)


def evolve_space(space: Mapping[str, Sequence[Any]], error_fn: Callable[[dict[str, Any]], float], *,
                 max_depth: int, bounds: Mapping[str, tuple[float, float]], gamma: Mapping[str, float],
                 tau: Mapping[str, float], n_samples: int = 20, top_k: int = 5,
                 rng: random.Random | None = None) -> EvolutionLog:
    """One S3 space-evolution step (see module docstring); ``error_fn(cfg)`` returns a subnet's error."""
    rng = rng or random.Random(0)
    new: dict[str, list[Any]] = {k: list(v) for k, v in space.items()}
    log = EvolutionLog({k: list(v) for k, v in space.items()}, new)
    for dim in DIMS:
        vals = list(space[dim])
        base = [config(space, rng, max_depth) for _ in range(n_samples)]
        qs = []
        for v in vals:
            errs = [error_fn(_pin(c, dim, v, max_depth)) for c in base]
            qs.append(et_error(errs, top_k))
        w, b = fit_slope(vals, [q[0] for q in qs])
        lo, hi = bounds[dim]
        new[dim] = shift_values(vals, w, gamma[dim], tau[dim], lo, hi)
        log.per_dim[dim] = {"values": vals, "Q": [q[0] for q in qs], "Q_e": [q[1] for q in qs],
                            "Q_t": [q[2] for q in qs], "w": w, "b": b, "shifted": new[dim] != vals}
    return log


def evolutionary_search(space: Mapping[str, Sequence[Any]], error_fn: Callable[[dict[str, Any]], float],
                        size_fn: Callable[[dict[str, Any]], float], limit: float, *, max_depth: int,
                        population: int = 20, iterations: int = 5, top_k: int = 5, mutate_p: float = 0.3,
                        rng: random.Random | None = None) -> tuple[dict[str, Any], float, list[dict[str, Any]]]:
    """Top-k parents, uniform crossover, per-gene mutation, candidates over ``limit`` rejected (resampled)."""
    rng = rng or random.Random(0)

    def feasible(make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        for _ in range(200):
            c = make()
            if size_fn(c) <= limit:
                return c
        raise ValueError(f"evolutionary_search: no subnet within the limit {limit} after 200 draws")

    def mutate(c: dict[str, Any]) -> dict[str, Any]:
        fresh = config(space, rng, max_depth)
        return {k: (fresh[k] if rng.random() < mutate_p else v) for k, v in c.items()}

    def cross(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        return {k: (a[k] if rng.random() < 0.5 else b[k]) for k in a}

    pop = [feasible(lambda: config(space, rng, max_depth)) for _ in range(population)]
    scored = [(error_fn(c), c) for c in pop]
    hist = []
    for it in range(iterations):
        scored.sort(key=lambda t: t[0])
        parents = [c for _, c in scored[:top_k]]
        hist.append({"iteration": it, "best_error": scored[0][0]})
        kids = []
        for j in range(population - top_k):
            if j % 2:
                kids.append(feasible(lambda ps=parents: mutate(rng.choice(ps))))
            else:
                kids.append(feasible(lambda ps=parents: cross(rng.choice(ps), rng.choice(ps))))
        scored = scored[:top_k] + [(error_fn(c), c) for c in kids]
    scored.sort(key=lambda t: t[0])
    return scored[0][1], scored[0][0], hist


# -------------------------------------------------------------------------------------------- training
def train_supernet(net: ElasticViT, space: Mapping[str, Sequence[Any]], loader, steps: int, *, lr: float = 1e-3,
                   seed: int = 0, opt: torch.optim.Optimizer | None = None) -> torch.optim.Optimizer:
    """``steps`` steps, one uniformly sampled subnet per step (AdamW, as AutoFormer)."""
    from graphopt.search.supernet_train import cycle

    rng = random.Random(seed)
    opt = opt or torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)
    net.train()
    it = cycle(loader)
    for _ in range(steps):
        x, y = next(it)
        cfg = config(space, rng, net.max_depth)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x, cfg), y).backward()
        opt.step()
    return opt


@torch.no_grad()
def subnet_error(net: ElasticViT, cfg: Mapping[str, Any],
                 batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    net.eval()
    wrong = total = 0
    for x, y in batches:
        wrong += int((net(x, cfg).argmax(1) != y).sum())
        total += int(y.numel())
    return wrong / max(1, total)


def finetune(model: nn.Module, loader, test_loader, epochs: int, lr: float = 5e-4) -> float:
    """Identical retraining recipe for compared subnets (AdamW, cosine); returns test accuracy (%)."""
    from graphopt.search.supernet_train import accuracy

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * len(loader)))
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
    model.eval()
    return accuracy(model, test_loader)


@dataclass
class S3Result:
    path: dict[str, Any]
    spaces: list[dict[str, list[Any]]]
    evolution: list[dict[str, Any]]
    error: float
    params: int
    graph: Any = None
    seconds: float = 0.0


DEFAULT_GAMMA = {"depth": 1, "embed": 8, "mlp_ratio": 0.5, "heads": 1}


def s3_search(net: ElasticViT, space: Mapping[str, Sequence[Any]], train_loader, val_batches, *,
              steps_per_phase: int = 200, evolution_steps: int = 2, n_samples: int = 8, top_k: int = 3,
              tau0: float = 0.005, param_limit: int | None = None, seed: int = 0, log: Any = None) -> S3Result:
    """Train on ``space``, evolve it ``evolution_steps`` times (retraining after each), then evolutionary search.

    ``tau_i = tau0 / gamma_i``: a dimension moves when one step changes the E-T error by more than ``tau0``.
    """
    t0 = time.time()
    rng = random.Random(seed)
    b = net.bounds()
    bounds = {k: (min(v), max(v)) for k, v in b.items()}
    tau = {k: tau0 / DEFAULT_GAMMA[k] for k in DIMS}
    spaces = [{k: list(v) for k, v in space.items()}]
    evo = []
    opt = train_supernet(net, space, train_loader, steps_per_phase, seed=seed)
    cur = {k: list(v) for k, v in space.items()}
    for step in range(evolution_steps):
        lg = evolve_space(cur, lambda c: subnet_error(net, c, val_batches), max_depth=net.max_depth, bounds=bounds,
                          gamma=DEFAULT_GAMMA, tau=tau, n_samples=n_samples, top_k=top_k, rng=rng)
        cur = lg.space_after
        spaces.append({k: list(v) for k, v in cur.items()})
        evo.append({"step": step + 1, "per_dim": lg.per_dim, "space": spaces[-1]})
        if log:
            log(f"s3 evolution step {step + 1}: {cur}")
        opt = train_supernet(net, cur, train_loader, steps_per_phase, seed=seed + step + 1, opt=opt)
    limit = param_limit if param_limit is not None else 10**12
    best, err, _ = evolutionary_search(cur, lambda c: subnet_error(net, c, val_batches),
                                       lambda c: vit_params(c, net), limit, max_depth=net.max_depth, rng=rng)
    from graphopt.supernet import materialize

    sg = s3_supernet_graph(net)
    g = materialize(sg, best)
    return S3Result(best, spaces, evo, err, vit_params(best, net), g, time.time() - t0)


def s3_benchmark(quick: bool = True, seed: int = 0) -> dict[str, Any]:
    """S3 on CIFAR-10 (16x16) with a ViT-tiny-shaped elastic supernet; see benchmarks/supernet.py."""
    from graphopt.backends.torch import to_torch
    from graphopt.eval.data import BatchLoader
    from graphopt.ir.cost import graph_cost
    from graphopt.search.supernet_train import search_splits
    from graphopt.search.xnas import Downsampled
    from graphopt.supernet import materialize

    torch.manual_seed(seed)
    n = 2000 if quick else 4000
    tr, va, te = search_splits("cifar10", n_search=n, seed=seed)
    train = Downsampled(BatchLoader(tr, 64, shuffle=True, seed=seed, drop_last=True), 2)
    val_batches = list(Downsampled(BatchLoader(va.subset(512, seed=seed), 256), 2))
    test = Downsampled(BatchLoader(te, 256), 2)
    net = ElasticViT(max_embed=64, max_depth=6, max_heads=4, max_mlp_ratio=4.0, head_dim=16, img_size=16)
    init_space = {"depth": [1, 2, 3], "embed": [32, 40, 48], "mlp_ratio": [1.0, 1.5, 2.0], "heads": [1, 2]}
    rng = random.Random(seed)
    init_max = max(vit_params(config(init_space, rng, net.max_depth), net) for _ in range(300))
    res = s3_search(net, init_space, train, val_batches, steps_per_phase=150 if quick else 400,
                    evolution_steps=2, n_samples=6 if quick else 12, top_k=2 if quick else 4,
                    param_limit=init_max, seed=seed, log=print)
    # a random subnet of (nearly) equal FLOPs from the initial space
    sg = s3_supernet_graph(net)
    sg1 = s3_supernet_graph(net, batch=1)  # static shapes for FLOPs
    flops_best = graph_cost(materialize(sg1, res.path, verify=False)).flops
    cands = [config(init_space, rng, net.max_depth) for _ in range(60)]
    cand_flops = [graph_cost(materialize(sg1, c, verify=False)).flops for c in cands]
    j = int(np.argmin([abs(f - flops_best) for f in cand_flops]))
    rand_cfg, rand_flops = cands[j], cand_flops[j]
    epochs = 3 if quick else 8
    accs = {}
    for name, g in (("s3", res.graph), ("random", materialize(sg, rand_cfg))):
        torch.manual_seed(seed)
        m = to_torch(g)  # inherited supernet weights, identical fine-tuning for both
        accs[name] = finetune(m, train, test, epochs)
    table = [f"initial space: {res.spaces[0]}"]
    for e in res.evolution:
        table.append(f"after step {e['step']}: {e['space']}")
    table.append(f"S3 subnet: {accs['s3']:.2f}% test acc, {flops_best / 1e6:.2f} MFLOPs, {res.params} params")
    table.append(f"random subnet (initial space, nearest FLOPs): {accs['random']:.2f}% test acc, "
                 f"{rand_flops / 1e6:.2f} MFLOPs")
    for line in table:
        print("  " + line)
    return {"protocol": {"supernet": "ElasticViT max embed 64, depth 6, heads 4 (head dim 16), mlp 4.0, 16x16 "
                         "CIFAR-10, patch 4", "n_train_half": len(tr), "steps_per_phase": 150 if quick else 400,
                         "evolution_steps": 2, "retrain_epochs": epochs, "param_limit": init_max, "seed": seed},
            "spaces": res.spaces, "evolution": res.evolution, "best": res.path, "best_params": res.params,
            "best_flops": flops_best, "random": rand_cfg, "random_flops": rand_flops, "acc": accs, "table": table}
