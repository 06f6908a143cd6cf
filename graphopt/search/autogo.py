"""``graphopt optimize``: AutoGO on any model — segment mutation + Pareto evolution + final training.

Protocol (documented so results are reproducible):
1. The input graph is the seed. Candidates are scored by the chosen ranker:
   ``train`` (default): the candidate's emitted PyTorch module inherits its parent's weights (names and shapes
   that still match; mutation carries them), is trained by the ``recipe`` (``distill``: segment-local
   distillation of the replaced regions, then ``score_steps`` SGD steps against the original as teacher;
   ``finetune``: ``score_steps`` steps on labels; ``scratch``: re-initialised first) on the training split and
   scored by accuracy on the validation split carved from it. With ``inherit="seed"`` (default) the fine-tuned
   weights are thrown away, so every candidate starts from the seed's weights (plus fresh ones for replaced
   segments) and gets the same number of steps: scores of different generations are comparable. With
   ``inherit="trained"`` they are written back and children continue from them (cheaper per step of progress,
   but a generation-k candidate has k times the training of the seed, so deep descendants dominate the front
   whatever their architecture: measured on ResNet-20, every one of 48 mutants outscored the seed, .30-.39 vs .25).
   ``tse``: the same short training, scored by −TSE-E (sum of the last epoch's training losses; lower loss
   ranks higher), as an early-stopping ranker.
   ``psc``: the PSC predictor's score (no training during the search).
   ``proxy:<name>`` (e.g. ``proxy:nwot``, ``proxy:synflow``): a zero-cost proxy of
   :mod:`graphopt.predictors.proxies` computed on the candidate's graph (fresh copy, train mode) from one fixed
   minibatch of ``batch_size`` training samples of ``data`` (seeded); no training during the search, so a
   budget explores many more candidates. Non-finite values rank last. On NAS-Bench-201 nwot and synflow rank
   architectures at Spearman ~0.80 (``benchmarks/estimators_nb201.py``), but on the 87 ResNet-20 mutants of
   ``benchmarks/autogo_cifar10.py --proxy-check`` they agree with the 40-step fine-tune score at only ρ ≤ 0.31
   (snip .28, grad_norm .23, nwot .10, synflow .04; the same re-initialised): proxies separate different
   cells, not near-identical mutants of one network. Use them to explore, ``train`` to decide.
   ``ponas``: candidates are scored as by ``train``, but PO-NAS decides which mutants are worth that training:
   each parent gets ``ponas_oversample`` times more proposals than it will train, every proposal gets the
   paper's six zero-cost metrics (one fixed minibatch, as ``proxy:<name>``), and
   :class:`~graphopt.predictors.ponas.PONASScreen` trains them one at a time in the order of the PO-NAS
   per-architecture metric combination, refitted on every fine-tune score so far (the mean normalised metric
   before three scores exist). The screen's state is rebuilt from the result store on ``--resume``. Measured
   on 156 ResNet-20 mutants with known scores (``benchmarks/ponas_mutants.py``), its picks of 1 in 3 average
   the 52.5th percentile (random 50, snip alone 59.6): an option for the issue's interchangeable rankers, not
   a better default.
   Scores and final results use the task's primary metric (:data:`graphopt.eval.train.PRIMARY_METRIC`):
   accuracy for classification, token accuracy for sequence tasks (e.g. ``--data assoc_recall`` with a token
   model), mIoU for segmentation; the ``val_accuracy``/``test_accuracy`` fields hold that metric.
2. Cost is FLOPs (registry rules, batch 1), onnxruntime latency (1 thread, median of 20), or a target NPU
   profile's analytic latency (``--target``, :mod:`graphopt.npu.latency`).
3. After the search, the original and ``final_k`` Pareto candidates (the best-scored cheaper ones first) are
   trained with one identical recipe (``final_epochs`` epochs of SGD + cosine, the same teacher) and scored on
   the validation split; the best is the cheapest candidate whose validation metric is within ``max_drop`` of
   the original's, else the most accurate one that costs no more than the original (possibly the original).
   The test split is evaluated after the pick, once, for the original and the best. The budget covers
   everything; :class:`BudgetPlanner` splits it between the search and the final training from measured times.
4. Scaling out (``workers`` > 1 or ``executor="ray"``): candidates are scored by :func:`score_task` in worker
   processes of a :class:`~graphopt.eval.executors.LocalExecutor` or on a Ray cluster, one thread each, while the
   driver proposes the next mutants and commits every result to the store (steady-state evolution, see
   :mod:`graphopt.search.evolution`; ``sync_generations`` gives the serial run's candidates). Each worker
   receives the training and validation splits (never the test split) and the teacher once, through
   :meth:`~graphopt.eval.executors.Executor.share` (a private file, or Ray's object store), and caches them;
   candidates travel as packed IR. ``workers=1`` with the local executor is the serial in-process search.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GraphoptError
from ..ir.graph import Graph
from ..ir.serialize import atomic_write_bytes
from .evolution import Candidate, EvolutionConfig, ParetoEvolution, RemoteScore, pack_graph, pareto_front, unpack_graph


@dataclass
class OptimizeConfig:
    data: str = "cifar10-demo"
    objective: str = "flops"  # flops | latency | npu
    ranker: str = "train"  # train | tse | psc | ponas | proxy:<name>
    recipe: str = "distill"  # distill | finetune | scratch: how a candidate's weights are trained (module docstring)
    budget_seconds: float = 300.0
    iterations: int | None = None  # None: as many as the budget allows
    parents_per_iter: int = 4
    mutants_per_parent: int = 2
    cost_window: tuple[float, float] = (0.0, 1.10)
    score_steps: int = 40
    distill_steps: int = 60  # recipe distill: segment-local distillation steps before a candidate's fine-tune
    inherit: str = "seed"  # seed | trained: what a candidate's weights start from (see the module docstring)
    batch_size: int = 64
    lr: float | None = None  # None: the recipe's default (RECIPE_LR)
    train_size: int | None = None
    val_fraction: float = 0.1  # of the training data, per class, seeded by ``seed``: every selection reads it
    max_drop: float = 0.005  # the pick: the cheapest finalist within this much validation metric of the original
    final_k: int = 3
    final_epochs: float = 2
    seed: int = 0
    segments_db: str | None = None
    target: str | None = None  # NPU profile for objective "npu" (analytic latency, graphopt.npu.latency)
    ponas_oversample: int = 3  # ranker "ponas": proposals per trained mutant
    device: str = "auto"  # auto | cpu | cuda: where candidates train
    workers: int = 1  # candidates scored at once; 1 with the local executor: in this process (the serial search)
    executor: str = "local"  # local (worker processes on this machine) | ray (a Ray cluster)
    address: str | None = None  # executor "ray": "auto" or HOST:PORT of a running cluster; None: a local instance
    sync_generations: bool = False  # parallel: wait for each iteration's candidates (the serial run's candidates)
    # share of mutations that shrink a conv chain's inner channels keeping the trained weights
    # (passes/autogo/shrink.py); the rest are AutoGO segment mutations. None: 0.5 for distill and finetune,
    # 0 for scratch (the AutoGO paper's protocol mutates segments only)
    shrink_share: float | None = None

    def __post_init__(self) -> None:
        # checked here, not in optimize(): the CLI writes the run's config.json before the search starts
        if self.inherit not in ("seed", "trained"):
            raise GraphoptError(f"inherit={self.inherit!r}: choose 'seed' (equal training per candidate) or "
                                f"'trained'")
        if self.recipe not in RECIPE_LR:
            raise GraphoptError(f"recipe={self.recipe!r}: choose distill (keep what the model learned: the default "
                                f"for a trained model), finetune (inherit weights, plain fine-tune) or scratch "
                                f"(re-initialise every candidate, the AutoGO paper's protocol)")
        check_ranker(self.ranker)
        resolve_device(self.device)
        if self.ponas_oversample < 1:
            raise GraphoptError(f"ponas_oversample={self.ponas_oversample}: must be >= 1")
        if self.lr is not None and not 0 < self.lr < 10:
            raise GraphoptError(f"lr={self.lr}: must be a positive learning rate (e.g. 0.01)")
        if not 0 <= self.max_drop < 1:
            raise GraphoptError(f"max_drop={self.max_drop}: a drop in validation accuracy as a fraction (0.005 = "
                                f"half a point)")
        if self.shrink_share is not None and not 0 <= self.shrink_share <= 1:
            raise GraphoptError(f"shrink_share={self.shrink_share}: a share of mutations in [0, 1]")
        if not 0 < self.val_fraction < 1:
            raise GraphoptError(f"val_fraction={self.val_fraction}: must be in (0, 1)")
        if self.executor not in ("local", "ray"):
            raise GraphoptError(f"--executor {self.executor!r}: choose local (worker processes on this machine) or "
                                f"ray (a Ray cluster: --address auto or HOST:PORT; none starts a local one)")
        if int(self.workers) < 1:
            raise GraphoptError(f"--workers {self.workers}: must be >= 1 (1 scores candidates in this process)")
        if self.address is not None and self.executor != "ray":
            raise GraphoptError(f"--address {self.address}: a cluster address needs --executor ray")

    @property
    def parallel(self) -> bool:
        """Whether candidates are scored through an executor (else in the calling process, one at a time)."""
        return self.executor == "ray" or self.workers > 1

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> OptimizeConfig:
        """The config :meth:`to_json` wrote (fields this version does not know are dropped)."""
        d = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        if "cost_window" in d:
            d["cost_window"] = tuple(d["cost_window"])
        return cls(**d)

    @property
    def resolved_shrink_share(self) -> float:
        if self.shrink_share is not None:
            return float(self.shrink_share)
        return 0.0 if self.recipe == "scratch" else 0.5

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else RECIPE_LR[self.recipe]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


#: the fine-tune learning rate of each recipe (SGD, Nesterov momentum 0.9): a trained model is fine-tuned gently
#: (distill: chosen on the demo's validation split, where one epoch of the distillation fine-tune of the trained
#: ResNet-20 gave .716 at 0.01, .758 at 0.003 and .786 at 0.001 against .748 as given); a re-initialised one needs
#: the full rate
RECIPE_LR = {"distill": 0.001, "finetune": 0.02, "scratch": 0.05}


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when PyTorch sees a GPU, else ``cpu``; ``cuda`` without one is a user error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GraphoptError(f"--device {device}: PyTorch sees no CUDA GPU here (torch {torch.__version__}); "
                                f"use --device cpu or auto")
        return device
    raise GraphoptError(f"--device {device!r}: choose auto, cpu or cuda")


def check_ranker(ranker: str) -> None:
    """Raise a :class:`GraphoptError` naming the valid choices unless ``ranker`` is one of them."""
    if ranker in ("train", "tse", "psc", "ponas"):
        return
    if ranker.startswith("proxy:"):
        from graphopt.predictors.proxies import names

        name = ranker.split(":", 1)[1]
        if name in names():
            return
        raise GraphoptError(f"--ranker {ranker!r}: unknown proxy {name!r}; choose one of {', '.join(names())}")
    raise GraphoptError(f"--ranker {ranker!r}: choose train, tse, psc, ponas or proxy:<name> (e.g. proxy:nwot)")


def _proxy_scorer(graph: Graph, cfg: OptimizeConfig, batch=None) -> Callable[[Graph, Any], dict[str, Any]]:  # noqa: ANN001
    """Score = one zero-cost proxy on a fixed minibatch of the search's data (see the module docstring);
    ``batch``: that minibatch when it is already built (a worker receives the driver's)."""
    from graphopt.predictors.proxies import finite_or, spec
    from graphopt.predictors.proxies.passes import proxy_batch, score_graph

    name = cfg.ranker.split(":", 1)[1]
    sign = 1.0 if spec(name).higher_is_better else -1.0
    if batch is None:
        batch = proxy_batch(graph, cfg.data, cfg.batch_size, cfg.seed)

    def score(g: Graph, _parent: Any) -> dict[str, Any]:
        t0 = time.monotonic()
        value = score_graph(g, [name], batch, seed=cfg.seed)[name].score
        return {"score": finite_or(sign * value), f"proxy_{name}": float(value) if np.isfinite(value) else None,
                "proxy_seconds": time.monotonic() - t0}

    return score


def _ponas_screen(graph: Graph, cfg: OptimizeConfig):  # noqa: ANN202 - PONASScreen (imported lazily)
    """PO-NAS screen whose metrics are the paper's six proxies on a fixed minibatch of the search's data."""
    from graphopt.predictors.ponas import PONAS_METRICS, PONASScreen
    from graphopt.predictors.proxies.passes import proxy_batch, score_graph

    batch = proxy_batch(graph, cfg.data, cfg.batch_size, cfg.seed)
    names = list(PONAS_METRICS)

    def metrics(g: Graph) -> list[float]:
        try:
            res = score_graph(g, names, batch, seed=cfg.seed)
        except Exception:  # noqa: BLE001 - a proxy that cannot run on this mutant ranks it last, not the search
            return [float("nan")] * len(names)
        return [res[n].score for n in names]

    return PONASScreen(metrics, names, oversample=cfg.ponas_oversample, seed=cfg.seed)


def parse_budget(text: str) -> float:
    """``"20m"`` → 1200.0; accepts s/m/h suffixes or plain seconds."""
    t = text.strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600}.get(t[-1:], None)
    try:
        return float(t[:-1]) * mult if mult else float(t)
    except ValueError:
        from ..errors import GraphoptError

        raise GraphoptError(f"--budget {text!r}: write e.g. 90s, 20m or 1.5h") from None


