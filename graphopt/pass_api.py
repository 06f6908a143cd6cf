"""The pass API: a pass is a plain function over the IR, declared with :func:`graph_pass`.

    from graphopt.pass_api import graph_pass

    @graph_pass("drop-identity", "Remove identity nodes", requires=())
    def drop_identity(graph):
        n = 0
        for node in graph.nodes_by_op().get("identity", []):
            graph.replace_all_uses(node.output, node.inputs[0])
            graph.erase_node(node)
            n += 1
        return {"identity": n}

A pass mutates the graph it is given and returns what changed (a dict of counts per rewrite, an int, or
None for "nothing"); the :class:`~graphopt.pass_manager.PassManager` uses that to iterate to a fixed point,
verifies the IR after it, and keeps the previous graph if it fails. Passes are found by name in one registry:
built-ins (``graphopt.passes``), user modules (``-p mypkg.mymod:my_pass``) and the ``graphopt.passes``
entry-point group.
"""

from __future__ import annotations

import importlib
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from .ir.graph import Graph, IRError

PassFn = Callable[..., Any]


class PassError(ValueError):
    """A pass could not run or broke the IR; the message names the pass (and node when known)."""


@dataclass
class Pass:
    name: str
    description: str
    fn: PassFn
    requires: tuple[str, ...] = ()
    semantics_preserving: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    #: ONNX op types the pass introduces that its input did not need (a target pipeline leaves the pass out when
    #: the target does not accept one of them, since no legalizer turns them back)
    emits: tuple[str, ...] = ()

    def __call__(self, graph: Graph, **options: Any) -> dict[str, int]:
        check_requirements(self, graph)
        params = inspect.signature(self.fn).parameters
        opts = {**self.options, **options}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = set(opts) - set(params)
            if unknown:
                raise PassError(f"pass {self.name!r} has no option(s) {sorted(unknown)}; it accepts "
                                f"{[p for p in params if p != 'graph'][:20]}")
        return normalize_changes(self.fn(graph, **opts))

    def with_options(self, **options: Any) -> Pass:
        return Pass(self.name, self.description, self.fn, self.requires, self.semantics_preserving,
                    {**self.options, **options}, self.emits)


def normalize_changes(res: Any) -> dict[str, int]:
    if res is None:
        return {}
    if isinstance(res, bool):
        return {"changed": int(res)}
    if isinstance(res, int):
        return {"changed": res} if res else {}
    if isinstance(res, dict):
        return {str(k): int(v) for k, v in res.items() if v}
    raise PassError(f"a pass must return a dict of change counts, an int or None, not {type(res).__name__}")


_PASSES: dict[str, Pass] = {}
_loaded_builtins = False
_loaded_entry_points = False


def graph_pass(name: str, description: str = "", *, requires: tuple[str, ...] | list[str] = (),
               semantics_preserving: bool = True, replace: bool = False,
               emits: tuple[str, ...] | list[str] = ()) -> Callable[[PassFn], PassFn]:
    """Register ``fn(graph, **options)`` as a pass named ``name``.

    ``requires``: ``"static_shapes"`` (every dim known: run ``specialize-shapes`` or pass ``--input-shape``
    first) and/or ``"no_choices"`` (no unresolved supernet choice points). ``semantics_preserving=False``
    marks passes (mutations, architecture edits) that the numeric check must not hold to the original.
    ``emits``: ONNX op types the pass introduces (see :attr:`Pass.emits`).
    """

    def deco(fn: PassFn) -> PassFn:
        if name in _PASSES and not replace and _PASSES[name].fn is not fn:
            raise PassError(f"a pass named {name!r} is already registered ({_PASSES[name].fn.__module__})")
        desc = description or (inspect.getdoc(fn) or "").split("\n")[0]
        _PASSES[name] = Pass(name, desc, fn, tuple(requires), semantics_preserving, emits=tuple(emits))
        fn.graphopt_pass = _PASSES[name]  # type: ignore[attr-defined]
        return fn

    return deco


