"""`graphopt score`, `graphopt inspect --proxies` and the proxy-<name> passes on real model files.

Reference values are the proxies of ``graphopt.predictors.proxies`` computed directly on the *original*
``nn.Module`` the IR file was lowered from (real Conv2d/BatchNorm/ReLU/Linear modules), on a batch built here
from the documented sampling rule: an independent path to the same numbers.
"""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from graphopt.predictors import proxies
from graphopt.predictors.proxies.passes import GraphProxyNet, sequence_aware_ce
from typer.testing import CliRunner

from graphopt.backends.torch import to_torch
from graphopt.cli import app
from graphopt.eval.data import load_dataset, prepare_batch
from graphopt.frontends.torch import from_torch
from graphopt.ir import save
from graphopt.ir.serialize import structure_hash

runner = CliRunner()
BATCH = 16


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (tests/conftest.py)


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()  # fmt: skip


def token_net() -> nn.Module:
    """Embedding -> Linear -> ReLU -> Linear over (B, L) token ids: Linear on 3-D inputs lowers to transpose+matmul."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Embedding(64, 16), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 64, bias=False)).eval()


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory):
    net = conv_net()
    g = from_torch(net, (torch.randn(2, 3, 32, 32),), dynamic_batch=True)
    path = save(g, tmp_path_factory.mktemp("score") / "conv.json")
    return net, g, path


@pytest.fixture(scope="module")
def token_model(tmp_path_factory):
    net = token_net()
    g = from_torch(net, (torch.randint(0, 64, (2, 20)),), dynamic_batch=True)
    path = save(g, tmp_path_factory.mktemp("score") / "tokens.json")
    return net, g, path


def demo_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The documented rule: ``n`` distinct training samples drawn with ``default_rng(seed)``, sorted."""
    ds = load_dataset("cifar10-demo", split="train", seed=0)
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False)))
    return prepare_batch(ds.x[idx], ds.y[idx], ds.info)


def score_json(path, *args) -> dict:
    res = runner.invoke(app, ["score", str(path), *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)  # exactly one JSON object on stdout


def close(a: float, b: float, rtol: float = 1e-5) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-9)


def test_emitted_module_and_proxy_view_compute_the_same_function(conv_model, token_model):
    for net, g, _ in (conv_model, token_model):
        x = torch.randn(3, 3, 32, 32) if net is conv_model[0] else torch.randint(0, 64, (3, 20))
        view, emitted = GraphProxyNet(g), to_torch(g)
        for mode in (False, True):  # train mode: batch statistics (and their in-place updates) as in the original
            view.train(mode), emitted.train(mode)
            torch.testing.assert_close(view(x), emitted(x), rtol=0, atol=0)
    kinds = {type(m).__name__ for m in GraphProxyNet(conv_model[1]).layers.children()}
    assert kinds == {"IRConv2d", "IRBatchNorm", "IRReLU", "IRGlobalAvgPool", "IRLinear"}


def test_score_json_equals_proxies_on_the_original_module(conv_model):
    net, _, path = conv_model
    got = score_json(path, "--proxy", "all", "--batch", str(BATCH), "--seed", "3")
    assert set(got) == set(proxies.names())
    batch = demo_batch(BATCH, 3)
    for name in proxies.names():
        ref = proxies.compute(name, net, batch, seed=3).score
        assert close(got[name], ref), (name, got[name], ref)