def _cost_fn(objective: str, target: str | None = None) -> Callable[[Graph], float]:
    from ..ir.cost import graph_cost
    from ..ir.infer import set_input_shapes

    def static_copy(g: Graph) -> Graph:
        c = g.copy()
        shapes = {v.name: [d if isinstance(d, int) else 1 for d in (v.type.shape or ())] for v in c.inputs}
        set_input_shapes(c, shapes)
        return c

    if objective == "flops":
        def flops(g: Graph) -> float:
            f = graph_cost(static_copy(g)).flops
            if f is None:
                raise ValueError("FLOPs unknown (symbolic dims remain after binding the batch)")
            return float(f)

        return flops
    if objective == "latency":
        from ..eval.cost import onnx_latency

        return lambda g: onnx_latency(static_copy(g), runs=20) * 1e3
    if objective == "npu":
        from ..errors import GraphoptError
        from ..npu.latency import estimate_latency
        from ..npu.profiles import load_profile

        if not target:
            raise GraphoptError("--objective accuracy,npu needs --target PROFILE (see graphopt export --help)")
        profile = load_profile(target)

        def npu_ms(g: Graph) -> float:
            from ..pass_manager import run_pipeline

            c = g.copy()
            set_input_shapes(c, {v.name: [d if isinstance(d, int) else profile.batch for d in (v.type.shape or ())]
                                 for v in c.inputs})
            c = run_pipeline(c, "fuse-conv-bn,dce", verify_ir=False).graph  # as export will: BN into the conv
            return estimate_latency(c, profile).total_ms

        return npu_ms
    from ..errors import GraphoptError

    raise GraphoptError(f"--objective accuracy,{objective}: the cost is 'flops', 'latency' or 'npu'")


