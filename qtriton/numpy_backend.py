"""The `numpy` backend: the oracle itself, behind the backend contract (docs/design.md)."""

from __future__ import annotations

import numpy as np

from qtriton import reference


def quantize(x: np.ndarray, num_bits: int, symmetric: bool, granularity: str, axis: int | None,
             include_zero: bool = False, hadamard_block: int | None = None):
    """(q, scale, zero_point or None); scale shaped () / (C,) / x.shape[:-1] by granularity.
    include_zero (asymmetric): each slice's range includes 0. hadamard_block (per token):
    each row rotated first (reference.hadamard_rotate)."""
    if granularity == "token":
        out = reference.quantize_per_token(x, num_bits, symmetric, include_zero, hadamard_block)
        return out if not symmetric else (*out, None)
    keep_axis = axis if granularity == "channel" else None
    if symmetric:
        return (*reference.quantize_symmetric(x, num_bits, keep_axis), None)
    return reference.quantize_asymmetric(x, num_bits, keep_axis, include_zero)


def quantize_activations(rows: np.ndarray, spec):
    return reference.quantize_activations(rows, **spec.arguments())


def hadamard_rotate(x: np.ndarray, block: int) -> np.ndarray:
    return reference.hadamard_rotate(x, block)


def dequantize(q, scale, zero_point, granularity: str, axis: int | None, out_dtype=np.float32):
    if granularity == "token":
        return reference.dequantize_per_token(q, scale, zero_point).astype(out_dtype)
    keep_axis = axis if granularity == "channel" else None
    if zero_point is None:
        return reference.dequantize_symmetric(q, scale, keep_axis).astype(out_dtype)
    return reference.dequantize_asymmetric(q, scale, zero_point, keep_axis).astype(out_dtype)


def fake_quantize(x: np.ndarray, num_bits: int, symmetric: bool) -> np.ndarray:
    return reference.fake_quantize(x, num_bits, symmetric, np.finfo(x.dtype).max).astype(x.dtype)


def quantized_matmul(a_q, b_q, operands, out_dtype):
    """The oracle's product; operands: a MatmulOperands of arrays and numbers (sums unused)."""
    o = operands
    return reference.quantized_matmul(a_q, o.a_scale, b_q, o.b_scale, o.a_zp, o.b_zp, o.bias).astype(out_dtype)
