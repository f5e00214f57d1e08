"""The oracle's formulas in torch ops: the `torch` backend (CPU tensors under `auto`).

Same float32 operations in the same order as `qtriton.reference`, so integer outputs
match it exactly; sync-free, so it also runs on CUDA tensors (the benchmarks' "torch ops"
baseline). Inputs are validated by the API.
"""

from __future__ import annotations

import torch

from qtriton.reference import FLT_MIN, ZERO_POINT_LIMIT, qrange
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


def _finite_slices(x: torch.Tensor, granularity: str, axis: int | None) -> torch.Tensor:
    """True for each slice without NaN or Inf (an empty slice included)."""
    return _reduce(torch.amax, (~torch.isfinite(x)).to(torch.float32), granularity, axis) == 0


def _divide(a: torch.Tensor, divisor: int) -> torch.Tensor:
    # By a 0-d tensor, not a Python number: CUDA computes a / scalar as a * (1 / scalar),
    # which can be one ulp off the IEEE quotient the oracle and the kernels compute.
    return a / device_tensor(float(divisor), a.dtype, a.device)


def symmetric_params(x: torch.Tensor, num_bits: int, granularity: str, axis: int | None) -> torch.Tensor:
    absmax = _reduce(torch.amax, x.abs(), granularity, axis)
    scale = torch.clamp_min(_divide(absmax, qrange(num_bits, True)[1]), _FLT_MIN)
    scale = torch.where(absmax == 0, 1.0, scale)
    return torch.where(_finite_slices(x, granularity, axis), scale, float("nan"))


def asymmetric_params(x: torch.Tensor, num_bits: int, granularity: str, axis: int | None):
    lo = _reduce(torch.amin, x, granularity, axis)
    hi = _reduce(torch.amax, x, granularity, axis)
    span = hi - lo
    scale = torch.clamp_min(_divide(span, qrange(num_bits, False)[1]), _FLT_MIN)
    scale = torch.where(span == 0, 1.0, scale)
    zp = _round_half_up(-lo / scale)
    ok = _finite_slices(x, granularity, axis) & torch.isfinite(scale) & (zp.abs() <= ZERO_POINT_LIMIT)
    scale = torch.where(ok, scale, float("nan"))
    zp = torch.where(ok, zp, 0.0)
    return scale, zp


def _round_half_up(v: torch.Tensor) -> torch.Tensor:
    r = torch.round(v)
    return torch.where(r - v == -0.5, r + 1, r)


def quantize(x: torch.Tensor, num_bits: int, symmetric: bool, granularity: str, axis: int | None):
    """(q, scale, zero_point or None); scale shaped () / (C,) / x.shape[:-1] by granularity."""
    x = x.to(torch.float32)
    if symmetric:
        scale = symmetric_params(x, num_bits, granularity, axis)
        qmin, qmax = qrange(num_bits, True)
        q = torch.clamp(torch.round(x / scale), qmin, qmax)
        q = torch.where(torch.isnan(scale), 0.0, q).to(torch.int8)
        return q, _squeeze(scale, granularity), None
    scale, zp = asymmetric_params(x, num_bits, granularity, axis)
    qmin, qmax = qrange(num_bits, False)
    q = torch.clamp(torch.round(x / scale + zp), qmin, qmax)
    q = torch.where(torch.isnan(scale), 0.0, q).to(torch.uint8)
    return q, _squeeze(scale, granularity), _squeeze(zp, granularity).to(torch.int32)


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
    q, scale, zp = quantize(x, num_bits, symmetric, "tensor", None)
    return dequantize(q, scale, zp, "tensor", None, x.dtype)


def quantized_matmul(a_q, b_q, a_scale, b_scale, a_zp, b_zp, bias, out_dtype):
    """((a_q - a_zp) @ (b_q - b_zp)) * a_scale * b_scale + bias, exact integer part.

    The int8 product goes through float64 (exact: |sum| <= 255 * 255 * K < 2^53) because
    integer matmul is missing on CUDA; the zero-point terms are added in int64."""
    dev = a_q.device
    k = a_q.shape[1]
    acc = torch.round(a_q.to(torch.float64) @ b_q.to(torch.float64)).to(torch.int64)
    a_zp = device_tensor(a_zp, torch.int64, dev)
    b_zp = device_tensor(b_zp, torch.int64, dev)
    a_zp_col = a_zp.reshape(-1, 1) if a_zp.ndim == 1 else a_zp
    row_sum = a_q.to(torch.int64).sum(dim=1, keepdim=True)
    col_sum = b_q.to(torch.int64).sum(dim=0, keepdim=True)
    acc = acc - b_zp * row_sum - a_zp_col * col_sum + k * a_zp_col * b_zp
    a_scale = device_tensor(a_scale, torch.float64, dev)
    a_scale = a_scale.reshape(-1, 1) if a_scale.ndim == 1 else a_scale
    out = acc.to(torch.float64) * a_scale * device_tensor(b_scale, torch.float64, dev)
    if bias is not None:
        out = out + bias.to(torch.float64)
    return out.to(out_dtype)
