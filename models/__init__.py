"""graphopt model zoo: small, CPU-friendly reference networks in plain PyTorch.

Every model is built from ``torch.nn`` / ``torch.nn.functional`` only, is deterministic under
``torch.manual_seed`` (or ``get(name, seed=...)``), defaults to dropout 0.0 (deterministic train mode), and
passes ``torch.export.export(..., strict=False)`` and the TorchScript ONNX exporter (opset 17).

This module is import-light: the model files are imported lazily by :func:`get` / :func:`example_inputs`.

Example::

    from graphopt import models
    net = models.get("resnet20", seed=0).eval()
    (x,) = models.example_inputs("resnet20", batch=2)
    logits = net(x)
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["example_inputs", "get", "info", "names"]


@dataclass(frozen=True)
class _Spec:
    module: str  # submodule of graphopt.models
    factory: str  # function in that submodule
    task: str  # classification | segmentation | lm | encoder
    kind: str  # "image" or "tokens"
    output: str
    defaults: dict[str, Any] = field(default_factory=dict)
    input_defaults: dict[str, int] = field(default_factory=dict)


_IMG = {"image_size": 32}
_REGISTRY: dict[str, _Spec] = {
    "resnet20": _Spec(
        "resnet_cifar",
        "resnet20",
        "classification",
        "image",
        "logits (B, num_classes)",
        {"num_classes": 10, "shortcut": "A", "dropout": 0.0},
        _IMG,
    ),
    "resnet56": _Spec(
        "resnet_cifar",
        "resnet56",
        "classification",
        "image",
        "logits (B, num_classes)",
        {"num_classes": 10, "shortcut": "A", "dropout": 0.0},
        _IMG,
    ),
    "resnet18": _Spec(
        "resnet",
        "resnet18",
        "classification",
        "image",
        "logits (B, num_classes)",
        {"num_classes": 10, "base_width": 64, "small_input": False, "dropout": 0.0},
        _IMG,
    ),
    "mobilenetv2": _Spec(
        "mobilenetv2",
        "mobilenetv2",
        "classification",
        "image",
        "logits (B, num_classes)",
        {"num_classes": 10, "width_mult": 1.0, "cifar_stem": True, "dropout": 0.0},
        _IMG,
    ),
    "efficientnet_b0": _Spec(
        "efficientnet",
        "efficientnet_b0",
        "classification",
        "image",
        "logits (B, num_classes)",
        {"num_classes": 10, "width_mult": 1.0, "depth_mult": 1.0, "cifar_stem": True, "dropout": 0.0},
        _IMG,
    ),
    "vit_tiny": _Spec(
        "vit",
        "vit_tiny",
        "classification",
        "image",
        "logits (B, num_classes)",
        {
            "img_size": 32,
            "patch_size": 4,
            "num_classes": 10,
            "embed_dim": 192,
            "depth": 12,
            "num_heads": 3,
            "mlp_ratio": 4.0,
            "dropout": 0.0,
        },
        _IMG,
    ),
    "convnext_tiny_cifar": _Spec(
        "convnext",
        "convnext_tiny_cifar",
        "classification",
        "image",
        "logits (B, num_classes)",
        {
            "num_classes": 10,
            "depths": (2, 2, 6, 2),
            "dims": (32, 64, 128, 256),
            "stem_patch": 2,
            "layer_scale_init": 1e-6,
            "dropout": 0.0,
        },
        _IMG,
    ),
    "bert_tiny": _Spec(
        "bert",
        "bert_tiny",
        "encoder",
        "tokens",
        "(hidden states (B, L, hidden), logits (B, num_labels))",
        {
            "vocab_size": 1000,
            "hidden": 128,
            "num_layers": 2,
            "num_heads": 2,
            "intermediate": 512,
            "max_position": 512,
            "num_labels": 2,
            "dropout": 0.0,
        },
        {"seq_len": 32},
    ),
    "mamba2_tiny": _Spec(
        "mamba2",
        "mamba2_tiny",
        "lm",
        "tokens",
        "logits (B, L, vocab_size)",
        {
            "vocab_size": 256,
            "d_model": 64,
            "n_layers": 2,
            "d_state": 16,
            "d_conv": 4,
            "expand": 2,
            "headdim": 16,
            "ngroups": 1,
            "chunk_size": 8,
            "residual": True,
            "dropout": 0.0,
        },
        {"seq_len": 32},
    ),
    "hrnet_lite": _Spec(
        "hrnet",
        "hrnet_lite",
        "segmentation",
        "image",
        "per-pixel logits (B, num_classes, H, W)",
        {
            "num_classes": 11,
            "widths": (16, 32, 64),
            "num_blocks": (2, 2, 2),
            "num_modules": 1,
            "stem_stride": 1,
            "upsample_mode": "bilinear",
            "dropout": 0.0,
        },
        _IMG,
    ),
    "nb201": _Spec(
        "nb201",
        "nb201",
        "classification",
        "image",
        "logits (B, num_classes)",
        {
            "arch_str": "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
            "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
            "C": 16,
            "N": 5,
            "num_classes": 10,
            "dropout": 0.0,
        },
        _IMG,
    ),
}


def names() -> list[str]:
    """Registered model names, in registry order."""
    return list(_REGISTRY)


def _spec(name: str) -> _Spec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"graphopt.models: unknown model {name!r}; available: {', '.join(names())}"
        ) from None


def _factory(spec: _Spec) -> Any:
    module = importlib.import_module(f"{__name__}.{spec.module}")
    return getattr(module, spec.factory)


def get(name: str, seed: int | None = None, **kwargs: Any) -> torch.nn.Module:
    """Build model ``name`` (a ``torch.nn.Module`` in train mode, as PyTorch constructs it).

    ``kwargs`` override the defaults listed by :func:`info`. With ``seed`` the weights come from
    ``torch.manual_seed(seed)`` inside a forked RNG, so the global RNG state is left untouched.
    """
    spec = _spec(name)
    factory = _factory(spec)
    valid = set(inspect.signature(factory).parameters)
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ValueError(
            f"graphopt.models.get({name!r}): unknown argument(s) {unknown}; valid: {sorted(valid)}"
        )
    args = {**spec.defaults, **kwargs}
    if seed is None:
        return factory(**args)
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(**args)


def example_inputs(name: str, batch: int = 2, seed: int = 0, **kwargs: Any) -> tuple[torch.Tensor, ...]:
    """Deterministic example inputs for ``name`` (a private generator seeded with ``seed``).

    Image models: ``(x,)`` float32 (batch, 3, image_size, image_size), standard normal. Token models:
    ``(input_ids,)`` int64 (batch, seq_len) uniform in [0, vocab_size). ``kwargs`` may set ``image_size`` /
    ``seq_len`` and may repeat model kwargs (``img_size`` for the ViT, ``vocab_size``) so the inputs match a
    model built with the same kwargs.
    """
    import torch

    spec = _spec(name)
    allowed = set(spec.input_defaults) | set(spec.defaults)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"graphopt.models.example_inputs({name!r}): unknown argument(s) {unknown}; "
            f"valid: {sorted(allowed)}"
        )
    if batch < 1:
        raise ValueError(f"graphopt.models.example_inputs({name!r}): batch={batch} must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    if spec.kind == "image":
        size = int(kwargs.get("image_size", kwargs.get("img_size", spec.input_defaults["image_size"])))
        return (torch.randn(batch, 3, size, size, generator=gen),)
    seq_len = int(kwargs.get("seq_len", spec.input_defaults["seq_len"]))
    vocab = int(kwargs.get("vocab_size", spec.defaults["vocab_size"]))
    return (torch.randint(0, vocab, (batch, seq_len), generator=gen, dtype=torch.int64),)


def info(name: str) -> dict[str, Any]:
    """Description of ``name``: task, input, output, default kwargs and constructor path."""
    spec = _spec(name)
    if spec.kind == "image":
        s = spec.input_defaults["image_size"]
        inp = f"float32 image (B, 3, {s}, {s}); example_inputs kwarg image_size"
    else:
        seq = spec.input_defaults["seq_len"]
        inp = f"int64 token ids (B, {seq}) in [0, vocab_size); example_inputs kwarg seq_len"
    return {
        "name": name,
        "task": spec.task,
        "input": inp,
        "output": spec.output,
        "defaults": dict(spec.defaults),
        "constructor": f"{__name__}.{spec.module}.{spec.factory}",
    }
