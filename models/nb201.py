"""NAS-Bench-201 cell network (Dong & Yang 2020) built from an architecture string.

Macro skeleton (the NB201 "infer" network): stem conv3x3(3 -> C) + BN; three stages of ``N`` cells with C, 2C
and 4C channels, separated by residual reduction blocks (ReLU-Conv3x3/2-BN, ReLU-Conv3x3-BN, shortcut
AvgPool2x2/2 + Conv1x1, C -> 2C); last act BN + ReLU; global average pool; linear classifier.

Cell: 4 nodes; node 0 is the cell input and node j (1..3) is the sum of ``op(node_i)`` over the edges i -> j.
Ops (``OPS``, NB201 order): ``none`` (zeros, as ``x * 0`` so it still exports), ``skip_connect`` (identity),
``nor_conv_1x1`` / ``nor_conv_3x3`` (ReLU -> Conv (no bias) -> BN), ``avg_pool_3x3`` (stride 1, pad 1,
count_include_pad=False).

Encodings: ``arch_str`` ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``; ``naslib_tuple`` = op ids on edges
(e01, e02, e03, e12, e13, e23) with 0=skip_connect, 1=none, 2=nor_conv_3x3, 3=nor_conv_1x1, 4=avg_pool_3x3
(the convention of /work/shared/data/nas/README.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EDGE_ORDER",
    "MixedEdge",
    "NASLIB_OPS",
    "OPS",
    "NB201Cell",
    "NB201Net",
    "NB201SuperCell",
    "NB201Supernet",
    "ResidualReduction",
    "arch_to_tuple",
    "nb201",
    "parse_arch",
    "tuple_to_arch",
]

OPS: list[str] = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
"""The five NB201 candidate operations in NB201's own order."""

NASLIB_OPS: list[str] = ["skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3"]
"""Op id -> name for the ``naslib_tuple`` encoding."""

EDGE_ORDER: list[tuple[int, int]] = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
"""(from_node, to_node) of each position in the ``naslib_tuple``."""


def parse_arch(arch_str: str) -> list[tuple[int, int, str]]:
    """Parse an NB201 string into ``[(to_node, from_node, op), ...]`` (6 edges, by to_node then from_node)."""
    s = arch_str.strip()
    nodes = s.split("+")
    if len(nodes) != 3:
        raise ValueError(f"parse_arch: {arch_str!r} must have 3 '+'-separated nodes, got {len(nodes)}")
    edges: list[tuple[int, int, str]] = []
    for to_node, part in enumerate(nodes, start=1):
        if not (part.startswith("|") and part.endswith("|")):
            raise ValueError(f"parse_arch: node {to_node} part {part!r} of {arch_str!r} must be '|op~i|...'")
        items = [t for t in part.split("|") if t]
        if len(items) != to_node:
            raise ValueError(
                f"parse_arch: node {to_node} of {arch_str!r} needs {to_node} inputs, got {items}"
            )
        for k, item in enumerate(items):
            op, sep, src = item.partition("~")
            if not sep or not src.isdigit() or int(src) != k:
                raise ValueError(f"parse_arch: bad edge {item!r} in {arch_str!r} (expected '<op>~{k}')")
            if op not in OPS:
                raise ValueError(f"parse_arch: unknown op {op!r} in {arch_str!r}; valid ops: {OPS}")
            edges.append((to_node, int(src), op))
    return edges


def arch_to_tuple(arch_str: str) -> tuple[int, ...]:
    """NB201 string -> ``naslib_tuple`` (e01, e02, e03, e12, e13, e23)."""
    by_edge = {(src, dst): op for dst, src, op in parse_arch(arch_str)}
    return tuple(NASLIB_OPS.index(by_edge[e]) for e in EDGE_ORDER)


def tuple_to_arch(t: Sequence[int]) -> str:
    """``naslib_tuple`` -> NB201 string (inverse of :func:`arch_to_tuple`)."""
    t = tuple(int(v) for v in t)
    if len(t) != 6 or any(v < 0 or v >= len(NASLIB_OPS) for v in t):
        raise ValueError(f"tuple_to_arch: {t} must be 6 op ids in 0..4 (order e01,e02,e03,e12,e13,e23)")
    ops = {e: NASLIB_OPS[v] for e, v in zip(EDGE_ORDER, t, strict=True)}
    parts = ["|" + "|".join(f"{ops[(i, j)]}~{i}" for i in range(j)) + "|" for j in range(1, 4)]
    return "+".join(parts)


