from __future__ import annotations

import pytest
import torch

import surgeon  # noqa: F401  (registers every block)

# One intra-op thread: the tests use small tensors, where threads cost more than they give, and CI machines are
# shared; it also keeps float reductions in one order from run to run.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
