"""The lab API: validate, pick a backend, convert, run, and hand back the caller's kind.

NumPy in, NumPy out (per-tensor scales as Python floats, zero points as Python ints);
torch in, torch out on the same device (scales as float32 tensors, zero points as int32
tensors: on CUDA nothing here syncs with the host). See docs/design.md for the flow.

Arguments are checked once, here, by the rules of `qtriton.checks` (the same rules and
messages as `qtriton.ops` and `Int8Linear`). Scales are float32 on every backend: a Python
float, float64, float16 or bfloat16 scale is rounded or widened to float32 and must then be
positive, finite and normal (FLT_MIN = 1.175e-38 to 3.403e38; 1e39 and 1e-39 raise
ValueError). Zero points: any int32 for dequantize, |zp| <= 2**24 for quantized_matmul.
Values held in tensors are checked off CUDA only and not while torch.compile traces.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from qtriton import checks, reference
from qtriton.dispatch import resolve
from qtriton.operands import MatmulOperands
from qtriton.tensors import device_tensor

# ------------------------------------------------------------------------ dispatch helpers


def _is_tensor(v) -> bool:
    return isinstance(v, torch.Tensor)


def _to_backend(v, device: torch.device | None):
    """v as a backend takes it: a NumPy array (device None) or a tensor on device.
    None and Python numbers pass through."""
    if v is None or isinstance(v, numbers.Number):
        return v
    if device is None:
        if _is_tensor(v):
            v = v.detach().cpu()
            return (v.float() if v.dtype == torch.bfloat16 else v).numpy()
        return np.asarray(v)
    return (v if _is_tensor(v) else torch.from_numpy(np.ascontiguousarray(v))).to(device)


def _to_caller(v, like):
    """v as the caller's kind: a NumPy array, or a tensor on like's device."""
    if v is None:
        return None
    if _is_tensor(like):
        return v.to(like.device) if _is_tensor(v) else torch.from_numpy(np.asarray(v)).to(like.device)
    return v.detach().cpu().numpy() if _is_tensor(v) else np.asarray(v)


def _scalar_for_numpy(v, like, cast):
    """Per-tensor scale / zero point: a Python number for NumPy callers, a 0-d tensor otherwise."""
    v = _to_caller(v, like)
    return cast(v) if not _is_tensor(like) else v


# ------------------------------------------------------------------------ shared machinery


def _quantize(x, num_bits: int, symmetric: bool, granularity: str, axis: int | None = None, include_zero: bool = False,
              hadamard_block: int | None = None):
    """Validated x -> (q, scale, zero_point or None) in the caller's kind."""
    backend, device = resolve(x)
    out = backend.quantize(_to_backend(x, device), num_bits, symmetric, granularity, axis, include_zero, hadamard_block)
    q, scale, zp = (_to_caller(v, x) for v in out)
    # On the caller's side: off CUDA, whichever device computed it.
    checks.quantize_result(scale, "x" if hadamard_block is None else f"x rotated in blocks of {hadamard_block}",
                           symmetric)
    return q, scale, zp


def quantize_activations(rows, spec):
    """Int8Linear's activation codes (`reference.quantize_activations`) as spec (a
    `qtriton.model.scheme.ActivationQuant`) says, on the backend in force, in the caller's kind.
    Not a lab function: rows and spec come from an Int8Linear, already checked."""
    backend, device = resolve(rows)
    out = backend.quantize_activations(_to_backend(rows, device), spec.convert(lambda v: _to_backend(v, device)))
    q, scale, zp = (_to_caller(v, rows) for v in out)
    checks.activations_result(scale, spec)
    return q, scale, zp


def _dequantize(q, scale, zero_point, granularity: str, axis: int | None):
    backend, device = resolve(q)
    if device is not None:
        scale = device_tensor(scale, torch.float32, device)
        zero_point = None if zero_point is None else device_tensor(zero_point, torch.int32, device)
    out_dtype = np.float32 if device is None else torch.float32
    out = backend.dequantize(
        _to_backend(q, device), _to_backend(scale, device), _to_backend(zero_point, device), granularity, axis, out_dtype
    )
    return _to_caller(out, q)


# ---------------------------------------------------------------------------- lab functions


def quantize_symmetric(x, num_bits: int = 8):
    """Per-tensor symmetric quantization: scale = max|x| / (2^(b-1) - 1), q = clamp(round(x / scale)).

    Returns (q int8, scale). All-zero input: scale 1.0. Empty input: empty q, scale 1.0."""
    num_bits = checks.num_bits(num_bits)
    x = checks.float_input(x, "x")
    q, scale, _ = _quantize(x, num_bits, True, "tensor")
    return q, _scalar_for_numpy(scale, x, float)


