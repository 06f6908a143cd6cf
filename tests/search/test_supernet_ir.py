"""Supernet IR: choice op semantics, NB201 in the IR, expand-cell, path materialization, elastic dims."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graphopt.models.nb201 import NB201Net, NB201Supernet

from graphopt.backends.torch import to_torch
from graphopt.ir.graph import Graph
from graphopt.ir.types import DType, TensorType
from graphopt.ir.verify import verify
from graphopt.pass_api import get_pass
from graphopt.supernet import (
    NB201_EDGES,
    NB201_OPS,
    ElasticDim,
    SupernetError,
    choice_points,
    materialize,
    nb201_arch_to_path,
    nb201_graph,
    nb201_path_to_arch,
    sample_path,
    search_space,
    set_mixture,
    space_size,
)

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
torch.set_num_threads(1)


def _choice_graph(selected: int = -1, weights=None) -> Graph:
    g = Graph("c")
    x = g.add_input("x", TensorType(DType.float32, (2, 3)))
    a = g.create_node("relu", [x]).output
    b = g.create_node("neg", [x]).output
    w = None if weights is None else g.add_const("w", np.asarray(weights, np.float32), "buffer")
    y = g.create_node("choice", [w, a, b], {"point": "p", "labels": ["relu", "neg"], "selected": selected}).output
    g.set_outputs([y])
    verify(g)
    return g


def test_choice_op_select_mixture_and_mean():
    x = torch.randn(2, 3)
    torch.testing.assert_close(to_torch(_choice_graph(0))(x), torch.relu(x))
    torch.testing.assert_close(to_torch(_choice_graph(1))(x), -x)
    torch.testing.assert_close(to_torch(_choice_graph(-1, [0.25, 0.75]))(x), 0.25 * torch.relu(x) - 0.75 * x)
    torch.testing.assert_close(to_torch(_choice_graph(-1))(x), 0.5 * (torch.relu(x) - x))
    g = _choice_graph(-1, [0.5, 0.5])
    assert search_space(g) == {"p": ["relu", "neg"]}
    m = materialize(g, {"p": "neg"})
    assert [n.op for n in m.nodes] == ["neg"] and not m.constants
    torch.testing.assert_close(to_torch(m)(x), -x)


def test_nb201_graph_matches_zoo_model():
    torch.manual_seed(0)
    net = NB201Net(ARCH, C=8, N=1).eval()
    g = nb201_graph(ARCH, C=8, N=1, state_dict=net.state_dict())
    verify(g)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(to_torch(g).eval()(x), net(x), rtol=1e-5, atol=1e-5)


def test_supernet_graph_mixture_and_paths_match_torch_supernet():
    torch.manual_seed(1)
    sn = NB201Supernet(C=4, N=1).eval()
    sg = nb201_graph(None, C=4, N=1, state_dict=sn.state_dict())
    verify(sg)
    assert space_size(sg) == 5**6
    assert [p.name for p in choice_points(sg)] == ["e01", "e02", "e12", "e03", "e13", "e23"]
    assert all(len(p.nodes) == 3 for p in choice_points(sg))  # one per cell, shared point
    x = torch.randn(2, 3, 16, 16)
    w = torch.softmax(torch.randn(6, 5), -1)
    set_mixture(sg, {f"e{i}{j}": w[k].numpy() for k, (i, j) in enumerate(NB201_EDGES)})
    verify(sg)
    torch.testing.assert_close(to_torch(sg).eval()(x), sn(x, w), rtol=1e-5, atol=1e-5)
    for seed in range(4):
        path = sample_path(sg, seed)
        cg = materialize(sg, path)
        assert not any(n.op == "choice" for n in cg.nodes)
        idx = [NB201_OPS.index(path[f"e{i}{j}"]) for i, j in NB201_EDGES]
        onehot = torch.zeros(6, 5)
        onehot[range(6), idx] = 1
        torch.testing.assert_close(to_torch(cg).eval()(x), sn(x, onehot, [[k] for k in idx]), rtol=1e-5, atol=1e-5)
        assert nb201_arch_to_path(nb201_path_to_arch(path)) == path


def test_expand_cell_on_concrete_graph():
    torch.manual_seed(0)
    g = nb201_graph(ARCH, C=4, N=1, image_size=16)
    x = torch.randn(2, 3, 16, 16)
    ref = to_torch(g).eval()(x)
    sg = g.copy()
    report = get_pass("expand-cell").fn(sg)
    assert report["edges"] == 18 and report["points"] == sorted(f"e{i}{j}" for i, j in NB201_EDGES)
    assert not report["skipped"]
    verify(sg)
    assert space_size(sg) == 15625
    # the original architecture is one path of the expanded supernet, with the original weights
    torch.testing.assert_close(to_torch(materialize(sg, nb201_arch_to_path(ARCH))).eval()(x), ref)
    for seed in range(5):
        cg = materialize(sg, sample_path(sg, seed))
        verify(cg)
        assert to_torch(cg).eval()(x).shape == (2, 10)
    # unshared: one point per (cell, edge)
    sg2 = g.copy()
    rep2 = get_pass("expand-cell").fn(sg2, shared=False, ops=["skip_connect", "nor_conv_3x3"])
    assert len(rep2["points"]) == 18 and space_size(sg2) == 2**18


def test_bad_paths_are_rejected_with_names():
    sg = nb201_graph(None, C=4, N=1, image_size=16)
    path = sample_path(sg, 0)
    with pytest.raises(SupernetError, match="missing \\['e01'\\]"):
        materialize(sg, {k: v for k, v in path.items() if k != "e01"})
    with pytest.raises(SupernetError, match="unknown option 'conv9'"):
        materialize(sg, {**path, "e01": "conv9"})
    with pytest.raises(SupernetError, match="unknown \\['bogus'\\]"):
        materialize(sg, {**path, "bogus": 1})


def test_no_choices_requirement_rejects_supernets():
    from graphopt.pass_api import Pass, PassError, check_requirements

    p = Pass("needs-concrete", "", lambda g: {}, ("no_choices",), True)
    with pytest.raises(PassError, match="supernet"):
        check_requirements(p, nb201_graph(None, C=4, N=1, image_size=16))


def _mlp_supernet() -> tuple[Graph, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    W = {"w1": rng.normal(size=(8, 5)).astype(np.float32), "b1": rng.normal(size=8).astype(np.float32),
         "w2": rng.normal(size=(3, 8)).astype(np.float32), "r": rng.normal(size=(3, 3)).astype(np.float32)}
    g = Graph("mlp")
    x = g.add_input("x", TensorType(DType.float32, (4, 5)))
    h = g.create_node("gemm", [x, g.add_const("w1", W["w1"], "param"), g.add_const("b1", W["b1"], "param")],
                      {"transB": 1}).output
    h = g.create_node("relu", [h]).output
    y = g.create_node("gemm", [h, g.add_const("w2", W["w2"], "param")], {"transB": 1}, name="out").output
    blk = g.create_node("gemm", [y, g.add_const("r", W["r"], "param")], {"transB": 1}, name="blk").output
    z = g.create_node("add", [y, blk], name="res").output
    g.set_outputs([z])
    g.meta["elastic_dims"] = [
        ElasticDim("hidden", [2, 4, 8], "slice", [("w1", 0, 1), ("b1", 0, 1), ("w2", 1, 1)]).to_dict(),
        ElasticDim("depth", [0, 1], "skip", [("res", "out", 0)]).to_dict(),
    ]
    return g, W


def test_elastic_slice_and_skip_materialize():
    g, W = _mlp_supernet()
    assert search_space(g) == {"hidden": [2, 4, 8], "depth": [0, 1]}
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    for hidden in (2, 4, 8):
        for depth in (0, 1):
            m = materialize(g, {"hidden": hidden, "depth": depth})
            verify(m)
            assert m.constants["w1"].const.shape == (hidden, 5)
            h = np.maximum(x @ W["w1"][:hidden].T + W["b1"][:hidden], 0)
            y = h @ W["w2"][:, :hidden].T
            ref = y + y @ W["r"].T if depth == 1 else y
            out = to_torch(m)(torch.from_numpy(x)).detach().numpy()
            np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    # the supernet keeps the full weights: materializing never mutates it
    assert g.constants["w1"].const.shape == (8, 5)
    with pytest.raises(SupernetError, match="not in"):
        materialize(g, {"hidden": 3, "depth": 1})


def test_expand_cell_on_torch_lowered_nb201():
    from graphopt.frontends.torch import from_torch

    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    torch.manual_seed(0)
    m = NB201Net(arch, C=4, N=1).eval()
    x = torch.randn(1, 3, 16, 16)
    g = from_torch(m, (x,))
    rep = get_pass("expand-cell").fn(g)
    assert rep["edges"] == 18 and not rep["skipped"]
    verify(g)
    torch.testing.assert_close(to_torch(materialize(g, nb201_arch_to_path(arch))).eval()(x), m(x))
    assert to_torch(materialize(g, sample_path(g, 3))).eval()(x).shape == (1, 10)
