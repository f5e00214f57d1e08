"""Launcher for the weight-only int8 GEMM in qtriton.kernels.w8a16_matmul (W8A16), on the
int8 GEMM's conventions (qtriton/ops/matmul.py): a torch.library custom op behind the public
entry, the optional operands as one qtriton.operands.MatmulOperands (its b_scale and bias;
a_scale 1, no zero points), a None bias pointer, the checks in qtriton.checks, the pools
and autotuner from qtriton.ops.configs.TilePools.

    w8a16_matmul(a, b_q, b_scale, bias=None, out_dtype=None) = (a @ b_q) * b_scale + bias

A launch picks its config like the int8 GEMM's: a forced one (`config=`), the first of the
M bucket's pool under Triton's interpreter, else `triton.autotune` over the M bucket's pool
(keyed on the M bucket, N, K, the strides along K and, as Triton adds them, the tensors'
dtypes: with or without a bias are keyed apart). Per-card tuned JSON files, as the int8
GEMM has, are a follow-up once the GPU benchmark has run. Nothing here syncs with the host.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator

import torch
import triton

from qtriton import checks
from qtriton.backend import interpreter_enabled
from qtriton.kernels import w8a16_matmul as kernels
from qtriton.operands import MatmulOperands
from qtriton.ops import configs
from qtriton.ops.configs import TilePools, config_dict, tile_config

# M <= 16 (decode): B streams once from memory and is the whole cost: narrow column tiles
# so N alone fills the SMs, long K steps for large contiguous int8 reads of a K-major B.
DECODE_CONFIGS = [
    tile_config(16, 64, 256, 4, 4, group_m=1),
    tile_config(16, 32, 256, 4, 4, group_m=1),
    tile_config(16, 32, 512, 4, 3, group_m=1),
    tile_config(16, 128, 128, 4, 4, group_m=1),
    tile_config(16, 16, 512, 4, 3, group_m=1),
]
# 16 < M <= 128: 64-row tiles (the smallest wgmma M).
SMALL_CONFIGS = [
    tile_config(64, 128, 64, 4, 4),
    tile_config(64, 64, 128, 4, 4),
    tile_config(64, 256, 64, 8, 3),
    tile_config(128, 128, 64, 8, 3),
]
# M > 128: bf16-GEMM-like tiles; the int8 -> bf16 conversion costs registers, so the
# 128 x 256 tiles stay at BLOCK_K 64.
LARGE_CONFIGS = [
    tile_config(128, 256, 64, 8, 3),
    tile_config(128, 128, 64, 4, 4),
    tile_config(256, 128, 64, 8, 3),
    tile_config(128, 128, 32, 4, 4),
    tile_config(64, 256, 64, 8, 4),
]
POOLS = TilePools(DECODE_CONFIGS, SMALL_CONFIGS, LARGE_CONFIGS)

AUTOTUNE_KEY = ["M_BUCKET", "N", "K", "stride_ak", "stride_bk"]


def configs_for(M: int, N: int, K: int) -> list[triton.Config]:
    """The M bucket's pool, blocks clamped to the problem, duplicates dropped, order kept."""
    return POOLS.for_problem(M, N, K)


@functools.cache
def autotuned_kernel():
    """The autotuned kernel, built on first CUDA use (the autotuner needs a GPU driver)."""
    return POOLS.autotune(kernels._w8a16_matmul_kernel, AUTOTUNE_KEY)


# A forced config, per thread / asyncio task, read inside the custom op (as the int8 GEMM's
# use_config): its own, so that a block forcing an int8 config does not force it here.
_FORCED_CONFIG: contextvars.ContextVar[dict | None] = contextvars.ContextVar("qtriton_w8a16_config", default=None)


@contextlib.contextmanager
def _forcing(config) -> Iterator[None]:
    if config is None:
        yield
        return
    token = _FORCED_CONFIG.set(config_dict(config))
    try:
        yield
    finally:
        _FORCED_CONFIG.reset(token)


