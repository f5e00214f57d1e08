"""Hugging Face folders in compressed-tensors' `int-quantized` format: the checkpoints vLLM,
transformers and llm-compressor load and serve.

    qtriton.save_pretrained(model, "smollm2-w8a8", tokenizer)   # after quantize_model(model)
    model = qtriton.from_pretrained("smollm2-w8a8")            # Int8Linear layers, int8 weights
    # vllm serve smollm2-w8a8                                   # the same folder, served

A folder holds `config.json` (the model's config and a `quantization_config`),
`model.safetensors` (or shards of at most `max_shard_size` with `model.safetensors.index.json`)
and, when given, the tokenizer's files and `generation_config.json`. The
`quantization_config` is compressed-tensors' (`quant_method: compressed-tensors`, format
`int-quantized`, status `compressed`): one config group per distinct `QuantScheme` of the
model's `Int8Linear` layers (targets `["Linear"]` when there is one, else the layers' names),
the weights int8 symmetric per channel, the input activations int8 per token (dynamic,
symmetric or not) or per tensor (static), and `ignore` listing the `nn.Linear` layers kept
in float. Per quantized layer the folder stores

    <layer>.weight        I8  (out_features, in_features)
    <layer>.weight_scale  F32 (out_features, 1)
    <layer>.bias          F32 (out_features,)            if the layer has one
    <layer>.input_scale   F32 (1,)                       static activations only

and every other tensor of the model as it is (a weight tied to another, `lm_head` to the
embedding, is stored once, as transformers does). W8A16 layers (float activations) form
`pack-quantized` groups, the form vLLM serves weight-only integer layers in
(`CompressedTensorsWNA16`) and llm-compressor's W8A16 preset writes: per layer

    <layer>.weight_packed I32 (out_features, ceil(in_features / 4))  codes + 128, four per int32
    <layer>.weight_shape  I64 (2,)                                   [out_features, in_features]
    <layer>.weight_scale  F32 (out_features, 1)

packed and unpacked by compressed-tensors' own `pack_to_int32` / `unpack_from_int32` (imported
when a W8A16 layer is written or read: ImportError saying so without it). Each group carries its
own format; the global one is `mixed-precision` when they differ. Folders of the earlier
`naive-quantized` form (int8 `weight`, as W8A8 layers) still load.

Targets: `["Linear"]` when every quantized layer has one scheme; otherwise, per group, one
regex per layer type it holds entirely (`re:.*down_proj$`, as llm-compressor writes) and exact
names for the rest.

save_pretrained refuses, naming the layers, a model vLLM could not serve: vLLM runs q/k/v
and gate/up projections as one fused layer each and needs one scheme (or float) for all of
a fused layer's parts.

Where SmoothQuant's 1/s was folded into a norm or a preceding layer, `qtriton_smoothing_folds`
beside the groups records it ({layer: the module that took 1/s}; readers of the format ignore
it), so that `Plan.of_model` of the loaded model says "+smooth" and `qtriton report` does not
compare those rescaled weights with the original ones.

A smoothed layer (`input_scale`, SmoothQuant's 1/s multiplied into x) has no form in that
format: qtriton folds what calibration can into the norms, and save_pretrained refuses the
others with their names rather than write a folder that would serve wrong.

`from_pretrained` builds the model from `config.json` with empty (meta) weights, puts an
`Int8Linear` at each quantized layer and loads the tensors straight in: the float weights of
quantized layers never exist in memory. It reads qtriton's folders and those of other
compressed-tensors writers (llm-compressor's W8A8 int8) whose schemes `Int8Linear` runs; a
layer of any other scheme (4-bit, group-wise, float8, asymmetric weights) is refused by name.
Both directions check every quantized layer's tensors as `load_quantized` does.

transformers (and accelerate, for the empty weights) are imported only here, when called.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from qtriton import checks
from qtriton.model import scheme as schemes
from qtriton.model.nn import Int8Linear, apply_smoothing_folds, smoothing_folds
from qtriton.model.scheme import W8A8, W8A16, QuantScheme

QUANT_METHOD = "compressed-tensors"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
#: compressed-tensors' formats qtriton writes and reads: int8 weights stored as int8, or four
#: to an int32 (pack-quantized, weight-only layers).
FORMATS = ("int-quantized", "naive-quantized", "pack-quantized", "mixed-precision")
#: The format of a group of W8A8 layers and of W8A16 layers (their kinds').
W8A8_FORMAT, W8A16_FORMAT = W8A8.kind.compressed_tensors_format, W8A16.kind.compressed_tensors_format
#: nn.Linear siblings vLLM fuses into one layer (QKVParallelLinear, MergedColumnParallelLinear)
#: in its Llama-style models; it needs one scheme for all the parts present.
FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


# --------------------------------------------------------------------------------- export
def quantization_config(model: nn.Module) -> dict:
    """The compressed-tensors `quantization_config` describing model's Int8Linear layers.

    ValueError naming the layers an input transform cannot be written for (smoothed: an
    `input_scale` that was not folded into a norm), or if model has no Int8Linear layer."""
    layers = _int8_layers(model)
    if not layers:
        raise ValueError("model has no Int8Linear layers: quantize it with qtriton.quantize_model before exporting")
    transform_groups = _transform_groups(layers)
    _check_fused_layers(model, layers)
    by_scheme: dict[QuantScheme, list[str]] = {}
    for name, layer in layers.items():  # the transforms are transform_config's
        by_scheme.setdefault(layer.scheme.replace(transforms=()), []).append(name)
    linears = [name for name, _ in _named_linears(model)]
    groups = {}
    for index, (scheme, names) in enumerate(by_scheme.items()):
        args = scheme.to_compressed_tensors()
        groups[f"group_{index}"] = {
            "targets": ["Linear"] if len(by_scheme) == 1 else _targets(names, linears),
            "weights": args["weights"],
            "input_activations": args["input_activations"],
            "output_activations": None,
            "format": scheme.kind.compressed_tensors_format,
        }
    formats = {group["format"] for group in groups.values()}
    config = {
        "quant_method": QUANT_METHOD,
        "format": formats.pop() if len(formats) == 1 else "mixed-precision",
        "quantization_status": "compressed",
        "config_groups": groups,
        "ignore": [name for name, module in _named_linears(model) if not isinstance(module, Int8Linear)],
        "kv_cache_scheme": None,
    }
    if transform_groups:
        config["transform_config"] = {"config_groups": transform_groups}
    if folds := smoothing_folds(model):  # an extra key: compressed-tensors' config ignores extras
        config[checks.SMOOTHING_RECORD] = folds
    return config


def _transform_groups(layers: dict[str, Int8Linear]) -> dict:
    """transform_config's config groups for the layers' input transforms; ValueError naming
    the layers of a transform kind the format cannot express."""
    groups = {}
    for kind in schemes.TRANSFORMS:
        having = {name: t for name, layer in layers.items() if (t := layer.scheme.transform(kind)) is not None}
        if having:
            groups.update(kind.to_compressed_tensors(having))
    return groups


def _targets(names: list[str], linears: list[str]) -> list[str]:
    """A group's targets: `re:.*<type>$` for each layer type (the name's last part) all of
    whose nn.Linear layers are in names, the exact names of the others."""
    names_set = set(names)
    by_type: dict[str, list[str]] = {}
    for name in linears:
        by_type.setdefault(name.rpartition(".")[2], []).append(name)
    targets, exact = [], []
    for kind, members in by_type.items():
        mine = [n for n in members if n in names_set]
        if not mine:
            continue
        if len(mine) == len(members) and kind.isidentifier():
            targets.append(f"re:.*{kind}$")
        else:
            exact.extend(mine)
    return targets + exact


def _check_fused_layers(model: nn.Module, layers: dict[str, Int8Linear]) -> None:
    """ValueError naming the fused layers (FUSED) whose parts have different schemes or are
    partly float: vLLM loads each such group as one layer with one scheme and refuses them."""
    mixed = []
    for name, module in model.named_modules():
        for parts in FUSED:
            present = [p for p in parts if isinstance(getattr(module, p, None), (nn.Linear, Int8Linear))]
            if len(present) < 2:
                continue
            schemes = {p: layers[f"{name}.{p}"].scheme.name if f"{name}.{p}" in layers else "float" for p in present}
            if len(set(schemes.values())) > 1:
                mixed.append(f"{name}.{{{','.join(present)}}} ({', '.join(f'{p} {s}' for p, s in schemes.items())})")
    if mixed:
        raise ValueError(
            f"vLLM fuses {' and '.join('/'.join(parts) for parts in FUSED)} into one layer each and needs one "
            f"scheme for all of a fused layer's parts; {len(mixed)} fused layers mix schemes: {'; '.join(mixed[:4])}"
            + (f"; ... and {len(mixed) - 4} more" if len(mixed) > 4 else "")
            + "; give the parts of each one scheme (a plan by layer type does)"
        )


def save_pretrained(
    model: nn.Module,
    folder: str | os.PathLike,
    tokenizer=None,
    *,
    max_shard_size: int | str = "5GB",
) -> Path:
    """Write a quantized transformers model (after `quantize_model`) as a Hugging Face folder
    in compressed-tensors format (see the module docstring); returns the folder.

    Everything is checked and serialised before the folder is touched (ValueError naming the
    tensor or config attribute): every quantized layer (int8 weight, float32 scales positive
    and finite (a model moved with `.to(torch.bfloat16)` gets its scales back in float32 if
    they survive the round trip, and is refused if they became 0 or inf), finite bias), every
    other float tensor finite, the config JSON. The files are written to a temporary folder
    beside folder, which then takes folder's place whole: an error or an interrupt leaves
    folder as it was. Over an existing folder, its files other than a previous export's
    weights (`model.safetensors`, `model-NNNNN-of-NNNNN.safetensors`, the index) and the
    files written now stay (a README, a tokenizer, `model.int8.safetensors`). Files get the
    modes a plain write gets (0644 under umask 022). tokenizer: saved beside the model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise TypeError(
            f"model ({type(model).__name__}) has no transformers config: save_pretrained writes Hugging Face "
            "folders of transformers models; use qtriton.save_quantized for other modules"
        )
    limit = _parse_size(max_shard_size)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{str(folder)!r} exists and is not a folder")
    quant_config = quantization_config(model)
    _check_tied_output_head(model, config, _int8_layers(model))
    state = export_state_dict(model)
    config_text = _config_json(model, config, quant_config, where=f"{str(folder / CONFIG_NAME)!r}: ")
    target = folder.resolve()
    staging, swap = _staging_folder(target)
    try:
        (staging / CONFIG_NAME).write_text(config_text)
        generation = getattr(model, "generation_config", None)
        if generation is not None and hasattr(generation, "save_pretrained"):
            generation.save_pretrained(staging)  # validates, raising before any weight is written
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        _write_shards(state, staging, limit)
        _set_modes(staging, like=target if target.is_dir() else None)
        if swap:
            _replace_folder(staging, target)
        else:
            _replace_files(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _config_json(model: nn.Module, config, quant_config: dict, where: str) -> str:
    """config.json's text: the model's config with quant_config, the model's dtype and class
    (a model loaded from a GGUF file has no architectures, and a server would guess the class
    from model_type), without _name_or_path (where it was loaded from, a path on this
    machine; transformers' own save leaves it out too)."""
    config_dict = config.to_dict()
    config_dict["quantization_config"] = quant_config
    config_dict["architectures"] = [type(model).__name__]
    config_dict.pop("_name_or_path", None)
    floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
    if floats:  # the model's dtype now, as transformers records it (m.to(torch.bfloat16) leaves config alone)
        config_dict["torch_dtype" if "torch_dtype" in config_dict else "dtype"] = str(floats[0]).removeprefix("torch.")
    try:
        return json.dumps(config_dict, indent=2, sort_keys=True) + "\n"
    except (TypeError, ValueError) as err:
        bad = next((key for key, value in config_dict.items() if not _json_writable(value)), None)
        raise ValueError(f"{where}the model's config attribute {bad!r} cannot be written as JSON: {err}") from None


def _json_writable(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


#: The names of a previous export's weights, replaced by the new ones (as transformers does).
_WEIGHT_FILES = re.compile(rf"{re.escape(WEIGHTS_NAME)}|{re.escape(INDEX_NAME)}|model-\d{{5}}-of-\d{{5}}\.safetensors")


def _staging_folder(folder: Path) -> tuple[Path, bool]:
    """A new empty folder to write the export to, and whether it can then swap places with
    folder: beside it, in the same parent; inside it where the parent is not writable or
    folder is a mount point (which no rename moves)."""
    if folder.is_dir() and os.path.ismount(folder):
        return Path(tempfile.mkdtemp(prefix=".", suffix=".partial", dir=folder)), False
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        return Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent)), True
    except PermissionError:
        if not folder.is_dir():
            raise
        return Path(tempfile.mkdtemp(prefix=".", suffix=".partial", dir=folder)), False


