"""PyTorch frontend: modules / ExportedPrograms / .pt2 archives lowered to the IR and executed.

Every lowering is checked numerically against the eager module, twice: with a reference interpreter that calls
each node's registry implementation in order (so a frontend bug cannot hide behind the backend), and through
``graphopt.backends.torch.to_torch``. Tolerances: rtol 1e-4, atol 1e-5.
"""

from __future__ import annotations

import copy
import inspect
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from graphopt.backends.torch import to_torch
from graphopt.frontends.torch import (
    LoweringError,
    UnsupportedOpError,
    decomposition_table,
    from_torch,
    load_pt2,
    register_lowering,
)
from graphopt.frontends.torch_lowering.context import _RULES
from graphopt.ir.registry import get_op
from graphopt.ir.verify import verify

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(autouse=True, scope="module")
def _quiet_and_single_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------------------------------------ helpers
def run_ir(graph, inputs, training: bool = False) -> list[torch.Tensor]:
    """Reference interpreter: each node's registry implementation, in order; static constants as lists."""
    env: dict[int, object] = {}
    for v, x in zip(graph.inputs, inputs, strict=True):
        env[id(v)] = x
    for v in graph.constants.values():
        env[id(v)] = torch.from_numpy(np.array(v.const, copy=True))
    for n in graph.nodes:
        opdef = get_op(n.op)
        args = []
        for i, v in enumerate(n.inputs):
            if v is None:
                args.append(None)
            elif opdef.input_spec(i).static and v.is_const:
                args.append(np.asarray(v.const).tolist())
            else:
                args.append(env[id(v)])
        kwargs = dict(n.attrs)
        if "training" in inspect.signature(opdef.fn).parameters:
            kwargs["training"] = training
        res = opdef.fn(*args, **kwargs)
        for o, r in zip(n.outputs, res if isinstance(res, tuple | list) else [res], strict=True):
            env[id(o)] = r
    return [env[id(v)] for v in graph.outputs]


def _flat(o) -> list[torch.Tensor]:
    if isinstance(o, torch.Tensor):
        return [o]
    if hasattr(o, "to_tuple"):
        o = o.to_tuple()
    if isinstance(o, tuple | list):
        return [t for x in o for t in _flat(x)]
    return []


def _close(ref: list[torch.Tensor], got: list[torch.Tensor], what: str) -> None:
    assert len(ref) == len(got), f"{what}: {len(got)} outputs, expected {len(ref)}"
    for i, (a, b) in enumerate(zip(ref, got, strict=True)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what} output {i}: {b.dtype}{list(b.shape)} vs " \
                                                          f"{a.dtype}{list(a.shape)}"
        torch.testing.assert_close(b, a, rtol=RTOL, atol=ATOL, msg=lambda m, i=i: f"{what} output {i}: {m}")


def check(model: nn.Module, inputs: tuple, run_inputs: tuple | None = None, *, training: bool = False,
          backend: bool = True, **kw):
    """Lower ``model``, verify the IR, and compare interpreter and backend outputs with eager PyTorch."""
    model.train(training)
    ref_model = copy.deepcopy(model)
    g = from_torch(model, inputs, **kw)
    verify(g)
    run_inputs = run_inputs if run_inputs is not None else inputs
    with torch.no_grad():
        ref = _flat(ref_model(*run_inputs))
        _close(ref, run_ir(g, run_inputs, training=training), "interpreter")
        if backend:
            _close(ref, _flat(to_torch(g).train(training)(*run_inputs)), "to_torch")
    return g


def ops_of(g) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in g.nodes:
        out[n.op] = out.get(n.op, 0) + 1
    return out


# ---------------------------------------------------------------------------------------------- test models
class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4)
        self.bn2 = nn.BatchNorm2d(8, momentum=0.3)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu6(self.bn2(self.conv2(x)))
        x = F.avg_pool2d(self.pool(x), 3, stride=1, padding=1, count_include_pad=False) + x[:, :, ::2, ::2]
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Activations(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 12)
        self.prelu = nn.PReLU(12)

    def forward(self, x):
        h = self.lin(x)
        outs = [F.gelu(h), F.gelu(h, approximate="tanh"), F.silu(h), F.hardswish(h), F.hardsigmoid(h),
                F.leaky_relu(h, 0.2), F.elu(h, 0.7), F.selu(h), F.softplus(h), F.softplus(h, beta=2.0), F.mish(h),
                torch.clamp(h, -0.5, 0.25), torch.sigmoid(h) * torch.tanh(h), self.prelu(h), torch.rsqrt(h.abs() + 1),
                torch.log1p(h.abs()), torch.expm1(h), h.pow(2) - h.exp() / 3, torch.erf(h), 1.0 - h, h.clamp(min=0),
                F.softmax(h, -1), F.log_softmax(h, 1), torch.where(h > 0, h, h * 0.1)]
        return torch.cat(outs, dim=-1)


