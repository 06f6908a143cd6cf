"""The "vote" of ``benchmarks/estimators_nb201.py`` is the paper's majority vote of three proxies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from benchmod import benchmark_module

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def est():
    with benchmark_module("estimators_nb201.py", "estimators_bench") as mod:
        yield mod


def test_majority_vote_counts_pairwise_majorities(est):
    a = np.array([3.0, 2.0, 1.0])
    b = np.array([1.0, 3.0, 2.0])
    c = np.array([3.0, 1.0, 2.0])
    # arch 0 beats 1 (a, c) and 2 (a, c); arch 1 beats 2 (a, b); arch 2 beats nobody by majority
    assert list(est.majority_vote(a, b, c)) == [2.0, 1.0, 0.0]
    # differs from a mean-rank vote: one proxy's huge lead cannot outvote the other two
    x, y, z = np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([1e9, 0.0])
    assert list(est.majority_vote(x, y, z)) == [0.0, 1.0]


def test_majority_vote_chunks_and_non_finite(est):
    rng = np.random.default_rng(0)
    s = [rng.standard_normal(1100) for _ in range(3)]
    s[0][5] = np.nan
    full = est.majority_vote(*s, chunk=4096)
    assert np.array_equal(full, est.majority_vote(*s, chunk=97))
    brute = [sum(sum(np.nan_to_num(p[i], nan=-np.inf) > np.nan_to_num(p[j], nan=-np.inf) for p in s) >= 2
                 for j in range(1100)) for i in (0, 5, 17)]
    assert [full[0], full[5], full[17]] == brute