def _replace_files(staging: Path, folder: Path) -> None:
    """Move staging's files (staging inside folder) over folder's, each by a rename, and drop
    a previous export's weights. config.json goes first and comes back last: cut short, the
    folder has none, which every loader refuses, rather than new weights under the old config."""
    (folder / CONFIG_NAME).unlink(missing_ok=True)
    for item in folder.iterdir():
        if _WEIGHT_FILES.fullmatch(item.name) and not (staging / item.name).exists():
            item.unlink()
    for item in sorted(staging.iterdir(), key=lambda p: p.name == CONFIG_NAME):
        if (folder / item.name).is_dir() and not (folder / item.name).is_symlink():
            shutil.rmtree(folder / item.name)
        os.replace(item, folder / item.name)
    staging.rmdir()


def _replace_folder(staging: Path, folder: Path) -> None:
    """Put staging (complete) at folder. A new folder: one rename. Over an existing one, its
    files that the export neither writes nor replaces are linked into staging, then the two
    swap by two renames: folder is at every moment the old one or the new one, whole (or,
    between the renames, absent, with both beside it)."""
    if not folder.exists():
        os.rename(staging, folder)
        return
    for item in folder.iterdir():
        if not (staging / item.name).exists() and not _WEIGHT_FILES.fullmatch(item.name):
            _link(item, staging / item.name)
    old = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:12]}.old")
    os.rename(folder, old)
    try:
        os.rename(staging, folder)
    except BaseException:
        os.rename(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _link(source: Path, target: Path) -> None:
    """source at target without copying its bytes (a hard link; a copy where links fail)."""
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
    elif source.is_dir():
        shutil.copytree(source, target, symlinks=True, copy_function=_link_file)
    else:
        _link_file(source, target)


def _link_file(source, target) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _set_modes(staging: Path, like: Path | None) -> None:
    """The modes a plain write gives (safetensors writes 0600, which a server running as
    another user cannot read; mkdtemp makes 0700), or for the folder those of the one it replaces."""
    probe = staging / ".mode"
    probe.mkdir()
    folder_mode = (like if like is not None else probe).stat().st_mode & 0o7777
    probe.rmdir()
    file_mode = (staging / CONFIG_NAME).stat().st_mode & 0o777  # written by write_text: 0666 less the umask
    for file in staging.glob("*.safetensors"):
        file.chmod(file_mode)
    staging.chmod(folder_mode)


def export_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """model's tensors under compressed-tensors' names and layouts, each stored once (the
    first name of a tensor shared by several modules wins, as in transformers' folders);
    ValueError naming a quantized layer's tensor that Int8Linear cannot hold or a float
    tensor holding NaN or Inf (a folder that from_pretrained would refuse)."""
    layers = _int8_layers(model)
    _transform_groups(layers)
    slots = {}  # layer name -> {buffer name: its slot}
    for name, layer in layers.items():
        slots[name] = {s.name: s for s in layer.scheme.tensors(layer.in_features, layer.out_features,
                                                                layer.bias is not None)}
        tensors = {slot.ct_name: getattr(layer, slot.name) for slot in slots[name].values()}
        check_layer_tensors(name, tensors, layer.in_features, layer.out_features, layer.scheme)
    state, seen = {}, set()
    for name, tensor in model.state_dict(keep_vars=False).items():
        layer_name, _, part = name.rpartition(".")
        slot = slots.get(layer_name, {}).get(part)
        if slot is not None and slot.ct_packed:  # pack-quantized: the codes four to an int32, and the shape
            state[f"{layer_name}.{slot.ct_name}_packed"] = pack_w8a16(tensor)
            state[f"{layer_name}.{slot.ct_name}_shape"] = torch.tensor(list(tensor.shape), dtype=torch.int64)
            continue
        if slot is not None:
            name, tensor = f"{layer_name}.{slot.ct_name}", slot.to_file(tensor)
        key = (tensor.device, tensor.data_ptr(), tuple(tensor.shape)) if tensor.numel() else ("empty", name)
        if key in seen:
            continue
        seen.add(key)
        if tensor.is_floating_point():
            checks.finite_tensor(tensor, name)
        state[name] = tensor.detach().contiguous().cpu()
    return state


def _packing():
    """compressed-tensors' (pack_to_int32, unpack_from_int32): the packing of its
    pack-quantized format is its own, so qtriton uses its code rather than a copy."""
    try:
        from compressed_tensors.compressors import pack_to_int32, unpack_from_int32
    except ImportError as err:
        raise ImportError(
            "W8A16 layers are stored in compressed-tensors' pack-quantized format (the one vLLM serves "
            "weight-only int8 layers in), packed by compressed-tensors' own code: pip install compressed-tensors"
        ) from err
    return pack_to_int32, unpack_from_int32


def pack_w8a16(weight: torch.Tensor) -> torch.Tensor:
    """A W8A16 layer's int8 weight (out, in) as pack-quantized stores it: int32
    (out, ceil(in / 4)), each code + 128, four to a word (compressed-tensors' pack_to_int32)."""
    return _packing()[0](weight.detach().cpu().contiguous(), 8).contiguous()


def unpack_w8a16(packed: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of pack_w8a16: the int8 codes (out, in) (compressed-tensors' unpack_from_int32)."""
    return _packing()[1](packed, 8, torch.Size(shape)).contiguous()


def unpacked_state(stored: dict[str, torch.Tensor], where: str = "") -> dict[str, torch.Tensor]:
    """stored (a folder's tensors by name) with each pack-quantized layer's weight_packed and
    weight_shape replaced by its int8 weight, in place of weight_packed: for readers without a
    model (qtriton report). ValueError naming a layer whose weight_shape does not fit."""
    out = {}
    for key, tensor in stored.items():
        name, _, part = key.rpartition(".")
        if part == "weight_shape" and f"{name}.weight_packed" in stored:
            continue
        if part == "weight_packed":
            shape = stored.get(f"{name}.weight_shape")
            if shape is None or shape.dtype.is_floating_point or shape.numel() != 2:
                raise ValueError(f"{where}{name}.weight_shape is missing or not two integers")
            out[f"{name}.weight"] = unpack_w8a16(tensor, tuple(int(v) for v in shape.reshape(-1)))
            continue
        out[key] = tensor
    return out


def _check_tied_output_head(model: nn.Module, config, quantized: Iterable[str], where: str = "") -> None:
    """A config that ties the output head to the embedding makes loaders tie them again: a
    quantized head would be thrown away for the float embedding (or the float embedding put
    into an Int8Linear). quantized: the names of the quantized layers (saved or stored)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else getattr(model, "lm_head", None)
    name = next((n for n, m in model.named_modules() if m is head), None) if head is not None else None
    if name is not None and name in quantized and getattr(config, "tie_word_embeddings", False):
        raise ValueError(
            f"{where}{name} is quantized but the config ties it to the input embedding (tie_word_embeddings=True): "
            "loaders would tie it back to the float embedding; keep the output head float (keep_output_head=True)"
        )


def _write_shards(state: dict[str, torch.Tensor], folder: Path, limit: int) -> None:
    """state in folder (an empty one) as model.safetensors, or shards of at most limit bytes and their index."""
    from safetensors.torch import save_file

    shards, current, size = [], {}, 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > limit:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensor
        size += nbytes
    shards.append(current)
    if len(shards) == 1:
        save_file(shards[0], str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        return
    weight_map = {}
    for index, shard in enumerate(shards, 1):
        file = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / file), metadata={"format": "pt"})
        weight_map.update((name, file) for name in shard)
    total = sum(t.numel() * t.element_size() for t in state.values())
    (folder / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def _parse_size(value: int | str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?B)\s*", str(value).upper())
    if match is None or int(match[1]) < 1:
        raise ValueError(f"max_shard_size must be a positive int of bytes or a size like '5GB', got {value!r}")
    return int(match[1]) * {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}[match[2]]


# --------------------------------------------------------------------------------- checks
def check_layer_tensors(name: str, tensors: dict, in_features: int, out_features: int, scheme: QuantScheme,
                        where: str = "", bias: bool | None = None) -> None:
    """ValueError naming the tensor unless a quantized layer's tensors (compressed-tensors
    names, any of the shapes its slots admit: `scheme.tensors`) are what Int8Linear runs:
    weight int8 (out, in); weight_scale float (out,) or (out, 1), positive, finite and
    normal in float32; bias float (out,), finite in float32; input_scale (static) float (),
    (1,) positive, finite and normal. bias: whether the model's layer has one (None:
    whatever is stored)."""
    prefix = f"{where}{name}."
    if bias is False and "bias" in tensors:
        raise ValueError(f"{prefix}bias is stored, but the model's layer has no bias")
    if bias and "bias" not in tensors:
        raise ValueError(f"{prefix}bias is missing: the model's layer has a bias")
    slots = scheme.tensors(in_features, out_features, "bias" in tensors)
    if unwritable := [slot.name for slot in slots if slot.ct_name is None]:
        raise ValueError(f"{prefix}{unwritable[0]}: a {scheme.name} layer's {unwritable[0]} has no compressed-tensors form")
    for slot in slots:
        tensor = tensors.get(slot.ct_name)
        if tensor is None:
            raise ValueError(f"{prefix}{slot.ct_name} is missing: a {scheme.name} layer needs it")
        dtype_ok = tensor.dtype == torch.int8 if slot.role == "codes" else tensor.is_floating_point()
        if not dtype_ok or tuple(tensor.shape) not in slot.ct_shapes:
            want = "int8" if slot.role == "codes" else "float"
            raise ValueError(
                f"{prefix}{slot.ct_name} is {str(tensor.dtype).removeprefix('torch.')} {list(tensor.shape)}, "
                f"an Int8Linear({in_features}, {out_features}) needs {want} "
                f"{' or '.join(str(list(s)) for s in slot.ct_shapes)}"
            )
    for slot in slots:
        if slot.role == "scale":
            checks.scale_values(tensors[slot.ct_name], f"{prefix}{slot.ct_name}")
        elif slot.role == "bias":  # added in float32
            checks.finite_tensor(tensors[slot.ct_name], f"{name}.{slot.ct_name}", torch.float32, where)
    if extra := sorted(tensors.keys() - {slot.ct_name for slot in slots}):
        raise ValueError(f"{prefix}{extra[0]} is stored, but a {scheme.name} layer has no such tensor")


# --------------------------------------------------------------------------------- import
def from_pretrained(
    folder: str | os.PathLike,
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str = "cpu",
    model_class=None,
) -> nn.Module:
    """A transformers model with Int8Linear layers from a compressed-tensors folder (see the
    module docstring), in eval mode on device. dtype: of the float tensors (embeddings, norms,
    layers kept float) and so of the activations, float32, float16 or bfloat16; default: the
    folder's (config `dtype`), float32 if it names none. model_class: default
    AutoModelForCausalLM. A layer several config groups target gets the group
    compressed-tensors gives it (see `layer_schemes`).

    Raises FileNotFoundError for a folder without config.json or weights, ValueError naming
    the file and the problem for a malformed config, index or shard, the layers of schemes
    Int8Linear cannot run, a tensor whose dtype, shape or values do not fit (see
    check_layer_tensors; a float tensor stored as an integer dtype, or holding NaN or Inf
    once cast to dtype), a tensor the model has no place for (a bias of a bias-free layer)
    and a quantized output head that the config ties to the embedding.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no {CONFIG_NAME}: not a Hugging Face model folder")
    where = f"{str(config_file)!r}: "
    raw = checks.json_object(config_file)
    for key in ("dtype", "torch_dtype"):  # transformers' config classes fail on a name torch lacks ("auto")
        if raw.get(key) is not None:
            checks.model_dtype(raw[key], f"{where}{key}")
    quant = raw.get("quantization_config")
    if quant is None:
        raise ValueError(
            f"{str(folder)!r}: its config.json has no quantization_config (a float model): load it with transformers "
            "and quantize it with qtriton.quantize_model"
        )
    check_quantization_config(quant, where)  # before AutoConfig, which fails on some shapes of it
    if dtype is not None:
        dtype = checks.model_dtype(dtype)
    config = AutoConfig.from_pretrained(folder)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # built float and empty; qtriton swaps its own layers in
    if dtype is None:
        dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
        dtype = checks.model_dtype(dtype, f"{where}dtype")  # a config class's own default, checked too
    model_class = AutoModelForCausalLM if model_class is None else model_class
    with init_empty_weights():  # parameters on meta, buffers (rotary tables) real
        try:
            model = model_class.from_config(config, dtype=dtype)
        except TypeError:  # transformers before 4.56 names it torch_dtype
            model = model_class.from_config(config, torch_dtype=dtype)
    schemes = layer_schemes(model, quant, where=where)
    _check_tied_output_head(model, config, schemes, where)
    for name, scheme in schemes.items():
        linear = model.get_submodule(name)
        layer = Int8Linear(linear.in_features, linear.out_features, linear.bias is not None, scheme=scheme,
                           device="meta")
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, layer)
    _load_tensors(model, folder, schemes, quant.get("transform_config"))
    apply_smoothing_folds(model, quant.get(checks.SMOOTHING_RECORD), repr(str(config_file)))
    return model.to(device).eval()


