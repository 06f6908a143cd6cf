"""``graphopt optimize``: AutoGO on any model — segment mutation + Pareto evolution + final training.

Protocol (documented so results are reproducible):
1. The input graph is the seed. Candidates are scored by the chosen ranker:
   ``train`` (default): the candidate's emitted PyTorch module inherits its parent's weights (names and shapes
   that still match; mutation carries them), is fine-tuned for ``score_steps`` SGD steps on the training split
   and scored by validation accuracy. With ``inherit="seed"`` (default) the fine-tuned weights are thrown
   away, so every candidate starts from the seed's weights (plus fresh ones for replaced segments) and gets
   the same number of steps: scores of different generations are comparable. With ``inherit="trained"``
   they are written back and children continue from them (cheaper per step of progress, but a generation-k
   candidate has k times the training of the seed, so deep descendants dominate the front whatever their
   architecture: measured on ResNet-20, every one of 48 mutants outscored the seed, .30-.39 vs .25).
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
3. After the search, the original and the top ``final_k`` Pareto candidates are trained with one identical
   recipe (``final_epochs`` epochs of SGD + cosine from their current weights) and evaluated on the test split;
   the best is the most accurate candidate whose cost does not exceed the original's (or the most accurate
   overall if none does). The budget covers both phases: the search stops early enough for the final training,
   whose length is re-estimated from the fine-tunes' measured speed (:class:`_TrainClock`) and shortened if
   needed.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..ir.graph import Graph
from ..ir.serialize import atomic_write_bytes
from .evolution import Candidate, EvolutionConfig, ParetoEvolution, pareto_front


@dataclass
class OptimizeConfig:
    data: str = "cifar10-demo"
    objective: str = "flops"  # flops | latency
    ranker: str = "train"  # train | tse | psc | ponas | proxy:<name>
    budget_seconds: float = 300.0
    iterations: int = 5
    parents_per_iter: int = 4
    mutants_per_parent: int = 2
    cost_window: tuple[float, float] = (0.0, 1.10)
    score_steps: int = 40
    inherit: str = "seed"  # seed | trained: what a candidate's weights start from (see the module docstring)
    batch_size: int = 64
    lr: float = 0.02
    train_size: int | None = None
    final_k: int = 3
    final_epochs: int = 2
    seed: int = 0
    segments_db: str | None = None
    target: str | None = None  # NPU profile for objective "npu" (analytic latency, graphopt.npu.latency)
    ponas_oversample: int = 3  # ranker "ponas": proposals per trained mutant

    def __post_init__(self) -> None:
        # checked here, not in optimize(): the CLI writes the run's config.json before the search starts
        if self.inherit not in ("seed", "trained"):
            from ..errors import GraphoptError

            raise GraphoptError(f"inherit={self.inherit!r}: choose 'seed' (equal training per candidate) or "
                                f"'trained'")
        check_ranker(self.ranker)
        if self.ponas_oversample < 1:
            from ..errors import GraphoptError

            raise GraphoptError(f"ponas_oversample={self.ponas_oversample}: must be >= 1")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_ranker(ranker: str) -> None:
    """Raise a :class:`GraphoptError` naming the valid choices unless ``ranker`` is one of them."""
    from ..errors import GraphoptError

    if ranker in ("train", "tse", "psc", "ponas"):
        return
    if ranker.startswith("proxy:"):
        from graphopt.predictors.proxies import names

        name = ranker.split(":", 1)[1]
        if name in names():
            return
        raise GraphoptError(f"--ranker {ranker!r}: unknown proxy {name!r}; choose one of {', '.join(names())}")
    raise GraphoptError(f"--ranker {ranker!r}: choose train, tse, psc, ponas or proxy:<name> (e.g. proxy:nwot)")


def _proxy_scorer(graph: Graph, cfg: OptimizeConfig) -> Callable[[Graph, Any], dict[str, Any]]:
    """Score = one zero-cost proxy on a fixed minibatch of the search's data (see the module docstring)."""
    from graphopt.predictors.proxies import finite_or, spec
    from graphopt.predictors.proxies.passes import proxy_batch, score_graph

    name = cfg.ranker.split(":", 1)[1]
    sign = 1.0 if spec(name).higher_is_better else -1.0
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


