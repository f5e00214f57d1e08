"""A copy of a byte matrix into its transpose's row-major layout, for the int8 GEMM:

    y[c, r] = x[r, c]      (x (R, C) through strides, y (C, R) contiguous)

Hopper's 8-bit wgmma reads B K-major only; a row-major (K, N) B goes global -> registers
-> byte transpose -> shared memory at every K step of every M tile. For a large M the
launcher copies B once into a contiguous (N, K), whose .t() is the K-major B the GEMM
streams straight into shared memory (see qtriton/ops/configs.py, transpose_b_for).
"""

import triton
import triton.language as tl


@triton.jit
def _transpose_kernel(
    x_ptr, y_ptr, R, C, stride_xr, stride_xc, stride_yc,
    BLOCK_SIZE_R: tl.constexpr, BLOCK_SIZE_C: tl.constexpr,
):
    """One program copies one BLOCK_SIZE_R x BLOCK_SIZE_C tile of x into y, transposed
    (Triton stages the tile through shared memory so both sides stay coalesced)."""
    pid_r = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1).to(tl.int64)
    offs_r = pid_r * BLOCK_SIZE_R + tl.arange(0, BLOCK_SIZE_R)
    offs_c = pid_c * BLOCK_SIZE_C + tl.arange(0, BLOCK_SIZE_C)
    mask = (offs_r[:, None] < R) & (offs_c[None, :] < C)
    tile = tl.load(x_ptr + offs_r[:, None] * stride_xr + offs_c[None, :] * stride_xc, mask=mask)
    tl.store(y_ptr + offs_c[None, :] * stride_yc + offs_r[:, None], tile, mask=mask)
