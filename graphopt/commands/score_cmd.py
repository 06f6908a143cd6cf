"""``graphopt score``: zero-cost proxy scores of a model; helpers for ``graphopt inspect --proxies``.

Both run the proxies of :mod:`graphopt.predictors.proxies` on the model's IR through
:class:`graphopt.predictors.proxies.passes.GraphProxyNet` (the emitted PyTorch module with its weighted and
activation nodes visible to the proxies' hooks). Inputs come from
:func:`graphopt.predictors.proxies.passes.proxy_batch`: a seeded minibatch of ``--data`` (default the bundled
``cifar10-demo`` for image models), or seeded random inputs of the model's input shape for other models
(label-free proxies only).

A model whose batch is fixed in the file (``float32[1,3,32,32]``, ``torch.onnx.export``'s default) is first relaxed
to a symbolic batch and checked per sample (:mod:`graphopt.passes.relax_batch`), so it is scored at ``--batch``
like any other; one that cannot be relaxed is scored at its own batch, with a warning saying why.

This module also registers the ``proxy-<name>`` passes *lazily* (without importing torch at CLI start-up) so
that ``graphopt passes`` lists them and ``graphopt transform -P proxy-synflow`` runs them; the first run imports
the real passes from :mod:`graphopt.predictors.proxies.passes`, which replace these stubs.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .common import InputShape, ModelArg, console, examples, load_for_cli, out, user_errors

#: Built-in proxies of graphopt.predictors.proxies (kept in sync by a test): the passes are declared from this
#: list so that CLI start-up does not import torch.
BUILTIN_PROXIES = ("grad_norm", "snip", "grasp", "fisher", "synflow", "nwot", "jacob_cov", "zen", "flops", "params")
TOP_NODES = 15


def parse_proxy_list(spec: str) -> list[str]:
    """``"synflow, snip"`` → ``["synflow", "snip"]``; ``"all"`` → every registered proxy. Unknown → error."""
    from ..errors import GraphoptError
    from ..predictors import proxies

    available = proxies.names()
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise GraphoptError(f"--proxy is empty; choose from: {', '.join(available)} (or 'all')")
    if items == ["all"]:
        return available
    unknown = [s for s in items if s not in available]
    if unknown:
        raise GraphoptError(f"unknown proxy {', '.join(map(repr, unknown))}; available: {', '.join(available)} "
                            "(or 'all')")
    return list(dict.fromkeys(items))


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def compute_scores(graph: Any, names: list[str], data: str | None, batch: int, seed: int,
                   errors: dict[str, str] | None = None, device: str = "cpu") -> tuple[dict, Any, Any]:
    """``({name: ProxyResult}, GraphProxyNet, ProxyBatch)`` for ``graph`` (one shared batch for all proxies);
    with ``errors`` a proxy that cannot be computed is reported there instead of raising. The proxies run where
    the module is (``device``; the batch follows it)."""
    from ..predictors.proxies.passes import GraphProxyNet, proxy_batch, score_graph

    pb = proxy_batch(graph, data, batch, seed)
    net = GraphProxyNet(graph).to(device)
    return score_graph(graph, names, pb, seed=seed, net=net, errors=errors), net, pb


def relax_for_scoring(graph: Any, batch: int) -> tuple[Any, int]:
    """``(graph, batch)`` to compute proxies on: a graph whose batch is fixed is relaxed to a symbolic one and
    checked per sample (one line on stderr says so), keeping ``batch``; one that cannot be relaxed is kept with
    its own batch instead, with a warning naming the node. Why: the proxies need many samples at once, which a
    Reshape to ``[1, 512]`` refuses."""
    from ..errors import GraphoptError
    from ..passes.relax_batch import fixed_batch, relax_batch, verify_relaxed

    fixed = fixed_batch(graph)
    if fixed is None:
        return graph, batch
    try:
        relaxed, report = relax_batch(graph)
        verify_relaxed(graph, relaxed, report=report)
    except GraphoptError as e:
        console.print(f"[yellow]warning:[/] {escape(str(e))}; scoring at the file's batch of {fixed}"
                      + (f" instead of {batch}" if batch != fixed else ""), highlight=False, soft_wrap=True)
        return graph, fixed
    console.print(report.describe(), highlight=False, markup=False, soft_wrap=True)
    return relaxed, batch


def warn_constant_nwot(names: list[str], batch: int) -> None:
    """NASWOT's kernel on one sample is the 1x1 matrix [#ReLU units]: its log is the same for any weights."""
    if "nwot" in names and batch == 1:
        console.print("[yellow]warning:[/] nwot (NASWOT) at batch 1 is log(#ReLU units), a constant of the "
                      "architecture that says nothing about the model; use a batch of 2 or more (--batch, default "
                      "64)", highlight=False, soft_wrap=True)


