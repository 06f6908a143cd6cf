"""Candidate-expansion passes: turn regions of a concrete graph into supernet choice points / elastic dims.

``expand-cell`` (DARTS/NB201 mixed ops on cell edges), ``expand-s3`` (elastic ViT blocks), ``expand-dps``
(multi-path HRNet-style branches). The result is a supernet graph (see :mod:`graphopt.supernet`).
"""

from . import cell, dps, s3  # noqa: F401
