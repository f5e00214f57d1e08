"""The `qtriton` command: `qtriton demo`, `qtriton report CHECKPOINT`, `qtriton eval MODEL`, `qtriton --version`.

Every error a user can cause (a bad option, a bad checkpoint, a backend the machine cannot
run, a bad QTRITON_BACKEND) ends the same way: one line `qtriton ...: error: ...` on
stderr and exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

EXIT_USAGE = 2

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def one_line(message: str) -> str:
    """message without terminal escapes and newlines, as one line of at most ~300 characters."""
    text = " ".join(_ANSI.sub("", message).split())
    return text if len(text) <= 300 else text[:297] + "..."


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (not usage + error) and exits 2."""

    def error(self, message: str):  # argparse's hook; never returns
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


#: Each command -> (the module with its add_arguments and run, the help line). A module is
#: imported only when its command runs, so `qtriton --help` and `--version` import no torch.
COMMANDS = {
    "demo": ("qtriton.demo", "the lab walkthrough: errors per method, matmul, memory"),
    "report": ("qtriton.report", "per-layer int8 error and size for a float or qtriton checkpoint"),
    "eval": ("qtriton.accuracy.evaluate", "perplexity, top-1 and KL of quantized recipes vs float"),
}


def version() -> str:
    """The installed distribution's version (no torch import), else the package's."""
    from importlib import metadata

    try:
        return metadata.version("qtriton")
    except metadata.PackageNotFoundError:
        from qtriton import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _Parser(prog="qtriton", description="INT8 quantization kernels in Triton")
    parser.add_argument("--version", action="version", version=f"qtriton {version()}")
    commands = parser.add_subparsers(dest="command", required=True)  # subparsers are _Parser too
    # The top level has only --help and --version: the first other word names the command.
    chosen = next((word for word in argv if not word.startswith("-")), None)
    modules = {}
    for name, (module_name, help_line) in COMMANDS.items():
        subparser = commands.add_parser(name, help=help_line)
        if name == chosen:
            modules[name] = importlib.import_module(module_name)
            modules[name].add_arguments(subparser)
    args = parser.parse_args(argv)
    try:
        return modules[args.command].run(args)
    except BrokenPipeError:
        raise  # an OSError, but entry_point's to handle: `qtriton report ... | head`
    except (ValueError, OSError) as err:
        # What qtriton raises for bad input (ValueError, FileNotFoundError) and what a
        # checkpoint file can raise: the user's problem, so a message, not a traceback.
        print(f"qtriton {args.command}: error: {one_line(str(err))}", file=sys.stderr)
        return EXIT_USAGE


def entry_point() -> int:
    """The console script: `qtriton ... | head` ends quietly instead of with a traceback."""
    try:
        return main()
    except BrokenPipeError:
        sys.stderr.close()
        return 141  # 128 + SIGPIPE, as a shell reports it


if __name__ == "__main__":
    sys.exit(main())