def proxy_summary(graph: Any, spec: str, data: str | None = None, batch: int = 64, seed: int = 0) -> dict:
    """``{proxy: {score, additive, inputs, nodes: [{node, op, value, share_pct}], [unattributed]}}`` for
    ``inspect --proxies``: nodes sorted by |contribution|, ``share_pct`` = 100·|value| / Σ|values| (the plain share
    of the score when all contributions have one sign; grasp's do not), JSON-ready (non-finite numbers as None).
    The graph is annotated as the ``proxy-<name>`` passes would."""
    from ..predictors.proxies.passes import annotate, node_contributions

    names = parse_proxy_list(spec)
    scored, batch = relax_for_scoring(graph, batch)
    warn_constant_nwot(names, batch)
    results, net, pb = compute_scores(scored, names, data, batch, seed)
    ops = {n.name: n.op for n in graph.nodes}
    inputs = pb.source + (f"; {pb.note}" if pb.note else "")
    summary: dict[str, Any] = {}
    for name, r in results.items():
        annotate(scored, name, r, net)
        if scored is not graph:  # the relaxed copy keeps the node names: carry its annotations over
            by_name = {n.name: n for n in graph.nodes}
            key = f"proxy.{name}"
            for n in scored.nodes:
                if n.name in by_name:
                    by_name[n.name].meta.pop(key, None)
                    if key in n.meta:
                        by_name[n.name].meta[key] = n.meta[key]
            for k in (key, f"{key}.unattributed"):
                graph.meta.pop(k, None)
                if k in scored.meta:
                    graph.meta[k] = scored.meta[k]
        entry: dict[str, Any] = {"score": _finite(r.score), "additive": r.additive, "inputs": inputs, "nodes": []}
        if r.additive:
            per, rest = node_contributions(net, r)
            mass = math.fsum(abs(v) for v in per.values())
            for node, v in sorted(per.items(), key=lambda kv: -abs(kv[1])):
                share = abs(v) / mass * 100 if mass and math.isfinite(mass) else None
                entry["nodes"].append({"node": node, "op": ops.get(node, "?"), "value": _finite(v),
                                       "share_pct": None if share is None else _finite(share)})
            if rest:
                entry["unattributed"] = _finite(rest)
        summary[name] = entry
    return summary


def print_proxy_tables(summary: dict, top: int = TOP_NODES) -> None:
    """Rich tables of the per-node contributions in ``summary`` (from :func:`proxy_summary`)."""
    if summary:
        out.print(f"[bold]proxy inputs:[/] {next(iter(summary.values()))['inputs']}", highlight=False)
    for name, e in summary.items():
        score = "nan" if e["score"] is None else f"{e['score']:.6g}"
        if not e["additive"]:
            out.print(f"[bold]{name}[/] = {score}  (not a sum over layers: no per-node contributions)")
            continue
        t = Table("#", "node", "op", "contribution", "share % of Σ|·|",
                  title=f"{name} = {score}: per-node contributions")
        for i, row in enumerate(e["nodes"][:top]):
            share = "-" if row["share_pct"] is None else f"{row['share_pct']:.1f}"
            t.add_row(str(i + 1), escape(row["node"]), row["op"], f"{row['value']:.4g}" if row["value"] is not None
                      else "nan", share)
        if len(e["nodes"]) > top:
            t.add_row("…", f"{len(e['nodes']) - top} more nodes", "", "", "")
        if e.get("unattributed"):
            t.add_row("-", "(no node)", "", f"{e['unattributed']:.4g}", "")
        out.print(t)


