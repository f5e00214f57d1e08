"""Small @triton.jit helpers shared by the kernel families (quantize, matmul, w8a16 matmul)."""

import triton
import triton.language as tl


@triton.jit
def _cast_rne(v, dtype: tl.constexpr):
    """float32 v -> dtype, rounding to nearest even. bfloat16 is rounded by hand on the
    float32 bits (add 0x7fff plus the lowest kept bit, drop 16 bits; NaN kept quiet): the
    same result as the GPU's cvt.rn.bf16.f32, and Triton's interpreter would truncate."""
    if dtype == tl.bfloat16:
        bits = v.to(tl.uint32, bitcast=True)
        bits = tl.where(v != v, 0x7FC00000, bits + (0x7FFF + ((bits >> 16) & 1)))  # noqa: PLR0124 (the NaN test)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return v.to(dtype)


@triton.jit
def _tile_position(pid, M, N, BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, GROUP_SIZE_M: tl.constexpr):
    """(pid_m, pid_n) of tile pid, in groups of GROUP_SIZE_M tile rows (the Triton matmul
    tutorial's swizzle: consecutive programs share B tiles in L2)."""
    num_pid_m = tl.cdiv(M, BLOCK_SIZE_M)
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_SIZE_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_SIZE_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n
