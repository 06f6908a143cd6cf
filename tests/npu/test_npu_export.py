"""NPU target profiles, legalization, INT8 QDQ quantization, and the `graphopt export` command."""

from __future__ import annotations

import json
import textwrap
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from graphopt.cli import app
from graphopt.compare import verify
from graphopt.export import export_model, report_paths
from graphopt.ir import DType, Graph, TensorType
from graphopt.npu.legalize import check, legalize
from graphopt.npu.profiles import ProfileError, available_profiles, load_profile, parse_profile

runner = CliRunner()


def ops(g: Graph) -> Counter:
    return Counter(n.op for n in g.nodes)


def profile_from(tmp_path: Path, body: str, name: str = "t") -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(textwrap.dedent(body))
    return p


@pytest.fixture(scope="module")
def zoo_onnx(tmp_path_factory) -> dict[str, str]:
    from graphopt import models

    d = tmp_path_factory.mktemp("zoo")
    out = {}
    nets = {"resnet20": (models.get("resnet20", seed=0), tuple(models.example_inputs("resnet20", batch=1))),
            "mlp_gelu": (_MlpGelu(), (torch.randn(1, 16),))}
    for name, (net, ex) in nets.items():
        path = d / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net.eval(), ex, str(path), opset_version=17, dynamo=False)
        out[name] = str(path)
    return out


class _MlpGelu(nn.Module):
    """LayerNorm + GELU MLP: the Edge TPU-like profile has neither Erf nor LayerNorm primitives (Div, Sqrt)."""

    def __init__(self) -> None:
        super().__init__()
        self.ln, self.fc1, self.fc2 = nn.LayerNorm(16), nn.Linear(16, 32), nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(self.ln(x))))


# -------------------------------------------------------------------------------------------- profiles
def test_builtin_profiles_load_and_name_their_sources():
    names = set(available_profiles())
    assert {"generic-npu-int8", "edgetpu-like", "ethos-u55-like"} <= names
    for n in names:
        p = load_profile(n)
        assert p.name == n and p.ops and p.opset_min <= p.export_opset() <= p.opset_max
    for n in ("edgetpu-like", "ethos-u55-like"):
        text = Path(load_profile(n).path).read_text()
        assert "MODELED ON" in text and "not certified" in text and load_profile(n).source


def test_unknown_or_malformed_profiles_give_clear_errors(tmp_path):
    with pytest.raises(ProfileError, match="unknown target profile 'edgetpu'.*Did you mean edgetpu-like.*"
                                           "Available: .*generic-npu-int8"):
        load_profile("edgetpu")
    bad_key = profile_from(tmp_path, """
        [target]
        name = "x"
        max_rnak = 4
        [ops]
        allow = ["Relu"]
    """)
    with pytest.raises(ProfileError, match=r"t\.toml: \[target\] has unknown key 'max_rnak' .*'max_rank'"):
        load_profile(bad_key)
    with pytest.raises(ProfileError, match=r"\[ops.Conv\] stride_max must be an integer, got '2'"):
        parse_profile({"target": {"name": "x"}, "ops": {"Conv": {"stride_max": "2"}}}, "p.toml")
    with pytest.raises(ProfileError, match="'Rleu' is not an ONNX op type .*'Relu'"):
        parse_profile({"target": {"name": "x"}, "ops": {"allow": ["Rleu"]}}, "p.toml")
    with pytest.raises(ProfileError, match="opset must be \\[min, max\\]"):
        parse_profile({"target": {"name": "x", "opset": [18, 13]}, "ops": {"allow": ["Relu"]}}, "p.toml")
    with pytest.raises(ProfileError, match="activation_dtype must be one of"):
        parse_profile({"target": {"name": "x", "activation_dtype": "int4"}, "ops": {"allow": ["Relu"]}}, "p.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[target\nname=")
    with pytest.raises(ProfileError, match="broken.toml: not valid TOML"):
        load_profile(broken)


# ---------------------------------------------------------------------------------------- legalization
TINY = """
    [target]
    name = "tiny"
    max_rank = 4
    activation_dtype = "int8"
    channel_alignment = 8
    pad_channels = {pad}
    [ops]
    allow = ["Add", "Mul", "Clip", "Relu", "Tanh", "Exp", "Log", "MatMul", "Concat", "Sigmoid", "Reshape",
             "GlobalAveragePool"]
    [ops.Slice]
    step_max = 1
    [ops.Pad]
    op_axes = "spatial"
    [ops.Conv]
    kernel_max = 3
    const_inputs = [1, 2]
    [ops.AveragePool]
    kernel_max = 3
"""


