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
        opset: Annotated[int | None, typer.Option(help="ONNX opset (default 18, clamped into the target's "
                                                       "range).")] = None,
        allow_violations: Annotated[bool, typer.Option("--allow-violations", help="Write the model and exit 0 "
                                                       "even if the target cannot run some nodes.")] = False,
        check: Annotated[bool, typer.Option("--verify/--no-verify", help="Compare the fp32 result with the "
                                                                         "original numerically.")] = True,
        print_after: Annotated[list[str] | None, typer.Option("--print-after", help="Dump the graph after this "
                                                              "pass ('all' for every pass).")] = None,
        plugin: Annotated[list[str] | None, typer.Option("-p", "--pass", help="Run your pass(es) after the "
                                                         "optimization pipeline: pkg.mod:fn or pkg.mod.")] = None,
        calib_samples: Annotated[int, typer.Option(help="Calibration samples.")] = 512,
        bias_correction: Annotated[bool, typer.Option(
            help="After int8 quantization, correct each Conv/Gemm bias for the mean output shift that weight "
                 "rounding causes (measured on 128 calibration samples; slower export, closer int8 outputs).")
        ] = False,
        eval_samples: Annotated[int, typer.Option(help="Samples for the int8 top-1 agreement.")] = 1000,
        latency_runs: Annotated[int, typer.Option(help="onnxruntime timing runs (0 skips the latency "
                                                       "measurement).")] = 20,
    ) -> None:
        """Export MODEL to ONNX: default fp32 optimization, or legalized + INT8 QDQ for --target.

        Exit codes: 0 written; 1 violations remain (without --allow-violations) or the fp32 check failed -- only
        the report is written then; 2 bad input (one-line message, nothing written).
        """
        from ..export import export_model

        with console.status("exporting") as status:
            rep = export_model(model, output, target=target, calib=calib, input_shapes=input_shape or None,
                               opset=opset, allow_violations=allow_violations, verify=check,
                               print_after=set(print_after or []), pass_modules=plugin or [],
                               calib_samples=calib_samples, eval_samples=eval_samples, latency_runs=latency_runs,
                               bias_correction=bias_correction,
                               out=sys.stdout, progress=lambda m: status.update(m))
        for w in rep.warnings[:10]:
            console.print(f"[yellow]warning:[/] {escape(str(w))}", highlight=False, soft_wrap=True)
        if rep.fp32:
            fp = rep.fp32
            console.print(f"fp32 check: {'OK' if fp['ok'] else 'MISMATCH'}, max abs err {fp['max_abs_err']:.2g}; "
                          f"output nearest its limit: up to {fp['worst_output_scale']:.3g} in magnitude, off by "
                          f"{fp['max_rel_err']:.2g} of that (allowed {fp['allowed_rel_err']:.2g})", highlight=False)
        if rep.quantization and "top1_agreement" in rep.quantization:
            console.print(f"int8 top-1 agreement with fp32: {rep.quantization['top1_agreement']:.2%} on "
                          f"{rep.quantization['samples']} samples", highlight=False)
        lat = rep.latency
        if "before" in lat and "after" in lat:
            console.print(f"onnxruntime latency: {lat['before']['median_ms']:.3f} ms -> "
                          f"{lat['after']['median_ms']:.3f} ms (median)", highlight=False)
        console.print(f"nodes: {rep.nodes_before} -> {rep.nodes_after}", highlight=False)
        if rep.violations:
            console.print(f"[bold red]{len(rep.violations)} violation(s)[/] of {rep.target}:", highlight=False)
            for v in rep.violations[:20]:
                console.print(f"  {v['node']} ({v['op']}): {v['rule']}: {v['detail']}", highlight=False, markup=False,
                              soft_wrap=True)
            if len(rep.violations) > 20:
                console.print(f"  ... {len(rep.violations) - 20} more in the report", highlight=False)
        for f in rep.written:
            out.print(f"wrote {f}", highlight=False)
        if not rep.ok:
            why = "violations remain (use --allow-violations to write the model anyway)" if rep.status == \
                "violations" else "the exported model does not reproduce the original"
            console.print(f"[bold red]error:[/] {escape(f'{why}; {output} not written')}", highlight=False)
            raise typer.Exit(1)

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
