"""``decompose-col2im``: ``col2im`` of non-overlapping blocks -> Reshape, Transpose, Reshape (opsets before 18 have no
Col2Im).

Folding blocks that tile the image only moves elements (Hugging Face MobileViTV2's patch folding, for targets whose
opset stops at 17). Overlapping or dilated blocks, which sum, are left alone.
"""

from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.pass_api import graph_pass

from ._decompose_util import _run


@graph_pass("decompose-col2im", "col2im of non-overlapping blocks (strides = block, no dilation or pads) -> "
                                "Reshape, Transpose, Reshape (opsets before 18 have no Col2Im)")
def decompose_col2im(graph: Graph) -> dict[str, int]:
    """Folding blocks that tile the image only moves elements: ``[N, C*kh*kw, Hb*Wb]`` -> ``[N, C, kh, kw, Hb, Wb]``
    -> ``[N, C, Hb, kh, Wb, kw]`` -> ``[N, C, H, W]`` (Hugging Face MobileViTV2's patch folding, for targets whose
    opset stops at 17). Overlapping or dilated blocks, which sum, are left alone."""

    def ints(v, n: int, default: int) -> list[int]:  # noqa: ANN001
        return [int(x) for x in v] if v is not None else [default] * n

    def build(b, node):
        x, img, blk = node.inputs[0], node.inputs[1], node.inputs[2]
        if img is None or blk is None or not (img.is_const and blk.is_const) or x.type is None \
                or x.type.shape is None or len(x.type.shape) != 3:
            return None
        size = [int(v) for v in np.asarray(img.const).reshape(-1)]
        k = [int(v) for v in np.asarray(blk.const).reshape(-1)]
        if len(size) != 2 or len(k) != 2 or ints(node.attrs.get("strides"), 2, 1) != k \
                or ints(node.attrs.get("dilations"), 2, 1) != [1, 1] or any(ints(node.attrs.get("pads"), 4, 0)) \
                or size[0] % k[0] or size[1] % k[1]:
            return None
        hb, wb = size[0] // k[0], size[1] // k[1]
        _, ck, cols = x.type.shape
        if not isinstance(ck, int) or ck % (k[0] * k[1]) or not isinstance(cols, int) or cols != hb * wb:
            return None
        c = ck // (k[0] * k[1])
        blocks = b.reshape(x, b.const(np.asarray([0, c, k[0], k[1], hb, wb], np.int64), name=f"{b.hint}_blocks"))
        tiled = b.transpose(blocks, perm=[0, 1, 4, 2, 5, 3])
        return b.reshape(tiled, b.const(np.asarray([0, c, size[0], size[1]], np.int64), name=f"{b.hint}_image"))

    return {"col2im": _run(graph, "col2im", build, "decompose-col2im")}
