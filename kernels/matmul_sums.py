"""Row sums of an int8 / uint8 matrix, for the int8 GEMM's zero-point correction.

    out[r] = sum_k x[r, k]   (int32, the stored codes: uint8 as 0..255)

One kernel serves both uses through strides: the row sums of A (M, K) (needed by a
weight zero point b_zp) and the column sums of B (K, N) (needed by an activation zero
point a_zp: pass B's strides swapped, rows = N). The GEMM (kernels/matmul.py) reads them
once per tile in its epilogue; computing them here once per call (or once per weight)
keeps them out of the GEMM's K loop. |out| <= 255 * K < 2**31 for any K < 2**23.
"""

import triton
import triton.language as tl


@triton.jit
def _row_sums_kernel(
    x_ptr, out_ptr, R, K, stride_xr, stride_xk,
    BLOCK_SIZE_R: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
):
    """One program sums BLOCK_SIZE_R rows of x over the whole K, BLOCK_SIZE_K at a time."""
    pid = tl.program_id(0).to(tl.int64)
    offs_r = pid * BLOCK_SIZE_R + tl.arange(0, BLOCK_SIZE_R)
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    x_ptrs = x_ptr + (offs_r[:, None] * stride_xr + offs_k[None, :].to(tl.int64) * stride_xk)
    acc = tl.zeros((BLOCK_SIZE_R,), dtype=tl.int32)
    for k in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
        mask = (offs_r[:, None] < R) & (offs_k[None, :] < K - k * BLOCK_SIZE_K)
        acc += tl.sum(tl.load(x_ptrs, mask=mask, other=0).to(tl.int32), axis=1)
        x_ptrs += BLOCK_SIZE_K * stride_xk
    tl.store(out_ptr + offs_r, acc, mask=offs_r < R)
