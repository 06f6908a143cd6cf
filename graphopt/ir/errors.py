"""Base classes of the errors a user's input causes, defined in ``ir`` so that ``ir`` imports nothing above it.

:mod:`graphopt.errors` re-exports them with the other user-facing errors; import them from there.
"""

from __future__ import annotations


class GraphoptError(ValueError):
    """Base of errors caused by user input (files, options, data), as opposed to bugs."""


class ModelLoadError(GraphoptError):
    """A model file is missing, corrupt, truncated, or of a kind graphopt refuses to load."""


class UntrustedFileError(ModelLoadError):
    """Loading the file would execute code (pickle); needs an explicit trust flag."""
