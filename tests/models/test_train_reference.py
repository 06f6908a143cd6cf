"""The reference-model training script: a finished run writes weights and a record of how they were made; the
same command resumes from its checkpoint instead of starting over; a checkpoint can be exported as such."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from graphopt.models import get

CMD = [sys.executable, "-m", "graphopt.models.train_reference", "resnet20", "--data", "cifar10-demo", "--epochs", "1"]


def _run(args, cwd):
    env = {**os.environ, "GRAPHOPT_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(CMD + args, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_train_record_resume_and_export(tmp_path):
    out, work = tmp_path / "w.pt", tmp_path / "work"
    r = _run(["--out", str(out), "--work", str(work)], tmp_path)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["complete"] and rec["epochs_completed"] == 1 and rec["recipe"]["weight_decay"] == 5e-4
    assert 0.0 <= rec["val_accuracy"] <= 1.0 and 0.0 <= rec["test_accuracy"] <= 1.0 and rec["commit"]
    net = get("resnet20")
    net.load_state_dict(torch.load(out, weights_only=True))  # loads into the zoo model as it is
    r = _run(["--out", str(out), "--work", str(work)], tmp_path)  # the same command: nothing left to train
    assert r.returncode == 0 and "resuming resnet20 at epoch 1/1" in r.stdout and "epoch 1/1:" not in r.stdout
    r = _run(["--out", str(tmp_path / "e.pt"), "--work", str(work), "--export-checkpoint"], tmp_path)
    assert r.returncode == 0, r.stderr
    exp = json.loads((tmp_path / "e.json").read_text())
    assert not exp["complete"] and exp["epochs_completed"] == 1 and exp["val_accuracy"] == rec["val_accuracy"]
