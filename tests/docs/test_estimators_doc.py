"""docs/estimators.md runs exactly as printed: every ```python block, in order, in one namespace."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from graphopt.predictors.proxies import core

DOC = Path(__file__).resolve().parents[2] / "docs" / "estimators.md"


def test_estimators_doc_code_runs_as_printed():
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
    assert len(blocks) >= 5
    ns: dict = {"__name__": "estimators_doc"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i, src in enumerate(blocks):
                exec(compile(src, f"{DOC.name}[python block {i + 1}]", "exec"), ns)  # noqa: S102
        # the documented user proxy is registered and computed like a built-in one
        assert "weight_l1" in core.names()
        r = core.compute("weight_l1", ns["model"], ns["x"])
        assert r.score == sum(float(m.weight.abs().sum()) for _, m in core.weight_layers(ns["model"]))
    finally:
        core._REGISTRY.pop("weight_l1", None)  # keep the registry as the other tests expect it
    assert set(ns["rs"]) == {"snip", "grad_norm", "nwot", "zen"}
    # the pass on the lowered graph gives the module's value
    assert ns["res"].graph.meta["proxy.synflow"] == pytest.approx(ns["r"].score, rel=1e-6)
    assert len(ns["top"]) == 3 and ns["top"][0].params <= 60_000
