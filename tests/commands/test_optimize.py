"""``graphopt optimize`` end to end on a small CNN and the bundled CIFAR-10 subset: the files it writes are
runnable and agree with each other, and a run SIGKILLed mid-search resumes without losing or re-scoring."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from _helpers import SmallNet, TinyCNN
from torch import nn

from graphopt.backends.onnx import to_onnx
from graphopt.frontends.torch import from_torch

GRAPHOPT = [sys.executable, "-m", "graphopt.cli", "optimize"]
SMALL = ["--train-size", "200", "--score-steps", "3", "--final-k", "1", "--final-epochs", "1", "--parents", "2",
         "--mutants", "2", "--cost-window", "1.5"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = SmallNet().eval()
    g = from_torch(net, (torch.randn(2, 3, 32, 32),), dynamic_batch=True)
    p = tmp_path_factory.mktemp("m") / "small.onnx"
    to_onnx(g, path=p)
    return p


def _run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run(GRAPHOPT + args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _done_rows(db: Path) -> dict[str, tuple[str, int, float]]:
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = c.execute("SELECT hash, metrics, n_finished, finished_at FROM candidates WHERE status='done'")
        return {h: (m, n, t) for h, m, n, t in rows}


def test_optimize_writes_consistent_runnable_outputs(model_file, tmp_path):
    out = tmp_path / "out"
    r = _run([str(model_file), "-o", str(out), "--budget", "30s", "--iterations", "2", *SMALL], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for f in ("best.onnx", "best.pt", "best.py", "pareto.json", "report.html"):
        assert (out / f).is_file(), f
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["seed"]["test_accuracy"] is not None and doc["best"]["hash"] in {doc["seed"]["hash"]} | {
        p["hash"] for p in doc["front"]}
    assert doc["best"]["cost"] <= doc["seed"]["cost"] * 1.5
    # The three emitted forms of the best model compute the same function.
    from graphopt.backends.torch import to_torch
    from graphopt.modelio import load_model

    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(str(out / "best.onnx"), providers=["CPUExecutionProvider"])
    y_onnx = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    y_pt = to_torch(load_model(out / "best.pt")).eval()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(y_pt, y_onnx, rtol=1e-4, atol=1e-4)
    # Every candidate of the run was scored exactly once.
    (run,) = list((tmp_path / "graphopt-runs").iterdir())
    rows = _done_rows(run / "runs.sqlite")
    assert len(rows) >= 1 and all(n == 1 for _, n, _ in rows.values())


def test_npu_target_objective_uses_profile_latency(model_file, tmp_path):
    out = tmp_path / "out"
    r = _run([str(model_file), "-o", str(out), "--budget", "20s", "--iterations", "1", "--target", "ethos-u55-like",
              *SMALL], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["objective"] == "npu" and doc["cost_unit"] == "ms"
    from graphopt.frontends.onnx import load_onnx
    from graphopt.ir.infer import set_input_shapes
    from graphopt.npu.latency import estimate_latency
    from graphopt.npu.profiles import load_profile
    from graphopt.pass_manager import run_pipeline

    g = load_onnx(model_file)
    set_input_shapes(g, {g.inputs[0].name: [1, 3, 32, 32]})
    g = run_pipeline(g, "fuse-conv-bn,dce").graph
    assert doc["seed"]["cost"] == pytest.approx(estimate_latency(g, load_profile("ethos-u55-like")).total_ms)


def test_sigkill_mid_search_then_resume_loses_nothing(model_file, tmp_path):
    args = [str(model_file), "-o", str(tmp_path / "out"), "--budget", "10m", "--iterations", "3", *SMALL]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(GRAPHOPT + args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    runs = tmp_path / "graphopt-runs"
    deadline = time.monotonic() + 300
    before: dict = {}
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            dbs = list(runs.glob("*/runs.sqlite")) if runs.exists() else []
            if dbs:
                try:
                    before = _done_rows(dbs[0])
                except sqlite3.OperationalError:
                    before = {}
                if len(before) >= 3:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, "the search finished before it could be killed: " + proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    (run,) = list(runs.iterdir())
    before = _done_rows(run / "runs.sqlite")
    assert len(before) >= 3
    r = _run([*args, "--resume", run.name], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    after = _done_rows(run / "runs.sqlite")
    for h, (metrics, n, finished) in before.items():  # kept, not re-scored
        assert after[h] == (metrics, n, finished)
    assert all(n == 1 for _, n, _ in after.values())
    assert (tmp_path / "out" / "best.onnx").is_file()


@pytest.mark.parametrize("inherit", ["seed", "trained"])
def test_short_train_inherit_mode_decides_whether_weights_are_written_back(inherit):
    """inherit="seed" keeps the candidate's constants (every candidate starts from the same weights and gets the
    same steps, so generations compare fairly); "trained" writes the fine-tuned weights back for children."""
    from graphopt.eval.data import load_dataset
    from graphopt.search.autogo import OptimizeConfig, Trainer

    torch.manual_seed(0)
    g = from_torch(SmallNet().eval(), (torch.randn(2, 3, 32, 32),), dynamic_batch=True)
    before = {k: v.const.copy() for k, v in g.constants.items()}
    cfg = OptimizeConfig(data="cifar10-demo", train_size=128, score_steps=3, inherit=inherit)
    res = Trainer(load_dataset(cfg.data, seed=0, train_size=128), cfg).short_train(g)
    assert 0.0 <= res["val_accuracy"] <= 1.0
    changed = [k for k, a in before.items() if not np.array_equal(a, g.constants[k].const)]
    if inherit == "seed":
        assert changed == []
    else:
        assert "stem.0.weight" in changed and "head.weight" in changed


def test_fixed_batch_model_is_optimized_and_keeps_its_input_shape(tmp_path):
    """A model exported at a fixed batch (torch.onnx's default) is relaxed to a symbolic batch for the search and
    best.onnx keeps the caller's fixed input shape, with the preprocessing it expects in its metadata."""
    torch.manual_seed(0)
    g = from_torch(SmallNet().eval(), (torch.randn(2, 3, 32, 32),))  # static batch 2
    fixed = tmp_path / "fixed.onnx"
    to_onnx(g, path=fixed)
    out = tmp_path / "out"
    r = _run([str(fixed), "-o", str(out), "--budget", "25s", "--iterations", "1", *SMALL], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "batch fixed at 2" in r.stdout + r.stderr
    import onnx

    m = onnx.load(out / "best.onnx")
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 32, 32]
    meta = {p.key: p.value for p in m.metadata_props}
    pre = json.loads(meta["graphopt.preprocess"])
    assert pre["mean"] == pytest.approx([0.4914, 0.4822, 0.4465]) and pre["scale"] == "1/255"


def test_corrupt_file_is_refused_and_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    r = _run([str(bad), "-o", str(tmp_path / "out")], tmp_path)
    assert r.returncode == 2 and "bad.onnx" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "graphopt-runs").exists() and not (tmp_path / "out").exists()


