"""Fine-tune a patched model on several processes with PyTorch's own DistributedDataParallel.

Run from the repository root, on CPU (gloo) or one process per GPU (nccl)::

    torchrun --nproc_per_node 2 examples/finetune_ddp.py --block eca --epochs 2

Each process builds the digits ResNet, loads its trained weights (``examples/digits/digits_resnet.pt``), inserts
the block with ``surgeon.insert``, and wraps the model in ``DistributedDataParallel`` exactly as it would wrap
any model: no ``find_unused_parameters``, since every inserted parameter takes part in every forward (an
identity-initialised gate gets a zero gradient, not no gradient). Rank 0 saves the fine-tuned model with
``surgeon.save``; then every rank rebuilds it with ``surgeon.load`` and checks it against its own copy.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

if __package__ in (None, ""):  # run as a file (torchrun examples/finetune_ddp.py): make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import surgeon
from examples.digits.data import load_split
from examples.digits.engine import evaluate
from examples.digits.model import INPUT_SIZE, build

ARCH = "examples.digits.model:build"
CHECKPOINT = Path(__file__).resolve().parent / "digits" / "digits_resnet.pt"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", default="eca", help="attention block to insert at every residual unit")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("-o", "--output", type=Path, default=Path("out/digits_ddp.pt"))
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _setup() -> tuple[int, int, torch.device]:
    """Join the process group that torchrun describes in the environment; one GPU per process where there are."""
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=2))
    device = torch.device("cpu")
    if use_cuda:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def _same_on_every_rank(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether every rank holds bit-identical parameters (compared through two checksums)."""
    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()]).to(device)
    checksum = torch.stack([flat.sum(), (flat * torch.arange(len(flat), device=device, dtype=flat.dtype)).sum()])
    gathered = [torch.empty_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    return all(torch.equal(g, checksum) for g in gathered)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    rank, world, device = _setup()
    # Same seed on every rank (DDP also broadcasts rank 0's weights when it wraps the model). Not
    # torch.use_deterministic_algorithms: on CUDA it would need CUBLAS_WORKSPACE_CONFIG set before start-up.
    torch.manual_seed(args.seed)
    data = load_split()

    model = build()
    model.load_state_dict(torch.load(CHECKPOINT, map_location="cpu", weights_only=True))
    surgeon.insert(model, args.block, after="bottleneck", input_shape=(1, 1, INPUT_SIZE, INPUT_SIZE))
    model.to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    dataset = TensorDataset(data.train_images, data.train_labels)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    steps = 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        ddp.train()
        for images, labels in loader:
            loss = F.cross_entropy(ddp(images.to(device)), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if args.max_steps is not None and steps >= args.max_steps:
                break
        if rank == 0:
            print(f"epoch {epoch + 1}: last loss {loss.item():.4f} ({steps} steps of {world} x {args.batch_size})")
        if args.max_steps is not None and steps >= args.max_steps:
            break

    identical = _same_on_every_rank(model, device)
    # BatchNorm statistics are each rank's own since the last forward (DDP re-broadcasts rank 0's at the next
    # one); take rank 0's now, so that every rank holds what rank 0 saves.
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
    if rank == 0:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        surgeon.save(ddp, args.output, force=True)  # unwrapped: the keys carry no "module." prefix
    dist.barrier()
    # The file names no architecture (the model was patched in Python); --arch-style rebuild from this repo.
    reloaded = surgeon.load(args.output, arch=ARCH)
    own = {k: v.cpu() for k, v in model.state_dict().items()}
    same = own.keys() == reloaded.state_dict().keys() and all(
        torch.equal(own[k], v) for k, v in reloaded.state_dict().items())
    accuracy, _ = evaluate(reloaded, data.test_images, data.test_labels)
    print(f"rank {rank}: {steps} steps, parameters identical on all {world} ranks: {identical}, "
          f"reloaded {args.output} equals the trained model: {same}, test accuracy {accuracy:.2%}")
    dist.destroy_process_group()
    if not (identical and same):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
