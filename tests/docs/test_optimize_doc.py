"""docs/optimize.md runs as printed, and the files, flags and rankers it names exist."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "optimize.md"


def test_optimize_doc_python_block_runs_as_printed(tmp_path, monkeypatch):
    (src,) = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
    monkeypatch.chdir(tmp_path)  # the example writes out/doc and graphopt-runs/doc relative to the cwd
    ns: dict = {"__name__": "optimize_doc"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(src, f"{DOC.name}[python block]", "exec"), ns)  # noqa: S102
    import graphopt
    from graphopt.backends.torch import to_torch

    res, g, best = ns["res"], ns["g"], ns["best"]
    assert {"original", "best"} <= set(res["summary"]) and (tmp_path / "graphopt-runs" / "doc" / "runs.sqlite").exists()
    for name in ("best.onnx", "best.pt", "best.py", "pareto.json", "report.html"):
        assert (tmp_path / "out" / "doc" / name).is_file(), name
    # the re-loaded best model runs on the original's input shape and gives the same output shape
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    import torch

    want = to_torch(g).eval()(torch.from_numpy(x))
    got = to_torch(best).eval()(torch.from_numpy(x))
    assert got.shape == want.shape and torch.isfinite(got).all()
    assert isinstance(best, graphopt.Graph)


def test_optimize_doc_names_real_things():
    text = DOC.read_text()
    for path in set(re.findall(r"`((?:benchmarks|graphopt|docs)/[\w/.]+\.(?:py|md))`", text)):
        assert (ROOT / path).is_file(), path
    for link in re.findall(r"\]\(([\w-]+\.md)\)", text):
        assert (ROOT / "docs" / link).is_file(), link
    from graphopt.search.autogo import check_ranker

    rankers = re.findall(r"^\| `([\w:]+)`", text, flags=re.M)
    assert {"train", "tse", "ponas", "psc", "proxy:NAME"} <= set(rankers)
    for ranker in rankers:
        check_ranker(ranker.replace("NAME", "nwot"))  # raises on an unknown ranker


def test_optimize_doc_flags_exist():
    """Every ``--flag`` the guide mentions is an option of ``graphopt optimize`` (or of the named benchmark)."""
    import typer.main

    from graphopt.cli import app

    cmd = typer.main.get_command(app).commands["optimize"]
    opts = {"--help"} | {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    bench = (ROOT / "benchmarks" / "autogo_cifar10.py").read_text()
    for flag in set(re.findall(r"(--[a-z][\w-]*)", DOC.read_text())):
        assert flag in opts or f'"{flag}"' in bench, flag
