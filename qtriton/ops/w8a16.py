"""Launcher for the weight-only int8 GEMM in qtriton.kernels.w8a16_matmul (W8A16).

    w8a16_matmul(a, b_q, b_scale, bias=None, out_dtype=None) = (a @ b_q) * b_scale + bias

A launch picks its config like the int8 GEMM's (qtriton.ops.matmul): a forced one
(`config=`), the first of the M bucket's pool under Triton's interpreter, else
`triton.autotune` over the M bucket's pool (keyed on the M bucket, N, K and the strides
along K). Per-card tuned JSON files, as the int8 GEMM has, are a follow-up once the GPU
benchmark has run. Nothing here syncs with the host.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import triton

from qtriton import checks
from qtriton.backend import interpreter_enabled
from qtriton.kernels import w8a16_matmul as kernels
from qtriton.ops.configs import _config, clamped, m_bucket
from qtriton.ops.configs import config_dict as _config_dict

_FLOAT_TYPES = (torch.float16, torch.bfloat16, torch.float32)

# M <= 16 (decode): B streams once from memory and is the whole cost: narrow column tiles
# so N alone fills the SMs, long K steps for large contiguous int8 reads of a K-major B.
DECODE_CONFIGS = [
    _config(16, 64, 256, 4, 4, group_m=1),
    _config(16, 32, 256, 4, 4, group_m=1),
    _config(16, 32, 512, 4, 3, group_m=1),
    _config(16, 128, 128, 4, 4, group_m=1),
    _config(16, 16, 512, 4, 3, group_m=1),
]
# 16 < M <= 128: 64-row tiles (the smallest wgmma M).
SMALL_CONFIGS = [
    _config(64, 128, 64, 4, 4),
    _config(64, 64, 128, 4, 4),
    _config(64, 256, 64, 8, 3),
    _config(128, 128, 64, 8, 3),
]
# M > 128: bf16-GEMM-like tiles; the int8 -> bf16 conversion costs registers, so the
# 128 x 256 tiles stay at BLOCK_K 64.
LARGE_CONFIGS = [
    _config(128, 256, 64, 8, 3),
    _config(128, 128, 64, 4, 4),
    _config(256, 128, 64, 8, 3),
    _config(128, 128, 32, 4, 4),
    _config(64, 256, 64, 8, 4),
]


def configs_for(M: int, N: int, K: int) -> list[triton.Config]:
    """The M bucket's pool, blocks clamped to the problem, duplicates dropped, order kept."""
    bucket = m_bucket(M)
    pool = DECODE_CONFIGS if bucket <= 16 else SMALL_CONFIGS if bucket <= 128 else LARGE_CONFIGS
    return clamped(pool, M, N, K)


def _prune(configs, named_args, **kwargs):
    return configs_for(named_args["M_BUCKET"], named_args["N"], named_args["K"])


AUTOTUNE_KEY = ["M_BUCKET", "N", "K", "stride_ak", "stride_bk", "HAS_BIAS"]


@functools.cache
def _autotuned_kernel():
    """The autotuned kernel, built on first CUDA use (the autotuner needs a GPU driver)."""
    return triton.autotune(
        configs=DECODE_CONFIGS + SMALL_CONFIGS + LARGE_CONFIGS,
        key=AUTOTUNE_KEY,
        prune_configs_by={"early_config_prune": _prune},
    )(kernels._w8a16_matmul_kernel)


def _check(a, b_q, b_scale, bias, out_dtype) -> torch.dtype:
    checks.no_float8(a, "a")
    if not isinstance(a, torch.Tensor) or a.ndim != 2 or a.dtype not in _FLOAT_TYPES:
        raise TypeError(f"a must be a 2-D float16, bfloat16 or float32 tensor, got {getattr(a, 'dtype', type(a))}")
    if not isinstance(b_q, torch.Tensor) or b_q.ndim != 2 or b_q.dtype != torch.int8:
        raise TypeError(f"b_q must be a 2-D int8 tensor, got {getattr(b_q, 'dtype', type(b_q))}")
    (_, k), (k_b, n) = a.shape, b_q.shape
    if k != k_b:
        raise ValueError(f"a has shape {tuple(a.shape)} and b_q has shape {tuple(b_q.shape)}: inner dimensions {k} != {k_b}")
    for name, v in (("b_scale", b_scale), ("bias", bias)):
        if v is None and name == "bias":
            continue
        checks.torch_tensor(v, name)
        if not v.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {v.dtype}")
        checks.no_float8(v, name)
        if tuple(v.shape) != (n,):
            raise ValueError(f"{name} must be of shape (N,) = ({n},), got {tuple(v.shape)}")
    for name, v in (("b_q", b_q), ("b_scale", b_scale), ("bias", bias)):
        if v is not None and v.device != a.device:
            raise ValueError(f"{name} is on {v.device} but a is on {a.device}")
    out_dtype = a.dtype if out_dtype is None else out_dtype
    if out_dtype not in _FLOAT_TYPES:
        raise ValueError(f"out_dtype must be float16, bfloat16 or float32, got {out_dtype}")
    return out_dtype


def w8a16_matmul(
    a: torch.Tensor,
    b_q: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    out_dtype: torch.dtype | None = None,
    config: dict | triton.Config | None = None,
) -> torch.Tensor:
    """(a @ b_q) * b_scale[None, :] + bias, float32 accumulation, in out_dtype (default a's).

    a (M, K) float16/bfloat16/float32; b_q (K, N) int8, any strides (pass `weight.t()` of a
    contiguous (N, K) weight); b_scale, bias (N,) float. config: force one launch config
    (a dict with BLOCK_SIZE_M/N/K, or a triton.Config), bypassing the autotuner.
    """
    out_dtype = _check(a, b_q, b_scale, bias, out_dtype)
    return w8a16_matmul_unchecked(a, b_q, b_scale, bias, out_dtype=out_dtype, config=config)


def w8a16_matmul_unchecked(a, b_q, b_scale, bias=None, *, out_dtype, config=None) -> torch.Tensor:
    """w8a16_matmul on arguments already checked (the triton backend's entry, from Int8Linear)."""
    M, K = a.shape
    N = b_q.shape[1]
    out = torch.empty((M, N), dtype=out_dtype, device=a.device)
    if M == 0 or N == 0:
        return out
    if K == 0:
        return out.copy_((torch.zeros_like(out, dtype=torch.float32) if bias is None else bias.expand(M, N)))
    args = (
        a, b_q, out, b_scale, b_scale if bias is None else bias,
        M, N, K, m_bucket(M),
        a.stride(0), a.stride(1), b_q.stride(0), b_q.stride(1), out.stride(0), out.stride(1),
        b_scale.stride(0), 0 if bias is None else bias.stride(0),
    )
    flags = {
        "HAS_BIAS": bias is not None,
        "DOT_PRECISION": "ieee" if a.dtype == torch.float32 else "tf32",
        "DOT_IN_FLOAT32": a.dtype == torch.bfloat16 and interpreter_enabled(),
    }

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_SIZE_M"]) * triton.cdiv(N, meta["BLOCK_SIZE_N"]),)

    chosen = None if config is None else _config_dict(config)
    if chosen is None and interpreter_enabled():
        chosen = _config_dict(configs_for(M, N, K)[0])
    on_device = torch.cuda.device(a.device) if a.device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        if chosen is None:
            _autotuned_kernel()[grid](*args, **flags)
        else:
            kernels._w8a16_matmul_kernel[grid](*args, **flags, **chosen)
    return out
