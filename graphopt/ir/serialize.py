"""On-disk IR format and structure hashing.

Format (version 1), documented in docs/ir-format.md: ``NAME.json`` holds the structure (inputs, constants'
types and kinds, nodes with attributes and JSON-safe meta, outputs); ``NAME.safetensors`` beside it holds every
constant's array keyed by value name. Loading never executes code (JSON + safetensors, no pickle). Writes are
atomic: both files go to temporary names first and are renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .graph import Graph, IRError
from .limits import check_dims, check_nodes, current_limits
from .types import DType, TensorType

FORMAT = "graphopt-ir"
VERSION = 1


class IRFormatError(IRError):
    pass


# ----------------------------------------------------------------------------------------------- attributes
def encode_attr(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return {"__ndarray__": v.reshape(-1).tolist(), "dtype": DType.from_any(v.dtype).value, "shape": list(v.shape)}
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return {"__float__": repr(v)}
    if isinstance(v, list | tuple):
        return [encode_attr(x) for x in v]
    return v


def decode_attr(v: Any) -> Any:
    if isinstance(v, dict) and "__ndarray__" in v:
        return np.asarray(v["__ndarray__"], dtype=DType(v["dtype"]).to_numpy()).reshape(v["shape"])
    if isinstance(v, dict) and "__float__" in v:
        return float(v["__float__"])
    if isinstance(v, list):
        return [decode_attr(x) for x in v]
    return v


def _json_safe_meta(meta: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in meta.items():
        if k.startswith("_"):
            continue
        try:
            json.dumps(encode_attr(v), allow_nan=False)
        except (TypeError, ValueError):
            continue
        out[k] = encode_attr(v)
    return out


# ------------------------------------------------------------------------------------------------ structure
def graph_to_json(graph: Graph) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": graph.name,
        "meta": _json_safe_meta(graph.meta),
        "inputs": [{"name": v.name, "type": v.type.to_json() if v.type else None} for v in graph.inputs],
        "constants": [{"name": v.name, "type": v.type.to_json() if v.type else None, "kind": v.kind,
                       "meta": _json_safe_meta(v.meta)} for v in graph.constants.values()],
        "nodes": [
            {
                "name": n.name,
                "op": n.op,
                "inputs": [None if v is None else v.name for v in n.inputs],
                "outputs": [{"name": o.name, "type": o.type.to_json() if o.type else None} for o in n.outputs],
                "attrs": {k: encode_attr(a) for k, a in n.attrs.items()},
                "meta": _json_safe_meta(n.meta),
            }
            for n in graph.nodes
        ],
        "outputs": [v.name for v in graph.outputs],
    }


def graph_from_json(doc: dict[str, Any], arrays: dict[str, np.ndarray], source: str = "<memory>") -> Graph:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise IRFormatError(f"{source}: not a graphopt IR file (missing \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise IRFormatError(f"{source}: IR format version {doc.get('version')} is not supported (this graphopt "
                            f"reads version {VERSION})")
    check_doc_limits(doc, source)
    try:
        g = Graph(doc["name"])
        g.meta = {k: decode_attr(v) for k, v in doc.get("meta", {}).items()}
        env = {}
        for d in doc["inputs"]:
            v = g.add_input(d["name"], TensorType.from_json(d["type"]) if d["type"] else None)
            _check_name(v.name, d["name"], source)
            env[d["name"]] = v
        for d in doc["constants"]:
            if d["name"] not in arrays:
                raise IRFormatError(f"{source}: constant {d['name']!r} has no array in the weights file")
            arr = arrays[d["name"]]
            t = TensorType.from_json(d["type"])
            if tuple(arr.shape) != tuple(t.shape or ()) or DType.from_any(arr.dtype) != t.dtype:
                raise IRFormatError(f"{source}: constant {d['name']!r} is declared {t} but the weights file "
                                    f"holds {arr.dtype}{list(arr.shape)}")
            v = g.add_const(d["name"], arr, d.get("kind", "const"))
            _check_name(v.name, d["name"], source)
            v.meta = {k: decode_attr(x) for k, x in d.get("meta", {}).items()}
            env[d["name"]] = v
        for d in doc["nodes"]:
            ins = []
            for name in d["inputs"]:
                if name is None:
                    ins.append(None)
                elif name not in env:
                    raise IRFormatError(f"{source}: node {d['name']!r} uses {name!r}, which is not defined before "
                                        f"it")
                else:
                    ins.append(env[name])
            outs = d["outputs"]
            n = g.create_node(d["op"], ins, {k: decode_attr(a) for k, a in d["attrs"].items()}, name=d["name"],
                              output_names=[o["name"] for o in outs],
                              output_types=[TensorType.from_json(o["type"]) if o["type"] else None for o in outs],
                              infer=False)
            _check_name(n.name, d["name"], source)
            n.meta = {k: decode_attr(x) for k, x in d.get("meta", {}).items()}
            for o, od in zip(n.outputs, outs, strict=True):
                _check_name(o.name, od["name"], source)
                env[od["name"]] = o
        missing = [name for name in doc["outputs"] if name not in env]
        if missing:
            raise IRFormatError(f"{source}: graph outputs {missing} are not defined")
        g.set_outputs([env[name] for name in doc["outputs"]])
    except IRFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as e:
        raise IRFormatError(f"{source}: malformed IR file ({type(e).__name__}: {e})") from e
    except RecursionError:
        raise IRFormatError(f"{source}: malformed IR file (values nested too deeply)") from None
    return g


def check_doc_limits(doc: Any, source: str) -> None:
    """Refuse an IR document that breaks :func:`graphopt.ir.limits.current_limits`, before building anything.

    Checks the node count (``max_nodes``), every static dim (``max_dim``) and the bytes of inputs and
    constants (``max_tensor_bytes``). Malformed parts are skipped here; :func:`graph_from_json` reports them.
    """
    if not isinstance(doc, dict):
        return
    lim = current_limits()
    nodes = doc.get("nodes")
    if isinstance(nodes, list):
        check_nodes(source, len(nodes), lim)

    def check(t: Any, what: str, count_bytes: bool) -> None:
        if isinstance(t, dict) and isinstance(t.get("shape"), list):
            dtype = t.get("dtype")
            size = (_DTYPE_BYTES.get(dtype, 8) if isinstance(dtype, str) else 8) if count_bytes else 0
            check_dims(f"{source}: {what}", [d for d in t["shape"] if isinstance(d, int)], size, lim)

    def items(x: Any) -> list:
        return [d for d in x if isinstance(d, dict)] if isinstance(x, list) else []

    for key in ("inputs", "constants"):
        for d in items(doc.get(key)):
            check(d.get("type"), f"{key[:-1]} {d.get('name')!r}", True)
    for d in items(nodes):
        for o in items(d.get("outputs")):
            check(o.get("type"), f"value {o.get('name')!r} of node {d.get('name')!r}", False)


_DTYPE_BYTES = {d.value: d.itemsize for d in DType}
_ST_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _check_weights_header(wpath: Path) -> None:
    """Check the safetensors header's shapes against the limits before the tensors are read."""
    size = wpath.stat().st_size
    with open(wpath, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise IRFormatError(f"{wpath}: corrupt weights file ({size} bytes, shorter than a safetensors header)")
        n = int.from_bytes(head, "little")
        if n > 100_000_000:  # safetensors' own header cap; read nothing that large
            raise IRFormatError(f"{wpath}: corrupt weights file (header claims {n:,} bytes; safetensors allows "
                                f"at most 100,000,000)")
        if n > size - 8:
            raise IRFormatError(f"{wpath}: corrupt weights file (header claims {n:,} bytes, the file holds "
                                f"{size:,}); it is truncated or not a safetensors file")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise IRFormatError(f"{wpath}: corrupt weights file (unreadable header: {e})") from None
    if not isinstance(header, dict):
        raise IRFormatError(f"{wpath}: corrupt weights file (header is not a JSON object)")
    lim = current_limits()
    for name, info in header.items():
        if name != "__metadata__" and isinstance(info, dict) and isinstance(info.get("shape"), list):
            check_dims(f"{wpath}: tensor {name!r}", [d for d in info["shape"] if isinstance(d, int)],
                       _ST_BYTES.get(str(info.get("dtype")), 8), lim)


def _check_name(got: str, want: str, source: str) -> None:
    if got != want:
        raise IRFormatError(f"{source}: name {want!r} is defined twice")


# -------------------------------------------------------------------------------------------------- files
def weights_path(json_path: str | os.PathLike) -> Path:
    p = Path(json_path)
    stem = p.name[: -len(".json")] if p.name.endswith(".json") else p.name
    return p.with_name(stem + ".safetensors")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 minus the umask).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _to_torch_tensor(arr: np.ndarray):
    """numpy -> torch copy; bfloat16 (ml_dtypes, which torch.from_numpy rejects) goes through its int16 bits."""
    import torch

    arr = np.asarray(arr).copy(order="C")  # not ascontiguousarray: it turns 0-d scalars into shape (1,)
    if DType.from_any(arr.dtype) is DType.bfloat16:
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(arr.copy())


