"""Static INT8 QDQ quantization through ``onnxruntime.quantization``, and the checks around it.

Calibration data comes from (in order of preference) a dataset the eval engine knows (``cifar10``,
``cifar10-demo``, an image folder; see :func:`graphopt.eval.data.load_dataset`), an ``.npz`` file with one array
per model input (or a single ``x``; optional labels ``y``), or random inputs -- the last only with a loud warning,
because activation ranges measured on noise can be far from real ones.

Quantization is ``quantize_static`` in QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantized
op, the form NPU toolchains import), per-channel weight scales when the profile asks for them, entropy (KL)
calibration of activation ranges by default, and graph outputs left as the dequantized result of the last int8
op (no final 8-bit re-quantization of the logits). Both defaults were chosen by measurement on the demo
ResNet-20 (graphopt/data/demo_resnet.onnx), 5000 CIFAR-10 test images: top-1 agreement with fp32 98.1% (MinMax,
256 samples, logits re-quantized) -> 98.7% (float outputs) -> 98.9% (plus entropy, 512 samples); percentile,
symmetric activations, per-tensor weights and more MinMax samples did not help. fp16 targets are converted with
onnxruntime's float16 converter instead (inputs/outputs stay fp32).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GraphoptError
from ..ir.graph import Graph
from ..ir.types import DType, TensorType
from .profiles import Profile


class CalibrationError(GraphoptError):
    """Calibration data is missing, unreadable, or does not match the model's inputs."""


@dataclass
class CalibData:
    """Per-sample input feeds (each ``{input name: array with batch 1}``) and optional labels."""

    feeds: list[dict[str, np.ndarray]]
    labels: np.ndarray | None = None
    source: str = ""
    random: bool = False
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.feeds)

    def split(self, n: int) -> tuple[CalibData, CalibData]:
        """First ``n`` samples (calibration) and the rest (evaluation)."""
        a = CalibData(self.feeds[:n], None if self.labels is None else self.labels[:n], self.source, self.random)
        b = CalibData(self.feeds[n:], None if self.labels is None else self.labels[n:], self.source, self.random)
        return a, b


RANDOM_WARNING = ("calibrating on RANDOM inputs: activation ranges measured on noise can be far from real data, "
                  "so int8 accuracy may be poor. Pass --calib DATA (a dataset name such as cifar10, an image "
                  "folder, or an .npz with one array per input) for a real calibration.")


def _input_specs(graph: Graph) -> list[tuple[str, TensorType]]:
    specs = []
    for v in graph.inputs:
        if v.type is None or not v.type.is_static:
            raise CalibrationError(f"input {v.name!r} has no static shape ({v.type}); bind it with --input-shape")
        specs.append((v.name, v.type))
    return specs


def _token_range(graph: Graph, name: str) -> int:
    """For an integer input that indexes a constant table (embeddings), the table size; else 10."""
    for v in graph.inputs:
        if v.name != name:
            continue
        for u in v.uses:
            n = u.node
            if n.op == "gather" and u.index == 1 and n.inputs[0] is not None and n.inputs[0].const is not None:
                return int(n.inputs[0].const.shape[int(n.attrs.get("axis", 0))])
    return 10


def random_calibration(graph: Graph, n: int, seed: int = 0) -> CalibData:
    """Noise for float inputs, token ids within the embedding table for integer ones, all-ones for an integer
    or bool input named like a mask (random 0..9 "masks" would mask out random tokens)."""
    rng = np.random.default_rng(seed)
    feeds = []
    specs = _input_specs(graph)
    for _ in range(n):
        f = {}
        for name, t in specs:
            shape = [int(d) for d in t.shape]  # type: ignore[union-attr]
            if t.dtype.is_float:
                f[name] = rng.standard_normal(shape).astype(t.dtype.to_numpy())
            elif "mask" in name.lower():  # attention masks (as Hugging Face names them): attend to everything
                f[name] = np.ones(shape, dtype=t.dtype.to_numpy())
            elif t.dtype is DType.bool:
                f[name] = rng.integers(0, 2, shape).astype(bool)
            else:
                f[name] = rng.integers(0, _token_range(graph, name), shape).astype(t.dtype.to_numpy())
        feeds.append(f)
    warnings.warn(RANDOM_WARNING, stacklevel=2)
    return CalibData(feeds, None, "random", True, [RANDOM_WARNING])


