"""The `qtriton` command: `qtriton demo` and `qtriton report CHECKPOINT`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qtriton", description="INT8 quantization kernels in Triton")
    commands = parser.add_subparsers(dest="command", required=True)

    from qtriton import demo

    demo.add_arguments(commands.add_parser("demo", help="the lab walkthrough: errors per method, matmul, memory"))
    try:
        from qtriton import report
    except ImportError as exc:  # pragma: no cover - the report needs only core dependencies
        report = None
        report_error = exc
    report_parser = commands.add_parser("report", help="per-tensor quantization error table for a checkpoint")
    if report is not None:
        report.add_arguments(report_parser)

    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo.run(args)
    if report is None:
        parser.error(f"report is unavailable: {report_error}")
    return report.run(args)


def entry_point() -> int:
    """The console script: `qtriton ... | head` ends quietly instead of with a traceback."""
    try:
        return main()
    except BrokenPipeError:
        sys.stderr.close()
        return 141  # 128 + SIGPIPE, as a shell reports it


if __name__ == "__main__":
    sys.exit(main())
