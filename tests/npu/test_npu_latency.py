"""The analytic NPU latency model: closed-form roofline on hand-built graphs, fallback cost, [perf] validation."""

from __future__ import annotations

import numpy as np
import pytest

from graphopt.ir import DType, Graph, TensorType
from graphopt.npu.latency import estimate_latency
from graphopt.npu.profiles import ProfileError, load_profile, parse_profile


def _conv_graph(cout: int, act: str = "relu") -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("c")
    x = g.add_input("x", TensorType(DType.float32, (1, 16, 8, 8)))
    w = g.add_const("w", rng.standard_normal((cout, 16, 3, 3)).astype(np.float32), "param")
    b = g.add_const("b", np.zeros(cout, np.float32), "param")
    y = g.create_node("conv", [x, w, b], {"pads": [1, 1, 1, 1]}, name="conv").output
    g.set_outputs([g.create_node(act, [y], name="act").output])
    return g


def test_conv_time_is_the_roofline_with_channel_alignment():
    prof = load_profile("generic-npu-int8")
    p = prof.perf
    rep = estimate_latency(_conv_graph(20), prof)
    macs = 20 * 16 * 9 * 64 + 20 * 64 / 2  # the registry's conv FLOPs count the bias add: 2*MACs + outputs
    util = 20 / 32  # 20 output channels on a 16-aligned array occupy 32 lanes
    compute = macs / (p.macs_per_cycle * p.clock_mhz * 1e6 * util)
    nbytes = 16 * 64 + 20 * 16 * 9 + 20 + 20 * 64  # int8: input, weight, bias, output
    memory = nbytes / (p.bandwidth_gbps * 1e9)
    assert rep.per_node_us["conv"] == pytest.approx(max(compute, memory) * 1e6, rel=1e-9)
    relu = max(20 * 64 / (p.vector_ops_per_cycle * p.clock_mhz * 1e6), 2 * 20 * 64 / (p.bandwidth_gbps * 1e9))
    assert rep.per_node_us["act"] == pytest.approx(relu * 1e6, rel=1e-9)
    assert rep.fallback_nodes == []
    # 32 channels fill the 16-aligned array: 1.6x the MACs in the same array time, so memory now bounds it.
    rep32 = estimate_latency(_conv_graph(32), prof)
    compute32 = (32 * 16 * 9 * 64 + 32 * 64 / 2) / (p.macs_per_cycle * p.clock_mhz * 1e6)
    assert compute32 == pytest.approx(compute, rel=1e-2)
    memory32 = (16 * 64 + 32 * 16 * 9 + 32 + 32 * 64) / (p.bandwidth_gbps * 1e9)
    assert rep32.per_node_us["conv"] == pytest.approx(max(compute32, memory32) * 1e6, rel=1e-9)


def test_op_the_profile_rejects_runs_on_the_host_and_costs_more():
    prof = load_profile("ethos-u55-like")  # no Gelu unit
    fast = estimate_latency(_conv_graph(16, "relu"), prof)
    slow = estimate_latency(_conv_graph(16, "gelu"), prof)
    assert slow.fallback_nodes == ["act"] and fast.fallback_nodes == []
    assert slow.per_node_us["act"] >= prof.perf.fallback_overhead_us
    assert slow.total_us > fast.total_us


def test_profiles_differ_in_perf_and_bad_perf_is_rejected():
    totals = {n: estimate_latency(_conv_graph(16), load_profile(n)).total_us
              for n in ("generic-npu-int8", "ethos-u55-like", "edgetpu-like")}
    assert len(set(totals.values())) == 3
    doc = {"target": {"name": "t"}, "ops": {"allow": ["Relu"]}, "perf": {"clock_mhz": -1}}
    with pytest.raises(ProfileError, match=r"\[perf\] clock_mhz must be a positive number"):
        parse_profile(doc, "t.toml")
    doc["perf"] = {"clock": 100}
    with pytest.raises(ProfileError, match="unknown key 'clock'"):
        parse_profile(doc, "t.toml")
