"""HTML report of a search: Pareto plot, candidate table, and the best graph with its rewritten nodes
highlighted. Self-contained (images inlined as base64 PNG), written atomically."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from ..ir.graph import Graph
from ..ir.serialize import atomic_write_bytes


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def pareto_plot(points: list[dict[str, Any]], front: list[dict[str, Any]], x: str, y: str, seed: dict | None,
                best: dict | None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter([p[x] for p in points], [p[y] for p in points], s=12, c="#9aa5b1", label="candidates")
    fx = sorted(front, key=lambda p: p[x])
    ax.plot([p[x] for p in fx], [p[y] for p in fx], "-o", c="#1f77b4", ms=4, label="Pareto front")
    if seed:
        ax.scatter([seed[x]], [seed[y]], marker="s", s=60, c="#d62728", label="original", zorder=5)
    if best:
        ax.scatter([best[x]], [best[y]], marker="*", s=160, c="#2ca02c", label="best", zorder=6)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _depths(graph: Graph) -> dict[str, int]:
    depth: dict[str, int] = {}
    for n in graph.nodes:
        depth[n.name] = max((depth[p.name] + 1 for p in n.input_producers() if p.name in depth), default=0)
    return depth


def _draw(ax, graph: Graph, colors: dict[str, str], title: str, max_nodes: int) -> None:
    """One graph, top to bottom by topological depth, nodes of one depth side by side, labelled by op."""
    nodes = graph.nodes[:max_nodes]
    depth = _depths(graph)
    col: dict[int, int] = {}
    pos = {}
    for n in nodes:
        d = depth[n.name]
        pos[n.name] = (col.get(d, 0), -d)
        col[d] = col.get(d, 0) + 1
    from matplotlib.patches import FancyArrowPatch

    for n in nodes:
        for p in n.input_producers():
            if p.name in pos:
                (x0, y0), (x1, y1) = pos[p.name], pos[n.name]
                # an edge that skips levels (a residual) bends out of the column instead of hiding behind it
                rad = 0.35 if abs(y0 - y1) > 1 and x0 == x1 else 0.0
                ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), connectionstyle=f"arc3,rad={rad}",
                                             arrowstyle="-", color="#999", lw=0.7, zorder=1))
    for n in nodes:
        x, y = pos[n.name]
        ax.text(x, y, n.op, ha="center", va="center", fontsize=7, zorder=2,
                bbox={"boxstyle": "round,pad=0.25", "fc": colors.get(n.name, "#dbe7f3"), "ec": "#567", "lw": 0.5})
    width = max(col.values(), default=1)
    ax.set_xlim(-0.8, max(width - 0.2, 0.8))
    ax.set_ylim(-(max(depth.values(), default=0) + 0.8), 0.8)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def graph_picture(graph: Graph, highlight_key: str = "provenance", max_nodes: int = 400,
                  original: Graph | None = None) -> str:
    """The graph (and ``original`` beside it, when given): nodes created by a rewrite (``meta[highlight_key]``,
    or absent from the original) in orange, nodes of the original that the rewrite removed in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    new_names = {n.name for n in graph.nodes if highlight_key in n.meta}
    if original is not None:
        orig = {n.name: n.op for n in original.nodes}
        new_names |= {n.name for n in graph.nodes if orig.get(n.name) != n.op}
        kept = {n.name for n in graph.nodes} - new_names
        removed = {n.name for n in original.nodes} - kept
    graphs = [(original, {k: "#f4a3a3" for k in removed}, "original (red: replaced)")] if original is not None else []
    graphs.append((graph, {k: "#ffb25e" for k in new_names}, "best (orange: new segments)"))
    levels = max(max(_depths(g).values(), default=0) + 1 for g, _, _ in graphs)
    fig, axes = plt.subplots(1, len(graphs), figsize=(4.2 * len(graphs), max(4.0, min(60.0, 0.32 * levels))),
                             squeeze=False)
    for ax, (g, colors, title) in zip(axes[0], graphs, strict=True):
        _draw(ax, g, colors, title, max_nodes)
    fig.tight_layout()
    return _png(fig)


def lineage_text(lineage: Any) -> str:
    """A mutation record list as one readable line per mutation (the store keeps the JSON)."""
    items = lineage if isinstance(lineage, list) else [lineage] if lineage else []
    out = []
    for m in items:
        if not isinstance(m, dict):
            out.append(str(m))
            continue
        src = m.get("source_nodes") or []
        ops = ", ".join(m.get("db_ops") or [])
        fl = ""
        if m.get("flops_before") and m.get("flops_after"):
            fl = f", {(m['flops_after'] / m['flops_before'] - 1) * 100:+.1f}% FLOPs"
        out.append(f"{len(src)} nodes ({', '.join(src[:3])}{'...' if len(src) > 3 else ''}) -> segment "
                   f"#{m.get('db_segment')} [{ops}] ({m.get('fit', '')}{fl})")
    return "; ".join(out)


def write_report(path: str | Path, *, title: str, summary: dict[str, Any], points: list[dict[str, Any]],
                 front: list[dict[str, Any]], x: str, y: str, seed: dict | None, best: dict | None,
                 best_graph: Graph | None, columns: list[str], extra_sections: list[tuple[str, str]] = (),
                 seed_graph: Graph | None = None) -> Path:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px}"
             "th{background:#f0f3f6}tr.front td{background:#eef6ff}tr.best td{background:#e6f6e6}</style>",
             f"</head><body><h1>{esc(title)}</h1><table>"]
    for k, v in summary.items():
        parts.append(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>")
    parts.append("</table>")
    if points:
        parts.append(f"<h2>Pareto front</h2><img src='data:image/png;base64,"
                     f"{pareto_plot(points, front, x, y, seed, best)}'>")
    front_ids = {p.get("hash") for p in front}
    parts.append("<h2>Candidates</h2><table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>")
    for p in sorted(points, key=lambda p: (-(p.get(y) or 0))):
        cls = "best" if best and p.get("hash") == best.get("hash") else ("front" if p.get("hash") in front_ids else "")
        cells = [lineage_text(p.get(c)) if c == "lineage" else _fmt(p.get(c)) for c in columns]
        parts.append(f"<tr class='{cls}'>" + "".join(f"<td>{esc(v)}</td>" for v in cells) + "</tr>")
    parts.append("</table>")
    for head, body in extra_sections:
        parts.append(f"<h2>{esc(head)}</h2>{body}")
    if best_graph is not None:
        what = "the original (left; replaced nodes red) and the best" if seed_graph is not None else "The best"
        parts.append(f"<h2>Best graph against the original</h2><p>{what.capitalize()} graph; nodes created by a "
                     "segment replacement are orange.</p>"
                     f"<img style='max-width:100%' src='data:image/png;base64,"
                     f"{graph_picture(best_graph, original=seed_graph)}'>")
    parts.append("</body></html>")
    atomic_write_bytes(path, "\n".join(parts).encode())
    return Path(path)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return ""
    return str(v)
