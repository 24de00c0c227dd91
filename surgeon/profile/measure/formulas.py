"""The price list of the counter: what one call of each aten operator costs, in MACs and FLOPs.

Every formula maps ``(op overload, args, kwargs, output)`` to ``(MACs, FLOPs other than 2 x MACs)``; the counter
in :mod:`.counting` adds the two. An operator that is neither priced here nor listed as free is reported as
uncounted by the counter.

Conventions (also in :data:`CONVENTIONS`, which the report prints):

- **MACs** are the multiply-accumulates of convolution (incl. transposed and grouped), ``mm``, ``addmm``, ``bmm``,
  ``baddbmm``, ``mv``, ``dot`` and of what ``matmul``/``linear``/``einsum`` lower to, plus the two products of
  scaled-dot-product and fused multi-head attention. Only these ops have MACs.
- **FLOPs** = 2 x MACs + everything below.
- A bias added by a convolution or ``addmm``/``baddbmm``: 1 per output element.
- Element-wise ops (``add``, ``mul``, ``div``, ``sigmoid``, ``relu``, ``hardswish``, ``gelu``, ``exp``, comparisons,
  ``where``, ...): 1 per output element per op, whatever the op's internal cost (sigmoid counts 1, not 4); fused
  ops count their parts (``addcmul``/``addcdiv`` 2, ``lerp`` 3). Broadcasting counts the broadcast output, so
  ``x * gate`` costs ``x.numel()``.
- Reductions (``sum``, ``mean``, ``amax``, ``max``, ``prod``, ``cumsum``, ...): 1 per input element; ``var``/``std``
  3, vector norms 2, ``logsumexp`` 3.
- Pooling: max and average pooling 1 per window element per output (padding included); adaptive pooling 1 per
  element of its exact windows.
- Softmax and log-softmax: 3 per input element (exp, sum, divide).
- Normalisation: batch norm with running statistics (eval) 2 per element (the folded scale and shift); norms that
  compute statistics (layer, group, instance, batch norm in training) 5 per element (mean 1, variance 2, normalise
  2) plus 1 for the weight and 1 for the bias when present; RMS norm 3 per element plus 1 for the weight.
- Interpolation per output element: linear 3, bilinear 7, trilinear 15, bicubic 31 (the 2^d, resp. 16, weighted
  inputs: multiplies plus adds); antialiased variants as the plain ones; nearest is data movement (free).
- Attention: MACs of Q K^T and of the weights times V; 1 per element of Q and of K for the scale (applied as
  sqrt(scale) to both, like torch's reference implementation), 3 per score for the softmax and 1 per score for an
  additive mask; causal attention is counted as dense (an upper bound).
- Free: views and reshapes, permutes, copies and dtype casts, cat/stack/split, padding, indexing and gathers,
  nearest upsampling, pixel/channel shuffles, tensor factories (empty/zeros/ones/full/arange/random).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["CONVENTIONS", "ELEMENTWISE", "FORMULAS", "FREE", "Formula", "arg"]

CONVENTIONS = """\
MACs: multiply-accumulates of conv, mm/addmm/bmm/baddbmm/mv/dot (matmul, linear, einsum lower to these) and of the
  two products of attention; no other op has MACs.
FLOPs = 2 x MACs, plus:
  bias of conv/addmm: 1 per output element
  element-wise ops (add, mul, div, sigmoid, relu, hardswish, gelu, ...): 1 per output element
    (addcmul/addcdiv 2, lerp 3); a broadcast x * gate costs x.numel()
  reductions (sum, mean, amax, max, cumsum, ...): 1 per input element (var/std 3, norm 2, logsumexp 3)
  max/avg pooling: 1 per window element per output; adaptive pooling: 1 per element of each window
  softmax, log_softmax: 3 per input element
  batch norm, eval (running stats): 2 per element; layer/group/instance norm and training batch norm:
    5 per element + 1 for weight + 1 for bias; RMS norm: 3 per element + 1 for weight
  interpolation per output element: linear 3, bilinear 7, trilinear 15, bicubic 31; nearest is free
  attention: 1 per element of Q and K (scale), 3 per score (softmax), + 1 per score for a mask; causal counted dense
