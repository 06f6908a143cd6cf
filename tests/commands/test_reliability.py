"""Hostile model files are refused through the CLI (exit 2, a clear message, nothing written); writes are atomic.

Each hostile-file class is built by a function in :data:`HOSTILE` (``benchmarks/reliability.py`` reuses them
for its table): a pickled full module, external data escaping the model folder (absolute path, ``../``,
symlink), a 2^40 dim, initializers lying about their size (inline and external), a node count over a lowered
``GRAPHOPT_MAX_NODES``, subgraphs nested past ``GRAPHOPT_MAX_SUBGRAPH_DEPTH`` or past protobuf's own depth
limit, a sparse tensor whose dense form is terabytes, and IR JSON / safetensors files with the same bombs.
SIGKILL-during-search resume is covered by ``tests/search/test_evolution.py`` (three kills at different points).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _helpers import conv_bn_relu_graph
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from graphopt.cli import app
from graphopt.errors import USER_ERRORS, ModelLoadError, UntrustedFileError
from graphopt.frontends.onnx import load_onnx
from graphopt.ir import save
from graphopt.ir.limits import ENV_VARS, LimitExceededError, Limits, current_limits, override_limits

runner = CliRunner()


# ------------------------------------------------------------------------------------------ file builders
def _vi(name: str, shape: list, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _add_model(init: TensorProto | None = None, x_shape: list | None = None) -> onnx.ModelProto:
    """y = x + w with ``w`` the given initializer (default a small valid one)."""
    w = init if init is not None else numpy_helper.from_array(np.ones(4, np.float32), "w")
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"], name="add")], "add",
                          [_vi("x", x_shape or [4])], [_vi("y", x_shape or [4])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _external_model(folder: Path, location: str, dims: list[int], length: int | None = None) -> Path:
    """A model whose initializer ``w`` keeps its data in ``location`` (relative to ``folder``)."""
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=dims, data_location=TensorProto.EXTERNAL)
    for k, v in (("location", location), ("offset", "0"), *((("length", str(length)),) if length else ())):
        e = w.external_data.add()
        e.key, e.value = k, v
    path = folder / "model.onnx"
    path.write_bytes(_add_model(w, dims).SerializeToString())
    return path


def pickled_module(d: Path) -> Path:
    """A full-module pickle whose unpickling would create a marker file (proof that code runs)."""
    p = d / "evil.pt"
    torch.save({"model": _Evil(str(d / "PWNED"))}, p)
    return p


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling this opens (creates) the marker file


def external_absolute(d: Path) -> Path:
    return _external_model(d, "/etc/hostname", [1])


def external_dotdot(d: Path) -> Path:
    (d / "secret.bin").write_bytes(b"\0" * 16)
    sub = d / "model"
    sub.mkdir()
    return _external_model(sub, "../secret.bin", [4])


def external_symlink(d: Path) -> Path:
    (d / "secret.bin").write_bytes(b"\0" * 16)
    sub = d / "model"
    sub.mkdir()
    (sub / "weights.bin").symlink_to(d / "secret.bin")
    return _external_model(sub, "weights.bin", [4])


def dim_bomb(d: Path) -> Path:
    p = d / "dims.onnx"
    p.write_bytes(_add_model(x_shape=[2**40]).SerializeToString())
    return p


def initializer_bytes_lie(d: Path) -> Path:
    """An initializer declaring 2^30 floats (4 GiB, under the 8 GiB limit) that holds 16 bytes."""
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1024, 1024, 1024], raw_data=b"\0" * 16)
    p = d / "lie.onnx"
    p.write_bytes(_add_model(w, [1024, 1024, 1024]).SerializeToString())
    return p


def external_bytes_lie(d: Path) -> Path:
    """External data whose 'length' and dims promise 4 GiB from a 16-byte file."""
    (d / "w.bin").write_bytes(b"\0" * 16)
    return _external_model(d, "w.bin", [1024, 1024, 1024], length=4 * 2**30)


def sparse_bomb(d: Path) -> Path:
    """A sparse initializer with 1 value whose dense form is 2^40 floats (4 TiB)."""
    sp = helper.make_sparse_tensor(numpy_helper.from_array(np.ones(1, np.float32), "w"),
                                   numpy_helper.from_array(np.zeros(1, np.int64), "w_idx"), [2**20, 2**20])
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "sp", [_vi("x", [1])], [_vi("y", [1])],
                          sparse_initializer=[sp])
    p = d / "sparse.onnx"
    p.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    return p


def many_nodes(d: Path, n: int = 200) -> Path:
    nodes = [helper.make_node("Relu", [f"v{i}"], [f"v{i + 1}"]) for i in range(n)]
    g = helper.make_graph(nodes, "chain", [_vi("v0", [4])], [_vi(f"v{n}", [4])])
    p = d / "chain.onnx"
    p.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    return p


def nested_subgraphs(d: Path, depth: int = 6) -> Path:
    body = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "leaf", [], [_vi("y", [1])])
    for i in range(depth):
        body = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)],
                                 f"level{i}", [], [_vi("y", [1])])
    g = helper.make_graph(list(body.node), "top", [_vi("c", [], TensorProto.BOOL), _vi("x", [1])], [_vi("y", [1])])
    p = d / "nested.onnx"
    p.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    return p


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def deep_nesting(d: Path, depth: int = 300) -> Path:
    """If bodies nested 300 deep, encoded by hand (onnx.helper cannot build what protobuf cannot decode)."""
    body = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "leaf", [], [_vi("y", [1])])
    data = body.SerializeToString()
    out_vi = _field(12, _vi("y", [1]).SerializeToString())
    for _ in range(depth):  # GraphProto.node=1; NodeProto input=1 output=2 op_type=4 attribute=5;
        attr = _field(1, b"then_branch") + _field(6, data) + _varint(20 << 3) + _varint(5)  # AttributeProto g=6
        node = _field(1, b"c") + _field(2, b"y") + _field(4, b"If") + _field(5, attr)
        data = _field(1, node) + out_vi
    top = helper.make_model(helper.make_graph([], "top", [_vi("c", [], TensorProto.BOOL), _vi("x", [1])],
                                              [_vi("y", [1])]), opset_imports=[helper.make_opsetid("", 18)])
    p = d / "deep.onnx"
    p.write_bytes(top.SerializeToString() + _field(7, data))  # a repeated message field merges into graph
    return p


def ir_json_dim_bomb(d: Path) -> Path:
    import json

    p = save(conv_bn_relu_graph(), d / "m.json")
    doc = json.loads(p.read_text())
    doc["inputs"][0]["type"]["shape"] = [1, 3, 2**40, 8]
    p.write_text(json.dumps(doc))
    return p


def ir_weights_header_bomb(d: Path) -> Path:
    """A safetensors sidecar whose header declares a 2^50-byte tensor."""
    import json
    import struct

    p = save(conv_bn_relu_graph(), d / "m.json")
    header = json.dumps({"conv.weight": {"dtype": "F32", "shape": [2**24, 2**24], "data_offsets": [0, 4]}}).encode()
    (d / "m.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    return p


def ir_json_nesting_bomb(d: Path) -> Path:
    """JSON nested 200,000 deep (Python's parser would raise RecursionError)."""
    p = d / "deep.json"
    p.write_text("[" * 200_000)
    return p


HostileCase = tuple[Callable[[Path], Path], dict[str, str], str]
HOSTILE: dict[str, HostileCase] = {
    # name: (builder, environment, phrase the message must contain)
    "pickled .pt module": (pickled_module, {}, "--trust-pickle"),
    "external data: absolute path": (external_absolute, {}, "absolute path"),
    "external data: ../ escape": (external_dotdot, {}, "outside the model's folder"),
    "external data: symlink out of folder": (external_symlink, {}, "outside the model's folder"),
    "dim bomb (2^40)": (dim_bomb, {}, "GRAPHOPT_MAX_DIM"),
    "initializer bytes lie (inline)": (initializer_bytes_lie, {}, "holds 16 bytes"),
    "initializer bytes lie (external)": (external_bytes_lie, {}, "which has 16 bytes"),
    "sparse tensor bomb (4 TiB dense)": (sparse_bomb, {}, "GRAPHOPT_MAX_TENSOR_BYTES"),
    "node count over GRAPHOPT_MAX_NODES=100": (many_nodes, {"GRAPHOPT_MAX_NODES": "100"}, "GRAPHOPT_MAX_NODES"),
    "subgraphs nested past GRAPHOPT_MAX_SUBGRAPH_DEPTH=3": (nested_subgraphs, {"GRAPHOPT_MAX_SUBGRAPH_DEPTH": "3"},
                                                            "GRAPHOPT_MAX_SUBGRAPH_DEPTH"),
    "subgraphs nested 300 deep (past protobuf)": (deep_nesting, {}, "nested deeper than protobuf decodes"),
    "IR JSON dim bomb": (ir_json_dim_bomb, {}, "GRAPHOPT_MAX_DIM"),
    "IR safetensors header bomb": (ir_weights_header_bomb, {}, "GRAPHOPT_MAX_TENSOR_BYTES"),
    "IR JSON nested 200,000 deep": (ir_json_nesting_bomb, {}, "nested too deeply"),
}


def _listing(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


# ---------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_file_refused_by_cli(name, tmp_path, monkeypatch):
    build, env, phrase = HOSTILE[name]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    path = build(tmp_path)
    before = _listing(tmp_path)
    out = tmp_path / "out.onnx"
    tracemalloc.start()
    try:
        res = runner.invoke(app, ["convert", str(path), "-o", str(out)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.exit_code == 2, (res.output, res.exception)
    msg = res.stderr
    assert msg.startswith("error:") and phrase in msg, msg
    assert str(path.name) in msg or str(path.parent) in msg  # the message names the file
    assert "Traceback" not in res.output
    assert _listing(tmp_path) == before  # nothing written
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB allocated before refusing"  # checked before allocating
    assert not (tmp_path / "PWNED").exists()  # the pickle's code never ran


def test_limits_name_the_limit_and_can_be_raised(tmp_path, monkeypatch):
    path = many_nodes(tmp_path, 200)
    monkeypatch.setenv("GRAPHOPT_MAX_NODES", "100")
    with pytest.raises(LimitExceededError, match=r"200 nodes exceeds the limit max_nodes=100"):
        load_onnx(path)
    with override_limits(max_nodes=1000):  # wins over the environment
        assert len(load_onnx(path)) == 200
    monkeypatch.setenv("GRAPHOPT_MAX_NODES", "1K")
    assert current_limits().max_nodes == 1024 and len(load_onnx(path)) == 200
    monkeypatch.delenv("GRAPHOPT_MAX_NODES")
    assert current_limits() == Limits()
    monkeypatch.setenv("GRAPHOPT_MAX_TENSOR_BYTES", "2**33")
    assert current_limits().max_tensor_bytes == 2**33
    monkeypatch.setenv("GRAPHOPT_MAX_DIM", "lots")
    with pytest.raises(ModelLoadError, match="GRAPHOPT_MAX_DIM='lots'"):
        current_limits()
    assert set(ENV_VARS.values()) == {"GRAPHOPT_MAX_NODES", "GRAPHOPT_MAX_DIM", "GRAPHOPT_MAX_TENSOR_BYTES",
                                      "GRAPHOPT_MAX_SUBGRAPH_DEPTH"}


def test_subgraph_depth_limit_is_exact(tmp_path, monkeypatch):
    """Depth d loads as far as the limit goes (then control flow is refused); d > limit is a LimitExceededError."""
    path = nested_subgraphs(tmp_path, 3)
    monkeypatch.setenv("GRAPHOPT_MAX_SUBGRAPH_DEPTH", "3")
    with pytest.raises(USER_ERRORS) as e:
        load_onnx(path)
    assert not isinstance(e.value, LimitExceededError) and "control flow" in str(e.value).lower()
    monkeypatch.setenv("GRAPHOPT_MAX_SUBGRAPH_DEPTH", "2")
    with pytest.raises(LimitExceededError, match="nested 3 deep"):
        load_onnx(path)


def test_truthful_large_shapes_still_load(tmp_path):
    """Limits refuse lies and bombs, not big honest declarations: a symbolic batch and a 2^31 dim load."""
    g = load_onnx(_add_model(x_shape=["batch", 4]))
    assert g.inputs[0].type.shape == ("batch", 4)
    w = numpy_helper.from_array(np.ones((1, 1), np.float32), "w")
    g = load_onnx(_add_model(w, x_shape=[1, 2**31]))
    assert g.inputs[0].type.shape == (1, 2**31)


def test_pickle_runs_only_with_trust_flag(tmp_path):
    """Without the flag the marker is never created; with it the pickle's code does run (so the test can fail)."""
    path = pickled_module(tmp_path)
    with pytest.raises(UntrustedFileError):
        from graphopt.modelio import load_model

        load_model(path)
    assert not (tmp_path / "PWNED").exists()
    res = runner.invoke(app, ["inspect", str(path), "--trust-pickle"])
    assert res.exit_code == 2 and "not an nn.Module" in res.stderr  # it ran, then was refused as not a module
    assert (tmp_path / "PWNED").exists()


def test_state_dict_loads_weights_only(tmp_path):
    p = tmp_path / "sd.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), p)
    res = runner.invoke(app, ["inspect", str(p)])
    assert res.exit_code == 2 and "state dict has weights but no graph" in res.stderr


def _model(nodes, inputs, outputs, inits=(), opset=18, sparse=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "m", inputs, outputs, list(inits), sparse_initializer=list(sparse))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _sparse(values, indices, dims):
    return helper.make_sparse_tensor(numpy_helper.from_array(np.asarray(values, np.float32), "w"),
                                     numpy_helper.from_array(np.asarray(indices, np.int64), "w_idx"), dims)


def _sparse_add(index: int) -> onnx.ModelProto:
    """y = x + w, w a 4-element sparse tensor with one value at ``index``."""
    return _model([helper.make_node("Add", ["x", "w"], ["y"])], [_vi("x", [4])], [_vi("y", [4])],
                  sparse=[_sparse([1.0], [index], [4])])


def _bad_utf8() -> bytes:
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", [2])])
    return m.SerializeToString().replace(b"Relu", b"\xffelu")  # same length: still a valid protobuf


FUZZ_FINDINGS: dict[str, tuple[Callable[[], onnx.ModelProto | bytes], str]] = {
    # Files the fuzzer turned up that used to raise TypeError/IndexError/KeyError or load silently wrong.
    "value defined twice": (lambda: _model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node(
        "Neg", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", [2])]), "already defined by node"),
    "attribute of the wrong type": (lambda: _model([helper.make_node("Softmax", ["x"], ["y"], axis=1.0)],
                                                   [_vi("x", [2, 2])], [_vi("y", [2, 2])]), "declares INT"),
    "op name not UTF-8": (_bad_utf8, "not valid UTF-8"),
    "sparse index negative": (lambda: _sparse_add(-1), "outside its dims"),
    "sparse index past the end": (lambda: _sparse_add(4), "outside its dims"),
    "opset-9 TopK without k": (lambda: _model([helper.make_node("TopK", ["x"], ["v", "i"])], [_vi("x", [4])],
                                              [_vi("v", [1]), _vi("i", [1], TensorProto.INT64)], opset=9),
                               "malformed node"),
    "complex initializer": (lambda: _add_model(numpy_helper.from_array(np.ones(4, np.complex64), "w")),
                            "unsupported dtype"),
}


@pytest.mark.parametrize("name", list(FUZZ_FINDINGS))
def test_fuzz_findings_are_user_errors(name, tmp_path):
    build, phrase = FUZZ_FINDINGS[name]
    m = build()
    p = tmp_path / "m.onnx"
    p.write_bytes(m if isinstance(m, bytes) else m.SerializeToString())
    with pytest.raises(USER_ERRORS, match=phrase):
        load_onnx(p)


# ------------------------------------------------------------------------------------------- atomic writes
def _fail_fsync(monkeypatch):
    def boom(fd):
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(os, "fsync", boom)


@pytest.mark.parametrize("suffix", [".onnx", ".json", ".pt"])
def test_convert_failing_mid_write_keeps_old_file(tmp_path, monkeypatch, suffix):
    src = save(conv_bn_relu_graph(), tmp_path / "src.json")
    out = tmp_path / f"out{suffix}"
    res = runner.invoke(app, ["convert", str(src), "-o", str(out), "--no-verify"])
    assert res.exit_code == 0, res.output
    old = {p.name: p.read_bytes() for p in tmp_path.glob("out*")}
    _fail_fsync(monkeypatch)
    res = runner.invoke(app, ["convert", str(src), "-o", str(out), "--opset", "17", "--no-verify"])
    assert res.exit_code != 0 and isinstance(res.exception, OSError)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.glob("out*")} == old  # old files intact
    assert not list(tmp_path.glob(".*.tmp"))  # temp files removed


def test_export_failing_mid_write_keeps_old_file(tmp_path, monkeypatch):
    src = save(conv_bn_relu_graph(batch=1), tmp_path / "src.json")
    out = tmp_path / "out.onnx"
    out.write_bytes(b"old model")
    _fail_fsync(monkeypatch)
    res = runner.invoke(app, ["export", str(src), "-o", str(out), "--latency-runs", "0", "--no-verify"])
    monkeypatch.undo()
    assert res.exit_code != 0
    assert out.read_bytes() == b"old model"
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob("*.report.*"))


def _writer_graph(k: float):
    from graphopt.ir import DType, Graph, TensorType

    g = Graph("w")
    x = g.add_input("x", TensorType(DType.float32, (1, 1 << 20)))
    w = g.add_const("w", np.full((1, 1 << 20), k, np.float32))  # 4 MiB: each write takes a while
    g.set_outputs([g.create_node("add", [x, w]).output])
    return g


def test_sigkill_during_writes_leaves_a_complete_file(tmp_path):
    """SIGKILL a process rewriting a model in a loop at random moments: the file is always one complete version.

    The writer is a fork of this process (a fresh interpreter would spend seconds importing torch).
    """
    from graphopt.modelio import save_model

    graphs = [_writer_graph(1.0), _writer_graph(2.0)]
    out = tmp_path / "m.onnx"
    save_model(graphs[0], out)
    rng = random.Random(0)
    digests, writes = set(), []
    for _ in range(3):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: rewrite the file forever, reporting each completed write
            try:
                os.close(r)
                i = 1
                while True:
                    save_model(graphs[i % 2], out)
                    os.write(w, b".")
                    i += 1
            finally:
                os._exit(0)
        os.close(w)
        os.read(r, 1)  # at least one complete write happened
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        writes.append(1 + len(os.read(r, 1 << 16)))
        os.close(r)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        m = onnx.load(str(out))  # parses: not half-written
        arr = numpy_helper.to_array(m.graph.initializer[0])
        assert arr.shape == (1, 1 << 20) and float(arr[0, 0]) in (1.0, 2.0) and (arr == arr[0, 0]).all()
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) <= 2  # only the two complete versions ever appear
    assert sum(writes) > 3  # the kills landed while the writer was busy rewriting
