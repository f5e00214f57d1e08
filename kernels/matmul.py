"""The int8 GEMM: int32 accumulation, zero-point correction and a fused scale epilogue.

    C = ((A - a_zp) @ (B - b_zp)) * a_scale * b_scale + bias

A is (M, K), B is (K, N), both int8 or uint8 and addressed through strides, so B may be
row-major or the transpose of a contiguous (N, K) weight (K-major, what Hopper's 8-bit
wgmma reads). uint8 operands are shifted to int8 exactly (q - 128, an XOR with 0x80) and
the 128 is folded into the zero point by the launcher, because tl.dot refuses mixed
uint8 x int8 operands.

The zero points never touch the K loop: with A' = A - a_zp, B' = B - b_zp (A, B the
shifted int8 operands the dot sees),

    A' @ B' = A @ B - b_zp * rowsum(A) - a_zp * (colsum(B) - K * b_zp)

a rank-1 update of the plain int8 product. The K loop accumulates A @ B in int32 (exact:
|A @ B| <= 128 * 128 * K < 2**31 for the K < 131072 the launcher allows) and nothing
else; the column sums of B (for a_zp) and the row sums of A (for b_zp) come in as int32
vectors of the *stored* codes, computed once per call by kernels/matmul_sums.py or, for
a constant weight, once per weight (Int8Linear keeps them). The epilogue subtracts
128 * K from a uint8 operand's sums to make them the shifted operand's.

The correction runs in CORRECTION_DTYPE, chosen by the launcher from a bound on |C|:
int32 or int64 arithmetic wraps modulo 2**32 / 2**64, and only +, - and * are used, so
the result is exact whenever the true |C| fits the type, whatever the intermediate terms
do. Only when the launcher cannot bound |C| below 2**63 does it fall back to float64
(_zero_point_correction_f64, exact below 2**53, float64-accurate beyond).

Split-K (SPLIT_K > 1): program (tile, s) accumulates K tiles s, s + SPLIT_K, ... and
stores its exact int32 partial into a (SPLIT_K, M, N) int32 buffer; the epilogue then
runs once per output element in kernels/matmul_split_k.py, which sums the partials
(integer adds: order-free, so the result is deterministic and exact).

The launch wrappers (grid, configs, output allocation) live in qtriton/ops/matmul.py.
"""

import triton
import triton.language as tl

from qtriton.kernels.common import _cast_rne, _tile_position


@triton.jit
def _shift_to_int8(x):
    """uint8 q -> int8 q - 128, exactly: flipping the top bit and reinterpreting."""
    return (x ^ 0x80).to(tl.int8, bitcast=True)


@triton.jit
def _int8_dot(
    a_ptr, b_ptr, pid_m, pid_n, split, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn,
    A_IS_UINT8: tl.constexpr, B_IS_UINT8: tl.constexpr, SPLIT_K: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
):
    """int32 A @ B of one tile over K tiles split, split + SPLIT_K, ...: the plain int8 loop."""
    # Rows and columns past the edge wrap around: they read valid memory and compute
    # values the masked store drops, so only K needs a mask inside the loop.
    offs_m = (pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)) % M
    offs_n = (pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)) % N
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    k_first = split * BLOCK_SIZE_K
    # int64 element offsets: M * K or K * N may pass 2**31.
    a_ptrs = a_ptr + (offs_m[:, None].to(tl.int64) * stride_am + (k_first + offs_k[None, :]) * stride_ak)
    b_ptrs = b_ptr + ((k_first + offs_k[:, None]) * stride_bk + offs_n[None, :].to(tl.int64) * stride_bn)

    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.int32)
    for k in range(split, tl.cdiv(K, BLOCK_SIZE_K), SPLIT_K):
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
        a_ptrs += SPLIT_K * BLOCK_SIZE_K * stride_ak
        b_ptrs += SPLIT_K * BLOCK_SIZE_K * stride_bk
    return acc