free: views, reshapes, permutes, copies, casts, cat/stack/split, padding, indexing, factories, nearest upsampling
any other op is listed as uncounted, not treated as free"""


# A formula maps (op overload, args, kwargs, output) to (MACs, FLOPs excluding 2 x MACs).
Formula = Callable[[torch._ops.OpOverload, Sequence, dict, object], tuple[int, int]]


def arg(args: Sequence, kwargs: dict, index: int, name: str, default: object = None) -> object:
    if index < len(args):
        return args[index]
    return kwargs.get(name, default)


def _first_tensor(value: object) -> Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


def _prod(values: Sequence[int]) -> int:
    return math.prod(int(v) for v in values)


# --- products -------------------------------------------------------------------------------------------------


def _mm(func, args, kwargs, out):
    (m, k), n = args[0].shape, args[1].shape[-1]
    return m * k * n, 0


def _addmm(func, args, kwargs, out):
    (m, k), n = args[1].shape, args[2].shape[-1]
    return m * k * n, m * n


def _bmm(func, args, kwargs, out):
    (b, m, k), n = args[0].shape, args[1].shape[-1]
    return b * m * k * n, 0


def _baddbmm(func, args, kwargs, out):
    (b, m, k), n = args[1].shape, args[2].shape[-1]
    return b * m * k * n, out.numel()


def _mv(func, args, kwargs, out):
    return args[0].numel(), 0


def _addmv(func, args, kwargs, out):
    return args[1].numel(), out.numel()


def _dot(func, args, kwargs, out):
    return args[0].numel(), 0


def _convolution(func, args, kwargs, out):
    x, weight, bias = args[0], args[1], arg(args, kwargs, 2, "bias")
    transposed = bool(arg(args, kwargs, 6, "transposed", False))
    # weight is (C_out, C_in/g, *k), or (C_in, C_out/g, *k) when transposed: each output (resp. input) element
    # takes prod(weight.shape[1:]) multiply-accumulates.
    positions = x.numel() if transposed else out.numel()
    macs = positions * _prod(weight.shape[1:])
    return macs, out.numel() if bias is not None else 0


def _attention_cost(query: Tensor, key: Tensor, value: Tensor, mask: bool) -> tuple[int, int]:
    """Cost of softmax(scale * Q K^T [+ mask]) V for Q: (..., Lq, E), K: (..., Lk, E), V: (..., Lk, Ev).

    The scale is applied as torch's reference implementation does, sqrt(scale) to Q and to K, so that a fused
    kernel and its decomposition (e.g. on the meta device) count the same.
    """
    scores = _prod(query.shape[:-1]) * key.shape[-2]
    macs = scores * (query.shape[-1] + value.shape[-1])
    scaled = _prod(query.shape) + _prod(query.shape[:-2]) * key.shape[-2] * key.shape[-1]
    return macs, scaled + scores * (3 + int(mask))


def _sdpa(func, args, kwargs, out):
    # the mask is positional (attn_bias) in the efficient/cudnn kernels and keyword-only in the CPU kernel
    candidates = (args[3] if len(args) > 3 else None, kwargs.get("attn_bias"), kwargs.get("attn_mask"))
    return _attention_cost(args[0], args[1], args[2], any(isinstance(c, Tensor) for c in candidates))


def _native_mha(func, args, kwargs, out):
    query, key = args[0], args[1]
    embed_dim, heads = int(args[3]), int(args[4])
    mask = arg(args, kwargs, 9, "mask")
    batch, lq, lk = _prod(query.shape[:-2]), query.shape[-2], key.shape[-2]
    # E x E projections: q and out over the queries, k and v over the keys; each with a bias
    projected = batch * (2 * lq + 2 * lk)
    scores = batch * heads * lq * lk
    macs = projected * embed_dim * embed_dim + scores * 2 * (embed_dim // heads)
    scaled = batch * (lq + lk) * embed_dim  # sqrt(scale) on Q and on K, as in _attention_cost
    return macs, projected * embed_dim + scaled + scores * (3 + int(isinstance(mask, Tensor)))


# --- element-wise, reductions, pooling, normalisation ----------------------------------------------------------


def _per_output(cost: int) -> Formula:
    def formula(func, args, kwargs, out):
        return 0, cost * _first_tensor(out).numel()

    return formula


def _per_input(cost: int) -> Formula:
    def formula(func, args, kwargs, out):
        return 0, cost * args[0].numel()

    return formula


def _max_min(func, args, kwargs, out):
    # max.other / min.other are element-wise; max() / max.dim reduce.
    if func._overloadname in ("other", "out"):
        return 0, _first_tensor(out).numel()
    return 0, args[0].numel()


def _pool_window(spatial_dims: int) -> Formula:
    def formula(func, args, kwargs, out):
        kernel = arg(args, kwargs, 1, "kernel_size")
        kernel = [kernel] * spatial_dims if isinstance(kernel, int) else list(kernel)
        if len(kernel) == 1:
            kernel = kernel * spatial_dims
        return 0, _first_tensor(out).numel() * _prod(kernel)

    return formula


def _adaptive_pool(func, args, kwargs, out):
    x, out_tensor = args[0], _first_tensor(out)
    spatial_dims = len(arg(args, kwargs, 1, "output_size"))
    window_total = 1
    for size_in, size_out in zip(x.shape[-spatial_dims:], out_tensor.shape[-spatial_dims:], strict=True):
        # torch's adaptive windows: [floor(i * in / out), ceil((i + 1) * in / out))
        window_total *= sum(-(-(i + 1) * size_in // size_out) - (i * size_in // size_out) for i in range(size_out))
    return 0, x.numel() // _prod(x.shape[-spatial_dims:]) * window_total


def _affine(weight: object, bias: object) -> int:
    return int(weight is not None) + int(bias is not None)


def _batch_norm(func, args, kwargs, out):
    x, weight, bias = args[0], arg(args, kwargs, 1, "weight"), arg(args, kwargs, 2, "bias")
    name, overload = func._overloadpacket.__name__, func._overloadname
    if name == "_native_batch_norm_legit_no_training":
        training = False
    elif name == "_native_batch_norm_legit" and overload.startswith("no_stats"):
        training = True
    else:
        training = bool(arg(args, kwargs, 5, "training", False))
    if not training:
        return 0, 2 * x.numel()
    return 0, (5 + _affine(weight, bias)) * x.numel()


def _layer_norm(func, args, kwargs, out):
    weight, bias = arg(args, kwargs, 2, "weight"), arg(args, kwargs, 3, "bias")
    return 0, (5 + _affine(weight, bias)) * args[0].numel()


def _group_norm(func, args, kwargs, out):
    weight, bias = arg(args, kwargs, 1, "weight"), arg(args, kwargs, 2, "bias")
    return 0, (5 + _affine(weight, bias)) * args[0].numel()


def _rms_norm(func, args, kwargs, out):
    weight = arg(args, kwargs, 2, "weight")
    return 0, (3 + int(weight is not None)) * args[0].numel()


def _grid_sampler(func, args, kwargs, out):
    mode = int(arg(args, kwargs, 2, "interpolation_mode", 0))  # 0 bilinear, 1 nearest, 2 bicubic
    per_output = {0: 7, 1: 0, 2: 31}.get(mode, 7) if args[0].dim() == 4 else {0: 15, 1: 0}.get(mode, 15)
    return 0, per_output * out.numel()


ELEMENTWISE = """
    add sub rsub mul div true_divide floor_divide remainder fmod neg abs sign sgn reciprocal sqrt rsqrt square pow
    exp exp2 expm1 log log2 log10 log1p sin cos tan asin acos atan atan2 sinh cosh tanh asinh acosh atanh erf erfc
    erfinv sigmoid logit relu relu6 hardtanh hardsigmoid hardswish silu mish gelu elu selu celu leaky_relu
    _prelu_kernel softplus softshrink hardshrink threshold clamp clamp_min clamp_max clip minimum maximum fmin fmax
    floor ceil round trunc frac eq ne lt le gt ge logical_and logical_or logical_xor logical_not bitwise_and
    bitwise_or bitwise_xor bitwise_not where masked_fill nan_to_num hypot xlogy isnan isinf isfinite heaviside
    copysign
