"""The NumPy oracle: the specification every fast path is tested against.

Plain code of the formulas, no validation (the API validates before calling here).
All quantization arithmetic is float32 with IEEE round-to-nearest, in the order written
below, so a kernel that performs the same float32 operations reproduces the integers
bit for bit:

    symmetric   scale = absmax / qmax           q = clamp(rint(x / scale), -qmax - 1, qmax)
    asymmetric  scale = (max - min) / (2^b - 1)  zp = round_half_up(-min / scale)
                q = clamp(rint(x / scale + zp), 0, 2^b - 1)

with qmax = 2^(b-1) - 1 and rint rounding half to even (np.rint). The zero point rounds
half up (rint, then +1 where rint went down from an exact .5) so that min lands on 0 and
max on 2^b - 1 even when -min / scale is a tie: rounded half to even, both ends of the
range could round inward (e.g. -min / scale = 4.5 with 4 bits puts max at 14.5 -> 14).
min always lands on 0; max can still land one step low when float32 rounds a tie that is
exact in real numbers to just below .5 ([9998, -9998] at 3 bits: -min / scale =
3.4999998, zero point 3, max at 6.4999998 -> 6), within half a step like every value.
Special cases:

- an all-zero slice (symmetric) or a constant slice (asymmetric) gets scale 1.0;
- a scale that would underflow below the smallest normal float32 is raised to it
  (FLT_MIN), so x / scale never divides by zero or by a denormal;
- a slice whose parameters cannot be represented gets scale NaN, zero point 0 and q 0:
  a slice holding NaN or Inf, an asymmetric range max - min that overflows float32, or an
  asymmetric zero point beyond +-2^24 (data so far from zero relative to its range that
  float32 cannot resolve the grid: past 2^24, float32 no longer holds every integer). The API raises ValueError on such input off CUDA;
  on CUDA, where checking would need a host sync, the NaN scale is what the user sees.

Fake quantization (quantize, then dequantize) saturates at the largest finite value of the
dtype the caller gets: the grid can put x's min or max up to half a step past it, which
would be inf (float16 [-65504, 65504], asymmetric: -65761). Finite in, finite out.

Per-token quantization can rotate each row first (`hadamard_block`): x -> x R with R the
block-diagonal normalized Sylvester Hadamard matrix, computed as `hadamard_rotate` defines
it, butterfly by butterfly in float32, so that every backend gets the same rotated values and
hence the same codes.

Matmul is exact integer arithmetic (int64, or Python integers where int64 could
overflow), rounded once to float64, then float64 scaling. The API bounds matmul zero
points by ZERO_POINT_LIMIT (|zp| <= 2^24) and K by 131071 (the Triton GEMM's int32
accumulator): the oracle is exact past those limits too.
"""

from __future__ import annotations

import numpy as np

FLT_MIN = np.float32(2.0**-126)
ZERO_POINT_LIMIT = 2**24


def qrange(num_bits: int, signed: bool) -> tuple[int, int]:
    """The integer range [qmin, qmax] of a num_bits code."""
    if signed:
        return -(2 ** (num_bits - 1)), 2 ** (num_bits - 1) - 1
    return 0, 2**num_bits - 1


def round_half_up(v: np.ndarray) -> np.ndarray:
    """Round to nearest, ties toward +inf, in float32 (v - rint(v) is exact)."""
    v = np.asarray(v, dtype=np.float32)
    r = np.rint(v)
    return np.where(r - v == np.float32(-0.5), r + np.float32(1), r).astype(np.float32)


def _reduce(fn, x: np.ndarray, keep_axis: int | None) -> np.ndarray:
    """fn (np.max, np.min) over every axis but keep_axis, keepdims; 0 for empty slices."""
    axes = tuple(a for a in range(x.ndim) if a != keep_axis)
    if x.size == 0:
        return np.zeros([x.shape[a] if a == keep_axis else 1 for a in range(x.ndim)], np.float32)
    return fn(x, axis=axes, keepdims=True)


