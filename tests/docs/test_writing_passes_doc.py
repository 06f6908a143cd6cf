"""docs/writing-passes.md runs exactly as printed: every ```python block, in order, in one namespace."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-passes.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_tutorial_code_runs_as_printed(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 5, "the tutorial should show the model, both passes, the run and the failure case"
    monkeypatch.chdir(tmp_path)  # the tutorial writes net.onnx / net_opt.onnx in the working directory
    ns: dict = {"__name__": "writing_passes_tutorial"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.onnx.export deprecation chatter
        for i, src in enumerate(blocks):
            code = compile(src, f"{DOC.name}[python block {i + 1}]", "exec")
            exec(code, ns)  # noqa: S102 - the documentation's own code
    out = capsys.readouterr().out
    assert "fuse-swish" in out and "drop-redundant-relu" in out
    assert "OK" in out  # graphopt.verify's report
    assert "pass 'buggy-pass' broke the IR" in out
    assert (tmp_path / "net_opt.onnx").exists()
