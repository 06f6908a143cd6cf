"""The IR verifier: run after every pass, it names the first offending node and says what is wrong.

Checks: every op is registered with a valid arity and attribute set; every input is a graph input, a constant
of this graph, or an output of an *earlier* node (which also proves acyclicity); use lists match inputs
exactly; graph outputs are produced; names are unique; stored types equal what the registry infers.
"""

from __future__ import annotations

from .graph import Graph, IRError, Node, Value
from .registry import UnsupportedOpError, get_op


class VerificationError(IRError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__("IR verification failed: " + "; ".join(problems[:5]) + more)


def _attr_type_problem(default: object, val: object) -> str:
    """Why ``val`` cannot stand where the registry's default is ``default`` ("" if it can).

    The default's kind is the attribute's declared type (int, float, str, list); ``None`` defaults accept
    anything. This catches files that pass the schema but would crash a backend (``axis: [1]``).
    """
    if default is None or val is None:
        return ""
    if isinstance(default, bool) or isinstance(default, int):
        return "" if isinstance(val, int) else "must be an integer"
    if isinstance(default, float):
        return "" if isinstance(val, int | float) and not isinstance(val, bool) else "must be a number"
    if isinstance(default, str):
        return "" if isinstance(val, str) else "must be a string"
    if isinstance(default, list | tuple):
        return "" if isinstance(val, list | tuple) else "must be a list"
    return ""


def verify(graph: Graph, *, check_types: bool = True) -> None:
    """Raise :class:`VerificationError` if ``graph`` is malformed."""
    problems: list[str] = []
    defined: set[int] = {id(v) for v in graph.inputs}
    for v in graph.constants.values():
        defined.add(id(v))
        if v.const is None:
            problems.append(f"constant %{v.name} holds no array")
    names: dict[str, str] = {}

    def claim(name: str, what: str) -> None:
        if name in names:
            problems.append(f"name {name!r} is used by both {names[name]} and {what}")
        names[name] = what

    for v in graph.inputs:
        claim(v.name, "a graph input")
    for v in graph.constants.values():
        claim(v.name, "a constant")
    node_names: set[str] = set()
    for n in graph.nodes:
        if n.name in node_names:
            problems.append(f"two nodes are named {n.name!r}")
        node_names.add(n.name)
        if n.graph is not graph:
            problems.append(f"node {n.name} ({n.op}) belongs to another graph")
        try:
            opdef = get_op(n.op)
        except UnsupportedOpError as e:
            problems.append(str(e))
            continue
        if not opdef.arity_ok(len(n.inputs)):
            problems.append(f"node {n.name} ({n.op}) has {len(n.inputs)} inputs, which {n.op} does not accept")
        unknown = set(n.attrs) - set(opdef.attrs)
        if unknown:
            problems.append(f"node {n.name} ({n.op}) has unknown attributes {sorted(unknown)}")
        for k, val in n.attrs.items():
            bad = _attr_type_problem(opdef.attrs.get(k), val)
            if bad:
                problems.append(f"node {n.name} ({n.op}): attribute {k}={val!r} {bad}")
        if len(n.outputs) != opdef.num_outputs(n.attrs):
            problems.append(f"node {n.name} ({n.op}) has {len(n.outputs)} outputs, expected "
                            f"{opdef.num_outputs(n.attrs)}")
        for i, v in enumerate(n.inputs):
            if v is None:
                if i < len(opdef.inputs) and not opdef.inputs[i].optional:
                    problems.append(f"node {n.name} ({n.op}): required input {opdef.inputs[i].name} is missing")
                continue
            if id(v) not in defined:
                where = "a later node" if v.producer is not None and v.producer.graph is graph else "nowhere"
                problems.append(f"node {n.name} ({n.op}) uses %{v.name}, defined by {where} "
                                f"(dangling use or cycle)")
            if not any(u.node is n and u.index == i for u in v.uses):
                problems.append(f"use list of %{v.name} misses node {n.name} input {i}")
        for o in n.outputs:
            if o.producer is not n:
                problems.append(f"output %{o.name} of node {n.name} does not point back at it")
            claim(o.name, f"output of node {n.name}")
            defined.add(id(o))
            for u in o.uses:
                if u.node.graph is not graph or u.index >= len(u.node.inputs) or u.node.inputs[u.index] is not o:
                    problems.append(f"stale use of %{o.name} by node {u.node.name} input {u.index}")
    for v in graph.outputs:
        if id(v) not in defined:
            problems.append(f"graph output %{v.name} is not produced by the graph")
    if check_types and not problems:
        problems += _check_types(graph)
    if problems:
        raise VerificationError(problems)


def _check_types(graph: Graph) -> list[str]:
    from .infer import ShapeInferenceError, infer_node

    problems = []
    for n in graph.nodes:
        stored = [o.type for o in n.outputs]
        if any(t is None for t in stored):
            problems.append(f"node {n.name} ({n.op}) has an output without a type")
            continue
        try:
            infer_node(n)
        except ShapeInferenceError as e:
            problems.append(str(e))
            _restore(n, stored)
            continue
        for o, before in zip(n.outputs, stored, strict=True):
            after = o.type
            if after is None or not _compatible(before, after):
                problems.append(f"node {n.name} ({n.op}): output %{o.name} is typed {before} but the registry "
                                f"infers {after}")
        _restore(n, stored)
    return problems


def _restore(n: Node, stored) -> None:
    for o, t in zip(n.outputs, stored, strict=True):
        o.type = t


def _compatible(a, b) -> bool:
    """Equal types; a symbolic dim may match any dim (symbols are renamed by inference)."""
    if a.dtype != b.dtype:
        return False
    if a.shape is None or b.shape is None:
        return True
    if len(a.shape) != len(b.shape):
        return False
    return all(x == y or isinstance(x, str) or isinstance(y, str) for x, y in zip(a.shape, b.shape, strict=True))


def dangling_values(graph: Graph) -> list[Value]:
    """Node outputs nobody uses (DCE candidates), for reports."""
    outs = {id(v) for v in graph.outputs}
    return [o for n in graph.nodes for o in n.outputs if not o.uses and id(o) not in outs]
