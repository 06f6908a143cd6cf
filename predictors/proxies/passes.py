"""Zero-cost proxies on IR graphs, and the annotation passes ``proxy-<name>`` built on them.

Why a dedicated module view of the graph: the proxies of this package find "layers" by module type
(``Conv*d``/``Linear`` for the weight-based proxies, ``*ReLU*`` modules for NASWOT, ``_BatchNorm`` for SynFlow's
BN bypass and Zen's BN term, a global ``AdaptiveAvgPool`` for Zen's features), and attach per-layer values to
module/parameter names. The module that :func:`graphopt.backends.torch.to_torch` emits is functional — one
line per IR node calling the op's registry function, parameters on plain container modules — so those hooks see
nothing. :class:`GraphProxyNet` runs the *same* registry functions with the *same* arguments as the emitted
module (static operands as Python lists, ``training=self.training`` for batch norm and dropout), but wraps the
nodes the proxies care about in modules of the matching torch type, each named after its IR node:

* ``conv`` with a constant weight → a ``Conv1d/2d/3d`` subclass (``weight``, ``bias``);
* ``gemm`` / ``matmul`` with a constant 2-D weight → an ``nn.Linear`` subclass holding it in ``nn.Linear``'s
  ``(out, in)`` layout: a ``gemm(transB=1)`` weight as is; ``matmul(x, transpose(W))`` (how ``nn.Linear`` on a
  3-D input is lowered) holds ``W`` itself and the transpose node is absorbed; a plain ``(in, out)`` weight is
  stored transposed unless it is shared (then the node stays generic). A following ``add`` of a 1-D bias
  parameter is absorbed as the layer's ``bias``, so the layer's output — which fisher hooks — includes it, as
  in ``nn.Linear``;
* ``batch_norm`` → a ``_BatchNorm`` subclass (``weight``, ``bias``, ``running_mean``, ``running_var``);
* ``relu`` / ``leaky_relu`` → ``nn.ReLU`` / ``nn.LeakyReLU`` subclasses; ``global_avg_pool`` → an
  ``AdaptiveAvgPool`` subclass with output size 1; ``gelu``/``silu``/... → :class:`IRSmoothRectifier` (NASWOT's
  codes in models without ReLU); an exporter's decomposed GELU/SiLU/Mish (``x*Sigmoid(x)``, the erf or tanh GELU
  formula) gets an extra :class:`IRSmoothRectifier` that only receives the activation's input;
* any other node with parameter/buffer inputs → a generic module holding them; remaining nodes run inline.

Graph constants of kind ``param`` become ``nn.Parameter``s (shared objects when a weight is used twice),
``buffer`` constants buffers, and literals (kind ``const``: reshape targets, scalars) plain tensors that are
neither converted by ``.double()`` nor made absolute by SynFlow — as in the original PyTorch model, where they
are Python literals. The test suite checks that the forward equals the emitted module's in train and eval mode,
and that every proxy equals the one computed on the original ``nn.Module`` the graph was lowered from.

Annotation: ``graph.meta["proxy.<name>"]`` holds the graph-level score; for additive proxies (the layerwise
sums synflow, snip, grasp, fisher, grad_norm, and also params, flops and Zen's per-BN terms) every contributing
node gets ``node.meta["proxy.<name>"]`` (its layers' values summed), and a part that belongs to no node (Zen's
expressivity term) goes to ``graph.meta["proxy.<name>.unattributed"]``. The passes never change the graph.

Inputs (:func:`proxy_batch`): a single-input image model gets a seeded minibatch of a dataset of
:func:`graphopt.eval.data.load_dataset` (default the bundled ``cifar10-demo``; ``cifar10``, a sequence task or a
user path also work): the training-split samples ``sort(default_rng(seed).choice(n, batch, replace=False))``,
prepared by :func:`graphopt.eval.data.prepare_batch` (normalised with the dataset's statistics, no augmentation) and
resized bilinearly when the model's static spatial size differs. Without ``data``, a model whose input is not a
3-channel float image gets seeded random inputs of its input shape (``torch.Generator().manual_seed(seed)``;
``randn`` for floats, ``randint`` below the smallest embedding table the input indexes for integers) and no labels,
so proxies that need labels (grad_norm, snip, grasp, fisher) raise a :class:`ProxyInputError` that says to pass
``data``. The default loss (:func:`sequence_aware_ce`) is cross-entropy for class, per-pixel and per-token
(channel-last) logits.

Limits: one graph input; CPU tensors (literals are not moved by ``.to()``); a graph exported with a fixed batch
size runs only at that batch (synflow and flops run one sample, so they need a dynamic batch dimension).
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph, Node, Value
from graphopt.ir.registry import get_op
from graphopt.pass_api import graph_pass

from .core import ProxyResult, compute, names, spec
from .shared import compute_proxies

__all__ = [
    "DEFAULT_DATA",
    "PASS_NAMES",
    "GraphProxyNet",
    "ProxyBatch",
    "ProxyInputError",
    "annotate",
    "node_contributions",
    "proxy_batch",
    "register_passes",
    "score_graph",
    "sequence_aware_ce",
]

DEFAULT_DATA = "cifar10-demo"


class ProxyInputError(GraphoptError):
    """The model cannot be fed for this proxy (inputs, data or labels); the message says what to pass."""


# ---------------------------------------------------------------------------------------------------------
# The graph as a module whose nodes the proxies can see
# ---------------------------------------------------------------------------------------------------------

# slot kinds of a node's inputs: ("dyn", None) next positional tensor, ("attr", name) a tensor held by the node
# module, ("attr_t", name) that tensor passed transposed (.t()), ("lit", key) a literal tensor of the root,
# ("static", pyvalue) a Python value, ("none", None) an omitted optional input
Slot = tuple[str, Any]


def _call_slots(mod: nn.Module | None, root: GraphProxyNet, slots: Sequence[Slot], dyn: Sequence[Any]) -> list:
    args, it = [], iter(dyn)
    for kind, ref in slots:
        if kind == "dyn":
            args.append(next(it))
        elif kind == "attr":
            args.append(getattr(mod, ref))
        elif kind == "attr_t":
            args.append(getattr(mod, ref).t())
        elif kind == "lit":
            args.append(root._literals[ref])
        elif kind == "static":
            args.append(ref)
        else:
            args.append(None)
    return args


class _NodeModule:
    """Mixin: ``forward(*dynamic_inputs)`` calls the node's registry function with its held tensors."""

    def _setup(self, node_name: str, fn: Callable[..., Any], slots: list[Slot], kwargs: dict[str, Any],
               wants_training: bool) -> None:
        self.node_name = node_name
        self._fn = fn
        self._slots = slots
        self._kwargs = kwargs
        self._wants_training = wants_training
        self._root: list[GraphProxyNet] = []  # set by the root; a list so it is not registered as a submodule

    _bias_add: Callable[..., Any] | None = None

    def forward(self, *dyn: Any) -> Any:
        args = _call_slots(self, self._root[0], self._slots, dyn)  # type: ignore[arg-type]
        kw = dict(self._kwargs)
        if self._wants_training:
            kw["training"] = self.training  # type: ignore[attr-defined]
        out = self._fn(*args, **kw)
        return out if self._bias_add is None else self._bias_add(out, self.bias)  # type: ignore[attr-defined]

    def extra_repr(self) -> str:
        return f"node={self.node_name!r}, op={self._fn.__name__}"


