"""Argument rules and their messages, one place for every entry point: the lab API
(`qtriton.api`), the kernel launchers' public functions (`qtriton.ops`), `Int8Linear`
(its input, the layer it is built from, its calibrated scales) and `quantize_model`'s
arguments. Every rule raises TypeError (wrong kind or dtype) or ValueError
(wrong shape, range or device) naming the argument.

Limits (the same on every backend):

- scales are float32: a Python float or a float64 scale is rounded to float32, and a scale
  that is not then positive, finite and normal (FLT_MIN <= scale <= FLT_MAX) is refused;
- zero points of the matmul: |zp| <= 2**24 (`reference.ZERO_POINT_LIMIT`, the largest a
  quantize call produces): every backend's integer arithmetic is exact there;
- zero points of dequantize: any int32 value but -2**31;
- K of the GEMM: <= MAX_K = 131071 (the kernels' int32 accumulator holds 128 * 128 * K);
- a Hadamard rotation's block: a power of two from 2 to MAX_HADAMARD_BLOCK = 16384 that
  divides the rotated (last) axis;
- a bias is applied in float32: it must be finite after rounding to float32 (1e300 is not);
- float8 tensors are refused as data, scales and bias at every entry point (FLOAT8_RULE).

Checks of values held in tensors (finite data, scale and zero-point ranges) read the data:
the API runs them off CUDA only (on CUDA they would sync with the host) and not while
torch.compile traces (a data-dependent branch breaks the graph); the `ops` launchers never
read tensor values (a NaN scale is the kernels' signal of an unquantizable slice, passed
on). Python numbers and metadata (dtype, shape, device) are always checked, and what a
dtype alone rules out is refused without reading: a zero-point tensor whose values go
unread must be int32 or narrower (an int64 one could hold 2**40, which int32 wraps).
What stays the caller's duty where values go unread (`ops`, CUDA, compiling): scales
positive, finite and normal in float32; matmul zero points within +-2**24 and dequantize
zero points not -2**31 (int32 tensors can hold more); data without NaN / Inf.

Meta tensors have no values: value rules skip them (shapes propagate through the API);
what measures values (quantization_error, compare_quantization_methods) refuses them.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from qtriton import reference
from qtriton.backend import device_problem, triton_device_error
from qtriton.operands import MatmulOperands

ZERO_POINT_LIMIT = reference.ZERO_POINT_LIMIT
INT32_MAX = 2**31 - 1
# |(a - 128) @ (b - 128)| <= 128 * 128 * K on the kernels' int8-shifted operands.
MAX_K = INT32_MAX // (128 * 128)
# The largest Hadamard rotation block: the quantize kernel rotates a tile of whole blocks in
# registers (the single-pass row limit, qtriton.ops.quantize.MAX_SINGLE_PASS_K).
MAX_HADAMARD_BLOCK = 2**14
FLT_MIN = float(reference.FLT_MIN)
FLT_MAX = float(np.finfo(np.float32).max)
OUT_DTYPES = {
    "float32": (np.float32, torch.float32),
    "float16": (np.float16, torch.float16),
    "bfloat16": (None, torch.bfloat16),
}
_KERNEL_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_QUANTIZED_DTYPES = (np.int8, np.uint8, torch.int8, torch.uint8)
_SYMBOLIC = (torch.SymInt, torch.SymFloat)
FLOAT8_RULE = (
    "float8 is refused at every entry point (the API, qtriton.ops, Int8Linear): its codes come "
    "with their own scales; dequantize it, or convert it with .float(), first"
)


def no_float8(v, name: str) -> None:
    """The one rule for float8 tensors (data, scales, bias): a TypeError everywhere."""
    if is_tensor(v) and v.is_floating_point() and v.dtype.itemsize == 1:
        raise TypeError(f"{name} is {v.dtype}: {FLOAT8_RULE}")


def has_values(v, name: str) -> None:
    """What reads values (error metrics) needs them: a meta tensor has shapes only."""
    if is_tensor(v) and v.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (a shape without data): it has no values to measure")


def is_tensor(v) -> bool:
    return isinstance(v, torch.Tensor)


def values_visible(v) -> bool:
    """Whether a rule may read v's values: not on CUDA (a host sync), not while compiling."""
    if is_tensor(v) and v.device.type in ("cuda", "meta"):  # meta: there are no values
        return False
    return not torch.compiler.is_compiling()