def _to_numpy(t) -> np.ndarray:
    import torch

    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(DType.bfloat16.to_numpy())
    return t.numpy()


def save(graph: Graph, path: str | os.PathLike) -> Path:
    """Write ``path`` (.json) and its ``.safetensors`` sidecar atomically; returns the JSON path."""
    from safetensors.torch import save as st_save

    path = Path(path)
    if path.suffix != ".json":
        raise ValueError(f"IR files end in .json, got {path}")
    doc = graph_to_json(graph)
    doc["weights"] = weights_path(path).name
    tensors = {v.name: _to_torch_tensor(v.const) for v in graph.constants.values()}
    atomic_write_bytes(weights_path(path), st_save(tensors) if tensors else st_save({}))
    atomic_write_bytes(path, json.dumps(doc, indent=1, allow_nan=False).encode())
    return path


def load(path: str | os.PathLike) -> Graph:
    """Load an IR file written by :func:`save` (data only; never executes code)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise IRFormatError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IRFormatError(f"{path}: not valid JSON ({e}); the file may be truncated or corrupt") from e
    except RecursionError:
        raise IRFormatError(f"{path}: not a graphopt IR file (JSON nested too deeply)") from None
    check_doc_limits(doc, str(path))
    wname = doc.get("weights") if isinstance(doc, dict) else None
    wpath = path.parent / wname if isinstance(wname, str) else weights_path(path)
    if isinstance(wname, str) and (Path(wname).name != wname):
        raise IRFormatError(f"{path}: weights file name {wname!r} must be a plain file name beside the JSON")
    arrays: dict[str, np.ndarray] = {}
    if wpath.exists():
        _check_weights_header(wpath)
        try:
            arrays = {k: _to_numpy(t) for k, t in st_load(wpath.read_bytes()).items()}
        except (SafetensorError, ValueError, RuntimeError) as e:
            raise IRFormatError(f"{wpath}: corrupt weights file ({e})") from e
    elif doc.get("constants"):
        raise IRFormatError(f"{path}: weights file {wpath.name} is missing")
    return graph_from_json(doc, arrays, str(path))


# ---------------------------------------------------------------------------------------------------- hash
def structure_hash(graph: Graph) -> str:
    """A name-independent hash of the structure (ops, attributes, wiring, shapes), not of weight values.

    Uses the Weisfeiler-Lehman graph hash (networkx) over nodes labelled with op, attributes and output
    types, and edges labelled with (output index, input slot), so two graphs that differ only in value/node
    names or in their (non-unique) topological order hash equal. WL can in principle collide for
    non-isomorphic graphs; candidates are deduplicated on it, so a collision only skips a candidate.
    """
    import networkx as nx

    G = nx.DiGraph()
    in_index = {id(v): i for i, v in enumerate(graph.inputs)}
    out_index: dict[int, list[int]] = {}
    for i, v in enumerate(graph.outputs):
        out_index.setdefault(id(v), []).append(i)
    for i, v in enumerate(graph.inputs):
        G.add_node(f"in{i}", label=f"input{i}:{v.type}")
    for k, n in enumerate(graph.nodes):
        attrs = json.dumps({a: encode_attr(x) for a, x in sorted(n.attrs.items())}, sort_keys=True)
        consts = [f"{j}:{v.type}:{v.kind}" + (":" + _small_const_digest(v.const) if v.kind == "const" else "")
                  for j, v in enumerate(n.inputs) if v is not None and v.is_const]
        outs = [str(o.type) + "".join(f"@out{x}" for x in out_index.get(id(o), [])) for o in n.outputs]
        G.add_node(f"n{k}", label=f"{n.op}|{attrs}|{consts}|{outs}")
    pos = {id(n): k for k, n in enumerate(graph.nodes)}
    for k, n in enumerate(graph.nodes):
        for j, v in enumerate(n.inputs):
            if v is None or v.is_const:
                continue
            src = f"in{in_index[id(v)]}" if id(v) in in_index else f"n{pos[id(v.producer)]}"
            label = f"{v.output_index}->{j}"
            if G.has_edge(src, f"n{k}"):
                label = G.edges[src, f"n{k}"]["label"] + "," + label
            G.add_edge(src, f"n{k}", label=label)
    with warnings.catch_warnings():  # networkx notes that directed hashes changed in 3.5; ours are self-consistent
        warnings.simplefilter("ignore")
        h = nx.weisfeiler_lehman_graph_hash(G, node_attr="label", edge_attr="label", iterations=4)
    return hashlib.sha256(f"{h}|{len(graph)}|{len(graph.inputs)}|{len(graph.outputs)}".encode()).hexdigest()[:32]


def _small_const_digest(a: np.ndarray) -> str:
    """Literal constants (reshape targets, axes) change semantics, so they are part of the structure."""
    if a.size > 64:
        return f"{a.dtype}{list(a.shape)}"
    return hashlib.sha1(np.ascontiguousarray(a).tobytes() + str(a.dtype).encode()).hexdigest()[:12]