class Block(nn.Module):
    """Pre-LN transformer block: SDPA (causal) and a hand-written masked attention in parallel."""

    def __init__(self, d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d, elementwise_affine=False)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(0.0), nn.Linear(2 * d, d))

    def forward(self, x, mask):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        a1 = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        s = (q @ k.transpose(-2, -1)) / (d // self.heads) ** 0.5
        s = s.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        a2 = s.softmax(-1) @ v
        a = (a1 + a2).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        return x + self.mlp(self.ln2(x))


class TokenModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(20, 8)
        self.pos = nn.Embedding(10, 8)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 8))
        self.head = nn.Linear(8, 4)

    def forward(self, ids):
        t = ids.shape[1]
        pos = torch.arange(t, device=ids.device).unsqueeze(0)
        h = (self.tok(ids) + self.pos(pos)) * self.scale
        valid = (ids != 0) & ~(ids > 15)
        h = h.masked_fill(~valid.unsqueeze(-1), 0.0)
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        mixed = torch.where(causal, 1.0, 0.0) @ h / torch.arange(1, t + 1).unsqueeze(-1)
        counts = valid.long().cumsum(-1)
        return self.head(mixed).softmax(-1), counts, (ids // 3) * 2 - ids % 5, ids.float().mean(-1)


class Resample(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1)
        self.gn = nn.GroupNorm(2, 4)
        self.inorm = nn.InstanceNorm2d(4, affine=True)
        self.c1 = nn.Conv1d(4, 4, 3, padding="same", dilation=2)
        self.c3 = nn.Conv3d(1, 2, 3, padding=1)

    def forward(self, x):
        a = F.interpolate(x, scale_factor=2, mode="nearest")
        b = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        c = F.interpolate(x, size=(12, 12), mode="bilinear", align_corners=True)
        d = F.interpolate(x, size=(12, 12), mode="nearest-exact")
        e = self.gn(self.up(x)) + self.inorm(a)
        f = F.pixel_unshuffle(F.pixel_shuffle(torch.cat([x, x * 2], 1), 2).flip(-1), 2)
        g = self.c1(x.flatten(2)).view_as(x)
        h = self.c3(x[:, :1].unsqueeze(1)).sum(1)
        return a + b + e, c - d, f, F.pad(g, (1, 2, 0, 1), value=0.5), F.pad(h, (1, 1, 1, 1), mode="reflect")


class ShapeOps(nn.Module):
    def forward(self, x, idx):
        a, b, c = torch.split(x, [1, 2, 3], dim=1)
        u = torch.stack(torch.unbind(x[:, :2], dim=1), dim=-1)
        g = x[:, idx] + x[idx[:2]].sum(0, keepdim=True)[:, 1:4].expand(x.shape[0], -1, -1)
        gi = x[idx[:2], idx[1:3]]
        sel = torch.index_select(x, 2, idx) + torch.gather(x, 2, idx.expand(x.shape[0], 6, 3))
        top_v, top_i = torch.topk(x, 2, dim=-1)
        mx, amx = x.max(dim=1)
        r = torch.roll(x, shifts=2, dims=2).flip(1).repeat(1, 1, 2)
        stats = torch.stack([x.var(-1), x.std(-1, unbiased=False), x.amax(-1), x.norm(dim=-1),
                             torch.logsumexp(x, -1), x.prod(-1), x.argmin(-1).float()], -1)
        tri = torch.triu(x[0], diagonal=1) + torch.tril(x[0])
        return (a.squeeze(1) * b.mean(1), c.permute(2, 0, 1).contiguous().view(-1), u, g, gi, sel, top_v,
                top_i, mx, amx, r, stats, tri.t(), x.unsqueeze(0).squeeze(), x.narrow(1, 1, 3))


class InPlaceWrites(nn.Module):
    """Indexed assignment: functionalization turns these into slice/select scatters and index_put."""

    def forward(self, x, idx):
        y = x.clone()
        y[:, 1:3] = x[:, :2] * 2
        y[:, 0] = 5.0
        y[y > 1.5] = 0.0
        z = torch.zeros_like(x).scatter(1, idx, x[:, :2])
        w = torch.zeros(3, 4).scatter_add(1, idx, torch.ones(3, 2))
        return y, z, w, x.new_zeros(3, 4).scatter(1, idx, 7.0)


# ------------------------------------------------------------------------------------------------------ tests
def test_convnet_eval_names_kinds_and_ops():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    model = ConvNet()
    g = check(model, (x,))
    assert [v.name for v in g.inputs] == ["x"]
    kinds = {k: v.kind for k, v in g.constants.items()}
    assert kinds["conv1.weight"] == "param" and kinds["bn1.running_mean"] == "buffer"
    assert kinds["fc.bias"] == "param"
    np.testing.assert_array_equal(g.constants["bn2.running_var"].const, model.bn2.running_var.numpy())
    assert set(model.state_dict()) - set(g.constants) == {"bn1.num_batches_tracked", "bn2.num_batches_tracked"}
    ops = ops_of(g)
    assert ops["conv"] == 2 and ops["batch_norm"] == 2 and ops["gemm"] == 1 and ops["global_avg_pool"] == 1
    assert ops["max_pool"] == 1 and ops["avg_pool"] == 1 and ops["flatten"] == 1 and ops["clip"] == 1
    conv1 = g.find_node("conv1")
    assert conv1.op == "conv" and conv1.attrs["pads"] == [1, 1, 1, 1] and len(conv1.inputs) == 2
    assert g.find_node("conv2").attrs["group"] == 4
    bn2 = g.find_node("bn2")
    assert bn2.attrs["momentum"] == pytest.approx(0.7) and bn2.inputs[3].name == "bn2.running_mean"
    fc = g.find_node("fc")
    assert fc.op == "gemm" and fc.attrs["transB"] == 1 and fc.inputs[1].name == "fc.weight"
    assert g.meta["training"] is False


def test_convnet_train_mode_batch_stats_and_running_updates():
    torch.manual_seed(0)
    model = ConvNet().train()
    ref = copy.deepcopy(model)
    x = torch.randn(4, 3, 16, 16)
    g = from_torch(model, (x,))
    assert g.meta["training"] is True and ops_of(g)["batch_norm"] == 2
    mod = to_torch(g).train()
    y_ref, y = ref(x), mod(x)
    torch.testing.assert_close(y, y_ref, rtol=RTOL, atol=ATOL)
    # The IR's batch_norm updates running statistics itself, like the original module.
    torch.testing.assert_close(mod.state_dict()["bn2.running_mean"], ref.bn2.running_mean)
    torch.testing.assert_close(mod.state_dict()["bn1.running_var"], ref.bn1.running_var)
    # Training through the emitted module reaches the original parameter names.
    y.sum().backward()
    assert mod.get_parameter("conv1.weight").grad is not None


def test_activations_and_elementwise_math():
    torch.manual_seed(0)
    g = check(Activations(), (torch.randn(3, 6),))
    ops = ops_of(g)
    for op in ("gelu", "silu", "hard_swish", "hard_sigmoid", "leaky_relu", "elu", "selu", "softplus", "mish",
               "clip", "prelu", "softmax", "log_softmax", "where", "erf"):
        assert op in ops, op
    assert ops["gemm"] == 1  # a 2-D linear is one gemm, not permute + addmm


def test_transformer_block_with_sdpa_and_masks():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    g = check(Block(), (x, mask))
    ops = ops_of(g)
    assert ops["layer_norm"] == 2 and ops["softmax"] == 2 and ops["gelu"] == 1
    assert "expand" not in ops and "identity" not in ops  # attention is the compact math form
    ln2 = g.find_node("ln2")  # LayerNorm without affine parameters gets a ones scale
    assert ln2.op == "layer_norm" and ln2.inputs[1].kind == "const"


def test_dynamic_batch_transformer_and_convnet():
    torch.manual_seed(0)
    x, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.long)
    g = check(Block(), (x, mask), (torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.long)), dynamic_batch=True)
    assert g.inputs[0].type.shape == ("batch", 5, 16) and g.inputs[1].type.shape == ("batch", 5)
    assert g.outputs[0].type.shape[0] == "batch"
    g = check(ConvNet(), (torch.randn(2, 3, 16, 16),), (torch.randn(5, 3, 16, 16),), dynamic_batch=True)
    assert str(g.inputs[0].type) == "float32[batch,3,16,16]" and str(g.outputs[0].type) == "float32[batch,5]"
    with pytest.raises(ValueError, match="batch size >= 2"):
        from_torch(ConvNet().eval(), (torch.randn(1, 3, 16, 16),), dynamic_batch=True)

    class FixedBatch(nn.Module):
        def forward(self, x):
            return x.view(2, -1) * 2

    with pytest.raises(LoweringError, match="cannot keep the batch dimension of FixedBatch dynamic"):
        from_torch(FixedBatch(), (torch.randn(2, 3),), dynamic_batch=True)