def _act_graph() -> Graph:
    """Conv 7x7 -> hard_swish -> gelu -> softplus -> cumsum -> pow 2 -> ... -> softsign (no legalizer)."""
    rng = np.random.default_rng(0)
    g = Graph("acts")
    x = g.add_input("x", TensorType(DType.float32, (1, 3, 12, 12)))
    w = g.add_const("w", rng.standard_normal((5, 3, 7, 7)).astype(np.float32) * 0.1, "param")
    b = g.add_const("b", rng.standard_normal(5).astype(np.float32), "param")
    y = g.create_node("conv", [x, w, b], {"pads": [2, 3, 2, 3], "strides": [2, 2]}, name="big_conv").output
    y = g.create_node("hard_swish", [y], name="hs").output
    y = g.create_node("gelu", [y], name="gelu").output
    y = g.create_node("softplus", [y], name="sp").output
    y = g.create_node("cumsum", [y, g.add_const("ax", np.asarray(-1, dtype=np.int64))], name="cs").output
    y = g.create_node("pow", [y, g.add_const("two", np.asarray(2.0, dtype=np.float32))], name="sq").output
    y = g.create_node("slice", [y, *[g.add_const(k, np.asarray(v, dtype=np.int64)) for k, v in
                                      (("st", [0, 0]), ("en", [99, 99]), ("axs", [2, 3]), ("stp", [2, 2]))]],
                      name="strided").output
    pads = g.add_const("pads", np.asarray([0, 2, 0, 0, 0, 1, 0, 0], dtype=np.int64))
    y = g.create_node("pad", [y, pads], name="chanpad").output
    g.set_outputs([g.create_node("softsign", [y], name="needs_softsign").output])
    return g


def test_legalize_rewrites_to_supported_ops_and_reports_the_rest(tmp_path):
    prof = load_profile(profile_from(tmp_path, TINY.format(pad="false")))
    g = _act_graph()
    before = check(g, prof)
    assert {v.node for v in before} >= {"big_conv", "hs", "gelu", "sp", "cs", "sq", "needs_softsign"}
    ref = g.copy()
    res = legalize(g, prof)
    names = {r.legalizer for r in res.rewrites}
    assert {"split-conv-kernel", "hard-swish-clip", "softplus-log-exp", "cumsum-matmul", "pow-to-mul",
            "strided-slice-avgpool", "zero-pad-concat"} <= names
    gelu = [r for r in res.rewrites if r.op == "Gelu"]
    assert gelu and gelu[0].legalizer == "gelu-tanh-approx" and gelu[0].approximate  # no Erf on this target
    left = [(v.node, v.rule) for v in res.violations]
    assert left == [("needs_softsign", "op-not-supported")]
    assert all(n.op in ("conv", "add", "mul", "clip", "tanh", "exp", "log", "matmul", "concat", "slice", "pad",
                        "avg_pool", "softsign") for n in g.nodes)
    assert max(max(n.inputs[1].const.shape[2:]) for n in g.nodes if n.op == "conv") <= 3
    rep = verify(ref, g, rtol=1e-3, atol=2e-3)  # only the tanh-GELU approximation differs (~5e-4 before cumsum)
    assert rep.ok, str(rep)
    exact = ref.copy()
    exact.find_node("gelu").attrs["approximate"] = "tanh"
    g2 = exact.copy()
    legalize(g2, prof)
    rep = verify(exact, g2, rtol=1e-4, atol=1e-4)  # every other rewrite is exact
    assert rep.ok, str(rep)


def int8_profile(tmp_path: Path, allow: list[str], limits: str = ""):
    """A rank-4 int8 target allowing ``allow``, with extra ``[ops.X]`` tables in ``limits``."""
    body = f'[target]\nname = "test"\nmax_rank = 4\nactivation_dtype = "int8"\n[ops]\nallow = {json.dumps(allow)}\n'
    return load_profile(profile_from(tmp_path, body + textwrap.dedent(limits)))


def legalize_exactly(g: Graph, prof, rtol: float = 1e-5, atol: float = 1e-5):
    """Legalize ``g`` in place; the result must compute what the original did (within float rounding)."""
    ref = g.copy()
    res = legalize(g, prof)
    rep = verify(ref, g, rtol=rtol, atol=atol)
    assert rep.ok, str(rep)
    return res


@pytest.mark.parametrize("bias", [True, False])
def test_grouped_conv_is_split_into_standard_convs(tmp_path, bias):
    """A target without grouped convs gets one standard conv per group on input channel slices (exact);
    depthwise convs, which it allows, stay as they are."""
    prof = int8_profile(tmp_path, ["Conv", "Slice", "Concat", "Relu"], """
        [ops.Conv]
        group = ["standard", "depthwise"]
    """)
    rng = np.random.default_rng(1)
    g = Graph("grouped")
    x = g.add_input("x", TensorType(DType.float32, (1, 8, 9, 9)))
    ins = [x, g.add_const("w", rng.standard_normal((12, 2, 3, 3)).astype(np.float32), "param")]
    if bias:
        ins.append(g.add_const("b", rng.standard_normal(12).astype(np.float32), "param"))
    y = g.create_node("conv", ins, {"group": 4, "pads": [1, 0, 1, 2], "strides": [2, 1]}, name="grouped").output
    dw = [y, g.add_const("dw", rng.standard_normal((12, 1, 3, 3)).astype(np.float32), "param")]
    y = g.create_node("conv", dw, {"group": 12, "pads": [1, 1, 1, 1]}, name="depthwise").output
    g.set_outputs([g.create_node("relu", [y], name="act").output])
    assert [(v.node, v.rule) for v in check(g, prof)] == [("grouped", "group")]
    res = legalize_exactly(g, prof)
    assert [r.legalizer for r in res.rewrites] == ["split-conv-groups"] and res.violations == []
    groups = sorted(int(n.attrs.get("group", 1)) for n in g.nodes if n.op == "conv")
    assert groups == [1, 1, 1, 1, 12]


