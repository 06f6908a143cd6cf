"""The kill-resume measurement of ``benchmarks/reliability.py`` kills where it says it does, and a resumed search
loses nothing: one trial per phase (scoring, inside a commit's transaction, final training), each after at least
3 committed candidates."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmod import benchmark_module

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")


@pytest.fixture(scope="module")
def rel():
    with benchmark_module("reliability.py", "reliability_bench") as mod:
        yield mod


def test_plan_kills_only_after_three_commits(rel):
    import random

    plan = rel._plan(30, 18, 2, random.Random(0))
    assert {p for p, _ in plan} == set(rel.PHASES)
    assert all(n >= rel.MIN_COMMITTED + 1 for p, n in plan if p != "final")  # the n-th has n-1 committed
    assert all(1 <= n <= 2 for p, n in plan if p == "final")
    assert len({n for p, n in plan if p == "scoring"}) > 3  # varied points


def test_kill_in_every_phase_loses_nothing(rel, tmp_path):
    r = rel.kill_resume(3, tmp_path / "k")
    assert r["phases"] == {"scoring": 1, "commit": 1, "final": 1}
    for t in r["per_trial"]:
        assert t["reached_target"] and t["phase_confirmed"] and t["killed_mid_run"], t
        assert t["done_at_kill"] >= 3, t
        assert t["lost"] == 0 and t["rescored_committed"] == 0 and t["finished_once"], t
        assert t["missing_vs_uninterrupted"] == 0 and t["extra_vs_uninterrupted"] == 0, t
        assert t["same_finalists_as_uninterrupted"], t
        assert t["integrity_after_kill"] == "ok" and t["integrity_final"] == "ok", t
    scoring, commit, final = r["per_trial"]
    # the killed candidate was in flight (running, not committed) and is the only one scored again
    assert scoring["running_at_kill"] == 1 and scoring["rescored_in_flight"] == 1
    assert commit["running_at_kill"] == 1 and commit["rescored_in_flight"] == 1
    assert commit["done_at_kill"] == commit["target"] - 1  # the held commit never became visible
    # killed in the final training: every candidate was committed, the resumed run scores none
    assert final["done_at_kill"] == r["uninterrupted"]["candidates"] and final["scored_after_resume"] == 0
    assert r["all_pass"]