def _host_values(v, dtype) -> np.ndarray:
    """v's values as a NumPy array of dtype (tensors of any dtype, bf16 included)."""
    if is_tensor(v):
        v = v.detach().cpu()
        return (v.to(torch.float64) if v.is_floating_point() else v).numpy().astype(dtype)
    with np.errstate(over="ignore"):
        return np.asarray(v).astype(dtype)


def _kind(v) -> str:
    """NumPy's dtype kind letter of an array or tensor: b, i, u, f or c."""
    if not is_tensor(v):
        return v.dtype.kind
    if v.dtype == torch.bool:
        return "b"
    return "f" if v.is_floating_point() else "c" if v.is_complex() else "i"


# ----------------------------------------------------------------------- plain arguments
def num_bits(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"num_bits must be an int, got {type(value).__name__}")
    if not 2 <= value <= 8:
        raise ValueError(f"num_bits must be between 2 and 8, got {value}")
    return int(value)


def flag(value, name: str) -> bool:
    """A bool argument (symmetric, ...): a string such as "no" is not taken as True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def hadamard_block(value, k: int | None = None, name: str = "hadamard_block") -> int | None:
    """The block of a Hadamard rotation (reference.hadamard_rotate): None (no rotation) or a
    power of two from 2 to MAX_HADAMARD_BLOCK that divides k, the length of the rotated
    axis, when given."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int (a power of two) or None, got {type(value).__name__}")
    if not 2 <= value <= MAX_HADAMARD_BLOCK or value & (value - 1):
        raise ValueError(f"{name} must be a power of two from 2 to {MAX_HADAMARD_BLOCK}, got {value}")
    if k is not None and k % value:
        raise ValueError(f"{name}={value} does not divide the rotated axis: its length is {k} (the last axis)")
    return int(value)


def axis(value, ndim: int, name: str = "axis") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not -ndim <= value < ndim:
        raise ValueError(f"{name}={value} is out of range for an array of {ndim} dimension(s)")
    return int(value) % ndim


#: Short spellings out_dtype takes besides the names (supported, as torch and NumPy users write them).
OUT_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def out_dtype_name(out_dtype) -> str:
    """float32, float16 or bfloat16 from None, a torch or NumPy dtype, a name, or one of the
    supported short spellings fp32, fp16, half and bf16 (OUT_DTYPE_ALIASES)."""
    if out_dtype is None:
        return "float32"
    if isinstance(out_dtype, torch.dtype):
        name = str(out_dtype).removeprefix("torch.")
    else:
        try:
            name = np.dtype(out_dtype).name
        except TypeError:
            name = str(out_dtype)
    name = OUT_DTYPE_ALIASES.get(name, name)
    if name not in OUT_DTYPES:
        raise ValueError(
            f"out_dtype must be float32, float16 or bfloat16 (or {', '.join(OUT_DTYPE_ALIASES)}), got {out_dtype!r}"
        )
    return name


# ---------------------------------------------------------------------------- tensors
def kernel_device(t: torch.Tensor, name: str) -> None:
    """t is where the Triton kernels can run (CUDA, or CPU under TRITON_INTERPRET=1)."""
    error = triton_device_error(t.device.type)
    if error is not None:
        raise ValueError(f"{name} is on {t.device}: {error}")


def torch_tensor(v, name: str) -> torch.Tensor:
    if not is_tensor(v):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    return v


def tensor_or_number(v, name: str, integer: bool) -> None:
    """The `ops` form of a scale / zero point: a Python number or a tensor (no NumPy)."""
    if not (is_tensor(v) or isinstance(v, (numbers.Real, *_SYMBOLIC))) or isinstance(v, bool):
        kind = "an int or an integer tensor" if integer else "a float or a float tensor"
        raise TypeError(f"{name} must be {kind}, got {type(v).__name__}")


def same_device(v, name: str, like, like_name: str) -> None:
    if is_tensor(v) and is_tensor(like) and v.device != like.device:
        raise ValueError(f"{name} is on {v.device} but {like_name} is on {like.device}")


