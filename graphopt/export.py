"""The export pipeline behind ``graphopt export``: optimize, legalize for a target, quantize, check, write.

Without a target it runs :func:`default_pipeline` -- semantics-preserving passes only (constant and shape folding,
dropout/identity removal, BatchNorm and per-channel affine folding, transpose/reshape/slice chain folding,
MatMul+Add -> Gemm, attention head split/merge folding into weights, scalar-scale folding, parallel
MatMul merging, Pad fusion, LayerNorm/Softmax fusion, constant de-duplication) -- and checks the fp32 result
against the original. With ``target`` it also binds static shapes, legalizes the graph for the profile, quantizes
to INT8 QDQ (or converts to fp16), measures top-1 agreement, and lists every remaining violation.

With a target, every node is placed (:mod:`graphopt.npu.placement`): on the NPU when it meets the profile, on
the host when it still violates it after legalization; the model is written and the report leads with the
placement summary. ``strict=True`` refuses instead (only the report is written). After INT8 quantization the
int8 outputs are compared with fp32 on held-out samples, and a model below ``min_agreement`` (top-1 agreement
of classifiers; ``min_cosine`` mean cosine for other outputs) is refused too; ``min_agreement=0`` only warns.

Nothing half-written lands on disk: the model and the report are written (atomically) only after every step
succeeded; a refused model leaves only its report.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .errors import GraphoptError
from .ir.graph import Graph
from .npu.report import ExportReport, onnx_histogram

FOLD_MAX_ELEMENTS = 1 << 28
"""Constant folding limit for export (elements per folded tensor): large enough for VGG's FC weights."""


def default_pipeline(opset: int = 18, profile: Any = None) -> str:
    """The default fp32 export pipeline for ``opset`` (fusions into ops the opset lacks are left out).

    With a target ``profile``, so are fusions that introduce an op the target does not accept (a pass's
    ``emits``): no legalizer turns ``fold-head-merge``'s per-head MatMul + ReduceSum back into a Gemm.
    """
    from .pass_api import get_pass

    fold = f"fold-constants[max_elements={FOLD_MAX_ELEMENTS}]"
    fusions = ["fuse-channel-affine", "fuse-preceding-mul", "fold-elementwise", "fuse-pad", "fuse-slices",
               "fuse-reshapes", "fold-softmax-flatten", "fold-head-split", "fold-head-merge", "fold-matmul-scale",
               "merge-parallel-matmuls", "fuse-matmul-add", "fuse-softmax"]
    if opset >= 17:
        fusions.append("fuse-layernorm")
    if opset >= 20:
        fusions.append("fuse-gelu")
    if opset >= 23:
        fusions.append("fuse-attention")
    if profile is not None:
        from .npu.legalize import accepts

        fusions = [f for f in fusions if all(accepts(profile, o) for o in get_pass(f).emits)]
    return (f"(canonicalize,{fold},strip-dropout,cse,dce)*,fuse-conv-bn,"
            f"({','.join(fusions)},canonicalize,{fold},dedup-constants,cse,dce)*,convert-opset[opset={opset}]")


def _progress_fn(progress: Any) -> Any:
    """``progress(msg, done, total)``; a callback that takes only ``msg`` (the older form) gets only that."""
    import inspect

    if progress is None:
        return lambda msg, done=None, total=None: None
    try:
        params = inspect.signature(progress).parameters.values()
        takes3 = any(p.kind is p.VAR_POSITIONAL for p in params) or len(list(params)) >= 3
    except (TypeError, ValueError):
        takes3 = False
    if takes3:
        return lambda msg, done=None, total=None: progress(msg, done, total)
    return lambda msg, done=None, total=None: progress(msg if done is None else f"{msg} {done}/{total}")


def report_paths(output: Path) -> tuple[Path, Path]:
    """``out.onnx`` -> ``out.report.md``, ``out.report.json``."""
    stem = output.with_suffix("")
    return stem.with_name(stem.name + ".report.md"), stem.with_name(stem.name + ".report.json")


