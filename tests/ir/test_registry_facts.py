"""Op facts that passes read from the registry (graphopt/ir/registry.py) agree with what the ops compute."""

from __future__ import annotations

import pytest
import torch

from graphopt.ir.registry import all_ops, get_op, is_commutative


def _operands(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    if get_op(name).category == "compare" and name != "equal":
        return a > 0, b > 0  # logical ops take booleans
    if name == "equal":
        return a.round(), b.round()
    return a, b


@pytest.mark.parametrize("name", sorted(n for n, d in all_ops().items() if d.commutative))
def test_a_commutative_op_gives_the_same_result_for_swapped_inputs(name):
    a, b = _operands(name)
    fn = get_op(name).fn
    torch.testing.assert_close(fn(a, b), fn(b, a))


@pytest.mark.parametrize("name", ["sub", "div", "pow", "matmul", "greater", "concat"])
def test_order_dependent_ops_are_not_commutative(name):
    assert not is_commutative(name)


def test_unknown_op_is_not_commutative():
    assert not is_commutative("no_such_op")
