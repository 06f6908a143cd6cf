"""AutoGO (Automated computation Graph Optimization, NeurIPS 2023): segment mining and segment mutation.

Pipeline: :func:`mine` learns a BPE vocabulary over canonical node-token sequences of a corpus of graphs;
:meth:`SegmentDB.build` partitions the corpus with it and stores the unique segments (deduplicated by
isomorphism including resolution); :func:`mutate` cuts a parent graph into segments, replaces a run of 1-3 of
them with a database segment (fitted by resolution propagation, :func:`solve_resolution`, when shapes
differ), and returns a verified mutant with lineage.

    from graphopt.passes.autogo import SegmentDB, default_db_path, mutate
    db = SegmentDB.open(default_db_path())
    mutant = mutate(graph, db, db.vocab, numpy.random.default_rng(0))
"""

from .mine import Vocabulary, mine
from .mutate import Mutant, Mutation, mutate, replace_segment
from .partition import Segment, partition
from .resolution import Assignment, Infeasible, instantiate, propagatable, solve_resolution
from .segdb import CanonicalSegment, SegmentDB, SegmentRecord, canonical_segment, default_db_path, load_default_db
from .tokens import canonical_order, graph_tokens, node_label, node_token

__all__ = [
    "Assignment", "CanonicalSegment", "Infeasible", "Mutant", "Mutation", "Segment", "SegmentDB", "SegmentRecord",
    "Vocabulary", "canonical_order", "canonical_segment", "default_db_path", "graph_tokens", "instantiate",
    "load_default_db", "mine", "mutate", "node_label", "node_token", "partition", "propagatable", "replace_segment",
    "solve_resolution",
]