def export_model(
    model: Any,
    output: str | os.PathLike,
    *,
    target: str | None = None,
    calib: str | None = None,
    input_shapes: dict[str, list[int | str]] | list[str] | None = None,
    opset: int | None = None,
    allow_violations: bool | None = None,
    strict: bool = False,
    min_agreement: float | None = None,
    min_cosine: float | None = None,
    calib_memory_mb: int | None = None,
    verify: bool = True,
    print_after: set[str] | None = None,
    pass_modules: list[str] | None = None,
    calib_samples: int = 512,
    bias_correction: bool = False,
    eval_samples: int = 1000,
    latency_runs: int = 20,
    out: TextIO | None = None,
    progress: Any = None,
) -> ExportReport:
    """Export ``model`` (a path, ``onnx.ModelProto`` or IR ``Graph``) to ``output`` (``.onnx``); see module doc.

    ``pass_modules`` (``pkg.mod:fn`` or ``pkg.mod``) are loaded and their passes run after the optimization
    pipeline, before legalization. Raises :class:`GraphoptError`/``PassError`` for bad input or a failing pass
    (nothing written); returns the report otherwise. ``report.ok`` is False (and ``report.exit_code`` non-zero)
    when the fp32 check failed, when ``strict`` and some node violates the target, or when the int8 model is
    below the quality gate (``min_agreement`` top-1 agreement for classifiers, default 0.9; ``min_cosine`` mean
    cosine similarity for other outputs, default 0.95; ``min_agreement=0`` turns the gate off with a warning).
    ``allow_violations`` is the old opt-in to writing despite violations, now the default; it conflicts with
    ``strict``. ``calib_memory_mb`` bounds the intermediate tensors calibration holds at once (default 256).
    """
    from .ir.verify import verify as verify_ir
    from .modelio import is_python_spec, load_model, parse_input_shapes
    from .npu import memory
    from .npu.profiles import load_profile
    from .npu.quantize import CALIB_MEMORY_DEFAULT, MIN_AGREEMENT_DEFAULT, MIN_COSINE_DEFAULT
    from .pass_api import load_pass_module
    from .pass_manager import PassManager

    t0 = time.perf_counter()
    memory.reset_peak()
    say = _progress_fn(progress)
    output = Path(output)
    if strict and allow_violations:
        raise GraphoptError("--strict and --allow-violations contradict each other: --strict refuses a model with "
                            "host-placed nodes, --allow-violations writes it (the default); pass one")
    gate = {"min_agreement": MIN_AGREEMENT_DEFAULT if min_agreement is None else float(min_agreement),
            "min_cosine": MIN_COSINE_DEFAULT if min_cosine is None else float(min_cosine)}
    if not 0 <= gate["min_agreement"] <= 1 or not -1 <= gate["min_cosine"] <= 1:
        raise GraphoptError(f"--min-agreement {gate['min_agreement']} / --min-cosine {gate['min_cosine']}: "
                            f"choose 0..1 (0 turns the int8 quality gate off)")
    calib_memory = CALIB_MEMORY_DEFAULT if calib_memory_mb is None else int(calib_memory_mb) << 20
    if calib_memory < 1 << 20:
        raise GraphoptError(f"--calib-memory {calib_memory_mb}: give at least 1 (MB)")
    if output.suffix.lower() != ".onnx":
        raise GraphoptError(f"-o {output}: export writes ONNX; give a path ending in .onnx")
    profile = load_profile(target) if target else None
    if profile is not None:
        if opset is not None and not profile.opset_min <= opset <= profile.opset_max:
            raise GraphoptError(f"--opset {opset} is outside {profile.name}'s range {profile.opset_min}.."
                                f"{profile.opset_max}")
        export_opset = profile.export_opset(opset)
    else:
        export_opset = 18 if opset is None else int(opset)
        if not 11 <= export_opset <= 23:
            raise GraphoptError(f"--opset {export_opset}: choose 11..23")
    user_passes = []
    for spec in pass_modules or []:
        user_passes += load_pass_module(spec)

    say("loading")
    label = str(model) if not isinstance(model, Graph) else model.name
    is_onnx_file = isinstance(model, str | os.PathLike) and str(model).lower().endswith(".onnx")
    if isinstance(input_shapes, list) and is_python_spec(model):  # the shapes build the example inputs

        graph = load_model(model, input_shapes=parse_input_shapes(input_shapes, [""]))  # "" = the only input
    elif isinstance(input_shapes, list):  # CLI specs ("x=1,3,32,32" or a bare "1,3,32,32" for one input)
        from .ir.infer import set_input_shapes

        graph = load_model(model)
        if input_shapes:
            set_input_shapes(graph, parse_input_shapes(input_shapes, [v.name for v in graph.inputs]))
    else:
        graph = load_model(model, input_shapes=input_shapes)
    verify_ir(graph)
    orig_graph = graph.copy()
    io_names = [v.name for v in graph.outputs]
    rep = ExportReport(model=label, output=str(output), target=profile.name if profile else None,
                       profile=profile.summary() if profile else None, opset=export_opset, strict=bool(strict))
    rep.nodes_before = len(graph)
    if is_onnx_file:
        import onnx

        original = onnx.load(str(model), load_external_data=False)
        rep.ops_before = onnx_histogram(original)
        rep.nodes_before = len(original.graph.node)
        if profile is None and opset is None:  # keep a newer file's ops: at 18, Gelu (opset 20) is 5 nodes
            own = max((o.version for o in original.opset_import if o.domain in ("", "ai.onnx")), default=18)
            export_opset = rep.opset = max(18, min(23, int(own)))
    else:
        rep.ops_before = _ir_histogram(graph)

    # ------------------------------------------------------------------ optimize (and bind shapes for targets)
    pipeline = default_pipeline(export_opset, profile)
    if profile is not None and profile.static_shapes:
        pipeline = f"specialize-shapes[default={profile.batch}]," + pipeline
    say("optimizing")
    pm = PassManager(pipeline, verify_ir=True, print_after=print_after, out=out or sys.stderr)
    if user_passes:
        pm.items += [*user_passes, *PassManager("dce").items]
    res = pm.run(graph)
    graph = res.graph
    rep.passes = [{"name": k, **v} for k, v in res.summary().items()]

    # ------------------------------------------------------------------------------------------ legalize
    if profile is not None:
        from .npu.legalize import legalize

        say(f"legalizing for {profile.name}")
        lr = legalize(graph, profile, progress=lambda i, n: say(f"legalizing for {profile.name}", i, n))
        verify_ir(graph)
        rep.rewrites = [r.to_dict() for r in lr.rewrites]
        rep.violations = [v.to_dict() for v in lr.violations]
        rep.warnings += lr.warnings
    _restore_output_names(graph, io_names)

    # --------------------------------------------------------------------------------------- emit + check
    from .backends.onnx import EXTERNAL_DATA_THRESHOLD

    say("writing ONNX")
    # past protobuf's 2 GB the model only exists as a file plus external data: it is written to a temporary
    # folder beside the output, checked and timed from there, and moved into place at the end
    big = sum(np.asarray(v.const).nbytes for v in graph.constants.values()
              if v.const is not None) > EXTERNAL_DATA_THRESHOLD
    if big and profile is not None and (profile.quantized or profile.activation_dtype == "fp16"):
        raise GraphoptError(f"{label}: more than {EXTERNAL_DATA_THRESHOLD / 1024**3:.1f} GB of weights; "
                            f"{profile.name} needs {profile.activation_dtype} conversion, which graphopt does not do "
                            f"for models past protobuf's 2 GB limit. Export without --target (fp32, external data)")
    if profile is not None and profile.quantized and not any(n.op == "quantize_linear" for n in graph.nodes):
        # before any of the expensive steps: will calibration fit in memory, and if not, what to lower
        est = memory.estimate_int8(graph, min(calib_samples, 512), calib_memory)
        rep.memory.update({"estimate_mb": round((memory.current_rss() + est["estimate"]) / memory.MB),
                           "available_mb": None if est["available"] is None else round(
                               (memory.current_rss() + est["available"]) / memory.MB),
                           "weights_mb": round(est["weights"] / memory.MB, 1),
                           "activations_per_sample_mb": round(est["activations_per_sample"] / memory.MB, 2),
                           "calib_memory_mb": calib_memory >> 20})
        if not est["fits"]:
            raise GraphoptError(
                f"{label}: INT8 export would need about {rep.memory['estimate_mb']} MB (weights "
                f"{rep.memory['weights_mb']:.0f} MB held ~{memory.WEIGHT_COPIES:.0f}x, "
                f"{rep.memory['activations_per_sample_mb']:.0f} MB of intermediates per calibration sample x "
                f"{est['chunk']} per chunk) but about {rep.memory['available_mb']} MB is available: "
                f"{est['advice']}")
    output.parent.mkdir(parents=True, exist_ok=True)
    stash = tempfile.TemporaryDirectory(prefix=".graphopt-export-", dir=output.parent) if big else None
    try:
        return _emit_check_write(graph, output, rep, profile, stash, export_opset, calib, calib_samples,
                                 eval_samples, bias_correction, bool(strict), gate, calib_memory, verify,
                                 latency_runs, label, model if is_onnx_file else None, orig_graph, say, t0)
    finally:
        if stash is not None:
            stash.cleanup()