def dequantize_symmetric(q, scale):
    """q * scale as float32 (scale rounded to float32, see the module docstring)."""
    q = checks.quantized(q, "q")
    scale = checks.scale(scale, "scale", (), q)
    return _dequantize(q, scale, None, "tensor", None)


def quantize_asymmetric(x, num_bits: int = 8):
    """Per-tensor asymmetric quantization: min(x) -> 0, max(x) -> 2^b - 1.

    scale = (max - min) / (2^b - 1), zero_point = round(-min / scale) (an integer that may lie
    outside [0, 2^b - 1]), q = clamp(round(x / scale) + zero_point). Returns (q uint8, scale,
    zero_point). Constant input: scale 1.0, zero_point = -round(constant)."""
    num_bits = checks.num_bits(num_bits)
    x = checks.float_input(x, "x")
    q, scale, zp = _quantize(x, num_bits, False, "tensor")
    return q, _scalar_for_numpy(scale, x, float), _scalar_for_numpy(zp, x, int)


def dequantize_asymmetric(q, scale, zero_point):
    """(q - zero_point) * scale as float32, the difference taken without uint8 wrap-around."""
    q = checks.quantized(q, "q")
    scale = checks.scale(scale, "scale", (), q)
    zero_point = checks.zero_point(zero_point, "zero_point", (), q, checks.INT32_MAX)
    return _dequantize(q, scale, zero_point, "tensor", None)


def quantize_per_channel(x, axis: int = 0, num_bits: int = 8):
    """Symmetric quantization with one scale per index along axis (negative axes too).

    Returns (q int8, scales of shape (x.shape[axis],)); an all-zero channel gets scale 1.0."""
    num_bits = checks.num_bits(num_bits)
    x = checks.float_input(x, "x")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension for per-channel quantization")
    axis = checks.axis(axis, x.ndim)
    q, scales, _ = _quantize(x, num_bits, True, "channel", axis)
    return q, scales


def dequantize_per_channel(q, scales, axis: int = 0):
    """q * scales[channel] as float32, channels along axis."""
    q = checks.quantized(q, "q")
    if q.ndim == 0:
        raise ValueError("q must have at least one dimension for per-channel dequantization")
    axis = checks.axis(axis, q.ndim)
    scales = checks.scale(scales, "scales", (q.shape[axis],), q)
    if isinstance(scales, float) or scales.ndim == 0:
        raise ValueError(f"scales must have shape ({q.shape[axis]},) (one per channel along axis {axis})")
    return _dequantize(q, scales, None, "channel", axis)


def quantize_per_token(x, num_bits: int = 8, symmetric: bool = True, *, include_zero: bool = False,
                       hadamard_block: int | None = None):
    """Dynamic per-token (row-wise) quantization over the last axis, the form the int8 matmul
    consumes. Returns (q, scales) or, asymmetric, (q uint8, scales, zero_points); scales and
    zero points have shape x.shape[:-1]. include_zero (asymmetric): each row's range
    includes 0, so zero points lie in [0, 2^b - 1] and a constant row keeps its value
    (Int8Linear's activations). hadamard_block (a power of two from 2 to 16384 dividing the
    last axis): each row is rotated first, x -> x R (hadamard_rotate), and the codes and
    scales are those of x R; the Triton kernel rotates in registers, in the same pass."""
    num_bits = checks.num_bits(num_bits)
    symmetric = checks.flag(symmetric, "symmetric")
    include_zero = checks.flag(include_zero, "include_zero")
    x = checks.float_input(x, "x")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension for per-token quantization")
    hadamard_block = checks.hadamard_block(hadamard_block, x.shape[-1])
    q, scales, zps = _quantize(x, num_bits, symmetric, "token", include_zero=include_zero,
                               hadamard_block=hadamard_block)
    return (q, scales) if symmetric else (q, scales, zps)


def hadamard_rotate(x, block: int):
    """x R over the last axis, R = diag(H, ..., H) / sqrt(block) with H the Sylvester Hadamard
    matrix of order block (a power of two from 2 to 16384 dividing x.shape[-1]): the rotation
    quantize_per_token(..., hadamard_block=block) applies to activations, here alone. R is
    orthogonal, symmetric and its own inverse, so for a weight W (out, in),
    hadamard_rotate(W, block) is W R and (x R)(W R)^T = x W^T. The butterflies of
    reference.hadamard_rotate, in float32 (float64 for float64 input: weights can be rotated
    in float64 and rounded once); returns that dtype, in the caller's kind. Finite input
    whose rotation overflows (|values| beyond 3.4e38 / block) raises ValueError where the
    values are visible (off CUDA)."""
    x = checks.float_input(x, "x", keep_float64=True)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension to rotate its last axis")
    block = checks.hadamard_block(block, x.shape[-1], name="block")
    backend, device = resolve(x)
    out = _to_caller(backend.hadamard_rotate(_to_backend(x, device), block), x)
    checks.finite_result(out, f"x rotated in blocks of {block}")
    return out