def test_channel_shuffle_softmax_axis_and_sum_are_legalized_exactly(tmp_path):
    """ShuffleNet's rank-5 channel shuffle becomes a 1x1 permutation conv; a softmax over channels (after global
    pooling, and over a full feature map) becomes a last-axis softmax of a 2-D view; Sum becomes Adds."""
    prof = int8_profile(tmp_path, ["Conv", "Reshape", "Transpose", "Softmax", "LogSoftmax", "Add",
                                   "GlobalAveragePool"], """
        [ops.Softmax]
        op_axes = "last"
        max_rank = 2
        [ops.LogSoftmax]
        op_axes = "last"
        max_rank = 2
    """)
    rng = np.random.default_rng(2)
    g = Graph("shuffle")
    x = g.add_input("x", TensorType(DType.float32, (1, 6, 5, 5)))
    y = g.create_node("conv", [x, g.add_const("w", rng.standard_normal((6, 6, 1, 1)).astype(np.float32), "param")],
                      name="c1").output
    i64 = lambda v: g.add_const(f"s{len(g.nodes)}", np.asarray(v, dtype=np.int64))  # noqa: E731
    r5 = g.create_node("reshape", [y, i64([1, 3, 2, 5, 5])], name="split_groups").output
    t = g.create_node("transpose", [r5], {"perm": [0, 2, 1, 3, 4]}, name="swap").output
    sh = g.create_node("reshape", [t, i64([1, 6, 5, 5])], name="merge").output
    sm_map = g.create_node("softmax", [sh], {"axis": 1}, name="sm_map").output
    s3 = g.create_node("sum", [sh, sm_map, y], name="sum3").output
    pooled = g.create_node("global_avg_pool", [s3], name="gap").output
    lsm = g.create_node("log_softmax", [pooled], {"axis": 1}, name="lsm").output
    g.set_outputs([lsm, s3])
    before = {(v.node, v.rule) for v in check(g, prof)}
    assert {("split_groups", "max_rank"), ("sm_map", "op_axes"), ("sum3", "op-not-supported"),
            ("lsm", "op_axes")} <= before
    res = legalize_exactly(g, prof, atol=1e-6)
    assert {r.legalizer for r in res.rewrites} >= {"channel-shuffle-conv", "softmax-2d", "sum-adds"}
    assert res.violations == [], res.violations
    assert all(len(o.type.shape) <= 4 for n in g.nodes for o in n.outputs)


def test_large_strides_and_lrn_are_legalized_exactly(tmp_path):
    """A stride-4 conv becomes a stride-2 conv + 1x1 AveragePool at stride 2 (stride 5 has no split within the
    limits and is reported); LRN becomes a band-matrix conv of the squares and a Sqrt- or Exp/Log-based power."""
    prof = int8_profile(tmp_path, ["Conv", "AveragePool", "Mul", "Add", "Sqrt", "Div", "Log", "Exp", "Concat"], """
        [ops.Conv]
        stride_max = 3
        [ops.AveragePool]
        stride_max = 3
    """)
    rng = np.random.default_rng(3)
    g = Graph("strides")
    x = g.add_input("x", TensorType(DType.float32, (1, 3, 23, 19)))
    outs = []
    for name, st, pads in (("s4", [4, 4], [2, 1, 1, 2]), ("s4x1", [4, 1], [0, 0, 0, 0]), ("s5", [5, 5], [0] * 4)):
        w = g.add_const(f"w_{name}", rng.standard_normal((5, 3, 3, 3)).astype(np.float32), "param")
        bias = g.add_const(f"b_{name}", rng.standard_normal(5).astype(np.float32), "param")
        outs.append(g.create_node("conv", [x, w, bias], {"strides": st, "pads": pads, "dilations": [2, 1]},
                                  name=name).output)
    for name, beta in (("lrn75", 0.75), ("lrn5", 0.5), ("lrn6", 0.6)):
        outs.append(g.create_node("lrn", [outs[0]], {"size": 3, "alpha": 0.3, "beta": beta, "bias": 2.0},
                                  name=name).output)
    g.set_outputs(outs)
    res = legalize_exactly(g, prof, rtol=1e-4, atol=1e-5)
    done = [(r.node, r.legalizer) for r in res.rewrites]
    assert ("s4", "split-conv-stride") in done and ("s4x1", "split-conv-stride") in done
    assert {n for n, lg in done if lg == "lrn-conv-band"} == {"lrn75", "lrn5", "lrn6"}
    assert [(v.node, v.rule) for v in res.violations] == [("s5", "stride_max")]


def test_matmul_with_constant_weights_becomes_gemm_for_any_leading_dims(tmp_path):
    """ConvNeXt's channel MLP multiplies an (N, H, W, C) tensor by a constant (C, C') weight: on a target with
    Gemm but no MatMul it becomes Reshape -> Gemm -> Reshape whatever the leading dims (before: only when all but
    one were 1)."""
    prof = int8_profile(tmp_path, ["Gemm", "Reshape"])
    rng = np.random.default_rng(5)
    g = Graph("mlp")
    outs = []
    for name, shape in (("nhwc", (1, 4, 5, 6)), ("nlc", (2, 3, 6))):
        x = g.add_input(f"x_{name}", TensorType(DType.float32, shape))
        w = g.add_const(f"w_{name}", rng.standard_normal((6, 3)).astype(np.float32), "param")
        outs.append(g.create_node("matmul", [x, w], name=name).output)
    g.set_outputs(outs)
    res = legalize_exactly(g, prof, atol=1e-6)
    assert sorted(r.node for r in res.rewrites if r.legalizer == "matmul-gemm") == ["nhwc", "nlc"]
    assert res.violations == []