def test_synflow_node_contributions_sum_to_the_score_and_match_layers(conv_model):
    net, _, path = conv_model
    res = runner.invoke(app, ["inspect", str(path), "--proxies", "synflow,snip,nwot", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)["proxies"]
    syn = doc["synflow"]
    assert math.isclose(math.fsum(r["value"] for r in syn["nodes"]), syn["score"], rel_tol=1e-12)
    assert [r["op"] for r in syn["nodes"]].count("conv") == 2 and len(syn["nodes"]) == 3
    assert math.isclose(sum(r["share_pct"] for r in syn["nodes"]), 100.0)
    # each node's value is the original layer's (keys: Sequential indices = node names)
    ref = proxies.compute("synflow", net, demo_batch(64, 0)).per_layer
    assert {r["node"]: r["value"] for r in syn["nodes"]} == pytest.approx({k.split(".")[0]: v for k, v in ref.items()})
    assert doc["nwot"]["additive"] is False and doc["nwot"]["nodes"] == []
    assert [abs(r["value"]) for r in doc["snip"]["nodes"]] == sorted((abs(r["value"]) for r in doc["snip"]["nodes"]),
                                                                     reverse=True)
    table = runner.invoke(app, ["inspect", str(path), "--proxies", "synflow"])
    assert table.exit_code == 0 and "per-node contributions" in table.stdout and "conv" in table.stdout


def test_deterministic_under_a_seed(conv_model):
    path = conv_model[2]
    a = score_json(path, "--proxy", "snip,nwot,zen", "--batch", "8", "--seed", "1")
    b = score_json(path, "--proxy", "snip,nwot,zen", "--batch", "8", "--seed", "1")
    c = score_json(path, "--proxy", "snip,nwot,zen", "--batch", "8", "--seed", "2")
    assert a == b
    assert all(a[k] != c[k] for k in a)


def test_unknown_proxy_and_unusable_inputs_exit_2_with_one_line(conv_model, token_model):
    res = runner.invoke(app, ["score", str(conv_model[2]), "--proxy", "synflow,bogus", "--json"])
    assert res.exit_code == 2 and res.stdout == ""
    assert res.output.strip().startswith("error:") and "bogus" in res.output
    assert all(p in res.output for p in proxies.names())  # lists the available ones
    res = runner.invoke(app, ["score", str(token_model[2]), "--proxy", "snip"])  # random tokens have no labels
    assert res.exit_code == 2 and "needs labelled data" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["score", str(conv_model[2]), "--proxy", "synflow", "--data", "/nonexistent/x.npz"])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_token_model_random_inputs_and_sequence_data(token_model):
    net, _, path = token_model
    got = score_json(path, "--proxy", "synflow,params,flops", "--batch", "4", "--seed", "5")
    x = torch.randint(0, 64, (4, 20), generator=torch.Generator().manual_seed(5))  # ids below the embedding size
    for name in got:
        assert close(got[name], proxies.compute(name, net, x, seed=5).score), name
    got = score_json(path, "--proxy", "grad_norm,snip,fisher", "--data", "assoc_recall", "--batch", "8")
    ds = load_dataset("assoc_recall", split="train", seed=0)
    idx = torch.from_numpy(np.sort(np.random.default_rng(0).choice(len(ds), 8, replace=False)))
    batch = (ds.x[idx], ds.y[idx])
    for name in got:
        ref = proxies.compute(name, net, batch, loss_fn=sequence_aware_ce).score
        assert close(got[name], ref), (name, got[name], ref)


def test_proxy_passes_annotate_without_changing_the_graph(conv_model):
    from graphopt.predictors.proxies import passes  # noqa: F401  (registers the real passes)

    from graphopt.pass_manager import PassManager

    _, g, _ = conv_model
    res = PassManager("proxy-synflow[batch=8],proxy-grad-norm[batch=8;seed=1]").run(g)
    assert all(not s["changes"] for s in res.summary().values())
    out = res.graph
    assert structure_hash(out) == structure_hash(g) and "proxy.synflow" not in g.meta  # input graph untouched
    for key in ("proxy.synflow", "proxy.grad_norm"):
        per_node = [n.meta[key] for n in out.nodes if key in n.meta]
        assert len(per_node) == 3 and math.isclose(math.fsum(per_node), out.meta[key], rel_tol=1e-12)
    assert close(out.meta["proxy.grad_norm"], proxies.compute("grad_norm", conv_model[0], demo_batch(8, 1),
                                                              seed=1).score)
    listing = runner.invoke(app, ["passes"])
    assert all(f"proxy-{p.replace('_', '-')}" in listing.stdout for p in proxies.names())


def test_cli_pass_declarations_cover_every_proxy():
    from graphopt.commands.score_cmd import BUILTIN_PROXIES

    assert set(BUILTIN_PROXIES) == set(proxies.names())


def test_proxy_passes_reach_the_registry_from_python_through_the_entry_point():
    """Without the CLI: the package's own `graphopt.passes` entry point registers the proxy passes."""
    from graphopt.pass_api import all_passes, get_pass

    assert get_pass("proxy-synflow").name == "proxy-synflow"
    assert {"proxy-snip", "proxy-grad-norm", "proxy-nwot"} <= set(all_passes())


