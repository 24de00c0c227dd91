"""The pooling helpers the blocks share: the same values as ``mean``/``amax``, and the official backward of max."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from surgeon.blocks import create_block
from surgeon.blocks._helpers import max_pool, mean_pool


@pytest.mark.parametrize("dims", [(2, 3), (1,), (2,), (3,)])
@pytest.mark.parametrize("keepdim", [True, False])
def test_mean_pool_is_mean_bit_for_bit_with_the_same_gradient(dims: tuple[int, ...], keepdim: bool) -> None:
    x = torch.randn(2, 5, 7, 3, requires_grad=True)
    ours = mean_pool(x, dims, keepdim)
    reference = x.mean(dims, keepdim=keepdim)
    assert ours.shape == reference.shape and torch.equal(ours, reference)
    upstream = torch.randn(reference.shape)
    (grad_ours,) = torch.autograd.grad(ours, x, upstream)
    (grad_reference,) = torch.autograd.grad(reference, x, upstream)
    torch.testing.assert_close(grad_ours, grad_reference, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dim", [1, (2, 3), (1, 2, 3)])
@pytest.mark.parametrize("keepdim", [True, False])
def test_max_pool_values_do_not_depend_on_the_backward(dim: int | tuple[int, ...], keepdim: bool) -> None:
    x = torch.randn(2, 4, 5, 3)
    with_indices, without = max_pool(x, dim, keepdim, True), max_pool(x, dim, keepdim, False)
    assert torch.equal(with_indices, without) and torch.equal(without, x.amax(dim, keepdim=keepdim))


def test_max_pool_over_several_dims_takes_trailing_dims_only() -> None:
    with pytest.raises(ValueError, match="trailing dims"):
        max_pool(torch.randn(2, 3, 4, 5), (1, 2), False, True)


def test_max_pool_with_indices_sends_the_gradient_to_one_tie_as_torch_max() -> None:
    x = torch.zeros(1, 3, 2, 2, requires_grad=True)  # every element ties
    (ours,) = torch.autograd.grad(max_pool(x, (2, 3), False, True).sum(), x)
    (official,) = torch.autograd.grad(F.max_pool2d(x, (2, 2)).sum(), x)  # the official CBAM channel pool
    assert torch.equal(ours, official) and ours.sum(dim=(2, 3)).eq(1).all() and ours.count_nonzero() == 3
    (spread,) = torch.autograd.grad(max_pool(x, (2, 3), False, False).sum(), x)
    assert torch.equal(spread, torch.full_like(x, 0.25))


def test_cbam_train_mode_gradient_is_the_official_one_at_ties() -> None:
    """Official CBAM: ``F.max_pool2d`` over (H, W) in the channel gate and ``torch.max(x, 1)[0]`` in the spatial
    gate; with ties (a ReLU output's zeros) only one element gets the max's gradient."""
    torch.manual_seed(0)
    block = create_block("cbam", 8, init="paper").train()
    x = torch.randn(2, 8, 5, 5).relu()
    x[:, :, :2] = 0  # whole rows of exact ties across channels and within maps
    x.requires_grad_(True)
    (ours,) = torch.autograd.grad(block(x).square().sum(), x)

    def official(t: torch.Tensor) -> torch.Tensor:
        gate = block.channel_gate

        def mlp(v: torch.Tensor) -> torch.Tensor:
            return gate.fc2(gate.act(gate.fc1(v)))

        pooled_max = F.max_pool2d(t, (t.shape[2], t.shape[3])).flatten(1)
        t = t * torch.sigmoid(mlp(t.mean((2, 3))) + mlp(pooled_max))[..., None, None]
        spatial = block.spatial_gate
        pooled = torch.cat((torch.max(t, 1)[0].unsqueeze(1), t.mean(1, keepdim=True)), dim=1)
        return t * torch.sigmoid(spatial.bn(spatial.conv(pooled)))

    x_official = x.detach().clone().requires_grad_(True)
    state = {k: v.clone() for k, v in block.state_dict().items()}
    (expected,) = torch.autograd.grad(official(x_official).square().sum(), x_official)
    block.load_state_dict(state)  # the reference pass updated the BatchNorm statistics too
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
