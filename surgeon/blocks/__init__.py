"""Attention blocks and convolution swaps, one per file, registered by name.

Importing this package registers every built-in block; see :func:`list_blocks`.
"""

from ._helpers import IdentityGate, make_divisible, reduced_channels
from ._portable import keep_importable
from ._registry import (
    EXPORT_STATUSES,
    INIT_MODES,
    SITE_ARGS,
    BlockInfo,
    Misfit,
    SwapBlock,
    block_arguments,
    builtin_registration,
    check_init,
    create_block,
    get_block,
    is_builtin_block,
    list_blocks,
    register_block,
    validate_block_args,
)

with builtin_registration():  # every block registered by the imports below is one of ours
    from .bam import BAM
    from .cbam import CBAM
    from .ccnet import CrissCrossAttention
    from .coord import CoordAttention
    from .cpca import ChannelPriorConvAttention
    from .danet import ChannelAttention, PositionAttention
    from .eca import EfficientChannelAttention, eca_kernel_size
    from .ela import EfficientLocalAttention
    from .ema import EfficientMultiScaleAttention
    from .gam import GlobalAttentionMechanism
    from .gc import GlobalContext
    from .lsk import LargeSelectiveKernel
    from .lska import LargeSeparableKernelAttention, lska_kernels
    from .mhsa import BottleneckMHSA
    from .mlca import MixedLocalChannelAttention
    from .non_local import NonLocalBlock
    from .residual_attention import ResidualAttention
    from .sa import ShuffleAttention
    from .scconv import SCBottleneckStem, SCConv
    from .scsa import SCSA
    from .se import SqueezeExcite
    from .simam import SimAM
    from .sk import SelectiveKernel
    from .triplet import TripletAttention

__all__ = [
    "BAM",
    "EXPORT_STATUSES",
    "INIT_MODES",
    "SITE_ARGS",
    "BlockInfo",
    "Misfit",
    "BottleneckMHSA",
    "CBAM",
    "ChannelAttention",
    "ChannelPriorConvAttention",
    "CoordAttention",
    "CrissCrossAttention",
    "EfficientChannelAttention",
    "EfficientLocalAttention",
    "EfficientMultiScaleAttention",
    "GlobalAttentionMechanism",
    "GlobalContext",
    "IdentityGate",
    "LargeSelectiveKernel",
    "LargeSeparableKernelAttention",
    "MixedLocalChannelAttention",
    "NonLocalBlock",
    "PositionAttention",
    "ResidualAttention",
    "SCBottleneckStem",
    "SCConv",
    "SCSA",
    "SelectiveKernel",
    "ShuffleAttention",
    "SimAM",
    "SqueezeExcite",
    "SwapBlock",
    "TripletAttention",
    "block_arguments",
    "check_init",
    "create_block",
    "eca_kernel_size",
    "get_block",
    "is_builtin_block",
    "keep_importable",
    "list_blocks",
    "lska_kernels",
    "make_divisible",
    "reduced_channels",
    "register_block",
    "validate_block_args",
]