# ----------------------------------------------------------------------------- symmetric
def symmetric_scale(absmax: np.ndarray, num_bits: int) -> np.ndarray:
    """float32 scale from float32 absmax: absmax / qmax, 1.0 for 0, NaN for non-finite."""
    absmax = np.asarray(absmax, dtype=np.float32)
    qmax = np.float32(qrange(num_bits, signed=True)[1])
    scale = np.maximum(absmax / qmax, FLT_MIN)
    scale = np.where(absmax == 0, np.float32(1.0), scale)
    return np.where(np.isfinite(absmax), scale, np.float32(np.nan)).astype(np.float32)


def symmetric_quantize(x: np.ndarray, scale: np.ndarray, num_bits: int) -> np.ndarray:
    """int8 codes of x for a (broadcastable) float32 scale; NaN scale gives 0."""
    qmin, qmax = qrange(num_bits, signed=True)
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        q = np.clip(np.rint(x / scale), qmin, qmax)
    return np.where(np.isnan(scale), 0, q).astype(np.int8)


def quantize_symmetric(x, num_bits: int = 8, keep_axis: int | None = None):
    """Symmetric quantization, one scale per tensor (keep_axis=None) or per index along
    keep_axis. Returns (q int8, scale float32 array of shape () or (x.shape[keep_axis],))."""
    x = np.asarray(x, dtype=np.float32)
    absmax = _reduce(np.max, np.abs(x), keep_axis)
    scale = symmetric_scale(absmax, num_bits)
    q = symmetric_quantize(x, scale, num_bits)
    return q, scale.reshape(-1) if keep_axis is not None else scale.reshape(())


def dequantize_symmetric(q, scale, keep_axis: int | None = None) -> np.ndarray:
    """q * scale in float32; scale is a scalar or one value per index along keep_axis."""
    q = np.asarray(q)
    scale = _expand(np.asarray(scale, dtype=np.float32), q.ndim, keep_axis)
    return q.astype(np.float32) * scale


# ---------------------------------------------------------------------------- asymmetric
def asymmetric_params(lo: np.ndarray, hi: np.ndarray, num_bits: int):
    """float32 scale and int32 zero point from float32 min and max (see module doc)."""
    lo = np.asarray(lo, dtype=np.float32)
    hi = np.asarray(hi, dtype=np.float32)
    qmax = np.float32(qrange(num_bits, signed=False)[1])
    with np.errstate(over="ignore", invalid="ignore"):
        span = hi - lo
        scale = np.maximum(span / qmax, FLT_MIN)
        scale = np.where(span == 0, np.float32(1.0), scale).astype(np.float32)
        zp = round_half_up(-lo / scale)
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(scale) & (np.abs(zp) <= ZERO_POINT_LIMIT)
    scale = np.where(ok, scale, np.float32(np.nan)).astype(np.float32)
    zp = np.where(ok, zp, 0).astype(np.int32)
    return scale, zp


def asymmetric_quantize(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, num_bits: int) -> np.ndarray:
    """uint8 codes of x for broadcastable float32 scale and int32 zero point."""
    qmin, qmax = qrange(num_bits, signed=False)
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        q = np.clip(np.rint(x / scale + zp.astype(np.float32)), qmin, qmax)
    return np.where(np.isnan(scale), 0, q).astype(np.uint8)


def quantize_asymmetric(x, num_bits: int = 8, keep_axis: int | None = None, include_zero: bool = False):
    """Asymmetric quantization per tensor or per index along keep_axis.
    Returns (q uint8, scale float32, zero_point int32), shapes as in quantize_symmetric.

    include_zero: the range is [min(min, 0), max(max, 0)] (ONNX DynamicQuantizeLinear's and
    PyTorch's observers' convention): zero points lie in [0, 2^b - 1], 0.0 is exact, and a
    constant slice c gets scale |c| / (2^b - 1) instead of losing its value."""
    x = np.asarray(x, dtype=np.float32)
    lo, hi = _reduce(np.min, x, keep_axis), _reduce(np.max, x, keep_axis)
    if include_zero:
        lo, hi = np.minimum(lo, np.float32(0)), np.maximum(hi, np.float32(0))
    scale, zp = asymmetric_params(lo, hi, num_bits)
    q = asymmetric_quantize(x, scale, zp, num_bits)
    shape = (-1,) if keep_axis is not None else ()
    return q, scale.reshape(shape), zp.reshape(shape)


