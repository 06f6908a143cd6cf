"""Tests for graphopt.models: shapes, determinism, export (torch.export + ONNX/onnxruntime), published
parameter counts, NB201 encodings against the shared CSV, and Mamba2 SSD (chunked scan == explicit M == naive
recurrence)."""

from __future__ import annotations

import csv
import inspect
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graphopt import models

NB201_CSV = Path("/work/shared/data/nas/nb201_index_tuple_archstr.csv")

EXPECTED_NAMES = {
    "resnet20",
    "resnet56",
    "resnet18",
    "mobilenetv2",
    "efficientnet_b0",
    "vit_tiny",
    "convnext_tiny_cifar",
    "bert_tiny",
    "mamba2_tiny",
    "hrnet_lite",
    "nb201",
}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These models are tiny: one intra-op thread avoids OpenMP oversubscription on a shared 2-core box."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _tuple_out(y):
    return y if isinstance(y, tuple) else (y,)


def _expected_shapes(name: str, batch: int) -> list[tuple[int, ...]]:
    d = models.info(name)["defaults"]
    if name == "bert_tiny":
        return [(batch, 32, d["hidden"]), (batch, d["num_labels"])]
    if name == "mamba2_tiny":
        return [(batch, 32, d["vocab_size"])]
    if name == "hrnet_lite":
        return [(batch, d["num_classes"], 32, 32)]
    return [(batch, d["num_classes"])]


def _assert_close(got, want, rtol: float = 1e-4) -> None:
    for g, w in zip(_tuple_out(got), _tuple_out(want), strict=True):
        g = torch.as_tensor(g)
        assert g.shape == w.shape
        scale = float(w.abs().max()) + 1e-12
        torch.testing.assert_close(g, w, rtol=rtol, atol=rtol * scale)


# ----------------------------------------------------------------------------------------------- registry


def test_registry_names_info_and_errors():
    assert set(models.names()) == EXPECTED_NAMES
    for name in models.names():
        meta = models.info(name)
        assert meta["task"] in {"classification", "segmentation", "lm", "encoder"}
        assert meta["defaults"]["dropout"] == 0.0
        # registry defaults must agree with the factory signature (no silent drift)
        mod_name, fn_name = meta["constructor"].rsplit(".", 1)
        factory = getattr(__import__(mod_name, fromlist=[fn_name]), fn_name)
        sig = inspect.signature(factory).parameters
        for k, v in meta["defaults"].items():
            assert k in sig, (name, k)
            assert sig[k].default == v, (name, k, sig[k].default, v)
    with pytest.raises(ValueError, match="resnet20"):
        models.get("no_such_net")
    with pytest.raises(ValueError, match="unknown argument"):
        models.get("resnet20", widht=3)
    with pytest.raises(ValueError, match="unknown argument"):
        models.example_inputs("bert_tiny", image_size=32)
    assert models.info("hrnet_lite")["task"] == "segmentation"
    assert models.info("mamba2_tiny")["task"] == "lm"
    assert models.info("bert_tiny")["task"] == "encoder"


def test_example_inputs_deterministic_and_typed():
    a = models.example_inputs("resnet20", batch=3)[0]
    b = models.example_inputs("resnet20", batch=3)[0]
    assert a.shape == (3, 3, 32, 32) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, models.example_inputs("resnet20", batch=3, seed=1)[0])
    ids = models.example_inputs("mamba2_tiny", seq_len=20, vocab_size=50)[0]
    assert ids.dtype == torch.int64 and ids.shape == (2, 20) and int(ids.max()) < 50
    assert models.example_inputs("vit_tiny", img_size=64)[0].shape == (2, 3, 64, 64)


def test_seeded_construction_is_deterministic_and_leaves_global_rng():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    m1, m2 = models.get("nb201", seed=0, N=1), models.get("nb201", seed=0, N=1)
    assert torch.equal(state, torch.random.get_rng_state())
    sd1, sd2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    m3 = models.get("nb201", seed=1, N=1)
    assert not torch.equal(sd1["stem.0.weight"], m3.state_dict()["stem.0.weight"])
    torch.manual_seed(7)
    a = models.get("mamba2_tiny")
    torch.manual_seed(7)
    b = models.get("mamba2_tiny")
    assert torch.equal(a.layers[0].mixer.A_log, b.layers[0].mixer.A_log)


