"""Save and load quantized models as safetensors: int8 weights, fp32 scales and biases, and
every other tensor of the model as it is, plus a JSON header naming the `Int8Linear` layers.

    save_quantized(model, "model.int8.safetensors")      # after quantize_model(model)
    load_quantized(float_skeleton, "model.int8.safetensors")

Loading swaps `Int8Linear` layers into the skeleton (a freshly built float model of the same
architecture) and copies the stored codes and scales in: nothing is re-quantized, so the
reloaded model computes bit for bit what the saved one did.

The header (metadata key "qtriton") is JSON:

    {"format": "qtriton.int8-linear", "version": 2,
     "layers": {name: {"in_features", "out_features", "bias", "scheme": QuantScheme.to_dict()}},
     "shared": [[name, name, ...], ...],
     "smoothing_folds": {name: the module that took its SmoothQuant 1/s},   (if any; see Int8Linear)
     "float_linears": {name: [out_features, in_features]}}   (the nn.Linear layers left float)

"float_linears" (optional; readers before it ignore it) is what compressed-tensors' `ignore`
says of a folder: with "layers" it gives `qtriton report` the share of the linear FLOPs that
run int8 x int8 (planning.int8_fraction). Loading does not use it.

Version 1 files (a "symmetric_activations" bool and optional "weight_only", "input_scale",
"static_activations" flags instead of "scheme") keep loading: read_header turns their flags
into the scheme they mean, as the code that wrote them computed it: a weight_only layer is
W8A16 whatever its symmetric_activations said (its activations were never quantized). A
version 1 file with static_activations is refused: version 1 was written by code that
clamped static activation codes to [-127, 127] and, later, by code that clamped them to
[-128, 127], as this one does; the header does not say which, so inputs past the calibrated
range could compute differently from what was saved.

"layers" has every qualified name at which an Int8Linear sits, so a layer reachable under
several names (`m.b = m.a`) is listed under each; "shared" groups the names that are one
layer (absent or empty: none are). safetensors stores a shared layer's tensors once. A bare
`Int8Linear` saved on its own is the layer named "" (tensors `weight`, `weight_scale`, `bias`).

Loading checks the file before touching the model: the header's types (a valid
scheme, features positive ints), and each layer's tensors: `weight` int8 (out, in),
`weight_scale` (and `input_scale`, `activation_scale`) float32 positive, finite and normal
(checks' scale rule: a 0 or denormal scale is refused), `bias` float32 (out,) finite.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import _remove_duplicate_names, load_model, save_file
from torch import nn

from qtriton import checks
from qtriton.model.nn import Int8Linear, apply_smoothing_folds, smoothing_folds
from qtriton.model.scheme import QuantScheme

METADATA_KEY = "qtriton"
FORMAT = "qtriton.int8-linear"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)


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
                "scheme": module.scheme.to_dict(),
            }
            names_of.setdefault(id(module), []).append(name)
    if not layers:
        raise ValueError("model has no Int8Linear layers: quantize it with qtriton.quantize_model before saving")
    shared = [names for names in names_of.values() if len(names) > 1]
    header = {"format": FORMAT, "version": FORMAT_VERSION, "layers": layers, "shared": shared}
    if folds := smoothing_folds(model):
        header["smoothing_folds"] = folds
    header["float_linears"] = {name: [module.out_features, module.in_features]
                               for name, module in model.named_modules()
                               if isinstance(module, nn.Linear) and name}
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot save to {str(path)!r}: directory {str(path.parent)!r} does not exist")
    state, aliases = _state_to_save(model, layers)
    # The checks load_quantized makes, with its messages, before a byte is written.
    check_layer_tensors(path, _parse_header(path, header), _StateDict(state))
    try:
        save_file(state, str(path), metadata={"format": "pt", METADATA_KEY: json.dumps(header), **aliases})
    except SafetensorError as err:
        # safetensors writes a temporary file beside path first and names it, not path, in its error.
        reason = re.sub(r'\s*at path "[^"]*"', "", str(err))
        raise OSError(f"cannot write {str(path)!r}: {reason}") from None


def _state_to_save(model: nn.Module, layers: dict) -> tuple[dict, dict]:
    """(state dict, {dropped name: kept name}) as safetensors' save_model makes them (a
    tensor shared by several names stored once), with the Int8Linear layers' float buffers in
    float32, the dtype forward computes them in: a model moved with `.to(torch.bfloat16)`
    saves what it computes, in the format load_quantized reads."""
    state = model.state_dict()
    aliases = {}
    for kept, dropped in _remove_duplicate_names(state).items():
        for name in dropped:
            aliases[name] = kept
            del state[name]
    float32 = {f"{name}.{slot.name}".lstrip(".") for name, spec in layers.items() for slot in _slots(spec)
               if slot.dtype == torch.float32}
    for key, tensor in state.items():
        if key in float32:  # an Int8Linear's float buffers: float32 in the file, whatever the module's dtype
            state[key] = tensor.to(torch.float32)
    return {key: tensor.contiguous() for key, tensor in state.items()}, aliases


def _slots(spec: dict) -> list:
    """The tensors of a header's layer entry (its scheme a QuantScheme or its dict)."""
    scheme = spec["scheme"] if isinstance(spec["scheme"], QuantScheme) else QuantScheme.from_dict(spec["scheme"])
    return scheme.tensors(spec["in_features"], spec["out_features"], spec["bias"])


