"""Copies of the int8 GEMM's byte operands into the form its K loop streams fastest:

    y[r, c] = x[r, c]            or, SHIFT:  y[r, c] = x[r, c] - 128 (uint8 -> int8)

x and y are addressed through strides, so one kernel transposes (y's strides swapped:
a row-major (K, N) B into the K-major layout Hopper's 8-bit wgmma reads) and shifts
(uint8 codes to the int8 the dot needs, `q ^ 0x80` reinterpreted), or both at once.
Either done inside the GEMM costs every K step of every tile: the operand goes global ->
registers -> byte shuffles -> shared memory instead of straight to shared memory. The
launcher (qtriton/ops/matmul.py, rules in qtriton/ops/configs.py) copies once when M is
large enough to amortise one pass over the operand.
"""

import triton
import triton.language as tl


@triton.jit
def _copy_kernel(
    x_ptr, y_ptr, R, C, stride_xr, stride_xc, stride_yr, stride_yc,
    SHIFT: tl.constexpr, BLOCK_SIZE_R: tl.constexpr, BLOCK_SIZE_C: tl.constexpr,
):
    """One program copies one BLOCK_SIZE_R x BLOCK_SIZE_C tile of x into y (Triton stages
    a transposing copy through shared memory, so both sides stay coalesced)."""
    pid_r = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1).to(tl.int64)
    offs_r = pid_r * BLOCK_SIZE_R + tl.arange(0, BLOCK_SIZE_R)
    offs_c = pid_c * BLOCK_SIZE_C + tl.arange(0, BLOCK_SIZE_C)
    mask = (offs_r[:, None] < R) & (offs_c[None, :] < C)
    tile = tl.load(x_ptr + offs_r[:, None] * stride_xr + offs_c[None, :] * stride_xc, mask=mask)
    if SHIFT:
        tile = (tile ^ 0x80).to(tl.int8, bitcast=True)
    tl.store(y_ptr + offs_r[:, None] * stride_yr + offs_c[None, :] * stride_yc, tile, mask=mask)
