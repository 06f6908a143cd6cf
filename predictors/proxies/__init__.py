"""Zero-cost performance proxies on any ``torch.nn.Module``.

>>> from graphopt.predictors import proxies
>>> r = proxies.compute("synflow", model, (x, y))   # ProxyResult(score, per_layer, additive)
>>> rs = proxies.compute_proxies(model, (x, y), ["snip", "grad_norm", "fisher"])  # shared passes, same values
>>> proxies.names()
['grad_norm', 'snip', 'grasp', 'fisher', 'synflow', 'nwot', 'jacob_cov', 'zen', 'flops', 'params']

See :mod:`.core` for the shared conventions (deep copy, train mode, seed, per-layer keys) and each module for
the exact formulas.
"""

from . import activation, cost, gradient  # noqa: F401  (register the proxies)
from .core import (
    PRUNABLE_TYPES,
    ProxyResult,
    ProxySpec,
    compute,
    finite_or,
    names,
    register,
    spec,
    weight_layers,
)
from .cost import count_flops, register_flops_rule
from .shared import SHARED, compute_proxies

__all__ = [
    "PRUNABLE_TYPES",
    "SHARED",
    "ProxyResult",
    "ProxySpec",
    "compute",
    "compute_proxies",
    "count_flops",
    "finite_or",
    "names",
    "register",
    "register_flops_rule",
    "spec",
    "weight_layers",
]
