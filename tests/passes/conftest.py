"""Fixtures shared by the pass tests: a module-scoped temporary folder and models exported with torch.onnx."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _helpers import Attention, export_torchscript, export_torchscript_seeded


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("passes")


@pytest.fixture(scope="module")
def bert_onnx(tmp) -> str:
    from graphopt import models

    torch.manual_seed(0)
    return export_torchscript(models.get("bert_tiny", seed=0), tuple(models.example_inputs("bert_tiny", batch=1)),
                              tmp / "bert_tiny.onnx")


@pytest.fixture(scope="module")
def attn_onnx(tmp_path_factory) -> str:
    return export_torchscript_seeded(Attention(), (torch.randn(1, 8, 32),),
                                     tmp_path_factory.mktemp("attn") / "attn.onnx")