@triton.jit
def _zero_point_correction_f64(acc, row_sum, col_sum, a_zp, b_zp, K, HAS_A_ZP: tl.constexpr, HAS_B_ZP: tl.constexpr):
    """acc - b_zp * rowsum(A) - a_zp * (colsum(B) - K * b_zp) in float64, for when the
    launcher cannot bound |C| below 2**63 (zero points near their 2**24 limit on both
    sides and a long K). Every factor is an integer: |acc| < 2**31, |sums| <= 128 * K <
    2**24, |zero point| <= 2**24 + 128, so b_zp * rowsum (< 2**49), K * b_zp (< 2**42)
    and colsum - K * b_zp are exact; a_zp * (colsum - K * b_zp) is exact below 2**53 and
    then outweighs the other terms (< 2**50) so that the result's relative error stays
    below 2**-51. Net: exact whenever |C| < 2**53, float64-accurate beyond, no overflow."""
    exact = acc.to(tl.float64)
    if HAS_B_ZP:
        exact -= row_sum.to(tl.float64)[:, None] * b_zp.to(tl.float64)[None, :]
    if HAS_A_ZP:
        col_centered = col_sum.to(tl.float64) - K * b_zp.to(tl.float64)
        exact -= a_zp.to(tl.float64)[:, None] * col_centered[None, :]
    return exact


@triton.jit
def _integer_correction(acc, row_sum, col_sum, a_zp, b_zp, K, HAS_A_ZP: tl.constexpr, HAS_B_ZP: tl.constexpr,
                        DTYPE: tl.constexpr):
    """acc - b_zp * rowsum(A) - a_zp * (colsum(B) - K * b_zp) in DTYPE (int32 / int64),
    vectors already in DTYPE: exact when |C| fits DTYPE (the arithmetic wraps)."""
    exact = acc.to(DTYPE)
    if HAS_B_ZP:
        exact -= row_sum[:, None] * b_zp[None, :]
    if HAS_A_ZP:
        exact -= a_zp[:, None] * (col_sum - K * b_zp)[None, :]
    return exact


@triton.jit
def _splat(offs, value, dtype: tl.constexpr):
    """A vector of `value` as dtype, shaped like offs and, called from Gluon, in its layout
    (tl.zeros would need one there). offs * 0 folds to a constant: nothing is computed."""
    return (offs * 0).to(dtype) + value


