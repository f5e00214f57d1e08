"""`qtriton report CHECKPOINT`: how well each weight matrix of a checkpoint survives int8.

For every 2-D floating-point tensor in a state dict (.safetensors, .pt/.pth/.bin/.ckpt,
.npz) the report quantizes and dequantizes it with each method below, using the NumPy
oracle (`qtriton.reference`), and measures SNR (dB, higher is better) and max |error|:

    sym/tensor   asym/tensor    one scale (and zero point) for the whole matrix
    sym/channel  asym/channel   one per row: a row of an (out, in) weight is one output channel
    sym/g128     asym/g128      one per 128 consecutive values of a row (only if 128 divides it)

A method that cannot quantize a matrix is "n/a", with the reason, and never the best: the
asymmetric ones on data far from zero relative to its range (1e6 + N(0, 0.1): the zero point
would pass 2^24, where float32 stops holding every integer, so the oracle gives a NaN scale
and the API raises ValueError).

The best method (highest SNR) is marked; group-wise wins on accuracy but stores a scale per
128 values, so the byte totals assume what `Int8Linear` stores: per-channel codes + fp32
scales.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qtriton import reference

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
NUMPY_SUFFIXES = (".npz",)

#: Top-level keys under which training checkpoints commonly nest the model's state dict.
_NESTED_STATE_DICT_KEYS = ("state_dict", "model", "module")


@dataclass
class MethodError:
    """One method's round-trip error on one matrix; NaN numbers when unquantizable is set."""

    snr_db: float
    max_error: float
    #: Why the method cannot quantize the matrix; None when it can.
    unquantizable: str | None = None


@dataclass
class TensorReport:
    name: str
    shape: tuple[int, ...]
    dtype: str
    methods: dict[str, MethodError] = field(default_factory=dict)
    best: str | None = None
    #: Why the tensor could not be measured (e.g. NaN/Inf in it); None when measured.
    problem: str | None = None


@dataclass
class CheckpointReport:
    path: str
    bits: int
    group_size: int
    tensors: list[TensorReport]
    #: Entries that are not 2-D floating-point tensors (biases, norms, int buffers...): name -> why.
    skipped: dict[str, str]
    bytes_before: int
    bytes_after: int

    def to_dict(self) -> dict:
        """JSON-ready. Per method: snr_db and max_error (null when not finite: snr_db of an
        exact round trip is +inf, of a constant matrix with any error -inf), exact (no error at
        all) and unquantizable (null, or why the method cannot quantize the matrix: then
        snr_db and max_error are null and exact is false)."""

        def finite(v: float) -> float | None:
            return v if math.isfinite(v) else None

        def method(e: MethodError) -> dict:
            return {
                "snr_db": finite(e.snr_db),
                "max_error": finite(e.max_error),
                "exact": e.unquantizable is None and e.max_error == 0,
                "unquantizable": e.unquantizable,
            }

        return {
            "path": self.path,
            "bits": self.bits,
            "group_size": self.group_size,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "tensors": [
                {
                    "name": t.name,
                    "shape": list(t.shape),
                    "dtype": t.dtype,
                    "best": t.best,
                    "problem": t.problem,
                    "methods": {m: method(e) for m, e in t.methods.items()},
                }
                for t in self.tensors
            ],
            "skipped": self.skipped,
        }


