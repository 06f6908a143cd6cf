"""TSE estimators: identities from the paper and the formulas on a fixed loss sequence."""

from __future__ import annotations

import pytest
from graphopt.predictors import tse
from hypothesis import given
from hypothesis import strategies as st

# three epochs (indices 0, 1, 2), uneven numbers of steps per epoch
LOSSES = [3.0, 2.0, 1.0, 1.5, 2.0, 0.5, 0.25]
EPOCHS = [0, 0, 1, 1, 1, 2, 2]
MEANS = [2.5, 1.5, 0.375]


def test_epoch_means_and_formulas_on_fixed_sequence() -> None:
    assert tse.epoch_means(LOSSES, EPOCHS) == pytest.approx(MEANS)
    assert tse.tse(LOSSES, EPOCHS) == pytest.approx(4.375)
    assert tse.tse(LOSSES, EPOCHS, T=2) == pytest.approx(4.0)
    assert tse.tse_e(LOSSES, EPOCHS) == pytest.approx(0.375)  # E = 1: last epoch only
    assert tse.tse_e(LOSSES, EPOCHS, E=2) == pytest.approx(1.875)
    assert tse.tse_e(LOSSES, EPOCHS, E=1, T=2) == pytest.approx(1.5)
    assert tse.tse_ema(LOSSES, EPOCHS, gamma=0.5) == pytest.approx(0.25 * 2.5 + 0.5 * 1.5 + 0.375)
    assert tse.tse_ema(LOSSES, EPOCHS) == pytest.approx(0.999**2 * 2.5 + 0.999 * 1.5 + 0.375)
    # authors' script convention: ema <- 0.1*ema + 0.9*L_t, started at L_1
    assert tse.tse_ema(LOSSES, EPOCHS, gamma=0.9, convention="script") == pytest.approx(
        0.1 * (0.1 * 2.5 + 0.9 * 1.5) + 0.9 * 0.375
    )


def test_epoch_order_follows_indices_not_log_order() -> None:
    assert tse.epoch_means([1.0, 5.0, 3.0], [2, 1, 2]) == [5.0, 2.0]


loss_seqs = st.lists(
    st.tuples(st.floats(0.0, 10.0), st.integers(0, 6)), min_size=1, max_size=40
).map(lambda pairs: ([p[0] for p in pairs], [p[1] for p in pairs]))


@given(loss_seqs)
def test_tse_e_with_e_equal_t_and_ema_with_gamma_one_equal_tse(seq: tuple[list[float], list[int]]) -> None:
    losses, epochs = seq
    t = len(set(epochs))
    assert tse.tse_e(losses, epochs, E=t) == pytest.approx(tse.tse(losses, epochs))
    assert tse.tse_ema(losses, epochs, gamma=1.0) == pytest.approx(tse.tse(losses, epochs))


def test_rank_key_is_lower_is_better() -> None:
    runs = {"fast": ([0.5, 0.2], [0, 1]), "slow": ([2.0, 1.5], [0, 1])}
    best = max(runs, key=lambda k: tse.rank_key(tse.tse(*runs[k])))
    assert best == "fast"


def test_budget_heuristic() -> None:
    assert tse.budget_from_epoch_losses([2.0, 1.0, 0.5, 0.2, 0.09, 0.05, 0.01, 0.01, 0.01, 0.005]) == 4  # 0.9*5
    assert tse.budget_from_epoch_losses([0.05]) == 1
    assert tse.budget_from_epoch_losses([2.0, 1.0]) is None


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="same length"):
        tse.tse([1.0], [0, 1])
    with pytest.raises(ValueError, match="no step losses"):
        tse.tse([], [])
    with pytest.raises(ValueError, match="outside"):
        tse.tse(LOSSES, EPOCHS, T=4)
    with pytest.raises(ValueError, match="gamma"):
        tse.tse_ema(LOSSES, EPOCHS, gamma=0.0)