def _write_back(graph: Graph, module) -> None:
    """Copy trained tensors back into the graph's constants (so children inherit them)."""
    for k, t in module.state_dict().items():
        v = graph.constants.get(k)
        if v is not None and tuple(v.const.shape) == tuple(t.shape):
            v.const = t.detach().cpu().numpy().copy()


class Trainer:
    """Short fine-tuning used as the ranker, and the final identical-recipe training."""

    def __init__(self, splits, cfg: OptimizeConfig) -> None:
        self.splits = splits
        self.cfg = cfg

    def short_train(self, graph: Graph) -> dict[str, Any]:
        from ..backends.torch import to_torch
        from ..eval.train import TrainConfig, evaluate, primary_metric, train_model

        m = to_torch(graph)
        tc = TrainConfig(steps=self.cfg.score_steps, batch_size=self.cfg.batch_size, lr=self.cfg.lr,
                         schedule="constant", seed=self.cfg.seed, augment=True, eval_every=0)
        res = train_model(m, self.splits.train, tc)
        if res.status != "ok":
            raise RuntimeError(f"training failed: {res.reason}")
        t0 = time.perf_counter()
        val = evaluate(m, self.splits.val, batch_size=256)
        eval_s = time.perf_counter() - t0
        if self.cfg.inherit == "trained":
            _write_back(graph, m)
        losses = res.step_losses
        tail = losses[-max(1, len(losses) // 4):]
        acc = primary_metric(val, self.splits.info.task)  # accuracy; token accuracy / mIoU for other tasks
        return {"score": -float(np.mean(tail)) if self.cfg.ranker == "tse" else acc, "val_accuracy": acc,
                "tse_e": float(np.sum(tail)), "train_seconds": res.train_time,
                "steps": res.steps, "eval_seconds": eval_s}

    def step_seconds(self, graph: Graph, steps: int = 3) -> float:
        """Measured seconds per training step of ``graph`` (after one warm-up step), on a throwaway copy."""
        from ..backends.torch import to_torch
        from ..eval.train import TrainConfig, train_model

        m = to_torch(graph.copy())
        train_model(m, self.splits.train, TrainConfig(steps=1, batch_size=self.cfg.batch_size, eval_every=0,
                                                      seed=self.cfg.seed))
        res = train_model(m, self.splits.train, TrainConfig(steps=steps, batch_size=self.cfg.batch_size,
                                                            eval_every=0, seed=self.cfg.seed))
        return res.train_time / max(1, res.steps)

    def final_train(self, graph: Graph, epochs: float | None = None) -> dict[str, Any]:
        from ..backends.torch import to_torch
        from ..eval.train import TrainConfig, evaluate, primary_metric, train_model

        m = to_torch(graph)
        tc = TrainConfig(epochs=epochs or self.cfg.final_epochs, batch_size=self.cfg.batch_size, lr=self.cfg.lr,
                         schedule="cosine", seed=self.cfg.seed, augment=True)
        res = train_model(m, self.splits.train, tc)
        test = evaluate(m, self.splits.test, batch_size=256)
        _write_back(graph, m)
        return {"test_accuracy": primary_metric(test, self.splits.info.task), "final_status": res.status}


def _mutator(db_path: str | None) -> Callable[[Graph, random.Random], tuple[Graph, list[Any]] | None]:
    from graphopt.passes.autogo import load_default_db, mutate

    db, vocab = load_default_db(db_path)

    def fn(graph: Graph, rng: random.Random):
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
) -> dict[str, Any]:
    """Run AutoGO on ``graph`` (the seed) and write best.onnx/.pt/.py, pareto.json and report.html to ``out_dir``.

    ``run_dir`` holds the result store: every scored candidate is committed there at once, so calling again
    with the same ``run_dir`` resumes instead of re-scoring. ``progress`` receives one event per scored
    candidate (the CLI's progress bar); ``log`` receives human-readable lines. Returns the seed's and the
    best candidate's rows (hash, score, cost, test accuracy), the files written and a summary dict. The
    protocol is in the module docstring; the user guide is docs/optimize.md.
    """
    from ..eval.data import load_dataset
    from ..eval.store import ResultStore

    out_dir, run_dir = Path(out_dir), Path(run_dir)
    splits = load_dataset(cfg.data, seed=cfg.seed, train_size=cfg.train_size)
    _check_model_matches_data(graph, splits)
    trainer = Trainer(splits, cfg)
    cost = _cost_fn(cfg.objective, cfg.target)
    # The run folder is created only once the model, data and settings have been checked (a rejected input
    # leaves nothing behind); config.json lets `--resume` restore these settings.
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "config.json").exists():
        atomic_write_bytes(run_dir / "config.json", json.dumps(cfg.to_json()).encode())
    store = ResultStore.open(run_dir)
    log(f"run {run_dir} (every scored candidate is saved there; resume with --resume {run_dir.name})")
    store.meta["config"] = cfg.to_json()
    screen = None
    if cfg.ranker in ("train", "tse", "ponas"):
        score = lambda g, parent: trainer.short_train(g)  # noqa: E731
        if cfg.ranker == "ponas":
            screen = _ponas_screen(graph, cfg)
    elif cfg.ranker == "psc":
        from graphopt.predictors.psc import PSCPredictor

        psc = PSCPredictor.load_default()
        score = lambda g, parent: {"score": float(psc.score_graph(g))}  # noqa: E731
    else:  # proxy:<name>, validated when the config was built
        score = _proxy_scorer(graph, cfg)
    t_begin = time.monotonic()
    final_epochs, per_model_s = _plan_budget(graph, trainer, cfg, log)
    clock = _TrainClock(trainer)
    deadline = t_begin + cfg.budget_seconds
    evo = ParetoEvolution(
        mutate=_mutator(cfg.segments_db), score=score, cost=cost, store=store, run_dir=run_dir,
        config=EvolutionConfig(iterations=cfg.iterations, parents_per_iter=cfg.parents_per_iter,
                               mutants_per_parent=cfg.mutants_per_parent, cost_window=cfg.cost_window,
                               budget_seconds=cfg.budget_seconds, seed=cfg.seed),
        progress=progress, screen=screen)
    t0 = time.monotonic()
    evo_start = [t0]
    orig_score = evo.score_fn

    def score_and_rebudget(g: Graph, parent):
        """After every scoring, leave exactly the time the final training of the current front will need."""
        res = orig_score(g, parent)
        now = time.monotonic()
        if parent is None:  # the seed: the evolution's own clock starts after it
            evo_start[0] = now
            warning = chance_warning(res, splits.info, cfg.score_steps)
            if warning:
                log(warning)
        clock.observe(res)
        n_front = len([c for c in pareto_front(list(evo.population.values())) if c.parent is not None])
        n_final = 1 + min(cfg.final_k, n_front + 1)  # +1: this candidate may join the front
        model_s = clock.model_seconds(final_epochs) or per_model_s
        evo.cfg.budget_seconds = max(0.0, deadline - n_final * model_s - evo_start[0])
        return res

    evo.score_fn = score_and_rebudget
    front = evo.run(graph)
    search_s = time.monotonic() - t0
    seed_hash = store.meta["seed_hash"]
    seed = evo.population[seed_hash]
    finalists = [seed] + [c for c in sorted(front, key=lambda c: -c.score) if c.hash != seed_hash][: cfg.final_k]
    if len(evo.population) == 1:
        log(no_candidate_reason(evo.stats, store, len(graph), cfg.cost_window))
    fitted = clock.epochs_that_fit(deadline - time.monotonic(), len(finalists), final_epochs)
    if fitted < final_epochs:
        log(f"final training shortened to {fitted} epochs: training measured during the search is slower than "
            f"planned, and the budget ends in {max(0.0, deadline - time.monotonic()):.0f}s")
        final_epochs = fitted
    elif final_epochs < cfg.final_epochs and search_s < 0.9 * (evo.cfg.budget_seconds or 0.0):
        # the plan shortened the final training for a search that then ended early, out of mutations rather
        # than out of time: give the finalists (most of) the time that is left, up to the configured epochs
        left = 0.9 * (deadline - time.monotonic())
        grown = clock.epochs_that_fit(left, len(finalists), float(cfg.final_epochs))
        if grown > final_epochs:
            log(f"final training lengthened to {grown} epochs: the search ended early and the budget ends in "
                f"{max(0.0, deadline - time.monotonic()):.0f}s")
            final_epochs = grown
    log(f"search: {len(evo.population)} candidates in {search_s:.0f}s; training {len(finalists)} finalists "
        f"({final_epochs} epochs each, identical recipe)")
    final: dict[str, dict[str, Any]] = {}
    for c in finalists:
        final[c.hash] = trainer.final_train(c.graph, epochs=final_epochs)
    log(f"total {time.monotonic() - t_begin:.0f}s (budget {cfg.budget_seconds:.0f}s)")
    eligible = [c for c in finalists if c.cost <= seed.cost] or finalists
    best = max(eligible, key=lambda c: (final[c.hash]["test_accuracy"], -c.cost))
    result = _write_outputs(out_dir, evo, front, seed, best, final, cfg, store, search_s)
    store.close()
    return result


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