def check_quantization_config(quant, where: str = "") -> None:
    """ValueError naming the entry unless quant has the structure compressed-tensors'
    QuantizationConfig reads: config_groups an object of named groups, each an object with
    targets, and targets and ignore lists of layer names, class names and "re:" regexes
    that compile."""
    if not isinstance(quant, dict):
        raise ValueError(f"{where}quantization_config must be an object, got {_a(quant)}")
    groups = quant.get("config_groups")
    if not groups:
        raise ValueError(f"{where}quantization_config has no config_groups")
    if not isinstance(groups, dict):
        raise ValueError(f"{where}quantization_config.config_groups must be an object of named groups, got {_a(groups)}")
    for group_name, group in groups.items():
        entry = f"quantization_config.config_groups.{group_name}"
        if not isinstance(group, dict):
            raise ValueError(f"{where}{entry} must be an object, got {_a(group)}")
        _check_targets(group.get("targets"), f"{entry}.targets", where)
    _check_targets(quant.get("ignore") or [], "quantization_config.ignore", where)


def _check_targets(targets, entry: str, where: str) -> None:
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"{where}{entry} must be a list of strings, got {_a(targets)}")
    for target in targets:
        if target.startswith("re:"):
            try:
                re.compile(target[3:])
            except re.error as err:
                raise ValueError(f"{where}{entry}: {target!r} is not a valid regular expression: {err}") from None


