"""``graphopt profile`` (measured latency + per-node times from onnxruntime's profiler) and ``graphopt latency``
(predicted latency per target, with the per-kernel breakdown; ``latency fit`` trains a target's predictor).

The engines live in :mod:`graphopt.predictors.latency` (see docs/latency.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from .common import InputShape, ModelArg, console, examples, load_for_cli, out, user_errors

TOP = 15


class _LatencyGroup(TyperGroup):
    """``graphopt latency MODEL ...`` is ``graphopt latency predict MODEL ...``."""

    def parse_args(self, ctx, args):  # noqa: ANN001, ANN201 - click API
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["predict", *args]
        return super().parse_args(ctx, args)


def _fmt_ms(ms: float) -> str:
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def register(app: typer.Typer) -> None:
    @app.command("profile", epilog=examples(
        ("graphopt profile model.onnx", "median latency and spread, and the ops where the time goes"),
        ("graphopt profile model.onnx --runs 100 --nodes", "more runs; one row per IR node"),
        ("graphopt profile model.onnx --threads 2 --json", "two intra-op threads; machine-readable"),
        ("graphopt profile mynet.py:Net -s 1,3,224,224", "PyTorch source at a fixed input shape"),
    ))
    @user_errors
    def profile(
        model: ModelArg,
        threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads.")] = 1,
        runs: Annotated[int, typer.Option(help="Timed runs (each of the plain and the profiling session).")] = 40,
        warmup: Annotated[int, typer.Option(help="Untimed runs first.")] = 5,
        rounds: Annotated[int, typer.Option(help="Alternations of plain and profiled runs.")] = 4,
        nodes: Annotated[bool, typer.Option("--nodes", help="One row per IR node (time, or what it was fused "
                                                            "into / folded).")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")] = False,
        input_shape: InputShape = None,
        trust_pickle: Annotated[bool, typer.Option(help="Allow pickled .pt modules (runs code from the file).")]
        = False,
    ) -> None:
        """Measure onnxruntime latency on this machine, with per-node times from onnxruntime's own profiler mapped
        onto the IR nodes (fused kernels attributed to their main node).

        Symbolic dims are bound to 1 (or pass --input-shape). The model measured is the one graphopt emits from
        its IR (what `graphopt export` writes before passes).
        """
        from ..errors import GraphoptError
        from ..predictors.latency.measure import profile_graph

        if threads < 1 or runs < 1 or rounds < 1 or warmup < 0:
            raise GraphoptError(f"--threads {threads}, --runs {runs}, --rounds {rounds} must be >= 1 and --warmup "
                                f"{warmup} >= 0; e.g. --threads 1 --runs 40")
        g = load_for_cli(model, input_shape, trust_pickle)
        res = profile_graph(g, threads=threads, runs=runs, warmup=warmup, rounds=min(rounds, runs),
                            name=str(model))
        if as_json:
            out.print_json(json.dumps(res.to_dict()))
            return
        out.print(f"[bold]{escape(str(model))}[/]: {_fmt_ms(res.latency_ms)} ms median over {res.runs} runs "
                  f"(p10 {_fmt_ms(res.p10_ms)}, p90 {_fmt_ms(res.p90_ms)}, IQR {100 * res.iqr_rel:.1f} %), "
                  f"{threads} thread(s); load average {', '.join(f'{x:.2f}' for x in res.load_avg)}")
        if res.cpu_ms is not None:
            out.print(f"quiet latency (median CPU time of a run, other processes' time slices left out): "
                      f"{_fmt_ms(res.cpu_ms)} ms")
        out.print(f"profiler: kernels sum to {_fmt_ms(res.kernel_sum_ms)} ms (a profiled run takes "
                  f"{_fmt_ms(res.profiled_ms)} ms); IR nodes: "
                  + ", ".join(f"{v} {k}" for k, v in res.status_counts().items()))
        by_op: dict[str, float] = {}
        ops = {n.name: n.op for n in g.nodes}
        for name, us in res.node_us.items():
            by_op[ops.get(name, name)] = by_op.get(ops.get(name, name), 0.0) + us
        total = sum(by_op.values()) or 1.0
        t = Table("op", "µs", "share", title="Time by IR op (profiler)")
        for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])[:TOP]:
            t.add_row(escape(op), f"{us:.1f}", f"{100 * us / total:.1f} %")
        out.print(t)
        k = Table("µs", "onnxruntime nodes", "IR nodes", title=f"Top {TOP} kernels")
        for kern in res.kernels[:TOP]:
            k.add_row(f"{kern['us']:.1f}", escape(", ".join(f"{n} ({o})" for n, o in
                                                             zip(kern["ort_nodes"], kern["ort_ops"], strict=True))),
                      escape(", ".join(kern["ir_nodes"][:6]) + (" ..." if len(kern["ir_nodes"]) > 6 else "")))
        out.print(k)
        if nodes:
            nt = Table("#", "node", "op", "µs", "status", title="IR nodes")
            for i, n in enumerate(g.nodes if res.node_status.keys() >= {x.name for x in g.nodes} else []):
                nt.add_row(str(i), escape(n.name), n.op, f"{res.node_us.get(n.name, 0.0):.1f}",
                           escape(res.node_status.get(n.name, "?")))
            out.print(nt)

    latency = typer.Typer(cls=_LatencyGroup, no_args_is_help=True,
                          help="Predicted latency per target (learned per-kernel predictors or the analytic NPU "
                               "estimate). `graphopt latency MODEL --target T` is short for `graphopt latency "
                               "predict MODEL --target T`.")

    @latency.command("predict", epilog=examples(
        ("graphopt latency predict model.onnx --target cpu-ort", "onnxruntime on this CPU, 1 thread"),
        ("graphopt latency predict model.onnx --target edgetpu-like --nodes", "every kernel, and which run off "
                                                                             "the NPU"),
        ("graphopt latency predict model.onnx -t pixel3 --json", "machine-readable breakdown"),
        ("graphopt latency predict model.onnx -t my_device.json", "a predictor you fitted"),
    ))
    @user_errors
    def predict(
        model: ModelArg,
        target: Annotated[str, typer.Option("--target", "-t", help="A fitted target (cpu-ort, edgetpu-like, "
                                                                   "pixel3, raspi4, edgegpu), an NPU profile "
                                                                   "(analytic), or a predictor .json; see "
                                                                   "`graphopt latency targets`.")],
        nodes: Annotated[bool, typer.Option("--nodes", help="One row per kernel (all of them).")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the prediction as JSON.")] = False,
        input_shape: InputShape = None,
        trust_pickle: Annotated[bool, typer.Option(help="Allow pickled .pt modules (runs code from the file).")]
        = False,
    ) -> None:
        """Predicted latency of a model on a target, with the per-kernel breakdown (where the time goes, and
        which kernels run off the NPU)."""
        from ..predictors.latency import load_target

        pred_obj = load_target(target)  # unknown targets fail before the model is loaded
        g = load_for_cli(model, input_shape, trust_pickle)
        pred = pred_obj.predict(g)
        if as_json:
            out.print_json(json.dumps({"model": str(model), **pred.to_dict()}))
            return
        out.print(f"[bold]{escape(str(model))}[/] on [bold]{escape(pred.target)}[/] ({escape(pred.device)}): "
                  f"[bold]{_fmt_ms(pred.total_ms)} ms[/] predicted ({pred.method}; {len(pred.kernels)} kernels, "
                  f"per-run overhead {_fmt_ms(pred.overhead_ms)} ms)")
        for note in pred.notes:
            console.print(f"note: {escape(note)}")
        if pred.off_npu:
            out.print(f"[yellow]{len(pred.off_npu)} node(s) run off the NPU[/] (host): "
                      + escape(", ".join(pred.off_npu[:10]) + (" ..." if len(pred.off_npu) > 10 else "")))
        total = pred.total_ms or 1.0
        t = Table("op", "ms", "share", title="Time by kernel op")
        for op, ms in list(pred.by_op().items())[:TOP]:
            t.add_row(escape(op), _fmt_ms(ms), f"{100 * ms / total:.1f} %")
        out.print(t)
        shown = pred.kernels if nodes else sorted(pred.kernels, key=lambda k: -k.ms)[:TOP]
        kt = Table("kernel", "ops", "ms", "share", "where", title="Kernels" if nodes else f"Top {TOP} kernels")
        for k in shown:
            where = "" if k.on_npu is None else ("NPU" if k.on_npu else "[yellow]host[/]")
            kt.add_row(escape(k.name), escape("+".join(k.ops)), _fmt_ms(k.ms), f"{100 * k.ms / total:.1f} %",
                       where + ("" if k.seen else " (extrapolated)"))
        out.print(kt)

    @latency.command("targets", epilog=examples(
        ("graphopt latency targets", "fitted predictors and NPU profiles priced analytically"),
    ))
    @user_errors
    def targets() -> None:
        """List the latency targets."""
        from ..predictors.latency import available_targets

        t = Table("target", "predicts", title="Latency targets")
        for name, desc in available_targets().items():
            t.add_row(escape(name), escape(desc))
        out.print(t)

    @latency.command("fit", epilog=examples(
        ("graphopt latency fit --target edgetpu-like", "Edge TPU from HW-NAS-Bench, class-disjoint NB201 split"),
        ("graphopt latency fit --target pixel3 -o pixel3.json", "write the predictor elsewhere"),
        ("graphopt latency fit --target cpu-ort --samples 400", "sample, measure and fit kernels on this CPU"),
        ("graphopt latency fit --target cpu-ort --from-samples s.json -o mine.json",
         "refit from measurements saved by an earlier fit (no new measurement)"),
    ))
    @user_errors
    def fit(
        target: Annotated[str, typer.Option("--target", "-t", help="cpu-ort (this machine, onnxruntime), or a "
                                                                   "HW-NAS-Bench device: edgetpu-like, pixel3, "
                                                                   "raspi4, edgegpu.")],
        output: Annotated[Path | None, typer.Option("-o", "--output", help="Predictor .json (default: the "
                                                    "shipped one for the target).")] = None,
        samples: Annotated[int, typer.Option(help="cpu-ort: sampled networks to measure.")] = 400,
        runs: Annotated[int, typer.Option(help="cpu-ort: timed runs per sampled network.")] = 12,
        data: Annotated[Path | None, typer.Option(help="HW-NAS-Bench CSV (default: the shared "
                                                       "nas/zccombine_hw_cifar10.csv).")] = None,
        train_fraction: Annotated[float, typer.Option(help="HW-NAS-Bench: share of networks (whole equivalence "
                                                           "classes) on the training side.")] = 0.5,
        seed: Annotated[int, typer.Option(help="Seed of the split or of the sampler.")] = 0,
        from_samples: Annotated[Path | None, typer.Option("--from-samples", help="cpu-ort: refit from the "
                                                          "measurements a previous fit saved (its JSON).")] = None,
    ) -> None:
        """Fit a target's latency predictor: cpu-ort from kernels it samples and measures on this machine,
        HW-NAS-Bench devices from the measured NB201 latencies (class-disjoint split; the held-out side is only
        evaluated, by benchmarks/latency.py)."""
        from ..errors import GraphoptError
        from ..predictors.latency import DATA_DIR
        from ..predictors.latency.fit_hwnas import TARGET_OF_DEVICE

        device_of = {v: k for k, v in TARGET_OF_DEVICE.items()}
        if target not in device_of and target != "cpu-ort":
            raise GraphoptError(f"--target {target!r} cannot be fitted; choose cpu-ort or one of "
                                f"{', '.join(device_of)}")
        if not 0 < train_fraction < 1:
            raise GraphoptError(f"--train-fraction {train_fraction} must be between 0 and 1, e.g. 0.5")
        dest = output or DATA_DIR / f"{target}.json"
        if target == "cpu-ort":
            from ..predictors.latency.fit_cpu import fit_cpu_ort_selected, load_samples, measure_samples
            from ..predictors.nb201_dataset import default_cache_dir

            if from_samples is not None:
                if not from_samples.exists():
                    raise GraphoptError(f"--from-samples {from_samples}: no such file; a cpu-ort fit saves its "
                                        f"measurements under {default_cache_dir()}")
                recs = load_samples(from_samples)
            else:
                if samples < 10:
                    raise GraphoptError(f"--samples {samples}: need at least 10 sampled networks, e.g. --samples 400")
                save = default_cache_dir() / f"cpu_ort_samples_seed{seed}_n{samples}_runs{runs}.json"
                recs = measure_samples(samples, seed=seed, runs=runs, save=save, progress=lambda i, n, s: console.print(
                    f"  measured {i}/{n} sampled networks ({s:.0f} s)") if i % 25 == 0 or i == n else None)
                console.print(f"measurements saved to {save} (refit with --from-samples)")
            pred, rep = fit_cpu_ort_selected(recs, seed=seed, log=lambda s: console.print(s, markup=False))
        else:
            from ..predictors.latency.fit_hwnas import fit_hwnas

            console.print("building/loading NB201 kernel features (first run: ~25 min, then cached)...")
            try:
                pred, rep = fit_hwnas(device_of[target], csv=str(data) if data else None,
                                      train_fraction=train_fraction, seed=seed,
                                      log=lambda s: console.print("  " + s, markup=False))
            except FileNotFoundError as e:
                raise GraphoptError(str(e)) from None
        pred.save(dest)
        out.print(f"wrote {dest}")
        out.print_json(json.dumps(rep, default=str))

    app.add_typer(latency, name="latency")
