"""PassManager: run a pipeline of passes, verify after each, time them, iterate groups to a fixed point.

Borrowed from MLIR: every pass is followed by the IR verifier; a pass that raises or leaves an invalid graph
is named (with the node when the error names one) and its output discarded, so the caller always holds the
graph from before the failing pass. With ``verify_numerics`` each semantics-preserving pass is also checked
against its input on generated inputs (``graphopt.verify``).

Pipeline strings: ``"dce,fold-constants,fuse-conv-bn"``; a parenthesised group with ``*`` repeats until no
pass in it changes anything: ``"(canonicalize,cse,dce)*,fuse-conv-bn"``; options in brackets:
``"specialize-shapes[batch=1]"``.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from .compare import ATOL, RTOL
from .ir.graph import Graph
from .ir.verify import VerificationError, verify
from .pass_api import Pass, PassError, get_pass


@dataclass
class Group:
    """Passes repeated until none changes anything (or ``max_iters``)."""

    items: list[Pass | Group]
    max_iters: int = 10


@dataclass
class PassRecord:
    name: str
    seconds: float
    changes: dict[str, int]
    status: str = "ok"  # ok | failed | skipped
    error: str = ""
    nodes_before: int = 0
    nodes_after: int = 0

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class PipelineResult:
    graph: Graph
    records: list[PassRecord] = field(default_factory=list)

    @property
    def failed(self) -> list[PassRecord]:
        return [r for r in self.records if r.status == "failed"]

    def summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for r in self.records:
            s = out.setdefault(r.name, {"runs": 0, "seconds": 0.0, "changes": {}, "failed": 0})
            s["runs"] += 1
            s["seconds"] += r.seconds
            s["failed"] += r.status == "failed"
            for k, v in r.changes.items():
                s["changes"][k] = s["changes"].get(k, 0) + v
        return out


def parse_pipeline(text: str) -> list[Pass | Group]:
    """Parse ``"a,(b,c)*,d[opt=1]"`` into passes and fixed-point groups."""
    tokens = re.findall(r"\(|\)\*?|,|[^,()]+", text.replace(" ", ""))
    pos = 0

    def parse_seq(closing: bool) -> list[Pass | Group]:
        nonlocal pos
        items: list[Pass | Group] = []
        while pos < len(tokens):
            t = tokens[pos]
            if t == ",":
                pos += 1
            elif t == "(":
                pos += 1
                inner = parse_seq(True)
                if pos >= len(tokens) or not tokens[pos].startswith(")"):
                    raise PassError(f"unbalanced '(' in pipeline {text!r}")
                repeat = tokens[pos] == ")*"
                pos += 1
                items.append(Group(inner) if repeat else Group(inner, max_iters=1))
            elif t.startswith(")"):
                if not closing:
                    raise PassError(f"unbalanced ')' in pipeline {text!r}")
                return items
            else:
                items.append(_parse_pass(t))
                pos += 1
        return items

    items = parse_seq(False)
    if not items:
        raise PassError("empty pipeline; name passes separated by commas (see `graphopt passes`)")
    return items


def _parse_pass(token: str) -> Pass:
    m = re.fullmatch(r"([\w.:-]+)(?:\[(.*)\])?", token)
    if not m:
        raise PassError(f"cannot parse pass {token!r}; write name or name[key=value,...]")
    p = get_pass(m.group(1))
    if m.group(2):
        opts = {}
        for kv in m.group(2).split(";"):
            k, _, v = kv.partition("=")
            opts[k] = _coerce(v)
        p = p.with_options(**opts)
    return p


def _coerce(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


class PassManager:
    def __init__(
        self,
        pipeline: str | list[Pass | Group | str],
        *,
        verify_ir: bool = True,
        verify_numerics: bool = False,
        rtol: float = RTOL,
        atol: float = ATOL,
        on_error: str = "stop",
        print_after: set[str] | None = None,
        out: TextIO | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        if on_error not in ("stop", "skip"):
            raise ValueError("on_error is 'stop' or 'skip'")
        if isinstance(pipeline, str):
            self.items = parse_pipeline(pipeline)
        else:
            self.items = [get_pass(p) if isinstance(p, str) else p for p in pipeline]
        self.verify_ir = verify_ir
        self.verify_numerics = verify_numerics
        self.rtol, self.atol = rtol, atol
        self.on_error = on_error
        self.print_after = print_after or set()
        self.out = out or sys.stderr
        self.progress = progress

    def run(self, graph: Graph) -> PipelineResult:
        """Run the pipeline on a copy of ``graph``; the input graph is never modified."""
        result = PipelineResult(graph.copy())
        self._run_items(self.items, result)
        return result

    def _run_items(self, items: list[Pass | Group], result: PipelineResult) -> int:
        total = 0
        for item in items:
            if isinstance(item, Group):
                for _ in range(item.max_iters):
                    changed = self._run_items(item.items, result)
                    total += changed
                    if not changed:
                        break
            else:
                total += self._run_one(item, result)
        return total

    def _run_one(self, p: Pass, result: PipelineResult) -> int:
        before = result.graph
        work = before.copy()
        if self.progress:
            self.progress(p.name)
        rec = PassRecord(p.name, 0.0, {}, nodes_before=len(before))
        t0 = time.perf_counter()
        try:
            rec.changes = p(work)
            if self.verify_ir:
                # A pass that reports no change left the graph as it was: the structural check suffices and
                # skips re-inferring every node's type (the dominant cost of long fixed-point pipelines).
                verify(work, check_types=bool(rec.changes))
            if self.verify_numerics and p.semantics_preserving and rec.changes:
                from .compare import verify as numeric_verify

                rep = numeric_verify(before, work, rtol=self.rtol, atol=self.atol)
                if not rep.ok:
                    raise PassError(f"pass {p.name!r} changed the graph's outputs: {rep}")
        except Exception as e:  # noqa: BLE001 - every failure is reported with the pass named
            rec.seconds = time.perf_counter() - t0
            rec.status = "failed"
            kind = "broke the IR" if isinstance(e, VerificationError) else "failed"
            where = "" if isinstance(e, VerificationError) else _failing_node(e, work)
            rec.error = f"pass {p.name!r} {kind}{where}: {e}"
            rec.nodes_after = len(before)
            result.records.append(rec)
            if self.on_error == "stop":
                raise PassError(rec.error + " (the graph from before this pass is kept)") from e
            return 0
        rec.seconds = time.perf_counter() - t0
        rec.nodes_after = len(work)
        result.records.append(rec)
        result.graph = work
        if p.name in self.print_after or "all" in self.print_after:
            print(f"// ----- graph after {p.name} ({sum(rec.changes.values())} changes) -----", file=self.out)
            print(work.format(), file=self.out)
        return sum(rec.changes.values())


def _failing_node(exc: BaseException, graph: Graph) -> str:
    """`` at node NAME (op)`` for the innermost traceback frame that was handling a node of ``graph``.

    Why a traceback walk: a user pass that raises rarely says which node it was rewriting; its frames do.
    """
    from .ir.graph import Node

    tb = exc.__traceback__
    found = ""
    while tb is not None:
        for val in tb.tb_frame.f_locals.values():
            if isinstance(val, Node) and val.op != "<root>" and (val.graph is graph or val.graph is None):
                found = f" at node {val.name} ({val.op})"
                break
        tb = tb.tb_next
    return found


def run_pipeline(graph: Graph, pipeline: str, **kw: Any) -> PipelineResult:
    return PassManager(pipeline, **kw).run(graph)
