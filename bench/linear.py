"""End to end: qtriton.model.nn.Int8Linear (quantize activations per token, int8 GEMM, scale
epilogue) against the bf16 nn.Linear it was made from, on MiniLM- and Llama-sized layers."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from bench.common import Context, checked, input_copies, randn, relative_error, result_row, speedups, time_call

# (family, in_features, out_features, bias): all-MiniLM-L6-v2 and Llama-3-8B projections.
MINILM = (("MiniLM", 384, 384, True), ("MiniLM", 384, 1536, True), ("MiniLM", 1536, 384, True))
LLAMA = (
    ("Llama-3-8B", 4096, 4096, False),
    ("Llama-3-8B", 4096, 1024, False),
    ("Llama-3-8B", 4096, 14336, False),
    ("Llama-3-8B", 14336, 4096, False),
)
FULL_CASES = tuple((layer, t) for layer in MINILM for t in (128, 4096)) + tuple(
    (layer, t) for layer in LLAMA for t in (1, 16, 512, 4096)
)
QUICK_CASES = ((MINILM[1], 4096), (LLAMA[2], 16), (LLAMA[2], 4096))
SMOKE_CASES = ((("tiny", 48, 96, True), 5), (("tiny", 96, 40, False), 33))

OURS = "qtriton Int8Linear"
ASYMMETRIC = "qtriton Int8Linear asym"  # scheme "w8a8-asym": int8 codes + per-token zero points
WEIGHT_ONLY = "qtriton Int8Linear W8A16"  # scheme "w8a16": bf16 activations, the W8A16 GEMM
BF16 = "nn.Linear bf16"
MAX_RELATIVE_ERROR = 0.05  # int8 per-token x per-channel on Gaussian data lands near 0.01


def run(ctx: Context) -> Iterator[list[dict]]:
    """The rows of each case in turn (nothing for a case whose check failed)."""
    from qtriton.backend import use_backend
    from qtriton.model.nn import Int8Linear

    cases = SMOKE_CASES if ctx.smoke else QUICK_CASES if ctx.quick else FULL_CASES
    with use_backend("triton"):  # smoke mode's CPU tensors too: the interpreted kernels, not torch ops
        for layer, tokens in cases:
            yield _bench_case(ctx, Int8Linear, layer, tokens)


def _bench_case(ctx: Context, Int8Linear, layer, tokens: int) -> list[dict]:
    family, n_in, n_out, bias = layer
    case = f"{family} {n_in}->{n_out}"
    label = f"{case} tokens={tokens}"
    weight_bytes = n_in * n_out
    copies = input_copies(ctx, weight_bytes + tokens * (n_in + n_out) * 2)
    linears = [nn.Linear(n_in, n_out, bias=bias, device=ctx.device, dtype=torch.bfloat16) for _ in range(copies)]
    inputs = [randn((tokens, n_in), torch.bfloat16, ctx.device) for _ in range(copies)]
    with torch.no_grad():
        quantized = [Int8Linear.from_float(linear) for linear in linears]
        asymmetric = [Int8Linear.from_float(linear, "w8a8-asym") for linear in linears]
        weight_only = [Int8Linear.from_float(linear, "w8a16") for linear in linears]

    def check() -> str:
        errors = []
        for layers in (quantized, asymmetric, weight_only):
            with torch.no_grad():
                got = layers[0](inputs[0])
                ref = nn.functional.linear(
                    inputs[0].float(), linears[0].weight.float(), None if not bias else linears[0].bias.float()
                )
            if got.shape != ref.shape:
                raise AssertionError(f"{label}: output shape {tuple(got.shape)} != {tuple(ref.shape)}")
            errors.append(relative_error(got, ref))
            if not errors[-1] <= MAX_RELATIVE_ERROR:  # also catches NaN
                raise AssertionError(f"{label}: relative error {errors[-1]:.4g} vs fp32 > {MAX_RELATIVE_ERROR}")
        return f"relative error vs fp32 {errors[0]:.2e} (asym {errors[1]:.2e}, W8A16 {errors[2]:.2e})"

    status = checked(ctx, label, check)
    if status is None:
        return []
    with torch.no_grad():
        timings = {
            OURS: time_call(ctx, lambda module, x: module(x), list(zip(quantized, inputs))),
            ASYMMETRIC: time_call(ctx, lambda module, x: module(x), list(zip(asymmetric, inputs))),
            WEIGHT_ONLY: time_call(ctx, lambda module, x: module(x), list(zip(weight_only, inputs))),
            BF16: time_call(ctx, lambda module, x: module(x), list(zip(linears, inputs))),
        }
    rows = []
    # Three comparisons of the same timings, each its own case so a row's speedups cover
    # exactly the other rows of its case: W8A8 (symmetric, asymmetric) and W8A16 vs bf16.
    for ours, case_name in ((OURS, case), (ASYMMETRIC, f"{case} asym"), (WEIGHT_ONLY, f"{case} W8A16")):
        pair = {ours: timings[ours], BF16: timings[BF16]}
        ratios = speedups(pair, ours)
        for impl, timing in pair.items():
            rows.append(
                result_row(
                    ctx,
                    "linear",
                    case_name,
                    (tokens, n_in, n_out),
                    "bf16 in/out",
                    impl,
                    timing,
                    metric="TFLOPS",
                    value=2 * tokens * n_in * n_out / (timing.median_ms * 1e-3) / 1e12,
                    pct_peak=None,
                    peak=None,
                    input_copies=copies,
                    speedup=ratios if impl == ours else None,
                    goals=None,
                    check=status,
                )
            )
    return rows
