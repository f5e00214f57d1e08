"""The `qtriton report` command: its options and its run."""

from __future__ import annotations

import argparse
import json

from qtriton.report.floats import report_checkpoint
from qtriton.report.tables import format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `qtriton report`."""
    parser.add_argument(
        "path", help="checkpoint: a save_quantized file, a Hugging Face folder (float, or compressed-tensors as "
        "save_pretrained writes it; sharded or not), a .safetensors.index.json, or a float .safetensors, "
        ".pt/.pth/.bin/.ckpt state dict, .npz"
    )
    parser.add_argument(
        "--original", help="for a save_quantized file: the float checkpoint it came from, to measure the int8 weights"
    )
    parser.add_argument("--wide", action="store_true", help="every method side by side, full names (over 100 columns)")
    parser.add_argument("--bits", type=int, default=8, help="code width, 2..8 (default: 8)")
    parser.add_argument(
        "--group-size", type=int, default=128, help="group size of the group-wise methods (default: 128)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help=(
            "print the report as JSON; per method: snr_db, max_error, exact, unquantizable "
            "(null, or why the method cannot quantize the matrix: then snr_db and max_error are "
            "null). snr_db is null when not finite: +inf if exact, -inf for a constant matrix"
        ),
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run `qtriton report`; 0 on success. A bad checkpoint or option raises ValueError or
    FileNotFoundError, which the `qtriton` command prints as one line (exit status 2)."""
    rep = report_checkpoint(
        args.path, args.bits, args.group_size, progress=not args.no_progress, original=args.original
    )
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2))
    else:
        print(format_table(rep, wide=args.wide))
    return 0
