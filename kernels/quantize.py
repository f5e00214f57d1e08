"""Quantize / dequantize kernels: per tensor, per channel (any axis), per token (row).

The arithmetic is `qtriton.reference`'s, operation for operation, in float32:

    symmetric   scale = max(absmax / qmax, FLT_MIN)     q = clamp(rint(x / scale), -qmax - 1, qmax)
    asymmetric  scale = max((hi - lo) / qmax, FLT_MIN)  zp = round_half_up(-lo / scale)
                q = clamp(rint(x / scale + zp), 0, qmax)

with scale 1.0 for an all-zero (constant) slice, and scale NaN, zero point 0, q 0 for a
slice that cannot be quantized (NaN or Inf in it, hi - lo overflowing, |zp| > 2^24).
Every division is `tl.math.div_rn` (Triton's `/` on float32 is an approximation on GPU),
rint is `_round_half_even` (the zero point's `_round_half_up`, so that lo lands on 0 and
hi on qmax even when -lo / scale is a tie), and every float -> int cast comes after a
clamp (casts truncate and wrap).

NaN handling: `tl.max` / `tl.minimum` may drop NaNs on GPU, so a NaN never reaches a
reduction. The reduction operands map NaN to the value that poisons the slice the same
way Inf does (+inf for absmax, -inf for the min, +inf for the max); the parameter
helpers then turn any non-finite statistic into a NaN scale.

Per token, a row can be rotated before it is quantized (x -> x R, R block-diagonal Hadamard /
sqrt(b): `reference.hadamard_rotate`): `_hadamard_rows` runs the oracle's butterflies in its
order on the tile in registers. Its launches disable FP fusion: the input scale's multiply
fused with a butterfly's add into an FMA would round once where the oracle rounds twice.

The launchers (grid, block sizes, warps, allocation) are in `qtriton/ops/quantize.py`.
"""

from __future__ import annotations

import triton
import triton.language as tl

from qtriton.kernels.common import _cast_rne

FLT_MIN = tl.constexpr(2.0**-126)  # the smallest normal float32
FLT_MAX = tl.constexpr(3.4028234663852886e38)
ZERO_POINT_LIMIT = tl.constexpr(2.0**24)  # integers up to here are exact in float32
ROUNDING_MAGIC = tl.constexpr(2.0**23)  # float32 values at or above it are whole
MAX_HADAMARD_STAGES = tl.constexpr(14)  # butterfly stages of the largest rotation block (checks: 2^14)


# ----------------------------------------------------------------------------- helpers
@triton.jit
def _round_half_even(v):
    """rint(v) for float32: |v| + 2^23 lands where the float32 spacing is exactly 1, so the
    hardware's round-to-nearest-even addition rounds the fraction away (2^23 is even, so the
    parity of the result is that of the rounded |v|); |v| >= 2^23 (and NaN) is already whole.
    libdevice.rint would do, but it does not run in Triton's interpreter."""
    magnitude = tl.abs(v)
    rounded = (magnitude + ROUNDING_MAGIC) - ROUNDING_MAGIC
    rounded = tl.where(v < 0, -rounded, rounded)
    return tl.where(magnitude < ROUNDING_MAGIC, rounded, v)


@triton.jit
def _round_half_up(v):
    """Round to nearest, ties toward +inf: rint, plus one where it went down from an exact
    .5 (r - v is exact in float32: r and v are within 0.5 of each other)."""
    rounded = _round_half_even(v)
    return tl.where(rounded - v == -0.5, rounded + 1.0, rounded)


@triton.jit
def _is_finite(v):
    return tl.abs(v) <= FLT_MAX  # False for NaN as well


