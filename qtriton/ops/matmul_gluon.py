"""Launcher of the int8 GEMM's Gluon main loop for Hopper (kernels/matmul_gluon.py): TMA
descriptors, config and grid. qtriton/ops/matmul.py imports it only once configs.main_loop
has picked the Gluon loop, which needs a Triton with Gluon (configs.gluon_available)."""

from __future__ import annotations

import torch
import triton
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from qtriton.kernels import matmul_gluon as kernels
from qtriton.ops import configs


def tma_ready(x: torch.Tensor) -> bool:
    """Whether x (R, C) can be a TMA source as it is: int8, rows contiguous, base and row
    stride 16-byte aligned."""
    return (x.dtype == torch.int8 and x.stride(1) == 1 and x.stride(0) % 16 == 0
            and x.data_ptr() % 16 == 0)


def launch(a_q: torch.Tensor, b_q: torch.Tensor, out: torch.Tensor, epilogue: dict, flags: dict,
           config: dict | None) -> None:
    """One launch of the Gluon kernel into out (M, N): a_q (M, K) and b_q.t() (N, K) are
    TMA-ready int8 (tma_ready); epilogue: the epilogue's keyword arguments (M, N, K and
    qtriton.ops.matmul.Operands.kernel_args), flags its constexpr flags; config a forced
    Gluon tile (configs.gluon_tile) or None for the pool's first."""
    M, K = a_q.shape
    N = b_q.shape[1]
    if config is None:
        config = configs.config_dict(configs.gluon_configs_for(M, N, K, flags["HAS_A_ZP"] or flags["HAS_B_ZP"])[0])
    block_m, block_n, block_k = config["BLOCK_SIZE_M"], config["BLOCK_SIZE_N"], config["BLOCK_SIZE_K"]
    a_desc = TensorDescriptor.from_tensor(
        a_q, [block_m, block_k], gl.NVMMASharedLayout.get_default_for([block_m, block_k], gl.int8))
    b_desc = TensorDescriptor.from_tensor(
        b_q.t(), [block_n, block_k], gl.NVMMASharedLayout.get_default_for([block_n, block_k], gl.int8))
    grid = (triton.cdiv(M, block_m) * triton.cdiv(N, block_n),)
    kernels._int8_matmul_gluon_kernel[grid](
        a_desc=a_desc, b_desc=b_desc, c_ptr=out, M_BUCKET=configs.m_bucket(M), stride_cm=out.stride(0),
        stride_cn=out.stride(1), **epilogue, **flags,
        BLOCK_SIZE_M=block_m, BLOCK_SIZE_N=block_n, BLOCK_SIZE_K=block_k, GROUP_SIZE_M=config["GROUP_SIZE_M"],
        STAGES=config["num_stages"], num_warps=config["num_warps"],
    )
