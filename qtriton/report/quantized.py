"""`qtriton report` on a quantized checkpoint (a save_quantized file or a compressed-tensors folder):
per int8 layer its scheme, the SNR of codes * scales against the original float weights (or
estimated from the rounding step), SmoothQuant's part in the comparison, and the bytes."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from qtriton import reference
from qtriton.progress import progress as bar
from qtriton.report.loading import (
    as_float32,
    dtype_name,
    is_compressed_folder,
    is_quantized_checkpoint,
    load_checkpoint,
    load_safetensors,
    nbytes,
)
from qtriton.report.results import LayerReport, QuantizedCheckpointReport


def _key(layer: str, tensor: str) -> str:
    """The state-dict key of a layer's tensor; a bare layer (name "") has plain keys."""
    return f"{layer}.{tensor}" if layer else tensor


def _original_key(names: list[str], state: dict) -> str | None:
    """The key of a layer's float weight in the original state dict: its own name, or failing
    that the longest dotted suffix of it (a wrapped model, e.g. SentenceTransformer's
    `0.auto_model.encoder...`, saved from the plain checkpoint's `encoder...`)."""
    for name in names:
        parts = name.split(".") if name else []
        for start in range(len(parts) + 1):
            key = _key(".".join(parts[start:]), "weight")
            if key in state:
                return key
    return None


def report_quantized(
    path: str | Path, original: str | Path | None = None, progress: bool = False
) -> QuantizedCheckpointReport:
    """Per Int8Linear of a save_quantized file: scheme, SNR of codes * scales (against the
    original float weights when given, else estimated from the rounding step), bytes."""
    from qtriton.formats.serialization import check_layer_tensors, read_header

    header = read_header(path)
    check_layer_tensors(path, header)  # dtypes, shapes and scales as Int8Linear holds them
    stored = load_safetensors(Path(path))
    aliases = {names[0]: names for names in header["shared"]}
    in_a_group = {name for names in header["shared"] for name in names}
    entries = [(n, spec) for n, spec in header["layers"].items() if n not in in_a_group or n in aliases]
    layers = []
    for name, spec in entries:
        names = aliases.get(name, [name])
        # safetensors stores a shared layer's tensors under one of its names (checked above).
        holder = next(n for n in names if _key(n, "weight") in stored)
        parts = [slot.name for slot in spec["scheme"].tensors(spec["in_features"], spec["out_features"], spec["bias"])]
        layers.append((name, names, holder, spec["scheme"], parts))
    floats, note = None, None
    if "float_linears" in header:
        floats = {name: tuple(shape) for name, shape in header["float_linears"].items()}
    else:
        note = "over the int8 layers only: this file does not record its float nn.Linear layers (an upper bound)"
    return _report_layers(path, stored, layers, original, progress, header["smoothing_folds"], (floats, note))


def report_compressed_folder(
    path: str | Path, stored: dict, original: str | Path | None = None, progress: bool = False
) -> QuantizedCheckpointReport:
    """Per quantized layer of a compressed-tensors folder (qtriton.save_pretrained's, or
    another writer's): what report_quantized says of a save_quantized file."""
    from qtriton import checks
    from qtriton.formats.hf import check_layer_tensors, scheme_for_name, unpacked_state

    quant = checks.json_object(Path(path) / "config.json")["quantization_config"]
    stored = unpacked_state(stored, where=f"{str(path)!r}: ")  # pack-quantized (W8A16) layers as int8 weights
    layers = []
    for key, tensor in stored.items():  # in numeric order (see load_safetensors)
        name = key.removesuffix(".weight")
        if key.endswith(".weight") and f"{name}.weight_scale" in stored:
            scheme = scheme_for_name(quant, name, where=f"{str(path)!r}: ")
            parts = {k.removeprefix(f"{name}."): v for k, v in stored.items()
                     if k.startswith(f"{name}.") and "." not in k.removeprefix(f"{name}.")}
            check_layer_tensors(name, parts, tensor.shape[1], tensor.shape[0], scheme, where=f"{str(path)!r}: ")
            layers.append((name, [name], name, scheme, list(parts)))
    if not layers:
        raise ValueError(f"{str(path)!r}: its config says compressed-tensors, but it stores no int8 layer")
    folds = checks.smoothing_folds(quant.get(checks.SMOOTHING_RECORD), repr(str(Path(path) / "config.json")))
    return _report_layers(path, stored, layers, original, progress, folds, _ignored_linears(quant, stored, layers))


def _ignored_linears(quant: dict, stored: dict, layers: list) -> tuple[dict, str | None]:
    """({name: (out, in)} of the float linear layers config.json's `ignore` lists, their
    weights' shapes as stored; a note, or None) for the int8 FLOP fraction. compressed-tensors'
    ignore names layers, "re:" regexes of names, or classes: a name that is no stored weight's
    layer nor an output head (a class, which needs the model) leaves the fraction over what is
    known, and the note says so."""
    from qtriton.accuracy.planning import linear_flops_of

    int8 = {name for name, *_ in layers}
    candidates = {key.removesuffix(".weight"): tuple(value.shape) for key, value in stored.items()
                  if key.endswith(".weight") and value.ndim == 2 and value.is_floating_point()
                  and key.removesuffix(".weight") not in int8}
    floats, unresolved = {}, []
    for entry in quant.get("ignore") or []:
        if entry.startswith("re:"):
            floats.update({n: s for n, s in candidates.items() if re.match(entry[3:], n)})
        elif entry in candidates:
            floats[entry] = candidates[entry]
        elif linear_flops_of({entry: (1, 1)}):  # not an output head, not stored: a class name?
            unresolved.append(entry)
    note = None
    if unresolved:
        note = (f"over the layers known: `ignore` entries {unresolved} name no stored weight "
                "(class names need the model)")
    return floats, note