""".split()

_REDUCTIONS = "sum nansum mean nanmean amax amin prod argmax argmin any all cumsum cumprod count_nonzero".split()

FREE = set("""
    empty empty_like empty_strided new_empty new_empty_strided zeros zeros_like new_zeros ones ones_like new_ones
    full full_like new_full fill zero scalar_tensor arange linspace logspace eye rand randn randint rand_like
    randn_like randint_like normal uniform randperm bernoulli lift_fresh lift_fresh_copy clone copy _copy_from
    _copy_from_and_resize _to_copy to contiguous _unsafe_view view_copy reshape cat stack hstack vstack split_copy
    constant_pad_nd pad reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d replication_pad2d
    replication_pad3d index index_select gather take embedding repeat roll flip tile masked_select index_put
    scatter slice_scatter select_scatter diagonal_scatter as_strided_scatter upsample_nearest1d upsample_nearest2d
    upsample_nearest3d _upsample_nearest_exact1d _upsample_nearest_exact2d _upsample_nearest_exact3d pixel_shuffle
    pixel_unshuffle channel_shuffle native_channel_shuffle _local_scalar_dense item detach alias resize set
    is_same_size size sym_size stride sym_stride dim numel sym_numel storage_offset sym_storage_offset
    is_contiguous sym_is_contiguous is_strides_like_format is_non_overlapping_and_dense device layout
