"""python -m bench cpu [--threads N] [--repeats N] [--smoke]: Int8Linear on CPU (the torch
backend: per-token quantization in torch ops, torch._int_mm, float64 epilogue) against the
fp32 nn.Linear it was made from, on MiniLM- and SmolLM2-135M-sized layers.

Each case is first checked: the torch backend's output must equal the NumPy oracle's bit
for bit. Times are the best of --repeats calls after warm-up (wall clock, this process's
torch threads: the best, not the median, so that a shared machine's preemptions do not
count); the integer GEMM alone and the float64 GEMM it replaced are shown too.
Prints a markdown table; nothing is written to bench/results (those rows are per GPU).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

# (model, in_features, out_features, tokens): a 337-token MiniLM / SmolLM2 batch, one decode token.
CASES = (
    ("SmolLM2-135M mlp up", 576, 1536, 337),
    ("SmolLM2-135M mlp down", 1536, 576, 337),
    ("MiniLM-L6 ffn up", 384, 1536, 337),
    ("MiniLM-L6 ffn down", 1536, 384, 337),
    ("MiniLM-L6 attention", 384, 384, 337),
    ("SmolLM2-135M mlp up", 576, 1536, 1),
)
SMOKE_CASES = (("tiny", 48, 96, 5),)


def _best_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def _float64_gemm(a_q: torch.Tensor, b_q: torch.Tensor) -> torch.Tensor:
    """The integer product as the torch backend computed it before: a float64 GEMM."""
    return a_q.to(torch.float64) @ b_q.to(torch.float64)


def run_case(name: str, in_features: int, out_features: int, tokens: int, repeats: int) -> dict:
    from qtriton import api
    from qtriton.backend import use_backend
    from qtriton.model.nn import Int8Linear

    torch.manual_seed(0)
    linear = nn.Linear(in_features, out_features)
    x = torch.randn(tokens, in_features)
    row = {"layer": name, "shape": f"{tokens}x{in_features} -> {out_features}"}
    with torch.inference_mode():
        row["fp32 nn.Linear"] = _best_ms(lambda: linear(x), repeats)
        for label, symmetric in (("int8 sym", True), ("int8 asym", False)):
            layer = Int8Linear.from_float(linear, "w8a8" if symmetric else "w8a8-asym")
            with use_backend("torch"):
                got = layer(x)
                row[label] = _best_ms(lambda layer=layer: layer(x), repeats)
            with use_backend("numpy"):
                expected = layer(x)
            if not torch.equal(got, expected):
                raise SystemExit(f"{name}: the torch backend's {label} output differs from the oracle's")
        x_q, _ = api.quantize_per_token(x)
        w_t = layer.weight.t()
        row["_int_mm"] = _best_ms(lambda: torch._int_mm(x_q, w_t), repeats)
        row["f64 GEMM (before)"] = _best_ms(lambda: _float64_gemm(x_q, w_t), repeats)
    return row


COLUMNS = ("fp32 nn.Linear", "int8 sym", "int8 asym", "_int_mm", "f64 GEMM (before)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per measurement")
    parser.add_argument("--smoke", action="store_true", help="one tiny case, few repeats: checks the bench runs")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cases, repeats = (SMOKE_CASES, 3) if args.smoke else (CASES, args.repeats)
    if args.smoke:  # a few calls of a tiny case time warm-up, not the layers: no numbers
        for case in cases:
            run_case(*case, repeats)
        print(f"# smoke: {len(cases)} case(s) ran and matched the oracle; no timings (run without --smoke)")
        return 0
    print(f"# CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"best of {repeats} calls, ms; int8 outputs equal the oracle's bit for bit")
    print("| layer | tokens x in -> out | " + " | ".join(COLUMNS) + " | int8 sym speedup |")
    print("|---|---|" + "---:|" * (len(COLUMNS) + 1))
    for case in cases:
        row = run_case(*case, repeats)
        cells = " | ".join(f"{row[c]:.3f}" for c in COLUMNS)
        print(f"| {row['layer']} | {row['shape']} | {cells} | {row['fp32 nn.Linear'] / row['int8 sym']:.2f}x |",
              flush=True)
    return 0
