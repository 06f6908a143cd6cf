"""Selection in ``graphopt optimize`` never reads the test split: scores, the Pareto front and the final pick use
the validation split carved from the training data; the test split is evaluated once per reported model, after
the pick."""

from __future__ import annotations

import torch
from _helpers import SmallNet

import graphopt.eval.data as data_mod
from graphopt.frontends.torch import from_torch
from graphopt.search.autogo import OptimizeConfig, Trainer, optimize


def _cfg() -> OptimizeConfig:
    # iterations, not the clock, end this search, so two runs score the same candidates
    return OptimizeConfig(data="cifar10-demo", budget_seconds=900, iterations=1, train_size=200, score_steps=3,
                          distill_steps=3, final_k=2, final_epochs=1, parents_per_iter=2, mutants_per_parent=2,
                          cost_window=(0.0, 1.5))


def test_the_pick_is_the_same_whatever_the_test_labels_say(monkeypatch, tmp_path):
    torch.manual_seed(0)
    g = from_torch(SmallNet().eval(), (torch.randn(2, 3, 32, 32),), dynamic_batch=True)
    calls: list[str] = []
    real_final, real_test = Trainer.final_train, Trainer.test_metric

    def final_train(self, graph, epochs, seconds=None):
        calls.append("final")
        return real_final(self, graph, epochs, seconds)

    def test_metric(self, module):
        calls.append("test")
        return real_test(self, module)

    monkeypatch.setattr(Trainer, "final_train", final_train)
    monkeypatch.setattr(Trainer, "test_metric", test_metric)
    a = optimize(g, tmp_path / "a", _cfg(), run_dir=tmp_path / "ra", log=lambda s: None)
    n_final = calls.count("final")
    # the test split is read only after every finalist was trained and validated, once per reported model: the
    # original as given, the original after the same fine-tune, and the pick
    assert calls[:n_final] == ["final"] * n_final and calls[n_final:] == ["test"] * len(calls[n_final:])
    assert len(calls[n_final:]) == len({"as given", a["seed"]["hash"], a["best"]["hash"]})

    real_load = data_mod.load_dataset

    loads = []

    def scrambled(*args, **kw):  # the same data, test labels permuted: any selection reading them would move
        loads.append(args)
        splits = real_load(*args, **kw)
        y = splits.test.y
        splits.test = data_mod.ArrayDataset(splits.test.x, y[torch.randperm(len(y), generator=torch.Generator()
                                                                             .manual_seed(1))], splits.test.info)
        return splits

    monkeypatch.setattr(data_mod, "load_dataset", scrambled)
    b = optimize(g, tmp_path / "b", _cfg(), run_dir=tmp_path / "rb", log=lambda s: None)
    assert b["best"]["hash"] == a["best"]["hash"]
    assert b["best"]["val_accuracy"] == a["best"]["val_accuracy"]
    assert {r["hash"]: r["score"] for r in (a["seed"], a["best"])} == {r["hash"]: r["score"]
                                                                         for r in (b["seed"], b["best"])}
    assert loads and b["seed"]["test_accuracy"] is not None  # the run really used the scrambled split


def test_the_pick_is_the_cheapest_finalist_within_the_allowed_drop():
    from graphopt.search.autogo import pick_best, pick_finalists
    from graphopt.search.evolution import Candidate

    def c(h: str, cost: float, score: float = 0.0) -> Candidate:
        return Candidate(h, None, score, cost)

    seed, a, b, d = c("seed", 100), c("a", 80), c("b", 60), c("d", 120)
    val = {"seed": 0.90, "a": 0.897, "b": 0.880, "d": 0.95}
    assert pick_best([seed, a, b, d], seed, val, 0.005).hash == "a"  # b is cheaper but 2 points worse
    assert pick_best([seed, a, b, d], seed, val, 0.03).hash == "b"
    assert pick_best([seed, b, d], seed, val, 0.005).hash == "seed"  # nothing cheaper is close: the original
    # finalists: the best-scored cheaper front members first
    front = [c("seed", 100, 0.9), c("x", 120, 0.95), c("y", 90, 0.89), c("z", 70, 0.85)]
    assert [f.hash for f in pick_finalists(front, front[0], 2)] == ["y", "z"]
    assert [f.hash for f in pick_finalists(front, front[0], 3)] == ["y", "z", "x"]
