"""int8 GEMM with the scale epilogue (bf16 out) against torch's int8 GEMM plus the same
epilogue in torch ops, bf16 torch.mm (cuBLAS) and fp32 torch.mm.

A is (M, K) activations, one scale per row; B is the transpose of a contiguous (N, K)
weight (nn.Linear's layout), one scale per column. Every implementation gets B in that layout.

Then the GEMM's own paths against each other (case "matmul_paths", rows with a `ratio_vs`
field instead of a speedup over the baselines): split-K (the launcher's rule) vs none at
M = 1, 4, 16 and N = 1024 ... 14336, and B K-major vs row-major, the latter copied K-major
first (the launcher's rule from configs.KMAJOR_MIN_M on) or read in place.

On an sm_90 card with Gluon, both main loops: the headline case times ours once more with
the Gluon loop (kernels/matmul_gluon.py, `use_gemm("gluon")`) as its own row
("qtriton (gluon loop)", speedups against the tl.dot loop and the baselines), and the paths
at M > 16 add the Gluon loop on both B layouts."""

from __future__ import annotations

import contextlib
import os
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
# The paths: decode / thin shapes for split-K, large M for B's layout.
PATH_N = (1024, 4096, 14336)
SPLIT_SHAPES = tuple((m, n, 4096) for m in (1, 4, 16) for n in PATH_N)
LAYOUT_SHAPES = ((1024, 4096, 4096), (4096, 4096, 4096), (4096, 14336, 4096), (8192, 8192, 8192))
QUICK_PATH_SHAPES = ((1, 4096, 4096), (16, 14336, 4096), (4096, 4096, 4096))
SMOKE_PATH_SHAPES = ((1, 40, 1100), (33, 40, 72))  # 1100: 5 K tiles of 256, split in 2

CASE = "scaled_matmul"
OURS = "qtriton"
OURS_GLUON = "qtriton (gluon loop)"
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


# Set to 0 by bench/gpu_check.sh when the Gluon loop's first, contained launch failed: its
# rows are then left out rather than risking a hang (the tl.dot loop's rows still run).
GLUON_ENV = "QTRITON_BENCH_GLUON"


def _gluon_runs(ctx: Context, m: int, n: int, k: int) -> bool:
    """Whether `use_gemm("gluon")` runs the Gluon loop for this shape on ctx's device."""
    import triton.language as tl

    from qtriton.ops import configs

    if os.environ.get(GLUON_ENV, "1") == "0":
        return False
    return configs.gluon_suits(torch.device(ctx.device), m, n, k, tl.int32)


def _default_loop(ctx: Context, m: int, n: int, k: int) -> str:
    """The main loop an unforced call runs for this shape ($QTRITON_GEMM, the default)."""
    import triton.language as tl

    from qtriton.ops import configs

    return configs.main_loop(torch.device(ctx.device), m, n, k, tl.int32)


def _ours_gluon(a, b, a_scale, b_scale):
    from qtriton.ops import configs

    with configs.use_gemm("gluon"):
        return _ours(a, b, a_scale, b_scale)


def _int_mm(a, b, a_scale, b_scale):
    return epilogue(torch._int_mm(a, b), a_scale, b_scale)


def run(ctx: Context) -> Iterator[list[dict]]:
    """The rows of each case in turn (nothing for a case whose check failed)."""
    shapes = SMOKE_SHAPES if ctx.smoke else QUICK_SHAPES if ctx.quick else FULL_SHAPES
    for shape in shapes:
        yield _bench_case(ctx, *shape)
    paths = SMOKE_PATH_SHAPES if ctx.smoke else QUICK_PATH_SHAPES if ctx.quick else SPLIT_SHAPES + LAYOUT_SHAPES
    for shape in paths:
        yield _bench_paths(ctx, *shape)


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

    gluon = _gluon_runs(ctx, m, n, k)

    def check() -> str:
        a, b, a_scale, b_scale = int8_inputs[0]
        exact = torch.round(a.to(torch.float64) @ b.to(torch.float64))  # exact: |sum| < 2^53
        check_exact(ops.int8_matmul(a, b), exact.to(torch.int32), f"{label}: int32 product")
        check_close(_ours(*int8_inputs[0]), epilogue(exact, a_scale, b_scale), 2**-7, 1e-6, f"{label}: bf16 out")
        if gluon:
            with ops.use_gemm("gluon"):
                check_exact(ops.int8_matmul(a, b), exact.to(torch.int32), f"{label}: gluon loop int32 product")
            check_close(_ours_gluon(*int8_inputs[0]), epilogue(exact, a_scale, b_scale), 2**-7, 1e-6,
                        f"{label}: gluon loop bf16 out")
        return "int32 exact, bf16 within 2^-7" + (" (both loops)" if gluon else "")

    status = checked(ctx, label, check)
    if status is None:
        return []
    timings = {OURS: time_call(ctx, _ours, int8_inputs)}
    if gluon:
        timings[OURS_GLUON] = time_call(ctx, _ours_gluon, int8_inputs)
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
        int8 = impl in (OURS, OURS_GLUON, INT_MM)
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
                main_loop="gluon" if impl == OURS_GLUON else _default_loop(ctx, m, n, k) if impl == OURS else None,
                speedup=ratios if impl == OURS else speedups(timings, OURS_GLUON) if impl == OURS_GLUON else None,
                goals=judged(ctx, goals) if impl == OURS else None,
                check=status,
            )
        )
    return rows


