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
from collections.abc import Callable, Iterator, Sequence
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


class LazyFeeds(Sequence):
    """Feeds made when read: sample ``i`` is ``make(start + i)``. Calibrating or evaluating on N samples then
    holds one prepared sample at a time instead of N (512 images of 224 x 224 are 300 MB as float32, and the
    evaluation set comes on top). Slices are views; ``list(feeds)`` materializes them."""

    def __init__(self, make: Callable[[int], dict[str, np.ndarray]], n: int, start: int = 0) -> None:
        self._make, self._n, self._start = make, int(n), int(start)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):  # noqa: ANN001, ANN204 - int or slice, like a list
        if isinstance(i, slice):
            a, b, step = i.indices(self._n)
            if step != 1:
                return [self[j] for j in range(a, b, step)]
            return LazyFeeds(self._make, max(0, b - a), self._start + a)
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"sample {i} of {self._n}")
        return self._make(self._start + i)


@dataclass
class CalibData:
    """Per-sample input feeds (each ``{input name: array with batch 1}``) and optional labels. ``feeds`` is a
    list or a :class:`LazyFeeds` (datasets: prepared on access)."""

    feeds: Sequence[dict[str, np.ndarray]]
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
    want = [int(d) for d in t.shape]  # type: ignore[union-attr]
    dt = t.dtype.to_numpy()

    def make(i: int) -> dict[str, np.ndarray]:
        x, _ = prepare_batch(ds.x[i: i + 1], ds.y[i: i + 1], ds.info)
        return {name: fit_to_input(x, want, name, f"--calib {text}").numpy().astype(dt, copy=False)}

    if len(ds) == 0:
        raise CalibrationError(f"--calib {text}: the {split} split is empty")
    make(0)  # a shape mismatch is reported now, not in the middle of calibration
    labels = ds.y.numpy() if ds.info.task == "classification" else None
    size = list(ds.x.shape[1:3]) if ds.info.task != "sequence" else None
    note = f", resized from {size[0]}x{size[1]} to {want[2]}x{want[3]}" if size and len(want) == 4 and \
        size != want[2:] else ""
    return CalibData(LazyFeeds(make, len(ds)), labels, f"{ds.info.name} ({split} split, {len(ds)} samples{note})")


def fit_to_input(x, want: list[int], name: str, what: str):  # noqa: ANN001, ANN201 - torch tensors
    """Prepared NCHW images -> the model input's per-sample shape ``want[1:]``: resized bilinearly (no corner
    alignment) when only the spatial size differs, as :func:`graphopt.predictors.proxies.passes.proxy_batch` does
    for ``graphopt score``, so a 224-px model calibrates on CIFAR-10 upscaled the way it is scored. Any other
    mismatch (channels, rank) is a :class:`CalibrationError`."""
    import torch.nn.functional as F

    if list(x.shape[1:]) == want[1:]:
        return x
    if x.dim() == 4 and len(want) == 4 and x.shape[1] == want[1] and x.is_floating_point():
        return F.interpolate(x, size=want[2:], mode="bilinear", align_corners=False)
    raise CalibrationError(f"{what}: samples have shape {list(x.shape[1:])} but input {name!r} takes {want[1:]} "
                           f"(per sample); only the image size can be adapted (resized). Use matching data or "
                           f"an .npz")


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


#: default memory for the intermediate tensors one calibration chunk holds (``--calib-memory``)
CALIB_MEMORY_DEFAULT = 256 << 20

ProgressFn = Callable[[str, "int | None", "int | None"], None]


#: op types whose input 2 onnxruntime's QDQ quantizer quantizes as an int32 bias (scale = input x weight scale)
_BIAS_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "InstanceNormalization", "LayerNormalization",
                       "BatchNormalization"})


