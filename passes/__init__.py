"""Built-in graph passes (imported as ``graphopt.passes``); importing registers them by name.

See ``graphopt passes`` for the list and docs/writing-passes.md for writing your own.
"""

from . import (  # noqa: F401
    attention,
    cleanup,
    conv_act,
    decompose,
    expand,
    fold,
    fuse_more,
    fuse_patterns,
    fusion,
    opset,
    reinsert_batch_norm,
    relax_batch,
    shapes,
)