class _StateDict:
    """A state dict read like safetensors' safe_open, so save and load check alike."""

    NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int8: "I8", torch.uint8: "U8", torch.int16: "I16", torch.int32: "I32", torch.int64: "I64",
              torch.bool: "BOOL"}

    def __init__(self, state: dict):
        self.state = state

    def keys(self):
        return self.state.keys()

    def get_tensor(self, key: str):
        return self.state[key]

    def get_slice(self, key: str):
        return self

    def dtype_and_shape(self, key: str) -> tuple[str, list[int]]:
        tensor = self.state[key]
        return self.NAMES.get(tensor.dtype, str(tensor.dtype)), list(tensor.shape)


def _dtype_and_shape(f, key: str) -> tuple[str, list[int]]:
    if isinstance(f, _StateDict):
        return f.dtype_and_shape(key)
    found = f.get_slice(key)
    return found.get_dtype(), list(found.get_shape())


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
        raise checks.unreadable_safetensors(path, err) from err
    if METADATA_KEY not in metadata:
        raise ValueError(f"{str(path)!r} has no {METADATA_KEY!r} header: it was not written by qtriton.save_quantized")
    try:
        header = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r}: its {METADATA_KEY!r} header is not valid JSON: {err}") from err
    return _parse_header(path, header)


def _parse_header(path: Path, header) -> dict:
    """header checked (ValueError naming the file and entry), each layer's scheme a QuantScheme."""
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("layers"), dict):
        raise ValueError(f"{str(path)!r}: its {METADATA_KEY!r} header is not a {FORMAT} header")
    header = json.loads(json.dumps(header))  # a copy: the caller's stays JSON
    if header.get("version") not in READ_VERSIONS:
        raise ValueError(f"{str(path)!r}: format version {header.get('version')!r}, this qtriton reads {READ_VERSIONS}")
    for name, spec in header["layers"].items():
        _check_layer_spec(path, name, spec, header["version"])
    if "" in header["layers"] and len(header["layers"]) > 1:
        raise ValueError(f"{str(path)!r}: its header has a bare layer (name '') beside other layers")
    header.setdefault("shared", [])  # files without shared layers may omit it
    shared = header["shared"]
    groups_ok = isinstance(shared, list) and all(
        isinstance(names, list) and len(names) > 1 and all(isinstance(name, str) for name in names) for names in shared
    )
    grouped = [name for names in shared for name in names] if groups_ok else []
    if not groups_ok or len(set(grouped)) != len(grouped) or not set(grouped) <= header["layers"].keys():
        raise ValueError(f"{str(path)!r}: its {METADATA_KEY!r} header has a malformed 'shared' entry: {shared!r}")
    for names in shared:
        if any(header["layers"][name] != header["layers"][names[0]] for name in names):
            raise ValueError(f"{str(path)!r}: the shared layers {names} have different entries in its header")
    folds = header.setdefault("smoothing_folds", {})
    if not isinstance(folds, dict) or not set(folds) <= header["layers"].keys():
        raise ValueError(f"{str(path)!r}: its {METADATA_KEY!r} header has a malformed 'smoothing_folds' entry: "
                         f"{folds!r} (an object of its layers' names)")
    checks.smoothing_folds(folds, repr(str(path)))
    floats = header.get("float_linears", {})
    if not isinstance(floats, dict) or not all(
            isinstance(shape, list) and len(shape) == 2 and all(type(n) is int and n > 0 for n in shape)
            for shape in floats.values()):
        raise ValueError(f"{str(path)!r}: its {METADATA_KEY!r} header has a malformed 'float_linears' entry: "
                         f"{floats!r} (an object of layer name -> [out_features, in_features])")
    return header