# ---------------------------------------------------------------------------- every model: forward/export


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_forward_shapes_finite_train_and_eval(name):
    model = models.get(name, seed=0)
    (x,) = models.example_inputs(name, batch=2)
    with torch.no_grad():
        model.train()
        y_train1, y_train2 = _tuple_out(model(x)), _tuple_out(model(x))
        model.eval()
        y_eval = _tuple_out(model(x))
    assert [tuple(t.shape) for t in y_eval] == _expected_shapes(name, 2)
    for t in (*y_train1, *y_eval):
        assert torch.isfinite(t).all()
        assert float(t.abs().max()) > 0
    # dropout defaults to 0.0, so train mode is deterministic too
    for a, b in zip(y_train1, y_train2, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_torch_export_matches_eager(name):
    model = models.get(name, seed=0).eval()
    inputs = models.example_inputs(name, batch=2)
    ep = torch.export.export(model, inputs, strict=False)
    with torch.no_grad():
        _assert_close(ep.module()(*inputs), model(*inputs), rtol=1e-5)


@pytest.mark.parametrize("name", ["resnet20"])
def test_torch_export_train_mode_batchnorm(name):
    model = models.get(name, seed=0).train()
    inputs = models.example_inputs(name, batch=2)
    ep = torch.export.export(model, inputs, strict=False)
    with torch.no_grad():
        _assert_close(ep.module()(*inputs), model(*inputs), rtol=1e-5)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_onnx_export_matches_onnxruntime(name):
    import onnx
    import onnxruntime as ort

    model = models.get(name, seed=0).eval()
    inputs = models.example_inputs(name, batch=2)
    buf = io.BytesIO()
    torch.onnx.export(model, inputs, buf, dynamo=False, opset_version=17)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs, strict=True)}
    outs = [torch.from_numpy(np.asarray(o)) for o in sess.run(None, feeds)]
    with torch.no_grad():
        _assert_close(tuple(outs), model(*inputs), rtol=1e-4)


# ------------------------------------------------------------------------------- architecture fidelity


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_published_architectures():
    # CIFAR ResNets (He et al.; option A has no shortcut parameters): closed form 269,722 / +2,752 for B.
    assert _n_params(models.get("resnet20")) == 269_722
    assert _n_params(models.get("resnet20", shortcut="B")) == 269_722 + (16 * 32 + 64) + (32 * 64 + 128)
    # torchvision counts at 1000 classes, minus the (1000 - 10) classifier rows.
    assert _n_params(models.get("resnet18", num_classes=1000)) == 11_689_512
    assert _n_params(models.get("mobilenetv2", num_classes=1000)) == 3_504_872
    assert _n_params(models.get("efficientnet_b0", num_classes=1000)) == 5_288_548
    # DeiT-Ti (5,717,416 at 224px/patch 16/1000 classes) rebuilt at 224/16 by our class.
    assert _n_params(models.get("vit_tiny", img_size=224, patch_size=16, num_classes=1000)) == 5_717_416
    # google/bert_uncased_L-2_H-128_A-2: 4,385,920 parameters without a task head.
    bert = models.get("bert_tiny", vocab_size=30522)
    assert _n_params(bert) - _n_params(bert.classifier) == 4_385_920
    # NB201 API (CIFAR-10): all-conv3x3 cell 1.531546 MB, parameter-free cell 0.073306 MB.
    from graphopt.models.nb201 import tuple_to_arch

    assert _n_params(models.get("nb201", arch_str=tuple_to_arch((2,) * 6))) == 1_531_546
    assert _n_params(models.get("nb201", arch_str=tuple_to_arch((0,) * 6))) == 73_306


def test_vit_structure_and_attention_equals_sdpa():
    from graphopt.models.vit import Attention

    m = models.get("vit_tiny", seed=0, depth=2, embed_dim=48, num_heads=4)
    assert isinstance(m.blocks, torch.nn.ModuleList) and len(m.blocks) == 2
    assert all(hasattr(b, "attn") and hasattr(b, "mlp") for b in m.blocks)
    attn = m.blocks[0].attn
    assert isinstance(attn, Attention)
    x = torch.randn(2, 17, 48, generator=torch.Generator().manual_seed(0))
    b, n, c = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, 4, c // 4).permute(2, 0, 3, 1, 4)
    ref = attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))
    torch.testing.assert_close(attn(x), ref, rtol=1e-5, atol=1e-6)
    assert models.get("bert_tiny").blocks[0].attn is not None


