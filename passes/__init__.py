"""Built-in graph passes (imported as ``graphopt.passes``); importing registers them by name.

One registered pass per module, named after the pass (``fold-constants`` is ``fold_constants.py``); helpers that
several passes share live in the underscore modules (``_util``, ``_decompose_util``, ``_activation_patterns``,
``_attention_op``). See ``graphopt passes`` for the list and docs/writing-passes.md for writing your own.
"""

# isort: off
# Imported in registration order, not alphabetically: the registry keeps the order passes registered in.
from . import (  # noqa: F401
    fuse_gelu,
    fuse_layernorm,
    fuse_softmax,
    decompose_gelu,
    approximate_gelu,
    decompose_layernorm,
    decompose_group_norm,
    decompose_softmax,
    decompose_hard_swish,
    decompose_hard_sigmoid,
    decompose_mish,
    decompose_batchnorm,
    gemm_to_matmul,
    decompose_col2im,
    _attention_op,
    fuse_attention,
    decompose_attention,
    dce,
    cse,
    canonicalize,
    fuse_conv_add_act,
    expand,
    fold_constants,
    strip_dropout,
    fold_elementwise,
    fuse_channel_affine,
    fuse_pad,
    fuse_matmul_add,
    fuse_reshapes,
    fuse_slices,
    fuse_preceding_mul,
    fold_softmax_flatten,
    dedup_constants,
    fold_head_split,
    fold_head_merge,
    fold_matmul_scale,
    merge_parallel_matmuls,
    fuse_conv_bn,
    convert_opset,
    reinsert_batch_norm,
    relax_batch,
    specialize_shapes,
)
# isort: on
