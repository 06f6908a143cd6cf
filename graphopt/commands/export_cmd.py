"""``graphopt export``: optimized fp32 ONNX, or NPU-ready INT8 QDQ ONNX for a target profile, plus a report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import InputShape, ModelArg, console, examples, out, user_errors


def register(app: typer.Typer) -> None:
    @app.command("export", epilog=examples(
        ("graphopt export model.onnx -o out.onnx", "default fp32 pipeline, verified against the original"),
        ("graphopt export model.onnx --target generic-npu-int8 --calib cifar10 -o npu.onnx",
         "static shapes, legal ops, folded BN, INT8 QDQ; report in npu.report.md"),
        ("graphopt export model.onnx -t ethos-u55-like --calib images/ -s 1,3,96,96 -o npu.onnx",
         "calibrate on your own image folder, pin the input shape"),
        ("graphopt export model.onnx -t edgetpu-like --calib cifar10 --strict -o npu.onnx",
         "refuse (exit 3) instead of placing nodes the target cannot run on the host"),
        ("graphopt export vit.onnx -t generic-npu-int8 --calib cifar10 --min-agreement 0 -o npu.onnx",
         "write the int8 model even below the quality gate (warned)"),
        ("graphopt export net.onnx -p my_passes:my_pass -o net.onnx", "add your pass after the pipeline"),
    ))
    @user_errors
    def export(
        model: ModelArg,
        output: Annotated[Path, typer.Option("-o", "--output", help="Output .onnx; the report goes beside it "
                                                                    "(OUT.report.md, OUT.report.json).")],
        target: Annotated[str | None, typer.Option("--target", "-t", help="Target profile: a built-in name "
                                                   "(see `graphopt targets`) or a .toml file. Omit for the default "
                                                   "fp32 pipeline.")] = None,
        calib: Annotated[str | None, typer.Option(help="Calibration/evaluation data for int8 targets: cifar10, "
                                                       "cifar10-demo, an image folder, an .npz (one array per "
                                                       "input, or x [+ y]), or 'random' (warned).")] = None,
        input_shape: InputShape = None,
        opset: Annotated[int | None, typer.Option(help="ONNX opset (default 18, or an .onnx input's own opset "
                                                       "when newer, up to 23; clamped into the target's "
                                                       "range).")] = None,
        strict: Annotated[bool, typer.Option("--strict", help="Refuse (exit 3, report only) when any node would "
                                             "run on the host instead of the target. Default: write the model with "
                                             "every node placed on the NPU or the host.")] = False,
        allow_violations: Annotated[bool, typer.Option("--allow-violations", hidden=True, help="Deprecated: "
                                                       "writing despite violations is the default now.")] = False,
        check: Annotated[bool, typer.Option("--verify/--no-verify", help="Compare the fp32 result with the "
                                                                         "original numerically.")] = True,
        print_after: Annotated[list[str] | None, typer.Option("--print-after", help="Dump the graph after this "
                                                              "pass ('all' for every pass).")] = None,
        plugin: Annotated[list[str] | None, typer.Option("-p", "--pass", help="Run your pass(es) after the "
                                                         "optimization pipeline: pkg.mod:fn or pkg.mod.")] = None,
        calib_samples: Annotated[int, typer.Option(help="Calibration samples (at most 512 are used).")] = 512,
        calib_memory: Annotated[int, typer.Option(help="MB of intermediate tensors calibration may hold at once; "
                                                       "samples are fed in chunks that fit. Lower it if the "
                                                       "export says memory will not fit.")] = 256,
        bias_correction: Annotated[bool, typer.Option(
            help="After int8 quantization, correct each Conv/Gemm bias for the mean output shift that weight "
                 "rounding causes (measured on 128 calibration samples; slower export, closer int8 outputs).")
        ] = False,
        eval_samples: Annotated[int, typer.Option(help="Held-out samples for the int8 agreement and the quality "
                                                       "gate.")] = 1000,
        min_agreement: Annotated[float, typer.Option(
            help="INT8 quality gate: the least top-1 agreement of int8 with fp32 (classifier outputs) on held-out "
                 "samples; below it exit 3 and only the report is written. 0 turns the gate off (loud "
                 "warning).")] = 0.9,
        min_cosine: Annotated[float, typer.Option(
            help="INT8 quality gate for outputs that are not class logits: the least mean cosine similarity of "
                 "int8 and fp32 outputs.")] = 0.95,
        latency_runs: Annotated[int, typer.Option(help="onnxruntime timing runs (0 skips the latency "
                                                       "measurement).")] = 20,
    ) -> None:
        """Export MODEL to ONNX: default fp32 optimization, or legalized + INT8 QDQ for --target.

        With --target every node is placed on the NPU or the host and the model is written; the report (and
        the console) lead with the placement summary and list each host node with the constraint it violates
        and the rewrite that would fix it. Exit codes: 0 written; 1 the fp32 result does not reproduce the
        original; 2 bad input (one-line message, nothing written); 3 refused: --strict and some node runs on
        the host, or the int8 model is below the quality gate (--min-agreement / --min-cosine). Only the report
        is written on 1 and 3.
        """
        from ..export import export_model

        with _progress() as say:
            rep = export_model(model, output, target=target, calib=calib, input_shapes=input_shape or None,
                               opset=opset, strict=strict, allow_violations=allow_violations or None,
                               verify=check, print_after=set(print_after or []), pass_modules=plugin or [],
                               calib_samples=calib_samples, eval_samples=eval_samples, latency_runs=latency_runs,
                               bias_correction=bias_correction, min_agreement=min_agreement,
                               min_cosine=min_cosine, calib_memory_mb=calib_memory, out=sys.stdout, progress=say)
        _print_summary(rep, output)
        if not rep.ok:
            raise typer.Exit(rep.exit_code or 1)

    @app.command("targets", epilog=examples(
        ("graphopt targets", "name, opset range, op set and dtypes of each profile"),
    ))
    @user_errors
    def targets() -> None:
        """List the built-in NPU target profiles (graphopt/profiles/*.toml) for `graphopt export --target`."""
        from rich.table import Table

        from ..npu.profiles import available_profiles, load_profile

        t = Table("target", "activations", "opset", "ops", "description / modeled on", title="Target profiles")
        for name in available_profiles():
            p = load_profile(name)
            t.add_row(name, p.activation_dtype, f"{p.opset_min}-{p.opset_max}", str(len(p.ops)),
                      p.description + (f"\nmodeled on: {p.source}" if p.source else ""))
        out.print(t)


class _progress:  # noqa: N801 - used as a context manager like rich's
    """A rich progress line on stderr for the phases of an export: a spinner and the phase, and for the phases
    that count (legalize, fp32 check, calibration, int8 comparison, bias correction) a bar with done/total and
    the elapsed time. Disappears when the export ends, leaving the summary."""

    def __enter__(self):  # noqa: ANN204
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.p = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console, transient=True)
        self.p.__enter__()
        self.msg = "exporting"
        self.task = self.p.add_task(self.msg, total=None)
        return self.update

    def update(self, msg: str, done: int | None = None, total: int | None = None) -> None:
        if msg != self.msg:  # a new phase: its own count and elapsed time (rich cannot unset a total)
            self.p.remove_task(self.task)
            self.msg, self.task = msg, self.p.add_task(escape(msg), total=total)
        self.p.update(self.task, completed=done or 0, total=total)

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.p.__exit__(*exc)


def _print_summary(rep, output: Path) -> None:  # noqa: ANN001 - an ExportReport
    """Placement first (what runs where), then the numerical checks, then what was written and why not."""
    pl = rep.placement
    if pl:
        hosts = pl["host_nodes"]
        color = "green" if not hosts else "yellow"
        console.print(f"[bold {color}]placement:[/] {escape(pl['summary'])}", highlight=False, soft_wrap=True)
        # one line per kind of host node (op + violated rules), with its fix; every node is in the report
        groups: dict[tuple, list] = {}
        for h in hosts:
            groups.setdefault((h["op"], tuple(c["rule"] for c in h["constraints"])), []).append(h)
        for (op, rules), hs in list(groups.items())[:15]:
            names = ", ".join(h["node"] for h in hs[:3]) + (f", ... ({len(hs)} nodes)" if len(hs) > 3 else "")
            console.print(f"  host: {op} [{', '.join(rules)}]: {names}\n    {hs[0]['constraints'][0]['detail']}"
                          f"\n    fix: {hs[0]['fix']}", highlight=False, markup=False, soft_wrap=True)
        if len(groups) > 15:
            console.print(f"  ... {len(groups) - 15} more kinds of host nodes in the report", highlight=False)
        for v in pl.get("input_violations") or []:
            console.print(f"  input {v['node'].removeprefix('input:')}: {v['rule']}: {v['detail']}",
                          highlight=False, markup=False, soft_wrap=True)
    for w in rep.warnings[:10]:
        style = "bold red" if str(w).startswith("INT8 QUALITY GATE OFF") else "yellow"
        console.print(f"[{style}]warning:[/] {escape(str(w))}", highlight=False, soft_wrap=True)
    if rep.fp32:
        fp = rep.fp32
        console.print(f"fp32 check: {'OK' if fp['ok'] else 'MISMATCH'}, max abs err {fp['max_abs_err']:.2g}; "
                      f"output nearest its limit: up to {fp['worst_output_scale']:.3g} in magnitude, off by "
                      f"{fp['max_rel_err']:.2g} of that (allowed {fp['allowed_rel_err']:.2g})", highlight=False)
    q = rep.quantization or {}
    if "top1_agreement" in q:
        console.print(f"int8 top-1 agreement with fp32: {q['top1_agreement']:.2%} on {q['samples']} held-out "
                      f"samples (mean cosine {q['mean_cosine']:.4f})", highlight=False)
    elif q.get("mean_cosine") is not None:
        console.print(f"int8 vs fp32: mean cosine similarity {q['mean_cosine']:.4f} on {q['samples']} held-out "
                      f"samples", highlight=False)
    lat = rep.latency
    if "before" in lat and "after" in lat:
        console.print(f"onnxruntime latency: {lat['before']['median_ms']:.3f} ms -> "
                      f"{lat['after']['median_ms']:.3f} ms (median)", highlight=False)
    mem = rep.memory
    console.print(f"nodes: {rep.nodes_before} -> {rep.nodes_after}" + (
        f"; peak memory {mem['peak_rss_mb']} MB" if mem.get("peak_rss_mb") else "") + (
        f" (calibrated in chunks of {mem['calibration_chunk']})" if mem.get("calibration_chunk") else ""),
        highlight=False)
    if rep.status == "violations":
        console.print(f"[bold red]{len(rep.violations)} violation(s)[/] of {rep.target}:", highlight=False)
        for v in rep.violations[:20]:
            console.print(f"  {v['node']} ({v['op']}): {v['rule']}: {v['detail']}", highlight=False, markup=False,
                          soft_wrap=True)
        if len(rep.violations) > 20:
            console.print(f"  ... {len(rep.violations) - 20} more in the report", highlight=False)
    for f in rep.written:
        out.print(f"wrote {f}", highlight=False)
    if not rep.ok:
        from ..export import _quality_line

        why = {
            "violations": f"--strict: {len(rep.violations)} violation(s) of {rep.target} (drop --strict to write "
                          f"the model with those nodes on the host)",
            "quality-failed": (f"{_quality_line(rep.quality)}, below {rep.quality['threshold']:g} "
                               f"(--min-{'agreement' if rep.quality['metric'] == 'top1_agreement' else 'cosine'}); "
                               f"try {rep.quality.get('advice', '--min-agreement 0')}") if rep.quality
            else "int8 quality gate failed",
        }.get(rep.status, "the exported model does not reproduce the original")
        console.print(f"[bold red]error:[/] {escape(f'{why}; {output} not written')}", highlight=False,
                      soft_wrap=True)
