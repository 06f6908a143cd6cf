"""User-facing error types. The CLI turns any of these into a one-line message and exit code 2."""

from __future__ import annotations

from .ir.graph import IRError
from .ir.registry import UnsupportedOpError
from .ir.types import UnsupportedDTypeError


class GraphoptError(ValueError):
    """Base of errors caused by user input (files, options, data), as opposed to bugs."""


class ModelLoadError(GraphoptError):
    """A model file is missing, corrupt, truncated, or of a kind graphopt refuses to load."""


class UntrustedFileError(ModelLoadError):
    """Loading the file would execute code (pickle); needs an explicit trust flag."""


USER_ERRORS: tuple[type[BaseException], ...] = (GraphoptError, IRError, UnsupportedOpError, UnsupportedDTypeError,
                                                FileNotFoundError)