class ReLUConvBN(nn.Sequential):
    """NB201 'nor_conv': ReLU -> Conv2d (no bias) -> BatchNorm."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(cout),
        )


class Zero(nn.Module):
    """The 'none' op: zeros of the input's shape, written as ``x * 0`` so it stays in the exported graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.0


class AvgPool3x3(nn.Module):
    """3x3 average pool, stride 1, pad 1, excluding padding from the count (NB201)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def make_op(name: str, channels: int) -> nn.Module:
    """Instantiate one NB201 op on ``channels`` channels (stride 1)."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1)
    if name == "avg_pool_3x3":
        return AvgPool3x3()
    raise ValueError(f"make_op: unknown op {name!r}; valid ops: {OPS}")


class NB201Cell(nn.Module):
    """One NB201 cell; ``edges`` is a ModuleDict keyed ``"e{from}{to}"`` (e.g. ``"e01"``, as in the tuple)."""

    def __init__(self, arch: list[tuple[int, int, str]], channels: int) -> None:
        super().__init__()
        self.arch = list(arch)
        self.edges = nn.ModuleDict({f"e{src}{dst}": make_op(op, channels) for dst, src, op in self.arch})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in range(1, 4):
            acc = None
            for dst, src, _ in self.arch:
                if dst == j:
                    out = self.edges[f"e{src}{dst}"](nodes[src])
                    acc = out if acc is None else acc + out
            nodes.append(acc)
        return nodes[-1]


