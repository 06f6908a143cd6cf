"""Scaled dot-product attention as one op: ``fuse-attention`` and ``decompose-attention``.

The ``attention`` op follows ONNX ``Attention`` (opset 23) for 4-D ``(batch, heads, seq, head_dim)`` inputs:
``softmax(Q K^T * scale + mask) V`` with ``scale`` defaulting to ``1/sqrt(head_dim)``, an optional additive (float)
or keep (bool) mask, ``is_causal``, ``softcap`` and grouped-query heads (K/V with fewer heads than Q); 3-D inputs
(heads packed into the hidden dim, split by ``q_num_heads``/``kv_num_heads``) too. Not supported: the KV-cache
inputs/outputs (``past_key``/``present_key``...) and the ``qk_matmul_output`` output.

Why fuse: the PyTorch backend then runs ``F.scaled_dot_product_attention`` (one fused kernel) and targets with an
attention unit see one op. ONNX exports below opset 23 get it back as MatMul/Softmax through ``convert-opset``.

The op is registered here (importing ``graphopt.passes`` registers it), not in ``graphopt.ir.ops``: a saved graph
containing ``attention`` needs ``import graphopt.passes`` before ``graphopt.ir.load``.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import torch
import torch.nn.functional as F

from graphopt.ir.graph import Graph, Value
from graphopt.ir.registry import In, has_op, op
from graphopt.pass_api import graph_pass
from graphopt.rewrite import Match, RewriteRule

from ._util import rank_of, scalar_of
from .decompose import _c, _run

ATTN_ATTRS = {"is_causal": 0, "kv_num_heads": None, "q_num_heads": None, "qk_matmul_output_mode": 0,
              "scale": None, "softcap": 0.0, "softmax_precision": None}


def attention(Q, K, V, attn_mask=None, *, is_causal=0, kv_num_heads=None, q_num_heads=None,
              qk_matmul_output_mode=0, scale=None, softcap=0.0, softmax_precision=None):
    """softmax(Q K^T * scale + mask) V (ONNX Attention-23): 4-D (batch, heads, seq, head_dim) tensors, or 3-D
    (batch, seq, heads * head_dim) ones split by ``q_num_heads`` / ``kv_num_heads`` and merged back."""
    if Q.dim() == 3:
        if q_num_heads is None or kv_num_heads is None:
            raise NotImplementedError("attention: 3-D inputs need the q_num_heads and kv_num_heads attributes")
        b, sq = Q.shape[0], Q.shape[1]
        Q = Q.reshape(b, sq, q_num_heads, -1).transpose(1, 2)
        K = K.reshape(b, K.shape[1], kv_num_heads, -1).transpose(1, 2)
        V = V.reshape(b, V.shape[1], kv_num_heads, -1).transpose(1, 2)
        y = attention(Q, K, V, attn_mask, is_causal=is_causal, scale=scale, softcap=softcap)
        return y.transpose(1, 2).reshape(b, sq, -1)
    if Q.dim() != 4:
        raise NotImplementedError("attention: only 3-D or 4-D inputs are supported")
    if K.shape[1] != Q.shape[1]:
        rep = Q.shape[1] // K.shape[1]
        K = K.repeat_interleave(rep, dim=1)
        V = V.repeat_interleave(rep, dim=1)
    s = scale if scale is not None else 1.0 / math.sqrt(Q.shape[-1])
    # ONNX's order: softcap on the scaled scores, *then* the masks (a capped -inf would let masked keys back in);
    # a query whose keys are all masked gets zeros, not softmax's NaN
    if not softcap and not (is_causal and attn_mask is not None):
        y = F.scaled_dot_product_attention(Q, K, V, attn_mask=attn_mask, is_causal=bool(is_causal), scale=s)
        if attn_mask is not None:
            dead = (~attn_mask).all(-1) if attn_mask.dtype == torch.bool else torch.isneginf(attn_mask).all(-1)
            y = y.masked_fill(dead.unsqueeze(-1), 0.0)
        return y
    scores = torch.matmul(Q, K.transpose(-2, -1)) * s
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    if is_causal:
        keep = torch.ones(scores.shape[-2], scores.shape[-1], dtype=torch.bool, device=Q.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else \
            scores + attn_mask
    probs = torch.softmax(scores, -1).masked_fill(torch.isneginf(scores).all(-1, keepdim=True), 0.0)
    return torch.matmul(probs, V)


if not has_op("attention"):
    op("attention", onnx="Attention", inputs=[In("Q"), In("K"), In("V"), In("attn_mask", optional=True)],
       attrs=ATTN_ATTRS, category="matmul", onnx_min_opset=23)(attention)


# ---------------------------------------------------------------------------------------------- fuse-attention
def _kt(op, k):
    return op.transpose(k)  # any perm: the check requires that it swaps the last two axes of some K


def _attention_pattern(scale: str, mask: bool):
    def pattern(op, q, k, v, s, m):
        scores = op.matmul(q, _kt(op, k))
        if scale == "mul":
            scores = op.mul(scores, s)
        elif scale == "div":
            scores = op.div(scores, s)
        if mask:
            scores = op.add(scores, m)
        return op.matmul(op.softmax(scores, axis=-1), v)

    return pattern


def _rules() -> list[RewriteRule]:
    rules = []
    for scale in ("mul", "div", "none"):
        for mask in (False, True):
            # The rewriter creates one pattern variable per parameter of the pattern function, so give each
            # variant exactly the variables it binds.
            params = ["q", "k", "v"] + (["s"] if scale != "none" else []) + (["m"] if mask else [])
            rules.append(RewriteRule(_with_params(_attention_pattern(scale, mask), params),
                                     _make_replacement(scale, mask), _check,
                                     name=f"attention-{scale}{'-mask' if mask else ''}"))
    return rules


def _with_params(pattern, params: list[str]):
    def p(op, *args):
        kw = dict(zip(params, args, strict=True))
        return pattern(op, kw["q"], kw["k"], kw["v"], kw.get("s"), kw.get("m"))

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    p.__signature__ = inspect.Signature([inspect.Parameter(n, kind) for n in ["op", *params]])  # type: ignore
    return p


def _k_perm(match: Match) -> list[int] | None:
    """The permutation taking the matched transpose's input to K (so that the transpose is K^T), or None."""
    t = match.node_for("transpose")
    perm = t.attrs.get("perm")
    if perm is None or len(perm) != 4:
        return None
    p = list(perm)
    p[2], p[3] = p[3], p[2]
    return p if p[0] == 0 else None