def load_calibration(spec: str | os.PathLike | None, graph: Graph, *, n: int = 2000, split: str = "test",
                     seed: int = 0) -> CalibData:
    """Samples shaped for ``graph``'s inputs from a dataset name, an image folder, an ``.npz``, or ``random``.

    ``split`` picks the dataset split for named datasets (``test`` for agreement measurements); at most ``n``
    samples are taken (class-balanced, seeded).
    """
    if spec is None or str(spec).lower() == "random":
        return random_calibration(graph, min(n, 64), seed)
    specs = _input_specs(graph)
    text = str(spec)
    p = Path(text).expanduser()
    if p.suffix.lower() == ".npz":
        return _from_npz(p, specs, n)
    from ..eval.data import DataError, load_dataset, prepare_batch

    try:
        ds = load_dataset(text, split, seed=seed, **{f"{split}_size": n})  # type: ignore[call-overload]
    except DataError as e:
        raise CalibrationError(f"--calib {text}: {e}") from e
    if len(specs) != 1:
        raise CalibrationError(f"--calib {text}: the model has {len(specs)} inputs; a dataset feeds one. Pass an "
                               f".npz with one array per input ({', '.join(s[0] for s in specs)})")
    name, t = specs[0]
    x, y = prepare_batch(ds.x, ds.y, ds.info)
    x = x.numpy()
    want = [int(d) for d in t.shape]  # type: ignore[union-attr]
    if list(x.shape[1:]) != want[1:]:
        raise CalibrationError(f"--calib {text}: samples have shape {list(x.shape[1:])} but input {name!r} takes "
                               f"{want[1:]} (per sample); use matching data or an .npz")
    dt = t.dtype.to_numpy()
    feeds = [{name: x[i: i + 1].astype(dt)} for i in range(len(x))]
    labels = y.numpy() if ds.info.task == "classification" else None
    return CalibData(feeds, labels, f"{ds.info.name} ({split} split, {len(feeds)} samples)")


def _from_npz(p: Path, specs: list[tuple[str, TensorType]], n: int) -> CalibData:
    if not p.is_file():
        raise CalibrationError(f"--calib {p}: no such file")
    try:
        z = np.load(p, allow_pickle=False)
        arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise CalibrationError(f"--calib {p}: cannot read .npz ({e})") from e
    names = [s[0] for s in specs]
    if all(nm in arrays for nm in names):
        cols = {nm: arrays[nm] for nm in names}
    elif len(names) == 1 and "x" in arrays:
        cols = {names[0]: arrays["x"]}
    else:
        raise CalibrationError(f"--calib {p}: needs one array per model input named {names} (or 'x' for a single-"
                               f"input model); the file has {sorted(arrays)}")
    count = min(len(a) for a in cols.values())
    feeds = []
    for i in range(min(count, n)):
        f = {}
        for nm, t in specs:
            a = cols[nm]
            want = [int(d) for d in t.shape]  # type: ignore[union-attr]
            sample = a[i: i + 1] if list(a.shape[1:]) == want[1:] else None
            if sample is None:
                raise CalibrationError(f"--calib {p}: array {nm!r} has per-sample shape {list(a.shape[1:])}, the "
                                       f"model's input takes {want[1:]}")
            f[nm] = sample.astype(t.dtype.to_numpy())
        feeds.append(f)
    labels = arrays.get("y")
    return CalibData(feeds, None if labels is None else np.asarray(labels)[: len(feeds)], f"{p} ({len(feeds)} "
                                                                                         f"samples)")


# -------------------------------------------------------------------------------------------- quantization
CALIBRATION_METHODS = ("minmax", "entropy", "percentile", "distribution")


