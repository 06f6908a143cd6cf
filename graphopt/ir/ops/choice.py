"""Supernet op: ``choice``, a choice point over alternative subgraphs that share one boundary.

The alternatives are ordinary nodes of the same graph (each computes one candidate from the same boundary
inputs); the ``choice`` node takes their outputs and returns the selected one (``selected >= 0``), or the
mixture ``sum_i weights[i] * alternatives[i]`` (DARTS/XNAS continuous relaxation), or their mean when no
weights are given. Keeping the alternatives as plain nodes means a supernet verifies, costs and runs through
the PyTorch backend like any graph; :func:`graphopt.supernet.materialize` resolves every choice to one
alternative and removes the others, giving a concrete graph. There is no ONNX form: passes that need a
concrete graph declare ``requires=("no_choices",)``.
"""

import torch

from ..registry import In, op


@op("choice", onnx=None, inputs=[In("weights", optional=True), In("alternatives", variadic=True)],
    attrs={"point": "", "labels": None, "selected": -1}, category="supernet")
def choice(weights, *alternatives, point="", labels=None, selected=-1):
    """Choice point: the ``selected`` alternative, else the ``weights`` mixture (mean without weights)."""
    if selected >= 0:
        return alternatives[selected]
    if weights is None:
        return torch.stack(list(alternatives), 0).mean(0)
    out = alternatives[0] * weights[0]
    for i in range(1, len(alternatives)):
        out = out + alternatives[i] * weights[i]
    return out