def _a(value) -> str:
    """value's kind for a message: "a list", "a str", "None"."""
    return "None" if value is None else f"a {type(value).__name__}"


def layer_schemes(model: nn.Module, quant: dict, where: str = "") -> dict[str, QuantScheme]:
    """The QuantScheme of each nn.Linear that quant (a compressed-tensors quantization_config)
    quantizes, by name; ValueError naming every layer Int8Linear cannot run. A layer that
    several groups target gets the group compressed-tensors gives it (see `_group_of`)."""
    check_quantization_config(quant, where)
    method = quant.get("quant_method")
    if method != QUANT_METHOD:
        raise ValueError(f"{where}quant_method {method!r}: qtriton reads {QUANT_METHOD!r} folders")
    if quant.get("format", "int-quantized") not in FORMATS:
        raise ValueError(f"{where}format {quant.get('format')!r}: Int8Linear runs int8 weights stored as "
                         f"int8, one of {FORMATS}")
    if quant.get("quantization_status", "compressed") != "compressed":
        raise ValueError(f"{where}quantization_status {quant.get('quantization_status')!r}: qtriton reads "
                         "'compressed' folders (int8 weights), not float ones")
    for key in ("kv_cache_scheme", "sparsity_config"):
        if quant.get(key):
            raise ValueError(f"{where}{key} is set: Int8Linear runs neither quantized KV caches nor sparsity")
    transforms = _layer_transforms(model, quant.get("transform_config"), where)
    groups = quant["config_groups"]
    ignore = quant.get("ignore") or []
    schemes, refused = {}, []
    for name, module in _named_linears(model):
        if _matches(name, module, ignore):
            continue
        group_name = _group_of(name, module, groups)
        if group_name is None:
            continue  # no group targets it: float, as compressed-tensors leaves it
        try:
            schemes[name] = _group_scheme(groups[group_name]).replace(transforms=transforms.get(name, ()))
        except ValueError as err:
            refused.append(f"{name} ({group_name}: {err})")
    if refused:
        raise ValueError(f"{where}{len(refused)} layers have schemes Int8Linear cannot run: {'; '.join(refused[:8])}"
                         + (f"; ... and {len(refused) - 8} more" if len(refused) > 8 else ""))
    if not schemes:
        raise ValueError(f"{where}its quantization_config quantizes no nn.Linear layer of the model")
    return schemes


