"""The oracle's formulas in torch ops: the `torch` backend (CPU tensors under `auto`).

Same float32 operations in the same order as `qtriton.reference`, so integer outputs
match it exactly; sync-free, so it also runs on CUDA tensors (the benchmarks' "torch ops"
baseline). Inputs are validated by the API.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from qtriton.reference import FLT_MIN, ZERO_POINT_LIMIT, hadamard_scale, qrange
from qtriton.tensors import device_tensor

# A Python float, not the NumPy scalar: torch.compile guards on NumPy scalars and fails
# under inference_mode ("Guard failed on the same frame it was created").
_FLT_MIN = float(FLT_MIN)


def _reduce(fn, x: torch.Tensor, granularity: str, axis: int | None) -> torch.Tensor:
    """fn (torch.amax / torch.amin) over each slice, shaped to broadcast against x."""
    if granularity == "tensor":
        keep = None
    elif granularity == "channel":
        keep = axis
    else:  # token: one slice per row, i.e. keep every axis but the last
        return fn(x, dim=-1, keepdim=True) if x.numel() else x.new_zeros((*x.shape[:-1], 1))
    dims = [d for d in range(x.ndim) if d != keep]
    if x.numel() == 0:
        return x.new_zeros([x.shape[d] if d == keep else 1 for d in range(x.ndim)])
    return fn(x, dim=dims, keepdim=True) if dims else x


def _divide(a: torch.Tensor, divisor: int) -> torch.Tensor:
    # By a 0-d tensor, not a Python number: CUDA computes a / scalar as a * (1 / scalar),
    # which can be one ulp off the IEEE quotient the oracle and the kernels compute.
    return a / device_tensor(float(divisor), a.dtype, a.device)


def symmetric_params(x: torch.Tensor, num_bits: int, granularity: str, axis: int | None) -> torch.Tensor:
    absmax = _reduce(torch.amax, x.abs(), granularity, axis)
    scale = torch.clamp_min(_divide(absmax, qrange(num_bits, True)[1]), _FLT_MIN)
    scale = torch.where(absmax == 0, 1.0, scale)
    # torch.amax propagates NaN (and Inf): a slice holding either has a non-finite absmax.
    return torch.where(torch.isfinite(absmax), scale, float("nan"))


def asymmetric_params(x: torch.Tensor, num_bits: int, granularity: str, axis: int | None, include_zero: bool = False):
    lo = _reduce(torch.amin, x, granularity, axis)
    hi = _reduce(torch.amax, x, granularity, axis)
    if include_zero:
        lo, hi = torch.clamp_max(lo, 0.0), torch.clamp_min(hi, 0.0)
    span = hi - lo
    scale = torch.clamp_min(_divide(span, qrange(num_bits, False)[1]), _FLT_MIN)
    scale = torch.where(span == 0, 1.0, scale)
    zp = _round_half_up(-lo / scale)
    # amin / amax propagate NaN and Inf, so a slice holding either has a non-finite lo or hi.
    ok = torch.isfinite(lo) & torch.isfinite(hi) & torch.isfinite(scale) & (zp.abs() <= ZERO_POINT_LIMIT)
    scale = torch.where(ok, scale, float("nan"))
    zp = torch.where(ok, zp, 0.0)
    return scale, zp


def _round_half_up(v: torch.Tensor) -> torch.Tensor:
    r = torch.round(v)
    return torch.where(r - v == -0.5, r + 1, r)


def hadamard_rotate(x: torch.Tensor, block: int) -> torch.Tensor:
    """reference.hadamard_rotate in torch ops: x R over the last axis, butterfly by butterfly
    in the oracle's order, float32 (float64 for a float64 x); a new tensor, x left as it was.
    For a weight W (out, in), hadamard_rotate(W, b) is W R."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    shape, k = x.shape, x.shape[-1]
    rows = math.prod(shape[:-1])  # not -1: a last axis may be 0
    y = x.to(dtype)
    h = 1
    while h < block:
        pairs = y.reshape(rows, k // (2 * h), 2, h)
        a, c = pairs[:, :, 0], pairs[:, :, 1]
        y = torch.stack((a + c, a - c), dim=2)
        h *= 2
    return y.reshape(shape) * float(hadamard_scale(block, np.float64 if dtype == torch.float64 else np.float32))


def quantize(x: torch.Tensor, num_bits: int, symmetric: bool, granularity: str, axis: int | None,
             include_zero: bool = False, hadamard_block: int | None = None):
    """(q, scale, zero_point or None); scale shaped () / (C,) / x.shape[:-1] by granularity.
    include_zero (asymmetric): each slice's range includes 0. hadamard_block (per token):
    the codes of hadamard_rotate(x, hadamard_block)."""
    x = x.to(torch.float32)
    if hadamard_block is not None:
        x = hadamard_rotate(x, hadamard_block)
    if symmetric:
        scale = symmetric_params(x, num_bits, granularity, axis)
        q = _codes(x / scale, num_bits, True)
        return q, _squeeze(scale, granularity), None
    scale, zp = asymmetric_params(x, num_bits, granularity, axis, include_zero)
    q = _codes((x / scale).add_(zp), num_bits, False)
    return q, _squeeze(scale, granularity), _squeeze(zp, granularity).to(torch.int32)


def quantize_activations(rows: torch.Tensor, spec):
    """Int8Linear's activations as spec (a `qtriton.model.scheme.ActivationQuant`) says."""
    return _quantize_activations(rows, **spec.arguments())


def _quantize_activations(rows: torch.Tensor, symmetric: bool, input_scale=None, static_scale=None,
                          hadamard_block: int | None = None):
    """reference.quantize_activations in torch ops."""
    x = rows.to(torch.float32)
    if input_scale is not None:
        x = x * input_scale
    if hadamard_block is not None:
        x = hadamard_rotate(x, hadamard_block)
    if static_scale is None and symmetric:
        return quantize(x, 8, True, "token", None)
    if static_scale is None:  # codes and zero points moved down by 128, to int8
        scale, zp = asymmetric_params(x, 8, "token", None, include_zero=True)
        q = _codes((x / scale).add_(zp), 8, False, offset=128)
        return q, scale.squeeze(1), (zp.squeeze(1) - 128).to(torch.int32)
    finite = torch.isfinite(x).all(dim=1)
    scale = torch.where(finite, static_scale.to(torch.float32), torch.full_like(static_scale, float("nan")))
    return _codes(x / scale[:, None], 8, True), scale, None  # not in place: x may be the input


def _codes(v: torch.Tensor, num_bits: int, signed: bool, offset: int = 0) -> torch.Tensor:
    """clamp(rint(v)) - offset as int8 (signed, or offset) / uint8, in place on the float32
    v (no more (M, K) buffers). NaN, from a NaN scale (the only source: NaN or Inf data give
    a NaN scale), becomes code 0. The offset comes after the rounding: rint(v - 128) is not
    rint(v) - 128 where v - 128 rounds in float32."""
    qmin, qmax = qrange(num_bits, signed)
    v = v.round_().clamp_(qmin, qmax).nan_to_num_(0.0)
    if offset:
        v = v.sub_(offset)
    return v.to(torch.int8 if signed or offset else torch.uint8)


def _squeeze(v: torch.Tensor, granularity: str) -> torch.Tensor:
    if granularity == "tensor":
        return v.reshape(())
    if granularity == "channel":
        return v.reshape(-1)
    return v.squeeze(-1)


def _expand(v: torch.Tensor, ndim: int, granularity: str, axis: int | None) -> torch.Tensor:
    if granularity == "token":
        return v.unsqueeze(-1)
    if granularity == "channel":
        shape = [1] * ndim
        shape[axis] = -1
        return v.reshape(shape)
    return v


def dequantize(q, scale, zero_point, granularity: str, axis: int | None, out_dtype=torch.float32):
    """q * scale, or (q - zero_point) * scale with the difference taken in int64."""
    scale = _expand(device_tensor(scale, torch.float32, q.device), q.ndim, granularity, axis)
    if zero_point is None:
        return (q.to(torch.float32) * scale).to(out_dtype)
    zp = _expand(device_tensor(zero_point, torch.int64, q.device), q.ndim, granularity, axis)
    return ((q.to(torch.int64) - zp).to(torch.float32) * scale).to(out_dtype)


def fake_quantize(x: torch.Tensor, num_bits: int, symmetric: bool) -> torch.Tensor:
    """reference.fake_quantize: float32, saturated at x's dtype's largest finite value."""
    q, scale, zp = quantize(x, num_bits, symmetric, "tensor", None)
    limit = torch.finfo(x.dtype).max
    return dequantize(q, scale, zp, "tensor", None).clamp(-limit, limit).to(x.dtype)


def weight_only_matmul(a, b_q, operands, out_dtype):
    """W8A16: (a @ b_q) * b_scale + bias with float a (a MatmulOperands' b_scale and bias), in
    float32 torch ops."""
    out = (a.to(torch.float32) @ b_q.to(torch.float32)) * operands.b_scale
    return (out if operands.bias is None else out + operands.bias).to(out_dtype)


def quantized_matmul(a_q, b_q, operands, out_dtype):
    """((a_q - a_zp) @ (b_q - b_zp)) * a_scale * b_scale + bias for a MatmulOperands: the
    integer part exact and rounded once to float64, then the oracle's float64 scaling, in its
    order. The sums a_rowsum / b_colsum are the triton backend's; here unused."""
    dev = a_q.device
    out = _exact_product(a_q, b_q, operands.a_zp, operands.b_zp)
    a_scale = device_tensor(operands.a_scale, torch.float64, dev)
    out.mul_(a_scale.reshape(-1, 1) if a_scale.ndim == 1 else a_scale)
    out.mul_(device_tensor(operands.b_scale, torch.float64, dev))
    if operands.bias is not None:
        out.add_(device_tensor(operands.bias, torch.float64, dev))
    return out.to(out_dtype)


# int8 x int8 products are at most 2^14 in magnitude, so an int32 sum of up to this many
# is exact (the GEMM's K limit); longer K is summed in chunks.
_INT_MM_MAX_K = (2**31 - 1) // 2**14
# Zero points up to this size times a code sum (|sum| <= 128 * K < 2^24) stay below 2^53:
# their correction is exact as a float64 rank-1 update.
_RANK1_ZERO_POINT_LIMIT = 2**29
# The split of the zero-point term that keeps every partial result exact (see _exact_product).
_LIMB_BITS = 28


def _exact_product(a_q, b_q, a_zp, b_zp) -> torch.Tensor:
    """(a_q - a_zp) @ (b_q - b_zp) as float64, the exact integer rounded once (as the
    oracle's int64 / Python integers converted to float64), for any int32 zero points and
    K <= 131071. Expanded as P - b_zp * rowsum(a) - a_zp * (colsum(b) - K * b_zp), P = a_q @ b_q.

    One zero point (Int8Linear's asymmetric activations), |zp| <= 2^29: a float64 rank-1
    update of P, in place (each product is exact, each element rounds once), so that no
    (M, N) temporary beyond P is made: on CPU, fresh (M, N) buffers cost more than the GEMM.
    Otherwise int64, with a_zp * (...) (which can pass 2^63) split as (...) = d_hi * 2^28 +
    d_lo and the result assembled as hi * 2^28 + lo, 0 <= lo < 2^28, |hi| < 2^53: both
    exact float64 values, and their float64 sum is the one rounding. Zero points that are
    Python zeros (symmetric operands) skip their terms."""
    dev = a_q.device
    a, a_zp = _as_int8(a_q, a_zp)
    b, b_zp = _as_int8(b_q, b_zp)
    a_zp, b_zp = _zero_point(a_zp, dev), _zero_point(b_zp, dev)
    (m, k), n = a.shape, b.shape[1]
    out = _int8_matmul(a, b)
    if _is_zero(a_zp) and _is_zero(b_zp):
        return out
    # |sums| <= 128 * K fit int32 up to the GEMM's K limit, and int32 sums are faster.
    sum_dtype = torch.int32 if k <= _INT_MM_MAX_K else torch.int64
    if _is_zero(b_zp) and _rank1_exact(a_zp, k):
        col_sum = b.sum(dim=0, dtype=sum_dtype).to(torch.float64)
        return out.addr_(a_zp.expand(m).to(torch.float64), col_sum, alpha=-1)
    if _is_zero(a_zp) and _rank1_exact(b_zp, k):
        row_sum = a.sum(dim=1, dtype=sum_dtype).to(torch.float64)
        return out.addr_(row_sum, b_zp.expand(n).to(torch.float64), alpha=-1)
    acc = out.to(torch.int64)  # P, exact: |P| <= 2^14 * K < 2^53
    if not _is_zero(b_zp):
        acc -= b_zp * a.sum(dim=1, keepdim=True, dtype=sum_dtype).to(torch.int64)
    if _is_zero(a_zp):
        return acc.to(torch.float64)
    a_zp = a_zp.reshape(-1, 1) if a_zp.ndim == 1 else a_zp
    d = b.sum(dim=0, keepdim=True, dtype=sum_dtype).to(torch.int64)
    if _is_zero(b_zp):  # |a_zp * d| <= 2^32 * 128 * K: fits int64
        return (acc - a_zp * d).to(torch.float64)
    d = d - k * b_zp
    mask = (1 << _LIMB_BITS) - 1
    lo = acc - a_zp * (d & mask)
    hi = (lo >> _LIMB_BITS) - a_zp * (d >> _LIMB_BITS)
    return hi.to(torch.float64) * float(1 << _LIMB_BITS) + (lo & mask).to(torch.float64)


def _rank1_exact(zp: torch.Tensor, k: int) -> bool:
    """True when |zp| <= 2^29 and K is within the GEMM's limit, known without a device
    sync: on CPU (reading a CPU tensor costs nothing); CUDA tensors take the int64 path."""
    if k > _INT_MM_MAX_K or zp.device.type != "cpu" or torch.compiler.is_compiling():
        return False  # (compiling: a data-dependent branch would break the graph)
    return zp.numel() == 0 or bool(zp.abs().max() <= _RANK1_ZERO_POINT_LIMIT)


def _zero_point(zp, device):
    """A Python 0 stays one (it marks a symmetric operand); the rest become int64 tensors."""
    return zp if _is_zero(zp) else device_tensor(zp, torch.int64, device)


def _is_zero(zp) -> bool:
    return isinstance(zp, int) and zp == 0


def _as_int8(q: torch.Tensor, zp):
    """(codes as int8, zero point) with the same differences q - zp: uint8 codes flip
    their top bit (q - 128 as int8) and the zero point moves down by 128."""
    if q.dtype == torch.uint8:
        zp = zp if isinstance(zp, int) else device_tensor(zp, torch.int64, q.device)  # no int32 wrap
        return torch.bitwise_xor(q, 128).view(torch.int8), zp - 128
    return q, zp


def _plain_strides(x: torch.Tensor) -> torch.Tensor:
    """x, copied to row-major strides when one of its dimensions has length 1 and its strides
    are not those: torch 2.11's CPU _int_mm misreads such operands (a transposed weight of
    one input feature, strides (1, 1), gave garbage). The copy is one row or one column."""
    if 1 in x.shape and x.stride() != (x.shape[1], 1):
        return x.clone(memory_format=torch.contiguous_format)
    return x


def _int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact a @ b of int8 tensors as float64 (|sum| <= 2^14 * K < 2^53, so any order of the
    float64 additions gives the same integer). torch._int_mm (int32 accumulation) only on a
    CPU with VNNI, where it beats a float GEMM; without VNNI its CPU kernel was 20x slower
    than the float64 GEMM (407x576x1536 on an AVX2 EPYC: 1.9 s against 0.095 s). CUDA takes
    the float64 GEMM too (integer GEMMs there want M > 16 and K, N multiples of 8)."""
    if a.device.type != "cpu" or not _CPU_INT_MM_FAST:
        return a.to(torch.float64) @ b.to(torch.float64)
    a, b = _plain_strides(a), _plain_strides(b)
    k = a.shape[1]
    if k <= _INT_MM_MAX_K:
        return torch._int_mm(a, b).to(torch.float64)
    acc = torch._int_mm(a[:, :_INT_MM_MAX_K], b[:_INT_MM_MAX_K]).to(torch.int64)
    for start in range(_INT_MM_MAX_K, k, _INT_MM_MAX_K):
        acc += torch._int_mm(a[:, start:start + _INT_MM_MAX_K], b[start:start + _INT_MM_MAX_K])
    return acc.to(torch.float64)


def _cpu_has_vnni() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX512-VNNI / AVX-VNNI), which
    torch's CPU _int_mm needs to be fast; torch.cpu's probe where this torch has one."""
    probe = getattr(torch.cpu, "_is_vnni_supported", None)
    return bool(probe()) if probe is not None else False


_CPU_INT_MM_FAST = _cpu_has_vnni()
