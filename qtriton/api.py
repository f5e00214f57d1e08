"""The lab API: validate, pick a backend, convert, run, and hand back the caller's kind.

NumPy in, NumPy out (per-tensor scales as Python floats, zero points as Python ints);
torch in, torch out on the same device (scales as float32 tensors, zero points as int32
tensors: on CUDA nothing here syncs with the host). See docs/design.md for the flow.
"""

from __future__ import annotations

import importlib
import numbers

import numpy as np
import torch

from qtriton import reference
from qtriton.backend import get_backend, interpreter_enabled, triton_device_error
from qtriton.tensors import device_tensor

_BACKEND_MODULES = {
    "numpy": "qtriton.numpy_backend",
    "torch": "qtriton.torch_backend",
    "triton": "qtriton.triton_backend",
}
_INT32_MAX = 2**31 - 1

# ------------------------------------------------------------------------ dispatch helpers


def _is_tensor(v) -> bool:
    return isinstance(v, torch.Tensor)


def _on_cuda(v) -> bool:
    return _is_tensor(v) and v.device.type == "cuda"


def _resolve(x) -> tuple[str, torch.device | None]:
    """The backend that runs a call whose main input is x, and the device its tensors go
    to (None for the numpy backend, which takes arrays)."""
    backend = get_backend()
    if backend == "auto":
        backend = "numpy" if not _is_tensor(x) else "triton" if x.device.type == "cuda" else "torch"
    if backend == "numpy":
        return backend, None
    device = x.device if _is_tensor(x) else torch.device("cpu")
    return backend, _triton_device(device) if backend == "triton" else device


def _triton_device(device: torch.device) -> torch.device:
    """Where the forced triton backend runs data that lives on device: there if the kernels
    can run there; CPU data on a GPU machine goes to the GPU (and its results come back)."""
    error = triton_device_error(device.type)
    if error is None:
        return device
    if device.type == "cpu" and torch.cuda.is_available() and not interpreter_enabled():
        return torch.device("cuda")
    raise RuntimeError(error)


_loaded_backends: dict = {}


def _impl(backend: str):
    # Imported on first use (the kernels decide at import whether they run compiled or in
    # the interpreter), then a plain dict lookup that torch.compile traces without a break.
    module = _loaded_backends.get(backend)
    if module is None:
        module = _loaded_backends[backend] = importlib.import_module(_BACKEND_MODULES[backend])
    return module


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


# ----------------------------------------------------------------------------- validation


def _check_bits(num_bits) -> int:
    if isinstance(num_bits, bool) or not isinstance(num_bits, (int, np.integer)):
        raise TypeError(f"num_bits must be an int, got {type(num_bits).__name__}")
    if not 2 <= num_bits <= 8:
        raise ValueError(f"num_bits must be between 2 and 8, got {num_bits}")
    return int(num_bits)


def _check_float_input(x, name: str):
    """A float array or tensor to quantize: float32 NumPy, or a float tensor (float64 narrowed)."""
    if _is_tensor(x):
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
        x = x.detach()
        if x.dtype == torch.float64:
            x = x.to(torch.float32)
        if not _on_cuda(x) and x.numel() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or Inf: quantization needs finite data")
        return x
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.dtype != np.float16:
        with np.errstate(over="ignore"):
            arr = arr.astype(np.float32, copy=False)
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf (after conversion to float32): quantization needs finite data")
    return arr


def _check_quantized(q, name: str, ndim: int | None = None):
    dtype = q.dtype if _is_tensor(q) or isinstance(q, np.ndarray) else None
    if dtype not in (np.int8, np.uint8, torch.int8, torch.uint8):
        raise TypeError(f"{name} must be an int8 or uint8 array or tensor, got {dtype or type(q).__name__}")
    if ndim is not None and q.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(q.shape)}")
    return q.detach() if _is_tensor(q) else q


def _check_axis(axis, ndim: int, name: str = "axis") -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array of {ndim} dimension(s)")
    return int(axis) % ndim


def _kind(v) -> str:
    """NumPy's dtype kind letter of an array or tensor: b, i, u, f or c."""
    if not _is_tensor(v):
        return v.dtype.kind
    if v.dtype == torch.bool:
        return "b"
    return "f" if v.is_floating_point() else "c" if v.is_complex() else "i"


