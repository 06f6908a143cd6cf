"""ATen -> graphopt IR lowering used by :mod:`graphopt.frontends.torch` (rule table, context, driver)."""

from . import rules  # noqa: F401  (registers the built-in rules)
from .context import (
    FOLD_LIMIT,
    LoweringContext,
    LoweringError,
    ProgramLowering,
    Sym,
    dead_code_elimination,
    find_rule,
    register_lowering,
    registered_targets,
)

__all__ = [
    "FOLD_LIMIT", "LoweringContext", "LoweringError", "ProgramLowering", "Sym", "dead_code_elimination", "find_rule",
    "register_lowering", "registered_targets",
]