def _emit_check_write(graph: Graph, output: Path, rep: ExportReport, profile: Any, stash: Any, export_opset: int,
                      calib: str | None, calib_samples: int, eval_samples: int, bias_correction: bool,
                      strict: bool, gate: dict[str, float], calib_memory: int, verify: bool, latency_runs: int,
                      label: str, onnx_path: Any, orig_graph: Graph, say: Any, t0: float) -> ExportReport:
    """Emit ONNX, check it against the original, quantize for the target, time it and write it (atomically).

    ``stash`` is a temporary folder for models past 2 GB (None otherwise): ``fp32_file`` is then the path every
    onnxruntime session loads, since such a ModelProto cannot be serialized in memory."""
    from .backends.onnx import to_onnx

    fp32_model = to_onnx(graph, opset=export_opset, path=None if stash is None else Path(stash.name) / output.name)
    fp32_file: Any = fp32_model if stash is None else str(Path(stash.name) / output.name)
    calib_data = eval_data = None
    # a model quantized by another tool (QDQ already in it): quantizing it again would stack a second QDQ
    # layer on the first (onnxruntime then rejects the duplicate node names); its quantization is kept
    prequantized = sum(n.op == "quantize_linear" for n in graph.nodes)
    if profile is not None and profile.quantized and prequantized:
        msg = (f"{label} is already quantized ({prequantized} QuantizeLinear nodes): its QDQ is kept as is"
               + (f", --calib {calib} is not used" if calib else ""))
        rep.warnings.append(msg)
    if profile is not None and profile.quantized and not prequantized:
        say("loading calibration data")
        calib_data, eval_data = _calibration_sets(calib, graph, calib_samples, eval_samples)
        if calib_data.random:
            rep.warnings.append("calibration used RANDOM inputs (no --calib): int8 accuracy is not meaningful")
    if verify:
        say("checking fp32 numerics")
        approx = sorted({r["legalizer"] for r in rep.rewrites if r.get("approximate")})
        rep.fp32 = _fp32_check(onnx_path if onnx_path is not None else orig_graph, fp32_file, graph, eval_data,
                               approx, say)
        if not rep.fp32["ok"]:
            rep.ok = False
            rep.status = "verify-failed"
    final = fp32_model
    islands: list[tuple[str, str]] = []
    if profile is not None and profile.quantized and prequantized:
        from .npu.quantize import float_islands

        islands = float_islands(final)
        rep.quantization = {"format": "QDQ", "calibration": "kept from the input model (already quantized)",
                            "quantize_nodes": prequantized, "float_islands": islands}
        _flag_islands(rep, profile, islands)
    elif profile is not None and profile.quantized:
        from .npu.quantize import agreement, float_islands, quality_gate, quantize_qdq

        assert calib_data is not None and eval_data is not None
        qstats: dict[str, Any] = {}

        def qsay(msg: str, done: int | None = None, total: int | None = None) -> None:
            # onnxruntime quantizes right after the last calibration sample, without telling us
            say(msg, done, total)
            if msg == "calibrating" and done == total:
                say("quantizing (onnxruntime QDQ)")

        final = quantize_qdq(fp32_model, calib_data, profile, bias_correction=bias_correction,
                             calib_memory=calib_memory, progress=qsay, stats=qstats)
        rep.memory.update({"calibration_chunk": qstats.get("calibration_chunk"),
                           "measured_activations_per_sample_mb": round(
                               qstats.get("activation_bytes_per_sample", 0) / (1 << 20), 2)})
        islands = float_islands(final)
        q = {"format": "QDQ", "activation_dtype": profile.activation_dtype, "weight_dtype": profile.weight_dtype,
             "per_channel": profile.per_channel, "calibration": calib_data.source,
             "calibration_method": next((p.value for p in final.metadata_props
                                         if p.key == "graphopt.calibration_method"), "entropy"),
             "bias_correction": bias_correction,
             "outputs": "dequantized int8 result (no output re-quantization)",
             "calibration_samples": len(calib_data), "evaluation": eval_data.source,
             "evaluation_samples": len(eval_data)}
        q.update(agreement(fp32_model, final, eval_data, progress=say))
        q["float_islands"] = islands
        rep.quantization = q
        _flag_islands(rep, profile, islands)
        rep.quality = quality_gate(q, gate["min_agreement"], gate["min_cosine"])
        tips = ["calibrate on real data (--calib cifar10, an image folder or an .npz)"] if calib_data.random else []
        if len(calib_data) < 512:
            tips.append(f"more --calib-samples (used {len(calib_data)})")
        if not bias_correction:
            tips.append("--bias-correction")
        rep.quality["advice"] = ", ".join(tips + ["or --min-agreement 0 to write it anyway"])
        if rep.quality["below"] and not rep.quality["enforced"]:
            rep.warnings.insert(0, f"INT8 QUALITY GATE OFF: {_quality_line(rep.quality)}, below the default "
                                   f"{rep.quality['threshold']:g}: the int8 model is written but it is not a faithful "
                                   f"copy of the fp32 model")
    elif profile is not None and profile.activation_dtype == "fp16":
        from .npu.quantize import to_fp16

        final = to_fp16(fp32_model)
    rep.ops_after = onnx_histogram(final)
    rep.nodes_after = len(final.graph.node)
    if profile is not None:
        from .npu.placement import place

        pl = place(graph, profile, rep.violations, islands)
        rep.placement = pl.to_dict()

    if latency_runs > 0:
        say("measuring onnxruntime latency")
        rep.latency = _latency(onnx_path, orig_graph, final if stash is None else fp32_file, eval_data, export_opset,
                               latency_runs)

    if rep.ok and rep.violations and strict:
        rep.ok, rep.status = False, "violations"
    elif rep.ok and rep.quality is not None and not rep.quality["passed"]:
        rep.ok, rep.status = False, "quality-failed"
    elif rep.ok and rep.placement and rep.placement["host_nodes"]:
        rep.status = "host-fallback"
    rep.exit_code = {"verify-failed": 1, "violations": 3, "quality-failed": 3}.get(rep.status, 0)

    # ------------------------------------------------------------------------------------------- write
    from .ir.serialize import atomic_write_bytes

    md, js = report_paths(output)
    if rep.ok and stash is not None:  # data file first, then the model that points at it
        data_name = f"{output.name}.data"
        os.replace(Path(stash.name) / data_name, output.parent / data_name)
        os.replace(Path(stash.name) / output.name, output)
        rep.written += [str(output), str(output.parent / data_name)]
    elif rep.ok:
        data = final.SerializeToString()
        atomic_write_bytes(output, data)
        del data
        rep.written.append(str(output))
    rep.written += [str(md), str(js)]
    from .npu import memory

    rep.memory["peak_rss_mb"] = round(memory.peak_rss() / memory.MB)
    rep.seconds = time.perf_counter() - t0
    atomic_write_bytes(js, rep.to_json().encode())
    atomic_write_bytes(md, rep.to_markdown().encode())
    return rep


