"""`qtriton report` on a float checkpoint: every 2-D float tensor quantized and dequantized by the
NumPy oracle with each method, what quantize_model's defaults would do with it, and the bytes;
`report_checkpoint`, the entry for every kind of checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from qtriton import reference
from qtriton.progress import progress as bar
from qtriton.report.loading import (as_float32, dtype_name, is_compressed_folder, is_quantized_checkpoint,
                                    load_checkpoint, nbytes)
from qtriton.report.quantized import report_compressed_folder, report_quantized
from qtriton.report.results import CheckpointReport, MethodError, QuantizedCheckpointReport, TensorReport


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


#: Module names whose weight is an nn.Embedding table in common architectures (never an nn.Linear).
_EMBEDDING_NAMES = ("wte", "wpe")


def kept_float_reason(name: str, shape: tuple[int, ...], min_features: int = 16) -> str | None:
    """Why quantize_model (default options) would keep the 2-D tensor name in float, or None.

    A state dict does not say which matrices are nn.Linear weights, so this goes by name:
    `<module>.weight` is taken as a linear layer unless the module is an embedding (its name
    has "embed", or is wte / wpe) or an `lm_head`, or the matrix is smaller than min_features.
    """
    module, _, leaf = name.rpartition(".")
    last = module.rpartition(".")[2]
    if leaf != "weight":
        return "not a layer's .weight"
    if "embed" in module.lower() or last in _EMBEDDING_NAMES:
        return "embedding"
    if last == "lm_head":
        return "output head (keep_output_head)"
    if min(shape) < min_features:
        return f"under min_features={min_features}"
    return None


def report_checkpoint(
    path: str | Path,
    bits: int = 8,
    group_size: int = 128,
    progress: bool = False,
    original: str | Path | None = None,
) -> CheckpointReport | QuantizedCheckpointReport:
    """Report on a checkpoint (see the module docstring): a QuantizedCheckpointReport for a
    file written by save_quantized (original: the float checkpoint it came from, to measure
    the int8 weights against), else a CheckpointReport measuring every 2-D float tensor.

    Raises ValueError if a float checkpoint holds no 2-D floating-point tensor.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an int in 2..8, got {bits!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if is_quantized_checkpoint(path):
        return report_quantized(path, original, progress)
    state = load_checkpoint(path)
    if is_compressed_folder(path):
        return report_compressed_folder(path, state, original, progress)
    if original is not None:
        raise ValueError(f"original is for quantized checkpoints (save_quantized files, save_pretrained folders); "
                         f"{str(path)!r} is not one")
    matrices, skipped = [], {}
    for name, value in state.items():
        shape = tuple(getattr(value, "shape", ()))
        dtype, is_float = dtype_name(value)
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

    tensors = []
    int8_biases = set()
    for name, value, dtype in bar(matrices, desc="measuring", unit="tensor", enabled=None if progress else False):
        w = as_float32(value)
        report = measure_tensor(name, w, dtype, bits, group_size)
        report.bytes_before = report.bytes_after = nbytes(value)
        report.kept_float = kept_float_reason(name, report.shape)
        if report.kept_float is None and report.problem is not None:
            report.kept_float = "NaN/Inf: quantize_model refuses it"
        if report.kept_float is None:
            rows = w.shape[0]
            report.bytes_after = -(-w.size * bits // 8) + rows * 4  # codes + one fp32 scale per row
            bias = name.removesuffix("weight") + "bias"
            if getattr(state.get(bias), "shape", None) is not None and tuple(state[bias].shape) == (rows,):
                int8_biases.add(bias)  # Int8Linear stores its bias as fp32
        tensors.append(report)
    bytes_before = sum(nbytes(v) for v in state.values() if hasattr(v, "shape"))
    bytes_after = sum(t.bytes_after for t in tensors)
    for name, value in state.items():
        if name in int8_biases:
            bytes_after += value.shape[0] * 4
        elif name in skipped and hasattr(value, "shape"):
            bytes_after += nbytes(value)
    return CheckpointReport(str(path), bits, group_size, tensors, skipped, bytes_before, bytes_after)
