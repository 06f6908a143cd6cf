"""Pattern rewriting, the way onnxscript's rewriter does it: a pattern is a Python function over an op
builder, a rule is a pattern plus an optional check plus a replacement function.

    from graphopt.rewrite import RewriteRule

    def pattern(op, x):
        return op.relu(op.relu(x))

    def replacement(op, x):
        return op.relu(x)

    rule = RewriteRule(pattern, replacement, name="double-relu")
    count = rule.apply(graph)

Pattern arguments are variables bound to graph values (the same variable twice must bind the same value);
Python numbers in a pattern match constants holding that value; keyword arguments to ``op.X`` constrain
attributes. Commutative binary ops match in either input order. A match whose inner value is also used
outside the match (or is a graph output) is rejected, so rewrites never duplicate work or drop a value.
Matching starts only at nodes of the pattern's root op type (an index, not a scan per node).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .ir.graph import Graph, Node, Value
from .ir.registry import get_op, is_commutative


# ---------------------------------------------------------------------------------------------- patterns
@dataclass(eq=False)
class PVar:
    name: str


@dataclass(eq=False)
class PConst:
    value: float


@dataclass(eq=False)
class PNode:
    op: str
    inputs: list[Any]
    attrs: dict[str, Any]
    output_index: int = 0
    node_ref: PNode | None = None  # for outputs other than 0 of a multi-output pattern node


class _PatternBuilder:
    def __getattr__(self, op: str) -> Callable[..., PNode]:
        get_op(op)  # fail early on typos: names the op

        def make(*inputs: Any, **attrs: Any) -> PNode:
            ins = [PConst(float(x)) if isinstance(x, int | float) else x for x in inputs]
            return PNode(op, ins, attrs)

        return make


class _ReplacementBuilder:
    """``op.X(...)`` creates real nodes before the match root; ``op.const(array)`` adds a constant."""

    def __init__(self, graph: Graph, anchor: Node, name_hint: str) -> None:
        self.graph = graph
        self.anchor = anchor
        self.hint = name_hint
        self.created: list[Node] = []

    def const(self, array: Any, kind: str = "const", name: str | None = None) -> Value:
        return self.graph.add_const(name or f"{self.hint}_c", np.asarray(array), kind)

    def __getattr__(self, op: str) -> Callable[..., Any]:
        def make(*inputs: Any, _outputs: int | None = None, _name: str | None = None, **attrs: Any):
            ins = [self.const(np.asarray(x, dtype=np.float32)) if isinstance(x, int | float) else x for x in inputs]
            with self.graph.inserting_before(self.anchor):
                node = self.graph.create_node(op, ins, attrs, name=_name or f"{self.hint}_{op}",
                                              num_outputs=_outputs)
            self.created.append(node)
            return node.outputs[0] if len(node.outputs) == 1 else tuple(node.outputs)

        return make


@dataclass
class Match:
    root: Node
    nodes: list[Node]
    bindings: dict[str, Value]
    attrs: dict[int, dict[str, Any]] = field(default_factory=dict)

    def node_for(self, op: str) -> Node:
        """The matched node of type ``op`` (first in pattern order), to read its attributes in a check."""
        for n in self.nodes:
            if n.op == op:
                return n
        raise KeyError(op)


class RewriteRule:
    def __init__(
        self,
        pattern: Callable[..., Any],
        replacement: Callable[..., Any],
        check: Callable[..., bool] | None = None,
        *,
        name: str | None = None,
        description: str = "",
    ) -> None:
        self.name = name or pattern.__name__.replace("_", "-")
        self.description = description or (inspect.getdoc(pattern) or "").split("\n")[0]
        params = list(inspect.signature(pattern).parameters)[1:]
        self.var_names = params
        out = pattern(_PatternBuilder(), *[PVar(p) for p in params])
        if not isinstance(out, PNode):
            raise TypeError(f"pattern {self.name!r} must return an op application, got {type(out).__name__}")
        self.root = out
        self.replacement = replacement
        self.check = check

    # ------------------------------------------------------------------------------------------ matching
    def match(self, node: Node) -> Match | None:
        bindings: dict[str, Value] = {}
        matched: list[Node] = []
        pmap: dict[int, Node] = {}
        if not self._match_node(self.root, node, bindings, matched, pmap):
            return None
        m = Match(node, matched, bindings)
        inside = {id(n) for n in matched}
        graph = node.graph
        assert graph is not None
        outs = {id(v) for v in graph.outputs}
        for n in matched:
            if n is node:
                continue
            for o in n.outputs:
                if id(o) in outs or any(id(u.node) not in inside for u in o.uses):
                    return None
        return m

    def _match_node(self, p: PNode, node: Node, b: dict[str, Value], matched: list[Node],
                    pmap: dict[int, Node]) -> bool:
        if node.op != p.op:
            return False
        for k, v in p.attrs.items():
            if not _attr_eq(node.attrs.get(k), v):
                return False
        ins = node.inputs
        if len(ins) < len(p.inputs) or any(v is not None for v in ins[len(p.inputs):]):
            return False
        orders = [list(range(len(p.inputs)))]
        if is_commutative(p.op) and len(p.inputs) == 2:
            orders.append([1, 0])
        for order in orders:
            trial_b, trial_m, trial_p = dict(b), list(matched), dict(pmap)
            trial_m.append(node)
            trial_p[id(p)] = node
            if all(self._match_value(p.inputs[i], ins[j], trial_b, trial_m, trial_p) for i, j in enumerate(order)):
                b.clear()
                b.update(trial_b)
                matched[:] = trial_m
                pmap.clear()
                pmap.update(trial_p)
                return True
        return False

    def _match_value(self, p: Any, v: Value | None, b: dict[str, Value], matched: list[Node],
                     pmap: dict[int, Node]) -> bool:
        if p is None:
            return v is None
        if v is None:
            return False
        if isinstance(p, PVar):
            if p.name in b:
                return b[p.name] is v
            b[p.name] = v
            return True
        if isinstance(p, PConst):
            return v.const is not None and v.const.size >= 1 and bool(np.all(v.const == p.value))
        if isinstance(p, PNode):
            if v.producer is None or v.output_index != p.output_index:
                return False
            if id(p) in pmap:  # a pattern node used twice (a DAG pattern) must be the same graph node
                return pmap[id(p)] is v.producer
            if any(n is v.producer for n in matched):
                return False  # already matched by a different pattern node
            return self._match_node(p, v.producer, b, matched, pmap)
        raise TypeError(f"bad pattern element {p!r}")

    def matches(self, graph: Graph) -> list[Match]:
        """Every match that passes the check, without rewriting: for analyses that only need to find the pattern
        (NASWOT reading a decomposed activation's input)."""
        out = []
        for node in graph.nodes_by_op().get(self.root.op, []):
            m = self.match(node)
            if m is not None and (self.check is None or self.check(m, **m.bindings)):
                out.append(m)
        return out

    # -------------------------------------------------------------------------------------------- apply
    def apply(self, graph: Graph, max_rewrites: int | None = None) -> int:
        """Rewrite every (non-overlapping) match; returns the number of rewrites."""
        count = 0
        for node in list(graph.nodes_by_op().get(self.root.op, [])):
            if node.graph is not graph:
                continue  # erased by an earlier rewrite
            m = self.match(node)
            if m is None:
                continue
            if self.check is not None and not self.check(m, **m.bindings):
                continue
            if self._rewrite(graph, m):
                count += 1
                if max_rewrites is not None and count >= max_rewrites:
                    break
        return count

    def _rewrite(self, graph: Graph, m: Match) -> bool:
        builder = _ReplacementBuilder(graph, m.root, m.root.name)
        params = inspect.signature(self.replacement).parameters
        kwargs = {k: v for k, v in m.bindings.items() if k in params}
        if "match" in params:
            kwargs["match"] = m
        new = self.replacement(builder, **kwargs)
        if new is None:
            for n in reversed(builder.created):
                if not any(o.uses for o in n.outputs):
                    graph.erase_node(n)
            return False
        news = list(new) if isinstance(new, tuple | list) else [new]
        if len(news) != len(m.root.outputs):
            raise ValueError(f"rule {self.name!r}: replacement returned {len(news)} values for "
                             f"{len(m.root.outputs)} outputs of node {m.root.name}")
        for old, nv in zip(m.root.outputs, news, strict=True):
            if old.type is not None and nv.type is not None and old.type.shape is not None \
                    and nv.type.shape is not None and len(old.type.shape) != len(nv.type.shape):
                raise ValueError(f"rule {self.name!r} replaced %{old.name} ({old.type}) with a value of type "
                                 f"{nv.type} at node {m.root.name}")
            graph.replace_all_uses(old, nv)
        erase_dead(graph, m.nodes)
        for n in builder.created:
            n.meta.setdefault("provenance", {"rule": self.name, "replaced": m.root.name})
        return True

    def as_pass(self):
        from .pass_api import Pass

        def run(graph: Graph) -> dict[str, int]:
            return {self.name: self.apply(graph)}

        return Pass(self.name, self.description, run)


def erase_dead(graph: Graph, nodes: list[Node]) -> int:
    """Erase those of ``nodes`` whose outputs became unused, consumers before producers."""
    pending = [n for n in nodes if n.graph is graph]
    erased = 0
    progress = True
    while progress:
        progress = False
        for n in list(pending):
            if not any(o.uses or any(o is g for g in graph.outputs) for o in n.outputs):
                graph.erase_node(n)
                pending.remove(n)
                erased += 1
                progress = True
    return erased


def _attr_eq(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return a == b


def apply_rules(graph: Graph, rules: list[RewriteRule], max_iters: int = 10) -> dict[str, int]:
    """Apply rules repeatedly until none fires; returns rewrites per rule."""
    totals: dict[str, int] = {}
    for _ in range(max_iters):
        changed = 0
        for r in rules:
            c = r.apply(graph)
            if c:
                totals[r.name] = totals.get(r.name, 0) + c
                changed += c
        if not changed:
            break
    return totals
