"""Mining corpora: model files, zoo models and NAS-Bench-201 samples, and the shipped default corpus.

Corpus items (strings, as on the ``graphopt segments build`` command line):

* a model file graphopt can load (``.onnx``, ``.pt2``, IR ``.json``, graphopt ``.pt`` bundle), or PyTorch source
  ``model.py[:NAME]`` whose file defines ``example_inputs``;
* ``zoo:NAME`` — a model of ``graphopt.models`` in eval mode, lowered with the torch frontend at its example
  input (batch 2);
* ``nb201:N`` — N NAS-Bench-201 networks whose arch strings are taken at evenly spaced NB201 indices
  (``round(linspace(0, 15624, N))``) from ``nb201_index_tuple_archstr.csv``; ``nb201:ARCH_STR`` — one network.
  NB201 networks are built directly in the IR by ``graphopt.predictors.nb201_dataset.build_nb201_ir``, which
  mirrors the torch frontend's lowering of ``models/nb201.py`` and is much faster than ``torch.export``.

The default corpus (:data:`DEFAULT_CORPUS`) is every model of the zoo (CNNs, ViT, BERT, Mamba-2, HRNet) plus
200 NB201 networks. Segments of transformer/state-space models (matmul/reshape/softmax chains on non-NCHW
tensors) are only used as exact-shape replacements, but keeping them lets those models mutate at all; the
shipped file stays ~1.5 MB.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from graphopt.ir.graph import Graph

DEFAULT_CORPUS = [
    "zoo:resnet20", "zoo:resnet56", "zoo:resnet18", "zoo:mobilenetv2", "zoo:efficientnet_b0",
    "zoo:convnext_tiny_cifar", "zoo:hrnet_lite", "zoo:vit_tiny", "zoo:bert_tiny", "zoo:mamba2_tiny", "nb201:200",
]
NB201_INDICES = 15625


def nb201_csv() -> Path:
    """``$GRAPHOPT_NB201_CSV`` or the shared NB201 index file."""
    env = os.environ.get("GRAPHOPT_NB201_CSV")
    if env:
        return Path(env)
    for cand in (Path("/work/shared/data/nas/nb201_index_tuple_archstr.csv"),
                 Path(__file__).resolve().parents[3] / "shared" / "data" / "nas" / "nb201_index_tuple_archstr.csv"):
        if cand.is_file():
            return cand
    return Path("/work/shared/data/nas/nb201_index_tuple_archstr.csv")


def nb201_sample(n: int) -> list[tuple[int, str]]:
    """``n`` (index, arch string) pairs at evenly spaced NB201 indices (deterministic)."""
    import numpy as np

    path = nb201_csv()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: NAS-Bench-201 index file not found; set GRAPHOPT_NB201_CSV to "
                                f"nb201_index_tuple_archstr.csv")
    with path.open() as f:
        rows = {int(r["nb201_index"]): r["arch_str"] for r in csv.DictReader(f)}
    idx = sorted({int(i) for i in np.round(np.linspace(0, len(rows) - 1, n))})
    return [(i, rows[i]) for i in idx]


def nb201_graph(arch_str: str) -> Graph:
    try:
        from graphopt.predictors.nb201_dataset import build_nb201_ir
    except ImportError:  # pragma: no cover - fall back to the frontend
        return zoo_graph("nb201", arch_str=arch_str)
    return build_nb201_ir(arch_str, batch=2)


def zoo_graph(name: str, **kwargs) -> Graph:
    """A zoo model lowered to the IR (eval mode, example input at batch 2)."""
    import torch

    from graphopt import models
    from graphopt.frontends.torch import from_torch

    net = models.get(name, seed=0, **kwargs).eval()
    with torch.no_grad():
        g = from_torch(net, models.example_inputs(name, batch=2))
    g.name = name
    return g


def corpus_graphs(items: list[str]) -> Iterator[tuple[str, Graph]]:
    """Yield ``(name, graph)`` for each corpus item (see module docstring), lazily."""
    for item in items:
        if item.startswith("zoo:"):
            yield item, zoo_graph(item[4:])
        elif item.startswith("nb201:"):
            spec = item[6:]
            if spec.isdigit():
                for i, arch in nb201_sample(int(spec)):
                    yield f"nb201#{i}", nb201_graph(arch)
            else:
                yield f"nb201:{spec}", nb201_graph(spec)
        else:
            from graphopt.modelio import is_python_spec, load_model

            if is_python_spec(item):  # model.py[:NAME]: needs example_inputs in the file
                yield item, load_model(item)
                continue
            path = Path(item)
            if not path.exists():
                raise FileNotFoundError(f"corpus item {item!r}: no such file (use a model file, model.py:NAME, "
                                        f"zoo:NAME or nb201:N)")
            yield path.stem, load_model(path)