def test_erf_on_a_target_without_it_is_approximated_with_tanh(tmp_path):
    """GELU below opset 20 arrives as Erf; a target with Tanh but no Erf gets erf(z) ~ tanh(2/sqrt(pi) (z +
    2*0.044715 z^3)) -- reported as approximate, within 3.6e-4 of erf everywhere."""
    prof = load_profile(profile_from(tmp_path, TINY.format(pad="false")))
    g = Graph("erf")
    x = g.add_input("x", TensorType(DType.float32, (1, 4001)))
    g.set_outputs([g.create_node("erf", [x], name="e").output])
    ref = g.copy()
    res = legalize(g, prof)
    assert [(r.legalizer, r.approximate) for r in res.rewrites] == [("erf-tanh-approx", True)]
    assert res.violations == [] and "erf" not in {n.op for n in g.nodes}
    z = np.linspace(-6, 6, 4001, dtype=np.float32)[None]
    from _helpers import run_ir

    (got,), (want,) = run_ir(g, {"x": z}), run_ir(ref, {"x": z})
    assert np.abs(got - want).max() < 4e-4


def test_isnan_guard_of_a_softmax_is_dropped_on_int8_targets(tmp_path):
    """Hugging Face attention writes ``where(isnan(p), 0, p)``; no int8 NPU has IsNaN, and an int8 tensor cannot
    hold NaN, so the guard becomes its else branch (reported approximate); other IsNaN uses become False."""
    prof = int8_profile(tmp_path, ["Softmax", "Add", "Mul", "Cast"])
    g = Graph("hf_guard")
    x = g.add_input("x", TensorType(DType.float32, (2, 4, 6)))
    p = g.create_node("softmax", [x], {"axis": -1}, name="sm").output
    nan = g.create_node("is_nan", [p], name="nan").output
    zero = g.add_const("zero", np.zeros((), np.float32))
    guarded = g.create_node("where", [nan, zero, p], name="guard").output
    flag = g.create_node("cast", [nan], {"to": "float32"}, name="flag").output  # another use of the IsNaN
    g.set_outputs([g.create_node("add", [guarded, flag], name="out").output])
    res = legalize_exactly(g, prof)
    assert [(r.legalizer, r.approximate) for r in res.rewrites] == [("isnan-never-int8", True)]
    assert res.violations == [] and not {"is_nan", "where"} & {n.op for n in g.nodes}


def test_channel_padding_is_exact_and_aligned(tmp_path):
    prof = load_profile(profile_from(tmp_path, TINY.format(pad="true")))
    rng = np.random.default_rng(1)
    g = Graph("pad")
    x = g.add_input("x", TensorType(DType.float32, (1, 3, 8, 8)))
    w1 = g.add_const("w1", rng.standard_normal((5, 3, 3, 3)).astype(np.float32), "param")
    w2 = g.add_const("w2", rng.standard_normal((8, 5, 1, 1)).astype(np.float32), "param")
    y = g.create_node("conv", [x, w1], {"pads": [1, 1, 1, 1]}, name="c1").output
    y = g.create_node("relu", [y]).output
    g.set_outputs([g.create_node("conv", [y, w2], name="c2").output])
    ref = g.copy()
    res = legalize(g, prof)
    assert any(r.legalizer.startswith("pad-channels") for r in res.rewrites)
    assert g.find_node("c1").outputs[0].type.shape[1] == 8 and not res.warnings
    rep = verify(ref, g)
    assert rep.ok, str(rep)


