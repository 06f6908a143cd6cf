"""Load any supported model file into the IR and write the IR back out, chosen by file suffix.

Inputs: ``.onnx`` (external data included), ``.pt2`` (``torch.export.save`` archives), our IR ``.json``, our
own ``.pt`` bundles (IR JSON + state dict, loaded with ``weights_only=True``), and PyTorch source
``model.py[:NAME]`` (see :func:`load_python_module`). A pickled full-module ``.pt`` would run code on load, so it
is refused unless the caller passes ``trust=True``; a ``.py`` file is code by nature, and naming it is the trust.
Outputs: ``.onnx``, ``.json``, ``.pt`` (bundle), ``.py`` (readable source + ``<stem>_weights.pt``). Every
write is atomic, so an interrupted run leaves the old file or the complete new one.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

from .errors import GraphoptError, ModelLoadError, UntrustedFileError
from .ir.graph import Graph
from .ir.serialize import atomic_write_bytes

LOADABLE = (".onnx", ".pt2", ".json", ".pt", ".py")
WRITABLE = (".onnx", ".json", ".pt", ".py")
BUNDLE_FORMAT = "graphopt-torch-bundle"


def parse_input_shapes(specs: list[str] | None, graph_inputs: list[str] | None = None) -> dict[str, list]:
    """``["x=1,3,32,32"]`` → ``{"x": [1, 3, 32, 32]}``; a bare ``1,3,32,32`` names the only input."""
    shapes: dict[str, list] = {}
    for s in specs or []:
        name, sep, dims = s.rpartition("=")
        if not sep:
            if not graph_inputs or len(graph_inputs) != 1:
                raise GraphoptError(f"--input-shape {s!r}: name the input (NAME=d0,d1,...); the model's inputs are "
                                    f"{', '.join(graph_inputs or []) or 'unknown'}")
            name = graph_inputs[0]
        try:
            shapes[name] = [int(d) if d.strip().lstrip("-").isdigit() else d.strip() for d in dims.split(",")]
        except ValueError as e:
            raise GraphoptError(f"--input-shape {s!r}: dims must be integers or symbol names") from e
        if any(isinstance(d, int) and d < 0 for d in shapes[name]):
            raise GraphoptError(f"--input-shape {s!r}: negative dimension")
    return shapes


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
    if is_python_spec(source):
        return _load_python(str(source), input_shapes)
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
        except ModelLoadError:
            raise
        except (RuntimeError, ValueError, OSError, KeyError, zipfile.BadZipFile) as e:
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


_PY_SPEC = re.compile(r"^(?P<file>.+\.py)(?::(?P<name>[A-Za-z_][\w.]*))?$")


def is_python_spec(source: Any) -> bool:
    """``model.py`` or ``model.py:NAME`` (a path or a string)."""
    return isinstance(source, str | os.PathLike) and _PY_SPEC.match(str(source)) is not None


def load_python_module(spec: str) -> tuple[Any, tuple | None]:
    """The ``nn.Module`` that ``model.py[:NAME]`` names, in eval mode, and the file's example inputs if it has any.

    Why: a PyTorch user's model usually *is* Python source; asking them to ``torch.export`` it first is a step
    graphopt can do. NAME is an ``nn.Module`` subclass, a function returning a module (a factory that also loads
    weights), or a module instance, dotted paths allowed; without NAME the file must define exactly one of these
    (an instance named ``model``, a ``build_model()`` function, or a single ``nn.Module`` subclass, in that
    order). Classes and functions are called without arguments. ``example_inputs`` in the file (a tuple of tensors
    or a function returning one) gives the example inputs when no ``--input-shape`` is passed. The file's folder
    is on ``sys.path`` while it is imported, so it can import its siblings.
    """
    import importlib.util
    import inspect
    import sys

    import torch

    m = _PY_SPEC.match(str(spec))
    if m is None:
        raise ModelLoadError(f"{spec}: not a Python model spec (expected model.py or model.py:NAME)")
    path = Path(m["file"])
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    mod = _PY_MODULES.get(key)
    if mod is None:
        mod_name = f"_graphopt_user_model_{abs(hash(key))}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        mod = importlib.util.module_from_spec(loader_spec)
        sys.path.insert(0, str(path.resolve().parent))
        try:
            loader_spec.loader.exec_module(mod)
        except Exception as e:  # noqa: BLE001 - any error in user code
            raise ModelLoadError(f"{path}: importing it failed ({type(e).__name__}: {e})") from e
        finally:
            sys.path.remove(str(path.resolve().parent))
        _PY_MODULES[key] = mod
    if m["name"]:
        obj: Any = mod
        for part in m["name"].split("."):
            if not hasattr(obj, part):
                cands = ", ".join(_candidates(mod)) or "none"
                raise ModelLoadError(f"{path}: has no {m['name']!r}; candidates: {cands}")
            obj = getattr(obj, part)
        what = m["name"]
    else:
        cands = _candidates(mod)
        if isinstance(getattr(mod, "model", None), torch.nn.Module):
            what = "model"
        elif callable(getattr(mod, "build_model", None)):
            what = "build_model"
        elif len(cands) == 1:
            what = cands[0]
        else:
            raise ModelLoadError(f"{path}: name the model as {path}:NAME; "
                                 f"{'candidates: ' + ', '.join(cands) if cands else 'it defines no nn.Module'}")
        obj = getattr(mod, what)
    if inspect.isclass(obj) or (callable(obj) and not isinstance(obj, torch.nn.Module)):
        try:
            obj = obj()
        except TypeError as e:
            raise ModelLoadError(f"{path}:{what} cannot be called without arguments ({e}); write a function that "
                                 f"builds the model (and loads its weights), e.g. def build_model(): return "
                                 f"{what}(...), and pass {path}:build_model") from e
    if not isinstance(obj, torch.nn.Module):
        raise ModelLoadError(f"{path}:{what} is a {type(obj).__name__}, not an nn.Module")
    ex = getattr(mod, "example_inputs", None)
    if callable(ex):
        ex = ex()
    if isinstance(ex, torch.Tensor):
        ex = (ex,)
    return obj.eval(), (tuple(ex) if ex is not None else None)


_PY_MODULES: dict[tuple[str, int], Any] = {}


def _candidates(mod: Any) -> list[str]:
    import inspect

    import torch

    return sorted(n for n, v in vars(mod).items() if not n.startswith("_") and (
        isinstance(v, torch.nn.Module)
        or (inspect.isclass(v) and issubclass(v, torch.nn.Module) and v.__module__ == mod.__name__)))


def _forward_input_names(module: Any) -> list[str]:
    """The forward's required positional argument names (what ``--input-shape`` binds)."""
    import inspect

    params = inspect.signature(module.forward).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            and p.default is inspect.Parameter.empty]


