"""The segment database: unique segments mined from a corpus, deduplicated by isomorphism with resolution.

Storage is one SQLite file (no pickle): a ``meta`` table (format, version, the vocabulary as JSON, corpus
description) and a ``segments`` table with one row per unique segment: occurrence count, number of corpus
graphs containing it, number of inputs/outputs, input/output resolutions, FLOPs and parameters per sample, op
labels, and the segment's IR as zlib-compressed JSON (``graphopt.ir.serialize.graph_to_json``; weights are not
stored, only small literal constants such as reshape targets, which change meaning). Compression keeps the
shipped file small: the JSON IR is ~5x larger than the rest of a row.

Shapes in the database are *resolutions*: tensor shapes without the leading batch dimension, so segments
mined at batch 2 match graphs run at any batch size.

Dedup: a segment is canonicalized (canonical node order, canonical names ``in0.., n0.., n0.W``) and turned
into a labelled ``networkx.DiGraph`` (node label = op label + output resolutions + semantic attributes, with
boundary input/output marker nodes carrying their resolutions; edge label = output index > input slot, slot
ignored for commutative ops). A Weisfeiler-Lehman hash of that graph is the cheap prefilter; segments that
share it are compared with networkx's VF2 isomorphism matcher on those labels.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graphopt.ir.cost import node_cost
from graphopt.ir.graph import Graph, Node, Value
from graphopt.ir.registry import get_op
from graphopt.ir.serialize import decode_attr, encode_attr, graph_from_json, graph_to_json
from graphopt.ir.types import TensorType

from .mine import Vocabulary
from .partition import partition
from .tokens import graph_tokens, node_label, segment_order

FORMAT = "graphopt-autogo-segments"
VERSION = 1

COMMUTATIVE = {"add", "mul", "sum", "max", "min", "mean", "and", "or", "xor", "equal"}
"""Ops whose input slots are interchangeable (edge slots are ignored in the isomorphism labels)."""

_GEOMETRY_ATTRS = {"pads", "auto_pad", "strides", "kernel_shape", "ceil_mode", "output_padding", "output_shape"}
"""Attributes of conv/pool ops implied by kernel (in the label) and resolution (in the label), or only padding
mode: two segments that differ only there are the same segment."""


def resolution(shape: Sequence | None) -> tuple | None:
    """A shape without its batch dimension (``None`` for unknown rank)."""
    return None if shape is None else tuple(shape[1:])


def _res_json(shape: Sequence | None) -> list | None:
    r = resolution(shape)
    return None if r is None else list(r)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).tobytes() + str(a.dtype).encode() + str(a.shape).encode()
                        ).hexdigest()[:12]


def signature_label(node: Node) -> str:
    """Node label for isomorphism: op label, output resolutions, semantic attributes, literal constants."""
    geo = _GEOMETRY_ATTRS if node.op in ("conv", "conv_transpose", "max_pool", "avg_pool") else set()
    attrs = {k: encode_attr(v) for k, v in sorted(node.attrs.items()) if k not in geo}
    consts = [f"{j}:{_digest(v.const)}" for j, v in enumerate(node.inputs)
              if v is not None and v.is_const and v.kind == "const"]
    outs = [str(resolution(o.shape)) for o in node.outputs]
    return f"{node_label(node)}|{outs}|{json.dumps(attrs, sort_keys=True)}|{consts}"


@dataclass(eq=False)
class CanonicalSegment:
    """A segment cut out of a graph, in canonical form.

    ``graph`` has canonical names and the boundary as its inputs/outputs; ``inputs``/``outputs`` are the
    corresponding values of the source graph (same order) and ``nodes`` the source nodes aligned with
    ``graph.nodes``.
    """

    graph: Graph
    inputs: list[Value]
    outputs: list[Value]
    nodes: list[Node]
    key: str
    nx: Any

    def flops(self) -> int:
        """FLOPs per sample (divided by the batch size of the first input when it is static)."""
        total = sum(node_cost(n).flops or 0 for n in self.graph.nodes)
        b = self.graph.inputs[0].shape[0] if self.graph.inputs and self.graph.inputs[0].shape else 1
        return total // b if isinstance(b, int) and b > 0 else total


def segment_nx(g: Graph):
    """Labelled DiGraph used for hashing and isomorphism (see module docstring)."""
    import networkx as nx

    G = nx.DiGraph()
    src: dict[int, str] = {}
    for i, v in enumerate(g.inputs):
        G.add_node(f"i{i}", label=f"in|{resolution(v.shape)}|{v.dtype}")
        src[id(v)] = f"i{i}"
    for k, n in enumerate(g.nodes):
        G.add_node(f"n{k}", label=signature_label(n))
        for o in n.outputs:
            src[id(o)] = f"n{k}"
    for k, n in enumerate(g.nodes):
        for j, v in enumerate(n.inputs):
            if v is None or v.is_const:
                continue
            a, b = src[id(v)], f"n{k}"
            lab = f"{v.output_index}>{'*' if n.op in COMMUTATIVE else j}"
            if G.has_edge(a, b):
                lab = ",".join(sorted(G.edges[a, b]["label"].split(",") + [lab]))
            G.add_edge(a, b, label=lab)
    for i, v in enumerate(g.outputs):
        G.add_node(f"o{i}", label=f"out|{resolution(v.shape)}")
        G.add_edge(src[id(v)], f"o{i}", label=f"{v.output_index}>out")
    return G


def nx_key(G) -> str:
    import networkx as nx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = nx.weisfeiler_lehman_graph_hash(G, node_attr="label", edge_attr="label", iterations=3)
    return hashlib.sha256(f"{h}|{G.number_of_nodes()}|{G.number_of_edges()}".encode()).hexdigest()[:24]


def isomorphic(G1, G2) -> bool:
    import networkx as nx
    from networkx.algorithms import isomorphism as iso

    if G1.number_of_nodes() != G2.number_of_nodes() or G1.number_of_edges() != G2.number_of_edges():
        return False
    return nx.is_isomorphic(G1, G2, node_match=iso.categorical_node_match("label", None),
                            edge_match=iso.categorical_edge_match("label", None))


def canonical_segment(graph: Graph, nodes: Iterable[Node]) -> CanonicalSegment:
    """Cut ``nodes`` out of ``graph`` and put the piece in canonical form (see :class:`CanonicalSegment`).

    Boundary inputs are non-constant values used inside and produced outside; boundary outputs are values
    produced inside and used outside (or graph outputs). Inputs are ordered by their first use in the
    segment's canonical order, outputs by producer position.
    """
    nodes = list(nodes)
    inside = {id(n) for n in nodes}
    g_outs = {id(v) for v in graph.outputs}
    order, _ = segment_order(nodes, g_outs)
    pos = {id(n): i for i, n in enumerate(order)}
    first_use: dict[int, tuple[int, int]] = {}
    b_in: dict[int, Value] = {}
    b_out: list[Value] = []
    for n in order:
        for j, v in enumerate(n.inputs):
            if v is None or v.is_const or (v.producer is not None and id(v.producer) in inside):
                continue
            b_in.setdefault(id(v), v)
            first_use.setdefault(id(v), (pos[id(n)], j))
        for o in n.outputs:
            if id(o) in g_outs or any(id(u.node) not in inside for u in o.uses):
                b_out.append(o)
    ins = sorted(b_in.values(), key=lambda v: first_use[id(v)])
    cg = Graph("segment")
    vmap: dict[int, Value] = {}
    for k, v in enumerate(ins):
        vmap[id(v)] = cg.add_input(f"in{k}", v.type)
    for k, n in enumerate(order):
        opdef = get_op(n.op)
        new_ins: list[Value | None] = []
        for j, v in enumerate(n.inputs):
            if v is None:
                new_ins.append(None)
                continue
            if id(v) not in vmap:
                nv = cg.add_const(f"n{k}.{opdef.input_spec(j).name}", v.const, v.kind)
                nv.type = v.type
                vmap[id(v)] = nv
            new_ins.append(vmap[id(v)])
        outs = [f"n{k}"] if len(n.outputs) == 1 else [f"n{k}_{o}" for o in range(len(n.outputs))]
        new = cg.create_node(n.op, new_ins, dict(n.attrs), name=f"n{k}", output_names=outs,
                             output_types=[o.type for o in n.outputs], infer=False)
        for o, no in zip(n.outputs, new.outputs, strict=True):
            vmap[id(o)] = no
    cg.set_outputs([vmap[id(v)] for v in b_out])
    G = segment_nx(cg)
    return CanonicalSegment(cg, ins, b_out, order, nx_key(G), G)


def _has_input(nodes: Sequence[Node]) -> bool:
    """Whether the segment reads any activation from outside (False for constant-only computations)."""
    inside = {id(n) for n in nodes}
    return any(v is not None and not v.is_const and (v.producer is None or id(v.producer) not in inside)
               for n in nodes for v in n.inputs)


def exact_encoding(graph: Graph, nodes: Sequence[Node]) -> str:
    """An exact text encoding of the labelled segment in the given node order.

    Equal encodings imply isomorphic segments (the converse needs :func:`canonical_segment`), so the database
    build canonicalizes each distinct encoding once; repeated cells and blocks then cost one string each.
    """
    idx = {id(n): i for i, n in enumerate(nodes)}
    outs = {id(v) for v in graph.outputs}
    ext: dict[int, int] = {}
    parts = []
    for n in nodes:
        srcs = []
        for v in n.inputs:
            if v is None:
                srcs.append("-")
            elif v.is_const:
                srcs.append(f"c{v.dtype}")
            elif v.producer is not None and id(v.producer) in idx:
                srcs.append(f"n{idx[id(v.producer)]}.{v.output_index}")
            else:
                srcs.append(f"i{ext.setdefault(id(v), len(ext))}:{resolution(v.shape)}:{v.dtype}")
        bouts = [k for k, o in enumerate(n.outputs) if id(o) in outs or any(id(u.node) not in idx for u in o.uses)]
        parts.append(f"{signature_label(n)}<{','.join(srcs)}>{bouts}")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------ records
@dataclass(eq=False)
class SegmentRecord:
    """One unique segment of the database (shapes are resolutions: no batch dimension)."""

    id: int
    key: str
    n_nodes: int
    n_in: int
    n_out: int
    in_shapes: list[list]
    out_shapes: list[list]
    flops: int
    params: int
    count: int
    n_graphs: int
    ops: list[str]
    propagatable: bool
    sources: list[str]
    ir: dict[str, Any]
    consts: dict[str, Any] = field(default_factory=dict)
    _graph: Graph | None = field(default=None, repr=False)
    _nx: Any = field(default=None, repr=False)

    def graph(self) -> Graph:
        """The segment's IR (parameters zero-filled: weights are not stored; literals are)."""
        if self._graph is None:
            arrays = {}
            for c in self.ir["constants"]:
                t = TensorType.from_json(c["type"])
                if c["name"] in self.consts:
                    arrays[c["name"]] = np.asarray(decode_attr(self.consts[c["name"]]),
                                                   dtype=t.dtype.to_numpy()).reshape(t.shape)
                else:
                    arrays[c["name"]] = np.zeros(t.shape, dtype=t.dtype.to_numpy())
            self._graph = graph_from_json(self.ir, arrays, f"segment {self.id}")
        return self._graph

    def nx(self):
        if self._nx is None:
            self._nx = segment_nx(self.graph())
        return self._nx

    def summary(self) -> str:
        return (f"#{self.id} [{' '.join(self.ops)}] in={self.in_shapes} out={self.out_shapes} "
                f"count={self.count} graphs={self.n_graphs}")


