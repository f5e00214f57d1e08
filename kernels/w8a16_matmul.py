"""The weight-only int8 GEMM (W8A16): float activations, int8 weights, one scale per column.

    C = (A @ B) * b_scale + bias

A is (M, K) float16, bfloat16 or float32; B is (K, N) int8 addressed through strides (the
transpose of a contiguous (N, K) weight is K-major, what Hopper's wgmma reads); b_scale and
bias are (N,). B is converted to A's dtype tile by tile inside the K loop (exact: |q| <= 128
is representable in fp16 and bf16), so the weight crosses memory as int8, half the bytes of
bf16, which is what decode (M = 1 ... 16, memory bound) gains. The dot accumulates in float32
(exact products: an fp16/bf16 value times an 8-bit integer fits fp32's mantissa); the scale
and the bias are applied once, in the epilogue.

The launch wrapper (validation, grid, configs) lives in qtriton/ops/w8a16.py.
"""

import triton
import triton.language as tl

from qtriton.kernels.common import _cast_rne, _tile_position  # _cast_rne: bf16 stores round to nearest even, also in the interpreter


@triton.jit
def _w8a16_matmul_kernel(
    a_ptr, b_ptr, c_ptr, b_scale_ptr, bias_ptr,  # bias_ptr: None for no bias
    M, N, K,
    M_BUCKET,  # unused in the body: the autotuner's cache key for M
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    stride_b_scale, stride_bias,
    DOT_PRECISION: tl.constexpr,  # "ieee" for float32 A (no tf32 rounding), else "tf32" (unused by 16-bit dots)
    # The interpreter's bfloat16 tl.dot returns garbage (triton 3.9), so the launcher sets this
    # there: the products are exact in float32 either way, only the summation order differs.
    DOT_IN_FLOAT32: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr,
):
    """One program computes one BLOCK_SIZE_M x BLOCK_SIZE_N tile of C over the whole K.

    Programs are ordered in groups of GROUP_SIZE_M tile rows (the Triton matmul tutorial's
    swizzle) so that consecutive programs share B tiles in L2. Each K step loads an A tile in
    its float dtype and an int8 B tile, converts B to A's dtype and accumulates tl.dot in
    float32; the epilogue multiplies column j by b_scale[j], adds the bias and casts to C's
    dtype.
    """
    pid_m, pid_n = _tile_position(tl.program_id(0), M, N, BLOCK_SIZE_M, BLOCK_SIZE_N, GROUP_SIZE_M)

    # Rows and columns past the edge wrap around: they read valid memory and compute values
    # the masked store drops, so only K needs a mask inside the loop.
    offs_m = (pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)) % M
    offs_n = (pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)) % N
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    # int64 element offsets: M * K or K * N may pass 2**31.
    a_ptrs = a_ptr + (offs_m[:, None].to(tl.int64) * stride_am + offs_k[None, :] * stride_ak)
    b_ptrs = b_ptr + (offs_k[:, None] * stride_bk + offs_n[None, :].to(tl.int64) * stride_bn)

    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    for k in range(tl.cdiv(K, BLOCK_SIZE_K)):
        k_remaining = K - k * BLOCK_SIZE_K
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_remaining, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_remaining, other=0)
        # `acc += tl.dot(...)`, not `tl.dot(..., acc=acc)`: triton#5669.
        if DOT_IN_FLOAT32:
            acc += tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(a, b.to(a.dtype), input_precision=DOT_PRECISION)
        a_ptrs += BLOCK_SIZE_K * stride_ak
        b_ptrs += BLOCK_SIZE_K * stride_bk

    b_scale = tl.load(b_scale_ptr + offs_n * stride_b_scale).to(tl.float32)
    result = acc * b_scale[None, :]
    if bias_ptr is not None:  # a None bias compiles away
        result += tl.load(bias_ptr + offs_n * stride_bias).to(tl.float32)[None, :]

    offs_cm = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    offs_cn = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    c_ptrs = c_ptr + (offs_cm[:, None].to(tl.int64) * stride_cm + offs_cn[None, :] * stride_cn)
    c_mask = (offs_cm[:, None] < M) & (offs_cn[None, :] < N)
    tl.store(c_ptrs, _cast_rne(result, c_ptr.dtype.element_ty), mask=c_mask)