# ------------------------------------------------------------------------ the GEMM's paths
PATHS_CASE = "matmul_paths"


@contextlib.contextmanager
def _knob(name: str, value: int):
    """Set one of qtriton.ops.configs' path rules (MAX_SPLIT_K, KMAJOR_MIN_M, SHIFT_A_MIN_M) for a block."""
    from qtriton.ops import configs

    previous = getattr(configs, name)
    setattr(configs, name, value)
    try:
        yield
    finally:
        setattr(configs, name, previous)


def _path_variants(m: int, gluon: bool = False) -> dict[str, tuple[str, contextlib.AbstractContextManager]]:
    """name -> (inputs: B layout, or "uint8" for A as uint8 codes with per-row zero points,
    the rule setting it runs under); the first is the reference. gluon: add the Gluon main
    loop (an sm_90 card, M > 16)."""
    if m <= 16:
        return {
            "split-K (rule)": ("nk", contextlib.nullcontext()),
            "no split-K": ("nk", _knob("MAX_SPLIT_K", 1)),
            # An API caller's asymmetric activations: uint8 A shifted inside the K loop (the
            # rule below SHIFT_A_MIN_M) or by a copy before the GEMM; B's column sums given.
            "uint8 A + zp, shifted in the K loop (rule)": ("uint8", contextlib.nullcontext()),
            "uint8 A + zp, shifted before the GEMM": ("uint8", _knob("SHIFT_A_MIN_M", 1)),
        }
    from qtriton.ops import configs

    paths = {
        "B K-major": ("nk", contextlib.nullcontext()),
        "B row-major, copied K-major": ("kn", _knob("KMAJOR_MIN_M", 0)),
        "B row-major, read in place": ("kn", _knob("KMAJOR_MIN_M", 2**62)),
    }
    if gluon:  # the Gluon loop copies a row-major B K-major whatever M is (TMA reads K-major)
        paths["B K-major, gluon loop"] = ("nk", configs.use_gemm("gluon"))
        paths["B row-major, gluon loop"] = ("kn", configs.use_gemm("gluon"))
    return paths


def _uint8_inputs(a, b, a_scale, b_scale):
    """The same product with A as uint8 codes a + 128, per-row zero points 128 and B's
    int32 column sums (as Int8Linear keeps them): (A', B, scales, zero points, sums)."""
    a_u8 = (a.to(torch.int16) + 128).to(torch.uint8)
    zero_points = torch.full((a.shape[0],), 128, dtype=torch.int32, device=a.device)
    return a_u8, b, a_scale, b_scale, zero_points, b.sum(0, dtype=torch.int32)


def _ours_uint8(a, b, a_scale, b_scale, a_zp, b_colsum):
    from qtriton.ops import matmul as ops

    return ops.scaled_matmul(a, b, a_scale, b_scale, a_zp, out_dtype=torch.bfloat16, b_colsum=b_colsum)


def _bench_paths(ctx: Context, m: int, n: int, k: int) -> list[dict]:
    from qtriton.ops import matmul as ops

    label = f"paths M={m} N={n} K={k}"
    copies = input_copies(ctx, m * k + k * n + 2 * m * n)
    inputs = [_int8_inputs(ctx, m, n, k) for _ in range(copies)]
    # The same B in both layouts: a row-major (K, N) copy of each K-major view; the same A
    # as uint8 codes with zero points.
    layouts = {"nk": inputs, "kn": [(a, b.contiguous(), sa, sb) for a, b, sa, sb in inputs]}
    if m <= 16:
        layouts["uint8"] = [_uint8_inputs(*args) for args in inputs]
    timings, statuses = {}, {}
    variants = _path_variants(m, gluon=m > 16 and _gluon_runs(ctx, m, n, k))
    for name, (layout, setting) in variants.items():
        fn = _ours_uint8 if layout == "uint8" else _ours
        with setting:
            def check(layout=layout, fn=fn) -> str:
                a, b, a_scale, b_scale = inputs[0] if layout == "uint8" else layouts[layout][0]
                exact = torch.round(a.to(torch.float64) @ b.to(torch.float64))
                if layout != "uint8":
                    check_exact(ops.int8_matmul(a, b), exact.to(torch.int32), f"{label} {name}: int32 product")
                check_close(fn(*layouts[layout][0]), epilogue(exact, a_scale, b_scale), 2**-7, 1e-6,
                            f"{label} {name}: bf16 out")
                return "bf16 within 2^-7" if layout == "uint8" else "int32 exact, bf16 within 2^-7"

            statuses[name] = checked(ctx, f"{label} {name}", check)
            if statuses[name] is not None:
                timings[name] = time_call(ctx, fn, layouts[layout])
    reference = next(iter(variants))
    rows = []
    for name, timing in timings.items():
        tops = 2 * m * n * k / (timing.median_ms * 1e-3) / 1e12
        ratios = {other: t.median_ms / timing.median_ms for other, t in timings.items() if other != name}
        rows.append(result_row(
            ctx, "matmul", PATHS_CASE, (m, n, k), "int8->bf16", f"{OURS}: {name}", timing,
            metric="TOPS", value=tops, pct_peak=100 * tops / ctx.int8_peak_tops if ctx.int8_peak_tops else None,
            input_copies=copies, speedup=None, goals=None, check=statuses[name],
            ratio_vs=ratios, reference_path=reference, main_loop="gluon" if "gluon loop" in name else "tl",
        ))
    return rows