def _blank_init(self: nn.Module) -> None:
    nn.Module.__init__(self)  # the torch layer classes' own __init__ would allocate weights we replace anyway


class IRConv1d(_NodeModule, nn.Conv1d):
    __init__ = _blank_init


class IRConv2d(_NodeModule, nn.Conv2d):
    __init__ = _blank_init


class IRConv3d(_NodeModule, nn.Conv3d):
    __init__ = _blank_init


class IRLinear(_NodeModule, nn.Linear):
    __init__ = _blank_init


class IRBatchNorm(_NodeModule, nn.modules.batchnorm._BatchNorm):
    __init__ = _blank_init


class IRReLU(_NodeModule, nn.ReLU):
    __init__ = _blank_init


class IRLeakyReLU(_NodeModule, nn.LeakyReLU):
    __init__ = _blank_init


class IRGlobalAvgPool(_NodeModule, nn.AdaptiveAvgPool2d):
    __init__ = _blank_init


class IRSmoothRectifier(_NodeModule, nn.Module):
    """gelu / silu / mish / hard_swish / elu / celu / selu: NASWOT's codes when a model has no ReLU."""

    __init__ = _blank_init


_SMOOTH_RECTIFIER_OPS = frozenset({"gelu", "silu", "mish", "hard_swish", "elu", "celu", "selu"})


def _activation_input(x: torch.Tensor) -> tuple:
    """A probe's forward: nothing to compute, its forward hooks read ``x``."""
    return ()


def _decomposed_rectifiers(graph: Graph) -> dict[int, tuple[str, Value]]:
    """``{id(root node): (activation, its input)}`` for GELU/SiLU/Mish written as primitives (x*Sigmoid(x), the
    erf or tanh GELU formula): torch.onnx writes them so, and NASWOT needs their input's sign."""
    from graphopt.passes._activation_patterns import decomposed_activations

    return {id(m.root): (act, m.bindings["x"]) for act, m in decomposed_activations(graph)}


class IRNode(_NodeModule, nn.Module):
    __init__ = _blank_init


