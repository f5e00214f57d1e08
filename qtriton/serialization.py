"""Save and load quantized models as safetensors: int8 weights, fp32 scales and biases, and
every other tensor of the model as it is, plus a JSON header naming the `Int8Linear` layers.

    save_quantized(model, "model.int8.safetensors")      # after quantize_model(model)
    load_quantized(float_skeleton, "model.int8.safetensors")

Loading swaps `Int8Linear` layers into the skeleton (a freshly built float model of the same
architecture) and copies the stored codes and scales in: nothing is re-quantized, so the
reloaded model computes bit for bit what the saved one did.

The header (metadata key "qtriton") is JSON:

    {"format": "qtriton.int8-linear", "version": 1,
     "layers": {name: {"in_features", "out_features", "bias", "symmetric_activations"
                       [, "weight_only", "input_scale", "static_activations": true]}},
     "shared": [[name, name, ...], ...]}

"layers" has every qualified name at which an Int8Linear sits, so a layer reachable under
several names (`m.b = m.a`) is listed under each; "shared" groups the names that are one
layer (absent or empty: none are). safetensors stores a shared layer's tensors once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from qtriton.nn import Int8Linear

METADATA_KEY = "qtriton"
FORMAT = "qtriton.int8-linear"
FORMAT_VERSION = 1


def save_quantized(model: nn.Module, path: str | os.PathLike) -> None:
    """Write model's state dict (Int8Linear buffers included) and a header to path.

    Tensors shared between modules (tied embeddings, a layer in several slots) are stored
    once. Raises ValueError if the model holds no Int8Linear layer (quantize it first with `qtriton.quantize_model`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers, names_of = {}, {}
    # remove_duplicate=False: a layer in several slots is recorded under every name.
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, Int8Linear):
            layers[name] = {
                "in_features": module.in_features,
                "out_features": module.out_features,
                "bias": module.bias is not None,
                "symmetric_activations": module.symmetric_activations,
                **_mode_flags(module),
            }
            names_of.setdefault(id(module), []).append(name)
    if not layers:
        raise ValueError("model has no Int8Linear layers: quantize it with qtriton.quantize_model before saving")
    shared = [names for names in names_of.values() if len(names) > 1]
    header = {"format": FORMAT, "version": FORMAT_VERSION, "layers": layers, "shared": shared}
    save_model(model, str(path), metadata={"format": "pt", METADATA_KEY: json.dumps(header)})


def read_header(path: str | os.PathLike) -> dict:
    """The qtriton header of a file written by save_quantized.

    Raises FileNotFoundError, or ValueError naming the file if it is not a readable
    safetensors file (e.g. truncated) or was not written by save_quantized.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"quantized checkpoint {str(path)!r} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except SafetensorError as err:
        raise ValueError(f"{str(path)!r} is not a readable safetensors file (truncated or corrupt?): {err}") from err
    if METADATA_KEY not in metadata:
        raise ValueError(f"{str(path)!r} has no {METADATA_KEY!r} header: it was not written by qtriton.save_quantized")
    try:
        header = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r}: its {METADATA_KEY!r} header is not valid JSON: {err}") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("layers"), dict):
        raise ValueError(f"{str(path)!r}: its {METADATA_KEY!r} header is not a {FORMAT} header")
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(f"{str(path)!r}: format version {header.get('version')!r}, this qtriton reads {FORMAT_VERSION}")
    header.setdefault("shared", [])  # files without shared layers may omit it
    shared = header["shared"]
    groups_ok = isinstance(shared, list) and all(
        isinstance(names, list) and len(names) > 1 and all(isinstance(name, str) for name in names) for names in shared
    )
    grouped = [name for names in shared for name in names] if groups_ok else []
    if not groups_ok or len(set(grouped)) != len(grouped) or not set(grouped) <= header["layers"].keys():
        raise ValueError(f"{str(path)!r}: its {METADATA_KEY!r} header has a malformed 'shared' entry: {shared!r}")
    return header


def load_quantized(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Swap the Int8Linear layers recorded in path into model and load every tensor; returns model.

    model is a float skeleton of the saved architecture (its nn.Linear layers at the recorded
    names, with matching shapes) or a model already quantized the same way. Slots that hold
    one skeleton module get one Int8Linear, so a layer shared in the saved model is shared
    again; the skeleton must share exactly the layers the file says are shared. All names and
    shapes are checked before anything is swapped; the error (ValueError, or TypeError for a
    module that is not a linear layer) names the first mismatch. A mismatch found only while
    loading tensors undoes the swaps, but float tensors may then be partly loaded.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    header = read_header(path)
    # The names under which the file holds each layer, and those under which the skeleton
    # holds each module: a layer shared in the file must be one module in the skeleton.
    saved_names = {name: {name} for name in header["layers"]}
    for names in header["shared"]:
        saved_names.update((name, set(names)) for name in names)
    skeleton_names = {}
    for name, module in model.named_modules(remove_duplicate=False):
        skeleton_names.setdefault(id(module), set()).add(name)

    new_layers = {}  # id(skeleton module) -> the one Int8Linear for every slot holding it
    swaps = []
    for name, spec in header["layers"].items():
        try:
            current = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{str(path)!r} holds quantized layer {name!r}, which the model does not have") from None
        if not isinstance(current, (Int8Linear, nn.Linear)):
            raise TypeError(f"model.{name} is a {type(current).__name__}, but {str(path)!r} stores an Int8Linear there")
        found = (current.in_features, current.out_features, current.bias is not None)
        expected = (spec["in_features"], spec["out_features"], spec["bias"])
        if found != expected:
            raise ValueError(
                f"model.{name} has (in_features, out_features, bias) = {found}, {str(path)!r} stores {expected}"
            )
        if extra := sorted(skeleton_names[id(current)] - saved_names[name]):
            raise ValueError(
                f"model.{name} is also model.{extra[0]}, but {str(path)!r} does not store them as one layer"
            )
        if missing := sorted(saved_names[name] - skeleton_names[id(current)]):
            raise ValueError(
                f"{str(path)!r} stores one layer at {name} and {missing[0]}, but the model has different modules there"
            )
        if id(current) not in new_layers:
            new_layers[id(current)] = Int8Linear(
                *expected,
                symmetric_activations=spec["symmetric_activations"],
                device=current.weight.device,
                **{flag: bool(spec.get(flag, False)) for flag in _MODE_FLAGS},
            )
        swaps.append((name, new_layers[id(current)]))

    originals = [(name, _swap(model, name, layer)) for name, layer in swaps]
    try:
        # Shared tensors (one layer in several slots) are stored once; load_model maps them back.
        load_model(model, str(path), strict=True)
    except RuntimeError as err:  # load_state_dict's missing / unexpected / mis-shaped keys
        for name, original in reversed(originals):
            _swap(model, name, original)
        raise ValueError(f"{str(path)!r} does not fit the model: {err}") from err
    return model


# Int8Linear's optional modes (qtriton.calibration); absent in a header: off.
_MODE_FLAGS = ("weight_only", "input_scale", "static_activations")


def _mode_flags(module: Int8Linear) -> dict:
    flags = {
        "weight_only": module.weight_only,
        "input_scale": module.input_scale is not None,
        "static_activations": module.activation_scale is not None,
    }
    return {name: value for name, value in flags.items() if value}


def _swap(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put module at the qualified name; returns the module it replaces."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    previous = getattr(parent, attr)
    setattr(parent, attr, module)
    return previous