#: The keys of a layer entry in the header and the JSON type each must have.
_SPEC_KEYS = {"in_features": int, "out_features": int, "bias": bool, "scheme": dict}
#: Version 1: a bool instead of the scheme, and optional flags (absent means off).
_V1_KEYS = {"in_features": int, "out_features": int, "bias": bool, "symmetric_activations": bool}
_V1_FLAGS = ("weight_only", "input_scale", "static_activations")


def _check_layer_spec(path: Path, name: str, spec, version: int) -> None:
    """ValueError naming the file and layer unless spec is a well-typed layer entry; its
    "scheme" becomes a QuantScheme (made from a version 1 entry's flags)."""
    where = f"{str(path)!r}: layer {name!r} in its {METADATA_KEY!r} header"
    keys = _SPEC_KEYS if version >= 2 else _V1_KEYS
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be an object with keys {sorted(keys)}, got {spec!r}")
    if missing := sorted(keys.keys() - spec.keys()):
        raise ValueError(f"{where} lacks {missing}")
    for key, kind in keys.items():
        value = spec[key]
        if kind is bool and not isinstance(value, bool):
            raise ValueError(f"{where}: {key} must be true or false, got {value!r}")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")
    try:
        if version >= 2:
            spec["scheme"] = QuantScheme.from_dict(spec["scheme"])
            return
        for key in _V1_FLAGS:
            if not isinstance(spec.get(key, False), bool):
                raise ValueError(f"{key} must be true or false, got {spec[key]!r}")
        if spec.get("weight_only") and spec.get("static_activations"):
            raise ValueError("weight_only keeps activations float: it cannot have static_activations")
        if spec.get("static_activations"):
            raise ValueError(
                "version 1 static activations are not loaded: qtriton wrote version 1 files first with static codes "
                "clamped to [-127, 127], then to [-128, 127] (as now), and the header does not say which, so the "
                "layer might not compute what was saved; quantize the float model again (calibrate(..., static=True)) "
                "and save it"
            )
        weight_only = spec.get("weight_only", False)
        spec["scheme"] = QuantScheme(activations="none" if weight_only else "dynamic",
                                     # W8A16 never quantized its input: the flag changed nothing
                                     activation_symmetric=weight_only or spec["symmetric_activations"],
                                     smoothed=spec.get("input_scale", False))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def check_layer_tensors(path: str | os.PathLike, header: dict, source: _StateDict | None = None) -> None:
    """ValueError naming the file and tensor unless every layer's tensors have the dtype and
    shape Int8Linear holds and sane values (the state dict loader would cast a float32 weight
    to int8, or take an int32 scale, without a word): scales positive, finite and normal
    float32 (a denormal's reciprocal overflows), biases finite. source: the state dict about
    to be saved to path, checked alike; default: the file at path."""
    stored_once = {names[0]: names for names in header["shared"]}
    in_a_group = {name for names in header["shared"] for name in names}
    with safe_open(str(path), framework="pt") if source is None else contextlib.nullcontext(source) as f:
        keys = set(f.keys())
        for name, spec in header["layers"].items():
            if name in in_a_group and name not in stored_once:
                continue  # checked with the first name of its group
            prefixes = [f"{n}." if n else "" for n in stored_once.get(name, [name])]
            # safetensors stores a shared tensor under one of the names it has.
            prefix = next((p for p in prefixes if f"{p}weight" in keys), None)
            if prefix is None:
                raise ValueError(f"{str(path)!r} has no tensor {prefixes[0]}weight for its layer {name!r}")
            out_features, in_features = spec["out_features"], spec["in_features"]
            slots = _slots(spec)
            for slot in slots:
                key = prefix + slot.name
                if key not in keys:
                    raise ValueError(f"{str(path)!r} has no tensor {key!r} for its layer {name!r}")
                found = _dtype_and_shape(f, key)
                expected = (_StateDict.NAMES[slot.dtype], list(slot.shape))
                if found != expected:
                    raise ValueError(
                        f"{str(path)!r}: {key} is {found[0]} {found[1]}, "
                        f"an Int8Linear({in_features}, {out_features}) holds {expected[0]} {expected[1]}"
                    )
            for slot in slots:  # the values the layer computes with
                if slot.role == "scale":
                    checks.scale_values(f.get_tensor(prefix + slot.name), f"{str(path)!r}: {prefix}{slot.name}")
                elif slot.role == "bias":
                    checks.finite_tensor(f.get_tensor(prefix + slot.name), f"{prefix}{slot.name}",
                                         where=f"{str(path)!r}: ")


