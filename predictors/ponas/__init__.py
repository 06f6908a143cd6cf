"""PO-NAS: per-architecture training-free metric optimisation (NeurIPS 2025), CPU-sized.

Public API: :class:`ArchPool`, :class:`PONASRanker` (``pretrain``, ``fit``, ``weights``, ``score``,
``search``), :class:`PONASConfig`, :class:`PONASScreen` (PO-NAS in front of an evolutionary search's training),
graph converters (:func:`nb201_graph`, :func:`graph_from_dag`, :func:`ir_graph`), metric normalisation
(:func:`normalize_metrics`, min-max or rank) and the score/loss functions (:func:`ponas_score`, :func:`online_loss`).
"""

from .graphs import NB201_VOCAB, graph_from_dag, ir_graph, nb201_graph, parse_nb201
from .metrics import DEFAULT_TRANSFORMS, NORMALIZATIONS, PONAS_METRICS, normalize_metrics, signed_log
from .model import (
    GATEncoder,
    PretrainHeads,
    Surrogate,
    align_loss,
    normalize_weights,
    online_loss,
    pairwise_hinge,
    pearson,
    ponas_score,
)
from .ranker import ArchPool, PONASConfig, PONASRanker, SearchResult
from .screen import PONASScreen, ScreenStats

__all__ = [
    "DEFAULT_TRANSFORMS",
    "NB201_VOCAB",
    "NORMALIZATIONS",
    "PONAS_METRICS",
    "ArchPool",
    "GATEncoder",
    "PONASConfig",
    "PONASRanker",
    "PONASScreen",
    "PretrainHeads",
    "ScreenStats",
    "SearchResult",
    "Surrogate",
    "align_loss",
    "graph_from_dag",
    "ir_graph",
    "nb201_graph",
    "normalize_metrics",
    "normalize_weights",
    "online_loss",
    "pairwise_hinge",
    "parse_nb201",
    "pearson",
    "ponas_score",
    "signed_log",
]