# ------------------------------------------------------------------------------ loading
def load_checkpoint(path: str | Path) -> dict:
    """The state dict in a checkpoint file: name -> torch.Tensor or np.ndarray.

    Raises FileNotFoundError for a missing file and ValueError (naming the file) for an
    unsupported suffix, an unreadable / truncated file, or content that is not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _load_safetensors(path)
    if suffix in NUMPY_SUFFIXES:
        return _load_npz(path)
    if suffix in TORCH_SUFFIXES:
        return _load_torch(path)
    supported = ", ".join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES + NUMPY_SUFFIXES)
    raise ValueError(f"checkpoint {str(path)!r}: unsupported file type {suffix!r} (supported: {supported})")


def _unreadable(path: Path, kind: str, err: Exception) -> ValueError:
    return ValueError(
        f"checkpoint {str(path)!r} cannot be read as a {kind} file (truncated or corrupt?): "
        f"{type(err).__name__}: {err}"
    )


def _load_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        # torch, not numpy: NumPy has no bfloat16.
        return load_file(str(path))
    except SafetensorError as err:
        raise _unreadable(path, "safetensors", err) from err


def _load_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise _unreadable(path, ".npz", err) from err


def _load_torch(path: Path) -> dict:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise _unreadable(path, "PyTorch", err) from err
        raise ValueError(
            f"checkpoint {str(path)!r} holds pickled Python objects (a whole module saved with "
            "torch.save(model)?), which qtriton report does not unpickle: save model.state_dict() instead"
        ) from None
    except Exception as err:  # torch.load raises many types (OSError, KeyError, RuntimeError, UnpicklingError)
        raise _unreadable(path, "PyTorch", err) from err
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _NESTED_STATE_DICT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ValueError(
            f"checkpoint {str(path)!r} holds a {type(obj).__name__}, not a state dict "
            "(a dict of parameter names to tensors)"
        )
    return obj


# ---------------------------------------------------------------------------- measuring
def method_names(num_columns: int, group_size: int) -> list[str]:
    """The methods tried on a matrix with num_columns columns, in table order."""
    names = ["sym/tensor", "asym/tensor", "sym/channel", "asym/channel"]
    if num_columns % group_size == 0:
        names += [f"sym/g{group_size}", f"asym/g{group_size}"]
    return names


def _round_trip(w: np.ndarray, method: str, bits: int, group_size: int) -> np.ndarray:
    """Quantize then dequantize w (2-D float32) with one method, by the oracle's formulas."""
    kind, granularity = method.split("/")
    symmetric = kind == "sym"
    if granularity.startswith("g"):
        return reference.fake_quantize_groupwise(w, group_size, bits, symmetric)
    keep_axis = 0 if granularity == "channel" else None
    if symmetric:
        q, scale = reference.quantize_symmetric(w, bits, keep_axis)
        return reference.dequantize_symmetric(q, scale, keep_axis)
    q, scale, zp = reference.quantize_asymmetric(w, bits, keep_axis)
    return reference.dequantize_asymmetric(q, scale, zp, keep_axis)


_TORCH_FLOATS = ("float16", "bfloat16", "float32", "float64")


def _dtype_name(value) -> tuple[str, bool]:
    """(dtype name, whether it is a floating-point type we measure) of a tensor or array."""
    if isinstance(value, np.ndarray):
        return str(value.dtype), bool(np.issubdtype(value.dtype, np.floating))
    import torch

    if isinstance(value, torch.Tensor):
        name = str(value.dtype).removeprefix("torch.")
        return name, name in _TORCH_FLOATS
    return type(value).__name__, False