def _lazy_pass(proxy: str):  # noqa: ANN202
    def run(graph, data: str | None = None, batch: int = 64, seed: int = 0):  # noqa: ANN001, ANN202
        from ..pass_api import get_pass
        from ..predictors.proxies import passes  # noqa: F401  (registers the real passes, replacing the stubs)

        return get_pass(f"proxy-{proxy.replace('_', '-')}").fn(graph, data=data, batch=batch, seed=seed)

    return run


def register_proxy_passes() -> None:
    """Declare ``proxy-<name>`` for the built-in proxies without importing torch (see module docstring)."""
    from ..pass_api import Pass, PassError, register_pass

    for p in BUILTIN_PROXIES:
        desc = f"{p} zero-cost proxy -> graph.meta['proxy.{p}'] (+ nodes if layerwise); options data, batch, seed"
        try:
            register_pass(Pass(f"proxy-{p.replace('_', '-')}", desc, _lazy_pass(p), ("no_choices",)))
        except PassError:  # the real pass is already registered
            pass


def register(app: typer.Typer) -> None:
    register_proxy_passes()

    @app.command(epilog=examples(
        ("graphopt score model.onnx --proxy synflow,nwot,snip --json", "one JSON object: proxy name to score"),
        ("graphopt score model.onnx --data cifar10 --batch 128 --seed 1", "another minibatch of the full data"),
        ("graphopt score seq.onnx --data assoc_recall --proxy grad_norm,snip --batch 8",
         "a token model on a sequence task"),
        ("graphopt score exported_at_batch1.onnx --proxy synflow,nwot",
         "a fixed batch in the file is relaxed to a symbolic one (checked per sample), then scored at --batch"),
    ))
    @user_errors
    def score(
        model: ModelArg,
        proxy: Annotated[str, typer.Option("--proxy", "-x", help="Comma-separated proxies (synflow, nwot, snip, "
                                                                 "...) or 'all'.")] = "all",
        data: Annotated[str | None, typer.Option(help="Minibatch source: cifar10, cifar10-demo, a sequence task "
                                                      "(assoc_recall, selective_copy) or a path (ImageFolder / "
                                                      ".npz). Default: cifar10-demo for image models, seeded "
                                                      "random inputs otherwise.")] = None,
        batch: Annotated[int, typer.Option(help="Minibatch size.")] = 64,
        device: Annotated[str, typer.Option(help="auto (a CUDA GPU when PyTorch sees one), cpu or cuda.")] = "auto",
        seed: Annotated[int, typer.Option(help="Seed of the minibatch and of the proxies' randomness.")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object {proxy: score} on stdout "
                                                             "(non-finite scores as null).")] = False,
        input_shape: InputShape = None,
        trust_pickle: Annotated[bool, typer.Option(help="Allow pickled .pt modules (runs code from the file).")]
        = False,
    ) -> None:
        """Zero-cost proxy scores of a model (graph level), e.g. --proxy synflow,nwot,snip."""
        from ..predictors import proxies

        names = parse_proxy_list(proxy)
        g = load_for_cli(model, input_shape, trust_pickle)
        g, batch = relax_for_scoring(g, batch)
        warn_constant_nwot(names, batch)
        t0 = time.perf_counter()
        # 'all' means every proxy that applies: one undefined for this model (NASWOT without ReLUs, a proxy
        # needing labels on random inputs) is reported as null with a warning instead of failing the rest
        errors: dict[str, str] | None = {} if proxy.strip() == "all" else None
        from ..search.autogo import resolve_device

        results, _, pb = compute_scores(g, names, data, batch, seed, errors, device=resolve_device(device))
        console.print(f"proxy inputs: {pb.source}" + (f"; {pb.note}" if pb.note else "") +
                      f" ({time.perf_counter() - t0:.1f} s)", highlight=False, markup=False)
        for n, why in (errors or {}).items():
            console.print(f"[yellow]skipped {n}:[/] {escape(why)}", highlight=False, soft_wrap=True)
        scores = {n: _finite(results[n].score) if n in results else None for n in names}
        if as_json:
            sys.stdout.write(json.dumps(scores) + "\n")
            sys.stdout.flush()
            return
        t = Table("proxy", "score", "better", title=f"Zero-cost proxies of {model.name}")
        for n, v in scores.items():
            t.add_row(n, "skipped" if errors and n in errors else "nan" if v is None else f"{v:.6g}",
                      "higher" if proxies.spec(n).higher_is_better else "lower")
        out.print(t)
