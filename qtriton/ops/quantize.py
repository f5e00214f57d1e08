"""Launchers for the quantize / dequantize kernels (`qtriton.kernels.quantize`).

Each function takes torch tensors on CUDA (or on CPU under TRITON_INTERPRET=1), already
validated by `qtriton.api`, allocates the outputs, picks the launch parameters and
launches; nothing here reads a device value back (no host sync). Results equal
`qtriton.reference` bit for bit.

Layouts: the kernels take strides, so transposed and sliced inputs are read in place
whenever the tensor can be *viewed* as the 2-D (rows, K) or 3-D (outer, C, inner) shape a
kernel works on (`Tensor.reshape` returns a view then). Only layouts with no such view,
e.g. a permuted 3-D tensor whose leading axes do not merge, are copied first (by that same
`reshape`). Rows stored with stride 1 across rows (a transposed input) go to the channel
kernel, whose tiles are wide along that contiguous axis. Outputs are always contiguous.

Devices: Triton launches on the *current* CUDA device, so every launch runs under
`_on_device(x)`, which makes x's device the current one.
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton

from qtriton import checks, reference
from qtriton.kernels import quantize as _kernels
from qtriton.tensors import device_tensor

# Rows up to this many elements are quantized in one pass from registers (one read of x);
# longer rows are reduced, then quantized, in chunks of up to TWO_PASS_BLOCK_K.
MAX_SINGLE_PASS_K = 16384
TWO_PASS_BLOCK_K = 4096
# Elements per program for the elementwise and per-tensor kernels: wide enough for
# 16-byte vector loads per thread and few enough programs to amortize the launch.
TILE_ELEMENTS = 4096
# Partial ranges the per-tensor finalize program reduces per loop step (at most one tile).
PARTIALS_BLOCK = 1024
# Contiguous bytes each row of a channel tile reads when the channels are the contiguous
# axis: two full 32-byte sectors, with as few channels per program as that allows so that
# a (4096, 4096) weight still gets hundreds of programs.
CHANNEL_SEGMENT_BYTES = 64

_GRANULARITIES = ("tensor", "channel", "token")


def _num_warps(tile_elements: int) -> int:
    """Warps for a tile: about 8 to 32 elements per thread, 4 to 16 warps."""
    return min(16, max(4, tile_elements // 512))


def _code_dtype(symmetric: bool) -> torch.dtype:
    return torch.int8 if symmetric else torch.uint8


def _on_device(x: torch.Tensor):
    """Context making x's GPU the current CUDA device (Triton launches on the current one,
    whatever device the tensors are on); a no-op off CUDA."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """x as a 2-D (rows, K) tensor in row-major order of its elements: one row for
    contiguous and 1-D tensors (the widest tiles), the last axis as K otherwise (a view
    for transposed / sliced 2-D tensors, a copy only when no view exists)."""
    if x.dim() <= 1 or x.is_contiguous():
        return x.reshape(1, -1)
    return x.reshape(-1, x.shape[-1])


def _tile_2d(m: int, k: int, stride_m: int, stride_k: int, tile: int) -> tuple[int, int]:
    """(BLOCK_SIZE_M, BLOCK_SIZE_K) for an elementwise pass over an (m, k) tensor: as wide as
    possible along the contiguous axis (K normally, M for a transposed input, capped at 64
    so the contiguous output writes stay wide too)."""
    if stride_m == 1 and stride_k != 1 and m > 1:
        block_m = min(triton.next_power_of_2(m), 64, tile)
        return block_m, min(triton.next_power_of_2(k), max(1, tile // block_m))
    block_k = min(triton.next_power_of_2(k), tile)
    return min(triton.next_power_of_2(m), max(1, tile // block_k)), block_k


def _empty_params(shape, symmetric: bool, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Parameters of empty slices, as the reference gives them: scale 1.0, zero point 0."""
    scale = torch.ones(shape, dtype=torch.float32, device=device)
    return scale, None if symmetric else torch.zeros(shape, dtype=torch.int32, device=device)


