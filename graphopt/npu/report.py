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
    #: ok (written; with a target: every node on the NPU) | host-fallback (written, some nodes placed on the
    #: host) | violations (--strict: refused) | quality-failed (int8 below the quality gate: refused) |
    #: verify-failed (the fp32 result does not reproduce the original: refused)
    status: str = "ok"
    #: what `graphopt export` exits with: 0 written, 1 verify-failed, 3 violations (--strict) or quality-failed
    exit_code: int = 0
    strict: bool = False
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
    #: where each node runs (graphopt.npu.placement.Placement.to_dict()); None without a target
    placement: dict[str, Any] | None = None
    #: the int8 quality gate (graphopt.npu.quantize.quality_gate); None when nothing was quantized
    quality: dict[str, Any] | None = None
    #: estimate before calibration and measured peak RSS, in MB
    memory: dict[str, Any] = field(default_factory=dict)
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
        if self.memory.get("peak_rss_mb"):
            L.append(f"- peak memory (RSS): {self.memory['peak_rss_mb']:.0f} MB")
        L.append("")
        if self.placement:
            L += self._placement_md()
        if self.quality:
            qg = self.quality
            verdict = "passed" if qg["passed"] and not qg["below"] else (
                "FAILED (model not written)" if not qg["passed"] else "below the default, gate off (--min-agreement 0)")
            L += ["## INT8 quality gate", "",
                  f"- {qg['metric']} = {_fmt(qg['value'])} on {qg['samples']} held-out samples; threshold "
                  f"{_fmt(qg['threshold'])}: **{verdict}**", ""]
        if self.fp32:
            L += ["## fp32 check against the original", ""]
            for k, v in self.fp32.items():
                L.append(f"- {k}: {_fmt(v)}")
            L.append("")
        if self.memory:
            L += ["## Memory", ""] + [f"- {k}: {_fmt(v)}" for k, v in self.memory.items()] + [""]
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


    def _placement_md(self) -> list[str]:
        pl = self.placement or {}
        L = ["## Placement", "", f"**{pl.get('summary', '')}**", "",
             "| where | ops | FLOPs | share of FLOPs | est. latency (us) | share of latency |",
             "|---|---|---|---|---|---|"]
        for dev in ("npu", "host"):
            t = pl.get("totals", {}).get(dev, {})
            L.append(f"| {dev} | {t.get('nodes', 0)} | {t.get('flops', 0):,} | {t.get('flops_share', 0):.1%} | "
                     f"{t.get('latency_us', 0):.1f} | {t.get('latency_share', 0):.1%} |")
        L.append("")
        hosts = pl.get("host_nodes") or []
        if hosts:
            L += [f"Nodes on the host ({len(hosts)}): the constraint each violates and the rewrite that would move "
                  f"it onto the NPU.", "", "| node | op | constraint | fix |", "|---|---|---|---|"]
            for h in hosts:
                cons = "; ".join(f"{c['rule']}: {c['detail']}" for c in h["constraints"])
                L.append(f"| `{h['node']}` | {h['op']} | {_cell(cons)} | {_cell(h['fix'])} |")
            L.append("")
        for v in pl.get("input_violations") or []:
            L.append(f"- graph input `{v['node'].removeprefix('input:')}`: {v['rule']}: {v['detail']}")
        return L


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


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
