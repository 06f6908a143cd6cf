"""Tensor types of the IR: a dtype and a shape whose dims are ints or named symbols.

Why our own tiny type layer instead of reusing torch/onnx types: passes must compare, hash and serialize
types without importing a framework, and symbolic dims (``"batch"``) must survive every rewrite.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

Dim = int | str
"""A dimension: a non-negative int when static, a symbol name (e.g. ``"batch"``) when not."""


class UnsupportedDTypeError(TypeError):
    """A tensor type graphopt has no IR dtype for (complex, fp8, unsigned 16/32/64 bit...): a user error."""


class DType(StrEnum):
    """Element types the IR supports; the string value is the canonical name used on disk."""

    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"
    float64 = "float64"
    int64 = "int64"
    int32 = "int32"
    int16 = "int16"
    int8 = "int8"
    uint8 = "uint8"
    bool = "bool"

    @property
    def is_float(self) -> bool:
        return self in (DType.float32, DType.float16, DType.bfloat16, DType.float64)

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self]

    def to_numpy(self) -> np.dtype:
        if self is DType.bfloat16:
            import ml_dtypes

            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(self.value if self is not DType.bool else np.bool_)

    def to_torch(self):  # -> torch.dtype (torch imported lazily: the type layer stays framework-free)
        import torch

        return getattr(torch, self.value)

    def to_onnx(self) -> int:
        import onnx

        return _ONNX_OF[self](onnx.TensorProto)

    @staticmethod
    def from_any(x: object) -> DType:
        """Accept a DType, a name, a numpy dtype, a torch dtype or an ONNX TensorProto enum int."""
        if isinstance(x, DType):
            return x
        if isinstance(x, int) and not isinstance(x, bool):
            import onnx

            for dt, getter in _ONNX_OF.items():
                if getter(onnx.TensorProto) == x:
                    return dt
            raise TypeError(f"unsupported ONNX element type {x} ({_onnx_type_name(x)})")
        name = str(x).replace("torch.", "")
        if name in ("bool_", "bool"):
            return DType.bool
        try:
            return DType(np.dtype(x).name if not isinstance(x, str) and name not in DType.__members__ else name)
        except (TypeError, ValueError):
            pass
        if name in DType.__members__:
            return DType[name]
        raise UnsupportedDTypeError(f"unsupported dtype {x!r}; supported: {', '.join(d.value for d in DType)}")


_ITEMSIZE = {
    DType.float32: 4, DType.float16: 2, DType.bfloat16: 2, DType.float64: 8, DType.int64: 8,
    DType.int32: 4, DType.int16: 2, DType.int8: 1, DType.uint8: 1, DType.bool: 1,
}
_ONNX_OF = {
    DType.float32: lambda T: T.FLOAT, DType.float16: lambda T: T.FLOAT16, DType.bfloat16: lambda T: T.BFLOAT16,
    DType.float64: lambda T: T.DOUBLE, DType.int64: lambda T: T.INT64, DType.int32: lambda T: T.INT32,
    DType.int16: lambda T: T.INT16, DType.int8: lambda T: T.INT8, DType.uint8: lambda T: T.UINT8,
    DType.bool: lambda T: T.BOOL,
}


def _onnx_type_name(x: int) -> str:
    try:
        import onnx

        return onnx.TensorProto.DataType.Name(x)
    except Exception:  # noqa: BLE001 - only for the message
        return "unknown"


@dataclass(frozen=True)
class TensorType:
    """dtype + shape. ``shape is None`` means the rank itself is unknown."""

    dtype: DType
    shape: tuple[Dim, ...] | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", DType.from_any(self.dtype))
        if self.shape is not None:
            dims = tuple(int(d) if not isinstance(d, str) else d for d in self.shape)
            for d in dims:
                if isinstance(d, int) and d < 0:
                    raise ValueError(f"negative dimension {d} in shape {dims}")
            object.__setattr__(self, "shape", dims)

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def numel(self) -> int | None:
        """Element count, or None if any dim is symbolic."""
        if not self.is_static:
            return None
        n = 1
        for d in self.shape:  # type: ignore[union-attr]
            n *= d  # type: ignore[operator]
        return n

    def nbytes(self) -> int | None:
        n = self.numel()
        return None if n is None else n * self.dtype.itemsize

    def symbols(self) -> list[str]:
        return [d for d in (self.shape or ()) if isinstance(d, str)]

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.dtype.value}[?]"
        return f"{self.dtype.value}[{','.join(str(d) for d in self.shape)}]"

    def to_json(self) -> dict:
        return {"dtype": self.dtype.value, "shape": None if self.shape is None else list(self.shape)}

    @staticmethod
    def from_json(d: dict) -> TensorType:
        return TensorType(DType(d["dtype"]), None if d["shape"] is None else tuple(d["shape"]))