def quantizer_ops() -> frozenset[str]:
    """The ONNX op types :func:`quantize_qdq` quantizes: onnxruntime's default for ``quantize_static`` (its QDQ and
    QLinear registries). Any other op stays in float after quantization, so legalization rewrites it first where
    an exact form made of these ops exists (ReduceMean over H, W -> GlobalAveragePool)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return frozenset(QDQRegistry) | frozenset(QLinearOpsRegistry)


def quantize_qdq(model: Any, calib: CalibData, profile: Profile, *, max_calib: int = 512,
                 method: str = "entropy", percentile: float = 99.999, float_outputs: bool = True,
                 bias_correction: bool = False) -> Any:
    """QDQ-quantize an fp32 ``onnx.ModelProto`` with ``calib`` samples; returns the quantized ModelProto.

    ``method`` picks onnxruntime's calibrator (``minmax``, ``entropy``, ``percentile`` with ``percentile``, or
    ``distribution``). Entropy (KL) clips rare activation outliers that MinMax lets stretch the int8 grid. With
    ``float_outputs`` a QuantizeLinear -> DequantizeLinear pair that only re-quantizes a graph output is removed:
    the output is the last int8 op's result dequantized (what NPUs return for logits from their int32
    accumulators); re-quantizing logits to 8 bits flips close top-1 decisions and buys nothing on the device.
    ``bias_correction`` applies :func:`correct_bias` on the calibration samples.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not calib.feeds:
        raise CalibrationError("no calibration samples")
    if method not in CALIBRATION_METHODS:
        raise GraphoptError(f"calibration method {method!r}: choose one of {', '.join(CALIBRATION_METHODS)}")
    cal_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile, "distribution": CalibrationMethod.Distribution}[method]
    act = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8, "int16": QuantType.QInt16}[profile.activation_dtype]
    wt = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8, "int16": QuantType.QInt16}.get(profile.weight_dtype,
                                                                                           QuantType.QInt8)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib.feeds[:max_calib])

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory(prefix="graphopt-quant-") as d:
        src, dst = Path(d) / "fp32.onnx", Path(d) / "int8.onnx"
        if any(not n.name for n in model.graph.node):  # nodes_to_exclude works by name: name them all
            named = onnx.ModelProto()
            named.CopyFrom(model)
            taken = {n.name for n in named.graph.node}
            for i, n in enumerate(named.graph.node):
                if not n.name:
                    n.name = next(c for c in (f"{n.op_type}_{i}", f"{n.op_type}_{i}_q") if c not in taken)
            model = named
        onnx.save(model, str(src))
        import logging

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # onnxruntime.quantization logs a pre-processing hint on the root logger
        used = method
        # tensors holding +-inf or a float-min mask (Mamba2's causal -inf mask before exp, Hugging Face's
        # finfo.min attention masks) have no int8 grid: the nodes that produce or read them stay float, and
        # since onnxruntime's histogram calibrators cannot bin them at all, the rest of the model is calibrated
        # with MinMax (said in the model's metadata and the report)
        bad = nonfinite_tensors(model, calib.feeds[:4])
        exclude = sorted({n.name for n in model.graph.node if n.name and (set(n.output) | set(n.input)) & bad})
        if bad and method != "minmax":
            used = f"minmax ({method} cannot bin tensors holding +-inf or masks: {len(bad)} such tensors kept float)"
            warnings.warn(f"{len(bad)} calibration tensors hold +-inf or mask values beyond 1e38 "
                          f"({', '.join(sorted(bad)[:3])}...): their "
                          f"{len(exclude)} nodes stay float and the model is calibrated with minmax instead of "
                          f"{method}", stacklevel=2)
            cal_method = CalibrationMethod.MinMax
        def run(method_) -> None:  # noqa: ANN001 - an onnxruntime CalibrationMethod
            # onnxruntime's histogram calibrators print() their progress; keep the user's stdout clean
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                                per_channel=profile.per_channel, activation_type=act, weight_type=wt,
                                calibrate_method=method_, nodes_to_exclude=exclude,
                                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                               "CalibPercentile": float(percentile)})

        try:
            try:
                run(cal_method)
            except ValueError as e:
                # a histogram needs a range it can split into bins: a tensor whose values are all equal or
                # vanish to denormals (randomly initialized deep nets) has none; MinMax has no bins
                if "bins" not in str(e) or cal_method == CalibrationMethod.MinMax:
                    raise
                used = f"minmax ({method} could not bin a tensor with a degenerate range)"
                warnings.warn(f"{method} calibration could not bin a tensor whose values are all equal or "
                              f"denormal ({e}); calibrated with minmax instead", stacklevel=2)
                run(CalibrationMethod.MinMax)
        except Exception as e:  # noqa: BLE001 - re-raised with context
            raise GraphoptError(f"onnxruntime quantize_static failed: {type(e).__name__}: {e}") from e
        finally:
            root.setLevel(level)
        out = onnx.load(str(dst))
    onnx.helper.set_model_props(out, {**{p.key: p.value for p in out.metadata_props},
                                      "graphopt.calibration_method": used})
    if float_outputs:
        strip_output_requantization(out)
    if bias_correction:
        correct_bias(model, out, calib)
    return out


