"""User-facing error types. The CLI turns any of these into a one-line message and exit code 2."""

from __future__ import annotations

from .ir.errors import GraphoptError, ModelLoadError, UntrustedFileError
from .ir.graph import IRError
from .ir.registry import UnsupportedOpError
from .ir.types import UnsupportedDTypeError

__all__ = ["GraphoptError", "ModelLoadError", "UntrustedFileError", "USER_ERRORS"]

USER_ERRORS: tuple[type[BaseException], ...] = (GraphoptError, IRError, UnsupportedOpError, UnsupportedDTypeError,
                                                FileNotFoundError)
