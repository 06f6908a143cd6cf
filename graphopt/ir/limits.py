"""Resource limits for loading model files: refuse shape and size bombs before allocating anything.

Why: model files come from anywhere. A 1 KB ONNX file can declare a 2^40-element input, an initializer whose
dims promise terabytes the file does not hold, a million nodes, or If/Loop bodies nested hundreds deep; each
would make a loader allocate without bound or recurse until the interpreter dies. The loaders (ONNX frontend,
IR JSON / ``.pt`` bundles) check every declared size against these limits *before* decoding or allocating,
and fail with a :class:`LimitExceededError` naming the file, the tensor or node, the limit and how to raise it.

Defaults are far above any real model (documented choices):

=====================  ==============  ===============================  ==================================
limit                  default         environment variable             checks
=====================  ==============  ===============================  ==================================
``max_nodes``          2,000,000       ``GRAPHOPT_MAX_NODES``           nodes in a file, subgraphs included
``max_dim``            2**31           ``GRAPHOPT_MAX_DIM``             every declared static dimension
``max_tensor_bytes``   8 GiB           ``GRAPHOPT_MAX_TENSOR_BYTES``    bytes of any one declared tensor
``max_subgraph_depth`` 32              ``GRAPHOPT_MAX_SUBGRAPH_DEPTH``  nesting of If/Loop/Scan bodies
=====================  ==============  ===============================  ==================================

Environment values are integers; ``GRAPHOPT_MAX_TENSOR_BYTES`` also accepts ``K``/``M``/``G``/``T`` suffixes
(powers of 1024) and ``2**40``-style powers. In code, :func:`override_limits` sets limits for a ``with``
block (it wins over the environment); :func:`current_limits` returns the limits in force.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from .errors import ModelLoadError


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what a model file may declare (see the module docstring for the defaults)."""

    max_nodes: int = 2_000_000
    max_dim: int = 2**31
    max_tensor_bytes: int = 8 * 2**30
    max_subgraph_depth: int = 32


ENV_VARS: dict[str, str] = {f.name: f"GRAPHOPT_{f.name.upper()}" for f in dataclasses.fields(Limits)}
"""Field name -> environment variable that overrides it."""

_OVERRIDE: ContextVar[Limits | None] = ContextVar("graphopt_limits", default=None)
_SUFFIX = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class LimitExceededError(ModelLoadError):
    """A model file declares more than a configured limit allows (a size/shape bomb, or a very large model)."""


def _parse(var: str, text: str) -> int:
    s = text.strip().replace("_", "").upper().removesuffix("IB").removesuffix("B")
    m = re.fullmatch(r"(\d+)\*\*(\d+)", s)
    if m:
        value = int(m.group(1)) ** int(m.group(2))
    else:
        m = re.fullmatch(r"(\d+)([KMGT]?)", s)
        if not m:
            raise ModelLoadError(f"environment variable {var}={text!r}: expected a positive integer (e.g. 1000000, "
                                 f"8G or 2**33)")
        value = int(m.group(1)) * _SUFFIX[m.group(2)]
    if value <= 0:
        raise ModelLoadError(f"environment variable {var}={text!r}: must be positive")
    return value


def current_limits() -> Limits:
    """The limits in force: an :func:`override_limits` block, else the environment, else the defaults."""
    over = _OVERRIDE.get()
    if over is not None:
        return over
    values = {}
    for field, var in ENV_VARS.items():
        text = os.environ.get(var)
        if text:
            values[field] = _parse(var, text)
    return Limits(**values)


@contextlib.contextmanager
def override_limits(**changes: int) -> Iterator[Limits]:
    """Use ``current_limits()`` with ``changes`` applied inside the block (e.g. ``max_nodes=10**7``)."""
    lim = dataclasses.replace(current_limits(), **changes)
    token = _OVERRIDE.set(lim)
    try:
        yield lim
    finally:
        _OVERRIDE.reset(token)


def how_to_raise(field: str) -> str:
    """The hint appended to every limit message."""
    return (f"if you trust this file, raise the limit with the environment variable {ENV_VARS[field]} "
            f"(or graphopt.limits.override_limits({field}=...))")


def _fail(where: str, what: str, field: str, lim: Limits) -> LimitExceededError:
    return LimitExceededError(f"{where}: {what} exceeds the limit {field}={getattr(lim, field):,}; "
                              f"{how_to_raise(field)}")


def check_dims(where: str, dims: Iterable[int | str | None], itemsize: int = 1, lim: Limits | None = None) -> int:
    """Check declared dims (symbols and ``None`` are skipped) and the tensor's byte size; return the byte size.

    ``where`` names the file and tensor for the message. The byte size counts only static dims (a symbolic
    dim stands for an unknown, run-time size).
    """
    lim = lim or current_limits()
    dims = list(dims)
    static = []
    for i, d in enumerate(dims):
        if isinstance(d, bool) or not isinstance(d, int):
            continue
        if d > lim.max_dim:
            raise _fail(where, f"dimension {i} = {d:,} (of shape {_short(dims)})", "max_dim", lim)
        static.append(max(d, 0))
    if 0 in static:
        return 0
    nbytes = itemsize
    for d in static:  # stop early: a million-dim shape must not build a million-digit product
        nbytes *= d
        if nbytes > lim.max_tensor_bytes:
            raise _fail(where, f"shape {_short(dims)} (more than {_human(lim.max_tensor_bytes)})",
                        "max_tensor_bytes", lim)
    return nbytes


def check_bytes(where: str, nbytes: int, lim: Limits | None = None) -> None:
    lim = lim or current_limits()
    if nbytes > lim.max_tensor_bytes:
        raise _fail(where, f"a tensor of {_human(nbytes)}", "max_tensor_bytes", lim)


def check_nodes(where: str, count: int, lim: Limits | None = None) -> None:
    lim = lim or current_limits()
    if count > lim.max_nodes:
        raise _fail(where, f"{count:,} nodes", "max_nodes", lim)


def check_depth(where: str, depth: int, lim: Limits | None = None) -> None:
    lim = lim or current_limits()
    if depth > lim.max_subgraph_depth:
        raise _fail(where, f"subgraphs nested {depth} deep", "max_subgraph_depth", lim)


def _short(dims: list) -> str:
    return "[" + ", ".join(str(d) for d in dims[:8]) + (", ..." if len(dims) > 8 else "") + "]"


def _human(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"
