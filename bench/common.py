"""What every benchmark shares: the run context, timing, input rotation, correctness
checks, environment capture and the JSON-lines results files."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import math
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
SMOKE_NOTE = "smoke: no timing claims"

# Dense int8 tensor-core peak (TOPS, no sparsity) by device name; unknown cards get no "% of peak".
# Checked in this order: the first pattern found in the lower-cased name wins.
INT8_PEAK_TOPS = (
    ("h200 nvl", None),  # different clocks and power than the SXM part: no verified figure
    ("h200", 1979.0),
    ("h100 nvl", None),
    ("h100 pcie", 1513.0),
    ("h100", 1979.0),  # "NVIDIA H100 80GB HBM3": the SXM part
)

# With less than this many bytes per call, inputs are cycled through several copies so each
# call reads data that is not in L2 (on top of the L2 flush triton's do_bench does per call).
L2_FALLBACK_BYTES = 50 * 2**20
MAX_INPUT_COPIES = 1024


@dataclasses.dataclass
class Context:
    """One benchmark process: where tensors live, how to time, and what to record."""

    device: str
    smoke: bool
    quick: bool
    env: dict
    l2_bytes: int
    rep_ms: int = 100
    warmup_ms: int = 25
    failures: list = dataclasses.field(default_factory=list)

    @property
    def int8_peak_tops(self) -> float | None:
        return None if self.smoke else int8_peak_tops(self.env["card"])


def make_context(smoke: bool, quick: bool) -> Context:
    if smoke:
        device = "cpu"  # the kernels run in Triton's interpreter (TRITON_INTERPRET=1)
    elif torch.cuda.is_available():
        device = "cuda"
    else:
        raise SystemExit("no CUDA device: run with --smoke for the CPU interpreter check")
    torch.manual_seed(0)
    l2 = L2_FALLBACK_BYTES
    if device == "cuda":
        l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or L2_FALLBACK_BYTES
    return Context(device=device, smoke=smoke, quick=quick, env=capture_env(device, smoke), l2_bytes=l2)


# --------------------------------------------------------------------------- environment
def int8_peak_tops(card: str) -> float | None:
    name = card.lower()
    for pattern, peak in INT8_PEAK_TOPS:
        if pattern in name:
            return peak
    return None


def card_slug(card: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': the results file name."""
    return re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-") or "unknown"


def _command_output(args: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(args, check=False, capture_output=True, text=True, timeout=20, cwd=REPO)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def git_commit() -> str | None:
    """$QTRITON_COMMIT (for checkouts copied without .git), else HEAD, '+dirty' if modified."""
    if os.environ.get("QTRITON_COMMIT"):
        return os.environ["QTRITON_COMMIT"]
    head = _command_output(["git", "rev-parse", "--short=12", "HEAD"])
    if head and _command_output(["git", "status", "--porcelain", "--untracked-files=no"]):
        head += "+dirty"
    return head


def capture_env(device: str, smoke: bool) -> dict:
    import triton

    if device == "cuda":
        card = torch.cuda.get_device_name(0)
        driver = _command_output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        driver = driver.splitlines()[0] if driver else None
    else:
        card, driver = "cpu (Triton interpreter)", None
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "card": card,
        "driver": driver,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "commit": git_commit(),
        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run_id": now.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}",
        "tf32": torch.backends.cuda.matmul.allow_tf32,
        "smoke": smoke,
    }


# -------------------------------------------------------------------------------- inputs
def randn(shape, dtype: torch.dtype, device: str) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.float32, device=device).to(dtype)


def rand_int8(shape, device: str) -> torch.Tensor:
    """Uniform over the whole int8 range [-128, 127] (never zeros: they run faster)."""
    return torch.randint(-128, 128, shape, dtype=torch.int8, device=device)


def input_copies(ctx: Context, bytes_per_call: int) -> int:
    """How many input sets to cycle so that consecutive calls read cold data."""
    if ctx.smoke or bytes_per_call >= 2 * ctx.l2_bytes:
        return 1
    return min(MAX_INPUT_COPIES, math.ceil(2 * ctx.l2_bytes / max(bytes_per_call, 1)))


# -------------------------------------------------------------------------------- timing
@dataclasses.dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float


