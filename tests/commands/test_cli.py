"""The CLI as a user runs it: exit codes, one-line errors, nothing written on failure."""

import json

import pytest
from _helpers import conv_bn_relu_graph
from typer.testing import CliRunner

from graphopt.cli import app
from graphopt.ir import save

runner = CliRunner()


@pytest.fixture
def ir_file(tmp_path):
    return save(conv_bn_relu_graph(), tmp_path / "m.json")


def test_inspect_json_summary(ir_file):
    res = runner.invoke(app, ["inspect", str(ir_file), "--json", "-s", "x=2,3,8,8", "--nodes"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["ops"] == {"conv": 1, "batch_norm": 1, "relu": 1, "shape": 1, "concat": 1, "reshape": 1}
    assert doc["params"] == 8 * 27 + 8 + 16
    assert doc["outputs"] == {"flat": "float32[2,128]"}
    assert doc["node_table"][0]["flops"] == 2 * (2 * 8 * 16) * 27 + 2 * 8 * 16


def test_convert_round_trips_and_verifies(ir_file, tmp_path):
    for suffix in (".py", ".pt", ".json"):
        out = tmp_path / f"out{suffix}"
        res = runner.invoke(app, ["convert", str(ir_file), "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert "verify: OK" in res.output
        assert out.exists()


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, ir_file):
    out = tmp_path / "o.json"
    bad = tmp_path / "bad.json"
    bad.write_text(ir_file.read_text()[:100])
    for args in (["convert", str(bad), "-o", str(out)],
                 ["convert", str(tmp_path / "missing.onnx"), "-o", str(out)],
                 ["inspect", str(ir_file), "-s", "x=1,2"],
                 ["convert", str(ir_file), "-o", str(tmp_path / "o.txt")],
                 ["transform", str(ir_file), "-P", "dce,nope", "-o", str(out)]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert res.output.strip().startswith("error:"), res.output
        assert "Traceback" not in res.output
    assert not out.exists()


def test_transform_runs_user_pipeline(ir_file, tmp_path):
    out = tmp_path / "t.json"
    res = runner.invoke(app, ["transform", str(ir_file), "-P", "specialize-shapes[batch=2],(canonicalize,"
                              "fold-constants,cse,dce)*,fuse-conv-bn", "-o", str(out), "--print-after",
                              "fuse-conv-bn"])
    assert res.exit_code == 0, res.output
    assert "graph after fuse-conv-bn" in res.output
    from graphopt.ir import load

    assert [n.op for n in load(out).nodes] == ["conv", "relu", "reshape"]


def test_help_teaches():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("inspect", "convert", "passes", "transform", "optimize"):
        assert cmd in res.output


def _leaf_commands(cmd, path=()):
    if hasattr(cmd, "commands"):  # a group (typer may vendor its own click, so no isinstance check)
        for name, sub in cmd.commands.items():
            yield from _leaf_commands(sub, (*path, name))
    else:
        yield path, cmd


def test_every_command_help_has_examples_that_parse():
    """Each ``--help`` ends with examples, and each example parses against that command's real options (a
    renamed or removed flag breaks this test, not the user who copies the example)."""
    import shlex

    import typer.main

    root = typer.main.get_command(app)
    leaves = dict(_leaf_commands(root))
    assert {"optimize", "export", "score", "inspect"} <= {p[0] for p in leaves}
    for path, cmd in leaves.items():
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0 and "Examples:" in res.output, path
        lines = [ln.strip() for ln in (cmd.epilog or "").splitlines() if ln.strip().startswith("graphopt ")]
        assert lines, f"{path}: no example"
        for line in lines:
            argv = shlex.split(line.replace("\\[", "["))[1:]
            assert tuple(argv[: len(path)]) == path, line
            try:
                cmd.make_context(" ".join(path), argv[len(path):])
            except Exception as e:  # click's UsageError/BadParameter: unknown flag, missing option, bad value
                raise AssertionError(f"example {line!r} does not parse: {e}") from None


def test_inspect_dynamic_batch_reports_per_sample_flops_and_full_types(tmp_path):
    """A model with a symbolic batch: FLOPs are reported per sample (batch bound to 1, equal to inspecting the
    batch-1 model) and the type column keeps its brackets (rich markup used to eat '[batch,3,8,8]')."""
    import torch

    from graphopt.frontends.torch import from_torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 5)).eval()
    dyn = save(from_torch(net, (torch.randn(2, 3, 8, 8),), dynamic_batch=True), tmp_path / "dyn.json")
    one = save(from_torch(net, (torch.randn(1, 3, 8, 8),)), tmp_path / "one.json")
    d = json.loads(runner.invoke(app, ["inspect", str(dyn), "--json"]).stdout)
    o = json.loads(runner.invoke(app, ["inspect", str(one), "--json"]).stdout)
    assert d["flops"] == o["flops"] > 0 and "per sample" in d["flops_note"] and "flops_note" not in o
    res = runner.invoke(app, ["inspect", str(dyn)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "float32[batch,3,8,8]" in res.stdout and "per sample" in res.stdout


def test_console_script_prints_python_warnings_as_one_clean_line():
    """``graphopt`` (cli.main) shows each distinct Python warning once as ``warning: ...``, without the source
    path and line that ``warnings`` prints by default (library warnings like random calibration's)."""
    import subprocess
    import sys

    code = ("import warnings, graphopt.cli as c\n"
            "def fake():\n"
            "    warnings.warn('calibrating on [RANDOM] inputs')\n"
            "    warnings.warn('calibrating on [RANDOM] inputs', stacklevel=2)\n"
            "c.app = fake\n"
            "c.main()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == ["warning: calibrating on [RANDOM] inputs"], res.stderr


@pytest.mark.parametrize("kind", ["pickle", "torch.save", "empty"])
def test_pt2_that_is_no_torch_export_archive_exits_2_naming_the_file(tmp_path, kind):
    """A pickle renamed to .pt2 used to end in a zipfile.BadZipFile traceback (exit 1); a torch.save zip in
    "check the warnings above"."""
    import pickle

    import torch

    bad = tmp_path / f"{kind.replace('.', '_')}.pt2"
    if kind == "pickle":
        bad.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
    elif kind == "torch.save":
        torch.save(torch.nn.Linear(3, 2).state_dict(), bad)
    else:
        bad.write_bytes(b"")
    res = runner.invoke(app, ["inspect", str(bad)])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ") and "torch.export.save" in lines[0], res.output
    assert "Traceback" not in res.output and "BadZipFile" not in res.output


def test_convert_and_export_judge_errors_against_the_output_scale(tmp_path):
    """An element-wise allclose refused this correct model (exit 1: "MISMATCH"); judged against the outputs' scale
    it passes, with the same tolerance in convert and export, and the message says OK without contradicting
    itself."""
    import warnings

    import numpy as np
    import torch

    from graphopt.compare import RTOL, random_inputs, run_model, verify
    from graphopt.frontends.onnx import load_onnx

    class LargeScaleNet(torch.nn.Module):
        """Three convs on an input scaled by 1000: outputs up to ~300, so onnxruntime's and PyTorch's sums differ
        by ~1e-4 everywhere -- the same 1e-4 on entries near zero, like DeepLabV3's logits."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.c1 = torch.nn.Conv2d(3, 64, 3, padding=1)
            self.c2 = torch.nn.Conv2d(64, 64, 3, padding=1)
            self.c3 = torch.nn.Conv2d(64, 8, 3, padding=1)

        def forward(self, x):
            return self.c3(self.c2(self.c1(x * 1000).relu()).relu())

    src = tmp_path / "big.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(LargeScaleNet().eval(), (torch.randn(1, 3, 16, 16),), str(src), dynamo=False,
                          opset_version=17)
    g = load_onnx(str(src))
    x = random_inputs([v.type for v in g.inputs])
    ref, got = run_model(str(src), x)[0], run_model(g, x)[0]
    assert not np.allclose(got, ref, rtol=1e-4, atol=1e-5)  # what the old element-wise check demanded
    assert np.abs(got - ref).max() < 1e-6 * np.abs(ref).max()  # float32 rounding, nothing more

    res = runner.invoke(app, ["convert", str(src), "-o", str(tmp_path / "big.py")])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # the console wraps long lines
    assert "verify: OK" in text and "in magnitude" in text and f"(allowed {RTOL:.2g})" in text, text
    res = runner.invoke(app, ["export", str(src), "-o", str(tmp_path / "big.opt.onnx")])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "fp32 check: OK" in text and "in magnitude" in text and f"(allowed {RTOL:.2g})" in text, text

    # a real error of 1e-3 of the scale is still refused, and the message gives the scale it was judged by
    wrong = torch.from_numpy(ref.copy())
    wrong[0, 0, 0, 0] += 1e-3 * float(np.abs(ref).max())

    class Wrong(torch.nn.Module):
        def forward(self, _x):
            return wrong

    rep = verify(str(src), Wrong(), x)
    assert not rep.ok and str(rep).startswith("MISMATCH") and "in magnitude" in str(rep) and rep.worst.scale > 100