def dequantize_asymmetric(q, scale, zero_point, keep_axis: int | None = None) -> np.ndarray:
    """(q - zero_point) * scale: the difference in int64 (no uint8 wrap), then float32."""
    q = np.asarray(q)
    scale = _expand(np.asarray(scale, dtype=np.float32), q.ndim, keep_axis)
    zp = _expand(np.asarray(zero_point, dtype=np.int64), q.ndim, keep_axis)
    return (q.astype(np.int64) - zp).astype(np.float32) * scale


def fake_quantize(x, num_bits: int = 8, symmetric: bool = True, out_max=None) -> np.ndarray:
    """Per-tensor quantize, then dequantize, in float32, saturated at +-out_max: the largest
    finite value of the dtype the caller gets the result in (float32's by default; the
    backends pass x's). The grid can put x's min or max up to half a step past it
    ([-65504, 65504] as float16, asymmetric: (0 - 128) * 513.76 = -65761), and the nearest
    value that dtype holds is then +-out_max, not inf: finite in, finite out. A NaN scale
    (a slice that cannot be quantized) stays NaN."""
    if symmetric:
        y = dequantize_symmetric(*quantize_symmetric(x, num_bits))
    else:
        y = dequantize_asymmetric(*quantize_asymmetric(x, num_bits))
    limit = np.float32(np.finfo(np.float32).max if out_max is None else out_max)
    return np.clip(y, -limit, limit)


def _expand(v: np.ndarray, ndim: int, keep_axis: int | None) -> np.ndarray:
    """Shape a per-index vector along keep_axis so it broadcasts against an ndim array."""
    if keep_axis is None or v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[keep_axis] = -1
    return v.reshape(shape)


# --------------------------------------------------------------------- Hadamard rotation
def hadamard_scale(block: int, dtype=np.float32) -> np.floating:
    """The normalization 1 / sqrt(block), correctly rounded to dtype (IEEE sqrt of the exact
    1 / block); a power of two, exact, when log2(block) is even."""
    return np.sqrt(dtype(1.0) / dtype(block))