def float_input(x, name: str, keep_float64: bool = False):
    """Data to quantize: a float tensor (float64 narrowed to float32 unless keep_float64), or
    anything NumPy reads as real numbers (as float32; float16 kept, float64 too with
    keep_float64). NaN / Inf refused where visible."""
    if is_tensor(x):
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
        no_float8(x, name)
        x = x.detach()
        if x.dtype == torch.float64 and not keep_float64:
            x = x.to(torch.float32)
        if values_visible(x) and x.numel() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or Inf: quantization needs finite data")
        return x
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.dtype != np.float16 and not (keep_float64 and arr.dtype == np.float64):
        with np.errstate(over="ignore"):
            arr = arr.astype(np.float32, copy=False)
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf (after conversion to float32): quantization needs finite data")
    return arr


def kernel_float_input(x, name: str) -> torch.Tensor:
    """Data for a quantize kernel launcher: a float32 / float16 / bfloat16 tensor where the
    kernels run. Not checked for NaN / Inf: the kernels mark such slices with a NaN scale."""
    kernel_float_dtype(torch_tensor(x, name), name)
    kernel_device(x, name)
    return x


def kernel_float_dtype(x: torch.Tensor, name: str) -> None:
    """float32, float16 or bfloat16 (the kernels' and Int8Linear's input dtypes)."""
    no_float8(x, name)
    if x.dtype not in _KERNEL_FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {x.dtype}")


def quantized(q, name: str, ndim: int | None = None):
    dtype = q.dtype if is_tensor(q) or isinstance(q, np.ndarray) else None
    if dtype not in _QUANTIZED_DTYPES:
        raise TypeError(f"{name} must be int8 or uint8, got {dtype or type(q).__name__}")
    if ndim is not None and q.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(q.shape)}")
    return q.detach() if is_tensor(q) else q


def quantize_result(scale, name: str, symmetric: bool = False) -> None:
    """A NaN scale marks a slice the grid cannot represent (reference.py); say so where the
    values are visible (off CUDA, not while compiling). A symmetric scale is NaN only for
    values that are not finite in float32; an asymmetric one also for a range it cannot hold."""
    if not values_visible(scale):
        return
    values = scale.detach().cpu().numpy() if is_tensor(scale) else np.asarray(scale)
    if not np.isnan(values).any():
        return
    if symmetric:
        raise ValueError(f"{name} cannot be quantized: it holds values that are not finite in float32")
    raise ValueError(
        f"{name} cannot be quantized asymmetrically: its range (max - min) is too narrow for its distance "
        f"from zero (zero point beyond +-2^24, finer than float32 resolves) or overflows float32; "
        f"quantize it symmetrically or center it first"
    )


def finite_result(v, name: str) -> None:
    """A float result of finite input (a rotation) is finite, where visible: else it overflowed."""
    if not values_visible(v):
        return
    if not bool(torch.isfinite(v).all() if is_tensor(v) else np.isfinite(v).all()):
        raise ValueError(f"{name} overflows: it holds values that are not finite in {v.dtype}")


def activations_result(scale, spec) -> None:
    """Int8Linear's activation scales (reference.quantize_activations as spec, a
    `qtriton.model.scheme.ActivationQuant`, says): a NaN one named by its cause, where visible.
    The input was checked finite, so a NaN comes from the layer's static scale, from
    input * input_scale or its Hadamard rotation overflowing, or from an asymmetric range."""
    if not values_visible(scale) or not np.isnan(_host_values(scale, np.float32)).any():
        return
    symmetric, input_scale, static_scale = spec.symmetric, spec.input_scale, spec.static_scale
    hadamard_block = spec.hadamard_block
    if static_scale is not None and not np.isfinite(_host_values(static_scale, np.float32)).all():
        raise ValueError(f"the layer's activation_scale is {float(static_scale)}: a static scale must be finite")
    symmetric = symmetric or static_scale is not None
    name = "input" if input_scale is None else "input * input_scale"
    if hadamard_block is not None and symmetric:
        raise ValueError(
            f"the Hadamard rotation of the {name} (blocks of {hadamard_block}) overflows float32: values beyond "
            f"{FLT_MAX / hadamard_block:.3g} can make a block's butterfly sums infinite; it cannot be quantized"
        )
    if input_scale is not None and symmetric:
        raise ValueError(
            "input * input_scale (the layer's SmoothQuant scale, applied before quantizing) overflows float32: "
            "the scaled input cannot be quantized"
        )
    quantize_result(scale, name if hadamard_block is None else f"rotated {name}", symmetric)