def dequantize_per_token(q, scales, zero_points=None):
    """q * scales[..., None] (or (q - zero_points[..., None]) * scales[..., None]) as float32."""
    q = checks.quantized(q, "q")
    if q.ndim == 0:
        raise ValueError("q must have at least one dimension for per-token dequantization")
    rows = tuple(q.shape[:-1])
    scales = checks.rows(scales, "scales", rows, q, integer=False)
    checks.scale_values(scales, "scales")
    if zero_points is not None:
        zero_points = checks.rows(zero_points, "zero_points", rows, q, integer=True)
        checks.zero_point_range(zero_points, "zero_points", checks.INT32_MAX)
    return _dequantize(q, scales, zero_points, "token", None)


def fake_quantize(x, num_bits: int = 8, symmetric: bool = True):
    """Quantize then dequantize per tensor (fused on the triton backend): same dtype and shape.
    A finite x gives a finite result: values the grid puts past the dtype's largest finite
    value are saturated to it (reference.fake_quantize)."""
    num_bits = checks.num_bits(num_bits)
    original_dtype = x.dtype if _is_tensor(x) else np.asarray(x).dtype
    symmetric = checks.flag(symmetric, "symmetric")
    x = checks.float_input(x, "x")
    backend, device = resolve(x)
    out = _to_caller(backend.fake_quantize(_to_backend(x, device), num_bits, symmetric), x)
    if not (_is_tensor(out) and out.is_cuda):  # x is finite: a NaN in out is a NaN scale, which quantize_asymmetric refuses
        checks.quantize_result(out.float() if _is_tensor(out) else out, "x", symmetric)
    if _is_tensor(out):  # saturated at the caller's dtype too (a bf16 x ran as float32 on the numpy backend)
        limit = torch.finfo(original_dtype).max
        return out.clamp(-limit, limit).to(original_dtype)
    return out.astype(original_dtype if np.issubdtype(original_dtype, np.floating) else np.float32)


def quantization_error(original, quantized, dequantized) -> dict[str, float]:
    """mse, mae, max_error, relative_error (mse / variance of original) and snr (dB, inf when
    mse is 0) between original and dequantized. quantized is only checked for shape; may be None."""
    ref = reference_array(original, "original")
    deq = reference_array(dequantized, "dequantized")
    if deq.shape != ref.shape:
        raise ValueError(f"dequantized has shape {deq.shape} but original has shape {ref.shape}")
    if quantized is not None and tuple(np.shape(quantized) if not _is_tensor(quantized) else quantized.shape) != ref.shape:
        raise ValueError(f"quantized has shape {tuple(np.shape(quantized))} but original has shape {ref.shape}")
    if ref.size == 0:
        raise ValueError("original is empty: error metrics are undefined")
    if not (np.isfinite(ref).all() and np.isfinite(deq).all()):
        raise ValueError("original and dequantized must be finite to measure the error")
    return reference.quantization_error(ref, deq)


def reference_array(v, name: str) -> np.ndarray:
    """Any array or tensor as float64 NumPy (a host copy; metrics are not a hot path); float8
    refused as everywhere (checks.FLOAT8_RULE), meta tensors too (no values)."""
    if _is_tensor(v):
        checks.no_float8(v, name)
        checks.has_values(v, name)
        return v.detach().to(torch.float64).cpu().numpy()
    arr = np.asarray(v)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)) or arr.dtype == np.bool_:
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def quantized_matmul(a_q, a_scale, b_q, b_scale, a_zp=0, b_zp=0, *, bias=None, out_dtype=None):
    """((a_q - a_zp) @ (b_q - b_zp)) * a_scale * b_scale + bias, the integer part exact.

    a_q (M, K) and b_q (K, N): int8 or uint8, K <= 131071. a_scale, a_zp: scalars or per
    row (M,); b_scale, b_zp, bias: scalars (bias: (N,) only) or per column (N,).
    Scales are float32 on every backend: Python floats and float64 / float16 / bfloat16
    scales are rounded or widened to float32, and a scale that is not then positive, finite
    and normal (1.175e-38 to 3.403e38) raises ValueError. Zero points: |zp| <= 2**24.
    out_dtype: float32 (default), float16 or bfloat16 (tensors only), as a torch or NumPy
    dtype or a name; "fp32", "fp16", "half" and "bf16" are supported spellings too. Value checks (scales,
    zero points, bias) run off CUDA only, and not while torch.compile traces."""
    a_q, b_q, operands, out_dtype = checks.matmul(
        a_q, b_q, MatmulOperands(a_scale, b_scale, a_zp, b_zp, bias), out_dtype
    )
    numpy_caller = not _is_tensor(a_q)
    np_dtype, torch_dtype = checks.OUT_DTYPES[out_dtype]
    if numpy_caller and np_dtype is None:
        raise ValueError("out_dtype=bfloat16 needs torch tensors: NumPy has no bfloat16")
    backend, device = resolve(a_q)
    bias = operands.bias
    if device is not None and bias is not None:
        bias = device_tensor(bias, torch.float32, device)
    # A torch caller on the numpy backend gets the oracle's float64, rounded once at the end.
    backend_dtype = torch_dtype if device is not None else np_dtype if numpy_caller else np.float64
    operands = MatmulOperands(*(_to_backend(v, device) for v in (operands.a_scale, operands.b_scale, operands.a_zp,
                                                                 operands.b_zp, bias)))
    out = _to_caller(backend.quantized_matmul(_to_backend(a_q, device), _to_backend(b_q, device), operands,
                                              backend_dtype), a_q)
    return out if numpy_caller else out.to(torch_dtype)