def hadamard_rotate(x, block: int) -> np.ndarray:
    """x R over the last axis: R = diag(H, ..., H) / sqrt(block), H the block x block Sylvester
    Hadamard matrix (H_1 = [1], H_2n = [[H_n, H_n], [H_n, -H_n]]; symmetric, so x R = R x
    for each row), block a power of two dividing x.shape[-1]. R is orthogonal and its own
    inverse: hadamard_rotate(hadamard_rotate(x, b), b) == x up to rounding, and for a weight
    W (out, in) hadamard_rotate(W, b) is W R, so that (x R)(W R)^T == x W^T.

    Arithmetic in float32 (float64 for a float64 x), in this order, which the kernels and the
    torch path repeat operation for operation:

    1. the fast Walsh-Hadamard transform of each block of `block` consecutive values: stages
       h = 1, 2, 4, ..., block / 2; stage h replaces each pair (a, c) = (v[i], v[i + h]),
       i % (2h) < h, by (a + c, a - c), each sum and difference rounded once;
    2. one multiply of each result by hadamard_scale(block), rounded once.

    Why the normalization is one multiply at the end, rather than 1/sqrt(2) per stage or a
    factor folded into the quantization scale: for log2(block) even it is a power of two and
    the multiply is exact (unless the result is subnormal), for odd log2(block) it adds one
    rounding of half a float32 ulp, far below an int8 step; per stage it would add
    log2(block) roundings; folded into the scale, the codes would be those of the unnormalized
    values, so a static scale calibrated on the rotated activations and every consumer of
    (codes, scale) would need the factor too. Kept here, the rotated row is simply the data
    the unrotated formulas quantize.

    Overflow: the unnormalized sums grow up to `block` times the largest |value|, so a
    float32 or bfloat16 row with values beyond FLT_MAX / block (1.7e35 for block 2048)
    becomes Inf / NaN in that block; quantizing it then gives the NaN scale of a row holding
    Inf. float16 values (|x| <= 65504) cannot overflow for block <= 2^16. NaN and Inf spread
    over their block (Inf - Inf is NaN): such a row is unquantizable either way."""
    x = np.asarray(x)
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    shape, k = x.shape, x.shape[-1]
    y = x.astype(dtype).reshape(int(np.prod(shape[:-1])), k)  # not -1: a last axis may be 0
    h = 1
    with np.errstate(over="ignore", invalid="ignore"):  # overflow, Inf - Inf: see above
        while h < block:
            pairs = y.reshape(len(y), k // (2 * h), 2, h)  # pairs[:, :, 0] holds each a, [:, :, 1] its c
            a, c = pairs[:, :, 0], pairs[:, :, 1]
            y = np.stack([a + c, a - c], axis=2).reshape(len(y), k)
            h *= 2
    return (y * hadamard_scale(block, dtype)).reshape(shape)


# ------------------------------------------------------------------- per-token, group-wise
def quantize_per_token(x, num_bits: int = 8, symmetric: bool = True, include_zero: bool = False,
                       hadamard_block: int | None = None):
    """One scale (and zero point) per row: per index of every axis but the last.
    Returns (q, scales of shape x.shape[:-1]) or (q, scales, zero_points).
    include_zero (asymmetric): each row's range includes 0 (see quantize_asymmetric).
    hadamard_block: the codes are those of hadamard_rotate(x, hadamard_block) (float32)."""
    x = np.asarray(x, dtype=np.float32)
    if hadamard_block is not None:
        x = hadamard_rotate(x, hadamard_block)
    rows = x.reshape(int(np.prod(x.shape[:-1])), x.shape[-1])  # not -1: a last axis may be 0
    if symmetric:
        q, scale = quantize_symmetric(rows, num_bits, keep_axis=0)
        return q.reshape(x.shape), scale.reshape(x.shape[:-1])
    q, scale, zp = quantize_asymmetric(rows, num_bits, keep_axis=0, include_zero=include_zero)
    return q.reshape(x.shape), scale.reshape(x.shape[:-1]), zp.reshape(x.shape[:-1])


def quantize_activations(rows, symmetric: bool = True, input_scale=None, static_scale=None,
                         hadamard_block: int | None = None):
    """Int8Linear's int8 activation codes of rows (M, K): (q int8, scale (M,) float32,
    zero_point (M,) int32 or None). rows * input_scale (float32: SmoothQuant's 1/s) first,
    then, with hadamard_block, the rotation hadamard_rotate(., hadamard_block) (the layer's
    weight is stored rotated the same way).
    static_scale (a calibrated float32 scale): symmetric codes with it, the scale of a row
    holding NaN or Inf NaN (codes 0) as if it were its own. Otherwise per token: symmetric,
    or asymmetric with 0 in each row's range and codes and zero points moved down by 128 to
    int8 (q - zp unchanged: the GEMM takes int8 operands)."""
    x = np.asarray(rows, dtype=np.float32)
    if input_scale is not None:
        x = x * np.asarray(input_scale, dtype=np.float32)
    if hadamard_block is not None:
        x = hadamard_rotate(x, hadamard_block)
    if static_scale is not None:
        scale = np.where(np.isfinite(x).all(axis=1), np.float32(static_scale), np.float32(np.nan))
        return symmetric_quantize(x, scale[:, None], 8), scale.astype(np.float32), None
    if symmetric:
        return (*quantize_per_token(x, 8, True), None)
    q, scale, zp = quantize_per_token(x, 8, False, include_zero=True)
    return (q.astype(np.int16) - 128).astype(np.int8), scale, zp - 128


def dequantize_per_token(q, scales, zero_points=None) -> np.ndarray:
    q = np.asarray(q)
    scales = np.asarray(scales, dtype=np.float32)[..., None]
    if zero_points is None:
        return q.astype(np.float32) * scales
    zp = np.asarray(zero_points, dtype=np.int64)[..., None]
    return (q.astype(np.int64) - zp).astype(np.float32) * scales


def fake_quantize_groupwise(x, group_size: int, num_bits: int = 8, symmetric: bool = True) -> np.ndarray:
    """Quantize and dequantize groups of group_size consecutive values along the last axis."""
    x = np.asarray(x, dtype=np.float32)
    groups = x.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)
    if symmetric:
        return dequantize_per_token(*quantize_per_token(groups, num_bits, True)).reshape(x.shape)
    return dequantize_per_token(*quantize_per_token(groups, num_bits, False)).reshape(x.shape)