@triton.jit
def _epilogue(
    acc, offs_cm, offs_cn, c_ptr,
    a_scale_ptr, b_scale_ptr, a_zp_ptr, b_zp_ptr, bias_ptr, a_rowsum_ptr, b_colsum_ptr,
    a_scale_value, b_scale_value, a_zp_value, b_zp_value,
    M, N, K,
    stride_cm, stride_cn,
    stride_a_scale, stride_b_scale, stride_a_zp, stride_b_zp, stride_bias, stride_a_rowsum, stride_b_colsum,
    A_IS_UINT8: tl.constexpr, B_IS_UINT8: tl.constexpr,
    HAS_A_ZP: tl.constexpr, HAS_B_ZP: tl.constexpr,
    CORRECTION_DTYPE: tl.constexpr,
    SCALED: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr,
):
    """Zero-point correction (rank-1, once per tile), scales, bias, cast and masked store
    of one tile of C, rows offs_cm and columns offs_cn (the tile's C indices, past the edge
    too), whose exact int32 A @ B is acc. Scaling comes before the cast, so an fp16 C does
    not overflow on the raw integer. Shared by both main loops: kernels/matmul.py's and the
    Gluon one (kernels/matmul_gluon.py), whose offsets carry the accumulator's layout; so
    every vector here is made from offs_cm / offs_cn (_splat), none from a bare shape."""
    offs_m = offs_cm % M
    offs_n = offs_cn % N
    if HAS_A_ZP or HAS_B_ZP:
        # Zero points and sums in the correction's type (the int32 / int64 wrap is harmless,
        # see the module docstring); the sums are of the stored codes, made the shifted
        # operand's by the uint8 shift's -128 per element.
        a_zp = _splat(offs_m, a_zp_value, CORRECTION_DTYPE)
        b_zp = _splat(offs_n, b_zp_value, CORRECTION_DTYPE)
        if a_zp_ptr is not None:
            a_zp += tl.load(a_zp_ptr + offs_m * stride_a_zp).to(CORRECTION_DTYPE)
        if b_zp_ptr is not None:
            b_zp += tl.load(b_zp_ptr + offs_n * stride_b_zp).to(CORRECTION_DTYPE)
        row_sum = _splat(offs_m, 0, CORRECTION_DTYPE)
        col_sum = _splat(offs_n, 0, CORRECTION_DTYPE)
        if HAS_B_ZP:
            row_sum += tl.load(a_rowsum_ptr + offs_m * stride_a_rowsum).to(CORRECTION_DTYPE) - 128 * K * A_IS_UINT8
        if HAS_A_ZP:
            col_sum += tl.load(b_colsum_ptr + offs_n * stride_b_colsum).to(CORRECTION_DTYPE) - 128 * K * B_IS_UINT8
        if CORRECTION_DTYPE == tl.float64:
            exact = _zero_point_correction_f64(acc, row_sum, col_sum, a_zp, b_zp, K, HAS_A_ZP, HAS_B_ZP)
            result = exact.to(tl.float32) if SCALED else exact.to(tl.int32)
        elif CORRECTION_DTYPE == tl.int64:
            # The launcher proved |C| < 2**63 from the zero points' limit (2**24); this
            # tile's actual zero points (Int8Linear's: 0..255) usually prove |C| < 2**31,
            # |A - a_zp| <= 128 + |a_zp| on the shifted codes: then the int32 correction,
            # half the registers of the int64 one (which spills on the large tiles).
            reach = (128 + tl.max(tl.abs(a_zp))) * (128 + tl.max(tl.abs(b_zp))) * K
            if reach < 2**31:
                exact32 = _integer_correction(acc, row_sum.to(tl.int32), col_sum.to(tl.int32), a_zp.to(tl.int32),
                                              b_zp.to(tl.int32), K, HAS_A_ZP, HAS_B_ZP, tl.int32)
                result = exact32.to(tl.float32) if SCALED else exact32
            else:
                exact64 = _integer_correction(acc, row_sum, col_sum, a_zp, b_zp, K, HAS_A_ZP, HAS_B_ZP, tl.int64)
                result = exact64.to(tl.float32) if SCALED else exact64.to(tl.int32)
        else:
            exact = _integer_correction(acc, row_sum, col_sum, a_zp, b_zp, K, HAS_A_ZP, HAS_B_ZP, tl.int32)
            result = exact.to(tl.float32) if SCALED else exact
    elif SCALED:
        result = acc.to(tl.float32)
    else:
        result = acc

    if SCALED:
        a_scale = _splat(offs_m, a_scale_value, tl.float32)
        b_scale = _splat(offs_n, b_scale_value, tl.float32)
        if a_scale_ptr is not None:
            a_scale = tl.load(a_scale_ptr + offs_m * stride_a_scale).to(tl.float32)
        if b_scale_ptr is not None:
            b_scale = tl.load(b_scale_ptr + offs_n * stride_b_scale).to(tl.float32)
        result = result * a_scale[:, None] * b_scale[None, :]
        if bias_ptr is not None:
            result += tl.load(bias_ptr + offs_n * stride_bias).to(tl.float32)[None, :]

    c_ptrs = c_ptr + (offs_cm[:, None].to(tl.int64) * stride_cm + offs_cn[None, :] * stride_cn)
    c_mask = (offs_cm[:, None] < M) & (offs_cn[None, :] < N)
    tl.store(c_ptrs, _cast_rne(result, c_ptr.dtype.element_ty), mask=c_mask)