def _outputs_of(model: Any, names: list[str], feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Values of the intermediate tensors ``names`` over ``feeds`` (exposed as extra graph outputs)."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    got: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for f in feeds:
        vals = sess.run(names, {k: v for k, v in f.items() if k in inputs})
        for n, v in zip(names, vals, strict=True):
            got[n].append(np.asarray(v))
    return {n: np.concatenate(v) for n, v in got.items()}


#: magnitudes above this are mask sentinels (``torch.finfo(float32).min`` = -3.4e38 in Hugging Face attention
#: masks), not activations: onnxruntime's histograms overflow on their range. Set just below them, so that huge
#: but finite activations (a placeholder-weight VGG-19's logits reach 1e30+) are still calibrated normally
UNBINNABLE_ABS = 1e38


def nonfinite_tensors(model: Any, feeds: list[dict[str, np.ndarray]]) -> set[str]:
    """Names of the float node outputs that hold NaN, +-inf or a mask sentinel (|x| > :data:`UNBINNABLE_ABS`)
    on any of ``feeds``."""
    names = [o for n in model.graph.node for o in n.output if o]
    if not names or not feeds:
        return set()
    vals = _outputs_of(model, names, feeds)
    with np.errstate(invalid="ignore"):
        return {k for k, v in vals.items()
                if v.dtype.kind == "f" and v.size and not (np.abs(v) <= UNBINNABLE_ABS).all()}


def _requantized(model: Any, name: str) -> str:
    """The tensor the next layer sees for ``name``: ``DequantizeLinear(QuantizeLinear(name))`` if the
    quantizer inserted that pair (its clamp also stands in for a Relu that was folded into the range)."""
    q = next((n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == name), None)
    if q is None:
        return name
    dq = next((n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]), None)
    return name if dq is None else dq.output[0]


