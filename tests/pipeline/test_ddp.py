"""Patched models under DistributedDataParallel (issue 7): torchrun with two CPU processes, and every block.

DDP without ``find_unused_parameters`` fails at the second step when a parameter got no gradient in the first
("Expected to have finished reduction in the prior iteration"); a one-process gloo group is enough to trigger it,
so every registered block is checked in-process and only the end-to-end example spawns two processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import surgeon
from examples.digits.model import INPUT_SIZE, build
from tests._util import REPO

ARCH = "examples.digits.model:build"
SHAPE = (1, 1, INPUT_SIZE, INPUT_SIZE)


@pytest.fixture(scope="module")
def process_group(tmp_path_factory: pytest.TempPathFactory) -> None:
    store = dist.FileStore(str(tmp_path_factory.mktemp("ddp") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def two_ddp_steps(model: torch.nn.Module) -> None:
    ddp = DistributedDataParallel(model.train())
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        ddp(torch.randn(4, *SHAPE[1:], generator=generator)).square().mean().backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


# Blocks whose official defaults do not fit the digits model's 16- to 32-channel units (4x4 at the last), with options
# that do.
FITS_THE_DIGITS_MODEL = {"ema": {"factor": 8}, "sa": {"groups": 4}, "ela": {"gn_groups": 8}}


@pytest.mark.parametrize("init", ["identity", "paper"])
@pytest.mark.parametrize("block", [info.name for info in surgeon.list_blocks("insert")])
def test_every_insert_block_trains_under_ddp_without_unused_parameters(process_group, block: str,
                                                                        init: str) -> None:
    torch.set_num_threads(1)
    model = surgeon.insert(build(), block, after="bottleneck", init=init, input_shape=SHAPE,
                           **FITS_THE_DIGITS_MODEL.get(block, {}))
    two_ddp_steps(model)


# scbottleneck replaces a Bottleneck's 1x1 and 3x3 units together: the digits model's BasicBlocks have no such pair.
@pytest.mark.parametrize("block", [info.name for info in surgeon.list_blocks("swap") if info.name != "scbottleneck"])
def test_every_swap_block_trains_under_ddp_without_unused_parameters(process_group, block: str) -> None:
    torch.set_num_threads(1)
    model = surgeon.swap(build(), block, conv="conv3x3", stride=1, input_shape=SHAPE)
    two_ddp_steps(model)


def test_unused_parameter_is_caught(process_group) -> None:
    """The check above can fail: a parameter outside the forward breaks DDP's second step."""
    model = build()
    model.unused = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="finished reduction"):
        two_ddp_steps(model)


def test_torchrun_two_cpu_processes_finetune_save_and_reload(tmp_path: Path) -> None:
    output = tmp_path / "digits_eca_ddp.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "examples/finetune_ddp.py", "--block", "eca", "--max-steps", "3", "-o", str(output)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo on CPU even on a GPU runner
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for rank in (0, 1):
        assert (f"rank {rank}: 3 steps, parameters identical on all 2 ranks: True, reloaded {output} equals the "
                "trained model: True") in done.stdout

    reloaded = surgeon.load(output, arch=ARCH)
    base = torch.load(REPO / "examples/digits/digits_resnet.pt", weights_only=True)
    state = reloaded.state_dict()
    assert set(state) - set(base) == {key for key in state if ".eca_residual." in key} != set()
    assert set(base) <= set(state)
    assert not torch.equal(state["layer1.conv1.weight"], base["layer1.conv1.weight"])  # it did train
    assert not any(key.startswith("module.") for key in state)


def test_save_unwraps_ddp_and_compile_wrappers(process_group, tmp_path: Path) -> None:
    model = surgeon.insert(build(), "eca", after="bottleneck", input_shape=SHAPE)
    for label, wrapped in (("ddp", DistributedDataParallel(model)), ("compiled", torch.compile(model))):
        assert surgeon.recipe_of(wrapped) is surgeon.recipe_of(model)
        surgeon.save(wrapped, tmp_path / f"{label}.pt")
        state = torch.load(tmp_path / f"{label}.pt", weights_only=True)
        assert list(state) == list(model.state_dict())  # no "module." or "_orig_mod." prefix
        reloaded = surgeon.load(tmp_path / f"{label}.pt", arch=ARCH)
        assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in model.state_dict().items())
