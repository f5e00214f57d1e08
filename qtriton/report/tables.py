"""The text tables of `qtriton report`: WIDTH columns by default, every method side by side with --wide."""

from __future__ import annotations

import math
import textwrap

from qtriton.report.results import CheckpointReport, MethodError, QuantizedCheckpointReport


def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    exponent = min(int(math.log(n, 1024)), 3)
    return f"{n / 1024**exponent:.1f} {('KiB', 'MiB', 'GiB')[exponent - 1]}"


WIDTH = 100  #: columns the default tables fit in; --wide lifts it


def _clip(name: str, width: int) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def _snr(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def _cell(e: MethodError) -> str:
    if e.unquantizable is not None:
        return "n/a "
    return f"{_snr(e.snr_db):>6} {e.max_error:8.2e}"


def format_table(rep: CheckpointReport | QuantizedCheckpointReport, wide: bool = False) -> str:
    """The human-readable report, WIDTH columns wide unless wide (every method, full names)."""
    if isinstance(rep, QuantizedCheckpointReport):
        return _format_quantized(rep, wide)
    return _format_wide(rep) if wide else _format_float(rep)


def _format_float(rep: CheckpointReport) -> str:
    """One row per matrix: the per-channel symmetric int8 error (what Int8Linear stores),
    whether quantize_model would replace it, bytes before -> after."""
    fixed = f" {'shape':>11} {'SNR dB':>7} {'max|err|':>8}  {'plan':<5} {'bytes before -> after':>23}"
    name_width = WIDTH - len(fixed)
    lines = [
        f"{_clip(rep.path, WIDTH - 52)}: {len(rep.tensors)} matrices, int8 error of {rep.bits}-bit per-channel",
        "symmetric weights (what Int8Linear stores); plan: what quantize_model's defaults would do",
        f"{'tensor':<{name_width}}{fixed}",
    ]
    for t in rep.tensors:
        shape = "x".join(map(str, t.shape))
        plan = "int8" if t.kept_float is None else "float"
        sizes = f"{_human_bytes(t.bytes_before)} -> {_human_bytes(t.bytes_after)}"
        if t.problem is not None:
            lines.append(f"{_clip(t.name, name_width):<{name_width}} {shape:>11} {t.problem}")
            continue
        e = t.methods["sym/channel"]
        error = f"{'n/a':>7} {'':>8}" if e.unquantizable else f"{_snr(e.snr_db):>7} {e.max_error:8.2e}"
        lines.append(f"{_clip(t.name, name_width):<{name_width}} {shape:>11} {error}  {plan:<5} {sizes:>23}")
    lines += _kept_float_lines(rep)
    lines.append(_total_line(rep))
    lines += _footnotes(rep, shown=("sym/channel",))
    return "\n".join(line if len(line) <= WIDTH else line[: WIDTH - 3] + "..." for line in lines)


def _kept_float_lines(rep: CheckpointReport) -> list[str]:
    by_reason = {}
    for t in rep.tensors:
        if t.kept_float is not None:
            by_reason.setdefault(t.kept_float, []).append(t.name)
    lines = []
    for reason, names in by_reason.items():
        line = f"kept float, {reason}: {len(names)}: {', '.join(names)}"
        lines.append(line if len(line) <= WIDTH else line[: WIDTH - 3] + "...")
    return lines


def _total_line(rep: CheckpointReport) -> str:
    ratio = rep.bytes_after / rep.bytes_before if rep.bytes_before else 1.0
    return (
        f"total: {_human_bytes(rep.bytes_before)} -> {_human_bytes(rep.bytes_after)} ({ratio:.1%}) "
        "with quantize_model's defaults + save_quantized"
    )


def _footnotes(rep: CheckpointReport, shown: tuple[str, ...] | None = None) -> list[str]:
    """Notes under a float table; n/a reasons only for the methods shown (None: all)."""
    lines = []
    if rep.skipped:
        lines.append(f"{len(rep.skipped)} entries are not 2-D float tensors (biases, norms...): in the total as stored")
    # One line per (matrix, reason): the asymmetric methods usually fail together.
    unquantizable = {}
    for t in rep.tensors:
        for m, e in t.methods.items():
            if e.unquantizable is not None and (shown is None or m in shown):
                unquantizable.setdefault((t.name, e.unquantizable), []).append(m)
    if unquantizable:
        lines.append("n/a = the method cannot quantize the matrix:")
        lines += [f"  {name} {', '.join(ms)}: {why}" for (name, why), ms in list(unquantizable.items())[:5]]
        if len(unquantizable) > 5:
            lines.append(f"  ... and {len(unquantizable) - 5} more")
    problems = [t.name for t in rep.tensors if t.problem is not None]
    if problems:
        lines.append(f"warning: {len(problems)} matrices could not be measured: {', '.join(problems[:5])}")
    return lines


def _format_wide(rep: CheckpointReport) -> str:
    """Every method side by side, for comparison; Int8Linear runs only sym/channel."""
    methods = ["sym/tensor", "asym/tensor", "sym/channel", "asym/channel"]
    if any(f"sym/g{rep.group_size}" in t.methods for t in rep.tensors):
        methods += [f"sym/g{rep.group_size}", f"asym/g{rep.group_size}"]
    name_width = max(len("tensor"), *(len(t.name) for t in rep.tensors))
    shape_width = max(len("shape"), *(len("x".join(map(str, t.shape))) for t in rep.tensors))
    cell_width = 15  # '%6.2f %8.2e'
    lines = [
        f"{rep.path}: {len(rep.tensors)} matrices, {rep.bits}-bit; each cell: SNR dB (higher is better)  max |error|",
        "Int8Linear runs sym/channel (per-channel symmetric weights); the other methods are for comparison",
        f"{'tensor':<{name_width}}  {'shape':<{shape_width}}  {'plan':<5}  "
        + "  ".join(f"{m:>{cell_width}}" for m in methods),
    ]
    for t in rep.tensors:
        plan = "int8" if t.kept_float is None else "float"
        head = f"{t.name:<{name_width}}  {'x'.join(map(str, t.shape)):<{shape_width}}  {plan:<5}  "
        if t.problem is not None:
            lines.append(head + t.problem)
            continue
        cells = [_cell(t.methods[m]) if m in t.methods else "-" for m in methods]
        lines.append(head + "  ".join(f"{c:>{cell_width}}" for c in cells))
    lines += [f"kept float: {t.name}: {t.kept_float}" for t in rep.tensors if t.kept_float is not None]
    lines.append(_total_line(rep))
    lines += _footnotes(rep)
    return "\n".join(lines)


def _format_quantized(rep: QuantizedCheckpointReport, wide: bool) -> str:
    fixed = f" {'shape':>11} {'scheme':<16} {'SNR dB':>7} {'max|err|':>10} {'bytes':>10}"
    name_width = max(len("layer"), *(len(layer.name) for layer in rep.layers)) if wide else WIDTH - len(fixed)
    against = f"against {rep.original}" if rep.original else "estimated (~) from the rounding step, no --original"
    lines = [
        f"{rep.path if wide else _clip(rep.path, WIDTH - 52)}: qtriton checkpoint, {len(rep.layers)} Int8Linear layers",
        "weights int8 per channel, symmetric; scheme: w8a8 (x int8 per token), -asym (with zero points),",
        "-static (one calibrated scale), w8a16 (x float), +smooth (SmoothQuant input_scale),",
        "+had<b> (x and W rotated by a Hadamard matrix of blocks of b: the SNR is of W rotated);",
        f"SNR / max|err| of codes * scales {against if wide else _clip(against, WIDTH - 34)}",
        f"{'layer':<{name_width}}{fixed}",
    ]
    for layer in rep.layers:
        snr = ("~" if layer.estimated else "") + _snr(layer.snr_db)
        error = ("<=" if layer.estimated else "") + f"{layer.max_error:.2e}"
        name = layer.name if wide else _clip(layer.name, name_width)
        shape = "x".join(map(str, layer.shape))
        lines.append(
            f"{name:<{name_width}} {shape:>11} {layer.scheme:<16} {snr:>7} {error:>10} {_human_bytes(layer.bytes):>10}"
        )
    int8_bytes = sum(layer.bytes for layer in rep.layers)
    float_bytes = sum(size for _, _, size in rep.float_tensors.values())
    biggest = sorted(rep.float_tensors.items(), key=lambda item: -item[1][2])[:3]
    lines.append(
        f"float tensors: {len(rep.float_tensors)}, {_human_bytes(float_bytes)}"
        + (f" (largest: {', '.join(f'{n} {_human_bytes(v[2])}' for n, v in biggest)})" if biggest else "")
    )
    if not wide and len(lines[-1]) > WIDTH:
        lines[-1] = lines[-1][: WIDTH - 3] + "..."
    total = f"stored: {_human_bytes(rep.bytes_stored)} (int8 layers {_human_bytes(int8_bytes)})"
    if rep.bytes_original is not None:
        total += f"; original {_human_bytes(rep.bytes_original)} ({rep.bytes_stored / rep.bytes_original:.1%} of it)"
    if rep.int8_flops is not None:
        lines.append(f"int8 x int8: {rep.int8_flops:.1%} of the linear layers' FLOPs (the output head aside)")
        if rep.int8_flops_note:
            note = [rep.int8_flops_note] if wide else textwrap.wrap(rep.int8_flops_note, WIDTH - 2)
            lines += [f"  {part}" for part in note]
    lines.append(total)
    lines += _smoothing_notes(rep)
    return "\n".join(lines)


def _smoothing_notes(rep: QuantizedCheckpointReport) -> list[str]:
    """What SmoothQuant did to the comparison with --original, under the quantized table."""
    if rep.original is None:
        return []
    lines = []
    folded = [layer.name for layer in rep.layers if layer.smoothing and not layer.smoothing.startswith("input_scale")]
    if folded:
        lines += [f"{len(folded)} layers carry SmoothQuant folds (weights rescaled per input channel or output row),",
                  "  recorded by the checkpoint: they cannot be compared with the original, their SNR is estimated (~)"]
    scaled = sum(1 for layer in rep.layers if layer.smoothing and layer.smoothing.startswith("input_scale"))
    if scaled:
        lines.append(f"{scaled} smoothed layers (input_scale) compared with the original weight / input_scale")
    if rep.changed_float:
        lines += [f"warning: {len(rep.changed_float)} float tensors differ from the original "
                  f"({_clip(rep.changed_float[0], 40)}{', ...' if len(rep.changed_float) > 1 else ''}):",
                  "  the checkpoint changed more than int8 rounding (SmoothQuant folded into norms by another",
                  "  writer?), so the layers they feed may not compare with the original"]
    return lines