@triton.jit(do_not_specialize=["a_zp_value", "b_zp_value"])
def _int8_matmul_kernel(
    # Pointers. The scale / zero-point / bias / sums pointers may be None (Triton
    # specialises a None argument as a constexpr: the code reading it compiles away).
    # a_rowsum / b_colsum: int32 sums of the stored codes of A's rows and B's columns,
    # given when a b_zp / an a_zp needs them. With SPLIT_K > 1, c_ptr is the (SPLIT_K, M,
    # N) int32 partials buffer, stride_cs its first stride, and no epilogue runs here.
    a_ptr, b_ptr, c_ptr,
    a_scale_ptr, b_scale_ptr, a_zp_ptr, b_zp_ptr, bias_ptr, a_rowsum_ptr, b_colsum_ptr,
    # Scalars: the scale when it is a Python float, and the zero point's constant part
    # (a Python int zero point plus the -128 of a uint8 shift).
    a_scale_value, b_scale_value, a_zp_value, b_zp_value,
    M, N, K,
    M_BUCKET,  # unused in the body: the autotuner's cache key for M
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn, stride_cs,
    # Stride 0 broadcasts a one-element tensor over every row / column.
    stride_a_scale, stride_b_scale, stride_a_zp, stride_b_zp, stride_bias, stride_a_rowsum, stride_b_colsum,
    A_IS_UINT8: tl.constexpr, B_IS_UINT8: tl.constexpr,
    HAS_A_ZP: tl.constexpr, HAS_B_ZP: tl.constexpr,  # a nonzero zero point is possible
    CORRECTION_DTYPE: tl.constexpr,  # tl.int32, tl.int64 or tl.float64: see the module docstring
    SCALED: tl.constexpr,  # False: store the exact int32 product, no scales
    SPLIT_K: tl.constexpr,  # > 1: store int32 partials, kernels/matmul_split_k.py finishes
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr,
):
    """Program (t, s) of a (tiles, SPLIT_K) grid computes tile t of C (BLOCK_SIZE_M x
    BLOCK_SIZE_N) over K tiles s, s + SPLIT_K, ...: with SPLIT_K == 1 the whole K and
    the epilogue (zero-point correction, scales, bias, cast), else the int32 partial."""
    pid_m, pid_n = _tile_position(tl.program_id(0), M, N, BLOCK_SIZE_M, BLOCK_SIZE_N, GROUP_SIZE_M)
    split = tl.program_id(1)
    acc = _int8_dot(
        a_ptr, b_ptr, pid_m, pid_n, split, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
        A_IS_UINT8, B_IS_UINT8, SPLIT_K, BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K,
    )
    offs_cm = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    offs_cn = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    if SPLIT_K == 1:
        _epilogue(
            acc, offs_cm, offs_cn, c_ptr,
            a_scale_ptr, b_scale_ptr, a_zp_ptr, b_zp_ptr, bias_ptr, a_rowsum_ptr, b_colsum_ptr,
            a_scale_value, b_scale_value, a_zp_value, b_zp_value, M, N, K, stride_cm, stride_cn,
            stride_a_scale, stride_b_scale, stride_a_zp, stride_b_zp, stride_bias, stride_a_rowsum, stride_b_colsum,
            A_IS_UINT8, B_IS_UINT8, HAS_A_ZP, HAS_B_ZP, CORRECTION_DTYPE, SCALED, BLOCK_SIZE_M, BLOCK_SIZE_N,
        )
    else:
        c_ptrs = (c_ptr + split.to(tl.int64) * stride_cs
                  + (offs_cm[:, None].to(tl.int64) * stride_cm + offs_cn[None, :] * stride_cn))
        tl.store(c_ptrs, acc, mask=(offs_cm[:, None] < M) & (offs_cn[None, :] < N))
