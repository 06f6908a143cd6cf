"""Fixtures shared by the test modules."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# Test modules in the subfolders import the shared helpers (``from _helpers import ...``, ``from benchmod import
# ...``) that sit here, in tests/: pytest only puts each test file's own folder on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="module")
def one_thread():
    """Modules that run many tiny ops use one thread: avoids oversubscription slow-downs on shared CPUs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