class ResidualReduction(nn.Module):
    """NB201 residual block between stages: C -> 2C, stride 2, AvgPool + 1x1 conv shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, 2, 1)
        self.conv_b = ReLUConvBN(cout, cout, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(2, stride=2, padding=0), nn.Conv2d(cin, cout, 1, stride=1, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def macro_skeleton(C: int, N: int, make_cell) -> tuple[nn.Module, nn.ModuleList, nn.Module, int]:
    """NB201's macro network around its cells: stem, 3 stages of ``N`` cells (``make_cell(channels)``) joined
    by residual reductions, final BN+ReLU. Returns (stem, cells, lastact, output channels); shared with the
    weight-sharing supernet so both have the same skeleton and parameter names."""
    stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
    cells: list[nn.Module] = []
    c_prev = C
    for stage, mult in enumerate((1, 2, 4)):
        c = C * mult
        if stage > 0:
            cells.append(ResidualReduction(c_prev, c))
        cells += [make_cell(c) for _ in range(N)]
        c_prev = c
    return stem, nn.ModuleList(cells), nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False)), c_prev


class NB201Net(nn.Module):
    """The NB201 network for one architecture (see module docstring)."""

    def __init__(
        self,
        arch_str: str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
        "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
        C: int = 16,
        N: int = 5,
        num_classes: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.arch_str = arch_str
        arch = parse_arch(arch_str)
        self.stem, self.cells, self.lastact, c_prev = macro_skeleton(C, N, lambda c: NB201Cell(arch, c))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        x = torch.flatten(F.adaptive_avg_pool2d(self.lastact(x), 1), 1)
        return self.classifier(self.dropout(x))


def nb201(
    arch_str: str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    C: int = 16,
    N: int = 5,
    num_classes: int = 10,
    dropout: float = 0.0,
) -> NB201Net:
    """NB201 network for ``arch_str`` (default: NB201 index 1 of the shared CSV)."""
    return NB201Net(arch_str, C, N, num_classes, dropout)


# Weight-sharing supernet of the same space (DARTS/XNAS train it; graphopt.supernet.nb201_graph(arch=None)
# describes it in the IR with the same parameter names).


class MixedEdge(nn.Module):
    """All candidate ops of one edge. ``forward(x, w, active)`` returns ``sum_i w[i] * op_i(x)`` over ``active``.

    With ``record=True`` the outputs of the active ops and ``dL/dy`` (via a tensor hook on the mixed output)
    are kept, so :meth:`rewards` can compute XNAS's ``r_i = -<dL/dy, f_i(x)>`` without a second backward.
    """

    def __init__(self, channels: int, ops: Sequence[str] = OPS) -> None:
        super().__init__()
        self.names = list(ops)
        self.ops = nn.ModuleList(make_op(o, channels) for o in ops)
        self.record = False
        self._outs: list[tuple[list[int], list[torch.Tensor], list[torch.Tensor]]] = []

    def forward(self, x: torch.Tensor, w: torch.Tensor, active: Sequence[int] | None = None) -> torch.Tensor:
        idx = list(range(len(self.ops))) if active is None else list(active)
        outs = [self.ops[i](x) for i in idx]
        y = outs[0] * w[idx[0]]
        for k in range(1, len(idx)):
            y = y + outs[k] * w[idx[k]]
        if self.record and y.requires_grad:
            grads: list[torch.Tensor] = []
            y.register_hook(lambda g, store=grads: store.append(g.detach()))
            self._outs.append((idx, [o.detach() for o in outs], grads))
        return y

    def rewards(self, clip: float | None = None) -> torch.Tensor:
        """Per-op reward summed over the recorded applications (each clipped to ``|r| <= clip``); clears state."""
        r = torch.zeros(len(self.ops))
        for idx, outs, grads in self._outs:
            if not grads:
                continue
            g = grads[0]
            ri = torch.stack([-(g * o).sum() for o in outs])
            if clip is not None:
                ri = ri.clamp(-clip, clip)
            r[idx] += ri
        self._outs = []
        return r


class NB201SuperCell(nn.Module):
    def __init__(self, channels: int, ops: Sequence[str] = OPS) -> None:
        super().__init__()
        self.edges = nn.ModuleDict({f"e{i}{j}": MixedEdge(channels, ops) for i, j in EDGE_ORDER})

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active: Sequence[Sequence[int]] | None) -> torch.Tensor:
        nodes = [x]
        for j in range(1, 4):
            acc = None
            for e, (i, jj) in enumerate(EDGE_ORDER):
                if jj != j:
                    continue
                out = self.edges[f"e{i}{j}"](nodes[i], weights[e], None if active is None else active[e])
                acc = out if acc is None else acc + out
            nodes.append(acc)
        return nodes[-1]


class NB201Supernet(nn.Module):
    """NB201 macro network whose cells are :class:`NB201SuperCell` s; all cells share one architecture.

    ``forward(x, weights, active)``: ``weights`` is ``(6, 5)`` (edge x op, NB201 edge/op order), ``active``
    optional per-edge op index lists (wiped-out or unsampled ops are not computed). A one-hot ``weights`` with
    ``active`` = the chosen op per edge runs a single path (SPOS-style).
    """

    def __init__(self, C: int = 16, N: int = 5, num_classes: int = 10, ops: Sequence[str] = OPS) -> None:
        super().__init__()
        self.C, self.N, self.ops = C, N, list(ops)
        self.stem, self.cells, self.lastact, c_prev = macro_skeleton(C, N, lambda c: NB201SuperCell(c, ops))
        self.classifier = nn.Linear(c_prev, num_classes)

    @property
    def n_super_cells(self) -> int:
        return 3 * self.N

    def mixed_edges(self) -> dict[str, list[MixedEdge]]:
        """``{edge_key: [MixedEdge of every cell]}``."""
        out: dict[str, list[MixedEdge]] = {f"e{i}{j}": [] for i, j in EDGE_ORDER}
        for c in self.cells:
            if isinstance(c, NB201SuperCell):
                for k, m in c.edges.items():
                    out[k].append(m)  # type: ignore[arg-type]
        return out

    def set_record(self, on: bool) -> None:
        for ms in self.mixed_edges().values():
            for m in ms:
                m.record = on
                m._outs = []

    def forward(self, x: torch.Tensor, weights: torch.Tensor,
                active: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, weights, active) if isinstance(cell, NB201SuperCell) else cell(x)
        x = torch.flatten(F.adaptive_avg_pool2d(self.lastact(x), 1), 1)
        return self.classifier(x)

    def arch_parameters_shape(self) -> tuple[int, int]:
        return (len(EDGE_ORDER), len(self.ops))
