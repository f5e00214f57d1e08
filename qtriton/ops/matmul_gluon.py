"""Launcher of the int8 GEMM's Gluon main loop for Hopper (kernels/matmul_gluon.py): TMA
descriptors, grid, and its autotuner. qtriton/ops/matmul.py imports it only once its launch
plan (configs.launch_plan) has picked the Gluon loop, which needs a Triton with Gluon
(configs.gluon_available).

Config order: a forced Gluon tile (`use_config`); under bench/static.py's offline compile
(no GPU to time on) the pool's first; else `triton.autotune` over configs.GLUON_POOLS,
keyed on GLUON_AUTOTUNE_KEY. Not yet in the per-card tuned files (those hold the tl.dot
loop's configs).

Host cost per call: what depends only on a config (the shared-memory layouts of the TMA
blocks, the pruned pools, the autotuner's configs) is built once and cached; a call builds
two descriptors from cached layouts (bench/host.py measures it).
"""

from __future__ import annotations

import functools

import torch
import triton
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from qtriton.kernels import matmul_gluon as kernels
from qtriton.ops import configs
from qtriton.ops.configs import tma_ready  # noqa: F401  (the rule lives with the launch plan)

# The Gluon loop's cost depends on the problem and the epilogue, not on strides (TMA) or
# uint8 operands (shifted before it runs).
GLUON_AUTOTUNE_KEY = ["M_BUCKET", "N", "K", "HAS_A_ZP", "HAS_B_ZP", "CORRECTION_DTYPE", "SCALED"]


@functools.cache
def shared_layout(rows: int, block_k: int):
    """The swizzled shared-memory layout of an int8 [rows, block_k] TMA block (the widest
    swizzle its rows allow), built once per block shape."""
    return gl.NVMMASharedLayout.get_default_for([rows, block_k], gl.int8)


def _descriptor_blocks(nargs: dict) -> None:
    """A Gluon config's pre_hook: the TMA descriptors' blocks (and swizzled layouts) follow
    its tiles, for the autotuner launches each config with the same descriptors."""
    block_k = nargs["BLOCK_SIZE_K"]
    for desc, rows in ((nargs["a_desc"], nargs["BLOCK_SIZE_M"]), (nargs["b_desc"], nargs["BLOCK_SIZE_N"])):
        desc.block_shape = [rows, block_k]
        desc.layout = shared_layout(rows, block_k)


@functools.cache
def _autotuner_config(config):
    """A Gluon pool config in the autotuner's form: num_stages as the ring's STAGES, and the
    pre_hook that gives the descriptors its blocks (one object per pool config, cached)."""
    return triton.Config({**config.kwargs, "STAGES": config.num_stages}, num_warps=config.num_warps,
                         pre_hook=_descriptor_blocks)


@functools.cache
def autotuned_kernel():
    """The Gluon kernel autotuned over configs.GLUON_POOLS (num_stages: the ring's STAGES),
    each launch pruned to its problem's clamped configs (zero-point epilogues that spill
    left out)."""
    return configs.GLUON_POOLS.autotune(kernels._int8_matmul_gluon_kernel, GLUON_AUTOTUNE_KEY, launch=_autotuner_config)


def _descriptor(x: torch.Tensor, rows: int, block_k: int) -> TensorDescriptor:
    """The TMA descriptor of a TMA-ready x (R, C) (configs.tma_ready) for [rows, block_k] blocks."""
    return TensorDescriptor(x, list(x.shape), list(x.stride()), [rows, block_k], shared_layout(rows, block_k))


def _descriptors(a_q: torch.Tensor, b_q: torch.Tensor, block_m: int, block_n: int, block_k: int):
    return _descriptor(a_q, block_m, block_k), _descriptor(b_q.t(), block_n, block_k)


def launch(a_q: torch.Tensor, b_q: torch.Tensor, out: torch.Tensor, args: dict, plan) -> None:
    """One launch of the Gluon kernel into out (M, N): a_q (M, K) and b_q.t() (N, K) are
    TMA-ready int8 (configs.tma_ready); args: the epilogue's keyword arguments (M, N, K,
    M_BUCKET and qtriton.ops.matmul.kernel_args); plan: the call's configs.LaunchPlan (its
    flags, its config or None for the autotuner, its tile for the descriptors)."""
    M, N = out.shape
    tile = plan.tile
    a_desc, b_desc = _descriptors(a_q, b_q, tile["BLOCK_SIZE_M"], tile["BLOCK_SIZE_N"], tile["BLOCK_SIZE_K"])
    args = dict(a_desc=a_desc, b_desc=b_desc, c_ptr=out, stride_cm=out.stride(0), stride_cn=out.stride(1),
                **args, **plan.flags)

    def grid(meta):
        return (configs.cdiv(M, meta["BLOCK_SIZE_M"]) * configs.cdiv(N, meta["BLOCK_SIZE_N"]),)

    config = plan.config
    if config is None:
        autotuned_kernel()[grid](**args)
    else:
        kernels._int8_matmul_gluon_kernel[grid](
            **args, BLOCK_SIZE_M=config["BLOCK_SIZE_M"], BLOCK_SIZE_N=config["BLOCK_SIZE_N"],
            BLOCK_SIZE_K=config["BLOCK_SIZE_K"], GROUP_SIZE_M=config["GROUP_SIZE_M"], STAGES=config["num_stages"],
            num_warps=config["num_warps"],
        )
