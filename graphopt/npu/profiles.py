"""NPU target profiles: what a target accepts, as validated TOML data (``graphopt/profiles/*.toml``).

A profile names the ONNX ops the target runs, with attribute limits per op, plus target-wide rules (opset range,
maximum rank, static shapes, activation dtype, channel alignment, maximum tensor size). It is data, not code, so
a new target is a new file: pass its path to ``--target`` or drop it in ``graphopt/profiles/``.

Schema (every key is checked; an unknown key or a wrong type is an error naming the file and the key)::

    [target]
    name = "generic-npu-int8"          # must match the file stem for built-ins
    description = "..."
    source = "document the limits are modeled on"   # "" for synthetic profiles
    opset = [13, 18]                   # accepted ONNX opset range; export uses the highest in range <= --opset
    max_rank = 4                       # no tensor of higher rank
    max_effective_rank = 4             # dims before the innermost N must be 1 (Edge TPU: 3)
    static_shapes = true               # symbolic dims are bound (batch = `batch`) before legalization
    batch = 1
    activation_dtype = "int8"          # int8 | uint8 | int16 | fp16 | fp32; int types => QDQ quantization
    weight_dtype = "int8"
    per_channel = true                 # per-output-channel weight scales
    channel_alignment = 16             # preferred channel multiple (reported; padded when pad_channels)
    pad_channels = false
    max_tensor_bytes = 8388608         # largest activation at activation_dtype
    max_dim = 65535                    # largest single dimension
    float_fallback = "warn"            # ops left in float after quantization: "allow" | "warn" | "error"
    fuse_conv_add_act = false          # target has Conv(+residual Add)(+activation) as one op (exported as
                                       # com.microsoft::FusedConv; limits of [ops.Conv] apply to it)

    [perf]                             # optional: the roofline used by npu.latency.estimate_latency
    macs_per_cycle = 512               # int8 MACs per cycle of the MAC array
    clock_mhz = 800
    bandwidth_gbps = 8.0               # external memory bandwidth, GB/s
    vector_ops_per_cycle = 64          # element-wise / LUT unit throughput
    host_gflops = 20.0                 # the host CPU that runs ops the target does not accept
    fallback_overhead_us = 50.0        # per hand-over to the host and back

    [ops]
    allow = ["Relu", "Add", ...]       # ops accepted without limits

    [ops.Conv]                         # an op with limits (implicitly allowed)
    kernel_max = 7                     # each spatial kernel dim (or [h, w])
    kernel_area_max = 4096             # product of dilated kernel dims
    stride_max = 3
    dilation_max = 1
    pad_max = 3
    group = ["standard", "depthwise"]  # standard (1), depthwise (group == C_in), grouped (anything else)
    channels_max = 8192                # input and output channels
    axis = [-1]                        # allowed values of the `axis` attribute (negative = from the end)
    op_axes = "spatial"                # axes the op may act on (reduced / padded / sliced / permuted / the
                                       # axis of concat-split-gather-softmax): any | spatial | last | non-batch
    step_max = 1                       # Slice: largest step
    input_numel_max = 16000
    max_rank = 3
    const_inputs = [1, 2]              # input slots that must be compile-time constants
    attrs = { mode = ["nearest", "linear"] }   # allowed attribute values
    notes = "free text shown in reports"
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import GraphoptError

ACTIVATION_DTYPES = ("int8", "uint8", "int16", "fp16", "fp32")
FALLBACK_MODES = ("allow", "warn", "error")
GROUP_KINDS = ("standard", "depthwise", "grouped")
OP_AXES = ("any", "spatial", "last", "non-batch")

_TARGET_KEYS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    # key: (accepted types, default)
    "name": (str, None),
    "description": (str, ""),
    "source": (str, ""),
    "opset": (list, [11, 23]),
    "max_rank": (int, 8),
    "max_effective_rank": (int, None),
    "static_shapes": (bool, True),
    "batch": (int, 1),
    "activation_dtype": (str, "int8"),
    "weight_dtype": (str, "int8"),
    "per_channel": (bool, True),
    "channel_alignment": (int, 1),
    "pad_channels": (bool, False),
    "max_tensor_bytes": (int, None),
    "max_dim": (int, None),
    "float_fallback": (str, "warn"),
    "fuse_conv_add_act": (bool, False),
}

_OP_KEYS: dict[str, type | tuple[type, ...]] = {
    "kernel_max": (int, list),
    "kernel_area_max": int,
    "stride_max": int,
    "dilation_max": int,
    "pad_max": int,
    "group": list,
    "channels_max": int,
    "axis": list,
    "op_axes": str,
    "step_max": int,
    "input_numel_max": int,
    "max_rank": int,
    "const_inputs": list,
    "attrs": dict,
    "notes": str,
}

IMPLICIT_OPS = ("QuantizeLinear", "DequantizeLinear")
"""Accepted by every quantized target (they are how the quantized graph is expressed)."""


class ProfileError(GraphoptError):
    """A profile file is missing, not valid TOML, or violates the schema; the message names file and key."""


@dataclass(frozen=True)
class OpLimits:
    """Limits on one ONNX op type (all optional; ``None`` = unlimited)."""

    op: str
    kernel_max: tuple[int, ...] | None = None
    kernel_area_max: int | None = None
    stride_max: int | None = None
    dilation_max: int | None = None
    pad_max: int | None = None
    group: tuple[str, ...] | None = None
    channels_max: int | None = None
    axis: tuple[int, ...] | None = None
    op_axes: str = "any"
    step_max: int | None = None
    input_numel_max: int | None = None
    max_rank: int | None = None
    const_inputs: tuple[int, ...] = ()
    attrs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    notes: str = ""


_PERF_KEYS: dict[str, float] = {
    # key: default (a generic edge NPU: 512 int8 MAC/cycle at 800 MHz ~ 0.8 TOPS, LPDDR4-class bandwidth)
    "macs_per_cycle": 512.0,
    "clock_mhz": 800.0,
    "bandwidth_gbps": 8.0,
    "vector_ops_per_cycle": 64.0,
    "host_gflops": 20.0,
    "fallback_overhead_us": 50.0,
}


@dataclass(frozen=True)
class Perf:
    """Throughput figures for the analytic latency estimate (see :mod:`graphopt.npu.latency`)."""

    macs_per_cycle: float = 512.0
    clock_mhz: float = 800.0
    bandwidth_gbps: float = 8.0
    vector_ops_per_cycle: float = 64.0
    host_gflops: float = 20.0
    fallback_overhead_us: float = 50.0


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    source: str
    opset_min: int
    opset_max: int
    max_rank: int
    max_effective_rank: int | None
    static_shapes: bool
    batch: int
    activation_dtype: str
    weight_dtype: str
    per_channel: bool
    channel_alignment: int
    pad_channels: bool
    max_tensor_bytes: int | None
    max_dim: int | None
    float_fallback: str
    ops: dict[str, OpLimits]
    fuse_conv_add_act: bool = False
    path: str = ""
    perf: Perf = field(default_factory=Perf)

    @property
    def quantized(self) -> bool:
        return self.activation_dtype in ("int8", "uint8", "int16")

    @property
    def activation_itemsize(self) -> int:
        return {"int8": 1, "uint8": 1, "int16": 2, "fp16": 2, "fp32": 4}[self.activation_dtype]

    def allows(self, onnx_op: str) -> bool:
        return onnx_op in self.ops or (self.quantized and onnx_op in IMPLICIT_OPS)

    def export_opset(self, requested: int | None = None) -> int:
        """The opset to export at: the requested one (default 18) clamped into the profile's range."""
        want = 18 if requested is None else int(requested)
        return max(self.opset_min, min(self.opset_max, want))

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "source": self.source,
                "opset": [self.opset_min, self.opset_max], "activation_dtype": self.activation_dtype,
                "ops": len(self.ops), "path": self.path}


