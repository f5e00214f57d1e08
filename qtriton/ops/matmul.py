"""Launchers for the int8 GEMM in qtriton.kernels.matmul: validation of what a launch
needs, the launch itself and the torch.library custom ops behind `int8_matmul` /
`scaled_matmul`. Configs (pools, autotuner, forced configs, per-card tuned files) live in
qtriton/ops/configs.py; its public names are re-exported here.

Nothing here syncs with the host: Python scalars travel as kernel scalars, tensors are
only looked at through their metadata.
"""

from __future__ import annotations

import contextlib

import torch
import triton

from qtriton.backend import triton_device_error
from qtriton.kernels import matmul as kernels
from qtriton.ops import configs
from qtriton.ops.configs import (  # re-exported: the public config API lived here first
    configs_for,
    device_slug,
    m_bucket,
    save_tuned_configs,
    shape_key,
    tune,
    use_config,
)

__all__ = [
    "MAX_K", "configs_for", "device_slug", "int8_matmul", "m_bucket", "save_tuned_configs",
    "scaled_matmul", "shape_key", "tune", "use_config",
]

# |A @ B| <= 128 * 128 * K on the int8-shifted operands: int32 holds it for K < 2**17.
MAX_K = (2**31 - 1) // (128 * 128)

_INT8_TYPES = (torch.int8, torch.uint8)
_INT32_MAX = 2**31 - 1
_ZERO_POINT_MAX = 2**31 - 1 - 128  # the kernel scalar is int32, the uint8 shift included


# ------------------------------------------------------------------------- the launch
def _is_number(x) -> bool:
    return isinstance(x, (int, float, torch.SymInt, torch.SymFloat)) and not isinstance(x, bool)


def _launch(a_q, b_q, out, a_scale, a_scale_value, b_scale, b_scale_value,
            a_zp, a_zp_value, b_zp, b_zp_value, bias, scaled: bool, tuned: bool = True) -> torch.Tensor:
    """Fill `out` (M, N) with the GEMM; the arguments are already checked and normalised.

    A tensor scale / zero point is 0-d, (1,) or per row (M,) / per column (N,); its
    Python counterpart (`*_value`) is used when the tensor is None (zero points: added
    to the tensor, which is how the uint8 shift's -128 gets in).
    """
    M, K = a_q.shape
    N = b_q.shape[1]
    if M == 0 or N == 0:
        return out
    a_is_uint8, b_is_uint8 = a_q.dtype == torch.uint8, b_q.dtype == torch.uint8
    a_zp_value = int(a_zp_value) - 128 * a_is_uint8
    b_zp_value = int(b_zp_value) - 128 * b_is_uint8

    def stride_of(v):  # a one-element tensor is broadcast with stride 0
        return 0 if v is None or v.numel() == 1 else v.stride(0)

    placeholder = a_q  # any tensor: passed where an optional pointer is absent, never read
    args = (
        a_q, b_q, out,
        placeholder if a_scale is None else a_scale,
        placeholder if b_scale is None else b_scale,
        placeholder if a_zp is None else a_zp,
        placeholder if b_zp is None else b_zp,
        placeholder if bias is None else bias,
        float(a_scale_value), float(b_scale_value), a_zp_value, b_zp_value,
        M, N, K, m_bucket(M),
        a_q.stride(0), a_q.stride(1), b_q.stride(0), b_q.stride(1), out.stride(0), out.stride(1),
        stride_of(a_scale), stride_of(b_scale), stride_of(a_zp), stride_of(b_zp),
        0 if bias is None else bias.stride(0),
    )
    flags = {
        "A_IS_UINT8": a_is_uint8,
        "B_IS_UINT8": b_is_uint8,
        "HAS_A_ZP": a_zp is not None or a_zp_value != 0,
        "HAS_B_ZP": b_zp is not None or b_zp_value != 0,
        "A_ZP_IS_TENSOR": a_zp is not None,
        "B_ZP_IS_TENSOR": b_zp is not None,
        "SCALED": scaled,
        "A_SCALE_IS_TENSOR": a_scale is not None,
        "B_SCALE_IS_TENSOR": b_scale is not None,
        "HAS_BIAS": bias is not None,
    }

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_SIZE_M"]) * triton.cdiv(N, meta["BLOCK_SIZE_N"]),)

    config = configs.launch_config(a_q.device, M, N, K, b_q.stride(0) == 1, flags, tuned)
    # Triton launches on the current CUDA device, not on the tensors' one.
    on_device = torch.cuda.device(a_q.device) if a_q.device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        if config is None:
            configs.autotuned_kernel()[grid](*args, **flags)
        else:
            kernels._int8_matmul_kernel[grid](*args, **flags, **config)
    return out


