"""The channel-shrinking mutation (passes/autogo/shrink.py) on a ResNet-20 lowered from PyTorch."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from graphopt.models import get
from graphopt.passes.autogo.mutate import _per_sample_flops
from graphopt.passes.autogo.shrink import shrink_chain, shrink_chains, shrink_mutate

from graphopt.backends.torch import to_torch
from graphopt.eval.distill import replaced_regions
from graphopt.frontends.torch import from_torch


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    m = get("resnet20", seed=0).eval()
    block = m.layer1[0]
    with torch.no_grad():  # four inner channels of the first block that carry nothing: zero filter, zero shift
        for k in (1, 5, 9, 13):
            block.conv1.weight[k] = 0
            block.bn1.bias[k] = 0
            block.bn1.running_mean[k] = 0
        for bn in (mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)):  # non-trivial statistics
            bn.running_var.uniform_(0.5, 2.0)
    return m


@pytest.fixture(scope="module")
def graph(net):
    return from_torch(net, (torch.zeros(2, 3, 32, 32),), dynamic_batch=True)


def test_every_basic_block_is_one_chain(graph):
    chains = shrink_chains(graph)
    assert len(chains) == 9  # conv1 -> bn1 -> relu -> conv2 of each block; the stem's ReLU also feeds a shortcut
    assert all([n.op for n in ch] == ["conv", "batch_norm", "relu", "conv"] for ch in chains)


def test_removing_dead_channels_is_exact_against_pytorch(net, graph):
    chain = next(ch for ch in shrink_chains(graph) if np.all(ch[0].inputs[1].const[1] == 0))
    child, info = shrink_chain(graph, [n.name for n in chain], 0.25, "t1")
    assert (info["channels_before"], info["channels_after"]) == (16, 12)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(to_torch(child).eval()(x).numpy(), net(x).numpy(), rtol=1e-4, atol=1e-5)
    assert sum(_per_sample_flops(child).values()) < sum(_per_sample_flops(graph).values())
    # the parent is untouched, and the changed chain is one region for segment-local distillation whose output
    # keeps the teacher's shape
    assert chain[0].inputs[1].const.shape[0] == 16
    regions = replaced_regions(graph, child)
    assert len(regions) == 1 and regions[0].nodes == [n.name for n in chain]
    assert regions[0].teacher_outputs == [chain[-1].outputs[0].name]


def test_mutation_keeps_the_weights_of_the_kept_channels(graph):
    m = shrink_mutate(graph, random.Random(3))
    assert m is not None and m.mutation.selection == "shrink-channels"
    assert m.mutation.flops_after < m.mutation.flops_before
    names = m.mutation.source_nodes
    a_old = graph.find_node(names[0]).inputs[1].const
    a_new = m.graph.find_node(names[0]).inputs[1].const
    assert a_new.shape[0] < a_old.shape[0]
    assert all(any(np.array_equal(f, g) for g in a_old) for f in a_new)  # kept filters, bit for bit
    assert m.graph.meta["autogo_mutations"] == graph.meta.get("autogo_mutations", 0) + 1


def test_distillation_refines_a_shrunk_chain_from_its_kept_weights(graph):
    """The shrunk chain's weights stay trainable: segment-local distillation lowers its output error, starting
    below 1 (the kept channels already carry most of the block) and refining at the inherited rate."""
    from graphopt.eval.data import load_dataset
    from graphopt.eval.distill import distill_regions

    chain = shrink_chains(graph)[4]
    child, _ = shrink_chain(graph, [n.name for n in chain], 0.5, "t2")
    data = load_dataset("cifar10-demo", seed=0, train_size=256).train
    rep = distill_regions(graph, child, data, steps=60, batch_size=32, cache_batches=4)
    assert rep.regions == 1 and rep.error_before < 1.0
    assert rep.error_after < 0.8 * rep.error_before


def test_one_mutation_may_shrink_several_chains_each_its_own_region(graph):
    m = shrink_mutate(graph, np.random.default_rng(0), ratios=(0.25,), spread=(4,))
    assert m is not None and len(m.mutation.source_segments) == 4
    regions = replaced_regions(graph, m.graph)
    assert sorted(r.nodes for r in regions) == sorted(m.mutation.source_segments)
    cut = 1 - m.mutation.flops_after / m.mutation.flops_before
    assert 0.08 < cut < 0.2  # four of 19 convs lose a quarter of their inputs, four a quarter of their filters
    x = torch.randn(2, 3, 32, 32)
    assert to_torch(m.graph).eval()(x).shape == (2, 10)


def test_overlapping_chains_of_a_plain_conv_stack_shrink_together():
    """conv -> relu -> conv -> relu -> conv: the middle conv ends one chain and starts the next."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 8, 3, padding=1)).eval()
    g = from_torch(net, (torch.zeros(2, 3, 8, 8),), dynamic_batch=True)
    assert len(shrink_chains(g)) == 2
    m = shrink_mutate(g, np.random.default_rng(0), ratios=(0.5,), spread=(2,))
    convs = [n for n in m.graph.nodes if n.op == "conv"]
    assert [c.inputs[1].const.shape[:2] for c in convs] == [(8, 3), (8, 8), (8, 8)]
    assert to_torch(m.graph).eval()(torch.randn(2, 3, 8, 8)).shape == (2, 8, 8, 8)