def _result(q, scale, zero_point, symmetric: bool):
    return (q, scale) if symmetric else (q, scale, zero_point)


# ----------------------------------------------------------------------- row-wise
def _rows_are_columns(x2: torch.Tensor) -> bool:
    """True when the 2-D x2 is stored with stride 1 across rows but not along them (a
    transposed input): the row kernel would then read each row at a large stride."""
    m, k = x2.shape
    return m > 1 and k > 1 and x2.stride(0) == 1 and x2.stride(1) != 1


def _quantize_rows(x2, q2, scale, zero_point, num_bits, symmetric, max_single_pass_k, tile, include_zero=False,
                   code_offset=0, input_scale=None, static_scale=None, hadamard_block=None) -> None:
    """Row-wise quantization of the 2-D x2 (M, K) into q2 (contiguous), scale and zero
    point (M,). A transposed x2 goes to the channel kernel: its rows are the channels of
    the (K, M, 1) view, and the channel tiles are wide along M, the contiguous axis. That
    kernel takes no input or static scale and no rotation: with any, a transposed x2 is
    copied first."""
    options = input_scale is not None or static_scale is not None or hadamard_block is not None
    if options and _rows_are_columns(x2):
        x2 = x2.contiguous()
    if _rows_are_columns(x2):
        _launch_channels(x2.t().unsqueeze(2), q2.t().unsqueeze(2), scale, zero_point, num_bits, symmetric, tile,
                         include_zero, code_offset)
    else:
        _launch_rows(x2, q2, scale, zero_point, num_bits, symmetric, max_single_pass_k, include_zero, code_offset,
                     input_scale, static_scale, hadamard_block)


