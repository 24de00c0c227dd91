"""Attention blocks and convolution swaps, one per file, registered by name.

Importing this package registers every built-in block; see :func:`list_blocks`.
"""

from ._helpers import IdentityGate, make_divisible, reduced_channels
from ._registry import BlockInfo, block_arguments, create_block, get_block, list_blocks, register_block
from .cbam import CBAM
from .coord import CoordAttention
from .eca import EfficientChannelAttention, eca_kernel_size
from .se import SqueezeExcite

__all__ = [
    "BlockInfo",
    "CBAM",
    "CoordAttention",
    "EfficientChannelAttention",
    "IdentityGate",
    "SqueezeExcite",
    "block_arguments",
    "create_block",
    "eca_kernel_size",
    "get_block",
    "list_blocks",
    "make_divisible",
    "reduced_channels",
    "register_block",
]