def _check(match: Match, q: Value, k: Value, v: Value, s: Value | None = None, m: Value | None = None) -> bool:
    if any(rank_of(x) != 4 for x in (q, k, v)) or _k_perm(match) is None:
        return False
    if not all(x.type is not None and x.type.dtype.is_float for x in (q, k, v)):
        return False
    if s is not None and (scalar_of(s) is None or scalar_of(s) == 0):
        return False
    if m is not None:
        if m.type is None or m.type.shape is None or len(m.type.shape) > 4 or not m.type.dtype.is_float:
            return False
    return True


def _make_replacement(scale: str, mask: bool):
    def repl(op, q, k, v, match: Match, s=None, m=None):
        sc = 1.0 if s is None else float(scalar_of(s))
        if scale == "div":
            sc = 1.0 / sc
        p = _k_perm(match)
        kk = k if p == [0, 1, 2, 3] else op.transpose(k, perm=p)
        args = [q, kk, v] + ([m] if mask else [])
        return op.attention(*args, scale=sc)

    return repl


ATTENTION_RULES = _rules()


@graph_pass("fuse-attention", "Fuse MatMul(Q, K^T) * scale (+ mask) -> Softmax -> MatMul(V) into one attention op "
                              "(ONNX Attention, opset 23)")
def fuse_attention(graph: Graph) -> dict[str, int]:
    from graphopt.rewrite import apply_rules

    return apply_rules(graph, ATTENTION_RULES)


@graph_pass("decompose-attention", "attention -> MatMul/Transpose/Mul(/Add)/Softmax/MatMul",
            requires=("static_shapes",))
def decompose_attention(graph: Graph) -> dict[str, int]:
    def build(b, node):
        q, k, v = node.inputs[:3]
        mask = node.inputs[3] if len(node.inputs) > 3 else None
        a = node.attrs
        if a.get("softcap") or a.get("qk_matmul_output_mode"):
            return None
        qs, ks = [int(d) for d in q.type.shape], [int(d) for d in k.type.shape]
        if ks[1] != qs[1]:
            rep = qs[1] // ks[1]
            idx = b.const(np.repeat(np.arange(ks[1]), rep).astype(np.int64), name=f"{b.hint}_heads")
            k, v = b.gather(k, idx, axis=1), b.gather(v, idx, axis=1)
        scale = a.get("scale")
        scale = 1.0 / math.sqrt(qs[-1]) if scale is None else float(scale)
        scores = b.mul(b.matmul(q, b.transpose(k, perm=[0, 1, 3, 2])), _c(b, scale, q, "scale"))
        if a.get("is_causal"):
            causal = np.triu(np.full((qs[2], ks[2]), -np.inf), 1)
            scores = b.add(scores, _c(b, causal, q, "causal"))
        if mask is not None:
            if mask.type is not None and mask.type.dtype.value == "bool":
                scores = b.where(mask, scores, _c(b, -np.inf, q, "neginf"))
            else:
                scores = b.add(scores, mask)
        return b.matmul(b.softmax(scores, axis=-1), v)

    return {"attention": _run(graph, "attention", build, "decompose-attention")}