def correct_bias(fp32: Any, qdq: Any, calib: CalibData, *, max_samples: int = 128) -> int:
    """Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", section 4.2, empirical variant).

    Weight rounding shifts the mean of every Conv/Gemm output; downstream layers then see a biased input and
    close top-1 decisions flip. For each Conv/Gemm with an int32-quantized bias, in topological order, the
    per-channel mean of (fp32 output - quantized output as the next layer sees it, after its Q/DQ pair) over
    calibration samples is added to the bias
    (requantized with its own scale). Layers are corrected one after another, each measured with the layers
    before it already corrected, so a shift is not corrected twice. Returns how many layers changed.
    Layers without a bias, or whose output name differs between the two models, are left alone.
    """
    from onnx import numpy_helper

    inits = {t.name: t for t in qdq.graph.initializer}
    producers = {o: n for n in qdq.graph.node for o in n.output}
    fp32_names = {o for n in fp32.graph.node for o in n.output}
    feeds = calib.feeds[:max_samples]  # one sample per run: exported graphs usually have a static batch of 1
    todo = []
    for n in qdq.graph.node:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 3 or n.output[0] not in fp32_names:
            continue
        dq = producers.get(n.input[2])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or dq.input[1] not in inits:
            continue
        bq = numpy_helper.to_array(inits[dq.input[0]])
        if bq.dtype != np.int32:
            continue
        todo.append((n, dq, _requantized(qdq, n.output[0])))
    if not todo:
        return 0
    ref = _outputs_of(fp32, [n.output[0] for n, _, _ in todo], feeds)
    changed = 0
    for n, dq, seen in todo:
        out = n.output[0]
        got = _outputs_of(qdq, [seen], feeds)[seen]
        axes = tuple(i for i in range(got.ndim) if i != 1)
        shift = (ref[out].astype(np.float64) - got.astype(np.float64)).mean(axis=axes)
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
        bq = numpy_helper.to_array(inits[dq.input[0]]).astype(np.int64)
        delta = np.round(shift / scale).astype(np.int64)
        if not delta.any():
            continue
        new = np.clip(bq + delta, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
        inits[dq.input[0]].CopyFrom(numpy_helper.from_array(new, dq.input[0]))
        changed += 1
    return changed


def strip_output_requantization(model: Any) -> int:
    """Remove ``y -> QuantizeLinear -> DequantizeLinear -> graph output`` pairs (``y`` used nowhere else) so
    the output is ``y`` itself, keeping its name; returns how many outputs were changed."""
    producers = {o: n for n in model.graph.node for o in n.output}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    out_names = [o.name for o in model.graph.output]
    changed = 0
    for name in out_names:
        dq = producers.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or uses.get(q.output[0], 0) != 1:
            continue
        src = q.input[0]
        p = producers.get(src)
        if p is None or uses.get(src, 0) != 1 or src in out_names or p.op_type == "DequantizeLinear":
            continue
        for i, o in enumerate(p.output):
            if o == src:
                p.output[i] = name
        model.graph.node.remove(dq)
        model.graph.node.remove(q)
        changed += 1
    if changed:  # the removed pairs' scales and zero points (onnxruntime warns about unused initializers)
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        for init in [t for t in model.graph.initializer if t.name not in used]:
            model.graph.initializer.remove(init)
    return changed


def to_fp16(model: Any) -> Any:
    """fp16 weights and activations (graph inputs/outputs stay fp32) for fp16 targets."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True)


# ---------------------------------------------------------------------------------------------- analysis
def float_islands(model: Any) -> list[tuple[str, str]]:
    """Nodes of a QDQ model that compute in float: some float input not from DequantizeLinear, or an output not
    (only) consumed by QuantizeLinear. Shape-only ops (Reshape, Flatten, Squeeze...) are not counted: they move
    int8 data unchanged once a toolchain folds the QDQ pairs around them."""
    import onnx

    q_ops = {"QuantizeLinear", "DequantizeLinear"}
    layout = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Shape"}
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {t.name for t in model.graph.initializer}
    float_types = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        float_types[vi.name] = vi.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    outs = {o.name for o in model.graph.output}
    islands = []
    for n in model.graph.node:
        if n.op_type in q_ops or n.op_type in layout or n.op_type == "Constant":
            continue
        ins_ok = all(
            (not i) or i in inits or (producers.get(i) is not None and producers[i].op_type == "DequantizeLinear")
            or not float_types.get(i, True) for i in n.input)
        outs_ok = all(o in outs or not float_types.get(o, True) or (consumers.get(o) and all(
            c.op_type == "QuantizeLinear" for c in consumers[o])) for o in n.output)
        if not (ins_ok and outs_ok):
            islands.append((n.name or n.output[0], n.op_type))
    return islands


def run_onnx(model: Any, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """First output of ``model`` for each feed (one onnxruntime session)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return [np.asarray(sess.run(None, {k: v for k, v in f.items() if k in names})[0]) for f in feeds]


def agreement(reference: Any, candidate: Any, data: CalibData) -> dict[str, Any]:
    """Top-1 agreement (classification-shaped outputs), accuracy against labels, and output errors."""
    ref = run_onnx(reference, data.feeds)
    cand = run_onnx(candidate, data.feeds)
    out: dict[str, Any] = {"samples": len(ref)}
    errs = [float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) for a, b in zip(ref, cand,
                                                                                           strict=True)]
    out["max_abs_err"] = max(errs) if errs else None
    a = np.concatenate([r.reshape(1, -1) for r in ref]).astype(np.float64)
    b = np.concatenate([c.reshape(1, -1) for c in cand]).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    out["mean_cosine"] = float(np.mean(np.sum(a * b, axis=1) / np.maximum(denom, 1e-30)))
    if ref and ref[0].ndim == 2 and ref[0].shape[0] == 1 and ref[0].shape[1] > 1:
        ta, tb = a.argmax(1), b.argmax(1)
        out["top1_agreement"] = float(np.mean(ta == tb))
        if data.labels is not None and len(data.labels) == len(ta):
            out["fp32_accuracy"] = float(np.mean(ta == data.labels))
            out["quantized_accuracy"] = float(np.mean(tb == data.labels))
    return out


def ort_latency(model: Any, feed: dict[str, np.ndarray], *, runs: int = 20, warmup: int = 3,
                threads: int | None = None) -> dict[str, float]:
    """onnxruntime CPU latency of one input: median / p10 / p90 over ``runs`` timed runs, in ms."""
    import time

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else None
    sess = ort.InferenceSession(data if data is not None else str(model), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    f = {k: v for k, v in feed.items() if k in names}
    for _ in range(warmup):
        sess.run(None, f)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, f)
        ts.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": float(np.median(ts)), "p10_ms": float(np.percentile(ts, 10)),
            "p90_ms": float(np.percentile(ts, 90)), "runs": runs}

