"""Segment-local distillation (graphopt.eval.distill): the replaced regions are found by comparing a candidate
with its teacher, and training them on the teacher's activations recovers a replacement that can represent the
original exactly; knowledge distillation on the logits in train_model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import SmallNet
from graphopt.passes.autogo.mutate import replace_segment

from graphopt.backends.torch import to_torch
from graphopt.eval.data import load_dataset
from graphopt.eval.distill import distill_regions, replaced_regions
from graphopt.frontends.torch import from_torch
from graphopt.ir.graph import Graph


@pytest.fixture(scope="module")
def teacher() -> Graph:
    torch.manual_seed(0)
    net = SmallNet()
    with torch.no_grad():  # non-trivial normalization statistics, as a trained network has
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return from_torch(net.eval(), (torch.randn(2, 3, 32, 32),), dynamic_batch=True)


def _replace_conv(teacher: Graph, name: str, seed: int = 1) -> Graph:
    """``teacher`` with conv ``name`` replaced by x * 1 -> a conv of the same shape with fresh weights (a
    replacement that can represent the original exactly), through the AutoGO stitching code. (A lone conv would
    be aligned with the source and carry its weights over.)"""
    conv = teacher.find_node(name)
    w = conv.inputs[1]
    rep = Graph("replacement")
    x = rep.add_input("in0", conv.inputs[0].type)
    one = rep.create_node("mul", [x, rep.add_const("one", np.ones((), np.float32))], name="scale").outputs[0]
    fresh = np.random.default_rng(seed).normal(0, 0.1, w.const.shape).astype(np.float32)
    rep.set_outputs([rep.create_node("conv", [one, rep.add_const("w", fresh, "param")], dict(conv.attrs),
                                     name="newconv").outputs[0]])
    return replace_segment(teacher, [conv], rep, tag="autogo1")


def _error(teacher: Graph, child: Graph, x: torch.Tensor) -> float:
    with torch.no_grad():
        a, b = to_torch(teacher).eval()(x), to_torch(child).eval()(x)
    return float((a - b).abs().max() / a.abs().max())


def test_regions_are_the_replaced_nodes_with_the_teachers_boundary(teacher):
    child = _replace_conv(teacher, "block.3")
    (r,) = replaced_regions(teacher, child)
    assert len(r.nodes) == 2 and "block.3" not in r.nodes
    assert r.inputs == ["block.2"]  # the kept relu's output, computed by the teacher under the same name
    assert r.teacher_outputs == ["block.3"]  # what the kept batch norm reads in the teacher
    assert replaced_regions(teacher, teacher.copy()) == []


def test_two_separate_replacements_are_two_regions(teacher):
    child = _replace_conv(_replace_conv(teacher, "block.0"), "down.0", seed=2)
    regions = replaced_regions(teacher, child)
    assert sorted(r.teacher_outputs[0] for r in regions) == ["block.0", "down.0"]


def test_distillation_recovers_an_exactly_representable_replacement(teacher):
    child = _replace_conv(teacher, "block.3")
    data = load_dataset("cifar10-demo", seed=0, train_size=256).train
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32))
    kept = {k: v.const.copy() for k, v in child.constants.items() if not k.startswith("autogo")}
    before = _error(teacher, child, x)
    rep = distill_regions(teacher, child, data, steps=200, batch_size=32, lr=1e-2)
    after = _error(teacher, child, x)
    assert rep.regions == 1 and rep.steps == 200
    assert rep.error_after < 1e-2 * rep.error_before  # normalized MSE at the segment output: near zero
    assert after < 0.1 * before and after < 0.02  # the whole network output follows
    for k, a in kept.items():  # nothing outside the replaced segment changed
        np.testing.assert_array_equal(child.constants[k].const, a)


def test_training_with_a_teacher_adds_the_distillation_loss():
    """With kd_alpha=1 the loss is the T^2-scaled KL to the teacher only: a student equal to its teacher has
    loss 0 at step 0 whatever the labels say."""
    from graphopt.eval.train import TrainConfig, train_model

    torch.manual_seed(0)
    net = SmallNet().eval()
    student = SmallNet().eval()
    student.load_state_dict(net.state_dict())
    data = load_dataset("cifar10-demo", seed=0, train_size=64).train
    cfg = TrainConfig(steps=1, batch_size=32, lr=0.0, kd_alpha=1.0, augment=False, eval_every=0)
    res = train_model(student.eval(), data, cfg, teacher=net)
    assert res.status == "ok" and res.step_losses[0] < 0.2  # BN train-mode statistics differ slightly
    res_ce = train_model(student.eval(), data, TrainConfig(steps=1, batch_size=32, lr=0.0, augment=False,
                                                           eval_every=0))
    assert res_ce.step_losses[0] > 1.0  # an untrained net's cross-entropy is ~ln 10


def test_distillation_cycles_over_cached_teacher_batches(teacher):
    """The teacher runs once per cached batch, not once per step; the cache shrinks to fit its memory limit;
    the cached steps still reach the near-exact fit."""
    child = _replace_conv(teacher, "block.3")
    data = load_dataset("cifar10-demo", seed=0, train_size=256).train
    rep = distill_regions(teacher, child, data, steps=200, batch_size=32, lr=1e-2, cache_batches=4)
    assert rep.cached_batches == 4 and rep.steps == 200
    assert rep.error_after < 1e-2 * rep.error_before
    tiny = distill_regions(teacher, _replace_conv(teacher, "block.3"), data, steps=10, batch_size=32,
                           cache_batches=8, cache_mb=1e-6)
    assert tiny.cached_batches == 1 and tiny.steps == 10