def _launch_rows(x2, q2, scale, zero_point, num_bits, symmetric, max_single_pass_k, include_zero, code_offset,
                 input_scale=None, static_scale=None, hadamard_block=None) -> None:
    """hadamard_block (a power of two dividing K, or None): each row rotated first. A tile
    then holds whole blocks: the two-pass tile is at least one block wide."""
    m, k = x2.shape
    single_pass = k <= max_single_pass_k
    if single_pass:
        block_k = triton.next_power_of_2(k)
    else:  # the largest power of two within the limit, so a forced small limit still loops
        block_k = max(min(TWO_PASS_BLOCK_K, 1 << (max_single_pass_k.bit_length() - 1)), hadamard_block or 1)
    block_m = min(triton.next_power_of_2(m), max(1, TILE_ELEMENTS // block_k))
    hadamard_scale = 1.0 if hadamard_block is None else float(reference.hadamard_scale(hadamard_block))
    # No FMAs in a rotation: x * input_scale and a butterfly's add round twice in the oracle.
    compile_options = {} if hadamard_block is None else {"enable_fp_fusion": False}
    with _on_device(x2):
        _kernels._quantize_rows_kernel[(triton.cdiv(m, block_m),)](
            x2, q2, scale, zero_point, input_scale, static_scale,
            m, k,
            x2.stride(0), x2.stride(1),
            NUM_BITS=num_bits, SYMMETRIC=symmetric, INCLUDE_ZERO=include_zero, CODE_OFFSET=code_offset,
            HADAMARD_BLOCK=hadamard_block or 1, HADAMARD_SCALE=hadamard_scale,
            BLOCK_SIZE_M=block_m, BLOCK_SIZE_K=block_k, SINGLE_PASS=single_pass,
            num_warps=_num_warps(block_m * block_k), **compile_options,
        )


def _quantize_per_token(x: torch.Tensor, num_bits: int = 8, symmetric: bool = True, *, include_zero: bool = False,
                        hadamard_block: int | None = None, max_single_pass_k: int = MAX_SINGLE_PASS_K,
                        tile: int = TILE_ELEMENTS):
    """One scale (and zero point) per row: per index of every axis but the last.
    Returns (q, scales of shape x.shape[:-1] float32[, zero points int32, same shape]).
    include_zero (asymmetric): each row's range includes 0, zero points in [0, 2^b - 1]
    (reference.quantize_per_token's include_zero). hadamard_block (a power of two dividing
    K): the codes of reference.hadamard_rotate(x, hadamard_block), rotated in the kernel.
    Rows of up to max_single_pass_k elements are read once, longer ones twice. Rows
    stored with stride 1 across rows (x.t() of a contiguous x) go to the channel kernel,
    in tiles of `tile` elements (rows longer than a tile holds are read twice)."""
    q = torch.empty(x.shape, dtype=_code_dtype(symmetric), device=x.device)
    if x.numel() == 0:
        return _result(q, *_empty_params(x.shape[:-1], symmetric, x.device), symmetric)
    scale = torch.empty(x.shape[:-1], dtype=torch.float32, device=x.device)
    zero_point = None if symmetric else torch.empty(x.shape[:-1], dtype=torch.int32, device=x.device)
    k = x.shape[-1]
    _quantize_rows(
        x.reshape(-1, k), q.view(-1, k), scale.view(-1),
        None if symmetric else zero_point.view(-1),
        num_bits, symmetric, max_single_pass_k, tile, include_zero and not symmetric, hadamard_block=hadamard_block,
    )
    return _result(q, scale, zero_point, symmetric)


def _quantize_activations(rows: torch.Tensor, symmetric: bool, input_scale: torch.Tensor | None = None,
                          static_scale: torch.Tensor | None = None, hadamard_block: int | None = None, *,
                          max_single_pass_k: int = MAX_SINGLE_PASS_K, tile: int = TILE_ELEMENTS):
    """Int8Linear's activations in one pass: `reference.quantize_activations`. rows (M, K)
    float; input_scale (K,) float32 or None; static_scale 0-d float32 or None (symmetric
    codes with it); hadamard_block (a power of two dividing K) or None: rows * input_scale
    rotated in the kernel before the rest. Returns (q (M, K) int8, scale (M,) float32, zero
    point (M,) int32 or None). Asymmetric codes come as int8 q - 128 with zero point - 128:
    q - zero point is unchanged, and int8 is what the GEMM's plain K loop reads (uint8 it
    shifts per tile)."""
    symmetric = symmetric or static_scale is not None
    m, k = rows.shape
    q = torch.empty((m, k), dtype=torch.int8, device=rows.device)
    scale = torch.empty(m, dtype=torch.float32, device=rows.device)
    zero_point = None if symmetric else torch.empty(m, dtype=torch.int32, device=rows.device)
    if q.numel() == 0:  # nothing to read, nothing NaN: the oracle's empty-slice parameters
        scale.copy_(static_scale.expand(m) if static_scale is not None else torch.ones(m))
        return q, scale, None if symmetric else zero_point.fill_(-128)
    _quantize_rows(rows, q, scale, zero_point, 8, symmetric, max_single_pass_k, tile, not symmetric,
                   0 if symmetric else 128, input_scale, static_scale, hadamard_block)
    return q, scale, zero_point


# ----------------------------------------------------------------------- per channel
def _quantize_per_channel(x: torch.Tensor, axis: int, num_bits: int = 8, symmetric: bool = True, *,
                          max_single_pass_k: int = MAX_SINGLE_PASS_K, tile: int = TILE_ELEMENTS):
    """One scale (and zero point) per index along axis (negative counts from the end).
    Returns (q, scales (C,) float32[, zero points (C,) int32]). tile: elements per
    (outer, channel, inner) tile; a slice larger than one tile is read twice.

    x is viewed as (outer, C, inner). With outer == 1 (axis 0: the rows of a weight) each
    channel is a row and the row-wise kernel runs (the channel kernel on the (inner, C, 1)
    view when those rows are transposed); otherwise the 3-D channel kernel reduces over
    outer and inner for blocks of channels."""
    axis = axis % x.dim()
    channels = x.shape[axis]
    outer, inner = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1:])
    q = torch.empty(x.shape, dtype=_code_dtype(symmetric), device=x.device)
    if x.numel() == 0:
        return _result(q, *_empty_params((channels,), symmetric, x.device), symmetric)
    scale = torch.empty(channels, dtype=torch.float32, device=x.device)
    zero_point = None if symmetric else torch.empty(channels, dtype=torch.int32, device=x.device)
    if outer == 1:
        _quantize_rows(x.reshape(channels, inner), q.view(channels, inner), scale, zero_point,
                       num_bits, symmetric, max_single_pass_k, tile)
    else:
        _launch_channels(x.reshape(outer, channels, inner), q.view(outer, channels, inner),
                         scale, zero_point, num_bits, symmetric, tile)
    return _result(q, scale, zero_point, symmetric)