# ----------------------------------------------------------------- scales, zero points
def _shape_text(lengths: tuple[int, ...], dim_name: str | None) -> str:
    shapes = ["0-d", "(1,)"] + [f"({dim_name},) = ({n},)" if dim_name else f"({n},)" for n in lengths if n != 1]
    return ", ".join(shapes[:-1]) + " or " + shapes[-1]


def vector(v, name: str, lengths: tuple[int, ...], like, integer: bool, dim_name: str | None = None):
    """A scale (integer=False) or zero point: a number (returned as a Python float / int,
    a scale rounded to float32) or a 0-d, (1,) or (n,) array / tensor for n in lengths
    (a (1,) one counts as a scalar). Scale tensors and arrays come back as float32."""
    if v is None or isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number or an array, got {v!r}")
    if isinstance(v, _SYMBOLIC):
        return v
    if isinstance(v, (numbers.Real, np.integer, np.floating)):
        if integer and not float(v).is_integer():
            raise TypeError(f"{name} must be an integer, got {v!r}")
        return int(v) if integer else scale_number(v, name)
    if not (is_tensor(v) or isinstance(v, np.ndarray)):
        v = np.asarray(v)
    no_float8(v, name)
    kind = _kind(v)
    if kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {v.dtype}")
    if integer and kind == "f":
        raise TypeError(f"{name} must be an integer tensor or array, got dtype {v.dtype}")
    if not integer and kind != "f":
        raise TypeError(f"{name} must be a floating tensor or array, got dtype {v.dtype}")
    if v.ndim > 1 or (v.ndim == 1 and v.shape[0] not in (1, *lengths)):
        raise ValueError(f"{name} must be {_shape_text(lengths, dim_name)}, got shape {tuple(v.shape)}")
    same_device(v, name, like, "the data")
    if not integer:  # float32 is what every backend applies (bf16 / fp16 / fp64 widened or rounded)
        if is_tensor(v):
            v = v.detach().to(torch.float32)
        else:
            with np.errstate(over="ignore", under="ignore"):
                v = v.astype(np.float32)
    if v.ndim == 1 and v.shape[0] == 1 and 1 not in lengths:
        v = v.reshape(())
    return v


def rows(v, name: str, shape: tuple[int, ...], like, integer: bool):
    """Per-token scales / zero points: an array or tensor of shape q.shape[:-1]."""
    if not (is_tensor(v) or isinstance(v, np.ndarray)):
        v = np.asarray(v)
    if tuple(v.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} (q.shape[:-1]), got {tuple(v.shape)}")
    flat = v.reshape(-1)
    return vector(flat, name, (flat.shape[0],), like, integer).reshape(shape)


def _scale_error(name: str, got) -> ValueError:
    return ValueError(
        f"{name} must be positive, finite and a normal float32 ({FLT_MIN:.4g} to {FLT_MAX:.4g}: scales are "
        f"applied in float32), got {got}"
    )


def scale_number(v, name: str) -> float:
    """A Python scale rounded to float32 (what every backend applies), refused unless positive,
    finite and normal there: 1e39 would be inf and 1e-39 a denormal on the kernels."""
    with np.errstate(over="ignore", under="ignore"):
        rounded = np.float32(v)
    if not (np.isfinite(rounded) and rounded >= FLT_MIN):
        raise _scale_error(name, v)
    return float(rounded)


def scale_values(v, name: str) -> None:
    """A scale tensor / array is positive, finite and normal in float32 (where visible)."""
    if isinstance(v, (numbers.Number, *_SYMBOLIC)) or not values_visible(v):
        return
    values = _host_values(v, np.float32)
    if not (np.isfinite(values) & (values >= FLT_MIN)).all():
        raise _scale_error(name, values if values.ndim == 0 else values.ravel()[:8])


