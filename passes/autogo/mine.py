"""AutoGO segment mining: byte-pair encoding over canonical token sequences of computation graphs.

Each graph becomes a string with one character per node (the node's token, see :mod:`.tokens`, mapped to a
private-use Unicode character), and BPE learns frequent contiguous pieces. Training uses Hugging Face
``tokenizers`` (Rust; the paper used SentencePiece BPE with the same objective) with no normalizer and no
pre-tokenizer, so a whole graph is one "word". ``max_piece_len`` caps a piece at 16 nodes, the paper's largest
segment. Vocabulary size counts single-node symbols plus learned merges, as in SentencePiece.

Encoding (partitioning a graph into pieces) is our own ~20-line merge loop rather than a ``tokenizers`` call
because mutation needs to *mask* random vocabulary entries on every call; building a masked HF model costs
more than encoding (see ``benchmarks/autogo_mining.py``), and the two agree exactly without a mask (tested).

A contiguous run of a topological order is convex (every path between two of its nodes stays inside), so
every piece maps back to a convex node set; a piece whose nodes are not weakly connected (two parallel
branches that happen to be adjacent in the order) is split into its connected components, each of which is
again convex. Those components are the segments (see :mod:`.partition`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphopt.ir.graph import Graph

from .tokens import graph_tokens

UNKNOWN = "\ufffd"
"""Symbol for tokens absent from the vocabulary's alphabet (never part of a merge: stays a one-node piece)."""


def _sym(i: int) -> str:
    """Symbol for alphabet index ``i``: Unicode private-use planes (BMP first, then plane 15)."""
    return chr(0xE000 + i) if i < 6400 else chr(0xF0000 + i - 6400)


@dataclass
class Vocabulary:
    """A mined BPE vocabulary over node tokens.

    ``alphabet[i]`` is the token string of symbol ``i``; ``merges[r]`` (rank ``r``) joins two pieces, each a
    tuple of symbol indices. ``piece_stats[r]`` = (occurrences, number of corpus graphs containing it) of the
    piece created by merge ``r`` in the unmasked encodings of the corpus.
    """

    alphabet: list[str]
    merges: list[tuple[tuple[int, ...], tuple[int, ...]]]
    vocab_size: int = 2000
    max_piece_len: int = 16
    piece_stats: list[tuple[int, int]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index = {t: i for i, t in enumerate(self.alphabet)}
        self._ranks = {("".join(map(_sym, a)), "".join(map(_sym, b))): r for r, (a, b) in enumerate(self.merges)}
        self._piece_rank = {"".join(map(_sym, (*a, *b))): r for r, (a, b) in enumerate(self.merges)}

    # ------------------------------------------------------------------------------------------- encoding
    def symbols(self, tokens: Sequence[str]) -> list[str]:
        return [_sym(self._index[t]) if t in self._index else UNKNOWN for t in tokens]

    def encode(self, tokens: Sequence[str], masked: set[int] | frozenset[int] | None = None) -> list[tuple[int, int]]:
        """Split a token sequence into pieces; returns ``(start, end)`` spans covering it in order.

        Standard BPE: repeatedly apply the lowest-rank merge present (all its non-overlapping occurrences,
        left to right). Merge ranks in ``masked`` are skipped, so pieces that need them cannot form.
        """
        parts = self.symbols(tokens)
        ranks = self._ranks
        while len(parts) > 1:
            best, best_r = None, None
            for i in range(len(parts) - 1):
                r = ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best_r is None or r < best_r) and (masked is None or r not in masked):
                    best, best_r = (parts[i], parts[i + 1]), r
            if best is None:
                break
            a, b = best
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        spans, pos = [], 0
        for p in parts:
            spans.append((pos, pos + len(p)))
            pos += len(p)
        return spans

    def piece_rank(self, symbols: Sequence[str]) -> int | None:
        """Merge rank of the multi-node piece spelled by ``symbols`` (None for single symbols/unknown)."""
        return self._piece_rank.get("".join(symbols)) if len(symbols) > 1 else None

    def random_mask(self, rng, sparsity: float = 0.5) -> frozenset[int]:
        """Each multi-node vocabulary entry (merge) is masked independently with probability ``sparsity``."""
        if sparsity <= 0 or not self.merges:
            return frozenset()
        import numpy as np

        return frozenset(np.flatnonzero(rng.random(len(self.merges)) < sparsity).tolist())

    def piece_tokens(self, rank: int) -> list[str]:
        """Token strings of the piece created by merge ``rank``."""
        a, b = self.merges[rank]
        return [self.alphabet[i] for i in (*a, *b)]

    # ------------------------------------------------------------------------------------------------- I/O
    def to_json(self) -> dict[str, Any]:
        return {"format": "graphopt-autogo-vocab", "version": 1, "vocab_size": self.vocab_size,
                "max_piece_len": self.max_piece_len, "alphabet": self.alphabet,
                "merges": [[list(a), list(b)] for a, b in self.merges],
                "piece_stats": [list(s) for s in self.piece_stats],
                "info": {k: v for k, v in self.info.items() if not k.endswith("_s")}}  # no timings: reproducible

    @classmethod
    def from_json(cls, doc: dict[str, Any], source: str = "<memory>") -> Vocabulary:
        if not isinstance(doc, dict) or doc.get("format") != "graphopt-autogo-vocab":
            raise ValueError(f"{source}: not a graphopt AutoGO vocabulary (missing format graphopt-autogo-vocab)")
        return cls(list(doc["alphabet"]), [(tuple(a), tuple(b)) for a, b in doc["merges"]],
                   int(doc["vocab_size"]), int(doc["max_piece_len"]), [tuple(s) for s in doc.get("piece_stats", [])],
                   dict(doc.get("info", {})))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        return cls.from_json(json.loads(Path(path).read_text()), str(path))

    def __len__(self) -> int:
        return len(self.alphabet) + len(self.merges)