# ---------------------------------------------------------------------------------------------- helpers
def _quality_line(q: dict[str, Any]) -> str:
    what = "top-1 agreement" if q["metric"] == "top1_agreement" else "mean cosine similarity"
    val = "n/a" if q["value"] is None else (f"{q['value']:.1%}" if q["metric"] == "top1_agreement"
                                            else f"{q['value']:.3f}")
    return f"int8 {what} with fp32 is {val} on {q['samples']} held-out samples"


def _flag_islands(rep: ExportReport, profile: Any, islands: list[tuple[str, str]]) -> None:
    """Ops left in float after quantization run on the host: a violation or a warning, as the profile says."""
    if not islands or profile.float_fallback == "allow":
        return
    if profile.float_fallback == "error":
        rep.violations += [{"node": n, "op": o, "rule": "float_fallback",
                            "detail": "not quantized (runs in float)"} for n, o in islands]
    else:
        rep.warnings.append(f"{len(islands)} ops stay in float after quantization (host fallback): " + ", ".join(
            f"{n} ({o})" for n, o in islands[:10]))


def _ir_histogram(graph: Graph) -> dict[str, int]:
    from .npu.legalize import onnx_type

    return dict(sorted(Counter(onnx_type(n.op) for n in graph.nodes).items()))


def _restore_output_names(graph: Graph, names: list[str]) -> None:
    """Passes may forward a graph output to another value (``x -> Dropout -> out`` becomes ``x``); give the
    outputs their original names back so consumers of the exported file find them."""
    live = {v.name for v in graph.values()}
    for v, want in zip(graph.outputs, names, strict=False):
        if v.name == want or want in live or v.producer is None:
            continue
        live.discard(v.name)
        v.name = want
        graph._names.add(want)  # noqa: SLF001 - keep the graph's name table in sync
        live.add(want)


