"""Quantization kernels: achieved bandwidth against a device copy of the same bytes and
against the same formulas in torch ops (qtriton.torch_backend).

Bytes counted are the fewest any implementation must move: the input read once, the
codes and the scales written once. A two-pass kernel (per-tensor: reduce, then quantize)
reads the input twice, and pays for it in this number.

`quantize_per_token(hadamard_block=b)` rotates each row in the kernel before quantizing it
(issue #28), with b the largest power of two dividing K, as the rotated models choose it:
the same bytes as the plain per-token case, so the two rows of a shape compare directly."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from bench.common import (
    Context,
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

FULL_CASES = tuple(
    (shape, dtype)
    for dtype in (torch.float16, torch.bfloat16, torch.float32)
    for shape in ((16, 4096), (4096, 4096), (8192, 8192), (8192, 14336))
)
QUICK_CASES = tuple((shape, torch.bfloat16) for shape in ((16, 4096), (4096, 4096), (8192, 14336)))
SMOKE_CASES = (((16, 96), torch.bfloat16), ((37, 130), torch.float32))

GOAL_OF_COPY = 0.85  # per-tensor and per-token (rotated or not), from 16M elements up
GOAL_MIN_ELEMENTS = 16 * 2**20


ROTATED = "quantize_per_token(hadamard_block)"


def _ops(full: bool, quick: bool = False):
    """(name, granularity, axis, is_dequantize) of each benchmarked operation: every quantize
    kernel (per token, rotated, per tensor, per channel, dequantize); in quick mode the last
    two on the largest case only."""
    ops = [("quantize_per_token", "token", None, False), (ROTATED, "token", None, False),
           ("quantize_per_tensor", "tensor", None, False)]
    if full or quick:
        ops += [("quantize_per_channel(axis=1)", "channel", 1, False), ("dequantize_per_token", "token", None, True)]
    return ops


def hadamard_block(k: int) -> int:
    """The rotation block of a K-wide row: the largest power of two dividing K, at most the
    largest the kernel takes (1 when K is odd: no rotation possible)."""
    from qtriton.checks import MAX_HADAMARD_BLOCK

    return min(k & -k, MAX_HADAMARD_BLOCK)


def _qtriton_fn(granularity: str, axis: int | None, dequantize: bool, dtype: torch.dtype, **rotation):
    from qtriton.ops import quantize as ops

    if dequantize:
        return lambda q, scale: ops.dequantize(q, scale, granularity=granularity, axis=axis, out_dtype=dtype)
    if granularity == "tensor":
        return lambda x: ops.quantize_per_tensor(x)
    if granularity == "channel":
        return lambda x: ops.quantize_per_channel(x, axis)
    return lambda x: ops.quantize_per_token(x, **rotation)


def _torch_fn(granularity: str, axis: int | None, dequantize: bool, dtype: torch.dtype, hadamard_block=None):
    from qtriton import torch_backend

    if dequantize:
        return lambda q, scale: torch_backend.dequantize(q, scale, None, granularity, axis, dtype)
    return lambda x: torch_backend.quantize(x, 8, True, granularity, axis, False, hadamard_block)[:2]


def _scale_count(shape, granularity: str, axis: int | None) -> int:
    return {"tensor": 1, "channel": shape[axis] if axis is not None else 1, "token": shape[0]}[granularity]


def _copy(src: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(src).copy_(src)


def run(ctx: Context) -> Iterator[list[dict]]:
    """The rows of each case in turn (nothing for a case whose check failed)."""
    cases = SMOKE_CASES if ctx.smoke else QUICK_CASES if ctx.quick else FULL_CASES
    for name, granularity, axis, dequantize in _ops(full=not ctx.quick, quick=ctx.quick):
        quick_only_largest = ctx.quick and (granularity == "channel" or dequantize)
        for shape, dtype in cases[-1:] if quick_only_largest else cases:
            yield _bench_case(ctx, name, granularity, axis, dequantize, shape, dtype)


def _bench_case(ctx, name, granularity, axis, dequantize, shape, dtype) -> list[dict]:
    numel = shape[0] * shape[1]
    elem = torch.finfo(dtype).bits // 8
    traffic = numel * elem + numel + 4 * _scale_count(shape, granularity, axis)
    dtype_name = str(dtype).removeprefix("torch.")
    rotation = {}
    if name == ROTATED:
        rotation = {"hadamard_block": hadamard_block(shape[1])}
        if rotation["hadamard_block"] < 2:
            return []
        name = f"quantize_per_token(hadamard_block={rotation['hadamard_block']})"
    label = f"{name} {shape[0]}x{shape[1]} {dtype_name}"
    ours = _qtriton_fn(granularity, axis, dequantize, dtype, **rotation)
    theirs = _torch_fn(granularity, axis, dequantize, dtype, **rotation)
    copies = input_copies(ctx, traffic)

    def make() -> tuple:
        if dequantize:  # codes and one positive scale per row
            return rand_int8(shape, ctx.device), torch.rand(shape[0], device=ctx.device) + 1e-3
        return (randn(shape, dtype, ctx.device),)

    inputs = [make() for _ in range(copies)]

    def check() -> str:
        got, want = ours(*inputs[0]), theirs(*inputs[0])
        if dequantize:
            check_exact(got, want, f"{label}: values")
        else:
            check_exact(got[0], want[0], f"{label}: codes")
            check_exact(got[1], want[1], f"{label}: scales")
        return "exact vs torch ops"

    status = checked(ctx, label, check)
    if status is None:
        return []
    # The copy moves exactly the bytes counted above: read traffic / 2, write traffic / 2.
    copy_inputs = [(rand_int8((traffic // 2,), ctx.device),) for _ in range(input_copies(ctx, traffic))]
    timings = {
        "qtriton": time_call(ctx, ours, inputs),
        "torch ops": time_call(ctx, theirs, inputs),
        "copy": time_call(ctx, _copy, copy_inputs),
    }
    gbps = {impl: traffic / (t.median_ms * 1e-3) / 1e9 for impl, t in timings.items()}
    of_copy = gbps["qtriton"] / gbps["copy"]
    ratios = speedups(timings, "qtriton")
    goals = []
    if granularity in ("token", "tensor") and not dequantize and numel >= GOAL_MIN_ELEMENTS:
        goals.append(goal("fraction of copy bandwidth", of_copy, GOAL_OF_COPY))
    rows = []
    for impl, timing in timings.items():
        rows.append(
            result_row(
                ctx,
                "quantize",
                name,
                shape,
                dtype_name,
                impl,
                timing,
                metric="GB/s",
                value=gbps[impl],
                pct_peak=100 * gbps[impl] / gbps["copy"],
                peak="measured copy bandwidth",
                bytes=traffic,
                input_copies=copies,
                speedup=ratios if impl == "qtriton" else None,
                goals=judged(ctx, goals) if impl == "qtriton" else None,
                check=status,
            )
        )
    return rows