def _py(v: Any) -> Any:
    """Attribute value as the emitted code passes it (arrays become tensors, NumPy scalars Python scalars)."""
    if isinstance(v, np.ndarray):
        return torch.from_numpy(np.array(v, order="C", copy=True))  # keeps 0-d arrays 0-d
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, list | tuple):
        return [_py(x) for x in v]
    return v


@dataclass
class _Step:
    module: str | None  # name under ``layers`` or None for an inline node
    fn: Callable[..., Any] | None
    slots: list[Slot]
    kwargs: dict[str, Any]
    wants_training: bool
    ins: list[int]  # env indices of the dynamic inputs
    outs: list[int]  # env indices of the outputs


class GraphProxyNet(nn.Module):
    """An IR graph as an ``nn.Module`` whose weighted/activation nodes are torch-typed submodules.

    Submodules live under ``layers.<node name>`` (non-identifier characters replaced by ``_``);
    :attr:`module_nodes` maps each submodule name back to its IR node name, so per-layer proxy values
    (keyed ``layers.<module>.weight`` etc.) can be attributed to nodes (:func:`node_contributions`).
    Holds no reference to the graph (proxies deep-copy the module).
    """

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        if any(n.op == "choice" for n in graph.nodes):
            raise ProxyInputError(f"graph {graph.name!r} is a supernet (has choice nodes); materialize a path "
                                  "before computing proxies")
        self.graph_name = graph.name
        self.layers = nn.Module()
        self.module_nodes: dict[str, str] = {}
        self.input_names = [v.name for v in graph.inputs]
        self._literals: dict[str, torch.Tensor] = {}
        self._steps: list[_Step] = []
        env: dict[int, int] = {}
        taken: set[str] = set()
        owners: dict[int, tuple[str, str]] = {}  # id(const Value) -> (module name, attr) that registered it

        def slot_of(v: Value) -> int:
            if id(v) not in env:
                env[id(v)] = len(env)
            return env[id(v)]

        for v in graph.inputs:
            slot_of(v)
        folded = _foldable_transposes(graph)
        skip: set[int] = set(folded)  # nodes absorbed into a Linear layer (transposes, bias adds)
        probes = _decomposed_rectifiers(graph)
        for node in graph.nodes:
            if id(node) in skip:
                continue
            act_x = probes.get(id(node))
            if act_x is not None and id(act_x[1]) in env:
                self._add_probe(node, *act_x, slot_of(act_x[1]), taken)
            self._add_node(node, slot_of, taken, owners, folded, skip)
        self._output_slots: list[tuple[str, Any]] = []
        for v in graph.outputs:
            if v.is_const:
                key = self._literal(v)
                self._output_slots.append(("lit", key))
            else:
                self._output_slots.append(("env", env[id(v)]))
        self._n_env = len(env)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - nn.Module's signature
        """``.double()``, ``.to(device)`` etc. also convert the float literals: a float32 literal (e.g. the zero
        initial state an LSTM lowers to) would otherwise meet float64 activations in a matmul under SynFlow."""
        super()._apply(fn, recurse)
        self._literals = {k: fn(t) if t.is_floating_point() else t for k, t in self._literals.items()}
        return self

    # -- construction ----------------------------------------------------------------------------------
    def _literal(self, v: Value) -> str:
        if v.name not in self._literals:
            self._literals[v.name] = torch.from_numpy(np.array(v.const, order="C", copy=True))
        return v.name

    def _add_node(self, node: Node, slot_of: Callable[[Value], int], taken: set[str],
                  owners: dict[int, tuple[str, str]], folded: dict[int, Value], skip: set[int]) -> None:
        opdef = get_op(node.op)
        fn = opdef.fn
        wants_training = "training" in inspect.signature(fn).parameters
        kwargs = {k: _py(a) for k, a in node.attrs.items()}
        # a weight reached through a folded ``transpose(W)`` is held as W itself and passed as W.t()
        via_t = {i for i, v in enumerate(node.inputs) if v is not None and v.producer is not None
                 and id(v.producer) in folded}
        eff = [folded[id(v.producer)] if i in via_t else v for i, v in enumerate(node.inputs)]  # type: ignore[union-attr]
        held = [i for i, v in enumerate(eff)
                if v is not None and v.is_const and not opdef.input_spec(i).static
                and v.kind in ("param", "buffer")]
        cls, attr_names, store_t = self._classify(node, eff, held, via_t)
        slots: list[Slot] = []
        ins: list[int] = []
        tensors: dict[str, Value] = {}
        for i, v in enumerate(eff):
            if v is None:
                slots.append(("none", None))
            elif v.is_const and opdef.input_spec(i).static:
                slots.append(("static", np.asarray(v.const).tolist()))
            elif i in attr_names:
                slots.append(("attr_t" if i in store_t or i in via_t else "attr", attr_names[i]))
                tensors[attr_names[i]] = v
            elif v.is_const:
                slots.append(("lit", self._literal(v)))
            else:
                slots.append(("dyn", None))
                ins.append(slot_of(v))
        bias_add = _bias_add_of(node) if cls is IRLinear and 2 not in attr_names else None
        if bias_add is not None:  # matmul + add(bias) is one Linear layer (its output includes the bias)
            add, bias = bias_add
            skip.add(id(add))
            tensors["bias"] = bias
        outs = [slot_of(o) for o in (node.outputs if bias_add is None else bias_add[0].outputs)]
        if cls is None:
            self._steps.append(_Step(None, fn, slots, kwargs, wants_training, ins, outs))
            return
        name = _module_name(node.name or node.op, taken)
        mod = cls()
        mod._setup(node.name, fn, slots, kwargs, wants_training)
        if bias_add is not None:
            mod._bias_add = get_op("add").fn
        mod._root.append(self)
        for attr, v in tensors.items():
            self._hold(mod, attr, v, transpose=attr in {attr_names[i] for i in store_t}, owners=owners,
                       where=(name, attr), buffer=attr in ("running_mean", "running_var"))
        self._describe(mod, node, tensors)
        self.layers.add_module(name, mod)
        self.module_nodes[name] = node.name
        self._steps.append(_Step(name, None, [], {}, False, ins, outs))

    def _add_probe(self, root: Node, act: str, x: Value, x_slot: int, taken: set[str]) -> None:
        """An exporter's decomposed GELU/SiLU/Mish has no node whose input is the activation's input alone: an
        IRSmoothRectifier that only receives that input, named after the pattern's root, shows it to NASWOT."""
        name = _module_name(f"{root.name or root.op}_{act}", taken)
        mod = IRSmoothRectifier()
        mod._setup(root.name, _activation_input, [("dyn", None)], {}, False)
        mod._root.append(self)
        self.layers.add_module(name, mod)
        self.module_nodes[name] = root.name
        self._steps.append(_Step(name, None, [], {}, False, [x_slot], []))

    def _classify(self, node: Node, eff: list[Value | None], held: list[int], via_t: set[int]
                  ) -> tuple[type | None, dict[int, str], set[int]]:
        """Module class, attribute name per held input slot, and which held weights are stored transposed."""
        op = node.op
        if op == "conv" and 1 in held:
            rank = np.asarray(eff[1].const).ndim  # type: ignore[union-attr]
            cls = {3: IRConv1d, 4: IRConv2d, 5: IRConv3d}.get(rank)
            if cls is not None:
                return cls, {i: n for i, n in ((1, "weight"), (2, "bias")) if i in held}, set()
        if op in ("gemm", "matmul") and 1 in held and node.attrs.get("transA", 0) == 0:
            w = eff[1]
            trans_b = node.attrs.get("transB", 0) if op == "gemm" else 0
            names_ = {i: n for i, n in ((1, "weight"), (2, "bias")) if i in held}
            if np.asarray(w.const).ndim == 2:  # type: ignore[union-attr]
                if 1 in via_t and not trans_b:  # matmul(x, transpose(W)): W is already (out, in)
                    return IRLinear, names_, set()
                if trans_b and 1 not in via_t:
                    return IRLinear, names_, set()
                if not trans_b and 1 not in via_t and len(w.uses) == 1:  # type: ignore[union-attr]
                    return IRLinear, names_, {1}  # (in, out) weight stored as (out, in), not shared
        if op == "batch_norm" and held == [1, 2, 3, 4]:
            return IRBatchNorm, {1: "weight", 2: "bias", 3: "running_mean", 4: "running_var"}, set()
        if op == "relu":
            return IRReLU, {}, set()
        if op == "leaky_relu":
            return IRLeakyReLU, {}, set()
        if op == "global_avg_pool":
            return IRGlobalAvgPool, {}, set()
        if op in _SMOOTH_RECTIFIER_OPS and not held:
            return IRSmoothRectifier, {}, set()
        if held:
            opdef = get_op(op)
            return IRNode, {i: _attr_ident(opdef.input_spec(i).name, i) for i in held}, set()
        return None, {}, set()

    def _hold(self, mod: nn.Module, attr: str, v: Value, transpose: bool, owners: dict[int, tuple[str, str]],
              where: tuple[str, str], buffer: bool = False) -> None:
        """Attach constant ``v`` to ``mod`` as ``attr``: a Parameter for trainable weights, else a buffer (batch
        norm statistics are always buffers: train-mode batch norm updates them in place)."""
        if id(v) in owners and not transpose:  # shared constant: the very same Parameter/buffer object
            oname, oattr = owners[id(v)]
            # the owner may be this very layer, not registered yet (a fresh BatchNorm whose exporter merged the
            # equal scale/variance and bias/mean tensors, LeViT's from torch.onnx)
            t = getattr(mod if oname == where[0] else getattr(self.layers, oname), oattr)
            if buffer and isinstance(t, nn.Parameter):  # statistics stay buffers: train mode updates them
                t = t.detach().clone()
        else:
            arr = np.array(v.const, order="C", copy=True)
            t = torch.from_numpy(arr.T.copy() if transpose else arr)
            if v.kind == "param" and t.is_floating_point() and not buffer:
                t = nn.Parameter(t)
            if not transpose:
                owners[id(v)] = where
        if isinstance(t, nn.Parameter):
            mod.register_parameter(attr, t)
        else:
            mod.register_buffer(attr, t)

    @staticmethod
    def _describe(mod: nn.Module, node: Node, tensors: dict[str, Value]) -> None:
        """Fill the attributes torch's layer classes (and the proxies' FLOP rules) expect."""
        if isinstance(mod, IRLinear | nn.modules.conv._ConvNd) and "bias" not in tensors:
            mod.register_parameter("bias", None)
        if isinstance(mod, IRLinear):
            w = mod.weight
            mod.out_features, mod.in_features = int(w.shape[0]), int(w.shape[1])
        elif isinstance(mod, nn.modules.conv._ConvNd):
            w = mod.weight
            mod.out_channels, mod.groups = int(w.shape[0]), int(node.attrs.get("group", 1) or 1)
            mod.in_channels, mod.kernel_size = int(w.shape[1]) * mod.groups, tuple(int(k) for k in w.shape[2:])
            mod.padding_mode = "zeros"
        elif isinstance(mod, IRBatchNorm):
            mod.num_features = int(mod.weight.shape[0])
            mod.eps = float(node.attrs.get("epsilon", 1e-5))
            mod.momentum = 1.0 - float(node.attrs.get("momentum", 0.9))
            mod.affine = mod.track_running_stats = True
        elif isinstance(mod, IRLeakyReLU):
            mod.negative_slope, mod.inplace = float(node.attrs.get("alpha", 0.01)), False
        elif isinstance(mod, IRReLU):
            mod.inplace = False
        elif isinstance(mod, IRGlobalAvgPool):
            mod.output_size = 1

    # -- execution -------------------------------------------------------------------------------------
    def forward(self, *inputs: torch.Tensor) -> Any:
        if len(inputs) != len(self.input_names):
            raise TypeError(f"graph {self.graph_name!r} takes {len(self.input_names)} input(s) "
                            f"({', '.join(self.input_names)}), got {len(inputs)}")
        env: list[Any] = [None] * self._n_env
        env[: len(inputs)] = inputs
        for st in self._steps:
            dyn = [env[i] for i in st.ins]
            if st.module is None:
                kw = dict(st.kwargs)
                if st.wants_training:
                    kw["training"] = self.training
                out = st.fn(*_call_slots(None, self, st.slots, dyn), **kw)  # type: ignore[misc]
            else:
                out = getattr(self.layers, st.module)(*dyn)
            if len(st.outs) == 1:
                env[st.outs[0]] = out
            else:
                for i, o in zip(st.outs, out, strict=True):
                    env[i] = o
        res = [self._literals[r] if k == "lit" else env[r] for k, r in self._output_slots]
        return res[0] if len(res) == 1 else tuple(res)

    def node_of_key(self, key: str) -> str | None:
        """IR node name of a per-layer proxy key (``layers.<module>[.<attr>]``), or None."""
        parts = key.split(".")
        if len(parts) >= 2 and parts[0] == "layers":
            return self.module_nodes.get(parts[1])
        return None


