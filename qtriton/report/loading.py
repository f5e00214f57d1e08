"""Reading checkpoints for `qtriton report`: state dicts of every format it takes (safetensors,
sharded folders and their index, torch.save files, .npz), which kind of checkpoint a path is
(a save_quantized file, a compressed-tensors folder), and the tensor facts the measurements use."""

from __future__ import annotations

import json
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
NUMPY_SUFFIXES = (".npz",)

#: Top-level keys under which training checkpoints commonly nest the model's state dict.
_NESTED_STATE_DICT_KEYS = ("state_dict", "model", "module")


def load_checkpoint(path: str | Path) -> dict:
    """The state dict in a checkpoint file: name -> torch.Tensor or np.ndarray.

    Raises FileNotFoundError for a missing file and ValueError (naming the file) for an
    unsupported suffix, an unreadable / truncated file, or content that is not a state dict.
    """
    path = Path(path)
    if path.is_dir() or path.name.endswith(".safetensors.index.json"):
        return _load_shards(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return load_safetensors(path)
    if suffix in NUMPY_SUFFIXES:
        return _load_npz(path)
    if suffix in TORCH_SUFFIXES:
        return _load_torch(path)
    supported = ", ".join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES + NUMPY_SUFFIXES)
    raise ValueError(f"checkpoint {str(path)!r}: unsupported file type {suffix!r} (supported: {supported})")


def _shard_files(path: Path) -> list[Path]:
    """The safetensors files of a Hugging Face folder (its index's shards, else every
    *.safetensors in it) or of an index file."""
    index = path if path.is_file() else path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{str(index)!r} is not a safetensors index (no weight_map): {err}") from None
        return [index.parent / name for name in dict.fromkeys(weight_map.values())]
    files = sorted(path.glob("*.safetensors"), key=lambda p: natural_key(p.name))
    if not files:
        raise FileNotFoundError(f"folder {str(path)!r} holds no .safetensors file")
    return files


def _load_shards(path: Path) -> dict:
    state = {}
    for file in _shard_files(path):
        if not file.is_file():
            raise FileNotFoundError(f"shard {str(file)!r} of {str(path)!r} does not exist")
        state.update(load_safetensors(file))
    return dict(sorted(state.items(), key=lambda item: natural_key(item[0])))


def natural_key(name: str) -> list:
    """Sort key putting numbers in order: layers.2 before layers.10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _unreadable(path: Path, kind: str, err: Exception) -> ValueError:
    return ValueError(
        f"checkpoint {str(path)!r} cannot be read as a {kind} file (truncated or corrupt?): "
        f"{type(err).__name__}: {err}"
    )


def load_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        # torch, not numpy: NumPy has no bfloat16. The file sorts its names as strings
        # (layers.10 before layers.2): back in numeric order.
        state = load_file(str(path))
    except SafetensorError as err:
        raise _unreadable(path, "safetensors", err) from err
    return dict(sorted(state.items(), key=lambda item: natural_key(item[0])))


def _load_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise _unreadable(path, ".npz", err) from err


def _starts_like_torch_save(path: Path) -> bool:
    """torch.save writes a zip archive ("PK") or, the legacy format, a pickle (0x80)."""
    with open(path, "rb") as f:
        head = f.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def _not_torch_save(path: Path) -> ValueError:
    return ValueError(
        f"checkpoint {str(path)!r} was not written by torch.save (text, a git-lfs pointer, a plain pickle?): "
        "qtriton report reads state dicts saved with torch.save, safetensors files and .npz archives"
    )


def _load_torch(path: Path) -> dict:
    import torch

    try:
        with warnings.catch_warnings():  # a plain pickle: torch warns of its protocol, then fails (below)
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # Text or a plain pickle (its opcodes are no torch.save pickle's): not "pickled objects".
        if not _starts_like_torch_save(path) or "unsupported operand" in str(err).lower():
            raise _not_torch_save(path) from None
        if "weights only" not in str(err).lower():
            raise _unreadable(path, "PyTorch", err) from err
        raise ValueError(
            f"checkpoint {str(path)!r} holds pickled Python objects (a whole module saved with "
            "torch.save(model)?), which qtriton report does not unpickle: save model.state_dict() instead"
        ) from None
    except Exception as err:  # torch.load raises many types (OSError, KeyError, RuntimeError, UnpicklingError)
        if not _starts_like_torch_save(path):
            raise _not_torch_save(path) from None
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


_TORCH_FLOATS = ("float16", "bfloat16", "float32", "float64")


def dtype_name(value) -> tuple[str, bool]:
    """(dtype name, whether it is a floating-point type we measure) of a tensor or array."""
    if isinstance(value, np.ndarray):
        return str(value.dtype), bool(np.issubdtype(value.dtype, np.floating))
    import torch

    if isinstance(value, torch.Tensor):
        name = str(value.dtype).removeprefix("torch.")
        return name, name in _TORCH_FLOATS
    return type(value).__name__, False


def as_float32(value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value.astype(np.float32, copy=False)
    import torch

    return value.detach().to("cpu", torch.float32).numpy()


def _itemsize(value) -> int:
    return value.itemsize if isinstance(value, np.ndarray) else value.element_size()


def nbytes(value) -> int:
    return int(np.prod(getattr(value, "shape", ()), dtype=np.int64)) * _itemsize(value)


def is_quantized_checkpoint(path: str | Path) -> bool:
    """True for a safetensors file carrying save_quantized's header (not checked further)."""
    from safetensors import SafetensorError, safe_open

    from qtriton.formats.serialization import METADATA_KEY

    path = Path(path)
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES or not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            return METADATA_KEY in (f.metadata() or {})
    except SafetensorError:
        return False  # load_checkpoint says what is wrong with it


def is_compressed_folder(path: str | Path) -> bool:
    """True for a Hugging Face folder whose config.json has a compressed-tensors
    quantization_config; ValueError naming config.json if it is not a JSON object (its
    folder cannot be told float or quantized: its scales would be measured as weights)."""
    from qtriton import checks

    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    quant = checks.json_object(config).get("quantization_config")
    return isinstance(quant, dict) and quant.get("quant_method") == "compressed-tensors"
