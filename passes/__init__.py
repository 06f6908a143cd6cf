"""Built-in graph passes (imported as ``graphopt.passes``); importing registers them by name.

See ``graphopt passes`` for the list and docs/writing-passes.md for writing your own.
"""

from . import cleanup, fold, fusion, shapes  # noqa: F401