def test_all_skips_proxies_that_do_not_apply_and_keeps_the_rest(tmp_path):
    """``--proxy all`` on a model without rectifiers (tanh): NASWOT is undefined, so it is null with a warning
    naming why, and every other proxy still equals its direct computation. Asking for nwot alone is an error."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 10)).eval()
    g = from_torch(net, (torch.randn(2, 3, 32, 32),), dynamic_batch=True)
    path = save(g, tmp_path / "tanh.json")
    res = runner.invoke(app, ["score", str(path), "--batch", str(BATCH), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert set(got) == set(proxies.names()) and got["nwot"] is None
    assert "skipped nwot" in res.stderr and "no ReLU" in res.stderr
    x, y = demo_batch(BATCH, 0)
    for name in ("synflow", "snip", "params"):
        assert close(got[name], proxies.compute(name, net, (x, y), seed=0).score), name
    res = runner.invoke(app, ["score", str(path), "--proxy", "nwot", "--json"])
    assert res.exit_code == 2 and "no ReLU" in res.output and "Traceback" not in res.output


def test_nwot_of_a_gelu_model_reads_the_gelu_input_signs(tmp_path):
    """Without any ReLU, NASWOT's codes come from the smooth rectifiers (documented extension): the CLI on the
    IR graph, the nn.Module hooks and the closed form log|K| of the GELUs' input signs agree."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 8, 3, padding=1), nn.SiLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    g = from_torch(net, (torch.randn(2, 3, 32, 32),), dynamic_batch=True)
    path = save(g, tmp_path / "gelu.json")
    res = runner.invoke(app, ["score", str(path), "--proxy", "nwot", "--batch", str(BATCH), "--json"])
    assert res.exit_code == 0, res.output
    x, _ = demo_batch(BATCH, 0)
    with torch.no_grad():
        a1 = net[0](x)
        a2 = net[2](net[1](a1))
    k = np.zeros((BATCH, BATCH))
    for a in (a1, a2):
        c = (a.reshape(BATCH, -1) > 0).double().numpy()
        k += c @ c.T + (1 - c) @ (1 - c).T
    want = float(np.linalg.slogdet(k)[1])
    assert close(json.loads(res.stdout)["nwot"], want)
    assert close(proxies.compute("nwot", net, x, seed=0).score, want)
    relu_too = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.GELU())  # ReLUs present: only they count
    xb = torch.randn(5, 4)
    c = (relu_too[0](xb) > 0).double().detach().numpy()
    only_relu = float(np.linalg.slogdet(c @ c.T + (1 - c) @ (1 - c).T)[1])
    assert proxies.compute("nwot", relu_too, xb).score == pytest.approx(only_relu, rel=1e-12)


def test_error_messages_keep_bracketed_shapes(tmp_path):
    """Rich markup must not eat ``[batch,32]`` from a message (it looks like a style tag): a token model of
    length 32 scored on the length-20 assoc_recall task names both shapes."""
    g = from_torch(token_net(), (torch.randint(0, 64, (2, 32)),), dynamic_batch=True)
    path = save(g, tmp_path / "tokens32.json")
    res = runner.invoke(app, ["score", str(path), "--data", "assoc_recall", "--proxy", "snip"])
    assert res.exit_code == 2 and "int64[batch,32]" in res.output and "(20,)" in res.output, res.output


def test_synflow_converts_float_literals_to_float64():
    """SynFlow runs the proxy view in float64; a float32 literal (kind ``const``, e.g. the zero initial state an
    LSTM lowers to) used by a matmul must follow, else the matmul fails on mixed dtypes. Closed form for
    f(x) = (x @ L) Wᵀ on an all-ones input: synflow = Σ_o Σ_i |W_oi| · |Σ_k L_ki| (literals are not made absolute)."""
    from graphopt.ir import DType, Graph, TensorType

    rng = np.random.default_rng(4)
    lit = rng.standard_normal((4, 3)).astype(np.float32)
    w = rng.standard_normal((2, 3)).astype(np.float32)
    g = Graph("lit")
    x = g.add_input("x", TensorType(DType.float32, ("batch", 4)))
    y = g.create_node("matmul", [x, g.add_const("mix", lit, "const")], name="mix").output
    y = g.create_node("gemm", [y, g.add_const("fc.weight", w, "param")], {"transB": 1}, name="fc").output
    g.set_outputs([y])
    net = GraphProxyNet(g)
    got = proxies.compute("synflow", net, torch.randn(5, 4), seed=0).score
    want = float((np.abs(w.astype(np.float64)) * np.abs(lit.astype(np.float64).sum(0))[None, :]).sum())
    assert got == pytest.approx(want, rel=1e-6)
    assert all(t.dtype == torch.float64 for t in net.double()._literals.values())


