"""The split-K GEMM's second step: sum the exact int32 partials, then the epilogue.

    acc[m, n] = sum_s partials[s, m, n],   C = epilogue(acc)   (kernels/matmul.py)

kernels/matmul.py's program (tile, s) stores the int32 product of its K slice into
partials[s]; integer adds are exact and order-free, so the sum is A @ B bit for bit,
whatever order the slices ran in. |acc| < 2**31 as for the one-pass GEMM.
"""

import triton
import triton.language as tl

from qtriton.kernels.matmul import _epilogue


@triton.jit(do_not_specialize=["a_zp_value", "b_zp_value"])
def _split_k_epilogue_kernel(
    partials_ptr, c_ptr,
    a_scale_ptr, b_scale_ptr, a_zp_ptr, b_zp_ptr, bias_ptr, a_rowsum_ptr, b_colsum_ptr,
    a_scale_value, b_scale_value, a_zp_value, b_zp_value,
    M, N, K,
    stride_ps, stride_pm, stride_pn, stride_cm, stride_cn,
    stride_a_scale, stride_b_scale, stride_a_zp, stride_b_zp, stride_bias, stride_a_rowsum, stride_b_colsum,
    A_IS_UINT8: tl.constexpr, B_IS_UINT8: tl.constexpr,
    HAS_A_ZP: tl.constexpr, HAS_B_ZP: tl.constexpr,
    CORRECTION_DTYPE: tl.constexpr,
    SCALED: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr,
):
    """One program sums the SPLIT_K partials of one BLOCK_SIZE_M x BLOCK_SIZE_N tile of C
    and runs the GEMM's epilogue on it (zero-point correction, scales, bias, cast, store)."""
    offs_cm = tl.program_id(0) * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    offs_cn = tl.program_id(1) * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    offs_m = offs_cm % M
    offs_n = offs_cn % N
    p_ptrs = partials_ptr + (offs_m[:, None].to(tl.int64) * stride_pm + offs_n[None, :] * stride_pn)
    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.int32)
    for s in range(SPLIT_K):
        acc += tl.load(p_ptrs + s * stride_ps)
    _epilogue(
        acc, offs_cm, offs_cn, c_ptr,
        a_scale_ptr, b_scale_ptr, a_zp_ptr, b_zp_ptr, bias_ptr, a_rowsum_ptr, b_colsum_ptr,
        a_scale_value, b_scale_value, a_zp_value, b_zp_value, M, N, K, stride_cm, stride_cn,
        stride_a_scale, stride_b_scale, stride_a_zp, stride_b_zp, stride_bias, stride_a_rowsum, stride_b_colsum,
        A_IS_UINT8, B_IS_UINT8, HAS_A_ZP, HAS_B_ZP, CORRECTION_DTYPE, SCALED, BLOCK_SIZE_M, BLOCK_SIZE_N,
    )