def zero_point_range(v, name: str, limit: int, read_values: bool = True) -> None:
    """The zero point within limit (where visible): any int32 for dequantize (limit
    INT32_MAX), |zp| <= ZERO_POINT_LIMIT for the matmul. A tensor whose values go unread
    (read_values=False: `ops`; on CUDA; while compiling) must have a dtype that holds no
    value beyond int32; within that, the limit is the caller's duty."""
    if isinstance(v, _SYMBOLIC):
        return
    if isinstance(v, numbers.Integral):
        lo = hi = int(v)
    else:
        if is_tensor(v) and not (read_values and values_visible(v)):
            zero_point_dtype(v, name)
            return
        # min / max in the array's own dtype: a cast to int64 first would wrap uint64 values
        values = v.detach().cpu().numpy() if is_tensor(v) else np.asarray(v)
        if values.size == 0:
            return
        lo, hi = int(values.min()), int(values.max())
    lowest = -limit - 1 if limit == INT32_MAX else -limit  # int32: its whole range
    if hi > limit or lo < lowest:
        bound = "fit in int32" if limit == INT32_MAX else f"be within +-{limit} (2**{limit.bit_length() - 1})"
        raise ValueError(f"{name} must {bound}, got {hi if hi > limit else lo}")


def zero_point_dtype(v: torch.Tensor, name: str) -> None:
    """A zero-point tensor read by dtype only: int64 (or uint32, uint64) could hold values
    that the int32 the kernels take wraps (2**40 -> 0), so it is refused without a look."""
    info = torch.iinfo(v.dtype)
    if info.max > INT32_MAX or info.min < -INT32_MAX - 1:
        raise TypeError(
            f"{name} is {v.dtype}, which can hold values beyond int32, and its values are not read here "
            f"(no host sync): pass an int32 (or narrower) tensor, .to(torch.int32) once checked"
        )


def scale(v, name: str, lengths: tuple[int, ...], like, dim_name: str | None = None, read_values: bool = True):
    v = vector(v, name, lengths, like, integer=False, dim_name=dim_name)
    if read_values:
        scale_values(v, name)
    return v


def zero_point(v, name: str, lengths: tuple[int, ...], like, limit: int, dim_name: str | None = None,
               read_values: bool = True):
    v = vector(v, name, lengths, like, integer=True, dim_name=dim_name)
    zero_point_range(v, name, limit, read_values)
    return v


# ------------------------------------------------------------------------------ matmul
def matmul_operands(a_q, b_q):
    """a_q (M, K), b_q (K, N): int8 / uint8 of one kind (both NumPy or both tensors, on one
    device), K <= MAX_K."""
    a_q = quantized(a_q, "a_q", ndim=2)
    b_q = quantized(b_q, "b_q", ndim=2)
    if is_tensor(a_q) != is_tensor(b_q):
        raise TypeError("a_q and b_q must both be NumPy arrays or both be torch tensors")
    same_device(b_q, "b_q", a_q, "a_q")
    k, k_b = a_q.shape[1], b_q.shape[0]
    if k != k_b:
        raise ValueError(
            f"a_q has shape {tuple(a_q.shape)} and b_q has shape {tuple(b_q.shape)}: K differs ({k} != {k_b})"
        )
    if k > MAX_K:
        raise ValueError(
            f"K = {k} > {MAX_K}: the int32 accumulator could overflow (128 * 128 * K >= 2**31); "
            "split K and sum the partial products"
        )
    return a_q, b_q


def bias(v, n: int, like, read_values: bool = True):
    """A bias of shape (N,), float (any float dtype of tensor but float8; arrays as
    float32), finite after rounding to float32 (what every backend adds) where visible."""
    if is_tensor(v):
        if not v.is_floating_point():
            raise TypeError(f"bias must be a floating tensor or array, got {v.dtype}")
        no_float8(v, "bias")
    else:
        v = np.asarray(v)
        if v.dtype == np.bool_ or v.dtype.kind not in "iuf":
            raise TypeError(f"bias must hold real numbers, got dtype {v.dtype}")
        with np.errstate(over="ignore"):
            v = v.astype(np.float32)
    if tuple(v.shape) != (n,):
        raise ValueError(f"bias must have shape (N,) = ({n},), got {tuple(v.shape)}")
    same_device(v, "bias", like, "the data")
    if read_values and values_visible(v):
        finite_float32(v, "bias")
    return v.detach() if is_tensor(v) else v


