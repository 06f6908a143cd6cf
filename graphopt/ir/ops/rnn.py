"""ONNX recurrent ops: LSTM, GRU, RNN (``torch.onnx`` writes them for ``nn.LSTM``/``nn.GRU``/``nn.RNN``, and so
do tf2onnx and most speech/time-series exporters).

Why ops and not a decomposition into MatMul/Sigmoid/...: the time loop has a dynamic trip count (the sequence
length is usually symbolic), which our acyclic IR cannot unroll; one node per recurrent layer also keeps the
ONNX round trip exact. The implementations follow the ONNX operator spec equation by equation (gate orders
``iofc`` for LSTM, ``zrh`` for GRU; ``clip``, ``input_forget``, peepholes, ``linear_before_reset``, the named
activations with their alpha/beta, both layouts, all three directions, and ``sequence_lens``: a shorter sequence
stops updating its state and gets zeros in ``Y`` past its length, and ``reverse`` runs each sequence backwards
from its own last valid step). Shapes come from ``infer`` rules: running the loop on meta tensors would take a
step per unit of the symbolic length's sentinel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: F401 - the emitted module imports it for every op

from ..registry import In, op

_RNN_ATTRS = {"activation_alpha": None, "activation_beta": None, "activations": None, "clip": None,
              "direction": "forward", "hidden_size": None, "layout": 0}


def _rnn_act(name, alpha, beta):
    """The ONNX activation ``name`` (alpha/beta where it takes them, else None for the defaults)."""
    n = name.lower()
    a = alpha
    b = beta
    if n == "sigmoid":
        return torch.sigmoid
    if n == "tanh":
        return torch.tanh
    if n == "relu":
        return torch.relu
    if n == "hardsigmoid":
        return lambda x: torch.clamp(x * (0.2 if a is None else a) + (0.5 if b is None else b), 0.0, 1.0)
    if n == "leakyrelu":
        return lambda x: torch.where(x >= 0, x, x * (0.01 if a is None else a))
    if n == "thresholdedrelu":
        return lambda x: torch.where(x > (1.0 if a is None else a), x, torch.zeros_like(x))
    if n == "scaledtanh":
        return lambda x: (1.0 if a is None else a) * torch.tanh(x * (1.0 if b is None else b))
    if n == "affine":
        return lambda x: x * (1.0 if a is None else a) + (0.0 if b is None else b)
    if n == "elu":
        return lambda x: torch.where(x >= 0, x, (1.0 if a is None else a) * (torch.exp(x) - 1))
    if n == "softsign":
        return lambda x: x / (1 + torch.abs(x))
    if n == "softplus":
        return lambda x: torch.log(1 + torch.exp(x))
    raise NotImplementedError(f"recurrent activation {name!r} is not supported")


def _rnn_acts(activations, alphas, betas, defaults, n_dirs):
    """Per direction, the list of activation functions (ONNX lists them direction after direction)."""
    names = list(activations) if activations else list(defaults) * n_dirs
    if len(names) == len(defaults):
        names = names * n_dirs
    takes = {"hardsigmoid", "leakyrelu", "thresholdedrelu", "scaledtanh", "affine", "elu"}
    two = {"hardsigmoid", "scaledtanh", "affine"}
    al, be = list(alphas or []), list(betas or [])
    fns = []
    for nm in names:
        low = nm.lower()
        a = al.pop(0) if low in takes and al else None
        b = be.pop(0) if low in two and be else None
        fns.append(_rnn_act(nm, a, b))
    k = len(defaults)
    return [fns[d * k:(d + 1) * k] for d in range(n_dirs)]


def _rnn_scan(x, lens, reverse, step, state):
    """Run ``step(x_t, state) -> (h_t, state)`` over ``x`` [T, B, I]; returns (Y [T, B, H], final state).

    With ``lens`` [B], sample b only sees steps ``t < lens[b]`` (reversed within them when ``reverse``): its
    state stops changing after them and its ``Y`` rows there are zero."""
    steps = x.shape[0]
    if lens is None:
        ys = [None] * steps
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            h, state = step(x[t], state)
            ys[t] = h
        return torch.stack(ys), state
    lens = lens.to(torch.int64).to(x.device)
    tt = torch.arange(steps, device=x.device).unsqueeze(1)
    valid = tt < lens.unsqueeze(0)
    idx = torch.where(valid, lens.unsqueeze(0) - 1 - tt, tt) if reverse else None
    if idx is not None:
        x = torch.gather(x, 0, idx.unsqueeze(-1).expand(x.shape))
    ys = []
    for t in range(steps):
        h, new = step(x[t], state)
        keep = valid[t].unsqueeze(-1)
        state = tuple(torch.where(keep, n, o) for n, o in zip(new, state, strict=True))
        ys.append(torch.where(keep, h, torch.zeros_like(h)))
    y = torch.stack(ys)
    if idx is not None:
        y = torch.zeros_like(y).scatter(0, idx.unsqueeze(-1).expand(y.shape), y)
    return y, state


def _rnn_layer(x, W, R, B, lens, h0, c0, P, direction, layout, gates, cell):
    """Shared driver: per direction, slice the weights, build the initial state, scan, stack the outputs."""
    if layout:
        x = x.transpose(0, 1)
        h0 = None if h0 is None else h0.transpose(0, 1)
        c0 = None if c0 is None else c0.transpose(0, 1)
    hidden = R.shape[-1]
    batch = x.shape[1]
    dirs = [False, True] if direction == "bidirectional" else [direction == "reverse"]
    ys, hs, cs = [], [], []
    for d, rev in enumerate(dirs):
        w, r = W[d], R[d]
        b = B[d] if B is not None else torch.zeros(2 * gates * hidden, dtype=x.dtype, device=x.device)
        h = h0[d] if h0 is not None else torch.zeros(batch, hidden, dtype=x.dtype, device=x.device)
        c = c0[d] if c0 is not None else torch.zeros(batch, hidden, dtype=x.dtype, device=x.device)
        p = P[d] if P is not None else None
        xw = torch.matmul(x, w.t()) + b[:gates * hidden]  # the input projection of every step at once
        y, st = _rnn_scan(xw, lens, rev, cell(d, r, b[gates * hidden:], p), (h, c))
        ys.append(y)
        hs.append(st[0])
        cs.append(st[1])
    y = torch.stack(ys, 1)  # [T, D, B, H]
    yh, yc = torch.stack(hs), torch.stack(cs)  # [D, B, H]
    if layout:
        return y.permute(2, 0, 1, 3), yh.transpose(0, 1), yc.transpose(0, 1)
    return y, yh, yc


def _rnn_types(node, gates):  # noqa: ANN001, ANN202 - Node -> list[TensorType]
    from ..types import TensorType

    x, w = node.inputs[0].type, node.inputs[1].type
    d = 2 if node.attrs.get("direction", "forward") == "bidirectional" else 1
    hidden = node.attrs.get("hidden_size")
    if hidden is None and w is not None and w.shape is not None and isinstance(w.shape[1], int):
        hidden = w.shape[1] // gates
    if x is None or x.shape is None or len(x.shape) != 3 or hidden is None:
        return [TensorType(x.dtype if x is not None else "float32", None) for _ in node.outputs]
    layout = node.attrs.get("layout", 0)
    t, b = (x.shape[1], x.shape[0]) if layout else (x.shape[0], x.shape[1])
    y = (b, t, d, hidden) if layout else (t, d, b, hidden)
    state = (b, d, hidden) if layout else (d, b, hidden)
    return [TensorType(x.dtype, y)] + [TensorType(x.dtype, state) for _ in node.outputs[1:]]


def _rnn_flops(gates, elementwise):
    def flops(node):  # noqa: ANN001, ANN202
        x, y = node.inputs[0].type, node.outputs[0].type
        if x is None or y is None or x.shape is None or y.shape is None:
            return None
        dims = list(y.shape) + [x.shape[-1]]
        if not all(isinstance(v, int) for v in dims):
            return None
        hidden, inp = y.shape[-1], x.shape[-1]
        steps = y.shape[0] * y.shape[1] * y.shape[2]  # (time, direction, batch) in either layout
        return steps * (2 * gates * hidden * (inp + hidden) + elementwise * hidden)

    return flops


_SEQ_INPUTS = [In("X"), In("W"), In("R"), In("B", optional=True), In("sequence_lens", optional=True),
               In("initial_h", optional=True)]


@op("lstm", onnx="LSTM", inputs=[*_SEQ_INPUTS, In("initial_c", optional=True), In("P", optional=True)],
    attrs={**_RNN_ATTRS, "input_forget": 0}, outputs=3, category="matmul", weight_inputs=(1, 2, 3, 7),
    flops=_rnn_flops(4, 10), infer=lambda node: _rnn_types(node, 4), onnx_min_opset=7)
def lstm(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, *, activation_alpha=None,
         activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None, input_forget=0,
         layout=0):
    """ONNX LSTM: gates i, o, f, c; returns (Y, Y_h, Y_c)."""
    n_dirs = 2 if direction == "bidirectional" else 1
    acts = _rnn_acts(activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh", "Tanh"], n_dirs)

    def cell(d, r, rb, p):
        f, g, h_act = acts[d]

        def step(xw_t, state):
            h, c = state
            z = xw_t + torch.matmul(h, r.t()) + rb
            zi, zo, zf, zc = z.chunk(4, -1)
            if p is not None:
                pi, po, pf = p.chunk(3)
                zi, zf = zi + pi * c, zf + pf * c
            # clip bounds "the input of activations" (the spec): after the peephole terms, as onnxruntime does
            cl = (lambda v: torch.clamp(v, -clip, clip)) if clip is not None else (lambda v: v)
            i = f(cl(zi))
            fg = 1 - i if input_forget else f(cl(zf))
            c_new = fg * c + i * g(cl(zc))
            if p is not None:
                zo = zo + po * c_new
            h_new = f(cl(zo)) * h_act(c_new)
            return h_new, (h_new, c_new)

        return step

    return _rnn_layer(X, W, R, B, sequence_lens, initial_h, initial_c, P, direction, layout, 4, cell)


@op("gru", onnx="GRU", inputs=_SEQ_INPUTS, attrs={**_RNN_ATTRS, "linear_before_reset": 0}, outputs=2,
    category="matmul", weight_inputs=(1, 2, 3), flops=_rnn_flops(3, 8), infer=lambda node: _rnn_types(node, 3),
    onnx_min_opset=7)
def gru(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
        activations=None, clip=None, direction="forward", hidden_size=None, layout=0, linear_before_reset=0):
    """ONNX GRU: gates z, r, h; returns (Y, Y_h)."""
    n_dirs = 2 if direction == "bidirectional" else 1
    acts = _rnn_acts(activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh"], n_dirs)

    def cell(d, r, rb, p):
        f, g = acts[d]
        rz, rr, rh = r.chunk(3, 0)
        bz, br, bh = rb.chunk(3)

        def step(xw_t, state):
            h = state[0]
            xz, xr, xh = xw_t.chunk(3, -1)
            zz, zr = xz + torch.matmul(h, rz.t()) + bz, xr + torch.matmul(h, rr.t()) + br
            if clip is not None:
                zz, zr = torch.clamp(zz, -clip, clip), torch.clamp(zr, -clip, clip)
            z, rg = f(zz), f(zr)
            if linear_before_reset:
                zh = xh + rg * (torch.matmul(h, rh.t()) + bh)
            else:
                zh = xh + torch.matmul(rg * h, rh.t()) + bh
            if clip is not None:
                zh = torch.clamp(zh, -clip, clip)
            h_new = (1 - z) * g(zh) + z * h
            return h_new, (h_new, state[1])

        return step

    y, yh, _ = _rnn_layer(X, W, R, B, sequence_lens, initial_h, None, None, direction, layout, 3, cell)
    return y, yh


@op("rnn", onnx="RNN", inputs=_SEQ_INPUTS, attrs=dict(_RNN_ATTRS), outputs=2, category="matmul",
    weight_inputs=(1, 2, 3), flops=_rnn_flops(1, 2), infer=lambda node: _rnn_types(node, 1), onnx_min_opset=7)
def rnn(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
        activations=None, clip=None, direction="forward", hidden_size=None, layout=0):
    """ONNX RNN (Elman): ``H_t = f(X_t·Wᵀ + H_{t−1}·Rᵀ + Wb + Rb)``, tanh by default; returns (Y, Y_h)."""
    n_dirs = 2 if direction == "bidirectional" else 1
    acts = _rnn_acts(activations, activation_alpha, activation_beta, ["Tanh"], n_dirs)

    def cell(d, r, rb, p):
        f = acts[d][0]

        def step(xw_t, state):
            z = xw_t + torch.matmul(state[0], r.t()) + rb
            if clip is not None:
                z = torch.clamp(z, -clip, clip)
            h_new = f(z)
            return h_new, (h_new, state[1])

        return step

    y, yh, _ = _rnn_layer(X, W, R, B, sequence_lens, initial_h, None, None, direction, layout, 1, cell)
    return y, yh