# ----------------------------------------------------------------------- analysis helpers


def compare_quantization_methods(x, num_bits: int = 8) -> dict[str, dict[str, float]]:
    """The quantization_error dict for each method: symmetric/asymmetric per tensor and per
    channel (axis 0), and symmetric group-wise (128 along the last axis) where it divides."""
    num_bits = checks.num_bits(num_bits)
    x = checks.float_input(x, "x")
    checks.has_values(x, "x")
    if x.ndim == 0 or x.shape[0] == 0 or 0 in tuple(x.shape):
        raise ValueError("x must be a non-empty array with at least one dimension")
    results = {}
    methods = [
        ("symmetric_per_tensor", True, "tensor", None),
        ("asymmetric_per_tensor", False, "tensor", None),
        ("symmetric_per_channel", True, "channel", 0),
        ("asymmetric_per_channel", False, "channel", 0),
    ]
    for name, symmetric, granularity, axis in methods:
        q, scale, zp = _quantize(x, num_bits, symmetric, granularity, axis)
        results[name] = quantization_error(x, q, _dequantize(q, scale, zp, granularity, axis))
    group = 128
    if x.shape[-1] % group == 0 and x.shape[-1] > group:
        grouped = x.reshape(*x.shape[:-1], x.shape[-1] // group, group)
        q, scale, _ = _quantize(grouped, num_bits, True, "token")
        results[f"symmetric_groupwise_{group}"] = quantization_error(
            x, None, _dequantize(q, scale, None, "token", None).reshape(x.shape)
        )
    return results


def _dtype_bits(dtype) -> int:
    if isinstance(dtype, torch.dtype):
        return dtype.itemsize * 8
    name = str(dtype).lower().removeprefix("torch.")
    aliases = {"bf16": 16, "bfloat16": 16, "fp16": 16, "half": 16, "fp32": 32, "float": 32, "fp64": 64, "double": 64, "fp8": 8}
    if name in aliases:
        return aliases[name]
    try:
        return np.dtype(dtype).itemsize * 8
    except TypeError:
        raise ValueError(f"original_dtype must be a NumPy type, a torch dtype or a dtype name, got {dtype!r}") from None


def calculate_memory_savings(original_dtype, quantized_bits, include_scale_overhead: bool = True, elements_per_scale: int = 1):
    """Memory of quantized_bits codes (plus one float32 scale per elements_per_scale values when
    include_scale_overhead) against original_dtype. Returns compression_ratio, memory_reduction
    (percent: 75.0 for float32 -> 8 bits without overhead) and effective_bits per value."""
    if isinstance(quantized_bits, bool) or not isinstance(quantized_bits, (int, np.integer)) or not 1 <= quantized_bits <= 32:
        raise ValueError(f"quantized_bits must be an int between 1 and 32, got {quantized_bits!r}")
    if isinstance(elements_per_scale, bool) or not isinstance(elements_per_scale, (int, np.integer)) or elements_per_scale < 1:
        raise ValueError(f"elements_per_scale must be a positive int, got {elements_per_scale!r}")
    original_bits = _dtype_bits(original_dtype)
    effective = float(quantized_bits) + (32.0 / elements_per_scale if include_scale_overhead else 0.0)
    return {
        "original_bits": original_bits,
        "effective_bits": effective,
        "compression_ratio": original_bits / effective,
        "memory_reduction": 100.0 * (1.0 - effective / original_bits),
    }