def test_tokens_embedding_positions_integer_math_and_folding():
    torch.manual_seed(0)
    ids = torch.tensor([[3, 0, 7, 12, 19, 5], [1, 2, 3, 4, 5, 16]])
    g = check(TokenModel(), (ids,))
    ops = ops_of(g)
    assert ops["gather"] == 2 and g.constants["scale"].kind == "buffer"
    assert "range" not in ops and "trilu" not in ops  # arange / ones().tril() are literals: folded to constants
    assert [v.type.dtype.value for v in g.outputs] == ["float32", "int64", "int64", "float32"]


def test_resampling_norms_pads_and_convolution_variants():
    torch.manual_seed(0)
    g = check(Resample(), (torch.randn(2, 4, 6, 6),))
    ops = ops_of(g)
    assert ops["resize"] == 4 and ops["conv_transpose"] == 1 and ops["group_norm"] == 1
    assert ops["instance_norm"] == 1 and ops["depth_to_space"] == 1
    modes = sorted((n.attrs["mode"], n.attrs["coordinate_transformation_mode"]) for n in g.nodes if n.op == "resize")
    assert modes == [("linear", "align_corners"), ("linear", "pytorch_half_pixel"), ("nearest", "asymmetric"),
                     ("nearest", "half_pixel")]
    assert {n.attrs["mode"] for n in g.nodes if n.op == "pad"} == {"constant", "reflect"}