def finite_float32(v, name: str) -> None:
    """v (a tensor or array) holds no NaN / Inf once rounded to float32, the precision the
    kernels apply it in (a float64 1e300 becomes inf there)."""
    with np.errstate(over="ignore"):
        values = _host_values(v, np.float32)
    if not np.isfinite(values).all():
        raise _not_finite(name, torch.float32)


def finite_tensor(v: torch.Tensor, name: str, dtype: torch.dtype | None = None, where: str = "",
                  block: int = 2**20) -> None:
    """A float tensor (a checkpoint's norm, embedding, bias) holds no NaN / Inf, as it is and
    once rounded to dtype, the one it is used in (a float64 1e300 is inf in float32, a float32
    1e5 in float16). Read by blocks: isfinite of the whole would make a full-size temporary."""
    for part in v.detach().reshape(-1).split(block):
        if not bool(torch.isfinite(part).all()):
            raise _not_finite(name, None, where)
        if dtype is not None and dtype != v.dtype and not bool(torch.isfinite(part.to(dtype)).all()):
            raise _not_finite(name, dtype, where)


def _not_finite(name: str, dtype: torch.dtype | None, where: str = "") -> ValueError:
    if dtype is None:
        return ValueError(f"{where}{name} contains NaN or Inf")
    short = str(dtype).removeprefix("torch.")
    return ValueError(f"{where}{name} contains NaN or Inf once rounded to {short} (|{name}| <= "
                      f"{torch.finfo(dtype).max:.4g})")


# ------------------------------------------------------------------------------- models
#: The float dtypes a model with Int8Linear layers runs in (the kernels' input dtypes).
MODEL_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def model_dtype(value, name: str = "dtype") -> torch.dtype:
    """A model's float dtype: torch.float32, float16 or bfloat16, or its name ("bfloat16",
    "torch.bfloat16", as configs write it)."""
    if not isinstance(value, (str, torch.dtype)):
        raise TypeError(f"{name} must be a torch.dtype or its name, got {type(value).__name__}")
    dtype = MODEL_DTYPES.get(str(value).removeprefix("torch."))
    if dtype is None:
        raise ValueError(f"{name} {str(value).removeprefix('torch.')!r} is not a float dtype a model runs in "
                         f"({', '.join(MODEL_DTYPES)})")
    return dtype


# -------------------------------------------------------------------------------- files
def json_object(path) -> dict:
    """The JSON object in the file at path (a config, an index); ValueError naming the file
    if it is not valid JSON or holds something else (a list, a number)."""
    import json

    try:
        value = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{str(path)!r} holds a {type(value).__name__}, not a JSON object")
    return value


def unreadable_safetensors(path, err: Exception) -> ValueError:
    """The error for a safetensors file that safetensors cannot open (truncated, corrupt)."""
    return ValueError(f"{str(path)!r} is not a readable safetensors file (truncated or corrupt?): {err}")


def matmul(a_q, b_q, operands: MatmulOperands, out_dtype, read_values: bool = True):
    """Every argument of the scaled int8 GEMM, checked and normalised: (a_q, b_q, operands,
    out_dtype name). Scales come back as Python floats rounded to float32 or float32 arrays /
    tensors; zero points as ints or integer arrays / tensors; the sums a_rowsum / b_colsum
    (tensors only) as int32 (M,) / (N,) on a_q's device, or None. read_values=False (the
    `ops` launchers) leaves the values held in tensors unread: there a NaN scale is the
    kernels' signal of an unquantizable slice, carried through."""
    a_q, b_q = matmul_operands(a_q, b_q)
    m, n = a_q.shape[0], b_q.shape[1]
    a_scale = scale(operands.a_scale, "a_scale", (m,), a_q, "M", read_values)
    b_scale = scale(operands.b_scale, "b_scale", (n,), a_q, "N", read_values)
    a_zp = zero_point(0 if operands.a_zp is None else operands.a_zp, "a_zp", (m,), a_q, ZERO_POINT_LIMIT, "M",
                      read_values)
    b_zp = zero_point(0 if operands.b_zp is None else operands.b_zp, "b_zp", (n,), a_q, ZERO_POINT_LIMIT, "N",
                      read_values)
    bias_ = None if operands.bias is None else bias(operands.bias, n, a_q, read_values)
    for name, sums, length, dim_name in (("a_rowsum", operands.a_rowsum, m, "M"),
                                         ("b_colsum", operands.b_colsum, n, "N")):
        matmul_sums(sums, name, length, dim_name, a_q)
    checked = MatmulOperands(a_scale, b_scale, a_zp, b_zp, bias_, operands.a_rowsum, operands.b_colsum)
    return a_q, b_q, checked, out_dtype_name(out_dtype)