def test_bert_padding_mask_isolates_padded_tokens():
    m = models.get("bert_tiny", seed=0).eval()
    (ids,) = models.example_inputs("bert_tiny", batch=2, seq_len=12)
    mask = torch.ones_like(ids)
    mask[:, 8:] = 0
    ids2 = ids.clone()
    ids2[:, 8:] = (ids2[:, 8:] + 17) % 1000
    with torch.no_grad():
        h1, logits1 = m(ids, attention_mask=mask)
        h2, logits2 = m(ids2, attention_mask=mask)
        h3, _ = m(ids2)
    torch.testing.assert_close(h1[:, :8], h2[:, :8], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits1, logits2, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(h1[:, :8], h3[:, :8], atol=1e-4)


def test_hrnet_variants_and_features():
    m = models.get(
        "hrnet_lite",
        seed=0,
        widths=(8, 16),
        num_blocks=(1, 0),
        stem_stride=2,
        upsample_mode="nearest",
        num_classes=3,
    ).eval()
    x = torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        feats = m.forward_features(x)
        y = m(x)
    assert [tuple(f.shape) for f in feats] == [(2, 8, 8, 12), (2, 16, 4, 6)]
    assert y.shape == (2, 3, 16, 24)
    full = models.get("hrnet_lite", seed=0)
    assert len(full.stages) == 3 and [len(b) for b in full.stages[-1][0].branches] == [2, 2, 2]
    with pytest.raises(ValueError, match="divisible"):
        full(torch.randn(1, 3, 30, 30))
    with pytest.raises(ValueError, match="same length"):
        models.get("hrnet_lite", widths=(8, 16), num_blocks=(1,))


def test_convnext_and_mobilenet_options():
    cn = models.get("convnext_tiny_cifar", seed=0)
    blk = cn.stages[0][0]
    assert blk.dwconv.groups == blk.dwconv.in_channels and blk.dwconv.kernel_size == (7, 7)
    assert torch.allclose(blk.gamma, torch.full_like(blk.gamma, 1e-6))
    mb = models.get("mobilenetv2", width_mult=0.5, cifar_stem=False)
    assert mb.features[0][0].stride == (2, 2)
    assert mb.features[1].conv[0][0].out_channels == 16  # make_divisible(32 * 0.5)
    with torch.no_grad():
        assert mb.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# ------------------------------------------------------------------------------------------------ NB201


def test_nb201_parse_and_tuple_round_trip_against_csv():
    from graphopt.models.nb201 import OPS, arch_to_tuple, parse_arch, tuple_to_arch

    assert OPS == ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
    with NB201_CSV.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 15625
    seen = set()
    for row in rows:
        tup = tuple(int(v) for v in row["naslib_tuple"].strip("()").split(","))
        assert arch_to_tuple(row["arch_str"]) == tup
        assert tuple_to_arch(tup) == row["arch_str"]
        seen.add(tup)
    assert len(seen) == 15625
    edges = parse_arch(rows[1]["arch_str"])
    assert edges == [
        (1, 0, "nor_conv_3x3"),
        (2, 0, "nor_conv_3x3"),
        (2, 1, "avg_pool_3x3"),
        (3, 0, "skip_connect"),
        (3, 1, "nor_conv_3x3"),
        (3, 2, "skip_connect"),
    ]
    for bad in [
        "|nor_conv_3x3~0|+|skip_connect~0|",
        "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
    ]:
        with pytest.raises(ValueError, match="parse_arch"):
            parse_arch(bad)
    with pytest.raises(ValueError, match="tuple_to_arch"):
        tuple_to_arch((0, 1, 5, 0, 0, 0))


def test_nb201_cell_semantics_and_none_export():
    from graphopt.models.nb201 import NB201Cell, parse_arch

    # node3 = skip(node0) + avg_pool(node1); node1 = conv1x1(x); node2 = none -> closed form.
    arch = parse_arch("|nor_conv_1x1~0|+|none~0|none~1|+|skip_connect~0|avg_pool_3x3~1|none~2|")
    cell = NB201Cell(arch, 4).eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        n1 = cell.edges["e01"](x)
        want = x + F.avg_pool2d(n1, 3, 1, 1, count_include_pad=False)
        torch.testing.assert_close(cell(x), want)
    # a corner value of count_include_pad=False pooling is the mean of the 4 valid pixels
    pooled = cell.edges["e13"](x)
    torch.testing.assert_close(pooled[:, :, 0, 0], x[:, :, :2, :2].mean(dim=(2, 3)))
    # all-'none' cells: the network output cannot depend on the input, and it still exports
    net = models.get("nb201", seed=0, N=1, arch_str="|none~0|+|none~0|none~1|+|none~0|none~1|none~2|").eval()
    xa, xb = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(xa), net(xb))
        ep = torch.export.export(net, (xa,), strict=False)
        torch.testing.assert_close(ep.module()(xa), net(xa))
    assert len(net.cells) == 3 + 2  # N cells per stage + 2 reduction blocks


# ----------------------------------------------------------------------------------------------- Mamba2


def _naive_ssd(x, dt, A, B, C):
    """Sequential recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T, y_t = C_t h_t (closed form)."""
    b, seq, h, p = x.shape
    g = B.shape[2]
    hpg = h // g
    state = torch.zeros(b, h, B.shape[-1], p, dtype=torch.float64)
    ys = []
    for t in range(seq):
        Bt = B[:, t].repeat_interleave(hpg, dim=1)  # b h n
        Ct = C[:, t].repeat_interleave(hpg, dim=1)
        decay = torch.exp(dt[:, t] * A)  # b h
        state = decay[..., None, None] * state + (
            dt[:, t, :, None, None] * Bt[..., None] * x[:, t, :, None, :]
        )
        ys.append(torch.einsum("bhn,bhnp->bhp", Ct, state))
    return torch.stack(ys, dim=1)