def _ir_doc(g: Graph) -> tuple[dict[str, Any], dict[str, Any]]:
    doc = graph_to_json(g)
    doc["meta"] = {}
    for n in doc["nodes"]:
        n["meta"] = {}
    for c in doc["constants"]:
        c["meta"] = {}
    consts = {v.name: encode_attr(v.const) for v in g.constants.values() if v.kind == "const"}
    return doc, consts


class SegmentDB:
    """Unique segments with statistics plus the vocabulary that produced them.

    Build with :meth:`build`, persist with :meth:`save`, reopen with :meth:`open`, select replacement
    candidates with :meth:`query`.
    """

    def __init__(self, records: list[SegmentRecord], vocab: Vocabulary | None = None,
                 info: dict[str, Any] | None = None) -> None:
        self.records = records
        self.vocab = vocab
        self.info = dict(info or {})
        self._by_key: dict[str, list[SegmentRecord]] = {}
        self._by_io: dict[tuple[int, int], list[SegmentRecord]] = {}
        for r in records:
            self._by_key.setdefault(r.key, []).append(r)
            self._by_io.setdefault((r.n_in, r.n_out), []).append(r)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def get(self, seg_id: int) -> SegmentRecord:
        for r in self.records:
            if r.id == seg_id:
                return r
        raise KeyError(f"segment database has no segment #{seg_id} (ids 0..{len(self.records) - 1})")

    def find(self, seg: CanonicalSegment) -> SegmentRecord | None:
        """The record isomorphic (with resolution) to ``seg``, if any."""
        for r in self._by_key.get(seg.key, []):
            if isomorphic(r.nx(), seg.nx):
                return r
        return None

    # --------------------------------------------------------------------------------------------- build
    @classmethod
    def build(cls, graphs: Iterable[Graph], vocab: Vocabulary, names: Sequence[str] | None = None,
              progress: Callable[[int, str], None] | None = None, max_sources: int = 5) -> SegmentDB:
        """Partition every corpus graph with the full vocabulary and keep each unique segment once."""
        from .resolution import propagatable

        reps: dict[str, list[tuple[CanonicalSegment, dict[str, Any]]]] = {}
        seen: dict[str, dict[str, Any]] = {}
        n_graphs = 0
        for gi, g in enumerate(graphs):
            name = names[gi] if names is not None else g.name
            n_graphs += 1
            order = graph_tokens(g)
            for seg in partition(g, vocab, order=order):
                if not _has_input(seg.nodes):
                    continue  # constant-only computations (a transposed weight): nothing to replace
                fk = exact_encoding(g, seg.nodes)
                stats = seen.get(fk)
                if stats is None:  # first time this exact labelled graph shows up: canonicalize + match
                    cs = canonical_segment(g, seg.nodes)
                    bucket = reps.setdefault(cs.key, [])
                    stats = next((st for rep, st in bucket if isomorphic(rep.nx, cs.nx)), None)
                    if stats is None:
                        stats = {"count": 0, "graphs": set(), "sources": []}
                        bucket.append((cs, stats))
                    seen[fk] = stats
                stats["count"] += 1
                if gi not in stats["graphs"]:
                    stats["graphs"].add(gi)
                    if len(stats["sources"]) < max_sources:
                        stats["sources"].append(name)
            if progress is not None:
                progress(gi, name)
        flat = [(cs, st) for bucket in reps.values() for cs, st in bucket]
        flat.sort(key=lambda t: (-len(t[1]["graphs"]), -t[1]["count"], len(t[0].graph), t[0].key))
        records = []
        for i, (cs, st) in enumerate(flat):
            doc, consts = _ir_doc(cs.graph)
            g = cs.graph
            params = sum(int(v.type.numel() or 0) for v in g.constants.values() if v.kind == "param" and v.type)
            records.append(SegmentRecord(
                i, cs.key, len(g), len(g.inputs), len(g.outputs), [_res_json(v.shape) for v in g.inputs],
                [_res_json(v.shape) for v in g.outputs], cs.flops(), params, st["count"], len(st["graphs"]),
                [node_label(n) for n in g.nodes], propagatable(g) is True, st["sources"], doc, consts,
                _graph=g, _nx=cs.nx))
        info = {"n_graphs": n_graphs, "n_segments": len(records)}
        return cls(records, vocab, info)

    # ------------------------------------------------------------------------------------------------ query
    def query(self, n_in: int, n_out: int, in_shapes: Sequence[Sequence] | None = None,
              out_shapes: Sequence[Sequence] | None = None, *, mode: str = "any", max_nodes: int | None = None,
              exclude_key: str | None = None) -> list[SegmentRecord]:
        """Candidates with ``n_in`` inputs and ``n_out`` outputs.

        ``mode``: ``"exact"`` = input and output resolutions equal ``in_shapes``/``out_shapes`` (resolutions,
        no batch dim) up to a permutation of the inputs and of the outputs; ``"propagatable"`` = every op of
        the segment is supported by resolution propagation; ``"any"`` = the union.
        """
        if mode not in ("any", "exact", "propagatable"):
            raise ValueError(f"SegmentDB.query: mode must be 'any', 'exact' or 'propagatable', got {mode!r}")
        out = []
        for r in self._by_io.get((n_in, n_out), []):
            if max_nodes is not None and r.n_nodes > max_nodes:
                continue
            if exclude_key is not None and r.key == exclude_key:
                continue
            exact = in_shapes is not None and out_shapes is not None and _same_multiset(
                r.in_shapes, in_shapes) and _same_multiset(r.out_shapes, out_shapes)
            if (mode in ("any", "exact") and exact) or (mode in ("any", "propagatable") and r.propagatable):
                out.append(r)
        return out

    # --------------------------------------------------------------------------------------------- storage
    def save(self, path: str | os.PathLike) -> Path:
        """Write the database as SQLite, atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            con = sqlite3.connect(tmp)
            con.executescript(_SCHEMA)
            meta = {"format": FORMAT, "version": str(VERSION), "info": json.dumps(self.info, sort_keys=True),
                    "vocab": json.dumps(self.vocab.to_json()) if self.vocab is not None else ""}
            con.executemany("INSERT INTO meta VALUES (?, ?)", sorted(meta.items()))
            con.executemany(
                "INSERT INTO segments VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(r.id, r.key, r.n_nodes, r.n_in, r.n_out, json.dumps(r.in_shapes), json.dumps(r.out_shapes),
                  r.flops, r.params, r.count, r.n_graphs, " ".join(r.ops), int(r.propagatable),
                  json.dumps(r.sources), _pack({"graph": r.ir, "literals": r.consts})) for r in self.records])
            con.commit()
            con.execute("VACUUM")
            con.close()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a database is meant to be shared
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def open(cls, path: str | os.PathLike) -> SegmentDB:
        """Load a database written by :meth:`save` (data only; nothing is executed)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: segment database not found (build one with `graphopt segments "
                                    f"build CORPUS... -o {path.name}`)")
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path}: not a graphopt segment database (format {meta.get('format')!r})")
            if meta.get("version") != str(VERSION):
                raise ValueError(f"{path}: segment database version {meta.get('version')} is not supported "
                                 f"(this graphopt reads version {VERSION}); rebuild it")
            rows = con.execute("SELECT * FROM segments ORDER BY id").fetchall()
            con.close()
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{path}: corrupt or non-SQLite segment database ({e})") from e
        records = []
        for r in rows:
            blob = _unpack(r[14], path)
            records.append(SegmentRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6]), r[7],
                                         r[8], r[9], r[10], r[11].split(" ") if r[11] else [], bool(r[12]),
                                         json.loads(r[13]), blob["graph"], blob["literals"]))
        vocab = Vocabulary.from_json(json.loads(meta["vocab"]), str(path)) if meta.get("vocab") else None
        return cls(records, vocab, json.loads(meta.get("info") or "{}"))


