"""The optimize budget planner under simulated machines (a fake clock): the search never ends with zero
mutations when the budget allows three, the budget is used (>= 80%) and never overrun by more than 10%."""

from __future__ import annotations

import pytest
import torch
from _helpers import TinyCNN

from graphopt.frontends.torch import from_torch
from graphopt.search.autogo import BudgetPlanner, OptimizeConfig, Trainer, optimize


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _simulate(monkeypatch, clock: FakeClock, *, step_s: float, prior_step_s: float, steps: int = 40,
              eval_s: float = 2.0):
    """Trainer methods that cost simulated seconds: a fine-tune is ``steps`` steps of ``step_s`` plus ``eval_s``;
    the pre-search measurement reports ``prior_step_s`` (a loaded machine makes it optimistic)."""
    calls = {"short": 0, "final": [], "test": 0}

    def short_train(self, graph):
        calls["short"] += 1
        clock.t += steps * step_s + eval_s
        return {"score": 0.5 + 0.001 * calls["short"], "val_accuracy": 0.5, "train_seconds": steps * step_s,
                "steps": steps, "eval_seconds": eval_s}

    def final_train(self, graph, epochs, seconds=None):
        if epochs == 0:  # the original as given: validated, not trained
            clock.t += eval_s
            calls["final"].append((epochs, seconds))
            return {"val_accuracy": 0.5, "final_status": "skipped", "final_epochs": 0.0, "module": None}
        spe = len(self.splits.train) / self.cfg.batch_size
        distill = 4 * self.cfg.distill_steps * step_s / 3  # a teacher forward + the region: ~1/3 of a step
        if seconds is not None:
            distill = min(distill, seconds / 3)
        train = min(epochs * spe * step_s, seconds - distill if seconds is not None else float("inf"))
        clock.t += distill + train + eval_s
        calls["final"].append((epochs, seconds))
        return {"val_accuracy": 0.5, "final_status": "ok", "final_epochs": epochs, "module": None}

    def test_metric(self, module):
        calls["test"] += 1
        clock.t += 2 * eval_s
        return 0.5

    monkeypatch.setattr(Trainer, "short_train", short_train)
    monkeypatch.setattr(Trainer, "final_train", final_train)
    monkeypatch.setattr(Trainer, "test_metric", test_metric)
    monkeypatch.setattr(Trainer, "step_seconds", lambda self, g, steps=3: prior_step_s)
    return calls


@pytest.fixture(scope="module")
def graph():
    torch.manual_seed(0)
    return from_torch(TinyCNN().eval(), (torch.randn(2, 3, 32, 32),), dynamic_batch=True)


@pytest.mark.parametrize("step_s,prior", [(0.5, 0.5), (2.0, 0.2), (6.0, 0.3)])
def test_budget_is_used_not_overrun_and_three_mutants_are_tried(monkeypatch, tmp_path, graph, step_s, prior):
    """Fast, 10x-slower-than-measured and 20x-slower machines: the same 15-minute budget."""
    clock = FakeClock()
    calls = _simulate(monkeypatch, clock, step_s=step_s, prior_step_s=prior)
    budget = 900.0
    cfg = OptimizeConfig(data="cifar10-demo", budget_seconds=budget, score_steps=40, final_k=2, final_epochs=2,
                         parents_per_iter=2, mutants_per_parent=2, cost_window=(0.0, 2.0))
    start = clock.t
    res = optimize(graph, tmp_path / "out", cfg, run_dir=tmp_path / "run", clock=clock, log=lambda s: None)
    used = clock.t - start
    children = calls["short"] - 1
    assert used <= 1.10 * budget, (used, calls)
    if 3 * (40 * step_s + 2.0) <= 0.6 * budget:  # the budget allows three candidates
        assert children >= 3, calls
        assert used >= 0.80 * budget, (used, calls)
    # the original and the pick, once each, after selection
    assert calls["test"] == len({"original-as-given", res["seed"]["hash"], res["best"]["hash"]})
    assert res["summary"]["candidates scored"] == children + 1


def test_planner_keeps_room_for_three_candidates_when_the_final_phase_would_take_everything():
    """A final training estimated at far more than the budget must not starve the search (the demo once ended
    after 27 s of 210 with no mutation tried)."""
    p = BudgetPlanner(budget=210, start=0.0, final_epochs=10, steps_per_epoch=1000, n_val=200, n_test=500)
    p.step_s_prior = 0.05  # one final epoch = 50 s: 3 finalists x 10 epochs = 1500 s > the whole budget
    p.observe({"steps": 8, "train_seconds": 0.4, "eval_seconds": 0.2}, seconds=0.8)  # the original, scored
    now, children = 1.0, 0
    while p.keep_searching(now, children, n_final=3):
        now += 12.0
        p.observe({"steps": 8, "train_seconds": 0.4, "eval_seconds": 0.2}, seconds=12.0)
        children += 1
    assert children >= 3
    assert now <= 0.65 * 210  # the reserve (40% of the budget) is kept for the finalists
    epochs, seconds = p.final_plan(now, 3)
    assert 0 < epochs < 10 and seconds * 3 + now <= 210