def matmul_sums(sums, name: str, length: int, dim_name: str, like) -> None:
    """a_rowsum / b_colsum of the GEMM: None or an int32 (length,) tensor on the data's device."""
    if sums is None:
        return
    if not is_tensor(sums) or sums.dtype != torch.int32:
        raise TypeError(f"{name} must be an int32 tensor or None, got {getattr(sums, 'dtype', type(sums).__name__)}")
    if tuple(sums.shape) != (length,):
        raise ValueError(f"{name} must have shape ({dim_name},) = ({length},), got {tuple(sums.shape)}")
    if not is_tensor(like) or sums.device != like.device:
        raise ValueError(f"{name} is on {sums.device}, a_q on {getattr(like, 'device', 'the host (NumPy)')}")


# ------------------------------------------------------------------ weight-only GEMM
WEIGHT_ONLY_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def weight_only_matmul(a, b_q, b_scale, bias_, out_dtype) -> torch.dtype:
    """The W8A16 GEMM's arguments ((a @ b_q) * b_scale + bias, qtriton.ops.w8a16): a (M, K)
    float16 / bfloat16 / float32; b_q (K, N) int8; b_scale and bias (N,) floating tensors
    (bias may be None), all on a's device. Returns the output dtype (None: a's)."""
    no_float8(a, "a")
    if not is_tensor(a) or a.ndim != 2 or a.dtype not in WEIGHT_ONLY_DTYPES:
        raise TypeError(f"a must be a 2-D float16, bfloat16 or float32 tensor, got {getattr(a, 'dtype', type(a))}")
    if not is_tensor(b_q) or b_q.ndim != 2 or b_q.dtype != torch.int8:
        raise TypeError(f"b_q must be a 2-D int8 tensor, got {getattr(b_q, 'dtype', type(b_q))}")
    (_, k), (k_b, n) = a.shape, b_q.shape
    if k != k_b:
        raise ValueError(f"a has shape {tuple(a.shape)} and b_q has shape {tuple(b_q.shape)}: inner dimensions "
                         f"{k} != {k_b}")
    for name, v in (("b_scale", b_scale), ("bias", bias_)):
        if v is None and name == "bias":
            continue
        torch_tensor(v, name)
        if not v.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {v.dtype}")
        no_float8(v, name)
        if tuple(v.shape) != (n,):
            raise ValueError(f"{name} must be of shape (N,) = ({n},), got {tuple(v.shape)}")
    for name, v in (("b_q", b_q), ("b_scale", b_scale), ("bias", bias_)):
        if v is not None and v.device != a.device:
            raise ValueError(f"{name} is on {v.device} but a is on {a.device}")
    out_dtype = a.dtype if out_dtype is None else out_dtype
    if out_dtype not in WEIGHT_ONLY_DTYPES:
        raise ValueError(f"out_dtype must be float16, bfloat16 or float32, got {out_dtype}")
    return out_dtype


# ------------------------------------------------------------ Int8Linear, quantize_model
def positive_int(value, name: str) -> int:
    """A positive int (not a bool): a layer's in_features / out_features, min_features."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def true_or_false(value, name: str, optional: bool = False) -> bool | None:
    """A Python bool (or None where optional: the default decides)."""
    if not isinstance(value, bool) and not (optional and value is None):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def glob_patterns(value, name: str) -> tuple[str, ...]:
    """None, a glob pattern or a sequence of them (layer names: include=, exclude=) as a tuple."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Sequence) or not all(isinstance(p, str) for p in value):
        raise TypeError(f"{name} must be a glob pattern or a sequence of them, got {value!r}")
    return tuple(value)