_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE segments (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, n_nodes INTEGER NOT NULL, n_in INTEGER NOT NULL,
    n_out INTEGER NOT NULL, in_shapes TEXT NOT NULL, out_shapes TEXT NOT NULL, flops INTEGER NOT NULL,
    params INTEGER NOT NULL, count INTEGER NOT NULL, n_graphs INTEGER NOT NULL, ops TEXT NOT NULL,
    propagatable INTEGER NOT NULL, sources TEXT NOT NULL,
    ir BLOB NOT NULL  -- zlib-compressed UTF-8 JSON {"graph": graph_to_json(segment), "literals": {name: array}}
);
CREATE INDEX segments_io ON segments (n_in, n_out);
CREATE INDEX segments_key ON segments (key);
"""


def _pack(doc: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode(), 9)


def _unpack(blob: bytes, path: Path) -> dict[str, Any]:
    try:
        return json.loads(zlib.decompress(blob).decode())
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{path}: corrupt segment IR in the database ({e})") from e


def _same_multiset(a: Sequence[Sequence], b: Sequence[Sequence]) -> bool:
    return len(a) == len(b) and sorted(map(str, map(list, a))) == sorted(map(str, map(list, b)))


def default_db_path() -> Path:
    """The shipped database mined from the model zoo and NAS-Bench-201 cells (``models/data/segments.db``)."""
    from importlib.resources import files

    return Path(str(files("graphopt.models") / "data" / "segments.db"))


def load_default_db(path: str | os.PathLike | None = None) -> tuple[SegmentDB, Vocabulary]:
    """Open ``path`` (default: the shipped database) and return it with its vocabulary."""
    db = SegmentDB.open(path if path is not None else default_db_path())
    if db.vocab is None:
        raise ValueError(f"{path or default_db_path()}: the segment database carries no vocabulary; rebuild it with "
                         f"`graphopt segments build`")
    return db, db.vocab