@triton.jit
def _to_float32(v):
    """v (float32, float16 or bfloat16) as float32, exactly. bfloat16 goes through its bits
    (the upper half of a float32, as the hardware converts): Triton's interpreter turns
    bfloat16 denormals into wrong float32 values (-2.76e-40 into -5.88e-39)."""
    if v.dtype == tl.bfloat16:
        return (v.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        return v.to(tl.float32)


@triton.jit
def _range_operands(x, mask, SYMMETRIC: tl.constexpr):
    """Reduction operands (lo, hi) of a float32 tile, NaN-free: symmetric: both are |x|
    (NaN -> +inf, masked -> 0); asymmetric: x for the min (NaN -> -inf, masked -> +inf) and
    x for the max (NaN -> +inf, masked -> -inf)."""
    is_nan = x != x  # noqa: PLR0124 (the NaN test)
    if SYMMETRIC:
        magnitude = tl.where(mask, tl.where(is_nan, float("inf"), tl.abs(x)), 0.0)
        return magnitude, magnitude
    else:
        lo = tl.where(mask, tl.where(is_nan, float("-inf"), x), float("inf"))
        hi = tl.where(mask, tl.where(is_nan, float("inf"), x), float("-inf"))
        return lo, hi


@triton.jit
def _reduce_range(lo, hi, axis: tl.constexpr, SYMMETRIC: tl.constexpr):
    """(min of lo, max of hi) along axis; symmetric: (absmax, absmax) from hi alone."""
    hi = tl.max(hi, axis=axis)
    if SYMMETRIC:
        return hi, hi
    else:
        return tl.min(lo, axis=axis), hi


@triton.jit
def _merge_range(lo, hi, other_lo, other_hi, SYMMETRIC: tl.constexpr):
    hi = tl.maximum(hi, other_hi)
    if SYMMETRIC:
        return hi, hi
    else:
        return tl.minimum(lo, other_lo), hi


@triton.jit
def _empty_range(BLOCK_SIZE: tl.constexpr, SYMMETRIC: tl.constexpr):
    """(BLOCK_SIZE,) identities of _merge_range: absmax 0, or min +inf / max -inf."""
    if SYMMETRIC:
        zero = tl.zeros((BLOCK_SIZE,), dtype=tl.float32)
        return zero, zero
    else:
        return tl.full((BLOCK_SIZE,), float("inf"), tl.float32), tl.full((BLOCK_SIZE,), float("-inf"), tl.float32)


@triton.jit
def _quant_params(lo, hi, NUM_BITS: tl.constexpr, SYMMETRIC: tl.constexpr, INCLUDE_ZERO: tl.constexpr):
    """(scale, zero point as float32) of slices with min lo and max hi (symmetric: hi is
    the absmax, zero point 0). INCLUDE_ZERO (asymmetric): the range is [min(lo, 0),
    max(hi, 0)], so the zero point lies in [0, qmax]. Unquantizable slices get scale NaN
    and zero point 0."""
    if SYMMETRIC:
        QMAX: tl.constexpr = (1 << (NUM_BITS - 1)) - 1
        scale = tl.maximum(tl.math.div_rn(hi, QMAX * 1.0), FLT_MIN)
        scale = tl.where(hi == 0, 1.0, scale)
        scale = tl.where(_is_finite(hi), scale, float("nan"))
        return scale, tl.zeros_like(scale)
    else:
        QMAX: tl.constexpr = (1 << NUM_BITS) - 1
        if INCLUDE_ZERO:  # lo and hi are NaN-free here (NaN was folded into +-inf)
            lo = tl.minimum(lo, 0.0)
            hi = tl.maximum(hi, 0.0)
        finite = _is_finite(lo) & _is_finite(hi)
        # Non-finite slices (and masked-off rows, whose range is empty) compute on zeros:
        # their result is replaced below, and no inf - inf ever happens.
        lo = tl.where(finite, lo, 0.0)
        hi = tl.where(finite, hi, 0.0)
        span = hi - lo
        scale = tl.maximum(tl.math.div_rn(span, QMAX * 1.0), FLT_MIN)
        scale = tl.where(span == 0, 1.0, scale)
        zero_point = _round_half_up(tl.math.div_rn(-lo, scale))
        ok = finite & _is_finite(scale) & (tl.abs(zero_point) <= ZERO_POINT_LIMIT)
        return tl.where(ok, scale, float("nan")), tl.where(ok, zero_point, 0.0)


@triton.jit
def _quantize_values(x, scale, zero_point, NUM_BITS: tl.constexpr, SYMMETRIC: tl.constexpr):
    """The integer codes of float32 x as float32 (clamped, so the cast to int is exact);
    0 where the scale is NaN."""
    if SYMMETRIC:
        QMIN: tl.constexpr = -(1 << (NUM_BITS - 1))
        QMAX: tl.constexpr = (1 << (NUM_BITS - 1)) - 1
        v = _round_half_even(tl.math.div_rn(x, scale))
    else:
        QMIN: tl.constexpr = 0
        QMAX: tl.constexpr = (1 << NUM_BITS) - 1
        v = _round_half_even(tl.math.div_rn(x, scale) + zero_point)
    v = tl.minimum(tl.maximum(v, QMIN * 1.0), QMAX * 1.0)
    return tl.where(scale != scale, 0.0, v)  # noqa: PLR0124 (the NaN test)


# ------------------------------------------------------------- per row (token / channel)
@triton.jit
def _hadamard_stage(x, BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_K: tl.constexpr, H: tl.constexpr):
    """One butterfly stage along the rows of x (BLOCK_SIZE_M, BLOCK_SIZE_K): each pair
    (a, c) = (x[:, i], x[:, i + H]) with i % 2H < H becomes (a + c, a - c). The pairs are
    the two halves of a size-2 axis (the reshape), moved last for tl.split, and put back."""
    pairs = tl.permute(tl.reshape(x, (BLOCK_SIZE_M, BLOCK_SIZE_K // (2 * H), 2, H)), (0, 1, 3, 2))
    a, c = tl.split(pairs)
    return tl.reshape(tl.permute(tl.join(a + c, a - c), (0, 1, 3, 2)), (BLOCK_SIZE_M, BLOCK_SIZE_K))


@triton.jit
def _hadamard_rows(x, BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_K: tl.constexpr, HADAMARD_BLOCK: tl.constexpr,
                   HADAMARD_SCALE: tl.constexpr):
    """reference.hadamard_rotate of each row of the float32 tile x: the fast Walsh-Hadamard
    transform of every HADAMARD_BLOCK consecutive values, stages H = 1, 2, ...,
    HADAMARD_BLOCK / 2 in that order, then one multiply by HADAMARD_SCALE (the float32
    1 / sqrt(HADAMARD_BLOCK)). In registers: log2(HADAMARD_BLOCK) adds per element; the
    compiler moves pairs that sit in other threads through shuffles or shared memory.
    BLOCK_SIZE_K is a multiple of HADAMARD_BLOCK and the row's masked tail (K, a multiple of
    it too, to BLOCK_SIZE_K) holds zeros, which stay zeros."""
    for stage in tl.static_range(MAX_HADAMARD_STAGES):
        if (1 << stage) < HADAMARD_BLOCK:
            x = _hadamard_stage(x, BLOCK_SIZE_M, BLOCK_SIZE_K, 1 << stage)
    return x * HADAMARD_SCALE


@triton.jit
def _load_rows(x_rows, offs_k, mask, stride_xk, input_scale_ptr, K, BLOCK_SIZE_M: tl.constexpr,
               BLOCK_SIZE_K: tl.constexpr, HADAMARD_BLOCK: tl.constexpr, HADAMARD_SCALE: tl.constexpr):
    """The float32 tile to quantize: x[rows, offs_k], times input_scale[offs_k] when given
    (one float32 multiply, as `x.float() * input_scale` rounds it), then with HADAMARD_BLOCK
    > 1 rotated (_hadamard_rows)."""
    x = _to_float32(tl.load(x_rows + offs_k[None, :].to(tl.int64) * stride_xk, mask=mask, other=0.0))
    if input_scale_ptr is not None:
        x = x * tl.load(input_scale_ptr + offs_k, mask=offs_k < K, other=1.0)[None, :]
    if HADAMARD_BLOCK > 1:
        x = _hadamard_rows(x, BLOCK_SIZE_M, BLOCK_SIZE_K, HADAMARD_BLOCK, HADAMARD_SCALE)
    return x


@triton.jit
def _quantize_rows_kernel(
    x_ptr, q_ptr, scale_ptr, zero_point_ptr, input_scale_ptr, static_scale_ptr,
    M, K,
    stride_xm, stride_xk,
    NUM_BITS: tl.constexpr, SYMMETRIC: tl.constexpr, INCLUDE_ZERO: tl.constexpr, CODE_OFFSET: tl.constexpr,
    HADAMARD_BLOCK: tl.constexpr, HADAMARD_SCALE: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_K: tl.constexpr, SINGLE_PASS: tl.constexpr,
):
    """Row-wise dynamic quantization of x (M, K), any strides: one scale (and zero point)
    per row. One program handles BLOCK_SIZE_M rows: with SINGLE_PASS (K <= BLOCK_SIZE_K)
    it reads each row once into registers, reduces it, and writes the codes from the same
    registers; otherwise it loops over K twice, first reducing, then quantizing.
    INCLUDE_ZERO: each row's range includes 0 (see _quant_params). CODE_OFFSET is
    subtracted from the asymmetric codes and zero points (2**(NUM_BITS-1): signed codes).
    input_scale_ptr (K,) float32, or None: x * input_scale is what gets quantized.
    HADAMARD_BLOCK > 1: each row is rotated first, x -> x R with R the block-diagonal
    normalized Hadamard matrix of that block (after the input scale; _hadamard_rows), in
    registers as it is loaded, so still one read of x (two passes: the rotation is redone).
    It divides K and BLOCK_SIZE_K, so a tile always holds whole blocks.
    static_scale_ptr (one float32), or None: symmetric codes with that scale instead of the
    row's own; the range is still reduced, to give a row holding NaN or Inf a NaN scale.
    Writes q (M, K) contiguous, scale (M,) float32 and, asymmetric, zero_point (M,) int32."""
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    row_mask = rows < M
    x_rows = x_ptr + rows[:, None] * stride_xm
    q_rows = q_ptr + rows[:, None] * K
    cols = tl.arange(0, BLOCK_SIZE_K)

    if SINGLE_PASS:
        mask = row_mask[:, None] & (cols[None, :] < K)
        x = _load_rows(x_rows, cols, mask, stride_xk, input_scale_ptr, K, BLOCK_SIZE_M, BLOCK_SIZE_K, HADAMARD_BLOCK,
                       HADAMARD_SCALE)
        lo, hi = _range_operands(x, mask, SYMMETRIC)
        lo, hi = _reduce_range(lo, hi, 1, SYMMETRIC)
        scale, zero_point = _quant_params(lo, hi, NUM_BITS, SYMMETRIC, INCLUDE_ZERO)
        if static_scale_ptr is not None:
            scale = tl.where(scale == scale, tl.load(static_scale_ptr), float("nan"))  # noqa: PLR0124
        q = _quantize_values(x, scale[:, None], zero_point[:, None], NUM_BITS, SYMMETRIC) - CODE_OFFSET
        tl.store(q_rows + cols[None, :], q.to(q_ptr.dtype.element_ty), mask=mask)
    else:
        lo, hi = _empty_range(BLOCK_SIZE_M, SYMMETRIC)
        for k in range(0, K, BLOCK_SIZE_K):
            offs_k = k + cols
            mask = row_mask[:, None] & (offs_k[None, :] < K)
            x = _load_rows(x_rows, offs_k, mask, stride_xk, input_scale_ptr, K, BLOCK_SIZE_M, BLOCK_SIZE_K,
                           HADAMARD_BLOCK, HADAMARD_SCALE)
            tile_lo, tile_hi = _range_operands(x, mask, SYMMETRIC)
            tile_lo, tile_hi = _reduce_range(tile_lo, tile_hi, 1, SYMMETRIC)
            lo, hi = _merge_range(lo, hi, tile_lo, tile_hi, SYMMETRIC)
        scale, zero_point = _quant_params(lo, hi, NUM_BITS, SYMMETRIC, INCLUDE_ZERO)
        if static_scale_ptr is not None:
            scale = tl.where(scale == scale, tl.load(static_scale_ptr), float("nan"))  # noqa: PLR0124
        for k in range(0, K, BLOCK_SIZE_K):
            offs_k = k + cols
            mask = row_mask[:, None] & (offs_k[None, :] < K)
            x = _load_rows(x_rows, offs_k, mask, stride_xk, input_scale_ptr, K, BLOCK_SIZE_M, BLOCK_SIZE_K,
                           HADAMARD_BLOCK, HADAMARD_SCALE)
            q = _quantize_values(x, scale[:, None], zero_point[:, None], NUM_BITS, SYMMETRIC) - CODE_OFFSET
            tl.store(q_rows + offs_k[None, :], q.to(q_ptr.dtype.element_ty), mask=mask)

    tl.store(scale_ptr + rows, scale, mask=row_mask)
    if not SYMMETRIC:
        tl.store(zero_point_ptr + rows, (zero_point - CODE_OFFSET).to(tl.int32), mask=row_mask)


# -------------------------------------------------------------- per channel, any axis
@triton.jit
def _load_channel_tile(x_chans, outer, inner, chan_mask, OUTER, INNER, stride_xo, stride_xi):
    """The float32 tile x[outer, chans, inner] (chans already in x_chans) and its mask."""
    mask = (outer[:, None, None] < OUTER) & chan_mask[None, :, None] & (inner[None, None, :] < INNER)
    offs = outer[:, None, None] * stride_xo + inner[None, None, :] * stride_xi
    return _to_float32(tl.load(x_chans + offs, mask=mask, other=0.0)), mask


@triton.jit
def _quantize_channels_kernel(
    x_ptr, q_ptr, scale_ptr, zero_point_ptr,
    OUTER, C, INNER,
    stride_xo, stride_xc, stride_xi,
    stride_qo, stride_qc, stride_qi,
    NUM_BITS: tl.constexpr, SYMMETRIC: tl.constexpr, INCLUDE_ZERO: tl.constexpr, CODE_OFFSET: tl.constexpr,
    BLOCK_SIZE_O: tl.constexpr, BLOCK_SIZE_C: tl.constexpr, BLOCK_SIZE_I: tl.constexpr,
    SINGLE_PASS: tl.constexpr,
):
    """Per-channel quantization of x viewed as (OUTER, C, INNER), any strides: one scale
    (and zero point) per index c, over the OUTER * INNER values x[:, c, :]. One program
    handles BLOCK_SIZE_C channels, reducing (BLOCK_SIZE_O, BLOCK_SIZE_C, BLOCK_SIZE_I)
    tiles over axes 0 and 2 (so loads stay contiguous along whichever axis is: C when
    INNER == 1, INNER otherwise), then quantizing; SINGLE_PASS when one tile covers
    OUTER and INNER. Writes q (OUTER, C, INNER) at its strides (contiguous, or the
    transposed view of a contiguous (C, OUTER) q when the channels are the rows of a
    transposed input), scale (C,), zero_point (C,). INCLUDE_ZERO: each channel's range
    includes 0 (see _quant_params). CODE_OFFSET: as in _quantize_rows_kernel."""
    pid = tl.program_id(0).to(tl.int64)
    chans = pid * BLOCK_SIZE_C + tl.arange(0, BLOCK_SIZE_C)
    chan_mask = chans < C
    offs_o = tl.arange(0, BLOCK_SIZE_O)
    offs_i = tl.arange(0, BLOCK_SIZE_I)
    x_chans = x_ptr + chans[None, :, None] * stride_xc
    q_chans = q_ptr + chans[None, :, None] * stride_qc

    if SINGLE_PASS:
        outer, inner = offs_o.to(tl.int64), offs_i.to(tl.int64)
        x, mask = _load_channel_tile(x_chans, outer, inner, chan_mask, OUTER, INNER, stride_xo, stride_xi)
        lo, hi = _range_operands(x, mask, SYMMETRIC)
        lo, hi = _reduce_range(lo, hi, 2, SYMMETRIC)
        lo, hi = _reduce_range(lo, hi, 0, SYMMETRIC)
        scale, zero_point = _quant_params(lo, hi, NUM_BITS, SYMMETRIC, INCLUDE_ZERO)
        q = _quantize_values(x, scale[None, :, None], zero_point[None, :, None], NUM_BITS, SYMMETRIC) - CODE_OFFSET
        q_offs = outer[:, None, None] * stride_qo + inner[None, None, :] * stride_qi
        tl.store(q_chans + q_offs, q.to(q_ptr.dtype.element_ty), mask=mask)
    else:
        lo, hi = _empty_range(BLOCK_SIZE_C, SYMMETRIC)
        for o in range(0, OUTER, BLOCK_SIZE_O):
            outer = (o + offs_o).to(tl.int64)
            for i in range(0, INNER, BLOCK_SIZE_I):
                inner = (i + offs_i).to(tl.int64)
                x, mask = _load_channel_tile(x_chans, outer, inner, chan_mask, OUTER, INNER, stride_xo, stride_xi)
                tile_lo, tile_hi = _range_operands(x, mask, SYMMETRIC)
                tile_lo, tile_hi = _reduce_range(tile_lo, tile_hi, 2, SYMMETRIC)
                tile_lo, tile_hi = _reduce_range(tile_lo, tile_hi, 0, SYMMETRIC)
                lo, hi = _merge_range(lo, hi, tile_lo, tile_hi, SYMMETRIC)
        scale, zero_point = _quant_params(lo, hi, NUM_BITS, SYMMETRIC, INCLUDE_ZERO)
        for o in range(0, OUTER, BLOCK_SIZE_O):
            outer = (o + offs_o).to(tl.int64)
            for i in range(0, INNER, BLOCK_SIZE_I):
                inner = (i + offs_i).to(tl.int64)
                x, mask = _load_channel_tile(x_chans, outer, inner, chan_mask, OUTER, INNER, stride_xo, stride_xi)
                q = _quantize_values(x, scale[None, :, None], zero_point[None, :, None], NUM_BITS,
                                     SYMMETRIC) - CODE_OFFSET
                q_offs = outer[:, None, None] * stride_qo + inner[None, None, :] * stride_qi
                tl.store(q_chans + q_offs, q.to(q_ptr.dtype.element_ty), mask=mask)

    tl.store(scale_ptr + chans, scale, mask=chan_mask)
    if not SYMMETRIC:
        tl.store(zero_point_ptr + chans, (zero_point - CODE_OFFSET).to(tl.int32), mask=chan_mask)


# -------------------------------------------------------------------------- per tensor
# Three launches, no host sync: partial ranges per tile -> one program turns them into the
# scale (and zero point) in device memory -> an elementwise pass reads them back.
@triton.jit
def _tensor_range_partials_kernel(
    x_ptr, partial_lo_ptr, partial_hi_ptr,
    M, K,
    stride_xm, stride_xk,
    SYMMETRIC: tl.constexpr, BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
):
    """Partial range of x (M, K), any strides: program p reduces one (BLOCK_SIZE_M,
    BLOCK_SIZE_K) tile to partial_hi[p] = absmax (symmetric) or to partial_lo[p] = min and
    partial_hi[p] = max (asymmetric), NaN already folded in as +-inf."""
    pid = tl.program_id(0)
    num_pid_k = tl.cdiv(K, BLOCK_SIZE_K)
    rows = (pid // num_pid_k).to(tl.int64) * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    cols = (pid % num_pid_k).to(tl.int64) * BLOCK_SIZE_K + tl.arange(0, BLOCK_SIZE_K)
    mask = (rows[:, None] < M) & (cols[None, :] < K)
    x = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :] * stride_xk, mask=mask, other=0.0)
    lo, hi = _range_operands(_to_float32(x), mask, SYMMETRIC)
    lo, hi = _reduce_range(lo, hi, 1, SYMMETRIC)
    lo, hi = _reduce_range(lo, hi, 0, SYMMETRIC)
    tl.store(partial_hi_ptr + pid, hi)
    if not SYMMETRIC:
        tl.store(partial_lo_ptr + pid, lo)


@triton.jit
def _tensor_params_kernel(
    partial_lo_ptr, partial_hi_ptr, scale_ptr, zero_point_ptr,
    num_partials,
    NUM_BITS: tl.constexpr, SYMMETRIC: tl.constexpr, BLOCK_SIZE: tl.constexpr,
):
    """One program: reduces the num_partials partial ranges and writes the tensor's scale
    (0-d float32) and, asymmetric, zero point (0-d int32)."""
    offs = tl.arange(0, BLOCK_SIZE)
    lo, hi = _empty_range(BLOCK_SIZE, SYMMETRIC)
    for start in range(0, num_partials, BLOCK_SIZE):
        mask = start + offs < num_partials
        part_hi = tl.load(partial_hi_ptr + start + offs, mask=mask, other=float("-inf"))
        if SYMMETRIC:
            part_lo = part_hi
        else:
            part_lo = tl.load(partial_lo_ptr + start + offs, mask=mask, other=float("inf"))
        lo, hi = _merge_range(lo, hi, part_lo, part_hi, SYMMETRIC)
    lo, hi = _reduce_range(lo, hi, 0, SYMMETRIC)
    scale, zero_point = _quant_params(lo, hi, NUM_BITS, SYMMETRIC, False)
    tl.store(scale_ptr, scale)
    if not SYMMETRIC:
        tl.store(zero_point_ptr, zero_point.to(tl.int32))


@triton.jit
def _quantize_tensor_kernel(
    x_ptr, out_ptr, scale_ptr, zero_point_ptr,
    M, K,
    stride_xm, stride_xk,
    NUM_BITS: tl.constexpr, SYMMETRIC: tl.constexpr, FAKE: tl.constexpr, OUT_MAX: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
):
    """Elementwise quantization of x (M, K), any strides, with the scale (and zero point)
    read from device memory. One program per (BLOCK_SIZE_M, BLOCK_SIZE_K) tile writes
    out (M, K) contiguous: the codes q, or with FAKE the dequantized values
    (q - zp) * scale saturated at +-OUT_MAX (the largest finite value of out's dtype; NaN
    kept) and cast to it (fake quantization, no integer tensor written).
    Tiles go in the reverse order of the partials pass, so the first ones read are those
    it read last, still in L2 (a tensor up to about L2's size is read from DRAM once)."""
    pid = tl.num_programs(0) - 1 - tl.program_id(0)
    num_pid_k = tl.cdiv(K, BLOCK_SIZE_K)
    rows = (pid // num_pid_k).to(tl.int64) * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    cols = (pid % num_pid_k).to(tl.int64) * BLOCK_SIZE_K + tl.arange(0, BLOCK_SIZE_K)
    mask = (rows[:, None] < M) & (cols[None, :] < K)
    x = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :] * stride_xk, mask=mask, other=0.0)
    scale = tl.load(scale_ptr)
    if SYMMETRIC:
        zero_point = 0.0
    else:
        zero_point = tl.load(zero_point_ptr).to(tl.float32)  # |zp| <= 2^24: exact
    q = _quantize_values(_to_float32(x), scale, zero_point, NUM_BITS, SYMMETRIC)
    if FAKE:
        # q - zp in float32 is the correctly rounded integer difference, as the reference's
        # int64 difference converted to float32. A code rounded from a small negative x is
        # -0.0 (the reference's integer 0 is +0.0): the where keeps the sign off.
        out = (tl.where(q == 0.0, 0.0, q) - zero_point) * scale
        out = tl.where(out > OUT_MAX, OUT_MAX, tl.where(out < -OUT_MAX, -OUT_MAX, out))  # NaN compares false: kept
    else:
        out = q
    tl.store(out_ptr + rows[:, None] * K + cols[None, :], _cast_rne(out, out_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- dequantize
@triton.jit
def _dequantize_kernel(
    q_ptr, scale_ptr, zero_point_ptr, out_ptr,
    M, K, num_scales,
    stride_qm, stride_qk,
    SCALE_PER_COLUMN: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
):
    """out = (q - zero_point) * scale for q (M, K), any strides, out (M, K) contiguous;
    zero_point_ptr None: out = q * scale.
    The scale (and zero point) of element (m, k) is index k (SCALE_PER_COLUMN) or index
    m % num_scales: num_scales = 1 per tensor, M per token, C for channels viewed as
    (OUTER * C, INNER) rows. One program per (BLOCK_SIZE_M, BLOCK_SIZE_K) tile. The
    difference q - zero_point is int64 (an int32 one overflows for zero points near
    -2^31) rounded once to float32, as the reference's."""
    pid = tl.program_id(0)
    num_pid_k = tl.cdiv(K, BLOCK_SIZE_K)
    rows = (pid // num_pid_k).to(tl.int64) * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    cols = (pid % num_pid_k).to(tl.int64) * BLOCK_SIZE_K + tl.arange(0, BLOCK_SIZE_K)
    row_mask = rows < M
    col_mask = cols < K
    mask = row_mask[:, None] & col_mask[None, :]
    q = tl.load(q_ptr + rows[:, None] * stride_qm + cols[None, :] * stride_qk, mask=mask, other=0)
    if SCALE_PER_COLUMN:
        scale = tl.load(scale_ptr + cols, mask=col_mask, other=1.0)[None, :]
        if zero_point_ptr is not None:
            zero_point = tl.load(zero_point_ptr + cols, mask=col_mask, other=0)[None, :]
    else:
        index = rows % num_scales
        scale = tl.load(scale_ptr + index, mask=row_mask, other=1.0)[:, None]
        if zero_point_ptr is not None:
            zero_point = tl.load(zero_point_ptr + index, mask=row_mask, other=0)[:, None]
    if zero_point_ptr is not None:
        out = (q.to(tl.int64) - zero_point.to(tl.int64)).to(tl.float32) * scale
    else:
        out = q.to(tl.float32) * scale
    tl.store(out_ptr + rows[:, None] * K + cols[None, :], _cast_rne(out, out_ptr.dtype.element_ty), mask=mask)