def _check_vector(v, name: str, lengths: tuple[int, ...], like, integer: bool):
    """A scale or zero point: a scalar (returned as a Python number) or a 1-D array/tensor of
    one of the allowed lengths (a one-element vector counts as a scalar). Float scales,
    integer zero points; integer scales are widened to float32."""
    if v is None or isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number or an array, got {v!r}")
    if isinstance(v, (numbers.Real, np.integer, np.floating)):
        if integer and not float(v).is_integer():
            raise TypeError(f"{name} must be an integer, got {v!r}")
        return int(v) if integer else float(v)
    if not (_is_tensor(v) or isinstance(v, np.ndarray)):
        v = np.asarray(v)
    kind = _kind(v)
    if kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {v.dtype}")
    if integer and kind == "f":
        raise TypeError(f"{name} must hold integers, got dtype {v.dtype}")
    if not integer and kind != "f":
        v = v.to(torch.float32) if _is_tensor(v) else v.astype(np.float32)
    if v.ndim > 1 or (v.ndim == 1 and v.shape[0] not in (1, *lengths)):
        expected = " or ".join(f"({n},)" for n in lengths)
        raise ValueError(f"{name} must be a scalar or of shape {expected}, got shape {tuple(v.shape)}")
    if _is_tensor(v) and _is_tensor(like) and v.device != like.device:
        raise ValueError(f"{name} is on {v.device} but the data is on {like.device}")
    if v.ndim == 1 and v.shape[0] == 1 and 1 not in lengths:
        v = v.reshape(())
    return v


def _check_rows(v, name: str, rows: tuple[int, ...], like, integer: bool):
    """Per-token scales / zero points: an array or tensor of shape q.shape[:-1]."""
    if not (_is_tensor(v) or isinstance(v, np.ndarray)):
        v = np.asarray(v)
    if tuple(v.shape) != rows:
        raise ValueError(f"{name} must have shape {rows} (q.shape[:-1]), got {tuple(v.shape)}")
    _check_vector(v.reshape(-1), name, (v.reshape(-1).shape[0],), like, integer)
    return v


def _check_scale_values(scale, name: str):
    """Scales must be positive and finite (checked off CUDA only: no host sync there)."""
    if _on_cuda(scale):
        return
    values = np.asarray(scale.detach().cpu() if _is_tensor(scale) else scale, dtype=np.float64)
    if not (np.isfinite(values) & (values > 0)).all():
        raise ValueError(f"{name} must be positive and finite, got {values if values.ndim == 0 else values.ravel()[:8]}")


def _check_zero_point_range(zp, name: str):
    """Zero points must fit int32 (what the kernels take); checked off CUDA only."""
    if _on_cuda(zp):
        return
    if isinstance(zp, int):
        lo = hi = zp
    else:  # min/max in the array's own dtype: a cast to int64 first would wrap uint64 values
        values = zp.detach().cpu().numpy() if _is_tensor(zp) else np.asarray(zp)
        if values.size == 0:
            return
        lo, hi = int(values.min()), int(values.max())
    if hi > _INT32_MAX or lo < -_INT32_MAX:
        raise ValueError(f"{name} must fit in int32, got {hi if hi > _INT32_MAX else lo}")


def _check_result(scale, name: str):
    """A NaN scale marks a slice the grid cannot represent (reference.py); say so off CUDA."""
    if _on_cuda(scale):
        return
    values = scale.cpu().numpy() if _is_tensor(scale) else np.asarray(scale)
    if np.isnan(values).any():
        raise ValueError(
            f"{name} cannot be quantized asymmetrically: its range (max - min) is too narrow for its distance "
            f"from zero (zero point beyond +-2^24, finer than float32 resolves) or overflows float32; "
            f"quantize it symmetrically or center it first"
        )


# ------------------------------------------------------------------------ shared machinery


def _quantize(x, num_bits: int, symmetric: bool, granularity: str, axis: int | None = None, include_zero: bool = False):
    """Validated x -> (q, scale, zero_point or None) in the caller's kind."""
    backend, device = _resolve(x)
    out = _impl(backend).quantize(_to_backend(x, device), num_bits, symmetric, granularity, axis, include_zero)
    q, scale, zp = (_to_caller(v, x) for v in out)
    _check_result(scale, "x")  # on the caller's side: off CUDA, whichever device computed it
    return q, scale, zp


def _dequantize(q, scale, zero_point, granularity: str, axis: int | None):
    backend, device = _resolve(q)
    if device is not None:
        scale = device_tensor(scale, torch.float32, device)
        zero_point = None if zero_point is None else device_tensor(zero_point, torch.int32, device)
    out_dtype = np.float32 if device is None else torch.float32
    out = _impl(backend).dequantize(
        _to_backend(q, device), _to_backend(scale, device), _to_backend(zero_point, device), granularity, axis, out_dtype
    )
    return _to_caller(out, q)


# ---------------------------------------------------------------------------- lab functions


def quantize_symmetric(x, num_bits: int = 8):
    """Per-tensor symmetric quantization: scale = max|x| / (2^(b-1) - 1), q = clamp(round(x / scale)).

    Returns (q int8, scale). All-zero input: scale 1.0. Empty input: empty q, scale 1.0."""
    num_bits = _check_bits(num_bits)
    x = _check_float_input(x, "x")
    q, scale, _ = _quantize(x, num_bits, True, "tensor")
    return q, _scalar_for_numpy(scale, x, float)