def _check_other_tensors(path: Path, model: nn.Module) -> None:
    """ValueError naming the tensor when the file stores a float tensor of the model (a norm,
    an embedding) as integers or the reverse: load_state_dict would cast it without a word."""
    expected = model.state_dict()
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            target = expected.get(key)
            if target is None:
                continue  # load_model names unexpected keys
            dtype = f.get_slice(key).get_dtype()
            if dtype.startswith(("F", "BF")) != target.is_floating_point():
                raise ValueError(
                    f"{str(path)!r}: {key} is {dtype}, the model's is {str(target.dtype).removeprefix('torch.')}"
                )


def load_quantized(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Swap the Int8Linear layers recorded in path into model and load every tensor; returns model.

    model is a float skeleton of the saved architecture (its nn.Linear layers at the recorded
    names, with matching shapes) or a model already quantized the same way. Slots that hold
    one skeleton module get one Int8Linear, so a layer shared in the saved model is shared
    again; the skeleton must share exactly the layers the file says are shared. All names and
    shapes are checked before anything is swapped; the error (ValueError, or TypeError for a
    module that is not a linear layer) names the first mismatch. A mismatch found only while
    loading tensors undoes the swaps, but float tensors may then be partly loaded.

    The file is checked first (header types, each layer's tensor dtypes, shapes and scales:
    ValueError naming the tensor). A file holding a bare Int8Linear (saved on its own) needs
    an nn.Linear or Int8Linear skeleton and returns a new Int8Linear rather than model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    header = read_header(path)
    check_layer_tensors(path, header)
    if "" in header["layers"]:
        return _load_bare_layer(model, path, header["layers"][""])
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
            new_layers[id(current)] = Int8Linear(*expected, scheme=spec["scheme"], device=current.weight.device)
        swaps.append((name, new_layers[id(current)]))

    originals = [(name, _swap(model, name, layer)) for name, layer in swaps]
    try:
        _check_other_tensors(Path(path), model)
        # Shared tensors (one layer in several slots) are stored once; load_model maps them back.
        load_model(model, str(path), strict=True)
        apply_smoothing_folds(model, header["smoothing_folds"], repr(str(path)))
    except (RuntimeError, ValueError) as err:  # a mistyped tensor; load_state_dict's missing / unexpected / mis-shaped keys
        for name, original in reversed(originals):
            _swap(model, name, original)
        if isinstance(err, ValueError):
            raise
        raise ValueError(f"{str(path)!r} does not fit the model: {err}") from err
    return model


def _load_bare_layer(model: nn.Module, path: str | os.PathLike, spec: dict) -> Int8Linear:
    """A file holding one Int8Linear saved on its own: the new layer (a module cannot be
    replaced in place), built on the skeleton's device."""
    if not isinstance(model, (Int8Linear, nn.Linear)):
        raise TypeError(f"{str(path)!r} stores a bare Int8Linear: model must be an nn.Linear or Int8Linear skeleton, "
                        f"got {type(model).__name__}")
    found = (model.in_features, model.out_features, model.bias is not None)
    expected = (spec["in_features"], spec["out_features"], spec["bias"])
    if found != expected:
        raise ValueError(f"model has (in_features, out_features, bias) = {found}, {str(path)!r} stores {expected}")
    layer = Int8Linear(*expected, scheme=spec["scheme"], device=model.weight.device)
    try:
        load_model(layer, str(path), strict=True)
    except RuntimeError as err:  # as load_quantized's module path: missing / unexpected keys
        raise ValueError(f"{str(path)!r} does not fit the model: {err}") from err
    return layer


def _swap(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put module at the qualified name; returns the module it replaces."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    previous = getattr(parent, attr)
    setattr(parent, attr, module)
    return previous

