from __future__ import annotations

import pytest
import torch

import surgeon  # noqa: F401  (registers every block)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