def _channel_blocks(outer: int, channels: int, inner: int, element_size: int, tile: int) -> tuple[int, int, int]:
    """(BLOCK_SIZE_O, BLOCK_SIZE_C, BLOCK_SIZE_I) of about `tile` elements for the channel
    kernel: wide along inner when inner > 1; when inner == 1 (the channels are the
    contiguous axis) CHANNEL_SEGMENT_BYTES worth of channels (16 float32, 32 float16),
    enough for full sectors and few enough for many programs, with outer filling the tile."""
    if inner == 1:
        block_c = min(triton.next_power_of_2(channels), max(1, CHANNEL_SEGMENT_BYTES // element_size), tile)
        return min(triton.next_power_of_2(outer), max(1, tile // block_c)), block_c, 1
    block_i = min(triton.next_power_of_2(inner), tile)
    block_o = min(triton.next_power_of_2(outer), max(1, tile // block_i))
    block_c = min(triton.next_power_of_2(channels), max(1, tile // (block_i * block_o)), 64)
    return block_o, block_c, block_i


def _launch_channels(x3, q3, scale, zero_point, num_bits, symmetric, tile, include_zero=False, code_offset=0) -> None:
    """Per-channel quantization of the 3-D (outer, C, inner) x3 into the (outer, C, inner)
    view q3 of a contiguous q (any strides), scale and zero point (C,)."""
    outer, channels, inner = x3.shape
    block_o, block_c, block_i = _channel_blocks(outer, channels, inner, x3.element_size(), tile)
    with _on_device(x3):
        _kernels._quantize_channels_kernel[(triton.cdiv(channels, block_c),)](
            x3, q3, scale, zero_point,
            outer, channels, inner,
            x3.stride(0), x3.stride(1), x3.stride(2),
            q3.stride(0), q3.stride(1), q3.stride(2),
            NUM_BITS=num_bits, SYMMETRIC=symmetric, INCLUDE_ZERO=include_zero, CODE_OFFSET=code_offset,
            BLOCK_SIZE_O=block_o, BLOCK_SIZE_C=block_c, BLOCK_SIZE_I=block_i,
            SINGLE_PASS=outer <= block_o and inner <= block_i,
            num_warps=_num_warps(block_o * block_c * block_i),
        )


# ----------------------------------------------------------------------- per tensor
def _tensor_params(x2: torch.Tensor, num_bits: int, symmetric: bool, tile: int):
    """Scale (0-d float32) and zero point (0-d int32, or None) of the 2-D x2, computed on
    the device: partial ranges per tile, then one program reduces them."""
    m, k = x2.shape
    block_m, block_k = _tile_2d(m, k, x2.stride(0), x2.stride(1), tile)
    num_partials = triton.cdiv(m, block_m) * triton.cdiv(k, block_k)
    partial_hi = torch.empty(num_partials, dtype=torch.float32, device=x2.device)
    partial_lo = None if symmetric else torch.empty_like(partial_hi)
    scale = torch.empty((), dtype=torch.float32, device=x2.device)
    zero_point = None if symmetric else torch.empty((), dtype=torch.int32, device=x2.device)
    with _on_device(x2):
        _kernels._tensor_range_partials_kernel[(num_partials,)](
            x2, partial_lo, partial_hi,
            m, k,
            x2.stride(0), x2.stride(1),
            SYMMETRIC=symmetric, BLOCK_SIZE_M=block_m, BLOCK_SIZE_K=block_k,
            num_warps=_num_warps(block_m * block_k),
        )
        _kernels._tensor_params_kernel[(1,)](
            partial_lo, partial_hi, scale, zero_point,
            num_partials,
            NUM_BITS=num_bits, SYMMETRIC=symmetric,
            BLOCK_SIZE=min(PARTIALS_BLOCK, tile, triton.next_power_of_2(num_partials)),
            num_warps=4,
        )
    return scale, zero_point


def _launch_tensor_quantize(x2, out, scale, zero_point, num_bits, symmetric, fake, tile) -> None:
    m, k = x2.shape
    block_m, block_k = _tile_2d(m, k, x2.stride(0), x2.stride(1), tile)
    grid = (triton.cdiv(m, block_m) * triton.cdiv(k, block_k),)
    with _on_device(x2):
        _kernels._quantize_tensor_kernel[grid](
            x2, out, scale, zero_point,
            m, k,
            x2.stride(0), x2.stride(1),
            NUM_BITS=num_bits, SYMMETRIC=symmetric, FAKE=fake,
            OUT_MAX=torch.finfo(out.dtype).max if fake else 0.0,  # fake: saturate at out's dtype
            BLOCK_SIZE_M=block_m, BLOCK_SIZE_K=block_k,
            num_warps=_num_warps(block_m * block_k),
        )


def _quantize_per_tensor(x: torch.Tensor, num_bits: int = 8, symmetric: bool = True, *,
                         tile: int = TILE_ELEMENTS):
    """One scale (and zero point) for the whole tensor: three launches (partial ranges,
    parameters, quantization), no host sync. Returns (q, scale 0-d float32[, zero point
    0-d int32]). tile: elements per program (tests shrink it to get many partials)."""
    q = torch.empty(x.shape, dtype=_code_dtype(symmetric), device=x.device)
    if x.numel() == 0:
        return _result(q, *_empty_params((), symmetric, x.device), symmetric)
    x2 = _as_rows(x)
    scale, zero_point = _tensor_params(x2, num_bits, symmetric, tile)
    _launch_tensor_quantize(x2, q.view(x2.shape), scale, zero_point, num_bits, symmetric, False, tile)
    return _result(q, scale, zero_point, symmetric)


def _fake_quantize(x: torch.Tensor, num_bits: int = 8, symmetric: bool = True, *,
                   tile: int = TILE_ELEMENTS) -> torch.Tensor:
    """reference.fake_quantize: dequantize(quantize_per_tensor(x)) saturated at x's dtype's
    largest finite value, in x's dtype, the last two steps fused into one elementwise pass
    (no integer tensor is written)."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        return out
    x2 = _as_rows(x)
    scale, zero_point = _tensor_params(x2, num_bits, symmetric, tile)
    _launch_tensor_quantize(x2, out.view(x2.shape), scale, zero_point, num_bits, symmetric, True, tile)
    return out


# ----------------------------------------------------------------------- dequantize
def _dequantize(q: torch.Tensor, scale, zero_point=None, *, granularity: str, axis: int | None = None,
                out_dtype: torch.dtype = torch.float32, tile: int = TILE_ELEMENTS) -> torch.Tensor:
    """(q - zero_point) * scale in float32, cast to out_dtype. granularity "tensor" (0-d
    scale), "channel" (scales (q.shape[axis],)) or "token" (scales q.shape[:-1]). scale
    and zero_point are tensors (any device, moved to q's) or Python numbers (filled on
    q's device, no host-to-device copy)."""
    if granularity not in _GRANULARITIES:
        raise ValueError(f"granularity must be one of {_GRANULARITIES}, got {granularity!r}")
    if granularity == "channel" and axis is None:
        raise ValueError("axis is required for granularity='channel'")
    out = torch.empty(q.shape, dtype=out_dtype, device=q.device)
    if q.numel() == 0:
        return out
    scale = device_tensor(scale, torch.float32, q.device).reshape(-1).contiguous()
    if zero_point is not None:
        zero_point = device_tensor(zero_point, torch.int32, q.device).reshape(-1).contiguous()

    scale_per_column = False
    if granularity == "tensor":
        q2 = _as_rows(q)
    elif granularity == "token":
        q2 = q.reshape(-1, q.shape[-1])
    else:
        axis = axis % q.dim()
        channels = q.shape[axis]
        outer, inner = math.prod(q.shape[:axis]), math.prod(q.shape[axis + 1:])
        scale_per_column = inner == 1
        q2 = q.reshape(outer, channels) if scale_per_column else q.reshape(outer * channels, inner)
    m, k = q2.shape
    block_m, block_k = _tile_2d(m, k, q2.stride(0), q2.stride(1), tile)
    grid = (triton.cdiv(m, block_m) * triton.cdiv(k, block_k),)
    with _on_device(q2):
        _kernels._dequantize_kernel[grid](
            q2, scale, zero_point, out,
            m, k, scale.numel(),
            q2.stride(0), q2.stride(1),
            SCALE_PER_COLUMN=scale_per_column,
            BLOCK_SIZE_M=block_m, BLOCK_SIZE_K=block_k,
            num_warps=_num_warps(block_m * block_k),
        )
    return out


# ------------------------------------------------------------------ public entries
# The same rules and messages as the lab API (qtriton.checks), on metadata and Python numbers
# only: values in tensors are not read (no host sync; a NaN scale is the kernels' signal of
# an unquantizable slice). The triton backend calls the unchecked functions above: the API
# has checked its arguments already.
def _check_input(x, num_bits: int, symmetric, min_ndim: int = 0) -> tuple[int, bool]:
    checks.kernel_float_input(x, "x")
    if x.dim() < min_ndim:
        raise ValueError(f"x must have at least {min_ndim} dimension(s), got shape {tuple(x.shape)}")
    return checks.num_bits(num_bits), checks.flag(symmetric, "symmetric")


def quantize_per_token(x: torch.Tensor, num_bits: int = 8, symmetric: bool = True, *,
                       include_zero: bool = False, hadamard_block: int | None = None, **launch):
    """One scale (and zero point) per row: per index of every axis but the last.
    Returns (q, scales of shape x.shape[:-1] float32[, zero points int32, same shape]).
    include_zero (asymmetric): each row's range includes 0. hadamard_block (a power of two
    dividing K): each row rotated first, in the kernel (reference.hadamard_rotate); a row
    whose rotation overflows float32 gets the NaN scale of a row holding Inf. launch:
    max_single_pass_k, tile (test hooks, see _quantize_per_token)."""
    num_bits, symmetric = _check_input(x, num_bits, symmetric, min_ndim=1)
    if not isinstance(include_zero, bool):
        raise TypeError(f"include_zero must be a bool, got {type(include_zero).__name__}")
    hadamard_block = checks.hadamard_block(hadamard_block, x.shape[-1])
    return _quantize_per_token(x, num_bits, symmetric, include_zero=include_zero, hadamard_block=hadamard_block,
                               **launch)


def quantize_per_channel(x: torch.Tensor, axis: int, num_bits: int = 8, symmetric: bool = True, **launch):
    """One scale (and zero point) per index along axis (negative counts from the end).
    Returns (q, scales (C,) float32[, zero points (C,) int32]). launch: max_single_pass_k,
    tile (test hooks, see _quantize_per_channel)."""
    num_bits, symmetric = _check_input(x, num_bits, symmetric, min_ndim=1)
    return _quantize_per_channel(x, checks.axis(axis, x.dim()), num_bits, symmetric, **launch)


def quantize_per_tensor(x: torch.Tensor, num_bits: int = 8, symmetric: bool = True, **launch):
    """One scale (and zero point) for the whole tensor, no host sync. Returns (q, scale 0-d
    float32[, zero point 0-d int32]). launch: tile (test hook)."""
    num_bits, symmetric = _check_input(x, num_bits, symmetric)
    return _quantize_per_tensor(x, num_bits, symmetric, **launch)


def fake_quantize(x: torch.Tensor, num_bits: int = 8, symmetric: bool = True, **launch) -> torch.Tensor:
    """dequantize(quantize_per_tensor(x)) in x's dtype, fused (no integer tensor written),
    saturated at x's dtype's largest finite value (reference.fake_quantize: finite in,
    finite out; float16 [-65504, 65504] asymmetric would otherwise give -inf).
    The caller's duty, unread: x without NaN / Inf (else a NaN result). launch: tile (test hook)."""
    num_bits, symmetric = _check_input(x, num_bits, symmetric)
    return _fake_quantize(x, num_bits, symmetric, **launch)


def dequantize(q: torch.Tensor, scale, zero_point=None, *, granularity: str, axis: int | None = None,
               out_dtype: torch.dtype = torch.float32, **launch) -> torch.Tensor:
    """(q - zero_point) * scale in float32, cast to out_dtype. granularity "tensor" (scale
    0-d), "channel" (scales (q.shape[axis],)) or "token" (scales q.shape[:-1]). scale and
    zero_point: tensors (any device, moved to q's) or Python numbers (a float scale rounded
    to float32, refused unless positive, finite and normal there; any int32 zero point).
    A zero-point tensor must be int32 or narrower (int64 could hold 2**40, which the kernel's
    int32 wraps: TypeError, unread). The caller's duty, unread: scale tensors positive,
    finite and normal in float32; no zero point -2**31."""
    checks.torch_tensor(q, "q")
    checks.quantized(q, "q")
    checks.kernel_device(q, "q")
    if granularity not in _GRANULARITIES:
        raise ValueError(f"granularity must be one of {_GRANULARITIES}, got {granularity!r}")
    if granularity == "channel":
        if axis is None:
            raise ValueError("axis is required for granularity='channel'")
        axis = checks.axis(axis, q.dim())
    lengths = (q.shape[axis],) if granularity == "channel" else ()
    for name, value, integer in (("scale", scale, False), ("zero_point", zero_point, True)):
        if value is None and integer:
            continue
        checks.tensor_or_number(value, name, integer)
        if granularity == "token" and checks.is_tensor(value):
            checks.rows(value, name, tuple(q.shape[:-1]), None, integer)
            if integer:
                checks.zero_point_range(value, name, checks.INT32_MAX, read_values=False)
        elif integer:
            zero_point = checks.zero_point(value, name, lengths, None, checks.INT32_MAX, read_values=False)
        else:
            scale = checks.scale(value, name, lengths, None, read_values=False)
    out_dtype = checks.OUT_DTYPES[checks.out_dtype_name(out_dtype)][1]
    return _dequantize(q, scale, zero_point, granularity=granularity, axis=axis, out_dtype=out_dtype, **launch)


# The unchecked entries under public names: the triton backend calls them (the API has
# checked its arguments once, before).
quantize_per_token_unchecked = _quantize_per_token
quantize_activations_unchecked = _quantize_activations
quantize_per_channel_unchecked = _quantize_per_channel
quantize_per_tensor_unchecked = _quantize_per_tensor
fake_quantize_unchecked = _fake_quantize
dequantize_unchecked = _dequantize