# ---------------------------------------------------------------------------------------------- loading
def builtin_dir() -> Path:
    return Path(str(resources.files("graphopt") / "profiles"))


def available_profiles() -> dict[str, Path]:
    """Built-in profiles by name (file stem)."""
    d = builtin_dir()
    return {p.stem: p for p in sorted(d.glob("*.toml"))} if d.is_dir() else {}


def load_profile(name_or_path: str | Path) -> Profile:
    """A built-in profile by name, or a TOML file by path; unknown names list the available ones."""
    text = str(name_or_path)
    p = Path(text).expanduser()
    builtins = available_profiles()
    if text in builtins:
        p = builtins[text]
    elif not (p.suffix == ".toml" or p.exists()):
        close = difflib.get_close_matches(text, list(builtins), n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ProfileError(f"unknown target profile {text!r}.{hint} Available: {', '.join(builtins) or '(none)'}; "
                           f"or pass the path of a .toml profile")
    if not p.is_file():
        raise ProfileError(f"{p}: profile file not found. Available built-in profiles: {', '.join(builtins)}")
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{p}: not valid TOML ({e})") from e
    except UnicodeDecodeError as e:
        raise ProfileError(f"{p}: not a UTF-8 text file ({e})") from e
    return parse_profile(doc, str(p))


def parse_profile(doc: dict[str, Any], where: str = "<profile>") -> Profile:
    """Validate a parsed TOML document and build the :class:`Profile`."""
    unknown = set(doc) - {"target", "ops", "perf"}
    if unknown:
        raise ProfileError(f"{where}: unknown top-level table(s) {sorted(unknown)}; a profile has [target], [ops] "
                           f"and optionally [perf]")
    tgt = doc.get("target")
    if not isinstance(tgt, dict):
        raise ProfileError(f"{where}: missing [target] table")
    vals: dict[str, Any] = {}
    for k, v in tgt.items():
        if k not in _TARGET_KEYS:
            raise ProfileError(f"{where}: [target] has unknown key {k!r}{_suggest(k, _TARGET_KEYS)}; "
                               f"allowed: {', '.join(_TARGET_KEYS)}")
        types = _TARGET_KEYS[k][0]
        if isinstance(v, bool) and types is int or not isinstance(v, types):
            raise ProfileError(f"{where}: [target] {k} must be {_type_name(types)}, got {v!r}")
        vals[k] = v
    for k, (_, default) in _TARGET_KEYS.items():
        vals.setdefault(k, default)
    if not vals["name"]:
        raise ProfileError(f"{where}: [target] needs a name")
    opset = vals["opset"]
    if len(opset) != 2 or not all(isinstance(o, int) and not isinstance(o, bool) for o in opset) \
            or not 7 <= opset[0] <= opset[1]:
        raise ProfileError(f"{where}: [target] opset must be [min, max] with 7 <= min <= max, got {opset!r}")
    _one_of(where, "activation_dtype", vals["activation_dtype"], ACTIVATION_DTYPES)
    _one_of(where, "weight_dtype", vals["weight_dtype"], ACTIVATION_DTYPES)
    _one_of(where, "float_fallback", vals["float_fallback"], FALLBACK_MODES)
    for k in ("max_rank", "channel_alignment", "batch", "max_tensor_bytes", "max_dim", "max_effective_rank"):
        if vals[k] is not None and vals[k] < 1:
            raise ProfileError(f"{where}: [target] {k} must be >= 1, got {vals[k]}")
    ops = _parse_ops(doc.get("ops", {}), where)
    if not ops:
        raise ProfileError(f"{where}: [ops] allows no op; list them in [ops] allow = [...] or [ops.OpType] tables")
    return Profile(
        name=vals["name"], description=vals["description"], source=vals["source"], opset_min=opset[0],
        opset_max=opset[1], max_rank=vals["max_rank"], max_effective_rank=vals["max_effective_rank"],
        static_shapes=vals["static_shapes"], batch=vals["batch"], activation_dtype=vals["activation_dtype"],
        weight_dtype=vals["weight_dtype"], per_channel=vals["per_channel"],
        channel_alignment=vals["channel_alignment"], pad_channels=vals["pad_channels"],
        max_tensor_bytes=vals["max_tensor_bytes"], max_dim=vals["max_dim"], float_fallback=vals["float_fallback"],
        ops=ops, fuse_conv_add_act=vals["fuse_conv_add_act"], path=where, perf=_parse_perf(doc.get("perf", {}), where))


def _parse_perf(tbl: Any, where: str) -> Perf:
    if not isinstance(tbl, dict):
        raise ProfileError(f"{where}: [perf] must be a table")
    vals: dict[str, float] = {}
    for k, v in tbl.items():
        if k not in _PERF_KEYS:
            raise ProfileError(f"{where}: [perf] has unknown key {k!r}{_suggest(k, _PERF_KEYS)}; "
                               f"allowed: {', '.join(_PERF_KEYS)}")
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise ProfileError(f"{where}: [perf] {k} must be a positive number, got {v!r}")
        vals[k] = float(v)
    return Perf(**vals)


def _parse_ops(tbl: Any, where: str) -> dict[str, OpLimits]:
    if not isinstance(tbl, dict):
        raise ProfileError(f"{where}: [ops] must be a table")
    known = _known_onnx_ops()
    ops: dict[str, OpLimits] = {}
    allow = tbl.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise ProfileError(f"{where}: [ops] allow must be a list of ONNX op type names")
    for name in allow:
        _check_op_name(name, known, where, "[ops] allow")
        ops[name] = OpLimits(name)
    for name, spec in tbl.items():
        if name == "allow":
            continue
        if not isinstance(spec, dict):
            raise ProfileError(f"{where}: [ops] {name} must be a table ([ops.{name}]), got {spec!r}")
        _check_op_name(name, known, where, f"[ops.{name}]")
        kw: dict[str, Any] = {}
        for k, v in spec.items():
            if k not in _OP_KEYS:
                raise ProfileError(f"{where}: [ops.{name}] has unknown key {k!r}{_suggest(k, _OP_KEYS)}; allowed: "
                                   f"{', '.join(_OP_KEYS)}")
            types = _OP_KEYS[k]
            if isinstance(v, bool) and types is int or not isinstance(v, types):
                raise ProfileError(f"{where}: [ops.{name}] {k} must be {_type_name(types)}, got {v!r}")
            kw[k] = v
        if "kernel_max" in kw:
            km = kw["kernel_max"]
            km = [km] if isinstance(km, int) else km
            if not km or not all(isinstance(x, int) and x >= 1 for x in km):
                raise ProfileError(f"{where}: [ops.{name}] kernel_max must be a positive int or a list of them")
            kw["kernel_max"] = tuple(km)
        if "group" in kw:
            bad = [g for g in kw["group"] if g not in GROUP_KINDS]
            if bad:
                raise ProfileError(f"{where}: [ops.{name}] group values {bad} unknown; use {list(GROUP_KINDS)}")
            kw["group"] = tuple(kw["group"])
        if "op_axes" in kw:
            _one_of(where, f"[ops.{name}] op_axes", kw["op_axes"], OP_AXES)
        for k in ("axis", "const_inputs"):
            if k in kw:
                if not all(isinstance(x, int) and not isinstance(x, bool) for x in kw[k]):
                    raise ProfileError(f"{where}: [ops.{name}] {k} must be a list of ints, got {kw[k]!r}")
                kw[k] = tuple(kw[k])
        if "attrs" in kw:
            attrs = {}
            for a, allowed in kw["attrs"].items():
                if not isinstance(allowed, list):
                    raise ProfileError(f"{where}: [ops.{name}] attrs.{a} must be a list of allowed values")
                attrs[a] = tuple(allowed)
            kw["attrs"] = attrs
        for k in ("kernel_area_max", "stride_max", "dilation_max", "channels_max", "input_numel_max", "max_rank",
                  "step_max"):
            if k in kw and kw[k] < 1:
                raise ProfileError(f"{where}: [ops.{name}] {k} must be >= 1, got {kw[k]}")
        if "pad_max" in kw and kw["pad_max"] < 0:
            raise ProfileError(f"{where}: [ops.{name}] pad_max must be >= 0")
        ops[name] = OpLimits(name, **kw)
    return ops


def _known_onnx_ops() -> set[str]:
    import onnx

    from ..ir.registry import all_ops

    names = {s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain in ("", "ai.onnx")}
    names |= {d.onnx.rpartition(".")[2] for d in all_ops().values() if d.onnx}
    return names


def _check_op_name(name: str, known: set[str], where: str, ctx: str) -> None:
    if name not in known:
        raise ProfileError(f"{where}: {ctx}: {name!r} is not an ONNX op type{_suggest(name, known)}")


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=2)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _one_of(where: str, key: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ProfileError(f"{where}: {key} must be one of {', '.join(options)}; got {value!r}")


def _type_name(t) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join({int: "an integer", str: "a string", bool: "true/false", list: "a list",
                        dict: "a table"}[x] for x in ts)