# --------------------------------------------------------------------- the custom ops
@torch.library.custom_op("qtriton::int8_mm", mutates_args=())
def _int8_mm(a_q: torch.Tensor, b_q: torch.Tensor) -> torch.Tensor:
    out = torch.empty((a_q.shape[0], b_q.shape[1]), dtype=torch.int32, device=a_q.device)
    return _launch(a_q, b_q, out, None, 1.0, None, 1.0, None, 0, None, 0, None, scaled=False)


@_int8_mm.register_fake
def _int8_mm_fake(a_q, b_q):
    return a_q.new_empty((a_q.shape[0], b_q.shape[1]), dtype=torch.int32)


@torch.library.custom_op("qtriton::scaled_mm", mutates_args=())
def _scaled_mm(
    a_q: torch.Tensor,
    b_q: torch.Tensor,
    a_scale: torch.Tensor | None,
    a_scale_value: float,
    b_scale: torch.Tensor | None,
    b_scale_value: float,
    a_zp: torch.Tensor | None,
    a_zp_value: int,
    b_zp: torch.Tensor | None,
    b_zp_value: int,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    out = torch.empty((a_q.shape[0], b_q.shape[1]), dtype=out_dtype, device=a_q.device)
    return _launch(a_q, b_q, out, a_scale, a_scale_value, b_scale, b_scale_value,
                   a_zp, a_zp_value, b_zp, b_zp_value, bias, scaled=True)


@_scaled_mm.register_fake
def _scaled_mm_fake(a_q, b_q, a_scale, a_scale_value, b_scale, b_scale_value,
                    a_zp, a_zp_value, b_zp, b_zp_value, bias, out_dtype):
    return a_q.new_empty((a_q.shape[0], b_q.shape[1]), dtype=out_dtype)


# ----------------------------------------------------------------------- public entry
def _check_operands(a_q, b_q) -> None:
    for name, q in (("a_q", a_q), ("b_q", b_q)):
        if not isinstance(q, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(q).__name__}")
        if q.dtype not in _INT8_TYPES:
            raise TypeError(f"{name} must be int8 or uint8, got {q.dtype}")
        if q.dim() != 2:
            raise ValueError(f"{name} must be 2-D, got shape {tuple(q.shape)}")
    if a_q.shape[1] != b_q.shape[0]:
        raise ValueError(f"a_q is {tuple(a_q.shape)} and b_q is {tuple(b_q.shape)}: K differs")
    if b_q.device != a_q.device:
        raise ValueError(f"b_q is on {b_q.device}, a_q on {a_q.device}")
    error = triton_device_error(a_q.device.type)
    if error is not None:
        raise ValueError(f"a_q: {error}")
    if a_q.shape[1] > MAX_K:
        raise ValueError(
            f"K = {a_q.shape[1]} > {MAX_K}: the int32 accumulator could overflow (128 * 128 * K >= 2**31); "
            "split K and sum the int32 partial products in int64"
        )


def _split(value, name: str, length: int, dim_name: str, integer: bool, device):
    """(tensor or None, Python number) for a scale or zero point argument."""
    if _is_number(value):
        if integer and not isinstance(value, (int, torch.SymInt)):
            raise TypeError(f"{name} must be an int or an integer tensor, got {type(value).__name__}")
        if integer and not isinstance(value, torch.SymInt) and abs(value) > _ZERO_POINT_MAX:
            raise ValueError(f"{name} = {value} does not fit an int32 zero point")
        return None, value
    if not isinstance(value, torch.Tensor):
        kind = "an int or an integer tensor" if integer else "a float or a float tensor"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")
    if integer and (value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool):
        raise TypeError(f"{name} must be an integer tensor, got {value.dtype}")
    if not integer and not value.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating tensor, got {value.dtype}")
    if not (value.dim() == 0 or (value.dim() == 1 and value.shape[0] in (1, length))):
        raise ValueError(f"{name} must be 0-d, (1,) or ({dim_name},) = ({length},), got shape {tuple(value.shape)}")
    if value.device != device:
        raise ValueError(f"{name} is on {value.device}, a_q on {device}")
    return value, (0 if integer else 1.0)


def int8_matmul(a_q: torch.Tensor, b_q: torch.Tensor, *, config=None) -> torch.Tensor:
    """Exact a_q @ b_q as int32 (M, N), for any M, N and K <= MAX_K (torch._int_mm
    semantics without its shape limits). a_q (M, K) and b_q (K, N) are int8 or uint8;
    b_q may be row-major or the transpose of a contiguous (N, K) weight (no copy).

    With uint8 operands the result must fit int32: K * max|a| * max|b| < 2**31 is
    required (K <= 65793 for one uint8 operand, 33025 for two). `config` forces a launch
    config (see use_config); leave it None outside tests.
    """
    _check_operands(a_q, b_q)
    bound = (255 if a_q.dtype == torch.uint8 else 128) * (255 if b_q.dtype == torch.uint8 else 128)
    if a_q.shape[1] * bound > _INT32_MAX:
        raise ValueError(
            f"K = {a_q.shape[1]} with {a_q.dtype} x {b_q.dtype} operands: the result could pass the "
            f"int32 range (K must be <= {_INT32_MAX // bound})"
        )
    with configs.maybe_forced(config):
        return torch.ops.qtriton.int8_mm(a_q, b_q)


def scaled_matmul(
    a_q: torch.Tensor,
    b_q: torch.Tensor,
    a_scale,
    b_scale,
    a_zp=None,
    b_zp=None,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    *,
    config=None,
) -> torch.Tensor:
    """((a_q - a_zp) @ (b_q - b_zp)) * a_scale * b_scale + bias, as out_dtype (M, N).

    a_q (M, K), b_q (K, N): int8 or uint8, b_q row-major or a (N, K) weight's .t().
    a_scale: float or float tensor 0-d / (1,) / (M,); b_scale: float or 0-d / (1,) / (N,).
    a_zp: int or integer tensor 0-d / (1,) / (M,); b_zp likewise with (N,); None = 0.
    bias: (N,) of any float dtype, or None. out_dtype: float32, float16 or bfloat16.
    Scales are applied in float32 (a Python float scale is rounded to float32), after
    an exact integer product (see kernels/matmul.py); nothing syncs with the host.
    """
    _check_operands(a_q, b_q)
    M, N = a_q.shape[0], b_q.shape[1]
    device = a_q.device
    a_scale_t, a_scale_v = _split(a_scale, "a_scale", M, "M", False, device)
    b_scale_t, b_scale_v = _split(b_scale, "b_scale", N, "N", False, device)
    a_zp_t, a_zp_v = _split(0 if a_zp is None else a_zp, "a_zp", M, "M", True, device)
    b_zp_t, b_zp_v = _split(0 if b_zp is None else b_zp, "b_zp", N, "N", True, device)
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or not bias.dtype.is_floating_point:
            raise TypeError(f"bias must be a floating tensor or None, got {getattr(bias, 'dtype', type(bias).__name__)}")
        if tuple(bias.shape) != (N,):
            raise ValueError(f"bias must have shape (N,) = ({N},), got {tuple(bias.shape)}")
        if bias.device != device:
            raise ValueError(f"bias is on {bias.device}, a_q on {device}")
    if out_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"out_dtype must be float32, float16 or bfloat16, got {out_dtype}")
    with configs.maybe_forced(config):
        return torch.ops.qtriton.scaled_mm(
            a_q, b_q, a_scale_t, float(a_scale_v), b_scale_t, float(b_scale_v),
            a_zp_t, int(a_zp_v), b_zp_t, int(b_zp_v), bias, out_dtype,
        )


