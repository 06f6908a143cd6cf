"""IR files (graphopt/ir/serialize.py): exact JSON + safetensors round trips, structure hashes, clear errors on
corrupt files, atomic writes."""

import json
import os
import stat

import numpy as np
import pytest
from _helpers import conv_bn_relu_graph

from graphopt.ir import DType, Graph, IRFormatError, TensorType, load, save, structure_hash, verify
from graphopt.ir.serialize import atomic_write_bytes


def test_json_round_trip_is_exact(tmp_path):
    g = conv_bn_relu_graph()
    g.find_node("conv").meta["provenance"] = {"pass": "test"}
    p = save(g, tmp_path / "m.json")
    g2 = load(p)
    verify(g2)
    assert structure_hash(g2) == structure_hash(g)
    assert [n.meta for n in g2.nodes] == [{k: v for k, v in n.meta.items()} for n in g.nodes]
    for name, v in g.constants.items():
        np.testing.assert_array_equal(g2.constants[name].const, v.const)
        assert g2.constants[name].kind == v.kind
    assert [str(o.type) for o in g2.outputs] == [str(o.type) for o in g.outputs]


def test_structure_hash_ignores_names_but_not_structure():
    a = conv_bn_relu_graph()
    b = conv_bn_relu_graph()
    b.find_node("relu").name = "renamed"
    assert structure_hash(a) == structure_hash(b)
    c = conv_bn_relu_graph()
    c.find_node("conv").attrs["strides"] = [1, 1]
    from graphopt.ir import infer_graph

    infer_graph(c)
    assert structure_hash(c) != structure_hash(a)


def test_corrupt_ir_files_give_clear_errors(tmp_path):
    g = conv_bn_relu_graph()
    p = save(g, tmp_path / "m.json")
    text = p.read_text()
    p.write_text(text[: len(text) // 2])
    with pytest.raises(IRFormatError, match="truncated or corrupt"):
        load(p)
    doc = json.loads(text)
    doc["nodes"][1]["inputs"][0] = "ghost"
    p.write_text(json.dumps(doc))
    with pytest.raises(IRFormatError, match="ghost"):
        load(p)
    p.write_text(text)
    w = tmp_path / "m.safetensors"
    w.write_bytes(w.read_bytes()[:50])
    with pytest.raises(IRFormatError, match="corrupt weights"):
        load(p)


def test_scalar_constants_round_trip_with_their_rank(tmp_path):
    """0-d constants (e.g. a mutation's scalar multiplier) keep shape () through save/load."""
    g = Graph("s")
    x = g.add_input("x", TensorType(DType.float32, (2,)))
    c = g.add_const("c", np.asarray(2.0, dtype=np.float32), "param")
    g.set_outputs([g.create_node("mul", [x, c]).output])
    back = load(save(g, tmp_path / "s.json"))
    assert back.constants["c"].const.shape == () and back.constants["c"].const == np.float32(2.0)


def test_atomic_write_honours_umask(tmp_path):
    """Before: files kept mkstemp's 0600, so IR/ONNX files were unreadable to the group."""
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode) == 0o640
    assert (tmp_path / "a.bin").read_bytes() == b"x"