def _layer_transforms(model: nn.Module, config, where: str) -> dict[str, tuple]:
    """{layer name: its input transforms} from a compressed-tensors `transform_config`: each
    group's `type` read by the registered transform kind (scheme.TRANSFORMS) that claims it,
    applied to the layers its `input` application targets; ValueError for a group no kind
    reads."""
    if not config:
        return {}
    groups = config.get("config_groups") if isinstance(config, dict) else None
    if not isinstance(groups, dict):
        raise ValueError(f"{where}transform_config has no config_groups")
    found: dict[str, list] = {}
    for group_name, group in groups.items():
        kind_type = group.get("type") if isinstance(group, dict) else group
        kind = next((k for k in schemes.TRANSFORMS if isinstance(group, dict) and kind_type in k.compressed_tensors_types),
                    None)
        if kind is None:
            raise ValueError(f"{where}transform_config group {group_name!r} of type {kind_type!r}: Int8Linear runs no "
                             "such transform")
        try:
            transform = kind.from_compressed_tensors(group)
        except ValueError as err:
            raise ValueError(f"{where}transform_config group {group_name!r}: {err}") from None
        for apply in group.get("apply") or []:
            if apply.get("location") != "input":
                continue
            for name, module in _named_linears(model):
                if _matches(name, module, apply.get("targets", [])) and not _matches(name, module, apply.get("ignore") or []):
                    found.setdefault(name, []).append(transform)
    return {name: tuple(ts) for name, ts in found.items()}