class _MobileBlock(nn.Module):
    """MobileNetV3-style block: conv-BN-hardswish, depthwise 5x5, squeeze-excite with hardsigmoid, residual."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(8, 24, 1, bias=False), nn.BatchNorm2d(24), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(24, 24, 5, padding=2, groups=24, bias=False), nn.BatchNorm2d(24),
                                nn.ReLU6())
        self.se1, self.se2 = nn.Conv2d(24, 8, 1), nn.Conv2d(8, 24, 1)
        self.project = nn.Sequential(nn.Conv2d(24, 8, 1, bias=False), nn.BatchNorm2d(8))

    def forward(self, x):
        y = self.dw(self.expand(x))
        s = nn.functional.hardsigmoid(self.se2(torch.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        return x + self.project(y * s)


def test_generic_profile_accepts_a_torch_frontend_graph():
    from graphopt.frontends.torch import from_torch
    from graphopt.pass_manager import PassManager

    torch.manual_seed(0)
    net = _MobileBlock().eval()
    x = torch.randn(1, 8, 16, 16)
    g = from_torch(net, (x,))
    g = PassManager("specialize-shapes,(canonicalize,fold-constants,cse,dce)*,fuse-conv-bn").run(g).graph
    res = legalize(g, load_profile("generic-npu-int8"))
    assert res.violations == []
    assert verify(net, g, [x], rtol=1e-3, atol=1e-4).ok
    edge = legalize(g.copy(), load_profile("edgetpu-like"))  # no HardSwish/HardSigmoid there: Mul/Add/Clip
    assert not {"hard_swish", "hard_sigmoid"} & set(ops(edge.graph)) and edge.violations == []
    assert verify(net, edge.graph, [x], rtol=1e-3, atol=1e-4).ok


# --------------------------------------------------------------------------------------- export (API)
def test_default_fp32_export_writes_model_and_report(zoo_onnx, tmp_path):
    out = tmp_path / "r20.onnx"
    rep = export_model(zoo_onnx["resnet20"], out, latency_runs=3)
    assert rep.ok and out.exists() and rep.fp32["ok"] and rep.fp32["max_abs_err"] < 1e-4
    md, js = report_paths(out)
    doc = json.loads(js.read_text())
    assert doc["nodes_after"] < doc["nodes_before"] and doc["ops_before"]["Identity"] > 0
    assert "Identity" not in doc["ops_after"] and doc["latency"]["after"]["median_ms"] > 0
    assert "## Op histogram" in md.read_text()
    assert verify(zoo_onnx["resnet20"], str(out)).ok


def test_int8_export_quantizes_with_calibration_and_measures_agreement(zoo_onnx, tmp_path):
    out = tmp_path / "r20_int8.onnx"
    rep = export_model(zoo_onnx["resnet20"], out, target="generic-npu-int8", calib="cifar10-demo",
                       calib_samples=32, eval_samples=64, latency_runs=2)
    assert rep.ok and rep.violations == [] and out.exists()
    m = onnx.load(str(out))
    hist = Counter(n.op_type for n in m.graph.node)
    assert hist["QuantizeLinear"] > 10 and hist["DequantizeLinear"] > hist["QuantizeLinear"]
    w_scales = [t for t in m.graph.initializer if t.name.endswith("_scale") and len(t.dims) == 1 and t.dims[0] > 1]
    assert w_scales, "per-channel weight scales expected"
    q = rep.quantization
    assert q["calibration"].startswith("cifar10-demo (train") and q["evaluation_samples"] == 64
    assert q["top1_agreement"] >= 0.9 and q["float_islands"] == []
    assert {r["legalizer"] for r in rep.rewrites} == {"strided-slice-avgpool"}


def test_random_calibration_warns_loudly(zoo_onnx, tmp_path):
    with pytest.warns(UserWarning, match="RANDOM inputs"):
        rep = export_model(zoo_onnx["resnet20"], tmp_path / "r.onnx", target="generic-npu-int8", latency_runs=0,
                           verify=False)
    assert any("RANDOM" in w for w in rep.warnings)


def test_fp16_target_converts_weights(zoo_onnx, tmp_path):
    prof = profile_from(tmp_path, """
        [target]
        name = "fp16-npu"
        activation_dtype = "fp16"
        weight_dtype = "fp16"
        [ops]
        allow = ["Conv", "Relu", "Add", "Slice", "Pad", "GlobalAveragePool", "Flatten", "Gemm"]
    """)
    rep = export_model(zoo_onnx["resnet20"], tmp_path / "h.onnx", target=str(prof), latency_runs=0)
    assert rep.ok and rep.quantization is None
    m = onnx.load(str(tmp_path / "h.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)


# ---------------------------------------------------------------------------------------- export (CLI)
def test_cli_exit_codes_and_nothing_half_written(zoo_onnx, tmp_path, monkeypatch):
    # --strict keeps the old refusal: exit 3, the violation list, only the report written
    out = tmp_path / "mlp_edge.onnx"
    r = runner.invoke(app, ["export", zoo_onnx["mlp_gelu"], "-o", str(out), "--target", "edgetpu-like",
                            "--calib", "random", "--latency-runs", "0", "--strict"])
    assert r.exit_code == 3, r.output
    assert not out.exists() and report_paths(out)[1].exists()
    doc = json.loads(report_paths(out)[1].read_text())
    assert doc["status"] == "violations" and doc["exit_code"] == 3 and doc["strict"] and doc["violations"]
    assert {"node", "op", "rule", "detail"} <= set(doc["violations"][0])
    assert {(v["op"], v["rule"]) for v in doc["violations"]} >= {("LayerNormalization", "op-not-supported")}
    assert ("Erf", "op-not-supported") not in {(v["op"], v["rule"]) for v in doc["violations"]}  # tanh approx
    assert "LayerNormalization" in r.output and "violation" in r.output and "--strict" in r.output
    # by default the model is written with the LayerNorm placed on the host (and --allow-violations still works)
    for extra in ([], ["--allow-violations"]):
        r = runner.invoke(app, ["export", zoo_onnx["mlp_gelu"], "-o", str(out), "--target", "edgetpu-like",
                                "--calib", "random", "--latency-runs", "0", *extra])
        assert r.exit_code == 0 and out.exists(), r.output
        doc = json.loads(report_paths(out)[1].read_text())
        assert doc["status"] == "host-fallback" and doc["exit_code"] == 0
        assert [h["op"] for h in doc["placement"]["host_nodes"]] == ["LayerNormalization"]
        assert r.output.index("placement:") < r.output.index("fp32 check")  # the summary leads
    r = runner.invoke(app, ["export", zoo_onnx["mlp_gelu"], "-o", str(out), "--target", "edgetpu-like",
                            "--calib", "random", "--latency-runs", "0", "--strict", "--allow-violations"])
    assert r.exit_code == 2 and "contradict" in r.output

    r = runner.invoke(app, ["export", zoo_onnx["resnet20"], "-o", str(tmp_path / "x.onnx"), "-t", "npu9000"])
    assert r.exit_code == 2 and "unknown target profile 'npu9000'" in r.output and "generic-npu-int8" in r.output
    assert not (tmp_path / "x.onnx").exists() and not report_paths(tmp_path / "x.onnx")[1].exists()

    (tmp_path / "user_pass.py").write_text(textwrap.dedent("""
        from graphopt.pass_api import graph_pass

        @graph_pass("explode-on-relu", "a buggy user pass")
        def explode(graph):
            for node in graph.nodes:
                if node.op == "relu":
                    raise KeyError("weights missing")
            return 0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    out2 = tmp_path / "y.onnx"
    r = runner.invoke(app, ["export", zoo_onnx["resnet20"], "-o", str(out2), "-p", "user_pass:explode",
                            "--latency-runs", "0"])
    assert r.exit_code == 2
    assert "'explode-on-relu' failed at node" in r.output and "(relu)" in r.output
    assert not out2.exists() and not report_paths(out2)[0].exists()

    out3 = tmp_path / "ok.onnx"
    r = runner.invoke(app, ["export", zoo_onnx["resnet20"], "-o", str(out3), "--input-shape", "1,3,32,32",
                            "--latency-runs", "0", "--print-after", "fuse-slices"])
    assert r.exit_code == 0, r.output
    assert out3.exists() and "graph after fuse-slices" in r.output
    r = runner.invoke(app, ["export", zoo_onnx["resnet20"], "-o", str(tmp_path / "bad.txt")])
    assert r.exit_code == 2 and "ending in .onnx" in r.output