def _foldable_transposes(graph: Graph) -> dict[int, Value]:
    """``{id(transpose node): W}`` for ``transpose(W, perm=[1, 0])`` of a 2-D parameter feeding only the weight
    slot of one ``matmul``/``gemm`` (how ``nn.Linear`` on a 3-D input is lowered): that matmul becomes a Linear
    layer holding W in ``nn.Linear``'s (out, in) layout, and the transpose is not run separately."""
    out: dict[int, Value] = {}
    for n in graph.nodes:
        if n.op != "transpose" or not n.inputs or n.inputs[0] is None:
            continue
        w = n.inputs[0]
        perm = n.attrs.get("perm")
        if not (w.is_const and w.kind == "param" and np.asarray(w.const).ndim == 2
                and (perm is None or list(perm) == [1, 0]) and len(n.outputs) == 1):
            continue
        uses = n.outputs[0].uses
        if len(uses) == 1 and uses[0].index == 1 and uses[0].node.op in ("matmul", "gemm") \
                and not uses[0].node.attrs.get("transA", 0) and not uses[0].node.attrs.get("transB", 0) \
                and n.outputs[0] not in graph.outputs:
            out[id(n)] = w
    return out


def _bias_add_of(node: Node) -> tuple[Node, Value] | None:
    """``(add node, bias)`` when the only use of ``node``'s output is ``add(out, b)`` (either order) with ``b`` a
    1-D parameter of the output width — how ``nn.Linear`` with a bias on a 3-D input is lowered."""
    if len(node.outputs) != 1 or len(node.outputs[0].uses) != 1:
        return None
    g = node.graph
    use = node.outputs[0].uses[0]
    add = use.node
    if add.op != "add" or len(add.inputs) != 2 or (g is not None and node.outputs[0] in g.outputs):
        return None
    b = add.inputs[1 - use.index]
    w = node.inputs[1]
    if b is None or w is None or not (b.is_const and b.kind == "param") or np.asarray(b.const).ndim != 1:
        return None
    out_shape = node.outputs[0].shape
    width = out_shape[-1] if out_shape else None
    if not isinstance(width, int) or np.asarray(b.const).shape[0] != width:
        return None
    return add, b