def dequantize_symmetric(q, scale):
    """q * scale as float32."""
    q = _check_quantized(q, "q")
    scale = _check_vector(scale, "scale", (), q, integer=False)
    _check_scale_values(scale, "scale")
    return _dequantize(q, scale, None, "tensor", None)


def quantize_asymmetric(x, num_bits: int = 8):
    """Per-tensor asymmetric quantization: min(x) -> 0, max(x) -> 2^b - 1.

    scale = (max - min) / (2^b - 1), zero_point = round(-min / scale) (an integer that may lie
    outside [0, 2^b - 1]), q = clamp(round(x / scale) + zero_point). Returns (q uint8, scale,
    zero_point). Constant input: scale 1.0, zero_point = -round(constant)."""
    num_bits = _check_bits(num_bits)
    x = _check_float_input(x, "x")
    q, scale, zp = _quantize(x, num_bits, False, "tensor")
    return q, _scalar_for_numpy(scale, x, float), _scalar_for_numpy(zp, x, int)


def dequantize_asymmetric(q, scale, zero_point):
    """(q - zero_point) * scale as float32, the difference taken without uint8 wrap-around."""
    q = _check_quantized(q, "q")
    scale = _check_vector(scale, "scale", (), q, integer=False)
    _check_scale_values(scale, "scale")
    zero_point = _check_vector(zero_point, "zero_point", (), q, integer=True)
    _check_zero_point_range(zero_point, "zero_point")
    return _dequantize(q, scale, zero_point, "tensor", None)


def quantize_per_channel(x, axis: int = 0, num_bits: int = 8):
    """Symmetric quantization with one scale per index along axis (negative axes too).

    Returns (q int8, scales of shape (x.shape[axis],)); an all-zero channel gets scale 1.0."""
    num_bits = _check_bits(num_bits)
    x = _check_float_input(x, "x")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension for per-channel quantization")
    axis = _check_axis(axis, x.ndim)
    q, scales, _ = _quantize(x, num_bits, True, "channel", axis)
    return q, scales


def dequantize_per_channel(q, scales, axis: int = 0):
    """q * scales[channel] as float32, channels along axis."""
    q = _check_quantized(q, "q")
    if q.ndim == 0:
        raise ValueError("q must have at least one dimension for per-channel dequantization")
    axis = _check_axis(axis, q.ndim)
    scales = _check_vector(scales, "scales", (q.shape[axis],), q, integer=False)
    if isinstance(scales, float) or scales.ndim == 0:
        raise ValueError(f"scales must have shape ({q.shape[axis]},) (one per channel along axis {axis})")
    _check_scale_values(scales, "scales")
    return _dequantize(q, scales, None, "channel", axis)


def quantize_per_token(x, num_bits: int = 8, symmetric: bool = True, *, include_zero: bool = False):
    """Dynamic per-token (row-wise) quantization over the last axis, the form the int8 matmul
    consumes. Returns (q, scales) or, asymmetric, (q uint8, scales, zero_points); scales and
    zero points have shape x.shape[:-1]. include_zero (asymmetric): each row's range
    includes 0, so zero points lie in [0, 2^b - 1] and a constant row keeps its value
    (Int8Linear's activations)."""
    num_bits = _check_bits(num_bits)
    x = _check_float_input(x, "x")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension for per-token quantization")
    q, scales, zps = _quantize(x, num_bits, bool(symmetric), "token", include_zero=bool(include_zero))
    return (q, scales) if symmetric else (q, scales, zps)


def dequantize_per_token(q, scales, zero_points=None):
    """q * scales[..., None] (or (q - zero_points[..., None]) * scales[..., None]) as float32."""
    q = _check_quantized(q, "q")
    if q.ndim == 0:
        raise ValueError("q must have at least one dimension for per-token dequantization")
    rows = tuple(q.shape[:-1])
    scales = _check_rows(scales, "scales", rows, q, integer=False)
    _check_scale_values(scales, "scales")
    if zero_points is not None:
        zero_points = _check_rows(zero_points, "zero_points", rows, q, integer=True)
        _check_zero_point_range(zero_points, "zero_points")
    return _dequantize(q, scales, zero_points, "token", None)


def fake_quantize(x, num_bits: int = 8, symmetric: bool = True):
    """Quantize then dequantize per tensor (fused on the triton backend): same dtype and shape."""
    num_bits = _check_bits(num_bits)
    original_dtype = x.dtype if _is_tensor(x) else np.asarray(x).dtype
    x = _check_float_input(x, "x")
    backend, device = _resolve(x)
    out = _to_caller(_impl(backend).fake_quantize(_to_backend(x, device), num_bits, bool(symmetric)), x)
    if not _on_cuda(out):  # x is finite: a NaN in out is a NaN scale, which quantize_asymmetric refuses
        _check_result(out.float() if _is_tensor(out) else out, "x")
    if _is_tensor(out):
        return out.to(original_dtype)
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
    """Any array or tensor as float64 NumPy (a host copy; metrics are not a hot path)."""
    if _is_tensor(v):
        return v.detach().to(torch.float64).cpu().numpy()
    arr = np.asarray(v)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)) or arr.dtype == np.bool_:
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