@pytest.mark.parametrize("rank", [3, 4])
def test_instance_norm_is_legalized_exactly(tmp_path, rank):
    """Wav2Vec2's feature extractor normalizes with GroupNorm(C, C), exported as InstanceNormalization, which no
    NPU profile lists: it becomes per-(sample, channel) mean/variance primitives."""
    prof = int8_profile(tmp_path, ["ReduceMean", "Sub", "Mul", "Add", "Sqrt", "Div", "Conv"])
    g = Graph("inorm")
    shape = (2, 4, 10) if rank == 3 else (2, 4, 5, 6)
    x = g.add_input("x", TensorType(DType.float32, shape))
    rng = np.random.default_rng(rank)
    scale = g.add_const("s", rng.standard_normal(4).astype(np.float32), "param")
    bias = g.add_const("b", rng.standard_normal(4).astype(np.float32), "param")
    g.set_outputs([g.create_node("instance_norm", [x, scale, bias], {"epsilon": 1e-5}, name="in").output])
    res = legalize_exactly(g, prof)
    assert [r.legalizer for r in res.rewrites] == ["instancenorm-div"] and res.violations == []
    assert "instance_norm" not in {n.op for n in g.nodes}


@pytest.mark.parametrize(("k", "stride", "pads", "length"), [(10, 5, [0, 0], 480), (3, 5, [1, 1], 64),
                                                            (7, 7, [3, 2], 50), (5, 5, [2, 2], 23)])
def test_prime_conv1d_stride_is_legalized_as_a_polyphase_conv(tmp_path, k, stride, pads, length):
    """Wav2Vec2's stride-5 conv on a stride-4 target: 5 splits into no allowed conv x pool strides, so the input's
    5 phases become channels of a stride-1 conv (exact)."""
    prof = int8_profile(tmp_path, ["Conv", "Pad", "Slice", "Reshape", "Transpose"], "[ops.Conv]\nstride_max = 4\n")
    g = Graph("c1d")
    x = g.add_input("x", TensorType(DType.float32, (2, 3, length)))
    rng = np.random.default_rng(k)
    w = g.add_const("w", rng.standard_normal((6, 3, k)).astype(np.float32), "param")
    b = g.add_const("b", rng.standard_normal(6).astype(np.float32), "param")
    g.set_outputs([g.create_node("conv", [x, w, b], {"strides": [stride], "pads": pads, "kernel_shape": [k]},
                                 name="c").output])
    res = legalize_exactly(g, prof, rtol=1e-4, atol=1e-4)
    assert [r.legalizer for r in res.rewrites] == ["conv-stride-polyphase"] and res.violations == []
    convs = [n for n in g.nodes if n.op == "conv"]
    assert len(convs) == 1 and _ints_attr(convs[0], "strides") in (None, [1])


def _ints_attr(n, key):
    v = n.attrs.get(key)
    return None if v is None else [int(a) for a in v]


class _MeanHeadCNN(nn.Module):
    """Conv-BN-ReLU stem and a ``x.mean((2, 3))`` head, which torch.onnx writes as ReduceMean(axes=[2, 3]) (torchvision
    ResNet-18's head in the dynamo exporter, timm's heads)."""

    def __init__(self, keepdim: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.keepdim = keepdim
        self.c1, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2, self.fc = nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.bn(self.c1(x)))))
        return self.fc(torch.flatten(x.mean((2, 3), keepdim=self.keepdim), 1))