def time_call(ctx: Context, fn: Callable, inputs: Sequence[tuple]) -> Timing:
    """Median and p20/p80 of fn(*args), args cycling through inputs.

    On CUDA: triton.testing.do_bench (CUDA events per call, L2 flushed before each, warm-up
    first). In smoke mode: one perf_counter measurement, which means nothing."""
    rotation = itertools.cycle(inputs)

    def call():
        return fn(*next(rotation))

    if ctx.smoke:
        start = time.perf_counter()
        call()
        elapsed = (time.perf_counter() - start) * 1e3
        return Timing(elapsed, elapsed, elapsed)
    import triton.testing

    median, p20, p80 = triton.testing.do_bench(call, warmup=ctx.warmup_ms, rep=ctx.rep_ms, quantiles=[0.5, 0.2, 0.8])
    return Timing(median, p20, p80)


# ----------------------------------------------------------------------- correctness
def check_exact(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Bitwise equality (NaN equal to NaN); the mismatch indices are printed on failure."""
    from qtriton.testing import assert_exact

    if actual.shape == expected.shape and actual.dtype == expected.dtype and torch.equal(actual, expected):
        return
    assert_exact(actual, expected, name)


def check_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float, name: str) -> None:
    from qtriton.testing import assert_close

    a, e = actual.to(torch.float32), expected.to(torch.float32)
    if a.shape == e.shape and bool(torch.all((a - e).abs() <= atol + rtol * e.abs())):
        return
    assert_close(actual, expected, rtol=rtol, atol=atol, name=name)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64."""
    a, e = actual.to(torch.float64), expected.to(torch.float64)
    return float(torch.linalg.vector_norm(a - e) / torch.linalg.vector_norm(e))


def checked(ctx: Context, label: str, check: Callable[[], str]) -> str | None:
    """Run a correctness check; on failure report it, remember it, and return None (not timed)."""
    try:
        return check()
    except (AssertionError, RuntimeError, ValueError, TypeError) as err:
        message = f"{label}: correctness check FAILED, not timed: {err}"
        print(message, flush=True)
        ctx.failures.append(message)
        return None


# -------------------------------------------------------------------------------- results
def result_row(ctx: Context, bench: str, case: str, shape, dtype: str, impl: str, timing: Timing, **fields) -> dict:
    """One measured implementation of one case, with everything needed to judge it later."""
    row = {
        "bench": bench,
        "case": case,
        "shape": list(shape),
        "dtype": dtype,
        "impl": impl,
        "median_ms": timing.median_ms,
        "p20_ms": timing.p20_ms,
        "p80_ms": timing.p80_ms,
        **fields,
        **ctx.env,
    }
    if ctx.smoke:
        row["note"] = SMOKE_NOTE
    return row


def speedups(timings: dict[str, Timing], ours: str) -> dict[str, float]:
    """baseline median / our median for every baseline measured: > 1 means ours is faster."""
    return {name: t.median_ms / timings[ours].median_ms for name, t in timings.items() if name != ours}


def goal(what: str, value: float, target: float) -> dict:
    return {"what": what, "target": target, "value": value, "met": value >= target}


def judged(ctx: Context, goals: list[dict]) -> list[dict] | None:
    """The goals a run can speak to: none in smoke mode, whose times mean nothing."""
    return None if ctx.smoke else goals


def results_path(out_dir: Path, card: str) -> Path:
    return Path(out_dir) / f"{card_slug(card)}.jsonl"


def append_results(out_dir: Path, rows: list[dict]) -> Path | None:
    """Append rows (all from one card) to <out_dir>/<card-slug>.jsonl."""
    if not rows:
        return None
    path = results_path(out_dir, rows[0]["card"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    return path


def load_results(path: Path) -> list[dict]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def result_files(results: Path) -> list[Path]:
    """The .jsonl files of a results folder, or the file itself."""
    results = Path(results)
    return [results] if results.is_file() else sorted(results.glob("*.jsonl"))


def print_row(row: dict) -> None:
    spread = f"[{row['p20_ms']:.4f}, {row['p80_ms']:.4f}]"
    value = f"{row['value']:9.2f} {row['metric']}" if row.get("value") is not None else ""
    ratios = "  ".join(f"{'n/a' if v is None else f'x{v:.2f}'} vs {k}" for k, v in (row.get("speedup") or {}).items())
    shape = "x".join(map(str, row["shape"]))
    print(
        f"{row['bench']:8} {row['case'] + ' ' + shape:44} {row['dtype']:10} {row['impl']:24} "
        f"{row['median_ms']:9.4f} ms {spread:20} {value:16} {ratios}",
        flush=True,
    )