def scheme_for_name(quant: dict, name: str, where: str = "") -> QuantScheme:
    """The scheme quant (a compressed-tensors quantization_config) gives the nn.Linear named
    name, for a reader with tensors and no model (qtriton report), resolved as layer_schemes
    does; ValueError if none does or Int8Linear cannot run it."""
    check_quantization_config(quant, where)
    linear = nn.Linear(1, 1, device="meta")
    group_name = _group_of(name, linear, quant["config_groups"])
    if group_name is None or _matches(name, linear, quant.get("ignore") or []):
        raise ValueError(f"{where}{name} stores int8 weights, but no config group of its quantization_config quantizes it")
    try:
        return _group_scheme(quant["config_groups"][group_name])
    except ValueError as err:
        raise ValueError(f"{where}{name} ({group_name}: {err})") from None


def _group_scheme(group: dict) -> QuantScheme:
    if group.get("output_activations"):
        raise ValueError("output activations are quantized")
    if group.get("format") not in (None, *FORMATS):
        raise ValueError(f"format {group['format']!r}")
    return QuantScheme.from_compressed_tensors(group.get("weights"), group.get("input_activations"))


def _group_of(name: str, module: nn.Module, groups: dict) -> str | None:
    """The config group compressed-tensors quantizes a layer with (its apply_quantization_config
    and match_targets): each target belongs to the last group listing it; of the targets
    matching the layer, an exact name wins over a regex, a regex over a class name, and
    within a kind the first in sorted order."""
    owner = {target: group_name for group_name, group in groups.items() for target in group["targets"]}
    ranked = sorted(owner, key=lambda target: ("re:" in target, target))
    for target in ranked:
        if _name_matches(name, target):
            return owner[target]
    for target in ranked:
        if _class_matches(module, target):
            return owner[target]
    return None