def _train_hf(corpus: list[str], alphabet: list[str], vocab_size: int, max_piece_len: int,
              min_frequency: int) -> list[tuple[str, str]]:
    from tokenizers import Tokenizer, models, trainers

    tok = Tokenizer(models.BPE())
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  initial_alphabet=alphabet, limit_alphabet=len(alphabet) + 1,
                                  max_token_length=max_piece_len)
    tok.train_from_iterator(corpus, trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else (m[0], m[1]) for m in merges]


def mine(graphs: Iterable[Graph], vocab_size: int = 2000, *, max_piece_len: int = 16,
         min_frequency: int = 2) -> Vocabulary:
    """Learn a BPE vocabulary of frequent segments from a corpus of IR graphs.

    ``vocab_size`` counts distinct node tokens plus merges (paper: 2,000). ``min_frequency`` is the fewest
    corpus occurrences a pair needs to be merged (2: a piece must repeat to be a pattern).
    """
    t0 = time.perf_counter()
    seqs = [graph_tokens(g)[1] for g in graphs]
    if not seqs:
        raise ValueError("mine(): the corpus is empty; pass at least one graph")
    alphabet = sorted({t for s in seqs for t in s})
    index = {t: i for i, t in enumerate(alphabet)}
    corpus = ["".join(_sym(index[t]) for t in s) for s in seqs]
    t1 = time.perf_counter()
    raw = _train_hf(corpus, [_sym(i) for i in range(len(alphabet))], vocab_size, max_piece_len, min_frequency)
    t2 = time.perf_counter()
    rev = {_sym(i): i for i in range(len(alphabet))}
    merges = [(tuple(rev[c] for c in a), tuple(rev[c] for c in b)) for a, b in raw]
    vocab = Vocabulary(alphabet, merges, vocab_size, max_piece_len)
    # Piece statistics on the unmasked encodings (what "a segment occurs in every model" means).
    occ: Counter[int] = Counter()
    docs: Counter[int] = Counter()
    for s, text in zip(seqs, corpus, strict=True):
        seen = set()
        for a, b in vocab.encode(s):
            r = vocab.piece_rank(text[a:b])
            if r is not None:
                occ[r] += 1
                seen.add(r)
        docs.update(seen)
    vocab.piece_stats = [(occ[r], docs[r]) for r in range(len(merges))]
    vocab.info = {"n_graphs": len(seqs), "n_tokens": sum(len(s) for s in seqs), "alphabet": len(alphabet),
                  "merges": len(merges), "tokenize_s": round(t1 - t0, 3), "train_s": round(t2 - t1, 3),
                  "trainer": "huggingface-tokenizers BPE", "min_frequency": min_frequency}
    return vocab