def test_shape_and_indexing_ops():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 5)
    idx = torch.tensor([2, 0, 3])
    check(ShapeOps(), (x, idx))


def test_indexed_assignment_and_scatter():
    g = check(InPlaceWrites(), (torch.randn(3, 4), torch.tensor([[0, 2], [1, 3], [2, 0]])))
    assert ops_of(g)["scatter_elements"] == 3 and "where" in ops_of(g)


def test_exported_program_and_pt2_round_trip(tmp_path):
    torch.manual_seed(0)
    model = ConvNet().eval()
    x = torch.randn(3, 3, 16, 16)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("n")},))
    g1 = from_torch(ep)
    assert g1.inputs[0].type.shape[0] == "batch"
    path = tmp_path / "convnet.pt2"
    torch.export.save(ep, str(path))
    g2 = load_pt2(path)
    verify(g2)
    assert g2.name == "convnet" and ops_of(g1) == ops_of(g2)
    x2 = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        _close([model(x2)], run_ir(g2, (x2,)), "pt2")
    with pytest.raises(FileNotFoundError, match="no such"):
        load_pt2(tmp_path / "missing.pt2")


def test_decompose_false_lowers_training_ir_with_inplace_ops():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3), nn.Hardswish(), nn.Softmax(-1))
    g = check(model, (torch.randn(2, 3, 8, 8),), decompose=False)
    assert ops_of(g)["conv"] == 1 and ops_of(g)["hard_swish"] == 1


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        y = self.bn(self.lin(x))
        if y.mean() > -100.0:  # data-dependent branch: torch.export refuses, the tracing fallback specializes
            return F.relu(y) * 2
        return y - 1


@pytest.mark.parametrize("training", [False, True])
def test_data_dependent_control_flow_falls_back_to_tracing(training):
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    model = DataDependent().train(training)
    before = copy.deepcopy(model.state_dict())
    with pytest.warns(UserWarning, match="tracing one real execution"):
        g = from_torch(model, (x,))
    for k, v in model.state_dict().items():  # tracing ran the model on copies of its buffers
        torch.testing.assert_close(v, before[k])
    verify(g)
    with torch.no_grad():
        _close([model(x)], run_ir(g, (x,), training=training), "traced fallback")
    assert set(ops_of(g)) == {"gemm", "batch_norm", "relu", "mul"}  # the branch condition was not lowered
    assert g.meta["training"] is training and g.constants["bn.running_var"].kind == "buffer"
    with pytest.raises(LoweringError, match="static shapes only"):
        from_torch(model, (x,), dynamic_batch=True)


