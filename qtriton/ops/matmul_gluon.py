"""Launcher of the int8 GEMM's Gluon main loop for Hopper (kernels/matmul_gluon.py): TMA
descriptors, config and grid, and its autotuner. qtriton/ops/matmul.py imports it only once
configs.main_loop has picked the Gluon loop, which needs a Triton with Gluon
(configs.gluon_available).

Config order: a forced Gluon tile (`use_config`); under bench/static.py's offline compile
(no GPU to time on) the pool's first; else `triton.autotune` over configs.GLUON_CONFIGS,
keyed on GLUON_AUTOTUNE_KEY. Not yet in the per-card tuned files (those hold the tl.dot
loop's configs)."""

from __future__ import annotations

import functools

import torch
import triton
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from qtriton.backend import interpreter_enabled
from qtriton.kernels import matmul_gluon as kernels
from qtriton.ops import configs


def tma_ready(x: torch.Tensor) -> bool:
    """Whether x (R, C) can be a TMA source as it is: int8, rows contiguous, base and row
    stride 16-byte aligned."""
    return (x.dtype == torch.int8 and x.stride(1) == 1 and x.stride(0) % 16 == 0
            and x.data_ptr() % 16 == 0)


# The Gluon loop's cost depends on the problem and the epilogue, not on strides (TMA) or
# uint8 operands (shifted before it runs).
GLUON_AUTOTUNE_KEY = ["M_BUCKET", "N", "K", "HAS_A_ZP", "HAS_B_ZP", "CORRECTION_DTYPE", "SCALED"]


def _descriptor_blocks(nargs: dict) -> None:
    """A Gluon config's pre_hook: the TMA descriptors' blocks (and swizzled layouts) follow
    its tiles, for the autotuner launches each config with the same descriptors."""
    block_k = nargs["BLOCK_SIZE_K"]
    for desc, rows in ((nargs["a_desc"], nargs["BLOCK_SIZE_M"]), (nargs["b_desc"], nargs["BLOCK_SIZE_N"])):
        desc.block_shape = [rows, block_k]
        desc.layout = gl.NVMMASharedLayout.get_default_for([rows, block_k], gl.int8)


def _prune(configs_, named_args, **kwargs):
    """early_config_prune: without the tiles whose zero-point epilogue spills (as
    configs.gluon_configs_for; the configs themselves, which carry the pre_hook)."""
    args = {**named_args, **kwargs}
    if not (args.get("HAS_A_ZP") or args.get("HAS_B_ZP")):
        return configs_
    return [c for c in configs_ if configs._zero_point_epilogue_fits(
        c.kwargs["BLOCK_SIZE_M"], c.kwargs["BLOCK_SIZE_N"], c.num_warps)]


@functools.cache
def autotuned_kernel():
    """The Gluon kernel autotuned over configs.GLUON_CONFIGS (num_stages: the ring's STAGES)."""
    tiles = [triton.Config({**c.kwargs, "STAGES": c.num_stages}, num_warps=c.num_warps, pre_hook=_descriptor_blocks)
             for c in configs.GLUON_CONFIGS]
    return triton.autotune(configs=tiles, key=GLUON_AUTOTUNE_KEY,
                           prune_configs_by={"early_config_prune": _prune})(kernels._int8_matmul_gluon_kernel)


def _descriptors(a_q: torch.Tensor, b_q: torch.Tensor, block_m: int, block_n: int, block_k: int):
    return tuple(TensorDescriptor.from_tensor(x, [rows, block_k], gl.NVMMASharedLayout.get_default_for(
        [rows, block_k], gl.int8)) for x, rows in ((a_q, block_m), (b_q.t(), block_n)))


def launch(a_q: torch.Tensor, b_q: torch.Tensor, out: torch.Tensor, epilogue: dict, flags: dict,
           config: dict | None) -> None:
    """One launch of the Gluon kernel into out (M, N): a_q (M, K) and b_q.t() (N, K) are
    TMA-ready int8 (tma_ready); epilogue: the epilogue's keyword arguments (M, N, K and
    qtriton.ops.matmul.Operands.kernel_args), flags its constexpr flags; config a forced
    Gluon tile (configs.gluon_tile), or None (see the module docstring)."""
    M, K = a_q.shape
    N = b_q.shape[1]
    zero_points = flags["HAS_A_ZP"] or flags["HAS_B_ZP"]
    if config is None and interpreter_enabled():  # bench/static.py's compile: nothing to time
        config = configs.config_dict(configs.gluon_configs_for(M, N, K, zero_points)[0])
    tile = config or configs.config_dict(configs.gluon_configs_for(M, N, K, zero_points)[0])
    a_desc, b_desc = _descriptors(a_q, b_q, tile["BLOCK_SIZE_M"], tile["BLOCK_SIZE_N"], tile["BLOCK_SIZE_K"])
    args = dict(a_desc=a_desc, b_desc=b_desc, c_ptr=out, M_BUCKET=configs.m_bucket(M), stride_cm=out.stride(0),
                stride_cn=out.stride(1), **epilogue, **flags)

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_SIZE_M"]) * triton.cdiv(N, meta["BLOCK_SIZE_N"]),)

    if config is None:
        autotuned_kernel()[grid](**args)
    else:
        kernels._int8_matmul_gluon_kernel[grid](
            **args, BLOCK_SIZE_M=config["BLOCK_SIZE_M"], BLOCK_SIZE_N=config["BLOCK_SIZE_N"],
            BLOCK_SIZE_K=config["BLOCK_SIZE_K"], GROUP_SIZE_M=config["GROUP_SIZE_M"], STAGES=config["num_stages"],
            num_warps=config["num_warps"],
        )
