"""The int8 GEMM's Hopper (sm_90) main loop in Gluon: a TMA ring and async wgmma with one K
step in flight, then the same epilogue as kernels/matmul.py.

    C = ((A - a_zp) @ (B - b_zp)) * a_scale * b_scale + bias

Why Gluon: `tl.dot` on int8 accumulates in int32, and Triton's wgmma pipeliner makes a dot
asynchronous only for an fp32 accumulator, so every K step of kernels/matmul.py ends in
`wgmma.wait_group 0` and the tensor cores drain before the next step's MMAs issue. Here the
kernel says what it wants: `warpgroup_mma(..., is_async=True)` then
`warpgroup_mma_wait(num_outstanding=1)`, so step k's MMAs run while step k + 1's are issued.

The loop. A (M, K) and B, given as its (N, K) K-major transpose (what 8-bit wgmma reads),
come in through TMA descriptors into a ring of STAGES shared-memory slots, one mbarrier per
slot counting the bytes of its two tiles. Step k waits for slot k % STAGES, issues its MMAs
asynchronously, waits until at most one step (this one) is in flight, and then refills
the slot step k - 1 read, now free, with the tiles of step k + STAGES - 1. TMA pads
out-of-bounds rows, columns and K with zeros, so ragged edges need no masks in the loop
(the zeros add nothing to the int32 sum); the epilogue's store is masked.

Operands are int8 (the launcher shifts uint8 ones to int8 first: the wgmma reads signed
bytes from shared memory, with no register pass for a shift), A row-major with
K % 16 == 0 (TMA's 16-byte stride rule); qtriton/ops/matmul.py copies what does not fit.

The epilogue is kernels/matmul.py's `_epilogue`, the same @triton.jit function called from
Gluon (its tensors take the accumulator's layout): zero-point correction from row / column
sums, scales, bias, the cast and the masked store, one code for both main loops.

Triton 3.6 and 3.9 name the TMA load differently (`async_copy_global_to_shared`,
`async_load`); `_tma_load` is whichever this Triton has, found by looking, not by version.
Importing this module needs Triton's Gluon (qtriton.ops.matmul imports it guarded). Gluon
kernels do not run in Triton's interpreter: on CPU and under TRITON_INTERPRET the launcher
runs kernels/matmul.py.
"""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from qtriton.kernels.common import _tile_position
from qtriton.kernels.matmul import _epilogue

# The TMA global -> shared copy: `async_load` from Triton 3.7 on (where the old name is a
# stub that raises), `async_copy_global_to_shared` before.
_tma_load = tma.async_load if hasattr(tma, "async_load") else tma.async_copy_global_to_shared

# The widest int8 wgmma Triton's lowering accepts (N = 256 asserts, although ptxas takes it).
MAX_INSTR_N = gl.constexpr(128)


