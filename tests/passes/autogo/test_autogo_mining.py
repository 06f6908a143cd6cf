"""AutoGO segment mining: tokens, canonical order, BPE, segment extraction, isomorphism dedup, database, CLI."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from _helpers import GraphNet as Net
from _helpers import graph_resnet as resnet
from graphopt.passes.autogo import (
    SegmentDB,
    canonical_order,
    canonical_segment,
    graph_tokens,
    mine,
    node_token,
    partition,
)

from graphopt.ir import Graph, verify


# ------------------------------------------------------------------------------------------- toy networks
def plain(name="plain", widths=(8, 16, 16), seed=0):
    b = Net(name, seed=seed)
    x = b.cbr(b.x, widths[0])
    for i, w in enumerate(widths[1:]):
        x = b.cbr(x, w, 3, 2 if i == 0 else 1)
        x = b.op("max_pool", x, kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    return b.head(x)


def corpus():
    return [resnet("r_a"), resnet("r_b", widths=(8, 16, 32)), plain("p_a")]


def shuffled_renamed(g: Graph, rng: np.random.Generator) -> Graph:
    """The same network with a random valid insertion order and random node/value/constant names."""
    nodes = g.nodes
    preds = {id(n): {id(p) for p in n.input_producers()} for n in nodes}
    done: set[int] = set()
    order = []
    while len(order) < len(nodes):
        ready = [n for n in nodes if id(n) not in done and preds[id(n)] <= done]
        n = ready[int(rng.integers(len(ready)))]
        order.append(n)
        done.add(id(n))
    tag = lambda: "".join(rng.choice(list("abcdefghijklmnop"), 8))  # noqa: E731
    h = Graph("renamed")
    vmap = {id(v): h.add_input("in_" + tag(), v.type) for v in g.inputs}
    consts = list(g.constants.values())
    for i in rng.permutation(len(consts)):
        v = consts[int(i)]
        vmap[id(v)] = h.add_const("c_" + tag(), v.const, v.kind)
    for n in order:
        m = h.create_node(n.op, [vmap[id(v)] for v in n.inputs], dict(n.attrs), name="n_" + tag())
        for o, no in zip(n.outputs, m.outputs, strict=True):
            vmap[id(o)] = no
    h.set_outputs([vmap[id(v)] for v in g.outputs])
    verify(h)
    return h


# ------------------------------------------------------------------------------------------------- tokens
def test_tokens_carry_kernel_and_neighbour_ops():
    g = resnet()
    nodes, toks = graph_tokens(g)
    assert toks[0] == "conv3x3(input)[batch_norm]"
    assert {"gemmw(flatten)[output]", "add(batch_norm,relu)[relu]"} <= set(toks)
    one_by_one = [t for n, t in zip(nodes, toks, strict=True) if n.op == "conv" and n.inputs[1].shape[2] == 1]
    assert one_by_one and all(t.startswith("conv1x1(") for t in one_by_one)
    assert toks == [node_token(n) for n in nodes]


def test_canonical_order_is_topological_and_name_independent():
    g = resnet(widths=(8, 16, 32))
    order = canonical_order(g)
    pos = {id(n): i for i, n in enumerate(order)}
    assert len(order) == len(g)
    assert all(pos[id(p)] < pos[id(n)] for n in order for p in n.input_producers())
    rng = np.random.default_rng(1)
    for _ in range(3):
        assert graph_tokens(shuffled_renamed(g, rng))[1] == graph_tokens(g)[1]


def test_mining_is_deterministic_under_renaming_and_insertion_order():
    rng = np.random.default_rng(2)
    base = corpus()
    v1 = mine(base, vocab_size=60)
    v2 = mine([shuffled_renamed(g, rng) for g in base], vocab_size=60)
    assert v1.alphabet == v2.alphabet and v1.merges == v2.merges and v1.piece_stats == v2.piece_stats
    assert len(v1.merges) > 5
    db1, db2 = SegmentDB.build(base, v1), SegmentDB.build([shuffled_renamed(g, rng) for g in base], v2)
    assert [(r.key, r.count) for r in db1] == [(r.key, r.count) for r in db2]


def test_mining_finds_a_segment_in_every_model():
    """Three ResNets of different depth/width share their stem and first residual block."""
    graphs = [resnet("r_a"), resnet("r_b", widths=(8, 16, 32)), resnet("r_c", widths=(8, 32), blocks=1),
              plain("p_a")]
    vocab = mine(graphs, vocab_size=100)
    assert any(d >= 3 for _, d in vocab.piece_stats)
    db = SegmentDB.build(graphs, vocab)
    everywhere = [r for r in db if r.n_graphs == 3 and r.n_nodes > 1]
    assert everywhere, [r.summary() for r in db]
    stem = everywhere[0]
    assert set(stem.sources) == {"r_a", "r_b", "r_c"} and stem.in_shapes == [[3, 16, 16]]
    assert stem.ops[:3] == ["conv3x3", "batch_norm", "relu"] and "add" in stem.ops
    assert db.records[0] is stem  # records are ordered by how many graphs contain them


def test_own_encoder_matches_huggingface_bpe():
    from graphopt.passes.autogo.mine import _sym
    from tokenizers import Tokenizer
    from tokenizers.models import BPE

    graphs = corpus()
    vocab = mine(graphs, vocab_size=80)
    sym_vocab = {_sym(i): i for i in range(len(vocab.alphabet))}
    merges = []
    for r, (a, b) in enumerate(vocab.merges):
        sa, sb = "".join(map(_sym, a)), "".join(map(_sym, b))
        merges.append((sa, sb))
        sym_vocab[sa + sb] = len(vocab.alphabet) + r
    tok = Tokenizer(BPE(vocab=sym_vocab, merges=merges))
    for g in graphs:
        toks = graph_tokens(g)[1]
        ours = [b - a for a, b in vocab.encode(toks)]
        theirs = [len(t) for t in tok.encode("".join(vocab.symbols(toks))).tokens]
        assert ours == theirs


def test_segments_are_connected_and_convex_and_cover_the_graph():
    import networkx as nx

    graphs = corpus()
    vocab = mine(graphs, vocab_size=100)
    rng = np.random.default_rng(0)
    for g in graphs:
        G = nx.DiGraph()
        G.add_nodes_from(n.name for n in g.nodes)
        G.add_edges_from((p.name, n.name) for n in g.nodes for p in n.input_producers())
        for r in (None, rng):
            segs = partition(g, vocab, r)
            names = [x for s in segs for x in s.names]
            assert sorted(names) == sorted(n.name for n in g.nodes)  # a partition
            for s in segs:
                inside = set(s.names)
                assert nx.is_weakly_connected(G.subgraph(inside))
                # convex: no path leaves the segment and comes back
                outside_desc = set().union(*(nx.descendants(G, x) for x in inside)) - inside
                assert not any(nx.descendants(G, y) & inside for y in outside_desc)


def test_non_connected_piece_is_split_into_components():
    """A piece spanning two parallel branches (adjacent in the canonical order) yields two segments."""
    from graphopt.passes.autogo import Vocabulary

    b = Net("par")
    x = b.cbr(b.x, 8)
    y1 = b.op("relu", b.conv(x, 8, 1))
    y2 = b.op("relu", b.conv(x, 8, 1))
    g = b.head(b.op("add", y1, y2))
    nodes, toks = graph_tokens(g)
    ops = [n.op for n in nodes]
    i = ops.index("conv", 1)  # first 1x1 branch: conv, relu, then the second branch: conv, relu
    assert ops[i:i + 5] == ["conv", "relu", "conv", "relu", "add"]
    alphabet = sorted(set(toks))
    a_, b_ = alphabet.index(toks[i + 1]), alphabet.index(toks[i + 2])
    vocab = Vocabulary(alphabet, [((a_,), (b_,))])
    assert (i + 1, i + 3) in vocab.encode(toks)  # relu of branch 1 + conv of branch 2: one piece
    segs = partition(g, vocab)
    pieces = [s for s in segs if s.piece == 0]
    assert [s.names for s in pieces] == [[nodes[i + 1].name], [nodes[i + 2].name]]


def test_isomorphic_segments_dedupe_and_resolution_separates():
    g = resnet()
    rng = np.random.default_rng(3)
    h = shuffled_renamed(g, rng)

    def seg(graph, ops_prefix):
        nodes, _ = graph_tokens(graph)
        first = [i for i in range(len(nodes) - 2)
                 if [n.op for n in nodes[i:i + 3]] == ops_prefix][0]
        return canonical_segment(graph, nodes[first:first + 3])

    a = seg(g, ["conv", "batch_norm", "relu"])
    b = seg(h, ["conv", "batch_norm", "relu"])
    assert a.key == b.key
    from graphopt.passes.autogo.segdb import isomorphic

    assert isomorphic(a.nx, b.nx)
    # Same ops at another resolution: a different segment.
    big = resnet(widths=(16, 16))
    c = seg(big, ["conv", "batch_norm", "relu"])
    assert c.key != a.key and not isomorphic(a.nx, c.nx)
    # Database over two renamed copies: every record counted twice, none duplicated.
    vocab = mine([g, h], vocab_size=50)
    db = SegmentDB.build([g, h], vocab)
    assert all(r.count % 2 == 0 and r.n_graphs == 2 for r in db)
    keys = [(r.key, json.dumps(r.in_shapes)) for r in db]
    assert len(keys) == len(set(keys))


def test_add_with_swapped_inputs_is_the_same_segment():
    def tiny(swap):
        b = Net("t")
        x = b.cbr(b.x, 8)
        y = b.bn(b.conv(x, 8))
        s = b.op("add", x, y) if swap else b.op("add", y, x)
        return b.head(b.op("relu", s))

    g1, g2 = tiny(False), tiny(True)
    n1 = [n for n in g1.nodes if n.op in ("conv", "batch_norm", "add")][2:]
    n2 = [n for n in g2.nodes if n.op in ("conv", "batch_norm", "add")][2:]
    assert canonical_segment(g1, n1).key == canonical_segment(g2, n2).key


def test_database_roundtrip_query_and_errors(tmp_path):
    graphs = corpus()
    vocab = mine(graphs, vocab_size=100)
    db = SegmentDB.build(graphs, vocab, names=["a", "b", "c"])
    path = db.save(tmp_path / "seg.db")
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM segments").fetchone()[0] == len(db)
    con.close()
    db2 = SegmentDB.open(path)
    assert [r.key for r in db2] == [r.key for r in db]
    assert db2.vocab.merges == vocab.merges and db2.vocab.alphabet == vocab.alphabet
    for r, r2 in zip(db, db2, strict=True):
        assert (r.count, r.n_graphs, r.in_shapes, r.out_shapes, r.flops, r.ops) == (
            r2.count, r2.n_graphs, r2.in_shapes, r2.out_shapes, r2.flops, r2.ops)
        g2 = r2.graph()
        verify(g2)
        assert [n.op for n in g2.nodes] == [n.op for n in r.graph().nodes]
        from graphopt.passes.autogo.segdb import isomorphic

        assert isomorphic(r.nx(), r2.nx())
    stem = [r for r in db2 if r.ops == ["conv3x3", "batch_norm", "relu"] and r.in_shapes == [[3, 16, 16]]]
    assert stem
    exact = db2.query(1, 1, [[3, 16, 16]], [[8, 16, 16]], mode="exact")
    assert stem[0] in exact and all(r.in_shapes == [[3, 16, 16]] for r in exact)
    assert all(r.propagatable for r in db2.query(1, 1, mode="propagatable"))
    with pytest.raises(ValueError, match="mode"):
        db2.query(1, 1, mode="bogus")
    with pytest.raises(FileNotFoundError, match="segments build"):
        SegmentDB.open(tmp_path / "missing.db")
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database at all" * 10)
    with pytest.raises(ValueError, match="bad.db"):
        SegmentDB.open(bad)


def test_cli_build_and_show(tmp_path):
    import typer
    from typer.testing import CliRunner

    from graphopt.commands.segments_cmd import register
    from graphopt.ir import save

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keep "segments" as a sub-command
        pass

    files = []
    for g in corpus():
        files.append(str(save(g, tmp_path / f"{g.name}.json")))
    runner = CliRunner()
    res = runner.invoke(app, ["segments", "build", *files, "-o", str(tmp_path / "s.db"), "--vocab-size", "100"])
    assert res.exit_code == 0, res.output
    assert "unique segments" in res.output
    res = runner.invoke(app, ["segments", "show", str(tmp_path / "s.db"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["segments"] == len(SegmentDB.open(tmp_path / "s.db")) and doc["info"]["n_graphs"] == 3
    res = runner.invoke(app, ["segments", "show", str(tmp_path / "s.db"), "--segment", "0"])
    assert res.exit_code == 0 and "return" in res.output
    res = runner.invoke(app, ["segments", "show", str(tmp_path / "nope.db")])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["segments", "build", "-o", str(tmp_path / "x.db")])
    assert res.exit_code == 2 and "corpus" in res.output


def test_shipped_database_is_small_and_opens():
    from graphopt.passes.autogo import default_db_path, load_default_db

    path = default_db_path()
    if not path.exists():
        pytest.skip("models/data/segments.db not built yet (graphopt segments build --default)")
    assert path.stat().st_size < 2_000_000
    db, vocab = load_default_db()
    assert len(db) > 50 and len(vocab.merges) > 50
    assert any(r.n_graphs > 100 for r in db)  # NB201 cells are in the corpus
    assert db.info["corpus"][-1].startswith("nb201:")
