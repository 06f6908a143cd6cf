"""The ``attention`` op (scaled dot-product attention as one node), used by ``fuse-attention`` and
``decompose-attention``.

It follows ONNX ``Attention`` (opset 23) for 4-D ``(batch, heads, seq, head_dim)`` inputs: ``softmax(Q K^T * scale +
mask) V`` with ``scale`` defaulting to ``1/sqrt(head_dim)``, an optional additive (float) or keep (bool) mask,
``is_causal``, ``softcap`` and grouped-query heads (K/V with fewer heads than Q); 3-D inputs (heads packed into the
hidden dim, split by ``q_num_heads``/``kv_num_heads``) too. Not supported: the KV-cache inputs/outputs
(``past_key``/``present_key``...) and the ``qk_matmul_output`` output.

The op is registered here (importing ``graphopt.passes`` registers it), not in ``graphopt.ir.ops``: a saved graph
containing ``attention`` needs ``import graphopt.passes`` before ``graphopt.ir.load``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from graphopt.ir.registry import In, has_op, op

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