@gluon.jit(do_not_specialize=["a_zp_value", "b_zp_value"])
def _int8_matmul_gluon_kernel(
    # a_desc: TMA descriptor of A (M, K), block [BLOCK_SIZE_M, BLOCK_SIZE_K]; b_desc: of B's
    # (N, K) K-major transpose, block [BLOCK_SIZE_N, BLOCK_SIZE_K]. The other arguments are
    # kernels/matmul.py's _int8_matmul_kernel's (None pointers compile away).
    a_desc, b_desc, c_ptr,
    a_scale_ptr, b_scale_ptr, a_zp_ptr, b_zp_ptr, bias_ptr, a_rowsum_ptr, b_colsum_ptr,
    a_scale_value, b_scale_value, a_zp_value, b_zp_value,
    M, N, K,
    M_BUCKET,  # unused in the body: the autotuner's cache key for M
    stride_cm, stride_cn,
    stride_a_scale, stride_b_scale, stride_a_zp, stride_b_zp, stride_bias, stride_a_rowsum, stride_b_colsum,
    A_IS_UINT8: gl.constexpr, B_IS_UINT8: gl.constexpr,  # False: the launcher shifts uint8 first
    HAS_A_ZP: gl.constexpr, HAS_B_ZP: gl.constexpr,
    CORRECTION_DTYPE: gl.constexpr,
    SCALED: gl.constexpr,
    BLOCK_SIZE_M: gl.constexpr, BLOCK_SIZE_N: gl.constexpr, BLOCK_SIZE_K: gl.constexpr,
    GROUP_SIZE_M: gl.constexpr,
    STAGES: gl.constexpr,  # slots in the shared-memory ring
):
    """One program computes one BLOCK_SIZE_M x BLOCK_SIZE_N tile of C over the whole K:
    the int32 A @ B through the TMA ring and async wgmma, then the epilogue."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    gl.static_assert(BLOCK_SIZE_M % (16 * NUM_WARPS) == 0, "whole warpgroups of 64 rows: 16 * num_warps | BLOCK_SIZE_M")
    gl.static_assert(not A_IS_UINT8 and not B_IS_UINT8, "the launcher shifts uint8 operands to int8 first")
    INSTR_N: gl.constexpr = BLOCK_SIZE_N if BLOCK_SIZE_N < MAX_INSTR_N else MAX_INSTR_N
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[NUM_WARPS, 1], instr_shape=[16, INSTR_N, 32])
    STEP_BYTES: gl.constexpr = (BLOCK_SIZE_M + BLOCK_SIZE_N) * BLOCK_SIZE_K

    pid_m, pid_n = _tile_position(gl.program_id(0), M, N, BLOCK_SIZE_M, BLOCK_SIZE_N, GROUP_SIZE_M)
    off_m = pid_m * BLOCK_SIZE_M
    off_n = pid_n * BLOCK_SIZE_N

    a_ring = gl.allocate_shared_memory(gl.int8, [STAGES, BLOCK_SIZE_M, BLOCK_SIZE_K], a_desc.layout)
    b_ring = gl.allocate_shared_memory(gl.int8, [STAGES, BLOCK_SIZE_N, BLOCK_SIZE_K], b_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)
    fence_async_shared()

    k_tiles = gl.cdiv(K, BLOCK_SIZE_K)
    # Fill all slots but one: the last is refilled inside the loop once step 0 is done.
    for s in gl.static_range(STAGES - 1):
        pred = s < k_tiles
        mbarrier.expect(ready.index(s), STEP_BYTES, pred=pred)
        _tma_load(a_desc, [off_m, s * BLOCK_SIZE_K], ready.index(s), a_ring.index(s), pred=pred)
        _tma_load(b_desc, [off_n, s * BLOCK_SIZE_K], ready.index(s), b_ring.index(s), pred=pred)

    acc = gl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=gl.int32, layout=acc_layout)
    for k in range(k_tiles):
        slot = k % STAGES
        mbarrier.wait(ready.index(slot), (k // STAGES) & 1)
        a = a_ring.index(slot)
        b = b_ring.index(slot).permute((1, 0))
        acc = warpgroup_mma(a, b, acc, is_async=True)
        # Step k - 1 is done after this (at most this step in flight): its slot is free.
        acc, a, b = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a, b))
        refill = k + STAGES - 1
        pred = refill < k_tiles
        free = refill % STAGES
        mbarrier.expect(ready.index(free), STEP_BYTES, pred=pred)
        _tma_load(a_desc, [off_m, refill * BLOCK_SIZE_K], ready.index(free), a_ring.index(free), pred=pred)
        _tma_load(b_desc, [off_n, refill * BLOCK_SIZE_K], ready.index(free), b_ring.index(free), pred=pred)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    for s in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(s))

    offs_cm = off_m + gl.arange(0, BLOCK_SIZE_M, layout=gl.SliceLayout(1, acc_layout))
    offs_cn = off_n + gl.arange(0, BLOCK_SIZE_N, layout=gl.SliceLayout(0, acc_layout))
    _epilogue(
        acc, offs_cm, offs_cn, c_ptr,
        a_scale_ptr, b_scale_ptr, a_zp_ptr, b_zp_ptr, bias_ptr, a_rowsum_ptr, b_colsum_ptr,
        a_scale_value, b_scale_value, a_zp_value, b_zp_value, M, N, K, stride_cm, stride_cn,
        stride_a_scale, stride_b_scale, stride_a_zp, stride_b_zp, stride_bias, stride_a_rowsum, stride_b_colsum,
        A_IS_UINT8, B_IS_UINT8, HAS_A_ZP, HAS_B_ZP, CORRECTION_DTYPE, SCALED, BLOCK_SIZE_M, BLOCK_SIZE_N,
    )