class Unsupported(nn.Module):
    def forward(self, x):
        return torch.special.erfcx(x * 0.5) + 1


def test_unsupported_op_names_op_node_and_source_then_register_rule():
    x = torch.rand(2, 3) * 4 - 2
    with pytest.raises(UnsupportedOpError) as ei:
        from_torch(Unsupported(), (x,))
    msg = str(ei.value)
    assert "aten.special_erfcx.default" in msg and "FX node 'special_erfcx'" in msg
    assert "test_torch_frontend.py" in msg and "register_lowering(torch.ops.aten.special_erfcx.default)" in msg

    @register_lowering(torch.ops.aten.special_erfcx.default)
    def _erfcx(ctx, node):  # exp(x^2) * (1 - erf(x))
        v = ctx.v(node.args[0])
        one = ctx.scalar(1.0, "float32")
        return ctx.op("mul", [ctx.op("exp", [ctx.op("mul", [v, v])]), ctx.op("sub", [one, ctx.op("erf", [v])])])

    try:
        check(Unsupported(), (x,))
    finally:
        _RULES.pop(torch.ops.aten.special_erfcx.default)


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match="example_inputs"):
        from_torch(ConvNet())
    with pytest.raises(TypeError, match="nn.Module or a torch.export.ExportedProgram"):
        from_torch("model.pt2")

    class ReturnsObject(nn.Module):
        def forward(self, x):
            return {"a": x, "obj": object()}

    with pytest.raises(LoweringError, match="non-tensor|could not capture"):
        from_torch(ReturnsObject(), (torch.randn(2),))


def test_decomposition_table_keeps_single_op_primitives():
    table = decomposition_table()
    aten = torch.ops.aten
    for op in (aten.linear.default, aten.silu.default, aten.scaled_dot_product_attention.default):
        assert op not in table
    assert aten.addcmul.default in table  # everything else still decomposes to core ATen


# ------------------------------------------------------------------------------------------------- model zoo
ZOO = [("resnet20", False, False), ("bert_tiny", True, True), ("mamba2_tiny", False, False)]


@pytest.mark.parametrize("name,training,dynamic", ZOO, ids=[z[0] for z in ZOO])
def test_model_zoo(name, training, dynamic):
    models = pytest.importorskip("graphopt.models")
    torch.manual_seed(0)
    model = models.get(name, seed=0)
    inputs = tuple(models.example_inputs(name, batch=2))
    run = tuple(models.example_inputs(name, batch=3)) if dynamic else None
    g = check(model, inputs, run, training=training, dynamic_batch=dynamic)
    assert len(g) > 10 and all(v.kind == "input" for v in g.inputs)


# -------------------------------------------------------------------------------------- Hugging Face models
def _hf_cases():
    T = pytest.importorskip("transformers")
    ids = torch.randint(1, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    img = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return T, ids, img


HF = ["bert", "gpt2", "vit", "mobilevit", "swin", "convnext", "mamba2"]


@pytest.mark.parametrize("arch", HF)
def test_transformers_architectures(arch):
    T, ids, img = _hf_cases()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build = {
            "bert": lambda: (T.BertModel(T.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                      num_attention_heads=2, intermediate_size=64,
                                                      max_position_embeddings=64)), ids, True),
            "gpt2": lambda: (T.GPT2LMHeadModel(T.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2,
                                                            n_positions=64, use_cache=False, bos_token_id=0,
                                                            eos_token_id=0)), ids, True),
            "vit": lambda: (T.ViTModel(T.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                   intermediate_size=64, image_size=32, patch_size=8)), img, False),
            "mobilevit": lambda: (T.MobileViTModel(T.MobileViTConfig(
                image_size=32, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32],
                num_attention_heads=2)), img, False),
            "swin": lambda: (T.SwinModel(T.SwinConfig(image_size=32, patch_size=2, embed_dim=16, depths=[1, 1],
                                                      num_heads=[2, 2], window_size=4)), img, True),
            "convnext": lambda: (T.ConvNextModel(T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1],
                                                                  num_stages=2)), img, False),
            "mamba2": lambda: (T.Mamba2Model(T.Mamba2Config(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                            state_size=8, expand=2, head_dim=8, num_heads=8,
                                                            n_groups=1, chunk_size=8, use_cache=False)), ids, False),
        }
        model, x, dynamic = build[arch]()
        run = (torch.cat([x, x[:1]]),) if dynamic else None
        check(model.eval(), (x,), run, dynamic_batch=dynamic)