class _TrainClock:
    """Seconds per final model from the search's own fine-tunes (same machine, same load, same evaluation).

    The plan's step time is measured once, on three steps, before the search; under load (or for a model whose
    evaluation is a large share, e.g. MobileNetV2 on 10k test images) it was 2x too optimistic and a 20-minute
    budget ran 45 minutes. Every ``train``/``tse``/``ponas`` score reports its training and validation seconds;
    their medians predict a final epoch and the test evaluation, and the final training is shortened to what is
    left of the budget.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.step_s: list[float] = []
        self.eval_s_per_sample: list[float] = []

    def observe(self, res: dict[str, Any]) -> None:
        if res.get("steps") and res.get("train_seconds") is not None:
            self.step_s.append(float(res["train_seconds"]) / int(res["steps"]))
        if res.get("eval_seconds") is not None and len(self.trainer.splits.val):
            self.eval_s_per_sample.append(float(res["eval_seconds"]) / len(self.trainer.splits.val))

    def _epoch_and_eval(self) -> tuple[float, float] | None:
        if not self.step_s:
            return None
        steps = math.ceil(len(self.trainer.splits.train) / self.trainer.cfg.batch_size)
        per_sample = float(np.median(self.eval_s_per_sample)) if self.eval_s_per_sample else 0.0
        return float(np.median(self.step_s)) * steps, per_sample * len(self.trainer.splits.test)

    def model_seconds(self, epochs: float) -> float | None:
        """Predicted seconds to train one finalist for ``epochs`` and evaluate it; None before any fine-tune."""
        m = self._epoch_and_eval()
        return None if m is None else m[0] * epochs + m[1]

    def epochs_that_fit(self, seconds_left: float, n_models: int, planned: float) -> float:
        """``planned`` epochs, or fewer (never below 0.1) if ``n_models`` finals would overrun ``seconds_left``."""
        m = self._epoch_and_eval()
        if m is None or n_models <= 0:
            return planned
        per_epoch, eval_s = m
        fit = (seconds_left / n_models - eval_s) / per_epoch if per_epoch > 0 else planned
        return planned if fit >= planned else max(0.1, round(fit, 2))


def _plan_budget(graph: Graph, trainer: Trainer, cfg: OptimizeConfig,
                 log: Callable[[str], None]) -> tuple[float, float]:
    """Size the final training from a measured step time: returns (final_epochs, seconds per final model).

    Why measure: the budget is the user's promise about wall time, and the final identical-recipe training of
    up to ``final_k + 1`` models is the largest fixed cost. It gets at most half the budget (its epochs shrink
    to fit, never below a tenth of an epoch); the search gets the rest, re-planned after every candidate from
    the number of finalists the current front actually has.
    """
    sec_step = trainer.step_seconds(graph)
    steps_per_epoch = math.ceil(len(trainer.splits.train) / cfg.batch_size)
    n_models = cfg.final_k + 1
    per_epoch = 1.2 * sec_step * steps_per_epoch  # per model; 20% for evaluation and emission
    epochs = float(cfg.final_epochs)
    if per_epoch * epochs * n_models > 0.5 * cfg.budget_seconds:
        epochs = max(0.1, round(0.5 * cfg.budget_seconds / (per_epoch * n_models), 2))
        log(f"final training shortened to {epochs} epochs to fit --budget ({sec_step:.2f}s per step measured)")
    return epochs, per_epoch * epochs


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


def _write_outputs(out_dir: Path, evo: ParetoEvolution, front: list[Candidate], seed: Candidate,
                   best: Candidate, final: dict[str, dict[str, Any]], cfg: OptimizeConfig, store,
                   search_s: float) -> dict[str, Any]:
    from ..modelio import save_model
    from .report import write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".onnx", ".pt", ".py"):
        written += save_model(best.graph, out_dir / f"best{suffix}")

    def row(c: Candidate) -> dict[str, Any]:
        return {"hash": c.hash, "parent": c.parent, "score": c.score, "cost": c.cost, "nodes": len(c.graph),
                "lineage": json.dumps(c.lineage)[:200], **final.get(c.hash, {})}

    points = [row(c) for c in evo.population.values()]
    front_rows = [row(c) for c in front]
    doc = {"objective": cfg.objective, "cost_unit": {"flops": "FLOPs"}.get(cfg.objective, "ms"),
           "ranker": cfg.ranker, "seed": row(seed), "best": row(best), "front": front_rows,
           "finalists": {h: v for h, v in final.items()}, "stats": evo.stats, "search_seconds": search_s,
           "config": cfg.to_json()}
    if evo.screen is not None:
        doc["screen"] = asdict(evo.screen.stats)
    atomic_write_bytes(out_dir / "pareto.json", json.dumps(doc, indent=1, default=str).encode())
    sb, bb = final[seed.hash]["test_accuracy"], final[best.hash]["test_accuracy"]
    summary = {
        "original": f"{seed.cost:.4g} {doc['cost_unit']}, test acc {sb:.4f}",
        "best": f"{best.cost:.4g} {doc['cost_unit']} ({(best.cost / seed.cost - 1) * 100:+.1f}%), test acc {bb:.4f} "
                f"({(bb - sb) * 100:+.2f} points)",
        "candidates scored": len(evo.population), "search time (s)": f"{search_s:.0f}", "ranker": cfg.ranker,
        "dataset": cfg.data, "mutations tried": evo.stats["mutations"],
    }
    if evo.screen is not None:
        st = evo.screen.stats
        summary["PO-NAS screen"] = (f"{evo.stats['screened_out']} proposals not trained; pool {st.pool}, "
                                    f"{st.fits} refits, {st.pretrains} pretrainings; metrics {st.metric_seconds:.0f}s, "
                                    f"surrogate {st.fit_seconds + st.pretrain_seconds:.0f}s")
    write_report(out_dir / "report.html", title="graphopt optimize", summary=summary, points=points,
                 front=front_rows, x="cost", y="score", seed=row(seed), best=row(best), best_graph=best.graph,
                 columns=["hash", "score", "cost", "nodes", "test_accuracy", "parent", "lineage"])
    written += [out_dir / "pareto.json", out_dir / "report.html"]
    return {"best": row(best), "seed": row(seed), "files": [str(p) for p in written], "summary": summary}