def _launch(a: torch.Tensor, b_q: torch.Tensor, out: torch.Tensor, operands: MatmulOperands) -> torch.Tensor:
    """Fill out (M, N) with (a @ b_q) * operands.b_scale + operands.bias; checked arguments."""
    M, K = a.shape
    N = b_q.shape[1]
    b_scale, bias = operands.b_scale, operands.bias
    if M == 0 or N == 0:
        return out
    if K == 0:
        return out.copy_(torch.zeros_like(out, dtype=torch.float32) if bias is None else bias.expand(M, N))
    flags = {
        "DOT_PRECISION": "ieee" if a.dtype == torch.float32 else "tf32",
        "DOT_IN_FLOAT32": a.dtype == torch.bfloat16 and interpreter_enabled(),
    }
    args = dict(
        a_ptr=a, b_ptr=b_q, c_ptr=out, b_scale_ptr=b_scale, bias_ptr=bias,
        M=M, N=N, K=K, M_BUCKET=configs.m_bucket(M),
        stride_am=a.stride(0), stride_ak=a.stride(1), stride_bk=b_q.stride(0), stride_bn=b_q.stride(1),
        stride_cm=out.stride(0), stride_cn=out.stride(1),
        stride_b_scale=b_scale.stride(0), stride_bias=0 if bias is None else bias.stride(0), **flags,
    )

    def grid(meta):
        return (configs.cdiv(M, meta["BLOCK_SIZE_M"]) * configs.cdiv(N, meta["BLOCK_SIZE_N"]),)

    config = _FORCED_CONFIG.get()
    if config is None and interpreter_enabled():
        config = config_dict(configs_for(M, N, K)[0])
    on_device = torch.cuda.device(a.device) if a.device.type == "cuda" else contextlib.nullcontext()
    with on_device:  # Triton launches on the current CUDA device, not on the tensors' one.
        if config is None:
            autotuned_kernel()[grid](**args)
        else:
            kernels._w8a16_matmul_kernel[grid](**{**args, **{k: v for k, v in config.items() if k != "SPLIT_K"}})
    return out


# --------------------------------------------------------------------- the custom op
@torch.library.custom_op("qtriton::w8a16_mm", mutates_args=())
def _w8a16_mm(a: torch.Tensor, b_q: torch.Tensor, b_scale: torch.Tensor, bias: torch.Tensor | None,
              out_dtype: torch.dtype) -> torch.Tensor:
    out = torch.empty((a.shape[0], b_q.shape[1]), dtype=out_dtype, device=a.device)
    return _launch(a, b_q, out, MatmulOperands(b_scale=b_scale, bias=bias))


@_w8a16_mm.register_fake
def _w8a16_mm_fake(a, b_q, b_scale, bias, out_dtype):
    return a.new_empty((a.shape[0], b_q.shape[1]), dtype=out_dtype)


# ----------------------------------------------------------------------- public entry
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
    (a dict with BLOCK_SIZE_M/N/K, or a triton.Config), bypassing the autotuner. The rules
    and messages are qtriton.checks.weight_only_matmul's.
    """
    out_dtype = checks.weight_only_matmul(a, b_q, b_scale, bias, out_dtype)
    checks.kernel_device(a, "a")
    with _forcing(config):
        return w8a16_matmul_unchecked(a, b_q, MatmulOperands(b_scale=b_scale, bias=bias), out_dtype)


def w8a16_matmul_unchecked(a: torch.Tensor, b_q: torch.Tensor, operands: MatmulOperands,
                           out_dtype: torch.dtype) -> torch.Tensor:
    """w8a16_matmul on arguments qtriton.checks.weight_only_matmul's rules hold for, without
    checking again (Int8Linear's W8A16 forward: it checks its input, its buffers were checked
    when it was built). operands: b_scale and bias; one call of the custom op."""
    return torch.ops.qtriton.w8a16_mm(a, b_q, operands.b_scale, operands.bias, out_dtype)
