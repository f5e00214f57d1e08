"""python -m bench {quantize,matmul,linear,all,tune,static,plot,table,cpu,smoothquant,export,serve,host,rotation} [options]

Run from the repository root. See docs/performance.md for how to read the numbers."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

BENCHES = ("quantize", "matmul", "linear")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {
        "quantize": "quantization kernels: GB/s vs a device copy and vs torch ops",
        "matmul": "int8 GEMM + epilogue vs torch._int_mm + epilogue, bf16 and fp32 torch.mm",
        "linear": "Int8Linear end to end vs bf16 nn.Linear",
        "all": "quantize, matmul and linear",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("--quick", action="store_true", help="headline shapes only")
        p.add_argument(
            "--smoke",
            action="store_true",
            help="tiny shapes on CPU in Triton's interpreter: checks the bench runs, times nothing",
        )
        p.add_argument("--out", type=Path, help="results folder (default bench/results; a temp folder with --smoke)")
    p = sub.add_parser("tune", help="autotune the GEMM on this card and save the winning configs")
    p.add_argument("--quick", action="store_true", help="headline shapes only")
    p.add_argument("--out", type=Path, help="configs file or folder to write to (default: qtriton/configs/<card>.json)")
    p = sub.add_parser(
        "static",
        help="compile every kernel for sm_90a without a GPU: registers, spills, shared memory, wgmma, "
        "128-bit loads; exit 1 on a violation",
    )
    p.add_argument("--subset", action="store_true",
                   help="the largest tile of each GEMM pool only (what tests/test_static.py compiles)")
    p.add_argument("--only", help="regular expression the variant name must match, e.g. 'gemm uint8'")
    p.add_argument("--write", type=Path, help="replace the 'Compiled for sm_90a' table of this markdown file")
    p = sub.add_parser("plot", help="PNG of the speedups of each card's latest run, next to its results")
    p.add_argument("--results", type=Path, default=None, help="results folder or .jsonl file")
    p = sub.add_parser("table", help="markdown tables of all results")
    p.add_argument("--results", type=Path, default=None, help="results folder or .jsonl file")
    p.add_argument("--write", type=Path, help="replace the results section of this markdown file")
    for name, (_, text) in _OWN_PARSERS.items():  # listed here, parsed by their own modules
        sub.add_parser(name, help=f"{text} (options: python -m bench {name} --help)", add_help=False)
    return parser


def _results_dir(args) -> Path:
    from bench.common import RESULTS_DIR

    if not args.smoke:
        return args.out or RESULTS_DIR
    out = args.out or Path(tempfile.mkdtemp(prefix="qtriton-bench-smoke-"))
    if out.resolve().is_relative_to(RESULTS_DIR.resolve()):
        raise SystemExit(f"--smoke results never go to {RESULTS_DIR}: smoke rows hold no timings")
    return out


def _run_benches(args) -> int:
    out = _results_dir(args)
    if args.smoke:
        # Before anything imports qtriton.kernels: Triton picks interpreter or GPU at decoration.
        os.environ["TRITON_INTERPRET"] = "1"
    from bench import linear, matmul, quantize
    from bench.common import append_results, make_context, print_row

    ctx = make_context(smoke=args.smoke, quick=args.quick)
    print(f"# {ctx.env['card']} | torch {ctx.env['torch']} | triton {ctx.env['triton']} | commit {ctx.env['commit']}")
    modules = {"quantize": quantize, "matmul": matmul, "linear": linear}
    for name in BENCHES if args.command == "all" else (args.command,):
        count, path = 0, None
        for rows in modules[name].run(ctx):  # appended case by case: a killed run keeps its rows
            for row in rows:
                print_row(row)
            path = append_results(out, rows) or path
            count += len(rows)
        print(f"# {name}: {count} rows appended to {path or out}", flush=True)
    if ctx.failures:
        print(f"# {len(ctx.failures)} correctness check(s) failed:", *ctx.failures, sep="\n", file=sys.stderr)
        return 1
    return 0


# Subcommands with their own argument parsers: Int8Linear vs fp32 Linear on CPU (bench/cpu.py),
# SmoothQuant's alpha chosen on a validation text (bench/smoothquant.py).
_OWN_PARSERS = {
    "cpu": ("bench.cpu", "Int8Linear vs float32 nn.Linear on CPU, the torch backend"),
    "smoothquant": ("bench.smoothquant", "SmoothQuant's alpha chosen on a validation text, SmolLM2-135M"),
    "export": ("bench.export", "SmolLM2-135M through a compressed-tensors folder: tensors, logits, load memory"),
    "serve": ("bench.serve", "qtriton's folders served by vLLM's engine on CPU against qtriton's forward"),
    "host": ("bench.host", "the host Python per int8 GEMM call on CPU, kernel launches stubbed (no GPU)"),
    "rotation": ("bench.rotation", "Hadamard rotations before per-token int8: block, full, random signs, SmoothQuant"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in _OWN_PARSERS:
        return importlib.import_module(_OWN_PARSERS[argv[0]][0]).main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command in (*BENCHES, "all"):
        return _run_benches(args)
    if args.command == "static":
        if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
            raise SystemExit("python -m bench static compiles the kernels: unset TRITON_INTERPRET")
        from bench.static import main as static_main

        return static_main(full=not args.subset, only=args.only, write=args.write)
    if args.command == "tune":
        from bench.tune import tune

        return tune(quick=args.quick, out=args.out)
    from bench.common import RESULTS_DIR

    results = args.results or RESULTS_DIR
    if args.command == "plot":
        from bench.plot import plot_all

        for png in plot_all(results):
            print(png)
        return 0
    from bench.table import load_all, markdown, write_into

    rows = load_all(results)
    tables = markdown(rows) if rows else "No results yet: no GPU run has been recorded.\n"
    if args.write:
        write_into(args.write, tables)
        print(f"wrote {args.write}")
    else:
        print(tables, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
