"""The export report: what went in, what came out, what a target still cannot run, and how close the numbers are.

Written as JSON (machine-readable, stable keys) and Markdown (for people) beside the exported model.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ExportReport:
    model: str
    output: str | None
    target: str | None = None
    profile: dict[str, Any] | None = None
    opset: int = 18
    ok: bool = True
    status: str = "ok"  # ok | violations | verify-failed
    written: list[str] = field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    passes: list[dict[str, Any]] = field(default_factory=list)
    rewrites: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fp32: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None
    latency: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default)

    def to_markdown(self) -> str:
        L: list[str] = []
        title = f"graphopt export: {self.model}"
        L += [f"# {title}", ""]
        L.append(f"- output: `{self.output}`" + ("" if self.output in self.written else " (not written)"))
        L.append(f"- target: {self.target or 'none (default fp32 pipeline)'}")
        if self.profile and self.profile.get("source"):
            L.append(f"- profile modeled on: {self.profile['source']} (not certified)")
        L.append(f"- ONNX opset: {self.opset}")
        L.append(f"- status: **{self.status}**" + (f" ({len(self.violations)} violations)" if self.violations else ""))
        L.append(f"- nodes: {self.nodes_before} -> {self.nodes_after}")
        L.append(f"- time: {self.seconds:.1f} s")
        L.append("")
        if self.fp32:
            L += ["## fp32 check against the original", ""]
            for k, v in self.fp32.items():
                L.append(f"- {k}: {_fmt(v)}")
            L.append("")
        if self.quantization:
            L += ["## Quantization", ""]
            for k, v in self.quantization.items():
                if k == "float_islands":
                    continue
                L.append(f"- {k}: {_fmt(v)}")
            isl = self.quantization.get("float_islands") or []
            if isl:
                L.append(f"- ops left in float ({len(isl)}): " + ", ".join(f"{n} ({o})" for n, o in isl[:30])
                         + (" ..." if len(isl) > 30 else ""))
            L.append("")
        if self.latency:
            L += ["## onnxruntime CPU latency", "", "| model | median ms | p10 ms | p90 ms | runs |",
                  "|---|---|---|---|---|"]
            for k, v in self.latency.items():
                if isinstance(v, dict):
                    L.append(f"| {k} | {v['median_ms']:.3f} | {v['p10_ms']:.3f} | {v['p90_ms']:.3f} | {v['runs']} |")
            L.append("")
        L += ["## Violations", ""]
        if self.violations:
            L += ["| node | op | rule | detail |", "|---|---|---|---|"]
            for v in self.violations:
                L.append(f"| `{v['node']}` | {v['op']} | {v['rule']} | {v['detail']} |")
        else:
            L.append("None." if self.target else "No target profile: nothing to check.")
        L.append("")
        if self.rewrites:
            L += ["## Legalization rewrites", ""]
            c = Counter((r["op"], r["legalizer"], r.get("approximate", False)) for r in self.rewrites)
            L += ["| op | rewrite | count | exact |", "|---|---|---|---|"]
            for (op, lg, approx), n in sorted(c.items()):
                L.append(f"| {op} | {lg} | {n} | {'no (approximation)' if approx else 'yes'} |")
            L.append("")
        if self.warnings:
            L += ["## Warnings", ""] + [f"- {w}" for w in self.warnings] + [""]
        L += ["## Op histogram", "", "| op | before | after |", "|---|---|---|"]
        for op in sorted(set(self.ops_before) | set(self.ops_after)):
            L.append(f"| {op} | {self.ops_before.get(op, 0)} | {self.ops_after.get(op, 0)} |")
        L.append("")
        if self.passes:
            L += ["## Passes", "", "| pass | runs | ms | changes | status |", "|---|---|---|---|---|"]
            for p in self.passes:
                ch = ", ".join(f"{k}={v}" for k, v in p["changes"].items()) or "-"
                L.append(f"| {p['name']} | {p['runs']} | {p['seconds'] * 1e3:.1f} | {ch} | "
                         f"{'failed' if p['failed'] else 'ok'} |")
            L.append("")
        return "\n".join(L)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def onnx_histogram(model: Any) -> dict[str, int]:
    """ONNX op types of a ModelProto (domain-qualified when not the default domain)."""
    c = Counter((f"{n.domain}." if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in model.graph.node)
    return dict(sorted(c.items()))