def _module_name(hint: str, taken: set[str]) -> str:
    s = re.sub(r"\W", "_", hint) or "node"
    if s[0].isdigit():
        s = "n" + s
    base, i = s, 1
    while s in taken:
        s = f"{base}_{i}"
        i += 1
    taken.add(s)
    return s


def _attr_ident(name: str, index: int) -> str:
    s = re.sub(r"\W", "_", name)
    return s if s.isidentifier() and s not in ("forward", "training", "weight_") else f"input{index}"


# ---------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ProxyBatch:
    """Inputs (and targets, when the data has labels) for one proxy evaluation, plus where they came from."""

    inputs: torch.Tensor
    targets: torch.Tensor | None
    source: str
    note: str = ""

    def as_batch(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.inputs if self.targets is None else (self.inputs, self.targets)


@functools.lru_cache(maxsize=4)
def _train_split(data: str):  # noqa: ANN202 - ArrayDataset
    from graphopt.eval.data import load_dataset

    return load_dataset(data, split="train", seed=0)


def _static_dims(v: Value) -> list[int | str] | None:
    return None if v.type is None or v.type.shape is None else list(v.type.shape)


def _int_input_high(graph: Graph, v: Value) -> int:
    """Exclusive upper bound for random token ids: the smallest embedding table the input indexes (else 2)."""
    highs = []
    for u in v.uses:
        n = u.node
        if n.op == "gather" and u.index == 1 and n.inputs[0] is not None and n.inputs[0].is_const:
            axis = int(n.attrs.get("axis", 0))
            highs.append(int(np.asarray(n.inputs[0].const).shape[axis]))
    return min(highs) if highs else 2


def proxy_batch(graph: Graph, data: str | None = None, batch: int = 64, seed: int = 0) -> ProxyBatch:
    """The minibatch the proxies of ``graph`` are computed on (see the module docstring).

    ``data=None``: an image dataset (``cifar10-demo``) when the graph's single input looks like its images
    (float, rank 4, 3 channels), otherwise random inputs of the input's shape. A named dataset or path is always
    used (with a clear error if it does not fit the model). Deterministic under ``seed``.
    """
    if batch < 1:
        raise ProxyInputError(f"batch must be >= 1, got {batch}")
    if len(graph.inputs) != 1:
        raise ProxyInputError(
            f"graph {graph.name!r} has {len(graph.inputs)} inputs ({', '.join(v.name for v in graph.inputs)}); "
            "the proxies feed one input tensor: export a single-input model (e.g. bind extra inputs as constants)")
    v = graph.inputs[0]
    dims = _static_dims(v)
    is_float = v.type is not None and v.type.dtype is not None and v.type.dtype.is_float
    looks_image = is_float and dims is not None and len(dims) == 4 and dims[1] in (3, "C")
    if data is None and not looks_image:
        return _random_batch(graph, v, dims, batch, seed)
    return _data_batch(v, dims, data or DEFAULT_DATA, batch, seed)


def _random_batch(graph: Graph, v: Value, dims: list | None, batch: int, seed: int) -> ProxyBatch:
    if dims is None or any(isinstance(d, str) for d in dims[1:]):
        raise ProxyInputError(
            f"input {v.name!r} has type {v.type}: random proxy inputs need a static shape after the batch dim; "
            f"bind it with --input-shape {v.name}=d0,d1,...")
    shape = [batch, *dims[1:]] if dims else [batch]
    g = torch.Generator().manual_seed(seed)
    assert v.type is not None
    if v.type.dtype.is_float:
        x = torch.randn(shape, generator=g, dtype=getattr(torch, v.type.dtype.value))
    else:
        x = torch.randint(0, _int_input_high(graph, v), shape, generator=g, dtype=getattr(torch, v.type.dtype.value))
    return ProxyBatch(x, None, "random", f"seeded random {v.type.dtype.value} inputs of shape {shape} (no labels)")


def _data_batch(v: Value, dims: list | None, data: str, batch: int, seed: int) -> ProxyBatch:
    from graphopt.eval.data import DataError, prepare_batch

    try:
        ds = _train_split(str(data))
    except DataError as e:
        raise ProxyInputError(str(e)) from None
    n = len(ds)
    if batch > n:
        raise ProxyInputError(f"--batch {batch} is larger than the training split of {data!r} ({n} samples)")
    idx = np.sort(np.random.default_rng(seed).choice(n, batch, replace=False))
    x, y = prepare_batch(ds.x[torch.from_numpy(idx)], ds.y[torch.from_numpy(idx)], ds.info)
    note = ""
    if dims is not None and len(dims) != x.dim():
        raise ProxyInputError(f"data {data!r} gives inputs of shape {tuple(x.shape)} but model input {v.name!r} is "
                              f"{v.type}; pass --data matching the model")
    if ds.info.task == "sequence" and dims is not None and all(isinstance(d, int) for d in dims[1:]) \
            and list(dims[1:]) != list(x.shape[1:]):
        raise ProxyInputError(f"data {data!r} gives sequences of shape {tuple(x.shape[1:])} but model input "
                              f"{v.name!r} is {v.type}; pass --data matching the model (or export the model for that "
                              "length)")
    if ds.info.task != "sequence" and dims is not None:
        if isinstance(dims[1], int) and dims[1] != x.shape[1]:
            raise ProxyInputError(f"data {data!r} has {x.shape[1]} channels but model input {v.name!r} is {v.type}")
        size = dims[2:]
        if all(isinstance(d, int) for d in size) and list(size) != list(x.shape[2:]):
            x = F.interpolate(x, size=[int(d) for d in size], mode="bilinear", align_corners=False)
            note = f"images resized from {ds.info.input_shape[1:]} to {tuple(size)}"
    if v.type is not None and v.type.dtype is not None and not v.type.dtype.is_float and x.is_floating_point():
        raise ProxyInputError(f"model input {v.name!r} is {v.type} (not images); pass --data with matching samples")
    return ProxyBatch(x, y, f"{ds.info.name} (train split, {batch} samples, seed {seed})", note)


def sequence_aware_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for (N, C) and (N, C, ...) logits and for channel-last (N, L, V) sequence logits.

    Channel-first is tried first (what ``F.cross_entropy`` expects); logits whose last dim is the class dim of
    targets shaped like the leading dims are moved to channel-first. Targets equal to -100 are ignored.
    """
    if logits.dim() == targets.dim() + 1 and logits.dim() > 2 and logits.shape[2:] != targets.shape[1:] \
            and logits.shape[1:-1] == targets.shape[1:]:
        logits = logits.movedim(-1, 1)
    return F.cross_entropy(logits, targets)


# ---------------------------------------------------------------------------------------------------------
# Scoring and annotation
# ---------------------------------------------------------------------------------------------------------


def _check_names(proxy_names: Sequence[str]) -> None:
    unknown = [p for p in proxy_names if p not in names()]
    if unknown:
        raise ProxyInputError(f"unknown proxy {', '.join(map(repr, unknown))}; available: {', '.join(names())}")


def score_graph(
    graph: Graph,
    proxy_names: Sequence[str],
    batch: ProxyBatch,
    seed: int = 0,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = sequence_aware_ce,
    net: GraphProxyNet | None = None,
    errors: dict[str, str] | None = None,
) -> dict[str, ProxyResult]:
    """Every proxy of ``proxy_names`` on ``graph`` for one batch (same ``seed`` semantics as :func:`compute`).

    A proxy that cannot be computed (needs labels the batch lacks, is undefined for the model, e.g. NASWOT
    without ReLUs) raises :class:`ProxyInputError` naming it, unless ``errors`` is given: then its message is
    stored there and the others are still returned (``graphopt score --proxy all`` does this).
    """
    _check_names(proxy_names)
    failed: dict[str, str] = {}
    for p in proxy_names:
        msg = None
        if spec(p).needs_targets and batch.targets is None:
            msg = (f"proxy {p!r} needs labelled data, but the inputs are {batch.note or batch.source}; pass a "
                   f"dataset whose samples fit the model (--data cifar10, a sequence task such as assoc_recall, or "
                   f"a path)")
        elif p == "jacob_cov" and not batch.inputs.is_floating_point():
            msg = (f"proxy 'jacob_cov' differentiates the output with respect to the input, which needs float "
                   f"inputs; the inputs are {batch.inputs.dtype} ({batch.source})")
        if msg is not None:
            if errors is None:
                raise ProxyInputError(msg)
            failed[p] = msg
    proxy_names = [p for p in proxy_names if p not in failed]
    net = net if net is not None else GraphProxyNet(graph)
    if len(proxy_names) > 1:
        # one model copy, one forward and one loss backward shared by the proxies (see .shared); on an error
        # the proxies are re-run one by one below, so the message names the proxy that failed
        try:
            return compute_proxies(net, batch.as_batch(), list(proxy_names), loss_fn=loss_fn, seed=seed)
        except (RuntimeError, ValueError, TypeError, IndexError):
            pass
    out: dict[str, ProxyResult] = {}
    for p in proxy_names:
        try:
            out[p] = compute(p, net, batch.as_batch(), loss_fn=loss_fn, seed=seed)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            msg = str(e).splitlines()[0] if str(e) else ""
            v = graph.inputs[0]
            dims = _static_dims(v)
            hint = ""
            if ("shape" in msg or "size" in msg) and dims and isinstance(dims[0], int) \
                    and batch.inputs.shape[0] != dims[0]:  # at the file's own batch, the batch is not the cause
                one = "synflow and flops run a single sample, so " if p in ("synflow", "flops") else ""
                hint = (f" The graph may have a fixed batch size ({v.name}: {v.type}): {one}re-export the model "
                        f"with a dynamic batch dimension (e.g. from_torch(..., dynamic_batch=True))"
                        + ("" if one else f" or pass --batch {dims[0]}"))
            err = ProxyInputError(
                f"proxy {p!r} failed on graph {graph.name!r} with inputs of shape {tuple(batch.inputs.shape)} "
                f"({batch.source}): {type(e).__name__}: {msg}.{hint}")
            if errors is None:
                raise err from e
            failed[p] = str(err)
    if errors is not None:
        errors.update(failed)
    return out


def node_contributions(net: GraphProxyNet, result: ProxyResult) -> tuple[dict[str, float], float]:
    """``({node name: summed per-layer value}, unattributed remainder)`` of an additive proxy result."""
    per: dict[str, list[float]] = {}
    rest: list[float] = []
    for key, val in result.per_layer.items():
        node = net.node_of_key(key)
        if node is None:
            rest.append(val)
        else:
            per.setdefault(node, []).append(val)
    return {k: math.fsum(v) for k, v in per.items()}, math.fsum(rest)


def annotate(graph: Graph, name: str, result: ProxyResult, net: GraphProxyNet) -> int:
    """Write ``graph.meta["proxy.<name>"]`` and, for additive results, ``node.meta["proxy.<name>"]``.

    Returns the number of annotated nodes. Previous node annotations of this proxy are removed first.
    """
    key = f"proxy.{name}"
    graph.meta[key] = float(result.score)
    graph.meta.pop(f"{key}.unattributed", None)
    for n in graph.nodes:
        n.meta.pop(key, None)
    if not result.additive:
        return 0
    per, rest = node_contributions(net, result)
    by_name = {n.name: n for n in graph.nodes}
    for node_name, val in per.items():
        by_name[node_name].meta[key] = float(val)
    if rest:
        graph.meta[f"{key}.unattributed"] = float(rest)
    return len(per)


def _make_pass(proxy: str) -> Callable[..., dict[str, int]]:
    def run(graph: Graph, data: str | None = None, batch: int = 64, seed: int = 0) -> dict[str, int]:
        pb = proxy_batch(graph, data, int(batch), int(seed))
        net = GraphProxyNet(graph)
        res = score_graph(graph, [proxy], pb, seed=int(seed), net=net)[proxy]
        annotate(graph, proxy, res, net)
        graph.meta[f"proxy.{proxy}.setup"] = {"data": pb.source, "batch": int(batch), "seed": int(seed)}
        return {}  # annotation only: the graph structure is unchanged

    run.__name__ = f"proxy_{proxy}"
    run.__doc__ = (f"Annotate graph.meta['proxy.{proxy}'] (and per-node contributions where the proxy is a sum over "
                   f"layers) with the {proxy} zero-cost proxy; options data, batch, seed")
    return run


def register_passes() -> list[str]:
    """Register ``proxy-<name>`` for every proxy currently registered (idempotent); returns the pass names."""
    out = []
    for p in names():
        pname = f"proxy-{p.replace('_', '-')}"
        graph_pass(pname, f"{p} zero-cost proxy -> graph.meta['proxy.{p}'] (+ nodes if layerwise); options "
                          "data, batch, seed", requires=("no_choices",), replace=True)(
            _make_pass(p))
        out.append(pname)
    return out


PASS_NAMES = register_passes()