def _as_float32(value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value.astype(np.float32, copy=False)
    import torch

    return value.detach().to("cpu", torch.float32).numpy()


def _itemsize(value) -> int:
    return value.itemsize if isinstance(value, np.ndarray) else value.element_size()


#: Why the oracle gives a NaN scale for an asymmetric slice of finite data (see reference.py).
_UNREPRESENTABLE = (
    "scale / zero point not representable in float32: zero point beyond +-2^24 "
    "(values far from zero for their range) or max - min overflows"
)


def measure_tensor(name: str, w: np.ndarray, dtype: str, bits: int, group_size: int) -> TensorReport:
    """Error of every method on one 2-D float32 matrix; best among those that can quantize it."""
    result = TensorReport(name=name, shape=tuple(w.shape), dtype=dtype)
    if not np.isfinite(w).all():
        result.problem = "contains NaN or Inf: cannot be quantized"
        return result
    for method in method_names(w.shape[1], group_size):
        dequantized = _round_trip(w, method, bits, group_size)
        # w is finite, so a NaN out of the round trip is a slice whose scale the oracle set to NaN.
        if np.isnan(dequantized).any():
            result.methods[method] = MethodError(math.nan, math.nan, unquantizable=_UNREPRESENTABLE)
            continue
        err = reference.quantization_error(w, dequantized)
        result.methods[method] = MethodError(snr_db=err["snr"], max_error=err["max_error"])
    usable = [m for m, e in result.methods.items() if e.unquantizable is None]
    result.best = max(usable, key=lambda m: result.methods[m].snr_db, default=None)
    return result


def report_checkpoint(
    path: str | Path, bits: int = 8, group_size: int = 128, progress: bool = False
) -> CheckpointReport:
    """Measure every 2-D floating-point tensor of a checkpoint (see the module docstring).

    Raises ValueError if the checkpoint holds no 2-D floating-point tensor.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an int in 2..8, got {bits!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    state = load_checkpoint(path)

    matrices, skipped = [], {}
    for name, value in state.items():
        shape = tuple(getattr(value, "shape", ()))
        dtype, is_float = _dtype_name(value)
        if not is_float:
            skipped[name] = f"not a floating-point tensor ({dtype})"
        elif len(shape) != 2:
            skipped[name] = f"{len(shape)}-D, not a matrix"
        elif 0 in shape:
            skipped[name] = "empty"
        else:
            matrices.append((name, value, dtype))
    if not matrices:
        raise ValueError(
            f"checkpoint {str(path)!r} has no 2-D floating-point weights to report on "
            f"({len(state)} entries, none a float matrix)"
        )

    tensors, bytes_before, bytes_after = [], 0, 0
    for name, value, dtype in _progress(matrices, progress):
        w = _as_float32(value)
        tensors.append(measure_tensor(name, w, dtype, bits, group_size))
        rows = w.shape[0]
        bytes_before += w.size * _itemsize(value)
        bytes_after += -(-w.size * bits // 8) + rows * 4  # packed codes + one fp32 scale per row
    return CheckpointReport(str(path), bits, group_size, tensors, skipped, bytes_before, bytes_after)


def _progress(items: list, enabled: bool) -> Iterator:
    if not enabled:
        return iter(items)
    from tqdm import tqdm

    # disable=None: tqdm turns itself off when stderr is not a terminal.
    return iter(tqdm(items, desc="measuring", unit="tensor", disable=None, leave=False))


# ---------------------------------------------------------------------------- rendering
def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    exponent = min(int(math.log(n, 1024)), 3)
    return f"{n / 1024**exponent:.1f} {('KiB', 'MiB', 'GiB')[exponent - 1]}"


def _cell(e: MethodError, best: bool) -> str:
    if e.unquantizable is not None:
        return "n/a "
    snr = f"{e.snr_db:6.2f}" if math.isfinite(e.snr_db) else ("   inf" if e.snr_db > 0 else "  -inf")
    return f"{snr} {e.max_error:8.2e}{'*' if best else ' '}"


def format_table(rep: CheckpointReport) -> str:
    """The human-readable report: one row per matrix, `SNR dB  max|err|` per method."""
    methods = ["sym/tensor", "asym/tensor", "sym/channel", "asym/channel"]
    if any(f"sym/g{rep.group_size}" in t.methods for t in rep.tensors):
        methods += [f"sym/g{rep.group_size}", f"asym/g{rep.group_size}"]
    name_width = min(max(len("tensor"), *(len(t.name) for t in rep.tensors)), 60)
    shape_width = max(len("shape"), *(len("x".join(map(str, t.shape))) for t in rep.tensors))
    cell_width = 16  # '%6.2f %8.2e' and the best-method star

    def clip(name: str) -> str:
        return name if len(name) <= name_width else "..." + name[-(name_width - 3):]

    lines = [
        (
            f"{rep.path}: {len(rep.tensors)} matrices, {rep.bits}-bit; "
            "each cell: SNR dB (higher is better)  max |error|; * = best"
        ),
        f"{'tensor':<{name_width}}  {'shape':<{shape_width}}  "
        + "  ".join(f"{m:>{cell_width}}" for m in methods),
    ]
    for t in rep.tensors:
        head = f"{clip(t.name):<{name_width}}  {'x'.join(map(str, t.shape)):<{shape_width}}  "
        if t.problem is not None:
            lines.append(head + t.problem)
            continue
        cells = [
            _cell(t.methods[m], m == t.best) if m in t.methods else "-".rjust(cell_width) for m in methods
        ]
        lines.append(head + "  ".join(f"{c:>{cell_width}}" for c in cells))

    wins = {m: sum(t.best == m for t in rep.tensors) for m in methods}
    lines.append("best: " + ", ".join(f"{m} {n}" for m, n in wins.items() if n))
    ratio = rep.bytes_after / rep.bytes_before
    lines.append(
        f"total: {_human_bytes(rep.bytes_before)} -> {_human_bytes(rep.bytes_after)} "
        f"as {rep.bits}-bit per-channel codes + fp32 scales ({ratio:.1%})"
    )
    if rep.skipped:
        lines.append(f"skipped {len(rep.skipped)} entries that are not 2-D float tensors (biases, norms, ...)")
    # One line per (matrix, reason): the asymmetric methods usually fail together.
    unquantizable = {}
    for t in rep.tensors:
        for m, e in t.methods.items():
            if e.unquantizable is not None:
                unquantizable.setdefault((t.name, e.unquantizable), []).append(m)
    if unquantizable:
        lines.append("n/a = the method cannot quantize the matrix:")
        lines += [f"  {name} {', '.join(ms)}: {why}" for (name, why), ms in list(unquantizable.items())[:5]]
        if len(unquantizable) > 5:
            lines.append(f"  ... and {len(unquantizable) - 5} more")
    problems = [t.name for t in rep.tensors if t.problem is not None]
    if problems:
        lines.append(f"warning: {len(problems)} matrices could not be measured: {', '.join(problems[:5])}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `qtriton report`."""
    parser.add_argument("path", help="checkpoint: .safetensors, .pt/.pth/.bin/.ckpt state dict, or .npz")
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
    """Run `qtriton report`; 0 on success, 2 (message on stderr) for a bad checkpoint or option."""
    try:
        rep = report_checkpoint(args.path, args.bits, args.group_size, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as err:
        from qtriton.cli import one_line

        print(f"qtriton report: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2))
    else:
        print(format_table(rep))
    return 0
