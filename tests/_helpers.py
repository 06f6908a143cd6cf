"""Helpers shared by several test modules (imported as ``from _helpers import ...``; pytest puts tests/ on the path)."""

from __future__ import annotations

import numpy as np
import torch

from graphopt.ir.graph import Graph
from graphopt.ir.registry import get_op


def run_ir(g: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Reference execution of the IR: every node's registry implementation on CPU tensors, in order."""
    env: dict[int, object] = {id(v): torch.from_numpy(np.array(feeds[v.name])) for v in g.inputs}
    env.update({id(v): torch.from_numpy(np.array(v.const)) for v in g.constants.values()})
    for n in g.nodes:
        od = get_op(n.op)
        args = []
        for i, v in enumerate(n.inputs):
            if v is None:
                args.append(None)
            elif od.input_spec(i).static and v.is_const:
                args.append(np.asarray(v.const).tolist())
            else:
                args.append(env[id(v)])
        with torch.no_grad():
            res = od.fn(*args, **n.attrs)
        for o, t in zip(n.outputs, res if isinstance(res, tuple | list) else [res], strict=True):
            env[id(o)] = t
    return [np.asarray(env[id(v)]) for v in g.outputs]  # type: ignore[arg-type]


class TinyCNN(torch.nn.Module):
    """conv-bn-relu-mean-linear, 3x(H, W) -> 10 logits: the smallest model with weights, BN and a head (too small
    for any segment mutant to fit a 1.1x FLOPs window; small enough to quantize in a second)."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.c, self.b, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.b(self.c(x))).mean((2, 3)))