@pytest.mark.parametrize(("target", "keepdim"), [("ethos-u55-like", True), ("ethos-u55-like", False),
                                                 ("edgetpu-like", True), ("generic-npu-int8", False)])
def test_spatial_reduce_mean_head_becomes_global_average_pool_and_quantizes(tmp_path, target, keepdim):
    """ReduceMean over H, W is allowed by every profile but onnxruntime's quantizer leaves it in float, which
    only showed after quantization (float_fallback: ethos-u55-like and edgetpu-like refused the model). It is
    now GlobalAveragePool (+ Reshape without keepdims) before quantization: exact in fp32, int8 with no island."""
    src = tmp_path / "mean_head.onnx"
    net = _MeanHeadCNN(keepdim).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), str(src), opset_version=17, dynamo=False)
    assert "ReduceMean" in {n.op_type for n in onnx.load(str(src)).graph.node}
    out = tmp_path / "npu.onnx"
    r = runner.invoke(app, ["export", str(src), "-o", str(out), "--target", target, "--calib", "cifar10-demo",
                            "--calib-samples", "32", "--eval-samples", "64", "--latency-runs", "0"])
    assert r.exit_code == 0, r.output
    doc = json.loads(report_paths(out)[1].read_text())
    assert doc["violations"] == [] and doc["quantization"]["float_islands"] == []
    assert "reduce-mean-gap" in {w["legalizer"] for w in doc["rewrites"]}
    assert doc["fp32"]["ok"] and doc["fp32"]["max_abs_err"] < 1e-5  # the rewrite is exact
    hist = Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    assert "ReduceMean" not in hist and hist["GlobalAveragePool"] == 1
    # the int8 model follows the fp32 PyTorch model: same top-1 on real images, logits within a few int8 steps
    from graphopt.compare import run_model
    from graphopt.frontends.onnx import load_onnx
    from graphopt.npu.quantize import load_calibration

    g = load_onnx(str(src))
    xs = [f[g.inputs[0].name] for f in load_calibration("cifar10-demo", g, n=64).feeds]  # each (1, 3, 32, 32)
    with torch.no_grad():
        want = net(torch.from_numpy(np.concatenate(xs))).numpy()
    got = np.concatenate([run_model(str(out), [x])[0] for x in xs])
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


class _Attention(nn.Module):
    """One self-attention block: the head merge (Transpose, Reshape) before the output projection is what
    fold-head-merge rewrites into a per-head MatMul + ReduceSum."""

    def __init__(self, d: int = 32, h: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.h, self.qkv, self.proj = h, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(x).reshape(b, s, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) * (d // self.h) ** -0.5, -1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, s, d))


def test_target_pipeline_leaves_out_fusions_into_ops_the_target_refuses(tmp_path):
    """fold-head-merge's per-head MatMul + ReduceSum has no legalizer back, so ethos-u55-like (neither op) reported
    both; its pipeline now skips the fusion and the projection legalizes to a Gemm. Without a target, and on
    generic-npu-int8 (which allows both), the fusion still runs."""
    src = tmp_path / "attn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Attention().eval(), (torch.randn(1, 8, 32),), str(src), opset_version=17, dynamo=False)

    def head_merges(rep) -> int:
        return sum(p["changes"].get("head-merge", 0) for p in rep.passes if p["name"] == "fold-head-merge")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random calibration
        rep = export_model(src, tmp_path / "ethos.onnx", target="ethos-u55-like", calib="random", latency_runs=0,
                           allow_violations=True)
    assert rep.fp32["ok"] and head_merges(rep) == 0
    assert not {v["op"] for v in rep.violations} & {"ReduceSum"}
    assert not [v for v in rep.violations if v["node"].startswith("/proj/")]  # the projection is a Gemm now
    assert "ReduceSum" not in rep.ops_after
    assert head_merges(export_model(src, tmp_path / "fp32.onnx", latency_runs=0)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert head_merges(export_model(src, tmp_path / "gen.onnx", target="generic-npu-int8", calib="random",
                                        latency_runs=0)) == 1


class _OversizedPoolHead(nn.Module):
    """Hugging Face EfficientNet's head: ``AvgPool2d(hidden_dim, ceil_mode=True)``, a kernel (here 32) far larger
    than the feature map (4x4) that ceil mode turns into one window over the whole map."""

    def __init__(self, pool: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c, self.fc = nn.Conv2d(3, 16, 3, stride=4, padding=1), nn.Linear(16, 10)
        self.pool = nn.AvgPool2d(32, ceil_mode=True) if pool == "avg" else nn.MaxPool2d(32, ceil_mode=True)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.c(x))), 1))


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_pool_window_past_the_input_becomes_a_global_pool(tmp_path, pool):
    """EfficientNet (Hugging Face) ends in AveragePool(kernel 1280, ceil_mode) on a 7x7 map: past every profile's
    kernel_max it ran on the host and, priced at its nominal kernel, claimed 89% of the model's FLOPs. A pool
    whose one window covers the unpadded input is now a global pool (exact: the window holds only input
    elements), and its cost counts the elements the window covers."""
    from graphopt.frontends.onnx import load_onnx
    from graphopt.ir.cost import node_cost

    src = tmp_path / "head.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_OversizedPoolHead(pool).eval(), (torch.randn(1, 3, 16, 16),), str(src), opset_version=17,
                          dynamo=False)
    g = load_onnx(str(src))
    pn = next(n for n in g.nodes if n.op in ("avg_pool", "max_pool"))
    assert list(pn.attrs["kernel_shape"]) == [32, 32]
    assert node_cost(pn).flops == 16 * 4 * 4  # one output per channel, over the 4x4 elements its window holds
    out = tmp_path / "npu.onnx"
    r = runner.invoke(app, ["export", str(src), "-o", str(out), "--target", "generic-npu-int8", "--calib",
                            "cifar10-demo", "--calib-samples", "16", "--eval-samples", "32", "--latency-runs", "0",
                            "--min-agreement", "0"])
    assert r.exit_code == 0, r.output
    doc = json.loads(report_paths(out)[1].read_text())
    assert "pool-global" in {w["legalizer"] for w in doc["rewrites"]}
    if pool == "avg":  # onnxruntime's quantizer has no int8 GlobalMaxPool: that one stays float, on the host
        assert doc["placement"]["host_nodes"] == [] and doc["placement"]["totals"]["npu"]["flops_share"] == 1.0
    else:
        assert [h["constraints"][0]["rule"] for h in doc["placement"]["host_nodes"]] == ["float_fallback"]
    assert doc["fp32"]["ok"] and doc["fp32"]["max_abs_err"] < 1e-6  # onnxruntime, legalized vs original
    hist = Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    assert hist["Global" + ("Average" if pool == "avg" else "Max") + "Pool"] == 1
    assert "AveragePool" not in hist and "MaxPool" not in hist