def unshare_biases(model: Any) -> int:
    """Give each node that reads a shared bias initializer its own copy, under a name no tensor has; returns the
    number of copies made (the model is changed in place).

    A bias's int32 scale depends on the reading node's input scale, so onnxruntime's QDQ quantizer copies a bias
    that several nodes read, naming the copy ``<name><n>`` after checking only initializer names: in a
    torch.onnx (dynamo) export, whose tensors are all ``val_<n>``, a copy of ``val_11`` became ``val_117``, the
    name of an activation, and quantize_static failed ("Quantization parameter shared mode is not supported for
    weight yet"; Hugging Face PoolFormer's GroupNorms, as InstanceNormalization, on ethos-u55-like and
    edgetpu-like)."""
    import onnx

    inits = {t.name: t for t in model.graph.initializer}
    readers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            if i in inits:
                readers[i] = readers.get(i, 0) + 1
    taken = set(inits) | {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    taken |= {t for n in model.graph.node for t in (*n.input, *n.output)}
    copies = 0
    for n in model.graph.node:
        name = n.input[2] if n.op_type in _BIAS_OPS and len(n.input) > 2 else ""
        if name not in inits or readers[name] < 2:  # the last reader keeps the original
            continue
        k = 0
        while f"{name}_bias{k}" in taken:
            k += 1
        t = onnx.TensorProto()
        t.CopyFrom(inits[name])
        t.name = n.input[2] = f"{name}_bias{k}"
        taken.add(t.name)
        model.graph.initializer.append(t)
        readers[name] -= 1
        copies += 1
    return copies


def quantize_qdq(model: Any, calib: CalibData, profile: Profile, *, max_calib: int = 512,
                 method: str = "entropy", percentile: float = 99.999, float_outputs: bool = True,
                 bias_correction: bool = False, calib_memory: int = CALIB_MEMORY_DEFAULT,
                 progress: ProgressFn | None = None, stats: dict[str, Any] | None = None) -> Any:
    """QDQ-quantize an fp32 ``onnx.ModelProto`` with ``calib`` samples; returns the quantized ModelProto.

    ``method`` picks onnxruntime's calibrator (``minmax``, ``entropy``, ``percentile`` with ``percentile``, or
    ``distribution``). Entropy (KL) clips rare activation outliers that MinMax lets stretch the int8 grid. With
    ``float_outputs`` a QuantizeLinear -> DequantizeLinear pair that only re-quantizes a graph output is removed:
    the output is the last int8 op's result dequantized (what NPUs return for logits from their int32
    accumulators); re-quantizing logits to 8 bits flips close top-1 decisions and buys nothing on the device.
    ``bias_correction`` applies :func:`correct_bias` on the calibration samples.

    Memory is bounded: onnxruntime's histogram calibrators keep every intermediate tensor of every sample they
    are fed before histogramming them (ConvNeXt-tiny at 224 px grew past 18 GB on 512 samples), so the samples
    are fed in chunks (onnxruntime's ``CalibStridedMinMax``, which merges the histograms chunk by chunk) of as
    many samples as fit in ``calib_memory`` bytes of intermediates, measured on the first sample. ``progress``
    is called as ``progress(phase, done, total)``; ``stats`` (if given) receives the chunk size and the measured
    bytes of intermediates per sample.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not len(calib.feeds):
        raise CalibrationError("no calibration samples")
    if method not in CALIBRATION_METHODS:
        raise GraphoptError(f"calibration method {method!r}: choose one of {', '.join(CALIBRATION_METHODS)}")
    cal_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile, "distribution": CalibrationMethod.Distribution}[method]
    act = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8, "int16": QuantType.QInt16}[profile.activation_dtype]
    wt = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8, "int16": QuantType.QInt16}.get(profile.weight_dtype,
                                                                                           QuantType.QInt8)
    say = progress or (lambda msg, done=None, total=None: None)
    feeds = calib.feeds[:max_calib]
    n_samples = len(feeds)

    class Reader(CalibrationDataReader):
        """Hands onnxruntime one chunk of samples per ``set_range``; ``len`` is rounded up to whole chunks
        because onnxruntime insists on it (the last chunk is shorter)."""

        def __init__(self, chunk: int) -> None:
            self.chunk, self.pos, self.end, self.done = chunk, 0, n_samples, 0

        def __len__(self) -> int:
            return -(-n_samples // self.chunk) * self.chunk

        def set_range(self, start_index: int, end_index: int) -> None:
            self.pos, self.end = start_index, min(end_index, n_samples)

        def get_next(self):
            if self.pos >= self.end:
                return None
            f = feeds[self.pos]
            self.pos += 1
            self.done += 1
            say("calibrating", self.done, n_samples)
            return f

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
        if any(n.op_type in _BIAS_OPS for n in model.graph.node):
            unshared = onnx.ModelProto()
            unshared.CopyFrom(model)
            if unshare_biases(unshared):
                model = unshared
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
        say("scanning intermediate tensors", None, None)
        scan: dict[str, int] = {}
        bad = nonfinite_tensors(model, feeds[:4], scan)
        per_sample = max(1, scan.get("bytes_per_sample", 1))
        chunk = max(1, min(n_samples, int(calib_memory) // per_sample))
        if stats is not None:
            stats.update(calibration_chunk=chunk, activation_bytes_per_sample=per_sample, calibration_samples=n_samples)
        exclude = sorted({n.name for n in model.graph.node if n.name and (set(n.output) | set(n.input)) & bad}
                         | set(second_moment_nodes(model)))
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
                quantize_static(str(src), str(dst), Reader(chunk), quant_format=QuantFormat.QDQ,
                                per_channel=profile.per_channel, activation_type=act, weight_type=wt,
                                calibrate_method=method_, nodes_to_exclude=exclude,
                                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                               "CalibPercentile": float(percentile),
                                               # despite its name, onnxruntime feeds every calibrator in chunks
                                               # of this many samples and merges their statistics
                                               "CalibStridedMinMax": chunk})

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
        strip_output_requantization(out, model)
    if bias_correction:
        correct_bias(model, out, calib, progress=progress)
    return out


def _with_outputs(model: Any, names: list[str]) -> bytes:
    """``model`` serialized with ``names`` added as graph outputs. The outputs are appended to ``model`` itself
    and removed again, so a multi-GB model is not copied once more in memory (only its serialized bytes)."""
    import onnx

    have = {o.name for o in model.graph.output}
    added = [n for n in dict.fromkeys(names) if n not in have]
    before = len(model.graph.output)
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in added)
    try:
        return model.SerializeToString()
    finally:
        del model.graph.output[before:]


def _iter_outputs(model: Any, names: list[str], feeds: Sequence[dict[str, np.ndarray]]
                  ) -> Iterator[list[np.ndarray]]:
    """The values of the tensors ``names``, one feed at a time (only one sample's intermediates in memory)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(_with_outputs(model, names), so, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    for f in feeds:
        yield [np.asarray(v) for v in sess.run(names, {k: v for k, v in f.items() if k in inputs})]


def _outputs_of(model: Any, names: list[str], feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Values of the intermediate tensors ``names`` over ``feeds`` (exposed as extra graph outputs)."""
    got: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for vals in _iter_outputs(model, names, feeds):
        for n, v in zip(names, vals, strict=True):
            got[n].append(v)
    return {n: np.concatenate(v) for n, v in got.items()}


#: magnitudes above this are mask sentinels (``torch.finfo(float32).min`` = -3.4e38 in Hugging Face attention
#: masks), not activations: onnxruntime's histograms overflow on their range. Set just below them, so that huge
#: but finite activations (a placeholder-weight VGG-19's logits reach 1e30+) are still calibrated normally
UNBINNABLE_ABS = 1e38


def second_moment_nodes(model: Any) -> list[str]:
    """Nodes that compute a normalization's second moment in an ONNX model: the square of a tensor (``Mul(d, d)``
    or ``Pow(d, 2)``) and the chain that reduces it to a scale (mean, ``+ eps``, ``Sqrt``/``Reciprocal``), as
    exported LayerNorm, RMSNorm and GroupNorm decompose.

    Why they stay float: squares span twice the dynamic range of their input, and the per-token variances of a
    transformer differ by orders of magnitude, so one int8 grid per tensor rounds the small ones to zero (measured
    on the vision sweep's ViT: int8 output cosine .92 with them quantized, .99 with these nodes float). Integer
    NPU kernels keep these statistics in int32 for the same reason; the nodes are a tiny share of the FLOPs and
    show up as host nodes in the placement report."""
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    consts = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            consts.setdefault(n.output[0], next((a.t for a in n.attribute if a.name == "value"), None))

    def is_two(name: str) -> bool:
        import onnx.numpy_helper as nh

        t = consts.get(name)
        if t is None and name in producers and producers[name].op_type == "Cast":
            t = consts.get(producers[name].input[0])
        return t is not None and np.size(nh.to_array(t)) == 1 and float(nh.to_array(t).ravel()[0]) == 2.0

    reduce_ops = {"ReduceMean", "GlobalAveragePool", "ReduceSum"}
    chain_ops = reduce_ops | {"Add", "Sqrt", "Reciprocal", "Div", "Mul"}
    out: list[str] = []
    for n in model.graph.node:
        square = (n.op_type == "Mul" and len(n.input) == 2 and n.input[0] == n.input[1]) or (
            n.op_type == "Pow" and len(n.input) == 2 and is_two(n.input[1]))
        if not square:
            continue
        users = consumers.get(n.output[0], [])
        if len(users) != 1 or users[0].op_type not in reduce_ops:
            continue  # a square that is not reduced is not a statistic
        path, cur = [n], users[0]
        while cur is not None and cur.op_type in chain_ops:
            path.append(cur)
            if cur.op_type in ("Sqrt", "Reciprocal"):
                break
            nxt = consumers.get(cur.output[0], [])
            cur = nxt[0] if len(nxt) == 1 else None
        if path[-1].op_type in ("Sqrt", "Reciprocal"):  # up to the scale; the normalized output is quantized
            out.extend(m.name for m in path if m.name)
    return list(dict.fromkeys(out))


def nonfinite_tensors(model: Any, feeds: Sequence[dict[str, np.ndarray]], stats: dict[str, int] | None = None
                      ) -> set[str]:
    """Names of the float node outputs that hold NaN, +-inf or a mask sentinel (|x| > :data:`UNBINNABLE_ABS`)
    on any of ``feeds``; one sample's intermediates in memory at a time. ``stats["bytes_per_sample"]`` receives
    the largest total size of all intermediates of one sample (what calibration keeps per sample)."""
    names = [o for n in model.graph.node for o in n.output if o]
    if not names or not len(feeds):
        return set()
    bad: set[str] = set()
    biggest = 0
    with np.errstate(invalid="ignore"):
        for vals in _iter_outputs(model, names, feeds):
            biggest = max(biggest, sum(v.nbytes for v in vals))
            bad |= {k for k, v in zip(names, vals, strict=True)
                    if k not in bad and v.dtype.kind == "f" and v.size and not (np.abs(v) <= UNBINNABLE_ABS).all()}
            del vals
    if stats is not None:
        stats["bytes_per_sample"] = biggest
    return bad


def _requantized(model: Any, name: str) -> str:
    """The tensor the next layer sees for ``name``: ``DequantizeLinear(QuantizeLinear(name))`` if the
    quantizer inserted that pair (its clamp also stands in for a Relu that was folded into the range)."""
    q = next((n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == name), None)
    if q is None:
        return name
    dq = next((n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]), None)
    return name if dq is None else dq.output[0]


def _channel_means(model: Any, names: list[str], feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel (axis 1) means of the tensors ``names`` over all ``feeds`` and all other axes, accumulated
    one sample at a time in float64 (the same as the mean of the concatenated tensors, without holding them)."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = dict.fromkeys(names, 0)
    for vals in _iter_outputs(model, names, feeds):
        for k, v in zip(names, vals, strict=True):
            axes = tuple(i for i in range(v.ndim) if i != 1)
            s = v.astype(np.float64).sum(axis=axes)
            sums[k] = s if k not in sums else sums[k] + s
            counts[k] += v.size // max(1, v.shape[1])
    return {k: sums[k] / counts[k] for k in sums}


def correct_bias(fp32: Any, qdq: Any, calib: CalibData, *, max_samples: int = 128,
                 progress: ProgressFn | None = None) -> int:
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
    # the mean of a difference is the difference of the means: per-channel means are accumulated sample by
    # sample, so memory does not grow with the samples or the layers
    ref = _channel_means(fp32, [n.output[0] for n, _, _ in todo], feeds)
    changed = 0
    for i, (n, dq, seen) in enumerate(todo):
        if progress is not None:
            progress("bias correction", i, len(todo))
        out = n.output[0]
        shift = ref[out] - _channel_means(qdq, [seen], feeds)[seen]
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
        bq = numpy_helper.to_array(inits[dq.input[0]]).astype(np.int64)
        delta = np.round(shift / scale).astype(np.int64)
        if not delta.any():
            continue
        new = np.clip(bq + delta, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
        inits[dq.input[0]].CopyFrom(numpy_helper.from_array(new, dq.input[0]))
        changed += 1
    return changed


def removable_activations() -> frozenset[str]:
    """Ops onnxruntime's QDQ quantizer drops when the output range of the Q/DQ pair after their input already
    clamps like them (Relu, Clip: its ``QDQRemovableActivation`` registry entries)."""
    from onnxruntime.quantization.operators.activation import QDQRemovableActivation
    from onnxruntime.quantization.registry import QDQRegistry

    return frozenset(k for k, v in QDQRegistry.items() if v is QDQRemovableActivation)


def strip_output_requantization(model: Any, fp32: Any = None) -> int:
    """Remove ``y -> QuantizeLinear -> DequantizeLinear -> graph output`` pairs (``y`` used nowhere else) so
    the output is ``y`` itself, keeping its name; returns how many outputs were changed.

    With the ``fp32`` model, a pair that stands in for a final Relu/Clip the quantizer folded into it (the fp32
    output comes from that activation, the quantized one from the op before it) is kept: stripping it would
    drop the activation (a feature extractor ending in ReLU returned negative values, cosine 0.65 to fp32)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    fp32_ops = {o: n.op_type for n in fp32.graph.node for o in n.output} if fp32 is not None else {}
    folded = removable_activations() if fp32 is not None else frozenset()
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
        if fp32_ops.get(name) in folded and p.op_type != fp32_ops[name]:
            continue  # the pair's clamp is the activation
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


def _session(model: Any) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def run_onnx(model: Any, feeds: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """First output of ``model`` for each feed (one onnxruntime session)."""
    sess = _session(model)
    names = {i.name for i in sess.get_inputs()}
    return [np.asarray(sess.run(None, {k: v for k, v in f.items() if k in names})[0]) for f in feeds]


def agreement(reference: Any, candidate: Any, data: CalibData, progress: ProgressFn | None = None
              ) -> dict[str, Any]:
    """Top-1 agreement (classification-shaped outputs), accuracy against labels, and output errors of the first
    output, sample by sample (no output is kept: per-pixel logits of 1000 samples would be gigabytes)."""
    ref_sess, cand_sess = _session(reference), _session(candidate)
    ref_in, cand_in = {i.name for i in ref_sess.get_inputs()}, {i.name for i in cand_sess.get_inputs()}
    n = len(data.feeds)
    errs, cos, ta, tb = [], [], [], []
    classifier = None
    for i in range(n):
        f = data.feeds[i]
        r = np.asarray(ref_sess.run(None, {k: v for k, v in f.items() if k in ref_in})[0])
        c = np.asarray(cand_sess.run(None, {k: v for k, v in f.items() if k in cand_in})[0])
        a64, b64 = r.astype(np.float64).reshape(-1), c.astype(np.float64).reshape(-1)
        errs.append(float(np.max(np.abs(a64 - b64))) if a64.size else 0.0)
        na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
        # two all-zero outputs agree perfectly; one alone does not agree at all
        cos.append(1.0 if na == nb == 0 else float(a64 @ b64 / max(na * nb, 1e-300)))
        if classifier is None:  # one row of logits: (1, C), or (1, C, 1, 1) from a conv head (SqueezeNet)
            classifier = r.ndim >= 2 and r.shape[0] == 1 and r.shape[1] > 1 and int(np.prod(r.shape[2:])) == 1
        if classifier:
            ta.append(int(a64.argmax()))
            tb.append(int(b64.argmax()))
        if progress is not None:
            progress("comparing int8 with fp32", i + 1, n)
    out: dict[str, Any] = {"samples": n, "max_abs_err": max(errs) if errs else None,
                           "mean_cosine": float(np.mean(cos)) if cos else None,
                           "min_cosine": float(np.min(cos)) if cos else None}
    if classifier and ta:
        a_, b_ = np.asarray(ta), np.asarray(tb)
        out["top1_agreement"] = float(np.mean(a_ == b_))
        if data.labels is not None and len(data.labels) == len(a_):
            out["fp32_accuracy"] = float(np.mean(a_ == data.labels))
            out["quantized_accuracy"] = float(np.mean(b_ == data.labels))
    return out


#: ``--min-agreement`` default: top-1 agreement of int8 with fp32 that a classifier must reach
MIN_AGREEMENT_DEFAULT = 0.9
#: ``--min-cosine`` default: mean cosine similarity of int8 and fp32 outputs for models that are not classifiers
MIN_COSINE_DEFAULT = 0.95


def quality_gate(q: dict[str, Any], min_agreement: float = MIN_AGREEMENT_DEFAULT,
                 min_cosine: float = MIN_COSINE_DEFAULT) -> dict[str, Any]:
    """Whether the int8 model is close enough to fp32: top-1 agreement for classifier outputs, else mean cosine
    similarity. ``min_agreement <= 0`` turns the gate off (``passed`` is then True and ``enforced`` False, but
    ``below`` still says whether the figures fall under the defaults). Returns metric, value, threshold,
    passed, enforced, below."""
    if "top1_agreement" in q:
        metric, value = "top1_agreement", q["top1_agreement"]
        threshold = min_agreement if min_agreement > 0 else MIN_AGREEMENT_DEFAULT
    else:
        metric, value = "mean_cosine", q.get("mean_cosine")
        threshold = min_cosine if min_agreement > 0 else MIN_COSINE_DEFAULT
    enforced = min_agreement > 0
    below = value is None or not np.isfinite(value) or value < threshold
    return {"metric": metric, "value": value, "threshold": threshold, "enforced": enforced,
            "passed": not (enforced and below), "below": bool(below), "samples": q.get("samples")}


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