def register_pass(p: Pass, replace: bool = False) -> Pass:
    if p.name in _PASSES and not replace and _PASSES[p.name].fn is not p.fn:
        raise PassError(f"a pass named {p.name!r} is already registered")
    _PASSES[p.name] = p
    return p


def _load_builtins() -> None:
    global _loaded_builtins
    if not _loaded_builtins:
        _loaded_builtins = True
        importlib.import_module("graphopt.passes")


def _load_entry_points() -> None:
    """Third-party passes: ``[project.entry-points."graphopt.passes"] name = "pkg.mod:fn"``."""
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    for ep in entry_points(group="graphopt.passes"):
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break graphopt
            import warnings

            warnings.warn(f"graphopt pass plugin {ep.name!r} ({ep.value}) failed to load: {e}", stacklevel=2)
            continue
        if not isinstance(obj, types.ModuleType):  # a module registers its passes when imported
            _as_pass(obj, ep.name)


def _as_pass(obj: Any, fallback_name: str) -> Pass:
    if isinstance(obj, Pass):
        return register_pass(obj, replace=True)
    if hasattr(obj, "graphopt_pass"):
        return obj.graphopt_pass
    if hasattr(obj, "as_pass"):  # a RewriteRule
        return register_pass(obj.as_pass(), replace=True)
    if callable(obj):
        return register_pass(Pass(fallback_name, (inspect.getdoc(obj) or "").split("\n")[0], obj), replace=True)
    raise PassError(f"{fallback_name!r} is not a pass (a function decorated with @graph_pass, a Pass or a rule)")


def load_pass_module(spec: str) -> list[Pass]:
    """``pkg.mod`` (every pass it registers) or ``pkg.mod:attr`` (that one pass/rule/function)."""
    mod_name, _, attr = spec.partition(":")
    before = set(_PASSES)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise PassError(f"cannot import pass module {mod_name!r}: {e}") from e
    if attr:
        if not hasattr(mod, attr):
            raise PassError(f"module {mod_name!r} has no attribute {attr!r}")
        return [_as_pass(getattr(mod, attr), attr.replace("_", "-"))]
    return [_PASSES[n] for n in _PASSES if n not in before]


def get_pass(name: str) -> Pass:
    _load_builtins()
    if name not in _PASSES:
        _load_entry_points()
    if name not in _PASSES:
        import difflib

        close = difflib.get_close_matches(name, list(_PASSES), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise PassError(f"unknown pass {name!r}.{hint} Available passes: {', '.join(sorted(_PASSES))} "
                        f"(see `graphopt passes`)")
    return _PASSES[name]


def all_passes() -> dict[str, Pass]:
    _load_builtins()
    _load_entry_points()
    return dict(sorted(_PASSES.items()))


def check_requirements(p: Pass, graph: Graph) -> None:
    for req in p.requires:
        if req == "static_shapes":
            for v in graph.values():
                if v.type is None or v.type.shape is None:
                    raise PassError(f"pass {p.name!r} needs static shapes, but %{v.name} has unknown rank; "
                                    f"pass --input-shape NAME=d0,d1,... for the graph inputs")
                syms = v.type.symbols()
                if syms:
                    raise PassError(f"pass {p.name!r} needs static shapes, but %{v.name} has symbolic dim "
                                    f"{syms[0]!r} ({v.type}); bind it with --input-shape "
                                    f"{graph.inputs[0].name if graph.inputs else 'x'}=... or run "
                                    f"'specialize-shapes' first")
        elif req == "no_choices":
            if any(n.op == "choice" for n in graph.nodes):
                raise PassError(f"pass {p.name!r} cannot run on a supernet; materialize a path first")
        else:
            raise IRError(f"pass {p.name!r} declares unknown requirement {req!r}")