def _calibration_sets(calib: str | None, graph: Graph, n_calib: int, n_eval: int):
    """(calibration, evaluation) sets: dataset train/test splits, an .npz split in two, or random."""
    from .npu.quantize import load_calibration, random_calibration

    if calib is None or str(calib).lower() == "random":
        c = random_calibration(graph, min(n_calib, 64))
        e = random_calibration(graph, min(n_eval, 64), seed=1)
        return c, e
    if str(calib).lower().endswith(".npz"):
        data = load_calibration(calib, graph, n=n_calib + n_eval)
        if len(data) <= 1:
            return data, data
        n = min(n_calib, max(1, len(data) // 2)) if len(data) < n_calib + 8 else n_calib
        c, e = data.split(n)
        return c, e
    c = load_calibration(calib, graph, n=n_calib, split="train")
    e = load_calibration(calib, graph, n=n_eval, split="test")
    return c, e


def _fp32_check(reference: Any, fp32_model: Any, graph: Graph, data: Any, approximate: list[str],
                say: Any = None) -> dict[str, Any]:
    """``approximate``: the approximate rewrites legalization made; they are held to ``APPROX_RTOL`` instead of
    the ``RTOL`` that ``convert`` and every exact export use."""
    from .compare import APPROX_RTOL, ATOL, RTOL, prepare_model, random_inputs
    from .compare import verify as numeric_verify

    rtol = APPROX_RTOL if approximate else RTOL

    # one session / module per model for every input set below (a 3.2 GB model took ten session loads), and only
    # one model in memory at a time: the reference's outputs are computed first and the reference is freed
    reference = prepare_model(reference)

    if data is not None and len(data):
        feeds = data.feeds[:8]
        inputs_list = [[f[v.name] for v in graph.inputs] for f in feeds]
        source = data.source
    else:
        types = [v.type for v in graph.inputs]
        inputs_list = [random_inputs(types, seed=s, sym_value=1) for s in range(2)]  # type: ignore[arg-type]
        source = "random N(0,1) inputs"
        if any(t is not None and t.symbols() for t in types):
            # symbolic dims bound to 1 alone hide sequence bugs (softmax over one token, masks of one
            # position): also check at 5 when the original model accepts it (it may not: H/W of a conv stem)
            wider = random_inputs(types, seed=2, sym_value=5)  # type: ignore[arg-type]
            if _runs(reference, wider):
                inputs_list.append(wider)
                source += " (symbolic dims = 1 and 5)"
            else:
                source += " (symbolic dims = 1)"
    from .compare import run_model

    say = say or (lambda msg, done=None, total=None: None)
    ref_outs = []
    for i, inputs in enumerate(inputs_list):
        say("checking fp32 numerics (original)", i, len(inputs_list))
        ref_outs.append(run_model(reference, [np.asarray(x) for x in inputs]))
    scale = max((float(np.max(np.abs(o))) for outs in ref_outs for o in outs
                 if o.size and np.issubdtype(o.dtype, np.number)), default=0.0)
    del reference
    fp32_model = prepare_model(fp32_model)
    # errors relative to each output's scale (graphopt.compare.verify)
    worst_abs, worst, ok = 0.0, None, True
    for i, (inputs, outs) in enumerate(zip(inputs_list, ref_outs, strict=True)):
        say("checking fp32 numerics (exported)", i, len(inputs_list))
        r = numeric_verify(None, fp32_model, inputs, rtol=rtol, reference_outputs=outs)
        worst_abs = max([worst_abs] + [d.max_abs for d in r.outputs])
        w = r.worst
        if w is not None and (worst is None or _margin(w, rtol) > _margin(worst, rtol)):
            worst = w
        ok &= r.ok
    tolerance = f"per output, max abs err <= {rtol:g} x max|output| + {ATOL:g}"
    if approximate:
        tolerance += f" (widened from {RTOL:g} for the approximate rewrites {', '.join(approximate)})"
    return {"ok": bool(ok), "max_abs_err": worst_abs, "output_max_abs": scale,
            # the output nearest its limit: its error as a fraction of its scale, and the fraction allowed
            "max_rel_err": worst.max_rel if worst else 0.0, "allowed_rel_err": worst.allowed_rel if worst else rtol,
            "worst_output_scale": worst.scale if worst else 0.0,
            "inputs": f"{len(inputs_list)} x {source}", "tolerance": tolerance}


def _margin(d: Any, rtol: float) -> float:
    """How close an output came to failing the fp32 check (1 = at the limit)."""
    from .compare import ATOL

    return d.max_abs / (rtol * d.scale + ATOL)


def _runs(model: Any, inputs: list) -> bool:
    from .compare import run_model

    try:
        run_model(model, [np.asarray(x) for x in inputs])
    except Exception:  # noqa: BLE001 - the model does not take these shapes
        return False
    return True


def _latency(original_path: Any, orig_graph: Graph, final: Any, data: Any, opset: int, runs: int) -> dict:
    from .backends.onnx import to_onnx
    from .compare import random_inputs
    from .npu.quantize import ort_latency

    if data is not None and len(data):
        feed = data.feeds[0]
    else:
        types = [v.type for v in orig_graph.inputs]
        feed = {v.name: x for v, x in zip(orig_graph.inputs, random_inputs(types, sym_value=1), strict=True)}
    out: dict[str, Any] = {}
    try:
        before_model = str(original_path) if original_path is not None else to_onnx(orig_graph,
                                                                                  opset=max(opset, 18))
        out["before"] = ort_latency(before_model, feed, runs=runs)
    except Exception as e:  # noqa: BLE001 - e.g. symbolic dims the feed does not fit
        out["before_error"] = f"{type(e).__name__}: {e}"
    out["after"] = ort_latency(final, feed, runs=runs)
    if "before" in out:
        out["ratio_after_before"] = out["after"]["median_ms"] / max(out["before"]["median_ms"], 1e-9)
    return out