""".split())

FORMULAS: dict[str, Formula] = {
    "mm": _mm,
    "addmm": _addmm,
    "_addmm_activation": lambda func, args, kwargs, out: (_addmm(func, args, kwargs, out)[0], 2 * out.numel()),
    "bmm": _bmm,
    "baddbmm": _baddbmm,
    "mv": _mv,
    "addmv": _addmv,
    "dot": _dot,
    "vdot": _dot,
    "convolution": _convolution,
    "_convolution": _convolution,
    "_scaled_dot_product_flash_attention_for_cpu": _sdpa,
    "_scaled_dot_product_flash_attention": _sdpa,
    "_scaled_dot_product_efficient_attention": _sdpa,
    "_scaled_dot_product_cudnn_attention": _sdpa,
    "_native_multi_head_attention": _native_mha,
    **{name: _per_output(1) for name in ELEMENTWISE},
    "addcmul": _per_output(2),
    "addcdiv": _per_output(2),
    "lerp": _per_output(3),
    **{name: _per_input(1) for name in _REDUCTIONS},
    "max": _max_min,
    "min": _max_min,
    "var": _per_input(3),
    "std": _per_input(3),
    "var_mean": _per_input(3),
    "std_mean": _per_input(3),
    "norm": _per_input(2),
    "linalg_vector_norm": _per_input(2),
    "logsumexp": _per_input(3),
    "_softmax": _per_input(3),
    "_log_softmax": _per_input(3),
    "_safe_softmax": _per_input(3),
    "softmax": _per_input(3),
    "log_softmax": _per_input(3),
    **{f"max_pool{d}d": _pool_window(d) for d in (1, 2, 3)},
    **{f"max_pool{d}d_with_indices": _pool_window(d) for d in (1, 2, 3)},
    **{f"avg_pool{d}d": _pool_window(d) for d in (1, 2, 3)},
    "_adaptive_avg_pool2d": _adaptive_pool,
    "_adaptive_avg_pool3d": _adaptive_pool,
    "adaptive_max_pool2d": _adaptive_pool,
    "adaptive_max_pool3d": _adaptive_pool,
    "native_batch_norm": _batch_norm,
    "_native_batch_norm_legit": _batch_norm,
    "_native_batch_norm_legit_no_training": _batch_norm,
    "cudnn_batch_norm": _batch_norm,
    "miopen_batch_norm": _batch_norm,
    "native_layer_norm": _layer_norm,
    "native_group_norm": _group_norm,
    "_fused_rms_norm": _rms_norm,
    "upsample_linear1d": _per_output(3),
    "upsample_bilinear2d": _per_output(7),
    "_upsample_bilinear2d_aa": _per_output(7),
    "upsample_trilinear3d": _per_output(15),
    "upsample_bicubic2d": _per_output(31),
    "_upsample_bicubic2d_aa": _per_output(31),
    "grid_sampler_2d": _grid_sampler,
    "grid_sampler_3d": _grid_sampler,
}
