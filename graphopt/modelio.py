"""Load any supported model file into the IR and write the IR back out, chosen by file suffix.

Inputs: ``.onnx`` (external data included), ``.pt2`` (``torch.export.save`` archives), our IR ``.json``, and
our own ``.pt`` bundles (IR JSON + state dict, loaded with ``weights_only=True``). A pickled full-module
``.pt`` would run code on load, so it is refused unless the caller passes ``trust=True``.
Outputs: ``.onnx``, ``.json``, ``.pt`` (bundle), ``.py`` (readable source + ``<stem>_weights.pt``). Every
write is atomic, so an interrupted run leaves the old file or the complete new one.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from .errors import ModelLoadError, UntrustedFileError
from .ir.graph import Graph
from .ir.serialize import atomic_write_bytes

LOADABLE = (".onnx", ".pt2", ".json", ".pt")
WRITABLE = (".onnx", ".json", ".pt", ".py")
BUNDLE_FORMAT = "graphopt-torch-bundle"


def load_model(
    source: Any,
    *,
    example_inputs: tuple | None = None,
    input_shapes: dict[str, list[int | str]] | None = None,
    trust: bool = False,
    dynamic_batch: bool = False,
) -> Graph:
    """Lower ``source`` (a path, an ``nn.Module``, an ``ExportedProgram`` or an ``onnx.ModelProto``) to the IR.

    ``dynamic_batch`` (modules only): export with a symbolic batch dimension instead of the example's size, so
    the graph runs at any batch (training, as ``graphopt optimize`` does, needs that).
    """
    import torch

    if isinstance(source, Graph):
        return source
    if isinstance(source, torch.nn.Module | torch.export.ExportedProgram):
        from .frontends.torch import from_torch

        if isinstance(source, torch.nn.Module) and example_inputs is None:
            raise ValueError("lowering an nn.Module needs example_inputs (a tuple of tensors)")
        return from_torch(source, example_inputs, dynamic_batch=dynamic_batch)
    try:
        import onnx

        if isinstance(source, onnx.ModelProto):
            from .frontends.onnx import load_onnx

            return load_onnx(source, input_shapes=input_shapes)
    except ImportError:  # pragma: no cover
        pass
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a folder; pass a model file ({', '.join(LOADABLE)})")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .frontends.onnx import load_onnx

        g = load_onnx(str(path), input_shapes=input_shapes)
    elif suffix == ".pt2":
        from .frontends.torch import load_pt2

        try:
            g = load_pt2(str(path))
        except (RuntimeError, ValueError, OSError, KeyError) as e:
            raise ModelLoadError(f"{path}: cannot read torch.export archive ({type(e).__name__}: {e})") from e
    elif suffix == ".json":
        from .ir.serialize import load

        g = load(path)
    elif suffix == ".pt":
        g = _load_bundle(path, trust=trust, example_inputs=example_inputs)
    else:
        raise ModelLoadError(f"{path}: unknown model file type {suffix!r}; graphopt reads {', '.join(LOADABLE)}")
    if input_shapes and suffix != ".onnx":
        from .ir.infer import set_input_shapes

        set_input_shapes(g, input_shapes)
    return g


def _load_bundle(path: Path, *, trust: bool, example_inputs: tuple | None) -> Graph:
    import pickle

    import torch

    from .ir.serialize import graph_from_json

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust:
            raise UntrustedFileError(
                f"{path}: this .pt file is a pickled Python object, and loading it would run code from the file. "
                f"Export it with torch.export.save (.pt2) or torch.onnx.export (.onnx), or pass --trust-pickle if "
                f"you trust its author") from e
        module = torch.load(path, map_location="cpu", weights_only=False)  # noqa: S614 - explicit trust flag
        if not isinstance(module, torch.nn.Module):
            raise ModelLoadError(f"{path}: holds a {type(module).__name__}, not an nn.Module") from e
        if example_inputs is None:
            raise ModelLoadError(f"{path}: a pickled module needs --input-shape to build example inputs") from e
        from .frontends.torch import from_torch

        return from_torch(module, example_inputs)
    except (RuntimeError, EOFError, OSError) as e:
        raise ModelLoadError(f"{path}: cannot read .pt file ({e}); it may be truncated or corrupt") from e
    if isinstance(obj, dict) and obj.get("format") == BUNDLE_FORMAT:
        try:
            doc = json.loads(obj["ir"])
            arrays = {k: t.numpy() for k, t in obj["constants"].items()}
        except (KeyError, TypeError, AttributeError, ValueError, RuntimeError, RecursionError) as e:
            raise ModelLoadError(f"{path}: corrupt graphopt bundle ({type(e).__name__}: {e})") from e
        return graph_from_json(doc, arrays, str(path))
    raise ModelLoadError(
        f"{path}: a state dict has weights but no graph; load it into your module and pass the module (or export "
        f"it to .pt2/.onnx)")


def save_model(graph: Graph, path: str | os.PathLike, *, opset: int = 18) -> list[Path]:
    """Write ``graph`` in the format given by the suffix; returns the files written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .backends.onnx import to_onnx

        model = to_onnx(graph, opset=opset)
        atomic_write_bytes(path, model.SerializeToString())
        return [path]
    if suffix == ".json":
        from .ir.serialize import save, weights_path

        save(graph, path)
        return [path, weights_path(path)]
    if suffix == ".pt":
        atomic_write_bytes(path, bundle_bytes(graph))
        return [path]
    if suffix == ".py":
        import torch

        from .backends.torch import to_python_source, to_torch

        module = to_torch(graph)
        wpath = path.with_name(path.stem + "_weights.pt")
        src = to_python_source(graph).replace("'weights.pt'", repr(wpath.name))
        buf = io.BytesIO()
        torch.save(module.state_dict(), buf)
        atomic_write_bytes(wpath, buf.getvalue())
        atomic_write_bytes(path, src.encode())
        return [path, wpath]
    raise ValueError(f"cannot write {path}: choose one of {', '.join(WRITABLE)}")


def bundle_bytes(graph: Graph) -> bytes:
    """Our ``.pt``: IR JSON + constants as tensors, readable with ``torch.load(weights_only=True)``."""
    import numpy as np
    import torch

    from .backends.torch import to_python_source
    from .ir.serialize import graph_to_json

    obj = {
        "format": BUNDLE_FORMAT,
        "ir": json.dumps(graph_to_json(graph)),
        "source": to_python_source(graph),
        "constants": {k: torch.from_numpy(np.asarray(v.const).copy(order="C")) for k, v in graph.constants.items()},
    }
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
