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


def graph_picture(graph: Graph, highlight_key: str = "provenance", max_nodes: int = 400) -> str:
    """Nodes laid out by topological depth; nodes created by a rewrite (``meta[highlight_key]``) in orange."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    G = nx.DiGraph()
    nodes = graph.nodes[:max_nodes]
    keep = {n.name for n in nodes}
    depth: dict[str, int] = {}
    for n in nodes:
        d = 0
        for p in n.input_producers():
            if p.name in depth:
                d = max(d, depth[p.name] + 1)
        depth[n.name] = d
        G.add_node(n.name, layer=d)
    for n in nodes:
        for p in n.input_producers():
            if p.name in keep:
                G.add_edge(p.name, n.name)
    pos = nx.multipartite_layout(G, subset_key="layer", align="horizontal")
    pos = {k: (x, -y) for k, (y, x) in pos.items()}
    colors = ["#ff7f0e" if highlight_key in n.meta else "#c6dbef" for n in nodes]
    height = max(4.0, min(40.0, 0.28 * (max(depth.values(), default=0) + 1)))
    fig, ax = plt.subplots(figsize=(7.5, height))
    nx.draw_networkx_edges(G, pos, ax=ax, arrows=False, width=0.6, edge_color="#888")
    nx.draw_networkx_nodes(G, pos, nodelist=[n.name for n in nodes], node_color=colors, node_size=140, ax=ax)
    nx.draw_networkx_labels(G, pos, labels={n.name: n.op for n in nodes}, font_size=5, ax=ax)
    ax.set_axis_off()
    return _png(fig)


def write_report(path: str | Path, *, title: str, summary: dict[str, Any], points: list[dict[str, Any]],
                 front: list[dict[str, Any]], x: str, y: str, seed: dict | None, best: dict | None,
                 best_graph: Graph | None, columns: list[str], extra_sections: list[tuple[str, str]] = ()) -> Path:
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
        parts.append(f"<tr class='{cls}'>" + "".join(f"<td>{esc(_fmt(p.get(c)))}</td>" for c in columns) + "</tr>")
    parts.append("</table>")
    for head, body in extra_sections:
        parts.append(f"<h2>{esc(head)}</h2>{body}")
    if best_graph is not None:
        parts.append("<h2>Best graph</h2><p>Nodes created by a segment replacement are orange.</p>"
                     f"<img src='data:image/png;base64,{graph_picture(best_graph)}'>")
    parts.append("</body></html>")
    atomic_write_bytes(path, "\n".join(parts).encode())
    return Path(path)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return ""
    return str(v)