def test_a_shared_bias_is_copied_under_a_fresh_name_before_quantization(tmp_path):
    """onnxruntime's QDQ quantizer copies a bias that several nodes read and names the copy ``<name><n>``,
    checking only initializer names: torch.onnx's dynamo exporter names every tensor ``val_<n>``, so the copy of
    ``val_11`` became ``val_117``, an activation's name, and quantize_static failed ("shared mode is not
    supported for weight"; Hugging Face PoolFormer on ethos-u55-like and edgetpu-like). Here onnxruntime's copy
    of bias ``v1`` would be ``v10``, the output of a Reshape."""
    from onnx import TensorProto, helper, numpy_helper

    from graphopt.compare import run_model
    from graphopt.frontends.onnx import load_onnx
    from graphopt.npu.quantize import quantize_qdq, random_calibration, unshare_biases

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "v1"),
             numpy_helper.from_array(np.array([1, 8, 64], np.int64), "s1"),
             numpy_helper.from_array(np.array([1, 8, 8, 8], np.int64), "s2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "v1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["a", "s1"], ["v10"], name="rs1"),
             helper.make_node("Reshape", ["v10", "s2"], ["r"], name="rs2"),
             helper.make_node("Conv", ["r", "w2", "v1"], ["y"], name="c2", pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(tmp_path / "m.onnx"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random calibration
        calib = random_calibration(load_onnx(str(tmp_path / "m.onnx")), 16)
        q = quantize_qdq(m, calib, load_profile("generic-npu-int8"))
    onnx.checker.check_model(q)
    assert list(m.graph.node[3].input) == ["r", "w2", "v1"]  # the caller's model is not changed
    x = calib.feeds[0]["x"]
    want, got = run_model(m, [x])[0], run_model(q, [x])[0]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()  # int8 follows fp32 (onnxruntime on both)
    copy = onnx.ModelProto()
    copy.CopyFrom(m)
    assert unshare_biases(copy) == 1 and {n.input[2] for n in copy.graph.node if n.op_type == "Conv"} == {
        "v1", "v1_bias0"}


def test_default_export_keeps_the_input_files_newer_opset(tmp_path):
    """torch.onnx's default exporter writes opset 20 with Gelu ops; graphopt exported at 18 by default and
    decomposed each Gelu into 5 nodes (Hugging Face ConvNeXt 63 -> 75 nodes, FocalNet 171 -> 234, where onnxslim
    keeps 67 and 179). Without --opset the export now keeps the file's own opset (18..23); --opset 18 still
    decomposes."""
    from graphopt.compare import run_model

    src = tmp_path / "gelu.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_MlpGelu().eval(), (torch.randn(1, 16),), str(src))
    m = onnx.load(str(src))
    own = max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    assert own >= 20 and "Gelu" in {n.op_type for n in m.graph.node}
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    want = run_model(m, [x])[0]
    for extra, opset, gelu in (([], own, True), (["--opset", "18"], 18, False)):
        out = tmp_path / f"out{opset}.onnx"
        r = runner.invoke(app, ["export", str(src), "-o", str(out), "--latency-runs", "0", *extra])
        assert r.exit_code == 0, r.output
        e = onnx.load(str(out))
        assert max(o.version for o in e.opset_import if o.domain in ("", "ai.onnx")) == opset
        assert ("Gelu" in {n.op_type for n in e.graph.node}) is gelu
        assert len(e.graph.node) <= len(m.graph.node) or not gelu
        np.testing.assert_allclose(run_model(e, [x])[0], want, rtol=1e-5, atol=1e-6)
