"""The int8 GEMM: int32 accumulation, zero-point correction and a fused scale epilogue.

    C = ((A - a_zp) @ (B - b_zp)) * a_scale * b_scale + bias

A is (M, K), B is (K, N), both int8 or uint8 and addressed through strides, so B may be
row-major or the transpose of a contiguous (N, K) weight (K-major, what Hopper's 8-bit
wgmma reads). uint8 operands are shifted to int8 exactly (q - 128, an XOR with 0x80) and
the 128 is folded into the zero point by the launcher, because tl.dot refuses mixed
uint8 x int8 operands.

The zero points never touch the K loop's dot: with A' = A - a_zp, B' = B - b_zp,

    A' @ B' = A @ B - b_zp * rowsum(A) - a_zp * (colsum(B) - K * b_zp)

so the loop accumulates A @ B in int32 (exact: |A @ B| <= 128 * 128 * K < 2**31 for the
K < 131072 the launcher allows) plus, only when a zero point needs them, the int32 row
sums of A and column sums of B. The correction runs once per tile, in float64; see
_zero_point_correction for why that order is exact and cannot overflow.

The launch wrappers (grid, configs, output allocation) live in qtriton/ops/matmul.py.
"""

import triton
import triton.language as tl


@triton.jit
def _shift_to_int8(x):
    """uint8 q -> int8 q - 128, exactly: flipping the top bit and reinterpreting."""
    return (x ^ 0x80).to(tl.int8, bitcast=True)


@triton.jit
def _zero_point_correction(
    acc, row_sum, col_sum, a_zp, b_zp, K,
    HAS_A_ZP: tl.constexpr, HAS_B_ZP: tl.constexpr,
):
    """acc - b_zp * rowsum(A) - a_zp * (colsum(B) - K * b_zp), in float64.

    Every factor is an integer: |acc| < 2**31, |rowsum|, |colsum| <= 128 * K < 2**24,
    |zero point| <= 2**24 + 128 (the uint8 shift included). So b_zp * rowsum (< 2**49),
    K * b_zp (< 2**42) and colsum - K * b_zp are exact in float64, and so is
    a_zp * (colsum - K * b_zp) while it stays below 2**53. Past 2**53 that one product
    rounds (relative error 2**-53), but then it outweighs the other terms (< 2**50) so
    much that the result's relative error stays below 2**-51. Net: exact whenever
    |C| < 2**53, float64-accurate beyond, and no overflow anywhere (|C| < 2**66). int64
    would be exact only modulo 2**64, and a result of K * 2**48 (both zero points at
    2**24, K >= 2**15) does not fit it.
    """
    exact = acc.to(tl.float64)
    if HAS_B_ZP:
        exact -= row_sum.to(tl.float64)[:, None] * b_zp[None, :]
    if HAS_A_ZP:
        col_centered = col_sum.to(tl.float64) - K * b_zp
        exact -= a_zp[:, None] * col_centered[None, :]
    return exact


