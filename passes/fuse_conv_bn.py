"""Inference fusions: fold BatchNorm into the preceding Conv/Gemm (weights rewritten, node removed).

Only valid for inference: the fused graph no longer has batch statistics, so never run these before training.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.pass_api import graph_pass
from graphopt.rewrite import Match, RewriteRule


def _bn_consts(scale, bias, mean, var, match: Match):
    vals = [scale, bias, mean, var]
    if not all(v.const is not None for v in vals):
        return None
    eps = float(match.node_for("batch_norm").attrs.get("epsilon", 1e-5))
    s, b, m, v = (x.const.astype(np.float64) for x in vals)
    k = s / np.sqrt(v + eps)
    return k, b - m * k


def _conv_bn(op, x, w, scale, bias, mean, var):
    return op.batch_norm(op.conv(x, w), scale, bias, mean, var)


def _conv_b_bn(op, x, w, b, scale, bias, mean, var):
    return op.batch_norm(op.conv(x, w, b), scale, bias, mean, var)


def _check_conv(match, w, scale, bias, mean, var, b=None, **_):
    return w.const is not None and (b is None or b.const is not None) and all(
        v.const is not None for v in (scale, bias, mean, var))


def _fused_conv(op, x, w, scale, bias, mean, var, match, b=None):
    k, shift = _bn_consts(scale, bias, mean, var, match)
    conv = match.node_for("conv")
    wf = (w.const.astype(np.float64) * k.reshape(-1, *([1] * (w.const.ndim - 1)))).astype(w.const.dtype)
    b0 = b.const.astype(np.float64) if b is not None else 0.0
    bf = (b0 * k + shift).astype(w.const.dtype)
    return op.conv(x, op.const(wf, "param", f"{conv.name}.weight_fused"),
                   op.const(bf, "param", f"{conv.name}.bias_fused"), _name=conv.name, **conv.attrs)


def _fused_conv_b(op, x, w, b, scale, bias, mean, var, match):
    return _fused_conv(op, x, w, scale, bias, mean, var, match, b=b)


CONV_BN = RewriteRule(_conv_bn, _fused_conv, _check_conv, name="conv-bn")
CONV_B_BN = RewriteRule(_conv_b_bn, _fused_conv_b, _check_conv, name="conv-bias-bn")


def _gemm_bn(op, x, w, c, scale, bias, mean, var):
    return op.batch_norm(op.gemm(x, w, c), scale, bias, mean, var)


def _check_gemm(match, w, c, scale, bias, mean, var):
    g = match.node_for("gemm")
    return w.const is not None and c.const is not None and not g.attrs.get("transA") and float(
        g.attrs.get("alpha", 1.0)) == 1.0 and float(g.attrs.get("beta", 1.0)) == 1.0 and all(
        v.const is not None for v in (scale, bias, mean, var))


def _fused_gemm(op, x, w, c, scale, bias, mean, var, match):
    k, shift = _bn_consts(scale, bias, mean, var, match)
    g = match.node_for("gemm")
    wc = w.const.astype(np.float64)
    wf = wc * k.reshape(-1, 1) if g.attrs.get("transB") else wc * k.reshape(1, -1)
    cf = np.broadcast_to(c.const.astype(np.float64), k.shape) * k + shift
    return op.gemm(x, op.const(wf.astype(w.const.dtype), "param", f"{g.name}.weight_fused"),
                   op.const(cf.astype(w.const.dtype), "param", f"{g.name}.bias_fused"), _name=g.name, **g.attrs)


GEMM_BN = RewriteRule(_gemm_bn, _fused_gemm, _check_gemm, name="gemm-bn")


@graph_pass("fuse-conv-bn", "Fold inference BatchNorm into the preceding Conv or Gemm weights")
def fuse_conv_bn(graph: Graph) -> dict[str, int]:
    out = {r.name: r.apply(graph) for r in (CONV_B_BN, CONV_BN, GEMM_BN)}
    graph.remove_unused_constants()
    return out