def _smoothing(name: str, folds: dict[str, str]) -> str | None:
    """How a recorded SmoothQuant fold changed layer name's weight, or None."""
    parts = []
    if name in folds:
        parts.append(f"columns times s (1/s folded into {folds[name]})")
    parts += [f"rows divided by {consumer}'s s" for consumer, holder in folds.items() if holder == name]
    return "; ".join(parts) or None


def _report_layers(path, stored: dict, layers: list, original, progress: bool,
                   folds: dict[str, str], float_linears: tuple) -> QuantizedCheckpointReport:
    """The report on stored's quantized layers, each (name, all its names, the name its
    tensors are stored under, QuantScheme, the names of its tensors), in the order given.
    float_linears: ({name: (out, in)} of the linear layers left float, or None where the
    checkpoint does not say; a note on the int8 FLOP fraction, or None).
    folds: the checkpoint's record of SmoothQuant folds ({layer: the module that took its 1/s}): the weights those
    rescaled are not compared with the original's (their SNR is estimated), a layer's own
    input_scale is (against original / input_scale, the weight it quantized)."""
    import torch

    if original is not None and (is_quantized_checkpoint(original) or is_compressed_folder(original)):
        raise ValueError(f"original {str(original)!r} is itself a quantized checkpoint: pass the float one")
    reference_state = load_checkpoint(original) if original is not None else None
    measured, used = [], set()
    layers = bar(layers, desc="measuring", unit="layer", enabled=None if progress else False)
    for name, names, holder, scheme, parts in layers:
        codes, scale = stored[_key(holder, "weight")], stored[_key(holder, "weight_scale")].reshape(-1)
        keys = [_key(holder, part) for part in parts]
        used.update(keys)
        weights = (codes.to(torch.float32) * scale.to(torch.float32)[:, None]).numpy()  # what the GEMM multiplies by
        size = sum(stored[k].numel() * stored[k].element_size() for k in keys)
        float_weights = None
        smoothing = _smoothing(name, folds)
        input_scale = stored.get(_key(holder, "input_scale")) if "input_scale" in parts else None
        if input_scale is not None:
            smoothing = "input_scale: W / input_scale quantized"
        if reference_state is not None:
            key = _original_key(names, reference_state)
            if key is None or tuple(reference_state[key].shape) != tuple(codes.shape):
                raise ValueError(
                    f"original {str(original)!r} has no {tuple(codes.shape)} weight for layer {name!r} of {str(path)!r}"
                )
            if smoothing is None or input_scale is not None:  # a fold rescaled the others: estimated below
                float_weights = as_float32(reference_state[key])
            if input_scale is not None:  # the weight from_float quantized
                float_weights = float_weights / input_scale.to(torch.float32).numpy()
            block = scheme.for_layer(codes.shape[1]).hadamard
            if block and float_weights is not None:  # stored rotated: W R, as Hadamard.build makes it
                float_weights = reference.hadamard_rotate(float_weights.astype(np.float64), block).astype(np.float32)
        if float_weights is not None:
            err = reference.quantization_error(float_weights, weights)
            snr, max_error, estimated = err["snr"], err["max_error"], False
        else:
            # Rounding to the nearest code leaves an error uniform over +-scale/2: variance scale^2 / 12.
            signal = float(np.sum(weights.astype(np.float64) ** 2))
            noise = float(np.sum(scale.double().numpy() ** 2)) * codes.shape[1] / 12
            snr = 10 * math.log10(signal / noise) if signal > 0 else -math.inf
            max_error, estimated = float(scale.max()) / 2, True
        measured.append(LayerReport(name or "(bare layer)", tuple(codes.shape), scheme.name, snr, max_error, estimated,
                                    size, smoothing))

    float_tensors = {
        k: (tuple(v.shape), str(v.dtype).removeprefix("torch."), v.numel() * v.element_size())
        for k, v in stored.items()
        if k not in used
    }
    changed = []
    if reference_state is not None:
        # A recorded fold explains its norm's (or kept-float layer's) change; anything else is news.
        for key in float_tensors:
            value, before = stored[key], reference_state.get(key)
            if (key.rpartition(".")[0] in folds.values() or before is None or not value.is_floating_point()
                    or tuple(getattr(before, "shape", ())) != tuple(value.shape) or not dtype_name(before)[1]):
                continue
            now, then = as_float32(value), as_float32(before)
            if not np.allclose(now, then, rtol=1e-2, atol=1e-6 * float(np.abs(then).max(initial=0.0)), equal_nan=True):
                changed.append(key)
    bytes_stored = sum(v.numel() * v.element_size() for v in stored.values())
    bytes_original = None
    if reference_state is not None:
        bytes_original = sum(nbytes(v) for v in reference_state.values() if hasattr(v, "shape"))
    return QuantizedCheckpointReport(
        str(path), None if original is None else str(original), measured, float_tensors, bytes_stored, bytes_original,
        changed, *_int8_flops(stored, layers, *float_linears),
    )


def _int8_flops(stored: dict, layers: list, floats: dict | None, note: str | None) -> tuple[float, str | None]:
    """(the share of the linear FLOPs, the output head aside, in layers that run int8 x int8,
    as planning.int8_fraction counts it; its note): the int8 layers' (out, in) from their codes."""
    from qtriton.accuracy.planning import int8_fraction, linear_flops_of

    shapes = {name: tuple(stored[_key(holder, "weight")].shape) for name, _, holder, _, _ in layers}
    shapes.update(floats or {})
    return int8_fraction({name: scheme for name, _, _, scheme, _ in layers}, linear_flops_of(shapes)), note