@pytest.mark.parametrize("seq,chunk,ngroups", [(32, 8, 1), (30, 8, 2), (7, 16, 1), (12, 1, 2)])
def test_ssd_chunked_equals_explicit_matrix_and_recurrence(seq, chunk, ngroups):
    from graphopt.models.mamba2 import ssd_chunked, ssd_token_matrix

    g = torch.Generator().manual_seed(seq * 100 + chunk)
    b, h, p, n = 2, 4, 3, 5
    x = torch.randn(b, seq, h, p, generator=g, dtype=torch.float64)
    dt = F.softplus(torch.randn(b, seq, h, generator=g, dtype=torch.float64))
    A = -torch.rand(h, generator=g, dtype=torch.float64) * 4 - 0.5
    B = torch.randn(b, seq, ngroups, n, generator=g, dtype=torch.float64)
    C = torch.randn(b, seq, ngroups, n, generator=g, dtype=torch.float64)
    y_chunk = ssd_chunked(x, dt, A, B, C, chunk)
    M = ssd_token_matrix(B, C, dt, A)
    assert M.shape == (b, h, seq, seq)
    assert torch.equal(M, torch.tril(M))  # causal: zero above the diagonal
    y_mat = torch.einsum("bhij,bjhp->bihp", M, x)
    torch.testing.assert_close(y_chunk, y_mat, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y_chunk, _naive_ssd(x, dt, A, B, C), rtol=1e-10, atol=1e-10)
    # one entry by the definition M_ij = (C_i . B_j) exp(sum_{k=j+1..i} dt_k A) dt_j
    i, j, hh = seq - 1, max(seq - 4, 0), h - 1
    grp = hh // (h // ngroups)
    want = (
        (C[0, i, grp] @ B[0, j, grp]) * math.exp(float(dt[0, j + 1 : i + 1, hh].sum() * A[hh])) * dt[0, j, hh]
    )
    assert abs(float(M[0, hh, i, j]) - float(want)) < 1e-10


def test_mamba2_explicit_forward_equals_chunked_and_matrix_gradients():
    model = models.get("mamba2_tiny", seed=0, n_layers=3).double().eval()
    (ids,) = models.example_inputs("mamba2_tiny", batch=2, seq_len=20)
    logits = model(ids)
    logits_m, mats = model.forward_explicit(ids)
    torch.testing.assert_close(logits_m, logits, rtol=1e-9, atol=1e-9)
    assert len(mats) == 3 and all(m.shape == (2, 8, 20, 20) and m.requires_grad for m in mats)
    assert len(model.token_matrices(ids)) == 3

    def loss_fn(lg):
        return F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), ids[:, 1:].reshape(-1))

    loss = loss_fn(logits_m)
    grads = torch.autograd.grad(loss, mats)
    assert all(torch.isfinite(gr).all() and float(gr.abs().sum()) > 0 for gr in grads)
    # dL/dM against a central finite difference along a random lower-triangular direction of layer 1
    gen = torch.Generator().manual_seed(0)
    direction = torch.tril(torch.randn(mats[1].shape, generator=gen, dtype=torch.float64))
    eps = 1e-5
    with torch.no_grad():
        lp = loss_fn(model.forward_explicit(ids, [None, eps * direction, None])[0])
        lm = loss_fn(model.forward_explicit(ids, [None, -eps * direction, None])[0])
    fd = (lp - lm) / (2 * eps)
    torch.testing.assert_close(fd, (grads[1] * direction).sum(), rtol=1e-6, atol=1e-9)
    # backward() also fills M.grad (retain_grad)
    logits_b, mats_b = model.forward_explicit(ids)
    loss_fn(logits_b).backward()
    torch.testing.assert_close(mats_b[1].grad, grads[1])


def test_mamba2_causality_and_config_errors():
    model = models.get("mamba2_tiny", seed=0).eval()
    (ids,) = models.example_inputs("mamba2_tiny", batch=1, seq_len=24)
    ids2 = ids.clone()
    ids2[:, 15:] = (ids2[:, 15:] + 1) % 256
    with torch.no_grad():
        a, b = model(ids), model(ids2)
    torch.testing.assert_close(a[:, :15], b[:, :15], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a[:, 15:], b[:, 15:])
    with pytest.raises(ValueError, match="headdim"):
        models.get("mamba2_tiny", headdim=24)
    with pytest.raises(ValueError, match="ngroups"):
        models.get("mamba2_tiny", ngroups=3)
