"""Fuzz the ONNX frontend: mutated protobufs load into a valid graph or raise a graphopt user error.

Seeds are small valid models (built with ``onnx.helper``, plus the model-zoo "light" SqueezeNet shipped with
the ``onnx`` package). Each case applies 1-3 mutations -- byte truncation, bit flips, element-type changes,
dangling input names, cycles, duplicate outputs, unknown ops/domains, missing initializers, dim bombs, raw-data
lies, attribute garbage, opset changes, dropped/shuffled nodes, hostile external-data locations -- and loads
the file with a per-case timeout. Allowed outcomes: a graph that passes ``graphopt.ir.verify``, or one of
``graphopt.errors.USER_ERRORS`` (what the CLI turns into exit code 2). Anything else (another exception, a
hang, a crash of the interpreter, which kills the test worker) fails the test. ``benchmarks/reliability.py``
reuses :func:`mutate` and :func:`run_case` for a larger run outside pytest.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from graphopt.errors import USER_ERRORS
from graphopt.frontends.onnx import load_onnx
from graphopt.ir.verify import verify

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
CASE_TIMEOUT_S = 20
"""A case that takes longer counts as a hang (the largest seed loads in ~0.1 s)."""
EXAMPLES = int(os.environ.get("GRAPHOPT_FUZZ_EXAMPLES", "450"))
CLI_EXAMPLES = 40


# --------------------------------------------------------------------------------------------------- seeds
def _init(name: str, shape: list[int], rng: np.random.Generator, dtype=np.float32) -> TensorProto:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(dtype), name)


def _vi(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _cnn() -> onnx.ModelProto:
    """Conv -> Relu -> MaxPool -> GlobalAveragePool -> Flatten -> Gemm -> Softmax, opset 17, with value_info."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["l"], name="fc", transB=1),
        helper.make_node("Softmax", ["l"], ["y"], name="softmax", axis=-1),
    ]
    g = helper.make_graph(nodes, "cnn", [_vi("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [_vi("y", TensorProto.FLOAT, ["N", 10])],
                          [_init("w", [4, 3, 3, 3], rng), _init("b", [4], rng), _init("fc_w", [10, 4], rng),
                           _init("fc_b", [10], rng)],
                          value_info=[_vi("c", TensorProto.FLOAT, ["N", 4, 8, 8]),
                                      _vi("p", TensorProto.FLOAT, ["N", 4, 4, 4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="fuzz-seed")


def _legacy() -> onnx.ModelProto:
    """Opset-9 forms: attribute axes/starts, Constant-held shapes, broadcasting Add, Concat, Cast, Dropout."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Constant", [], ["shape"], name="shape_c",
                         value=numpy_helper.from_array(np.asarray([1, 2, 12], np.int64))),
        helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
        helper.make_node("Add", ["r", "bias"], ["a"], name="add"),
        helper.make_node("Unsqueeze", ["a"], ["u"], name="unsq", axes=[0]),
        helper.make_node("Slice", ["u"], ["s"], name="slice", starts=[0], ends=[6], axes=[3]),
        helper.make_node("Concat", ["s", "s"], ["cat"], name="cat", axis=3),
        helper.make_node("Dropout", ["cat"], ["d"], name="drop", ratio=0.1),
        helper.make_node("Cast", ["d"], ["y"], name="cast", to=TensorProto.DOUBLE),
        helper.make_node("Shape", ["y"], ["shp"], name="shape_of"),
    ]
    g = helper.make_graph(nodes, "legacy", [_vi("x", TensorProto.FLOAT, [1, 4, 6])],
                          [_vi("y", TensorProto.DOUBLE, [1, 1, 2, 12]), _vi("shp", TensorProto.INT64, [4])],
                          [_init("bias", [12], rng)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)])


def _functions() -> onnx.ModelProto:
    """A model-local function, a sparse initializer, Split/MatMul/Transpose, and an If whose body is dropped."""
    fn = helper.make_function("local", "Swish", ["x"], ["y"], [
        helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
        [helper.make_opsetid("", 18)])
    sp = helper.make_sparse_tensor(numpy_helper.from_array(np.asarray([1.0, 2.0, 3.0], np.float32), "sw"),
                                   numpy_helper.from_array(np.asarray([0, 5, 11], np.int64), "sw_idx"), [4, 3])
    nodes = [
        helper.make_node("Swish", ["x"], ["h"], name="swish", domain="local"),
        helper.make_node("MatMul", ["h", "sw"], ["m"], name="mm"),
        helper.make_node("Split", ["m", "split"], ["m0", "m1"], name="split", axis=1),
        helper.make_node("Transpose", ["m0"], ["t"], name="tr", perm=[1, 0]),
        helper.make_node("ReduceMean", ["t"], ["y"], name="mean", keepdims=0),
        helper.make_node("Identity", ["m1"], ["z"], name="ident"),
    ]
    g = helper.make_graph(nodes, "funcs", [_vi("x", TensorProto.FLOAT, [2, 4])],
                          [_vi("y", TensorProto.FLOAT, [1]), _vi("z", TensorProto.FLOAT, [2, 2])],
                          [numpy_helper.from_array(np.asarray([1, 2], np.int64), "split")],
                          sparse_initializer=[sp])
    return helper.make_model(g, functions=[fn], opset_imports=[helper.make_opsetid("", 18),
                                                               helper.make_opsetid("local", 1)])


def _control_flow() -> onnx.ModelProto:
    """An If with two subgraph bodies: graphopt refuses control flow, so mutants must fail cleanly too."""
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [_vi("t", TensorProto.FLOAT, [3])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", TensorProto.FLOAT, [3])])
    nodes = [helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other)]
    g = helper.make_graph(nodes, "cf", [_vi("c", TensorProto.BOOL, []), _vi("x", TensorProto.FLOAT, [3])],
                          [_vi("y", TensorProto.FLOAT, [3])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@functools.cache
def seeds() -> dict[str, bytes]:
    """Serialized seed models by name (each loads cleanly except ``control_flow``, which is refused)."""
    out = {name: fn().SerializeToString() for name, fn in
           (("cnn", _cnn), ("legacy", _legacy), ("functions", _functions), ("control_flow", _control_flow))}
    out["squeezenet"] = (LIGHT / "light_squeezenet.onnx").read_bytes()
    return out


# ----------------------------------------------------------------------------------------------- mutations
def _graphs(m: onnx.ModelProto) -> list[onnx.GraphProto]:
    """The main graph and every subgraph (so mutations also reach If bodies)."""
    out, stack = [], [m.graph]
    while stack:
        g = stack.pop()
        out.append(g)
        for n in g.node:
            for a in n.attribute:
                if a.HasField("g"):
                    stack.append(a.g)
                stack.extend(a.graphs)
    return out


def _node(m: onnx.ModelProto, rng: random.Random) -> onnx.NodeProto | None:
    nodes = [n for g in _graphs(m) for n in g.node] + [n for f in m.functions for n in f.node]
    return rng.choice(nodes) if nodes else None


def _value_infos(m: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    return [v for g in _graphs(m) for v in (*g.input, *g.output, *g.value_info)]


def _tensors(m: onnx.ModelProto) -> list[TensorProto]:
    out = []
    for g in _graphs(m):
        out += list(g.initializer)
        for sp in g.sparse_initializer:
            out += [sp.values, sp.indices]
        for n in g.node:
            for a in n.attribute:
                if a.HasField("t"):
                    out.append(a.t)
    return out


def _names(m: onnx.ModelProto) -> list[str]:
    g = m.graph
    return [x for n in g.node for x in (*n.input, *n.output) if x] + [i.name for i in g.initializer]


BOMB_DIMS = (0, -1, 1, 3, 2**31 + 1, 2**40, 2**62, 10**6)
OPS = ("Conv", "Relu", "FooBar", "", "If", "Loop", "Scan", "Constant", "Reshape", "Gemm", "Resize", "Where",
       "NonZero", "Range", "ConstantOfShape", "Expand", "Tile", "TopK", "Einsum", "relu", "Conv2d")
DOMAINS = ("com.evil", "ai.onnx.ml", "com.microsoft", "local", "ai.onnx", "")


def _m_elem_type(m, rng):
    pool: list = _value_infos(m) + _tensors(m)
    if not pool:
        return
    x = rng.choice(pool)
    t = rng.choice([0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 14, 16, 17, 21, 22, 25, 27, 40, 2**20])
    if isinstance(x, TensorProto):
        x.data_type = t
    elif x.type.HasField("tensor_type"):
        x.type.tensor_type.elem_type = t


def _m_dangling(m, rng):
    n = _node(m, rng)
    if n is not None and len(n.input):
        n.input[rng.randrange(len(n.input))] = rng.choice(["dangling", "", "y", "x", "does_not_exist_" * 3])
    elif n is not None:
        n.input.append("dangling")


def _m_cycle(m, rng):
    g = m.graph
    if len(g.node) < 2:
        return
    i = rng.randrange(len(g.node))
    j = rng.randrange(i, len(g.node))  # j >= i: node i consumes its own or a later node's output
    if len(g.node[i].input) and len(g.node[j].output):
        g.node[i].input[rng.randrange(len(g.node[i].input))] = g.node[j].output[0]


def _m_dup_output(m, rng):
    g = m.graph
    choice = rng.randrange(3)
    if choice == 0 and len(g.node) >= 2:
        a, b = rng.sample(range(len(g.node)), 2)
        if len(g.node[a].output) and len(g.node[b].output):
            g.node[b].output[0] = g.node[a].output[0]
    elif choice == 1 and len(g.output):
        g.output.append(g.output[rng.randrange(len(g.output))])
    else:
        n = _node(m, rng)
        if n is not None and len(n.output):
            n.output.append(n.output[0])


def _m_unknown_op(m, rng):
    n = _node(m, rng)
    if n is None:
        return
    if rng.random() < 0.6:
        n.op_type = rng.choice(OPS)
    else:
        n.domain = rng.choice(DOMAINS)


def _m_missing_init(m, rng):
    g = rng.choice(_graphs(m))
    if len(g.initializer):
        del g.initializer[rng.randrange(len(g.initializer))]
    elif len(g.sparse_initializer):
        del g.sparse_initializer[0]


def _m_dim(m, rng):
    pool: list = _value_infos(m) + _tensors(m) + [sp for g in _graphs(m) for sp in g.sparse_initializer]
    if not pool:
        return
    x = rng.choice(pool)
    d = rng.choice(BOMB_DIMS)
    if isinstance(x, TensorProto | onnx.SparseTensorProto):
        if len(x.dims):
            x.dims[rng.randrange(len(x.dims))] = d
        else:
            x.dims.append(d)
    elif x.type.HasField("tensor_type"):
        dims = x.type.tensor_type.shape.dim
        if len(dims):
            dims[rng.randrange(len(dims))].dim_value = d
        else:
            dims.add().dim_value = d


def _m_raw_data(m, rng):
    ts = [t for t in _tensors(m) if t.HasField("raw_data")]
    if ts:
        t = rng.choice(ts)
        k = len(t.raw_data)
        cut = rng.random() < 0.6
        t.raw_data = t.raw_data[: rng.randrange(k + 1)] if cut else t.raw_data + b"\0" * rng.randint(1, 64)


def _m_attr(m, rng):
    nodes = [n for g in _graphs(m) for n in g.node if len(n.attribute)]
    if not nodes:
        return
    n = rng.choice(nodes)
    a = n.attribute[rng.randrange(len(n.attribute))]
    r = rng.randrange(7)
    if r == 0:
        a.i = rng.choice([-(2**62), -7, -1, 0, 5, 2**31, 2**62])
        a.type = onnx.AttributeProto.INT
    elif r == 1:
        del a.ints[:]
        a.ints.extend(rng.choice([[], [0], [-1, -1], [2**40], list(range(9)), [1, 1, 1, 1, 1, 1]]))
        a.type = onnx.AttributeProto.INTS
    elif r == 2:
        a.f = rng.choice([float("nan"), float("inf"), -1e30, 0.0])
        a.type = onnx.AttributeProto.FLOAT
    elif r == 3:
        a.type = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13])
    elif r == 4:
        n.attribute.remove(a)
    elif r == 5:
        n.attribute.add().CopyFrom(helper.make_attribute(rng.choice(["bogus", a.name]), rng.choice([1, "s", [1, 2]])))
    else:
        a.s = rng.choice([b"", b"\xff\xfe", b"NOTSET", b"linear", b"x" * 100])
        a.type = onnx.AttributeProto.STRING


def _m_opset(m, rng):
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = rng.choice([1, 5, 6, 7, 9, 10, 11, 12, 13, 17, 18, 21, 23, 24, 1000, -1])
            return
    del m.opset_import[:]


def _m_drop_node(m, rng):
    g = rng.choice(_graphs(m))
    if len(g.node):
        del g.node[rng.randrange(len(g.node))]


def _m_shuffle(m, rng):
    g = m.graph
    nodes = list(g.node)
    rng.shuffle(nodes)
    del g.node[:]
    g.node.extend(nodes)


def _m_external(m, rng):
    ts = _tensors(m)
    if not ts:
        return
    t = rng.choice(ts)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    loc = rng.choice(["../escape.bin", "/etc/passwd", "missing.bin", "", "sub/../../x", "data.bin", "."])
    for k, v in (("location", loc), ("offset", rng.choice(["0", "-5", "abc", "999999"])),
                 ("length", rng.choice(["", "4", "-1", "1" + "0" * 20]))):
        if v or k == "location":
            e = t.external_data.add()
            e.key, e.value = k, v


def _m_rename_output(m, rng):
    if len(m.graph.output):
        m.graph.output[rng.randrange(len(m.graph.output))].name = rng.choice(["nope", "", "x", "w"])


PROTO_MUTATIONS: dict[str, Callable[[onnx.ModelProto, random.Random], None]] = {
    "elem_type": _m_elem_type, "dangling": _m_dangling, "cycle": _m_cycle, "dup_output": _m_dup_output,
    "unknown_op": _m_unknown_op, "missing_init": _m_missing_init, "dim": _m_dim, "raw_data": _m_raw_data,
    "attr": _m_attr, "opset": _m_opset, "drop_node": _m_drop_node, "shuffle": _m_shuffle,
    "external": _m_external, "rename_output": _m_rename_output,
}
BYTE_MUTATIONS = ("truncate", "bitflip", "bytes")
KINDS = tuple(PROTO_MUTATIONS) + BYTE_MUTATIONS


def mutate(data: bytes, kinds: list[str], seed: int) -> bytes:
    """Apply ``kinds`` in order to a serialized model; structural kinds edit the proto, byte kinds the bytes."""
    rng = random.Random(seed)
    for kind in kinds:
        if kind in PROTO_MUTATIONS:
            m = onnx.ModelProto()
            try:
                m.ParseFromString(data)
            except Exception:  # noqa: BLE001 - an earlier byte mutation broke the proto: keep mutating bytes
                continue
            PROTO_MUTATIONS[kind](m, rng)
            data = m.SerializeToString()
        elif kind == "truncate":
            data = data[: rng.randrange(len(data) + 1)]
        elif kind == "bitflip":
            b = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                if b:
                    i = rng.randrange(len(b))
                    b[i] ^= 1 << rng.randrange(8)
            data = bytes(b)
        elif kind == "bytes":
            b = bytearray(data)
            if b:
                i = rng.randrange(len(b))
                b[i:i + 4] = bytes(rng.choice([0, 0xFF, 0x7F, 0x80]) for _ in range(4))
            data = bytes(b)
        else:
            raise ValueError(f"unknown mutation {kind!r}")
    return data


# --------------------------------------------------------------------------------------------------- oracle
class CaseTimeout(BaseException):
    """Raised in the main thread by SIGALRM when a case exceeds :data:`CASE_TIMEOUT_S` (a hang)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (main thread, POSIX only; elsewhere no limit)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise CaseTimeout(f"no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_case(data: bytes, path: Path, timeout: float = CASE_TIMEOUT_S) -> tuple[str, str]:
    """Write ``data`` to ``path`` and load it: ("ok" | "error" | "invalid" | "uncaught" | "hang", detail).

    "invalid" is a load that succeeded with a graph failing ``verify`` -- a silently wrong result.
    """
    import traceback

    path.write_bytes(data)
    try:
        with time_limit(timeout):
            g = load_onnx(path)
    except USER_ERRORS as e:
        return "error", f"{type(e).__name__}: {e}"[:300]
    except CaseTimeout as e:
        return "hang", str(e)
    except Exception as e:  # noqa: BLE001 - the point: anything else is a bug
        return "uncaught", "".join(traceback.format_exception(e))[-2000:]
    try:
        verify(g)
    except Exception as e:  # noqa: BLE001
        return "invalid", "".join(traceback.format_exception(e))[-2000:]
    return "ok", f"{len(g)} nodes"


# ---------------------------------------------------------------------------------------------------- tests
CASES: Counter = Counter()


def test_seeds_load(tmp_path):
    """The seeds themselves are valid (the fuzzing starts from models the frontend accepts)."""
    for name, data in seeds().items():
        outcome, detail = run_case(data, tmp_path / f"{name}.onnx")
        assert outcome == ("error" if name == "control_flow" else "ok"), (name, detail)
        if name == "control_flow":
            assert "control flow" in detail.lower()


def test_fuzz_onnx_frontend(tmp_path, record_property):
    path = tmp_path / "case.onnx"
    (tmp_path / "data.bin").write_bytes(b"\0" * 64)  # a real external file for "data.bin" locations
    names = sorted(seeds())

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    @given(st.sampled_from(names), st.lists(st.sampled_from(KINDS), min_size=1, max_size=3),
           st.integers(0, 2**32 - 1))
    def case(seed_name, kinds, seed):
        data = mutate(seeds()[seed_name], kinds, seed)
        outcome, detail = run_case(data, path)
        CASES[outcome] += 1
        assert outcome in ("ok", "error"), f"{seed_name} {kinds} seed={seed}: {outcome}\n{detail}"

    case()
    n = sum(CASES.values())
    record_property("onnx_fuzz_cases", n)
    print(f"ONNX fuzz cases run: {n} ({dict(CASES)})")
    assert n >= EXAMPLES
    if EXAMPLES >= 200:  # the default run exercises both outcomes (tiny GRAPHOPT_FUZZ_EXAMPLES runs may not)
        assert CASES["ok"] > 0 and CASES["error"] > 0


def test_fuzz_onnx_through_cli(tmp_path, record_property):
    """``graphopt inspect`` on mutants exits 0 or 2 (one-line error), never with a traceback."""
    from typer.testing import CliRunner

    from graphopt.cli import app

    runner = CliRunner()
    rng = random.Random(8)
    codes: Counter = Counter()
    names = sorted(seeds())
    for i in range(CLI_EXAMPLES):
        kinds = [rng.choice(KINDS) for _ in range(rng.randint(1, 2))]
        p = tmp_path / f"m{i}.onnx"
        p.write_bytes(mutate(seeds()[names[i % len(names)]], kinds, rng.randrange(2**32)))
        with time_limit(CASE_TIMEOUT_S):
            res = runner.invoke(app, ["inspect", str(p), "--json"])
        codes[res.exit_code] += 1
        assert res.exit_code in (0, 2), f"{kinds}: exit {res.exit_code}\n{res.output}\n{res.exception!r}"
        if res.exit_code == 2:
            assert "error:" in res.stderr and "Traceback" not in res.output
    record_property("onnx_cli_fuzz_cases", CLI_EXAMPLES)
    print(f"ONNX CLI fuzz cases run: {CLI_EXAMPLES} (exit codes {dict(codes)})")
    assert codes[0] and codes[2]
