"""AutoGO segment mining and mutation throughput on the default corpus.

Measures, on the default corpus of ``graphopt segments build --default`` (zoo CNNs lowered with the torch
frontend + 200 NAS-Bench-201 networks):

* corpus lowering time; mining time (canonical tokenization, BPE training with HF ``tokenizers``) and segment
  database build time (partition + canonicalization + isomorphism dedup), with peak traced Python memory
  (``tracemalloc``) and the process's peak RSS (``resource.getrusage``);
* BPE implementations: HF training vs a plain-Python BPE trainer (first ``--py-merges`` merges, extrapolated),
  and our masked encoder vs HF encoding (same pieces; HF needs a new model per random mask);
* mutations per second on ResNet-20 (zoo, lowered by the torch frontend) with the built database: attempts,
  successes, exact vs resolution-propagated fits, mean integer-program solve time.

The paper's figures are printed beside ours (21k graphs mined in under 20 minutes using 10 GB; ILP ~0.1 s).
Writes ``benchmarks/results/autogo_mining.json``.

    python benchmarks/autogo_mining.py [--mutations 100] [--nb201 200] [--db out.db]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
from graphopt.passes.autogo import SegmentDB, graph_tokens, mine, mutate
from graphopt.passes.autogo.corpus import DEFAULT_CORPUS, corpus_graphs
from graphopt.passes.autogo.mine import _sym

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Run  # noqa: E402

PAPER = {"graphs": 21000, "mining_minutes": "< 20", "memory_GB": 10, "unique_segments": 428, "ilp_solve_s": 0.1}


def python_bpe(corpus: list[str], n_merges: int) -> float:
    """Seconds for ``n_merges`` merges of a straightforward Python BPE trainer (recount pairs every merge)."""
    seqs = [list(s) for s in corpus]
    t0 = time.perf_counter()
    for _ in range(n_merges):
        counts: Counter[tuple[str, str]] = Counter()
        for s in seqs:
            counts.update(zip(s, s[1:], strict=False))
        if not counts:
            break
        (a, b), c = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        if c < 2:
            break
        for k, s in enumerate(seqs):
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[k] = out
    return time.perf_counter() - t0


def hf_encoder(vocab, masked=frozenset()):
    from tokenizers import Tokenizer
    from tokenizers.models import BPE

    v = {_sym(i): i for i in range(len(vocab.alphabet))}
    merges = []
    for r, (a, b) in enumerate(vocab.merges):
        sa, sb = "".join(map(_sym, a)), "".join(map(_sym, b))
        v[sa + sb] = len(vocab.alphabet) + r
        if r not in masked:
            merges.append((sa, sb))
    return Tokenizer(BPE(vocab=v, merges=merges))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nb201", type=int, default=200, help="NB201 networks in the corpus (default corpus: 200)")
    ap.add_argument("--vocab-size", type=int, default=2000)
    ap.add_argument("--mutations", type=int, default=100, help="mutate() calls on ResNet-20")
    ap.add_argument("--py-merges", type=int, default=100, help="merges timed for the plain-Python BPE trainer")
    ap.add_argument("--no-trace", action="store_true", help="skip the tracemalloc memory pass")
    ap.add_argument("--db", type=Path, default=None, help="also save the built database here")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 NB201 nets, 10 mutations, no tracemalloc")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    run = Run.start("autogo_mining.json", quick=args.quick)
    if args.quick:
        args.nb201, args.mutations, args.py_merges, args.no_trace = 20, 10, 10, True
    items = [c for c in DEFAULT_CORPUS if not c.startswith("nb201:")] + [f"nb201:{args.nb201}"]
    res: dict = {"corpus": items, "paper": PAPER}

    t0 = time.perf_counter()
    names, graphs = [], []
    for name, g in corpus_graphs(items):
        names.append(name)
        graphs.append(g)
    res["load_s"] = time.perf_counter() - t0
    res["graphs"] = len(graphs)
    res["nodes"] = sum(len(g) for g in graphs)

    # Timing pass (no tracing), then a memory pass under tracemalloc (which slows Python ~5x).
    t0 = time.perf_counter()
    vocab = mine(graphs, args.vocab_size)
    t1 = time.perf_counter()
    db = SegmentDB.build(graphs, vocab, names)
    t2 = time.perf_counter()
    peak_mine = peak_db = float("nan")
    if not args.no_trace:
        tracemalloc.start()
        v2 = mine(graphs, args.vocab_size)
        _, peak_mine = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        SegmentDB.build(graphs, v2, names)
        _, peak_db = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    sizes = [r.n_nodes for r in db]
    res["mining"] = {
        "tokenize_s": vocab.info["tokenize_s"], "bpe_train_s": vocab.info["train_s"], "mine_total_s": t1 - t0,
        "db_build_s": t2 - t1, "total_s": t2 - t0, "peak_traced_MB_mine": peak_mine / 1e6,
        "peak_traced_MB_db": peak_db / 1e6, "tracemalloc": not args.no_trace,
        "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
        "node_tokens": len(vocab.alphabet), "merges": len(vocab.merges), "unique_segments": len(db),
        "multi_node_segments": sum(1 for s in sizes if s > 1), "segment_nodes_mean": statistics.fmean(sizes),
        "segment_nodes_max": max(sizes), "propagatable": sum(1 for r in db if r.propagatable)}
    if args.db:
        db.info.update(corpus=items)
        db.save(args.db)
        res["mining"]["db_file_MB"] = args.db.stat().st_size / 1e6

    # ---- BPE implementations
    seqs = [graph_tokens(g)[1] for g in graphs]
    corpus = ["".join(vocab.symbols(s)) for s in seqs]
    py_s = python_bpe(corpus, args.py_merges)
    t0 = time.perf_counter()
    for s in seqs:
        vocab.encode(s)
    ours = (time.perf_counter() - t0) / len(seqs)
    rng = np.random.default_rng(0)
    masks = [vocab.random_mask(rng) for _ in seqs]
    t0 = time.perf_counter()
    for s, m in zip(seqs, masks, strict=True):
        vocab.encode(s, m)
    ours_masked = (time.perf_counter() - t0) / len(seqs)
    tok = hf_encoder(vocab)
    t0 = time.perf_counter()
    for c in corpus:
        tok.encode(c)
    hf_enc = (time.perf_counter() - t0) / len(corpus)
    t0 = time.perf_counter()
    for c, m in zip(corpus, masks, strict=True):
        hf_encoder(vocab, m).encode(c)
    hf_masked = (time.perf_counter() - t0) / len(corpus)
    agree = all([b - a for a, b in vocab.encode(s)] == [len(t) for t in tok.encode(c).tokens]
                for s, c in zip(seqs, corpus, strict=True))
    res["bpe"] = {"hf_train_s": vocab.info["train_s"], "python_train_s_per_merge": py_s / max(args.py_merges, 1),
                  "python_train_s_extrapolated": py_s / max(args.py_merges, 1) * len(vocab.merges),
                  "ours_encode_ms_per_graph": ours * 1e3, "hf_encode_ms_per_graph": hf_enc * 1e3,
                  "ours_masked_encode_ms": ours_masked * 1e3, "hf_build_masked_model_and_encode_ms": hf_masked * 1e3,
                  "encoders_agree": agree}

    # ---- mutations on ResNet-20
    parent = next(g for n, g in zip(names, graphs, strict=True) if n == "zoo:resnet20")
    rng = np.random.default_rng(0)
    mutate(parent, db, vocab, rng)  # warm caches (canonical order of the parent, scipy import)
    fits: Counter[str] = Counter()
    solve, replaced, ok = [], [], 0
    t0 = time.perf_counter()
    for _ in range(args.mutations):
        m = mutate(parent, db, vocab, rng)
        if m is None:
            continue
        ok += 1
        fits[m.mutation.fit] += 1
        replaced.append(len(m.mutation.source_nodes))
        if m.mutation.fit == "propagated":
            solve.append(m.mutation.solve_s)
    dt = time.perf_counter() - t0
    res["mutation"] = {"parent": "resnet20", "parent_nodes": len(parent), "calls": args.mutations, "succeeded": ok,
                       "seconds": dt, "mutations_per_s": ok / dt, "fits": dict(fits),
                       "mean_nodes_replaced": statistics.fmean(replaced) if replaced else None,
                       "mean_ilp_solve_s": statistics.fmean(solve) if solve else None}

    mi, bp, mu = res["mining"], res["bpe"], res["mutation"]
    rows = [
        ("corpus", f"{res['graphs']} graphs, {res['nodes']} nodes", f"{PAPER['graphs']} graphs"),
        ("lowering (frontend + NB201 builder)", f"{res['load_s']:.1f} s", "-"),
        ("mining: tokenize + BPE", f"{mi['mine_total_s']:.1f} s", "-"),
        ("segment DB build (dedup)", f"{mi['db_build_s']:.1f} s", "-"),
        ("mining total", f"{mi['total_s']:.1f} s", f"{PAPER['mining_minutes']} min"),
        ("peak memory (traced / RSS)", f"{max(mi['peak_traced_MB_mine'], mi['peak_traced_MB_db']):.0f} MB / "
                                       f"{mi['peak_rss_MB']:.0f} MB", f"{PAPER['memory_GB']} GB"),
        ("unique segments (multi-node)", f"{mi['unique_segments']} ({mi['multi_node_segments']})",
         f"{PAPER['unique_segments']}"),
        ("segment size mean / max", f"{mi['segment_nodes_mean']:.1f} / {mi['segment_nodes_max']}", "5 / 16"),
        ("BPE train: HF tokenizers", f"{bp['hf_train_s']:.2f} s", "-"),
        ("BPE train: plain Python (extrapolated)", f"{bp['python_train_s_extrapolated']:.1f} s", "-"),
        ("encode: ours / HF (per graph)",
         f"{bp['ours_encode_ms_per_graph']:.2f} / {bp['hf_encode_ms_per_graph']:.2f} ms", "-"),
        ("masked encode: ours / HF rebuilt model", f"{bp['ours_masked_encode_ms']:.2f} / "
                                             f"{bp['hf_build_masked_model_and_encode_ms']:.2f} ms", "-"),
        ("mutations/s on ResNet-20", f"{mu['mutations_per_s']:.1f} ({mu['succeeded']}/{mu['calls']} ok)", "-"),
        ("ILP solve (mean)", f"{(mu['mean_ilp_solve_s'] or 0) * 1e3:.0f} ms", f"{PAPER['ilp_solve_s'] * 1e3:.0f} ms"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"{'metric':<{w}}  {'graphopt':<34}  paper")
    for a, b, c in rows:
        print(f"{a:<{w}}  {b:<34}  {c}")
    print(f"wrote {run.write(res, args.out)}")


if __name__ == "__main__":
    main()