@triton.jit(do_not_specialize=["a_zp_value", "b_zp_value"])
def _int8_matmul_kernel(
    # Pointers. The scale / zero-point / bias pointers are read only when the matching
    # flag below says that tensor exists (the launcher passes a placeholder otherwise).
    a_ptr, b_ptr, c_ptr,
    a_scale_ptr, b_scale_ptr, a_zp_ptr, b_zp_ptr, bias_ptr,
    # Scalars: the scale when it is a Python float, and the zero point's constant part
    # (a Python int zero point plus the -128 of a uint8 shift).
    a_scale_value, b_scale_value, a_zp_value, b_zp_value,
    M, N, K,
    M_BUCKET,  # unused in the body: the autotuner's cache key for M
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    # Stride 0 broadcasts a one-element tensor over every row / column.
    stride_a_scale, stride_b_scale, stride_a_zp, stride_b_zp, stride_bias,
    A_IS_UINT8: tl.constexpr, B_IS_UINT8: tl.constexpr,
    HAS_A_ZP: tl.constexpr, HAS_B_ZP: tl.constexpr,  # a nonzero zero point is possible
    A_ZP_IS_TENSOR: tl.constexpr, B_ZP_IS_TENSOR: tl.constexpr,
    SCALED: tl.constexpr,  # False: store the exact int32 product, no epilogue
    A_SCALE_IS_TENSOR: tl.constexpr, B_SCALE_IS_TENSOR: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr,
):
    """One program computes one BLOCK_SIZE_M x BLOCK_SIZE_N tile of C over the whole K.

    Programs are ordered in groups of GROUP_SIZE_M tile rows (the Triton matmul
    tutorial's swizzle) so that consecutive programs share B tiles in L2. The K loop
    accumulates tl.dot in int32 (and the row / column sums the zero points need); the
    epilogue applies the zero-point correction, then either stores int32 (SCALED=False)
    or converts to float32, multiplies by the per-row and per-column scales, adds the
    bias and casts to C's dtype (scaling first, so an fp16 C does not overflow on the
    raw integer).
    """
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_SIZE_M)
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_SIZE_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_SIZE_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    # Rows and columns past the edge wrap around: they read valid memory and compute
    # values the masked store drops, so only K needs a mask inside the loop.
    offs_m = (pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)) % M
    offs_n = (pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)) % N
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    # int64 element offsets: M * K or K * N may pass 2**31.
    a_ptrs = a_ptr + (offs_m[:, None].to(tl.int64) * stride_am + offs_k[None, :] * stride_ak)
    b_ptrs = b_ptr + (offs_k[:, None] * stride_bk + offs_n[None, :].to(tl.int64) * stride_bn)

    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.int32)
    row_sum = tl.zeros((BLOCK_SIZE_M,), dtype=tl.int32)
    col_sum = tl.zeros((BLOCK_SIZE_N,), dtype=tl.int32)
    for k in range(tl.cdiv(K, BLOCK_SIZE_K)):
        k_remaining = K - k * BLOCK_SIZE_K
        # Padding past K must be 0 after the shift: 128 for uint8, 0 for int8.
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_remaining, other=128 * A_IS_UINT8)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_remaining, other=128 * B_IS_UINT8)
        if A_IS_UINT8:
            a = _shift_to_int8(a)
        if B_IS_UINT8:
            b = _shift_to_int8(b)
        # `acc += tl.dot(...)`, not `tl.dot(..., acc=acc)`: triton#5669.
        acc += tl.dot(a, b, out_dtype=tl.int32)
        if HAS_B_ZP:
            row_sum += tl.sum(a.to(tl.int32), axis=1)
        if HAS_A_ZP:
            col_sum += tl.sum(b.to(tl.int32), axis=0)
        a_ptrs += BLOCK_SIZE_K * stride_ak
        b_ptrs += BLOCK_SIZE_K * stride_bk

    if HAS_A_ZP or HAS_B_ZP:
        a_zp = tl.zeros((BLOCK_SIZE_M,), dtype=tl.float64) + a_zp_value
        b_zp = tl.zeros((BLOCK_SIZE_N,), dtype=tl.float64) + b_zp_value
        if A_ZP_IS_TENSOR:
            a_zp += tl.load(a_zp_ptr + offs_m * stride_a_zp).to(tl.float64)
        if B_ZP_IS_TENSOR:
            b_zp += tl.load(b_zp_ptr + offs_n * stride_b_zp).to(tl.float64)
        exact = _zero_point_correction(acc, row_sum, col_sum, a_zp, b_zp, K, HAS_A_ZP, HAS_B_ZP)
        if SCALED:
            result = exact.to(tl.float32)
        else:
            result = exact.to(tl.int32)  # exact: the launcher bounds |C| below 2**31
    elif SCALED:
        result = acc.to(tl.float32)
    else:
        result = acc

    if SCALED:
        a_scale = tl.zeros((BLOCK_SIZE_M,), dtype=tl.float32) + a_scale_value
        b_scale = tl.zeros((BLOCK_SIZE_N,), dtype=tl.float32) + b_scale_value
        if A_SCALE_IS_TENSOR:
            a_scale = tl.load(a_scale_ptr + offs_m * stride_a_scale).to(tl.float32)
        if B_SCALE_IS_TENSOR:
            b_scale = tl.load(b_scale_ptr + offs_n * stride_b_scale).to(tl.float32)
        result = result * a_scale[:, None] * b_scale[None, :]
        if HAS_BIAS:
            result += tl.load(bias_ptr + offs_n * stride_bias).to(tl.float32)[None, :]

    offs_cm = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    offs_cn = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    c_ptrs = c_ptr + (offs_cm[:, None].to(tl.int64) * stride_cm + offs_cn[None, :] * stride_cn)
    c_mask = (offs_cm[:, None] < M) & (offs_cn[None, :] < N)
    tl.store(c_ptrs, result.to(c_ptr.dtype.element_ty), mask=c_mask)