def reinitialize(graph: Graph, seed: int) -> None:
    """Fresh weights for every parameter and normalization buffer of ``graph`` (in place), as a new network gets
    them: the ``scratch`` recipe's start (the AutoGO paper trains every candidate from scratch)."""
    from graphopt.ir.registry import get_op
    from graphopt.passes.autogo.resolution import fresh_param

    rng = np.random.default_rng(seed)
    done: set[int] = set()
    for n in graph.nodes:
        op = get_op(n.op)
        for j, v in enumerate(n.inputs):
            if v is None or not v.is_const or v.kind == "const" or id(v) in done or v.const is None:
                continue
            arr = np.asarray(v.const)
            if not np.issubdtype(arr.dtype, np.floating):
                continue
            done.add(id(v))
            v.const = fresh_param(n.op, op.input_spec(j).name, tuple(arr.shape), arr.dtype, rng, dict(n.attrs))


class Trainer:
    """The short fine-tune that scores a candidate, and the final identical-recipe training.

    ``recipe`` (:class:`OptimizeConfig`): ``distill`` first trains the candidate's replaced segments to reproduce
    the ``teacher``'s activations (:func:`graphopt.eval.distill.distill_regions`), then fine-tunes the whole
    network with the teacher's logits as soft targets; ``finetune`` fine-tunes the inherited weights on labels
    alone; ``scratch`` re-initialises every weight first. Training runs on ``cfg.device``.
    """

    def __init__(self, splits, cfg: OptimizeConfig, teacher: Graph | None = None) -> None:
        self.splits = splits
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        # a copy: the final training writes weights into the candidates' graphs, the original's among them
        self.teacher_graph = teacher.copy() if teacher is not None and cfg.recipe == "distill" else None
        self._teacher = None

    def teacher(self):  # noqa: ANN201 - nn.Module or None
        if self.teacher_graph is None:
            return None
        if self._teacher is None:
            from ..backends.torch import to_torch

            self._teacher = to_torch(self.teacher_graph).eval().requires_grad_(False)
        return self._teacher

    def _prepare(self, graph: Graph, distill_steps: int,
                 seconds: float | None = None) -> tuple[Graph, dict[str, Any]]:
        """The graph to train (``graph`` itself when children inherit trained weights, else a copy) and what the
        recipe did to it first."""
        work = graph if self.cfg.inherit == "trained" and self.cfg.recipe != "scratch" else graph.copy()
        if self.cfg.recipe == "scratch":
            reinitialize(work, self.cfg.seed)
            return work, {}
        if self.teacher_graph is None or distill_steps <= 0:
            return work, {}
        from ..eval.distill import distill_regions

        rep = distill_regions(self.teacher_graph, work, self.splits.train, steps=distill_steps,
                              batch_size=self.cfg.batch_size, seed=self.cfg.seed, device=self.device, seconds=seconds)
        return work, {"distill": rep.to_dict()}

    def _config(self, **kw: Any):  # noqa: ANN202 - TrainConfig
        from ..eval.train import TrainConfig

        return TrainConfig(batch_size=self.cfg.batch_size, lr=self.cfg.resolved_lr, seed=self.cfg.seed, augment=True,
                           device=self.device, grad_clip=5.0, **kw)

    def short_train(self, graph: Graph) -> dict[str, Any]:
        from ..backends.torch import to_torch
        from ..eval.distill import write_back
        from ..eval.train import evaluate, primary_metric, train_model

        t_start = time.perf_counter()
        work, extra = self._prepare(graph, self.cfg.distill_steps)
        m = to_torch(work)
        res = train_model(m, self.splits.train, self._config(steps=self.cfg.score_steps, schedule="constant",
                                                             eval_every=0), teacher=self.teacher())
        if res.status != "ok":
            raise RuntimeError(f"training failed: {res.reason} (lower --lr, now {self.cfg.resolved_lr:g})")
        t0 = time.perf_counter()
        val = evaluate(m, self.splits.val, batch_size=256, device=self.device)
        eval_s = time.perf_counter() - t0
        if work is graph:
            write_back(graph, m)
        losses = res.step_losses
        tail = losses[-max(1, len(losses) // 4):]
        acc = primary_metric(val, self.splits.info.task)  # accuracy; token accuracy / mIoU for other tasks
        return {"score": -float(np.mean(tail)) if self.cfg.ranker == "tse" else acc, "val_accuracy": acc,
                "tse_e": float(np.sum(tail)), "train_seconds": res.train_time, "steps": res.steps,
                "eval_seconds": eval_s, "candidate_seconds": time.perf_counter() - t_start, **extra}

    def step_seconds(self, graph: Graph, steps: int = 3) -> float:
        """Measured seconds per training step of ``graph`` (after one warm-up step), on a throwaway copy."""
        from ..backends.torch import to_torch
        from ..eval.train import train_model

        m = to_torch(graph.copy())
        train_model(m, self.splits.train, self._config(steps=1, eval_every=0))
        res = train_model(m, self.splits.train, self._config(steps=steps, eval_every=0), teacher=self.teacher())
        return res.train_time / max(1, res.steps)

    def final_train(self, graph: Graph, epochs: float, seconds: float | None = None) -> dict[str, Any]:
        """Train ``graph`` with the final recipe (at most ``seconds`` of training) and score it on validation.

        The trained weights are written into ``graph``; the returned ``module`` is what :meth:`test_metric`
        evaluates once a model has been picked (the test split is never read before that)."""
        from ..backends.torch import to_torch
        from ..eval.distill import write_back
        from ..eval.train import evaluate, primary_metric, train_model

        t0 = time.perf_counter()
        work, extra = self._prepare(graph, 4 * self.cfg.distill_steps, None if seconds is None else seconds / 3)
        m = to_torch(work)
        res = None
        if seconds is not None:
            seconds -= time.perf_counter() - t0
        if epochs > 0 and (seconds is None or seconds > 0):
            res = train_model(m, self.splits.train, self._config(epochs=epochs, seconds=seconds, schedule="cosine",
                                                                 eval_every=0), teacher=self.teacher())
        val = evaluate(m, self.splits.val, batch_size=256, device=self.device)
        write_back(graph, m)
        return {"val_accuracy": primary_metric(val, self.splits.info.task),
                "final_status": res.status if res is not None else "skipped",
                "final_epochs": round(res.epochs, 3) if res is not None else 0.0, "module": m, **extra}

    def test_metric(self, module) -> float:  # noqa: ANN001 - nn.Module
        """The primary metric on the test split: called once per reported model, after selection."""
        from ..eval.train import evaluate, primary_metric

        return primary_metric(evaluate(module, self.splits.test, batch_size=256, device=self.device),
                              self.splits.info.task)


# ------------------------------------------------------------------------------------------- scaling out
@dataclass(frozen=True)
class ScoreJob:
    """What a worker needs to score candidates, besides the candidate: the config and handles to values shared
    once (:meth:`~graphopt.eval.executors.Executor.share`). Small to pickle; sent with every task."""

    cfg: dict[str, Any]  # OptimizeConfig.to_json()
    data: Any = None  # Shared: Splits with train and validation (the test split is not shipped)
    teacher: Any = None  # Shared: the teacher graph, packed (recipe distill)
    proxy: Any = None  # Shared: the proxy minibatch (ranker proxy:NAME)


_WORKER_SCORERS: dict[tuple, Callable[[Graph], dict[str, Any]]] = {}
_TRAIN_RANKERS = ("train", "tse", "ponas")


def _worker_scorer(job: ScoreJob) -> Callable[[Graph], dict[str, Any]]:
    """The scoring function for ``job``, built once per worker process (data, teacher and trainer cached)."""
    key = tuple(getattr(x, "key", None) for x in (job.data, job.teacher, job.proxy)) + (
        json.dumps(job.cfg, sort_keys=True, default=str),)
    fn = _WORKER_SCORERS.get(key)
    if fn is not None:
        return fn
    cfg = OptimizeConfig.from_json(job.cfg)
    if cfg.ranker in _TRAIN_RANKERS:
        teacher = unpack_graph(job.teacher.get(), "<teacher>") if job.teacher is not None else None
        fn = Trainer(job.data.get(), cfg, teacher=teacher).short_train
    elif cfg.ranker == "psc":
        from graphopt.predictors.psc import PSCPredictor

        psc = PSCPredictor.load_default()
        fn = lambda g: {"score": float(psc.score_graph(g))}  # noqa: E731
    else:
        proxy = _proxy_scorer(None, cfg, batch=job.proxy.get())  # type: ignore[arg-type]
        fn = lambda g: proxy(g, None)  # noqa: E731
    _WORKER_SCORERS.clear()  # one search per worker at a time: drop the previous one's trainer and data
    _WORKER_SCORERS[key] = fn
    return fn


def score_task(blob: bytes, job: ScoreJob) -> dict[str, Any]:
    """Score one packed candidate in a worker (see :class:`~graphopt.search.evolution.RemoteScore`): the same
    metrics as the serial search's scorer, plus ``_timings`` (worker seconds, deserialization, set-up, process)
    and, with ``inherit="trained"``, ``_graph`` (the candidate with its fine-tuned weights, packed)."""
    import torch

    from ..eval.train import default_threads

    t0 = time.perf_counter()
    torch.set_num_threads(default_threads())  # the executor sets GRAPHOPT_NUM_THREADS per worker
    g = unpack_graph(blob)
    t1 = time.perf_counter()
    scorer = _worker_scorer(job)
    t2 = time.perf_counter()
    res = dict(scorer(g))
    t3 = time.perf_counter()
    if job.cfg.get("inherit") == "trained" and job.cfg.get("ranker") in _TRAIN_RANKERS:
        res["_graph"] = pack_graph(g)  # short_train wrote the fine-tuned weights into g
    res["_timings"] = {"worker_s": time.perf_counter() - t0, "deserialize_s": t1 - t0, "setup_s": t2 - t1,
                       "scoring_s": t3 - t2, "pid": os.getpid(), "host": socket.gethostname()}
    return res


def warm_task(job: ScoreJob) -> int:
    """Load what :func:`score_task` needs (data, teacher, trainer) in a worker before the search starts."""
    _worker_scorer(job)
    return os.getpid()


def start_executor(kind: str, workers: int, address: str | None = None):  # noqa: ANN201 - Executor
    """The executor ``graphopt optimize`` / ``graphopt search`` score candidates on: ``local``, ``workers``
    processes of this machine (one thread each); ``ray``, the cluster at ``address`` (``auto`` or HOST:PORT; None
    starts a local instance with ``workers`` CPUs, or every core when ``workers`` is 1), one CPU and one thread
    per candidate, capped at ``workers`` when that is above 1. Ray's own task retries are off: the search
    re-queues a candidate whose worker died and counts the attempt in the store."""
    from ..eval.executors import LocalExecutor, RayExecutor, cpu_count

    if kind == "ray":
        kw: dict[str, Any] = {}
        if address is None:
            kw["num_cpus"] = workers if workers > 1 else cpu_count()
        try:
            return RayExecutor(address, workers=workers if workers > 1 else None, max_retries=0, **kw)
        except ImportError as e:
            raise GraphoptError(f"--executor ray: {e}") from None
        except ConnectionError as e:
            raise GraphoptError(f"--executor ray --address {address}: no Ray cluster there ({e}); start one with "
                                f"`ray start --head`, or leave --address out for a local instance") from None
    return LocalExecutor(workers, threads_per_worker=1)


def _scoring_job(executor, cfg: OptimizeConfig, splits, teacher: Graph | None, seed_graph: Graph) -> ScoreJob:  # noqa: ANN001
    """What workers need, shared once: the splits without the test split, the teacher, the proxy minibatch."""
    from ..eval.data import Splits

    data = teacher_ref = proxy = None
    if cfg.ranker in _TRAIN_RANKERS:
        data = executor.share(Splits(splits.train, splits.val, splits.val.take([]), splits.info), "data")
        if teacher is not None:
            teacher_ref = executor.share(pack_graph(teacher), "teacher")
    elif cfg.ranker.startswith("proxy:"):
        from graphopt.predictors.proxies.passes import proxy_batch

        proxy = executor.share(proxy_batch(seed_graph, cfg.data, cfg.batch_size, cfg.seed), "proxy-batch")
    return ScoreJob(cfg.to_json(), data, teacher_ref, proxy)


def _mutator(db_path: str | None, shrink_share: float = 0.0
             ) -> Callable[[Graph, random.Random], tuple[Graph, list[Any]] | None]:
    """A mutation function for the evolution: with probability ``shrink_share`` a channel-shrinking mutation
    (weights kept), otherwise (or where the graph has no prunable chain) an AutoGO segment mutation."""
    from graphopt.passes.autogo import load_default_db, mutate
    from graphopt.passes.autogo.shrink import shrink_chains, shrink_mutate

    db, vocab = load_default_db(db_path)

    def fn(graph: Graph, rng: random.Random):
        # the draw only where a chain can shrink: a graph without one keeps the segment mutations' random stream
        shrink = shrink_share > 0 and bool(shrink_chains(graph)) and rng.random() < shrink_share
        m = shrink_mutate(graph, rng) if shrink else None
        if m is None:
            m = mutate(graph, db, vocab, rng)
        if m is None or getattr(m, "graph", None) is None:
            return None
        return m.graph, [m.lineage if hasattr(m, "lineage") else {}]

    return fn


def optimize(
    graph: Graph,
    out_dir: str | Path,
    cfg: OptimizeConfig,
    *,
    run_dir: str | Path,
    progress: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Run AutoGO on ``graph`` (the seed) and write best.onnx/.pt/.py, pareto.json and report.html to ``out_dir``.

    ``run_dir`` holds the result store: every scored candidate is committed there at once, so calling again
    with the same ``run_dir`` resumes instead of re-scoring. ``progress`` receives one event per scored
    candidate (the CLI's progress bar); ``log`` receives human-readable lines; ``clock`` is the budget's clock
    (tests pass a simulated one). Returns the seed's and the best candidate's rows (hash, score, cost, val and
    test metric), the files written and a summary dict. The protocol is in the module docstring; the user guide
    is docs/optimize.md.
    """
    import torch

    from ..eval.train import default_threads

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(default_threads())  # evaluation and distillation too, not only training
    try:
        return _optimize(graph, out_dir, cfg, run_dir=run_dir, progress=progress, log=log, clock=clock)
    finally:
        torch.set_num_threads(prev_threads)


def _optimize(graph: Graph, out_dir: str | Path, cfg: OptimizeConfig, *, run_dir: str | Path,
              progress: Callable[[dict[str, Any]], None] | None, log: Callable[[str], None],
              clock: Callable[[], float]) -> dict[str, Any]:
    import torch

    from ..eval.data import load_dataset
    from ..eval.store import ResultStore

    t_begin = clock()  # the budget covers everything from here: loading the data, the search, the outputs
    out_dir, run_dir = Path(out_dir), Path(run_dir)
    splits = load_dataset(cfg.data, seed=cfg.seed, train_size=cfg.train_size, val_fraction=cfg.val_fraction)
    graph, relaxed = _relax_fixed_batch(graph.copy(), splits, log)  # a copy: the caller's weights stay as given
    _check_model_matches_data(graph, splits)
    original = graph.copy()  # the final training writes into the seed candidate's graph
    bn_reinserted = _reinsert_folded_batch_norm(graph, splits, cfg, log)
    trainer = Trainer(splits, cfg, teacher=graph)
    cost = _cost_fn(cfg.objective, cfg.target)
    try:  # the first check that the model trains on this data at all, before anything is written
        step_s_prior = trainer.step_seconds(graph)
    except (ValueError, RuntimeError, TypeError) as e:
        raise GraphoptError(f"the input model could not be scored: it does not train on {cfg.data} "
                            f"({type(e).__name__}: {e})") from None
    # The run folder is created only once the model, data and settings have been checked (a rejected input
    # leaves nothing behind); config.json lets `--resume` restore these settings.
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "config.json").exists():
        atomic_write_bytes(run_dir / "config.json", json.dumps(cfg.to_json()).encode())
    store = ResultStore.open(run_dir)
    log(f"run {run_dir} (every scored candidate is saved there; resume with --resume {run_dir.name})")
    log(f"data {splits.info.name}: {len(splits.train)} train / {len(splits.val)} validation (selection) / "
        f"{len(splits.test)} test (report only); recipe {cfg.recipe}, lr {cfg.resolved_lr:g}, device "
        f"{trainer.device}" + (f" ({torch.get_num_threads()} threads)" if trainer.device == "cpu" else ""))
    store.meta["config"] = cfg.to_json()
    store.meta["splits"] = {"sizes": splits.sizes(), "val_fraction": cfg.val_fraction, "seed": cfg.seed}
    screen = None
    if cfg.parallel:  # workers score (score_task); the driver proposes, screens and commits
        score = _scored_in_workers
        if cfg.ranker == "ponas":
            screen = _ponas_screen(graph, cfg)
    elif cfg.ranker in ("train", "tse", "ponas"):
        score = lambda g, parent: trainer.short_train(g)  # noqa: E731
        if cfg.ranker == "ponas":
            screen = _ponas_screen(graph, cfg)
    elif cfg.ranker == "psc":
        from graphopt.predictors.psc import PSCPredictor

        psc = PSCPredictor.load_default()
        score = lambda g, parent: {"score": float(psc.score_graph(g))}  # noqa: E731
    else:  # proxy:<name>, validated when the config was built
        score = _proxy_scorer(graph, cfg)
    plan = BudgetPlanner(budget=cfg.budget_seconds, start=t_begin, final_epochs=float(cfg.final_epochs),
                         steps_per_epoch=math.ceil(len(splits.train) / cfg.batch_size), n_val=len(splits.val),
                         n_test=len(splits.test), batch_size=cfg.batch_size,
                         distill_steps=4 * cfg.distill_steps if cfg.recipe == "distill" else 0)
    plan.step_s_prior = step_s_prior  # so that a proxy/psc search plans its final phase too
    evo = ParetoEvolution(
        mutate=_mutator(cfg.segments_db, cfg.resolved_shrink_share), score=score, cost=cost, store=store,
        run_dir=run_dir,
        config=EvolutionConfig(iterations=cfg.iterations, parents_per_iter=cfg.parents_per_iter,
                               mutants_per_parent=cfg.mutants_per_parent, cost_window=cfg.cost_window,
                               budget_seconds=cfg.budget_seconds, seed=cfg.seed),
        progress=progress, screen=screen, clock=clock)
    n_final = lambda: 1 + min(cfg.final_k, 1 + len([c for c in pareto_front(list(evo.population.values()))  # noqa: E731
                                                   if c.parent is not None]))
    evo.keep_going = lambda n_children: plan.keep_searching(clock(), n_children, n_final(), queued=evo.queued())
    orig_score = evo.score_fn
    executor = _attach_executor(evo, plan, cfg, splits, trainer, graph, clock, log) if cfg.parallel else None
    t0 = clock()

    def score_and_observe(g: Graph, parent):
        t = clock()
        try:
            res = orig_score(g, parent)
        except Exception as e:  # the store records it; the console says it too (the search goes on)
            log(f"candidate failed ({type(e).__name__}: {e})" if parent is not None else
                f"the original failed to train: {e}")
            raise
        plan.observe(res, clock() - t)
        if parent is None:
            warning = chance_warning(res, splits.info, cfg.score_steps)
            if warning:
                log(warning)
        return res

    evo.score_fn = score_and_observe
    try:
        front = evo.run(graph)
    except BaseException:
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        raise
    search_s = clock() - t0
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)  # nothing is in flight; the workers' memory goes back
        rate = plan.throughput()
        evo.stats["workers"] = plan.workers
        if rate is not None:
            evo.stats["candidates_per_minute"] = round(60 * rate, 2)
            log(f"measured throughput: {60 * rate:.1f} candidates per minute with {plan.workers} workers")
    seed_hash = store.meta["seed_hash"]
    seed = evo.population[seed_hash]
    finalists = [seed] + pick_finalists(front, seed, cfg.final_k)
    if len(evo.population) == 1:
        log(no_candidate_reason(evo.stats, store, len(graph), cfg.cost_window))
    epochs, seconds = plan.final_plan(clock(), len(finalists))
    if epochs < cfg.final_epochs:
        log(f"final training: {epochs:g} of {cfg.final_epochs:g} epochs fit what the budget leaves "
            f"({max(0.0, t_begin + cfg.budget_seconds - clock()):.0f}s)")
    log(f"search: {len(evo.population)} candidates in {search_s:.0f}s; training {len(finalists)} finalists "
        f"({epochs:g} epochs each, identical recipe, at most {seconds:.0f}s each); picking on validation")
    final: dict[str, dict[str, Any]] = {}
    as_given = Candidate(AS_GIVEN, original, seed.score, seed.cost)
    # the original as the user gave it, untrained: a fine-tune must not make the model worse than that
    final[AS_GIVEN] = trainer.final_train(original, epochs=0)
    for c in finalists:
        final[c.hash] = trainer.final_train(c.graph, epochs=epochs, seconds=seconds)
    # the pick reads validation only; the test split is evaluated afterwards, once per reported model
    val = {h: f["val_accuracy"] for h, f in final.items()}
    best = pick_best(finalists, seed, val, cfg.max_drop, as_given=val[AS_GIVEN])
    if best.hash == seed.hash and val[AS_GIVEN] >= val[seed.hash]:
        best = as_given  # the fine-tune did not help the original: hand back the original as given
    for h in dict.fromkeys((AS_GIVEN, seed.hash, best.hash)):
        final[h]["test_accuracy"] = trainer.test_metric(final[h]["module"])
    for f in final.values():
        f.pop("module", None)
    result = _write_outputs(out_dir, evo, front, seed, best, final, cfg, store, search_s, splits, relaxed,
                            fold_bn=bn_reinserted)
    log(f"total {clock() - t_begin:.0f}s (budget {cfg.budget_seconds:.0f}s)")
    store.close()
    return result


def _scored_in_workers(g: Graph, parent: Candidate | None) -> dict[str, Any]:
    raise AssertionError("with --workers > 1 or --executor ray, candidates are scored by score_task in workers")


def _attach_executor(evo: ParetoEvolution, plan: BudgetPlanner, cfg: OptimizeConfig, splits, trainer: Trainer,
                     graph: Graph, clock: Callable[[], float], log: Callable[[str], None]):  # noqa: ANN001, ANN202
    """Start the executor, share what workers need, and have ``evo`` score through it (the planner observes
    every result the driver commits, with its worker seconds and the time it finished)."""
    executor = start_executor(cfg.executor, cfg.workers, cfg.address)
    try:
        job = _scoring_job(executor, cfg, splits, trainer.teacher_graph, graph)
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    evo.executor, evo.remote = executor, RemoteScore(score_task, (job,), warm=warm_task)
    plan.workers = executor.capacity()
    where = (f"Ray cluster {cfg.address}" if cfg.address else "a local Ray instance") if cfg.executor == "ray" \
        else "local worker processes"
    log(f"scoring on {where}: {plan.workers} candidates at once, one thread each"
        + ("; generations synchronized" if cfg.sync_generations else "; steady-state"))

    def on_scored(res: dict[str, Any], seconds: float, parent: Candidate | None) -> None:
        plan.observe(res, seconds, now=clock())
        if parent is None:
            warning = chance_warning(res, splits.info, cfg.score_steps)
            if warning:
                log(warning)

    def on_failed(h: str, parent: Candidate | None, why: str) -> None:
        log(f"candidate failed ({why})" if parent is not None else f"the original failed to train: {why}")

    evo.on_scored, evo.on_failed = on_scored, on_failed
    return executor


def pick_finalists(front: list[Candidate], seed: Candidate, k: int) -> list[Candidate]:
    """The ``k`` front members that get the final training: the best-scored of those cheaper than the original
    first (the job is a cheaper model), then the best-scored of the rest."""
    others = sorted((c for c in front if c.hash != seed.hash), key=lambda c: -c.score)
    cheaper = [c for c in others if c.cost < seed.cost]
    return (cheaper + [c for c in others if c not in cheaper])[:k]


#: the key of the original as given (untrained by graphopt) among the final results
AS_GIVEN = "original-as-given"


def pick_best(finalists: list[Candidate], seed: Candidate, val: dict[str, float], max_drop: float,
              as_given: float | None = None) -> Candidate:
    """The cheapest finalist whose validation metric is within ``max_drop`` of the original's (the better of the
    original after the same final training and, when given, the original as given); if none is, the most
    accurate finalist that costs no more than the original (which may be the original). Reads nothing but
    validation metrics and costs."""
    ref = max(val[seed.hash], as_given if as_given is not None else -1.0)
    ok = [c for c in finalists if c.cost < seed.cost and val[c.hash] >= ref - max_drop]
    if ok:
        return min(ok, key=lambda c: (c.cost, -val[c.hash]))
    eligible = [c for c in finalists if c.cost <= seed.cost] or finalists
    return max(eligible, key=lambda c: (val[c.hash], -c.cost))


def _reinsert_folded_batch_norm(graph: Graph, splits, cfg: OptimizeConfig, log: Callable[[str], None]) -> bool:
    """A CNN whose exporter folded its BatchNorms gets them back, calibrated to keep its function, so that the
    fine-tunes stay stable (:mod:`graphopt.passes.reinsert_batch_norm`); True when it did. Only for recipes that
    start from the user's weights, and only when the graph has no BatchNorm at all (the folded signature)."""
    from graphopt.passes.reinsert_batch_norm import folded_convs, insert_batch_norms

    if cfg.recipe == "scratch" or any(n.op == "batch_norm" for n in graph.nodes):
        return False
    convs = folded_convs(graph)
    if len(convs) < 2:
        return False
    from ..eval.distill import activation_stats

    names = [n.outputs[0].name for n in convs]
    added = insert_batch_norms(graph, activation_stats(graph, names, splits.train, seed=cfg.seed))
    log(f"the model has no BatchNorm (folded into its convolutions by the exporter): {len(added)} BatchNorm layers "
        f"re-inserted, calibrated to keep its function, so that fine-tuning stays stable; best.onnx folds them "
        f"back")
    return True


def _relax_fixed_batch(graph: Graph, splits, log: Callable[[str], None]) -> tuple[Graph, dict[str, list] | None]:
    """A model exported with a fixed batch (``float32[1,3,32,32]``, torch.onnx's default) made batch-symbolic and
    checked per sample; returns the graph and the original input shapes (None when nothing was fixed)."""
    if not graph.inputs or graph.inputs[0].type is None or not graph.inputs[0].type.shape:
        return graph, None
    if not isinstance(graph.inputs[0].type.shape[0], int):
        return graph, None
    from graphopt.passes.relax_batch import relax_batch, verify_relaxed

    relaxed, report = relax_batch(graph)
    if not report.changed:
        return graph, None
    err = verify_relaxed(graph, relaxed)
    log(f"{report.describe()}; outputs per sample match the original (max relative error {err:.1e})")
    return relaxed, report.original_shapes


def no_candidate_reason(stats: dict[str, int], store, n_nodes: int, window: tuple[float, float]) -> str:
    """Why a search scored nothing but the original, from the evolution's counters, with what to change."""
    failed_scoring = len(store.rows("failed")) if hasattr(store, "rows") else 0
    parts = [f"{stats.get('failed_mutations', 0)} found no replaceable segment",
             f"{stats.get('duplicates', 0)} repeated an earlier graph",
             f"{stats.get('out_of_window', 0)} fell outside the cost window {window[0]:g}..{window[1]:g} x original"]
    if stats.get("rejected"):
        parts.append(f"{stats['rejected']} were rejected by the target check")
    if failed_scoring:
        parts.append(f"{failed_scoring} failed to train (reasons in the run's result store)")
    n = max(1, stats.get("mutations", 0))
    if not stats.get("mutations"):
        return ("no candidate besides the original: the budget left no time to try a mutation after scoring it "
                "and reserving the final training. Raise --budget, or lower --final-epochs.")
    if stats.get("out_of_window", 0) * 2 >= n:
        hint = (f"most mutants cost more than {window[1]:g} x the original: allow more with --cost-window "
                f"(e.g. {max(2.0, 2 * window[1]):g})")
    elif n_nodes < 8:
        hint = "the model is very small: segment mutation needs chains of several ops to replace"
    else:
        hint = ("raise --iterations or --budget, or mine a segment database from models like this one "
                "(graphopt segments build) and pass it with --segments")
    return (f"no candidate besides the original: of {stats.get('mutations', 0)} mutations, " + ", ".join(parts)
            + f". {hint[0].upper() + hint[1:]}.")


def chance_warning(res: dict[str, Any], info, score_steps: int) -> str | None:
    """A warning when the original's fine-tune score is at chance level, else None.

    The ``train``/``tse``/``ponas`` scores only carry signal if ``score_steps`` steps teach the network something;
    MobileNetV2 from its random initialisation still scored 0.100 on CIFAR-10 after 40 steps, and so did every
    mutant, so that search picked at random. Chance level here: below 1.5 / number of classes.
    """
    acc = res.get("val_accuracy")
    if acc is None or getattr(info, "task", "classification") != "classification" or info.num_classes < 2:
        return None
    if acc >= 1.5 / info.num_classes:
        return None
    return (f"warning: the original model reaches only {acc:.3f} validation accuracy after {score_steps} fine-tune "
            f"steps, chance level for {info.num_classes} classes, so candidates' scores will be mostly noise. "
            f"Raise --score-steps, start from a trained model, or rank with --ranker psc or proxy:NAME.")


@dataclass
class BudgetPlanner:
    """Splits a wall-clock budget between the search and the final training, from measured times.

    Why it re-plans: the budget is the user's promise about wall time, and a machine's speed is only known once
    it runs (under load, a step measured before the search was 2x too optimistic and a 20-minute run took 45).
    Every scored candidate reports its seconds; their medians predict a final epoch, a candidate and an
    evaluation. The final phase reserves at most ``final_share`` of the budget; the search may dip into that
    reserve until ``min_children`` candidates are scored, as long as the finalists can still be evaluated; the
    final training's epochs are then fitted to what is left and its time is capped, so the budget is not
    overrun whatever the estimate said.
    """

    budget: float
    start: float
    final_epochs: float
    steps_per_epoch: int
    n_val: int
    n_test: int
    batch_size: int = 64
    distill_steps: int = 0  # segment-local distillation steps before each final training
    final_share: float = 0.4
    min_children: int = 3
    step_s_prior: float | None = None  # seconds per training step measured before the search
    workers: int = 1  # candidates scored at once (the executor's capacity)
    step_s: list[float] = field(default_factory=list)
    eval_s_per_sample: list[float] = field(default_factory=list)
    candidate_s: list[float] = field(default_factory=list)
    distill_step_s: list[float] = field(default_factory=list)
    distill_setup_s: list[float] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)  # when each candidate finished (parallel scoring)

    def observe(self, res: dict[str, Any], seconds: float, now: float | None = None) -> None:
        """One scored candidate: its result dict and the seconds its scoring took (in its worker, when candidates
        are scored in parallel; ``now``: when the driver received it, for the measured throughput)."""
        self.candidate_s.append(seconds)
        if now is not None:
            self.done_at.append(now)
        if res.get("steps") and res.get("train_seconds") is not None:
            self.step_s.append(float(res["train_seconds"]) / int(res["steps"]))
        if res.get("eval_seconds") is not None and self.n_val:
            self.eval_s_per_sample.append(float(res["eval_seconds"]) / self.n_val)
        d = res.get("distill") or {}
        if d.get("steps"):
            self.distill_setup_s.append(float(d.get("setup_seconds", 0.0)))
            self.distill_step_s.append((float(d["seconds"]) - self.distill_setup_s[-1]) / int(d["steps"]))

    def _med(self, xs: list[float], default: float) -> float:
        return float(np.median(xs)) if xs else default

    def epoch_seconds(self) -> float:
        return self._med(self.step_s, self.step_s_prior or 0.0) * self.steps_per_epoch

    def _eval_s(self, n: int) -> float:
        per = self._med(self.eval_s_per_sample, 0.0)
        if not per and self.step_s_prior:  # a sample's forward pass costs about a third of its training step
            per = self.step_s_prior / self.batch_size / 3
        return per * n

    def _distill_s(self) -> float:
        if not self.distill_steps:
            return 0.0
        per_step = self._med(self.distill_step_s, self._med(self.step_s, self.step_s_prior or 0.0))
        return self._med(self.distill_setup_s, 0.0) + self.distill_steps * per_step

    def model_seconds(self, epochs: float) -> float:
        """Predicted seconds to distill, train for ``epochs`` and validate one finalist."""
        return self._distill_s() + self.epoch_seconds() * epochs + self._eval_s(self.n_val)

    def _closing_s(self, n_final: int) -> float:
        """The least the end needs: validating the finalists and the original as given, testing three models
        (the original as given, its control and the pick), writing the outputs."""
        return (n_final + 1) * self._eval_s(self.n_val) + 3 * self._eval_s(self.n_test) + 0.02 * self.budget

    def final_reserve(self, n_final: int) -> float:
        want = n_final * self.model_seconds(self.final_epochs) + self._closing_s(n_final)
        return max(self._closing_s(n_final), min(want, self.final_share * self.budget))

    def throughput(self) -> float | None:
        """Candidates finished per second, measured over the search after the original (None before three)."""
        xs = self.done_at[1:]
        if len(xs) < 3 or xs[-1] <= xs[0]:
            return None
        return (len(xs) - 1) / (xs[-1] - xs[0])

    def candidate_seconds(self) -> float:
        """Predicted seconds of one candidate's scoring (the median so far, the seed's warm-up left out)."""
        return self._med(self.candidate_s[1:], self._med(self.candidate_s, 0.0))

    def keep_searching(self, now: float, n_children: int, n_final: int, queued: int = 0) -> bool:
        """Whether the search may start another candidate at ``now``.

        ``n_children`` counts candidates besides the original that are scored or being scored. With ``workers``
        scoring at once, a candidate starts as soon as one is free and finishes a candidate's time later; one
        submitted behind ``queued`` others waits for ``queued // workers`` more, so over the search the planner
        spends the measured parallel throughput (``workers`` / candidate time), and it stops each worker when its
        next candidate would run into the final phase's reserve."""
        end = self.start + self.budget
        cand = self.candidate_seconds()
        finish = now + cand * (1 + queued // max(1, self.workers))
        if finish < end - self.final_reserve(n_final):
            return True
        return n_children < self.min_children and finish < end - self._closing_s(n_final)

    def final_plan(self, now: float, n_final: int) -> tuple[float, float]:
        """(epochs, seconds per finalist) that fit the rest of the budget; the seconds cover the segment-local
        distillation (at most a third of them) and the training."""
        left = self.start + self.budget - now - self._closing_s(n_final)
        per_model = max(0.0, left / max(1, n_final))
        train_s = per_model - min(self._distill_s(), per_model / 3)
        ep = self.epoch_seconds()
        epochs = self.final_epochs if ep <= 0 else min(self.final_epochs, train_s / ep)
        return round(max(0.0, epochs), 3), per_model


def _check_model_matches_data(graph: Graph, splits) -> None:
    from ..errors import GraphoptError

    if len(graph.inputs) != 1:
        raise GraphoptError(f"optimize trains on one dataset input: the model must have one input, it has "
                            f"{len(graph.inputs)} ({', '.join(v.name for v in graph.inputs)})")
    shp = graph.inputs[0].type.shape if graph.inputs[0].type else None
    want = tuple(splits.info.input_shape)
    if shp is None or len(shp) != 1 + len(want) or any(isinstance(d, int) and d != w for d, w in zip(shp[1:], want,
                                                                                                      strict=True)):
        raise GraphoptError(f"model input {graph.inputs[0].name} is {graph.inputs[0].type}, but dataset "
                            f"{splits.info.name} gives images of shape {list(want)}; pick matching --data or "
                            f"a model for it")
    if isinstance(shp[0], int):  # reshapes traced at that batch would fail at another one, deep inside training
        raise GraphoptError(
            f"model input {graph.inputs[0].name} is {graph.inputs[0].type}: its batch size is fixed at {shp[0]}, "
            f"but optimize trains and evaluates in batches of other sizes. Export the model with a dynamic batch "
            f"dimension: graphopt.load(module, example_inputs=..., dynamic_batch=True), torch.export with "
            f"dynamic_shapes={{...: {{0: torch.export.Dim('batch')}}}}, or an ONNX input whose dim 0 is a "
            f"dim_param")


def _model_facts(graph: Graph) -> dict[str, Any]:
    """FLOPs and parameters (batch 1) and onnxruntime latency (1 thread, median of 30) of one model."""
    from ..eval.cost import onnx_latency
    from ..ir.cost import graph_cost
    from ..ir.infer import set_input_shapes

    g = graph.copy()
    set_input_shapes(g, {v.name: [d if isinstance(d, int) else 1 for d in (v.type.shape or ())] for v in g.inputs})
    c = graph_cost(g)
    try:
        ms = onnx_latency(g, runs=30) * 1e3
    except Exception:  # noqa: BLE001 - a latency figure is informative; it must not lose the search's result
        ms = None
    return {"flops": c.flops, "params": c.params, "ort_ms": ms}


def _onnx_with_metadata(graph: Graph, original_shapes: dict[str, list] | None, info, extra: dict[str, Any]):
    """best.onnx's model: the caller's input shapes (a fixed batch stays fixed) and the preprocessing it expects
    in ``metadata_props`` (a deployed model must be fed as it was trained)."""
    from ..backends.onnx import to_onnx
    from ..ir.infer import set_input_shapes

    g = graph
    if original_shapes:
        g = graph.copy()
        set_input_shapes(g, original_shapes)
    model = to_onnx(g)
    meta = {"graphopt.producer": "graphopt optimize"}
    if getattr(info, "mean", None) is not None and getattr(info, "std", None) is not None:
        meta["graphopt.preprocess"] = json.dumps({"scale": "1/255", "mean": list(info.mean), "std": list(info.std),
                                                  "layout": "NCHW", "color": "RGB"})
    meta.update({f"graphopt.{k}": json.dumps(v) if not isinstance(v, str) else v for k, v in extra.items()})
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    return model, meta


def _deployable(graph: Graph, fold_bn: bool) -> Graph:
    """The graph as it is handed back: BatchNorms that graphopt re-inserted are folded again."""
    if not fold_bn:
        return graph
    from ..pass_manager import run_pipeline

    return run_pipeline(graph.copy(), "fuse-conv-bn,dce", verify_ir=False).graph


def _write_outputs(out_dir: Path, evo: ParetoEvolution, front: list[Candidate], seed: Candidate,
                   best: Candidate, final: dict[str, dict[str, Any]], cfg: OptimizeConfig, store,
                   search_s: float, splits=None, original_shapes: dict[str, list] | None = None,
                   fold_bn: bool = False) -> dict[str, Any]:
    from ..modelio import save_model
    from .report import write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    info = splits.info if splits is not None else None
    fin_b = final[best.hash]
    best_out = _deployable(best.graph, fold_bn)
    model, meta = _onnx_with_metadata(best_out, original_shapes, info, {
        "val_accuracy": fin_b.get("val_accuracy"), "test_accuracy": fin_b.get("test_accuracy"), "data": cfg.data})
    atomic_write_bytes(out_dir / "best.onnx", model.SerializeToString())
    written = [out_dir / "best.onnx"]
    for suffix in (".pt", ".py"):
        written += save_model(best_out, out_dir / f"best{suffix}")

    def row(c: Candidate) -> dict[str, Any]:
        return {"hash": c.hash, "parent": c.parent, "score": c.score, "cost": c.cost, "nodes": len(c.graph),
                "lineage": c.lineage, **final.get(c.hash, {})}

    facts = {"original": _model_facts(_deployable(seed.graph, fold_bn)), "best": _model_facts(best_out)}
    points = [row(c) for c in evo.population.values()]
    front_rows = [row(c) for c in front]
    doc = {"objective": cfg.objective, "cost_unit": {"flops": "FLOPs"}.get(cfg.objective, "ms"),
           "ranker": cfg.ranker, "recipe": cfg.recipe, "seed": row(seed), "best": row(best), "front": front_rows,
           "finalists": {h: v for h, v in final.items()}, "stats": evo.stats, "search_seconds": search_s,
           "facts": facts, "splits": splits.sizes() if splits is not None else None,
           "selection": "final pick by validation metric; test evaluated once for the original and the best",
           "onnx_metadata": meta, "config": cfg.to_json()}
    if evo.screen is not None:
        doc["screen"] = asdict(evo.screen.stats)
    atomic_write_bytes(out_dir / "pareto.json", json.dumps(doc, indent=1, default=str).encode())
    fs, fb = final[seed.hash], fin_b

    def line(c: Candidate, f: dict[str, Any], k: dict[str, Any], ref: dict[str, Any] | None) -> str:
        lat = f"{k['ort_ms']:.2f} ms" if k["ort_ms"] is not None else "n/a"
        txt = (f"{k['flops'] / 1e6:.2f} MFLOPs, {k['params'] / 1e3:.1f}k params, onnxruntime {lat}, "
               f"val {f['val_accuracy']:.4f}, test {f['test_accuracy']:.4f}")
        if ref is not None and k["flops"] and ref["flops"]:
            txt += (f" ({(k['flops'] / ref['flops'] - 1) * 100:+.1f}% FLOPs, "
                    f"{(f['test_accuracy'] - fs['test_accuracy']) * 100:+.2f} test points)")
        if cfg.objective != "flops":
            txt += f"; cost {c.cost:.4g} {doc['cost_unit']}"
        return txt

    summary = {
        "original as given": line(seed, final[AS_GIVEN], facts["original"], None) if AS_GIVEN in final else None,
        "original": line(seed, fs, facts["original"], None) + " (after the same final fine-tune: the control)",
        "best": line(best, fb, facts["best"], facts["original"]),
        "candidates scored": len(evo.population), "search time (s)": f"{search_s:.0f}", "ranker": cfg.ranker,
        "recipe": cfg.recipe, "dataset": cfg.data, "mutations tried": evo.stats["mutations"],
        "selection": "by validation accuracy; test evaluated once, for this report",
    }
    summary = {k: v for k, v in summary.items() if v is not None}
    if best.hash in (seed.hash, AS_GIVEN):
        which = ("as given" if best.hash == AS_GIVEN
                 else "after the same final fine-tune (it beat the original as given)")
        summary["note"] = (f"no cheaper candidate came within --max-drop of the original on validation; best.onnx "
                           f"is the original {which}")
    if evo.screen is not None:
        st = evo.screen.stats
        summary["PO-NAS screen"] = (f"{evo.stats['screened_out']} proposals not trained; pool {st.pool}, "
                                    f"{st.fits} refits, {st.pretrains} pretrainings; metrics {st.metric_seconds:.0f}s, "
                                    f"surrogate {st.fit_seconds + st.pretrain_seconds:.0f}s")
    write_report(out_dir / "report.html", title="graphopt optimize", summary=summary, points=points,
                 front=front_rows, x="cost", y="score", seed=row(seed), best=row(best), best_graph=best.graph,
                 seed_graph=seed.graph,
                 columns=["hash", "score", "cost", "nodes", "val_accuracy", "test_accuracy", "parent", "lineage"])
    written += [out_dir / "pareto.json", out_dir / "report.html"]
    return {"best": row(best), "seed": row(seed), "files": [str(p) for p in written], "summary": summary}