def _matches(name: str, module: nn.Module, targets: Iterable[str]) -> bool:
    """compressed-tensors' rule: a target is a layer name, "re:" and a regex matched at the
    start of the name, or the name of the module's class or one of its bases."""
    return any(_name_matches(name, target) or _class_matches(module, target) for target in targets)


def _name_matches(name: str, target: str) -> bool:
    return re.match(target[3:], name) is not None if target.startswith("re:") else target == name


def _class_matches(module: nn.Module, target: str) -> bool:
    return any(cls.__name__ == target for cls in type(module).__mro__)


def _weight_files(folder: Path) -> list[Path]:
    index = folder / INDEX_NAME
    if index.is_file():
        weight_map = checks.json_object(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise ValueError(f"{str(index)!r} has no weight_map of tensor names to files")
        files = list(dict.fromkeys(weight_map.values()))
        for file in files:
            if not (folder / file).is_file():
                raise FileNotFoundError(f"{str(index)!r} names {file}, which does not exist")
        return [folder / file for file in files]
    if (folder / WEIGHTS_NAME).is_file():
        return [folder / WEIGHTS_NAME]
    raise FileNotFoundError(f"{str(folder)!r} has neither {WEIGHTS_NAME} nor {INDEX_NAME}")


def _check_transform_tensors(stored: dict[str, torch.Tensor], transform_config, where: str) -> None:
    """Take out of stored the tensors compressed-tensors keeps for transform_config's groups
    (`<module>.<group>_<location>.weight` / `.perm`), each checked by its transform kind."""
    groups = (transform_config or {}).get("config_groups") or {}
    for group_name, group in groups.items():
        kind = next(k for k in schemes.TRANSFORMS if group.get("type") in k.compressed_tensors_types)
        pattern = re.compile(rf".+\.{re.escape(group_name)}_(input|weight_input|output|weight_output)\.(weight|perm)$")
        for key in [k for k in stored if pattern.match(k)]:
            try:
                kind.check_compressed_tensors_tensor(group, key, stored.pop(key))
            except ValueError as err:
                raise ValueError(f"{where}{err}") from None


@torch.no_grad()
def _load_tensors(model: nn.Module, folder: Path, layer_names: Iterable[str], transform_config=None) -> None:
    """Read each file once, check every quantized layer's tensors (as the layer's scheme
    says) and the transform matrices stored for transform_config's groups (as the
    transform's kind says; not loaded: Int8Linear makes its own), assign every tensor into
    the meta model; ValueError naming whatever is missing, unexpected or ill-typed."""
    from safetensors import SafetensorError, safe_open

    stored: dict[str, torch.Tensor] = {}
    for file in _weight_files(folder):
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    stored[key] = f.get_tensor(key)
        except SafetensorError as err:
            raise checks.unreadable_safetensors(file, err) from None
    where = f"{str(folder)!r}: "
    for name in layer_names:
        layer = model.get_submodule(name)
        prefix = f"{name}."
        tensors = {key[len(prefix):]: stored.pop(key) for key in [k for k in stored if k.startswith(prefix)]
                   if "." not in key[len(prefix):]}
        if "weight_packed" in tensors:
            tensors = _unpacked(name, tensors, layer, layer.scheme, where)
        check_layer_tensors(name, tensors, layer.in_features, layer.out_features, layer.scheme, where,
                            bias=layer.bias is not None)
        for slot in layer.scheme.tensors(layer.in_features, layer.out_features, layer.bias is not None):
            setattr(layer, slot.name, slot.from_file(tensors[slot.ct_name]))
        layer.refresh_weight_colsum()
    _check_transform_tensors(stored, transform_config, where)
    expected = model.state_dict(keep_vars=True)
    for key, tensor in stored.items():
        target = expected.get(key)
        if target is None:
            raise ValueError(f"{where}stores {key}, which the model ({type(model).__name__}) does not have")
        if tuple(tensor.shape) != tuple(target.shape):
            raise ValueError(f"{where}{key} is {list(tensor.shape)}, the model's is {list(target.shape)}")
        if target.is_floating_point() and not tensor.is_floating_point():
            raise ValueError(f"{where}{key} is {str(tensor.dtype).removeprefix('torch.')}, the model's "
                             f"{str(target.dtype).removeprefix('torch.')}: a float tensor stored as integers")
        if tensor.is_floating_point():
            checks.finite_tensor(tensor, key, target.dtype if target.is_floating_point() else None, where)
        module_name, _, attr = key.rpartition(".")
        module = model.get_submodule(module_name)
        value = tensor.to(target.dtype)
        if attr in module._parameters:
            module._parameters[attr] = nn.Parameter(value, requires_grad=False)
        else:
            module._buffers[attr] = value
    if hasattr(model, "tie_weights"):
        model.tie_weights()  # lm_head stored once, as the embedding
    if missing := [name for name, tensor in model.state_dict(keep_vars=True).items() if tensor.is_meta]:
        raise ValueError(f"{where}stores no {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))


def _unpacked(name: str, tensors: dict, layer, scheme: QuantScheme, where: str) -> dict:
    """A pack-quantized layer's tensors with weight_packed and weight_shape turned into the
    int8 weight; ValueError naming what does not fit."""
    prefix = f"{where}{name}."
    if not any(slot.ct_packed for slot in scheme.tensors(layer.in_features, layer.out_features, False)):
        raise ValueError(f"{prefix}weight_packed is stored, but a {scheme.name} layer stores its weight as int8 "
                         "(weight): pack-quantized holds weight-only layers")
    if "weight" in tensors:
        raise ValueError(f"{prefix}weight and weight_packed are both stored")
    tensors = dict(tensors)
    packed, shape = tensors.pop("weight_packed"), tensors.pop("weight_shape", None)
    expected = (layer.out_features, layer.in_features)
    if shape is None:
        raise ValueError(f"{prefix}weight_shape is missing: a pack-quantized layer needs it")
    if shape.dtype.is_floating_point or shape.numel() != 2 or tuple(int(v) for v in shape.reshape(-1)) != expected:
        raise ValueError(f"{prefix}weight_shape is {shape.reshape(-1).tolist()}, the model's layer is {list(expected)}")
    packed_shape = (layer.out_features, -(-layer.in_features * 8 // 32))
    if packed.dtype != torch.int32 or tuple(packed.shape) != packed_shape:
        raise ValueError(f"{prefix}weight_packed is {str(packed.dtype).removeprefix('torch.')} {list(packed.shape)}, "
                         f"an Int8Linear{expected[::-1]} stores int32 {list(packed_shape)}")
    tensors["weight"] = unpack_w8a16(packed, expected)
    return tensors


# ------------------------------------------------------------------------------- helpers
def _int8_layers(model: nn.Module) -> dict[str, Int8Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, Int8Linear)}


def _named_linears(model: nn.Module):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, Int8Linear)) and name]