def calibrated_scale(value, length: int | None, name: str) -> torch.Tensor:
    """A calibrated scale a layer computes with (SmoothQuant's input_scale, a static
    activation scale) as float32, of shape (length,) or () when length is None, positive,
    finite and normal (the scale rule: a 0 or denormal one would be used as is by torch
    and triton, refused by NumPy)."""
    tensor = torch.as_tensor(value, dtype=torch.float32).detach()
    shape = () if length is None else (length,)
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    scale_values(tensor.cpu(), name)
    return tensor


def float_layer(linear, name: str) -> None:
    """What Int8Linear.from_float quantizes: an nn.Linear with a floating weight, on a device
    the backend in force can run, weight and
    bias finite (read once per layer at conversion, not in forward: on CUDA the quantize
    kernel would otherwise hand back a NaN scale silently)."""
    if not isinstance(linear, torch.nn.Linear):
        raise TypeError(f"{name} must be a torch.nn.Linear, got {type(linear).__name__}")
    weight = linear.weight
    problem = device_problem(weight.device)
    if problem is not None:
        raise ValueError(f"{name} is on {weight.device}: {problem}")
    if not weight.is_floating_point():
        raise TypeError(f"{name}.weight must be floating point, got {weight.dtype}")
    for part, tensor in (("weight", weight), ("bias", linear.bias)):
        no_float8(tensor, f"{name}.{part}")
    for part, tensor in (("weight", weight), ("bias", linear.bias)):
        if tensor is not None:
            finite_float32(tensor.detach(), f"{name}.{part}")


def layer_input(x, in_features: int, weight_device: torch.device) -> None:
    """An Int8Linear's input: a float32 / float16 / bfloat16 tensor of shape (..., in_features)
    on the layer's device, which the backend in force can run. Its values are checked by
    float_input on the rows."""
    kernel_float_dtype(torch_tensor(x, "input"), "input")
    if x.ndim == 0 or x.shape[-1] != in_features:
        raise ValueError(f"input must have shape (..., {in_features}), got {tuple(x.shape)}")
    if x.device != weight_device:
        raise ValueError(f"input is on {x.device} but the layer's weight is on {weight_device}")
    problem = device_problem(x.device)
    if problem is not None:
        raise ValueError(f"input is on {x.device}: {problem}")


# ------------------------------------------------------------------- model batches
def model_batch(batch, index: int, what: str = "batch") -> None:
    """A batch a model runs on (calibrate, sensitivity, plan, eval): a tensor of token ids, a
    tuple or list of positional arguments, or a mapping of keyword arguments (a dict, or the
    BatchEncoding a tokenizer returns), holding at least one tensor; no tensor of it empty (a
    text without tokens), its floating tensors finite. TypeError or ValueError naming the batch."""
    kinds = ("a batch is a tensor of token ids, a tuple of positional arguments or a dict of keyword arguments "
             "(tokenize text first: tokenizer(text, return_tensors='pt'))")
    if isinstance(batch, (str, bytes)):
        raise TypeError(f"{what} {index} is a {type(batch).__name__}: {kinds}")
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else [batch]
    tensors = [v for v in values if is_tensor(v)]
    if not tensors:
        raise TypeError(f"{what} {index} is a {type(batch).__name__} holding no tensor: {kinds}")
    for value in tensors:
        if value.numel() == 0:
            raise ValueError(f"{what} {index} holds an empty tensor (shape {tuple(value.shape)}): "
                             "the model needs at least one token")
        if value.is_floating_point() and values_visible(value) and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{what} {index} contains NaN or Inf: the model needs finite data")


#: The key under which checkpoints record where SmoothQuant's 1/s went (save_pretrained's
#: quantization_config; save_quantized's header has "smoothing_folds"), for Plan.of_model and report.
SMOOTHING_RECORD = "qtriton_smoothing_folds"


def smoothing_folds(value, where: str) -> dict[str, str]:
    """A checkpoint's smoothing record: an object of int8 layer name -> the module (a norm or
    a layer) that took the layer's SmoothQuant 1/s; None or absent is no record."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
        raise ValueError(f"{where}: its {SMOOTHING_RECORD} must be an object of layer name -> module name, "
                         f"got {value!r}")
    return dict(value)
