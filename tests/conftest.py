from __future__ import annotations

import warnings

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


@pytest.fixture(autouse=True)
def _dynamo_config_unchanged(request: pytest.FixtureRequest) -> None:
    """No test may leave torch's dynamo configuration changed, or an option hidden, for the tests after it.

    Options are read one by one: an option deleted from the config module (as ``monkeypatch.setattr`` undoes an
    attribute it did not find in the module's ``__dict__``) still appears in ``get_config_copy()`` but no longer reads.
    """
    config = torch._dynamo.config
    before = config.get_config_copy()
    yield
    missing = object()
    with warnings.catch_warnings():  # reading deprecated options warns
        warnings.simplefilter("ignore", FutureWarning)
        changed = sorted(key for key, value in before.items() if getattr(config, key, missing) != value)
    if changed:
        config.load_config(before)
        pytest.fail(f"{request.node.nodeid} left torch._dynamo.config changed or unreadable: {', '.join(changed)}")
