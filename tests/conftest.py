from __future__ import annotations

import pytest
import torch

import surgeon  # noqa: F401  (registers every block)

# One intra-op thread: the tests use small tensors, where threads cost more than they give, and CI machines are
# shared; it also keeps float reductions in one order from run to run.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _signature_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Architecture detection caches signatures under the user cache; the tests use their own (built once)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("ATTN_SURGEON_CACHE", str(tmp_path_factory.mktemp("signatures")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