def _load_python(spec: str, input_shapes: dict[str, list[int | str]] | None) -> Graph:
    """Lower ``model.py[:NAME]`` with a dynamic batch dimension where torch.export can keep it (training and
    ``graphopt optimize`` need that; NPU export binds it later), else with the example's batch and a warning."""
    import warnings

    import torch

    from .frontends.torch import from_torch

    module, example = load_python_module(spec)
    names = _forward_input_names(module)
    if input_shapes:
        if "" in input_shapes:  # a bare d0,d1,... names the only input
            if len(names) != 1:
                raise ModelLoadError(f"{spec}: name the input (NAME=d0,d1,...); forward takes {', '.join(names)}")
            input_shapes = {names[0]: input_shapes[""]}
        unknown = set(input_shapes) - set(names)
        missing = [n for n in names if n not in input_shapes]
        if unknown or missing:
            why = f"unknown: {', '.join(sorted(unknown))}" if unknown else f"missing: {', '.join(missing)}"
            raise ModelLoadError(f"{spec}: --input-shape must give every forward input ({', '.join(names)}); {why}")
        bad = {n: s for n, s in input_shapes.items() if not all(isinstance(d, int) for d in s)}
        if bad:
            raise ModelLoadError(f"{spec}: --input-shape needs integer sizes to build example inputs, got {bad}")
        gen = torch.Generator().manual_seed(0)
        example = tuple(torch.randn(*input_shapes[n], generator=gen) for n in names)
    elif example is None:
        raise ModelLoadError(f"{spec}: pass --input-shape (e.g. {'x' if not names else names[0]}=1,3,32,32) or "
                             f"define example_inputs in the file, so the model can be traced")
    dyn = tuple(torch.cat([a, a]) if isinstance(a, torch.Tensor) and a.dim() >= 1 and a.shape[0] == 1 else a
                for a in example)
    try:
        return from_torch(module, dyn, dynamic_batch=True)
    except Exception as e:  # noqa: BLE001 - retried with a fixed batch; an error not about the batch repeats there
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
    g = from_torch(module, example)
    warnings.warn(f"{spec}: the batch dimension could not be kept dynamic ({first}); lowered with the example's "
                  f"fixed batch", stacklevel=2)
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
