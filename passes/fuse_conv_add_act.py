"""Conv + Add + activation fusion, for targets that have such a fused op.

Standard ONNX has no fused convolution, so this is opt-in: a target profile sets ``fuse_conv_add_act = true`` and
the legalizer runs ``fuse-conv-add-act``. The fused node is the IR op ``fused_conv`` with onnxruntime's contrib
semantics, ``Y = activation(Conv(X, W, B) + Z)`` (``Z``, the residual, optional), and is exported as
``com.microsoft::FusedConv`` -- the op onnxruntime's CPU provider itself fuses to at load time, and the usual
"conv with fused residual and activation" unit of NPU compilers. Supported activations: Relu, Clip (min/max),
Sigmoid, Tanh, LeakyRelu (alpha), HardSigmoid (alpha, beta).

The default fp32 export does not fuse: the file must stay standard ONNX (onnxruntime fuses it anyway).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from graphopt.ir.graph import Graph, Node
from graphopt.ir.ops._rt import _ints, _spatial_pads, _torch_pad
from graphopt.ir.ops.nn import CONV_ATTRS
from graphopt.ir.registry import In, has_op, op, set_onnx_export
from graphopt.pass_api import graph_pass

from ._util import is_graph_output, scalar_of


def fused_conv(X, W, B=None, Z=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
               strides=None, activation="", activation_params=None):
    """activation(conv(X, W, B) + Z), onnxruntime ``com.microsoft::FusedConv`` semantics."""
    nd = X.dim() - 2
    k = list(W.shape[2:])
    s, d = _ints(strides, nd, 1), _ints(dilations, nd, 1)
    p = _spatial_pads(X, k, s, d, pads, auto_pad)
    if p[:nd] == p[nd:]:
        y = getattr(F, f"conv{nd}d")(X, W, B, s, p[:nd], d, group)
    else:
        y = getattr(F, f"conv{nd}d")(F.pad(X, _torch_pad(p)), W, B, s, 0, d, group)
    if Z is not None:
        y = y + Z
    ap = list(activation_params or [])
    if activation == "Relu":
        return torch.relu(y)
    if activation == "Clip":
        return torch.clamp(y, ap[0], ap[1])
    if activation == "Sigmoid":
        return torch.sigmoid(y)
    if activation == "Tanh":
        return torch.tanh(y)
    if activation == "LeakyRelu":
        return F.leaky_relu(y, ap[0] if ap else 0.01)
    if activation == "HardSigmoid":
        return torch.clamp(y * (ap[0] if ap else 0.2) + (ap[1] if len(ap) > 1 else 0.5), 0.0, 1.0)
    return y


def _emit_fused_conv(em, node: Node) -> None:
    attrs = {k: v for k, v in node.attrs.items() if v is not None and k != "activation_params"}
    if node.attrs.get("activation_params"):
        attrs["activation_params"] = [float(x) for x in node.attrs["activation_params"]]
    if attrs.get("auto_pad") == "NOTSET":
        attrs.pop("auto_pad")
    em.node("FusedConv", em.inputs(node), em.outputs(node), name=node.name, domain="com.microsoft", **attrs)


if not has_op("fused_conv"):
    op("fused_conv", onnx=None, inputs=[In("X"), In("W"), In("B", optional=True), In("Z", optional=True)],
       attrs={**CONV_ATTRS, "activation": "", "activation_params": None}, category="conv",
       weight_inputs=(1, 2))(fused_conv)
    set_onnx_export("fused_conv", _emit_fused_conv)


def _activation(n: Node) -> tuple[str, list[float]] | None:
    if n.op == "relu":
        return "Relu", []
    if n.op == "sigmoid":
        return "Sigmoid", []
    if n.op == "tanh":
        return "Tanh", []
    if n.op == "leaky_relu":
        return "LeakyRelu", [float(n.attrs.get("alpha", 0.01))]
    if n.op == "hard_sigmoid":
        return "HardSigmoid", [float(n.attrs.get("alpha", 0.2)), float(n.attrs.get("beta", 0.5))]
    if n.op == "clip":
        lo = scalar_of(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] is not None else None
        hi = scalar_of(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] is not None else None
        if lo is None or hi is None:
            return None
        return "Clip", [lo, hi]
    return None


def _single_use(graph: Graph, v) -> Node | None:
    if is_graph_output(graph, v) or len(v.uses) != 1:
        return None
    return v.uses[0].node


@graph_pass("fuse-conv-add-act", "Conv (+ residual Add) (+ activation) -> fused_conv (com.microsoft::FusedConv), "
                                 "for targets that declare fuse_conv_add_act")
def fuse_conv_add_act(graph: Graph) -> dict[str, int]:
    """Fuses only when the conv output feeds just the Add/activation (nothing else reads the intermediate), the
    residual has the conv output's exact shape, and there is at least one of Add/activation to absorb."""
    count = {"conv-add-act": 0, "conv-act": 0, "conv-add": 0}
    for conv in graph.nodes_by_op().get("conv", []):
        if conv.graph is not graph:
            continue
        y = conv.outputs[0]
        nxt = _single_use(graph, y)
        z = add = act = None
        if nxt is not None and nxt.op == "add" and len(nxt.inputs) == 2:
            other = nxt.inputs[1] if nxt.inputs[0] is y else nxt.inputs[0]
            if other is not y and other is not None and other.type is not None and other.type == y.type:
                z, add = other, nxt
                nxt = _single_use(graph, add.outputs[0])
        if nxt is not None and _activation(nxt) is not None:
            act = nxt
        if add is None and act is None:
            continue
        kind, params = _activation(act) if act is not None else ("", [])
        last = act or add
        assert last is not None
        b = conv.inputs[2] if len(conv.inputs) > 2 else None
        with graph.inserting_before(last):
            fused = graph.create_node("fused_conv", [conv.inputs[0], conv.inputs[1], b, z],
                                      {**conv.attrs, "activation": kind, "activation_params": params or None},
                                      name=conv.name)
        graph.replace_all_uses(last.outputs[0], fused.outputs[0])
        for n in (act, add, conv):
            if n is not None and n.graph is graph and not any(o.uses for o in n.outputs):
                graph.erase_node(n)
        count["conv-add-act" if add is not None and act is not None else "conv-act" if act is not None
              else "conv-add"] += 1
    return count