def test_unknown_inherit_mode_is_refused_before_any_work(tmp_path):
    from graphopt.errors import GraphoptError
    from graphopt.search.autogo import OptimizeConfig, optimize

    g = from_torch(SmallNet().eval(), (torch.randn(2, 3, 32, 32),), dynamic_batch=True)
    with pytest.raises(GraphoptError, match="inherit='parent'"):
        optimize(g, tmp_path / "out", OptimizeConfig(inherit="parent"), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_proxy_ranker_scores_candidates_without_training(model_file, tmp_path):
    """--ranker proxy:nwot: every candidate's score is its NASWOT value on one fixed minibatch of the data (the
    seed's equals the proxy computed directly on the graph's module view), and the search still writes its outputs."""
    from graphopt.predictors import proxies
    from graphopt.predictors.proxies.passes import GraphProxyNet, proxy_batch

    from graphopt.frontends.onnx import load_onnx

    out = tmp_path / "out"
    r = _run([str(model_file), "-o", str(out), "--budget", "30s", "--iterations", "2", "--ranker", "proxy:nwot",
              *SMALL], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((out / "pareto.json").read_text())
    (run,) = list((tmp_path / "graphopt-runs").iterdir())
    rows = _done_rows(run / "runs.sqlite")
    assert len(rows) >= 2  # the seed and at least one mutant were scored
    metrics = [json.loads(m) for m, _, _ in rows.values()]
    assert all("proxy_nwot" in m and m["score"] == m["proxy_nwot"] for m in metrics)
    g = load_onnx(model_file)
    batch = proxy_batch(g, "cifar10-demo", 64, 0)
    want = proxies.compute("nwot", GraphProxyNet(g), batch.as_batch(), seed=0).score
    assert doc["seed"]["score"] == pytest.approx(want, rel=1e-5)


def test_ponas_ranker_trains_only_the_mutants_its_screen_picks(model_file, tmp_path):
    """--ranker ponas: candidates are scored by the short fine-tune (score = val accuracy), each parent gets
    --ponas-oversample x --mutants proposals, only --mutants per parent are trained, and pareto.json says what
    the screen did."""
    out = tmp_path / "out"
    r = _run([str(model_file), "-o", str(out), "--budget", "120s", "--iterations", "2", "--ranker", "ponas",
              "--ponas-oversample", "3", *SMALL], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((out / "pareto.json").read_text())
    (run,) = list((tmp_path / "graphopt-runs").iterdir())
    metrics = [json.loads(m) for m, _, _ in _done_rows(run / "runs.sqlite").values()]
    assert all(m["score"] == m["val_accuracy"] for m in metrics)
    st, screen = doc["stats"], doc["screen"]
    assert st["scored"] <= 1 + 2 * 2 * 2  # seed + iterations x parents x mutants
    assert st["mutations"] > st["scored"] - 1 and st["screened_out"] > 0
    assert screen["pool"] >= st["scored"] and screen["observed"] == st["scored"]
    assert screen["metric_seconds"] > 0
    assert "PO-NAS screen" in (out / "report.html").read_text()


def test_final_training_is_fitted_to_what_the_measured_search_leaves():
    """The final epochs follow the fine-tunes' measured speed (median), not only the pre-search estimate."""
    from graphopt.search.autogo import BudgetPlanner

    p = BudgetPlanner(budget=1000.0, start=0.0, final_epochs=2.0, steps_per_epoch=100, n_val=1000, n_test=2000)
    p.step_s_prior = 0.01  # before the search: 1 s per epoch
    assert p.final_plan(0.0, 2) == (2.0, pytest.approx((1000.0 - p._closing_s(2)) / 2))
    p.observe({"score": 0.5}, seconds=1.0)  # a proxy/psc score carries no training time
    assert p.epoch_seconds() == pytest.approx(1.0)
    for t in (4.0, 5.0, 40.0):  # 40 steps each: median 0.125 s/step; 2 s per 1,000 val images
        p.observe({"train_seconds": t, "steps": 40, "eval_seconds": 2.0}, seconds=t + 2.0)
    # an epoch = 100 steps x 0.125 s = 12.5 s; validating a finalist 2 s, testing a model 4 s
    assert p.epoch_seconds() == pytest.approx(12.5)
    assert p.model_seconds(2.0) == pytest.approx(27.0)
    closing = 3 * 2.0 + 3 * 4.0 + 0.02 * 1000.0
    assert p._closing_s(2) == pytest.approx(closing)
    epochs, seconds = p.final_plan(1000.0 - closing - 2 * 10.0, 2)  # 10 s per finalist left
    assert seconds == pytest.approx(10.0) and epochs == pytest.approx(0.8)  # 10 / 12.5
    assert p.final_plan(1000.0, 2) == (0.0, 0.0)


def test_a_seed_scored_at_chance_level_gets_a_warning_naming_the_fix():
    from types import SimpleNamespace

    from graphopt.search.autogo import chance_warning

    ten = SimpleNamespace(task="classification", num_classes=10)
    msg = chance_warning({"val_accuracy": 0.100, "score": 0.1}, ten, 40)
    assert msg and "0.100" in msg and "10 classes" in msg and "--score-steps" in msg
    assert chance_warning({"val_accuracy": 0.251}, ten, 40) is None  # ResNet-20's seed after 40 steps
    assert chance_warning({"score": 0.9}, ten, 40) is None  # proxy / psc scores: nothing to judge
    assert chance_warning({"val_accuracy": 0.0}, SimpleNamespace(task="segmentation", num_classes=3), 40) is None


def test_unknown_ranker_or_proxy_is_refused_with_the_choices():
    from graphopt.errors import GraphoptError
    from graphopt.search.autogo import OptimizeConfig

    with pytest.raises(GraphoptError, match="unknown proxy 'synflo'.*synflow"):
        OptimizeConfig(ranker="proxy:synflo")
    with pytest.raises(GraphoptError, match="proxy:<name>"):
        OptimizeConfig(ranker="zero-cost")
    assert OptimizeConfig(ranker="proxy:synflow").ranker == "proxy:synflow"


def test_sequence_task_scores_by_token_accuracy():
    """A token model on assoc_recall is scored by token accuracy (the task's primary metric), not by the
    classification key that sequence metrics lack (every candidate used to score 0.0)."""
    from graphopt.backends.torch import to_torch
    from graphopt.eval.data import load_dataset
    from graphopt.eval.train import evaluate
    from graphopt.search.autogo import OptimizeConfig, Trainer

    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(64, 32), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64)).eval()
    splits = load_dataset("assoc_recall", seed=0, train_size=512)
    L = splits.info.input_shape[0]
    g = from_torch(net, (torch.randint(0, 64, (2, L)),), dynamic_batch=True)
    cfg = OptimizeConfig(data="assoc_recall", score_steps=30, inherit="trained", lr=0.05)
    res = Trainer(splits, cfg).short_train(g)  # trained weights written back into g
    want = evaluate(to_torch(g), splits.val, batch_size=256)["token_accuracy"]
    assert res["val_accuracy"] == pytest.approx(want) and res["score"] == res["val_accuracy"]
    assert res["val_accuracy"] > 1.5 / splits.info.num_classes  # it learned something: the metric is live


def test_a_search_that_finds_nothing_says_why(tmp_path):
    """It used to print 'candidates scored: 1' with no reason, after shortening the final training for a search
    that then took 2 of the 10 seconds."""
    g = from_torch(TinyCNN().eval(), (torch.randn(2, 3, 32, 32),), dynamic_batch=True)
    to_onnx(g, path=tmp_path / "tiny.onnx")
    r = _run(["tiny.onnx", "--data", "cifar10-demo", "--train-size", "2000", "--score-steps", "3", "--final-k", "1",
              "--final-epochs", "40", "--budget", "20s", "-o", "out"], tmp_path)
    assert r.returncode == 0, r.stderr
    text = " ".join((r.stdout + r.stderr).split())
    assert "no candidate besides the original" in text and ("--cost-window" in text or "--budget" in text)
    # lengthening depends on the measured speed (a loaded machine leaves no time to grow): not asserted here
    assert "epochs fit what the budget leaves" in text  # 40 final epochs do not fit 20 s
    assert (tmp_path / "out" / "best.onnx").exists()


def test_no_candidate_reason_points_at_the_counter_that_ate_the_mutations():
    from graphopt.search.autogo import no_candidate_reason

    class Store:
        def rows(self, status):
            return [1, 2] if status == "failed" else []

    small = no_candidate_reason({"mutations": 10, "failed_mutations": 9, "out_of_window": 1}, Store(), 4, (0, 1.1))
    assert "9 found no replaceable segment" in small and "very small" in small and "2 failed to train" in small
    big = no_candidate_reason({"mutations": 10, "failed_mutations": 9}, Store(), 60, (0, 1.1))
    assert "--segments" in big and "very small" not in big
    window = no_candidate_reason({"mutations": 10, "out_of_window": 8}, Store(), 60, (0, 1.1))
    assert "--cost-window (e.g. 2.2)" in window
    assert "--budget" in no_candidate_reason({"mutations": 0}, Store(), 4, (0, 1.1))
