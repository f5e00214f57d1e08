"""int8 GEMM with the scale epilogue (bf16 out) against torch's int8 GEMM plus the same
epilogue in torch ops, bf16 torch.mm (cuBLAS) and fp32 torch.mm.

A is (M, K) activations, one scale per row; B is the transpose of a contiguous (N, K)
weight (nn.Linear's layout), one scale per column. Every implementation gets B in that layout."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from bench.common import (
    Context,
    check_close,
    check_exact,
    checked,
    goal,
    input_copies,
    judged,
    rand_int8,
    randn,
    result_row,
    speedups,
    time_call,
)

NK_SHAPES = ((4096, 4096), (14336, 4096), (4096, 14336))
FULL_SHAPES = tuple((m, n, k) for m in (1, 16, 64, 256, 1024, 4096, 8192) for n, k in NK_SHAPES) + ((8192, 8192, 8192),)
QUICK_SHAPES = ((1, 4096, 4096), (16, 4096, 4096), (4096, 4096, 4096), (4096, 14336, 4096), (8192, 8192, 8192))
SMOKE_SHAPES = ((1, 40, 72), (16, 64, 96), (33, 64, 128))

CASE = "scaled_matmul"
OURS = "qtriton"
INT_MM = "torch._int_mm+epilogue"
BF16 = "torch.mm bf16"
FP32 = "torch.mm fp32"


def int_mm_runs(m: int, n: int, k: int) -> bool:
    """torch._int_mm's constraints: M > 16, K and N multiples of 8."""
    return m > 16 and k % 8 == 0 and n % 8 == 0


def epilogue(acc: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor) -> torch.Tensor:
    return (acc.to(torch.float32) * a_scale[:, None] * b_scale[None, :]).to(torch.bfloat16)


def _ours(a, b, a_scale, b_scale):
    from qtriton.ops import matmul as ops

    return ops.scaled_matmul(a, b, a_scale, b_scale, out_dtype=torch.bfloat16)


def _int_mm(a, b, a_scale, b_scale):
    return epilogue(torch._int_mm(a, b), a_scale, b_scale)


def run(ctx: Context) -> Iterator[list[dict]]:
    """The rows of each case in turn (nothing for a case whose check failed)."""
    shapes = SMOKE_SHAPES if ctx.smoke else QUICK_SHAPES if ctx.quick else FULL_SHAPES
    for shape in shapes:
        yield _bench_case(ctx, *shape)


def _int8_inputs(ctx: Context, m: int, n: int, k: int):
    a = rand_int8((m, k), ctx.device)
    b = rand_int8((n, k), ctx.device).t()  # (K, N) view of a contiguous (N, K) weight
    a_scale = torch.rand(m, device=ctx.device) / 64 + 1e-4
    b_scale = torch.rand(n, device=ctx.device) / 64 + 1e-4
    return a, b, a_scale, b_scale


def _float_inputs(ctx: Context, m: int, n: int, k: int, dtype: torch.dtype):
    return randn((m, k), dtype, ctx.device), randn((n, k), dtype, ctx.device).t()


def _bench_case(ctx: Context, m: int, n: int, k: int) -> list[dict]:
    from qtriton.ops import matmul as ops

    label = f"M={m} N={n} K={k}"
    copies = {
        OURS: input_copies(ctx, m * k + k * n + 2 * m * n),
        BF16: input_copies(ctx, 2 * (m * k + k * n + m * n)),
        FP32: input_copies(ctx, 4 * (m * k + k * n + m * n)),
    }
    int8_inputs = [_int8_inputs(ctx, m, n, k) for _ in range(copies[OURS])]

    def check() -> str:
        a, b, a_scale, b_scale = int8_inputs[0]
        exact = torch.round(a.to(torch.float64) @ b.to(torch.float64))  # exact: |sum| < 2^53
        check_exact(ops.int8_matmul(a, b), exact.to(torch.int32), f"{label}: int32 product")
        check_close(_ours(*int8_inputs[0]), epilogue(exact, a_scale, b_scale), 2**-7, 1e-6, f"{label}: bf16 out")
        return "int32 exact, bf16 within 2^-7"

    status = checked(ctx, label, check)
    if status is None:
        return []
    timings = {OURS: time_call(ctx, _ours, int8_inputs)}
    if int_mm_runs(m, n, k):
        timings[INT_MM] = time_call(ctx, _int_mm, int8_inputs)
    else:
        print(f"{label}: {INT_MM} n/a (needs M > 16, K and N multiples of 8)", flush=True)
    for name, dtype in ((BF16, torch.bfloat16), (FP32, torch.float32)):
        inputs = [_float_inputs(ctx, m, n, k, dtype) for _ in range(copies[name])]
        timings[name] = time_call(ctx, torch.mm, inputs)
        del inputs

    ratios = speedups(timings, OURS)
    ratios.setdefault(INT_MM, None)  # n/a: _int_mm cannot run this shape
    goals = []
    if ratios[INT_MM] is not None:
        goals.append(goal(f"speedup vs {INT_MM}", ratios[INT_MM], 1.0))
    if min(m, n, k) >= 4096:
        goals.append(goal(f"speedup vs {BF16}", ratios[BF16], 1.7))
    if m <= 16:
        goals.append(goal(f"speedup vs {BF16}", ratios[BF16], 1.6))
    peak = ctx.int8_peak_tops
    rows = []
    for impl, timing in timings.items():
        tops = 2 * m * n * k / (timing.median_ms * 1e-3) / 1e12
        int8 = impl in (OURS, INT_MM)
        rows.append(
            result_row(
                ctx,
                "matmul",
                CASE,
                (m, n, k),
                "int8->bf16" if int8 else "bf16" if impl == BF16 else "fp32",
                impl,
                timing,
                metric="TOPS" if int8 else "TFLOPS",
                value=tops,
                pct_peak=100 * tops / peak if int8 and peak else None,
                peak=f"int8 dense {peak:.0f} TOPS" if int8 and peak else None,
                input_copies=copies[OURS if int8 else impl],
                speedup=ratios if impl == OURS else None,
                goals=judged(ctx, goals) if impl == OURS else None,
                check=status,
            )
        )
    return rows
