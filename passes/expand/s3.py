"""``expand-s3``: make the transformer blocks of a ViT-style graph elastic (the S3 / AutoFormer space).

Elastic dimensions added to ``graph.meta['elastic_dims']`` (see :class:`graphopt.supernet.ElasticDim`):
``depth`` (blocks ``>= depth`` are bypassed), ``embed`` (leading slice of every embedding-sized axis),
``heads.<i>`` (query/key/value width = heads x head_dim; the head dim stays fixed, as in S3's public configs)
and ``mlp_ratio.<i>`` (MLP hidden = ratio x embed) per block. Weight entanglement: every value uses the
leading slice of the largest weight, so the graph's weights are the supernet's.

Matching is by name (documented contract): blocks ``blocks.<i>`` with matmul weights (stored ``[in, out]``)
``blocks.<i>.attn.{q,k,v,proj}.weight_t``, ``blocks.<i>.mlp.{fc1,fc2}.weight_t``, LayerNorms ``norm1``/``norm2``,
head reshapes ``blocks.<i>.attn.{q,k,v}.reshape`` ``[0, 0, heads, head_dim]`` and ``.attn.out.reshape``
``[0, 0, heads*head_dim]``, residual adds ``blocks.<i>.add1``/``add2``; plus ``patch_embed``, ``cls_token``,
``pos_embed``, ``norm``, ``head``. :func:`graphopt.search.s3.vit_graph` emits this layout; a ViT lowered with a
fused qkv projection is reported as not matching rather than expanded wrongly.
"""

from __future__ import annotations

import re
from typing import Any

from graphopt.ir.graph import Graph
from graphopt.pass_api import PassError, graph_pass
from graphopt.supernet import ElasticDim


def _blocks(graph: Graph) -> list[int]:
    rx = re.compile(r"^blocks\.(\d+)\.attn\.q\.weight_t$")
    return sorted(int(m.group(1)) for c in graph.constants if (m := rx.match(c)))


@graph_pass("expand-s3", "Make ViT blocks elastic (depth, embed dim, heads, MLP ratio): the S3 search space",
            semantics_preserving=False)
def expand_s3(graph: Graph, depth: list[int] | None = None, embed: list[int] | None = None,
              heads: list[int] | None = None, mlp_ratio: list[float] | None = None) -> dict[str, Any]:
    """Annotate elastic dimensions; choices default to all values up to the graph's sizes."""
    blocks = _blocks(graph)
    if not blocks:
        raise PassError(f"expand-s3: graph {graph.name!r} has no blocks.<i>.attn.q.weight_t constant; it needs a "
                        "ViT with separate q/k/v matmuls (see graphopt.search.s3.vit_graph)")
    c = graph.constants
    E = int(c["blocks.0.attn.q.weight_t"].shape[0])
    H = int(c["blocks.0.attn.q.weight_t"].shape[1])
    M = int(c["blocks.0.mlp.fc1.weight_t"].shape[1])
    q_reshape = graph.find_node("blocks.0.attn.q.reshape")
    hd = int(q_reshape.inputs[1].const[3])  # type: ignore[union-attr,index]
    D = len(blocks)
    depth = depth or list(range(1, D + 1))
    embed = embed or [e for e in range(hd, E + 1, hd)]
    heads = heads or list(range(1, H // hd + 1))
    mlp_ratio = mlp_ratio or [r / 2 for r in range(2, int(2 * M / E) + 1)]
    if max(depth) > D or max(embed) > E or max(heads) * hd > H or max(mlp_ratio) * max(embed) > M + 1e-6:
        raise PassError(f"expand-s3: choices exceed the graph (depth<={D}, embed<={E}, heads<={H // hd}, "
                        f"mlp hidden<={M})")
    emb_t: list[tuple[str, int, Any]] = [("patch_embed.weight", 0, 1), ("patch_embed.bias", 0, 1),
                                         ("cls_token", 2, 1), ("pos_embed", 2, 1), ("norm.weight", 0, 1),
                                         ("norm.bias", 0, 1), ("head.weight_t", 0, 1)]
    dims: list[ElasticDim] = []
    skip = []
    for i in blocks:
        p = f"blocks.{i}"
        for nm in ("norm1", "norm2"):
            emb_t += [(f"{p}.{nm}.weight", 0, 1), (f"{p}.{nm}.bias", 0, 1)]
        for nm in ("q", "k", "v", "proj"):
            emb_t.append((f"{p}.attn.{nm}.weight_t", 0 if nm != "proj" else 1, 1))
        emb_t += [(f"{p}.attn.proj.bias", 0, 1), (f"{p}.mlp.fc1.weight_t", 0, 1), (f"{p}.mlp.fc2.weight_t", 1, 1),
                  (f"{p}.mlp.fc2.bias", 0, 1)]
        ht = [(f"{p}.attn.{nm}.weight_t", 1, hd) for nm in ("q", "k", "v")]
        ht += [(f"{p}.attn.{nm}.bias", 0, hd) for nm in ("q", "k", "v")]
        ht.append((f"{p}.attn.proj.weight_t", 0, hd))
        hat = [(f"{p}.attn.{nm}.reshape", "input:1", 2, 1) for nm in ("q", "k", "v")]
        hat.append((f"{p}.attn.out.reshape", "input:1", 2, hd))
        dims.append(ElasticDim(f"heads.{i}", list(heads), "slice", ht, hat))
        mt = [(f"{p}.mlp.fc1.weight_t", 1, "embed"), (f"{p}.mlp.fc1.bias", 0, "embed"),
              (f"{p}.mlp.fc2.weight_t", 0, "embed")]
        dims.append(ElasticDim(f"mlp_ratio.{i}", list(mlp_ratio), "slice", mt))
        first = graph.find_node(f"{p}.norm1")
        assert first.inputs[0] is not None
        skip.append((graph.find_node(f"{p}.add2").output.name, first.inputs[0].name, i))
    missing = [t[0] for t in emb_t if t[0] not in c]
    if missing:
        raise PassError(f"expand-s3: graph {graph.name!r} lacks constants {missing[:4]} of the ViT layout")
    dims = [ElasticDim("depth", list(depth), "skip", skip), ElasticDim("embed", list(embed), "slice", emb_t)] + dims
    graph.meta["elastic_dims"] = [d.to_dict() for d in dims]
    graph.meta["head_dim"] = hd
    return {"blocks": D, "dims": len(dims), "depth": list(depth), "embed": list(embed), "heads": list(heads),
            "mlp_ratio": list(mlp_ratio)}