@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh", "mish"])
def test_nwot_of_an_onnx_model_with_decomposed_activations_equals_the_module(tmp_path, act):
    """torch.onnx writes SiLU as x*Sigmoid(x), GELU as the erf (or tanh) formula and Mish (opset < 18) as
    x*Tanh(Softplus(x)): no rectifier node is left, and NASWOT used to refuse the model. It reads the sign of each
    decomposed activation's input, so the score equals NASWOT on the original module's nn.SiLU/GELU/Mish."""
    import warnings

    make = {"silu": nn.SiLU, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "mish": nn.Mish}
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), make[act](), nn.Conv2d(8, 8, 3, padding=1), make[act](),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    path = tmp_path / f"{act}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(2, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    from graphopt.frontends.onnx import load_onnx

    g = load_onnx(str(path))
    assert not {"gelu", "silu", "mish"} & {n.op for n in g.nodes}  # still decomposed in the IR
    res = runner.invoke(app, ["score", str(path), "--proxy", "nwot", "--batch", str(BATCH), "--json"])
    assert res.exit_code == 0, res.output
    x, _ = demo_batch(BATCH, 0)
    want = proxies.compute("nwot", net, x, seed=0)
    assert close(json.loads(res.stdout)["nwot"], want.score)
    assert len(proxies.compute("nwot", GraphProxyNet(g), x, seed=0).per_layer) == 2  # one code per activation


def test_device_option_runs_on_cpu_and_refuses_a_missing_gpu(conv_model):
    _, _, path = conv_model
    cpu = score_json(path, "--proxy", "synflow", "--device", "cpu")
    auto = score_json(path, "--proxy", "synflow")
    if not torch.cuda.is_available():
        assert cpu["synflow"] == auto["synflow"]
        bad = runner.invoke(app, ["score", str(path), "--proxy", "synflow", "--device", "cuda"])
        assert bad.exit_code == 2 and "no CUDA GPU" in bad.output


def _bn_onnx(path, shared: bool):
    """Conv -> BatchNormalization (scale 1, bias 0, mean 0, var 1: a fresh BatchNorm) -> ReLU -> GAP -> Gemm."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "fc")]
    names = ["one", "zero", "zero", "one"] if shared else ["scale", "bias", "mean", "var"]
    for name in dict.fromkeys(names):
        inits.append(numpy_helper.from_array(np.full(8, 1.0 if name in ("one", "scale", "var") else 0.0,
                                                     np.float32), name))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", *names], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_batch_norm_whose_statistics_share_constants_with_its_affine_scores(tmp_path):
    """An exporter that deduplicates equal initializers makes a fresh BatchNorm read one tensor as scale and
    variance and another as bias and mean (LeViT's BatchNorm1d layers from torch.onnx): building the proxies'
    module looked the shared tensor up on a layer not registered yet, an AttributeError traceback. It scores
    now, exactly like the same model with four distinct tensors."""
    got = {}
    for shared in (True, False):
        src = _bn_onnx(tmp_path / f"bn_{shared}.onnx", shared)
        r = runner.invoke(app, ["score", str(src), "--json", "--batch", "8", "--proxy", "synflow,snip,nwot"])
        assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
        assert r.exit_code == 0, r.output
        got[shared] = json.loads(r.stdout.strip().splitlines()[-1])
    assert got[True] == pytest.approx(got[False], rel=1e-6)


def test_fixed_batch_hint_only_when_another_batch_was_fed(monkeypatch):
    """A shape error at the file's own batch is not the fixed batch's doing: the message no longer tells the user
    to pass that very batch (issue 22: RepViT failed at --batch 1 and was told to use --batch 1)."""
    import graphopt.predictors.proxies.passes as pp

    def shape_error(*_a, **_k):
        raise RuntimeError("size mismatch in some layer")

    monkeypatch.setattr(pp, "compute", shape_error)
    g = from_torch(conv_net(), (torch.randn(1, 3, 8, 8),))  # batch fixed at 1
    msgs = {}
    for n in (1, 4):
        errors: dict[str, str] = {}
        pp.score_graph(g, ["grad_norm"], pp.ProxyBatch(torch.randn(n, 3, 8, 8), torch.zeros(n, dtype=torch.long),
                                                       "test"), errors=errors)
        msgs[n] = errors["grad_norm"]
    assert "size mismatch" in msgs[1] and "--batch" not in msgs[1] and "fixed batch" not in msgs[1]
    assert "fixed batch size" in msgs[4] and "--batch 1" in msgs[4]