# ------------------------------------------------------------------------------- matmul
def int_matmul(a_q, b_q, a_zp=0, b_zp=0) -> np.ndarray:
    """Exact (a_q - a_zp) @ (b_q - b_zp). a_zp: scalar or (M,); b_zp: scalar or (N,).

    int64 when K * max|a - a_zp| * max|b - b_zp| proves every sum fits it; otherwise Python
    integers (an object array), so any zero point gives the exact result."""
    a = np.asarray(a_q).astype(np.int64) - _column(np.asarray(a_zp, dtype=np.int64))
    b = np.asarray(b_q).astype(np.int64) - np.asarray(b_zp, dtype=np.int64)
    bound = a.shape[1] * _max_abs(a) * _max_abs(b)  # Python ints: the bound cannot overflow
    if bound < 2**63:
        return a @ b
    return a.astype(object) @ b.astype(object)


def _max_abs(v: np.ndarray) -> int:
    return max(abs(int(v.max())), abs(int(v.min()))) if v.size else 0


def quantized_matmul(a_q, a_scale, b_q, b_scale, a_zp=0, b_zp=0, bias=None) -> np.ndarray:
    """float64 ((a_q - a_zp) @ (b_q - b_zp)) * a_scale * b_scale + bias.
    a_scale, a_zp: scalar or per row (M,); b_scale, b_zp, bias: scalar or per column (N,)."""
    acc = int_matmul(a_q, b_q, a_zp, b_zp).astype(np.float64)  # Python ints round once, to nearest
    out = acc * _column(np.asarray(a_scale, dtype=np.float64)) * np.asarray(b_scale, dtype=np.float64)
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float64)
    return out


def _column(v: np.ndarray) -> np.ndarray:
    return v.reshape(-1, 1) if v.ndim == 1 else v


# ------------------------------------------------------------------------------ metrics
def quantization_error(original, dequantized) -> dict[str, float]:
    """mse, mae, max_error, relative_error (mse / var) and snr (dB) in float64."""
    x = np.asarray(original, dtype=np.float64)
    err = x - np.asarray(dequantized, dtype=np.float64)
    mse = float(np.mean(err**2))
    var = float(np.var(x))
    if mse == 0:
        relative, snr = 0.0, float("inf")
    elif var == 0:
        relative, snr = float("inf"), float("-inf")
    else:
        relative, snr = mse / var, float(10 * np.log10(var / mse))
    return {
        "mse": mse,
        "mae": float(np.mean(np.abs(err))),
        "max_error": float(np.max(np.abs(err))),
        "relative_error": relative,
        "snr": snr,
    }


def weight_only_matmul(a, b_q, b_scale, bias=None) -> np.ndarray:
    """W8A16: (a @ b_q) * b_scale + bias with float activations a (M, K), int8 weights b_q
    (K, N) and one scale per column; float64 (the kernels accumulate in float32)."""
    out = np.asarray(a, dtype=np.float64) @ np.asarray(b_q, dtype=np.float64)
    out = out * np.asarray(b_scale, dtype=np.float64)[None, :]
    return out if bias is None else out + np.asarray(bias, dtype=np.float64)[None, :]