_OUT_DTYPES = {
    "float32": (np.float32, torch.float32),
    "float16": (np.float16, torch.float16),
    "bfloat16": (None, torch.bfloat16),
}


def _out_dtype_name(out_dtype) -> str:
    """float32, float16 or bfloat16 from None, a torch or NumPy dtype, or a name."""
    if out_dtype is None:
        return "float32"
    if isinstance(out_dtype, torch.dtype):
        name = str(out_dtype).removeprefix("torch.")
    else:
        try:
            name = np.dtype(out_dtype).name
        except TypeError:
            name = str(out_dtype)
    name = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}.get(name, name)
    if name not in _OUT_DTYPES:
        raise ValueError(f"out_dtype must be float32, float16 or bfloat16, got {out_dtype!r}")
    return name


def quantized_matmul(a_q, a_scale, b_q, b_scale, a_zp=0, b_zp=0, *, bias=None, out_dtype=None):
    """((a_q - a_zp) @ (b_q - b_zp)) * a_scale * b_scale + bias, the integer part exact.

    a_q (M, K) and b_q (K, N): int8 or uint8. a_scale, a_zp: scalars or per row (M,);
    b_scale, b_zp, bias: scalars (bias: (N,) only) or per column (N,). out_dtype: float32
    (default), float16 or bfloat16 (tensors only)."""
    a_q = _check_quantized(a_q, "a_q", ndim=2)
    b_q = _check_quantized(b_q, "b_q", ndim=2)
    if _is_tensor(a_q) != _is_tensor(b_q):
        raise TypeError("a_q and b_q must both be NumPy arrays or both be torch tensors")
    if _is_tensor(a_q) and a_q.device != b_q.device:
        raise ValueError(f"a_q is on {a_q.device} but b_q is on {b_q.device}")
    (m, k), (k_b, n) = a_q.shape, b_q.shape
    if k != k_b:
        raise ValueError(f"a_q has shape {tuple(a_q.shape)} and b_q has shape {tuple(b_q.shape)}: inner dimensions {k} != {k_b}")
    a_scale = _check_vector(a_scale, "a_scale", (m,), a_q, integer=False)
    b_scale = _check_vector(b_scale, "b_scale", (n,), a_q, integer=False)
    a_zp = _check_vector(a_zp, "a_zp", (m,), a_q, integer=True)
    b_zp = _check_vector(b_zp, "b_zp", (n,), a_q, integer=True)
    for name, v in (("a_scale", a_scale), ("b_scale", b_scale)):
        _check_scale_values(v, name)
    for name, v in (("a_zp", a_zp), ("b_zp", b_zp)):
        _check_zero_point_range(v, name)
    if bias is not None:
        bias = _check_vector(bias, "bias", (n,), a_q, integer=False)
        if isinstance(bias, float) or bias.ndim == 0 or bias.shape[0] != n:
            raise ValueError(f"bias must have shape ({n},)")
        if not _on_cuda(bias) and not np.isfinite(np.asarray(_to_backend(bias, None), dtype=np.float64)).all():
            raise ValueError("bias contains NaN or Inf")
    numpy_caller = not _is_tensor(a_q)
    np_dtype, torch_dtype = _OUT_DTYPES[_out_dtype_name(out_dtype)]
    if numpy_caller and np_dtype is None:
        raise ValueError("out_dtype=bfloat16 needs torch tensors: NumPy has no bfloat16")
    backend, device = _resolve(a_q)
    if device is not None and bias is not None:
        bias = device_tensor(bias, torch.float32, device)
    # A torch caller on the numpy backend gets the oracle's float64, rounded once at the end.
    backend_dtype = torch_dtype if device is not None else np_dtype if numpy_caller else np.float64
    args = [_to_backend(v, device) for v in (a_q, a_scale, b_q, b_scale, a_zp, b_zp, bias)]
    out = _to_caller(_impl(backend).quantized_matmul(*args, backend_dtype), a_q)
    return out if numpy_caller else out.to(torch_dtype)


# ----------------------------------------------------------------------- analysis helpers


def compare_quantization_methods(x, num_bits: int = 8) -> dict[str, dict[str, float]]:
    """The quantization_error dict for each method: symmetric/asymmetric per tensor and per
    channel (axis 0), and symmetric group-wise (128 along the last axis) where it divides."""
    num_bits = _check_bits(num_bits)
    x = _check_float_input(x, "x")
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
