"""`qtriton report CHECKPOINT`: how well each weight matrix of a checkpoint survives int8.

A qtriton checkpoint (written by `save_quantized`): per `Int8Linear` layer, its scheme
(`QuantScheme.name`: weights int8 per channel, symmetric; activations int8 per token,
symmetric or asymmetric, static, or float),
the SNR and max |error| of the stored weights (codes * scales) against the float checkpoint
given with `--original`, or without it estimated from the rounding step (error uniform over
+-scale/2: SNR ~ signal / (scale^2 / 12), max |error| <= max(scale) / 2), and its bytes; then
the tensors stored in float and the file's total.

A float state dict (.safetensors, .pt/.pth/.bin/.ckpt, .npz): every 2-D floating-point tensor
is quantized and dequantized with the NumPy oracle (`qtriton.reference`) and measured (SNR dB,
higher is better, and max |error|) with each method below; the default table shows the one
`Int8Linear` stores (sym/channel), `--wide` all of them side by side, for comparison:

    sym/tensor   asym/tensor    one scale (and zero point) for the whole matrix
    sym/channel  asym/channel   one per row: a row of an (out, in) weight is one output channel
    sym/g128     asym/g128      one per 128 consecutive values of a row (only if 128 divides it)

"plan" says what `quantize_model`'s defaults would do with each matrix (judged by name, see
`kept_float_reason`), and the totals are what `quantize_model` + `save_quantized` store:
int8 codes + fp32 scales + fp32 biases for replaced layers, every other tensor as it is.

A method that cannot quantize a matrix is "n/a", with the reason: the asymmetric ones on data
far from zero relative to its range (1e6 + N(0, 0.1): the zero point would pass 2^24, where
float32 stops holding every integer, so the oracle gives a NaN scale and the API raises
ValueError). The default tables fit in 100 columns; `--json` has everything.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qtriton import reference
from qtriton.progress import progress as bar

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
    #: Highest SNR among the measured methods: a comparison, not advice (Int8Linear stores sym/channel).
    best: str | None = None
    #: Why the tensor could not be measured (e.g. NaN/Inf in it); None when measured.
    problem: str | None = None
    #: None: quantize_model would make it an Int8Linear (if it is an nn.Linear); else why it stays float.
    kept_float: str | None = None
    bytes_before: int = 0
    #: Bytes after quantize_model + save_quantized: int8 codes + fp32 scales (+ fp32 bias), or as before.
    bytes_after: int = 0


@dataclass
class CheckpointReport:
    path: str
    bits: int
    group_size: int
    tensors: list[TensorReport]
    #: Entries that are not 2-D floating-point tensors (biases, norms, int buffers...): name -> why.
    skipped: dict[str, str]
    #: Every tensor of the checkpoint, and what quantize_model + save_quantized would store.
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
            "kind": "float",
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
                    "int8": t.kept_float is None,
                    "kept_float": t.kept_float,
                    "bytes_before": t.bytes_before,
                    "bytes_after": t.bytes_after,
                    "best": t.best,
                    "problem": t.problem,
                    "methods": {m: method(e) for m, e in t.methods.items()},
                }
                for t in self.tensors
            ],
            "skipped": self.skipped,
        }


@dataclass
class LayerReport:
    """One Int8Linear of a qtriton checkpoint (a shared layer once, under its first name)."""

    name: str
    shape: tuple[int, int]
    #: e.g. "w int8/channel sym, x int8/token asym": what the layer stores and computes.
    scheme: str
    #: SNR (dB) of codes * scales against the original weights, or estimated (see `estimated`).
    snr_db: float
    #: max |error| against the original; without it, the bound max(scale) / 2.
    max_error: float
    #: True without the original weights, or for a layer a SmoothQuant fold rescaled (which the
    #: original cannot be compared with): noise taken as uniform over +-scale/2 per value.
    estimated: bool
    bytes: int
    #: How SmoothQuant changed the layer's float weight, from the checkpoint's record (folds)
    #: or its input_scale; None if it did not.
    smoothing: str | None = None


@dataclass
class QuantizedCheckpointReport:
    """`qtriton report` on a file written by `save_quantized`."""

    path: str
    original: str | None
    layers: list[LayerReport]
    #: The other tensors (embeddings, norms, layers kept float): name -> (shape, dtype, bytes).
    float_tensors: dict[str, tuple[tuple[int, ...], str, int]]
    #: Bytes of every tensor in the file, and of the original checkpoint when given.
    bytes_stored: int
    bytes_original: int | None
    #: Float tensors whose values differ from the original's, no recorded fold explaining it
    #: (another writer's SmoothQuant folded into norms?): the layers they feed may not compare.
    changed_float: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        def finite(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "kind": "qtriton",
            "path": self.path,
            "original": self.original,
            "bytes_stored": self.bytes_stored,
            "bytes_original": self.bytes_original,
            "layers": [
                {
                    "name": layer.name,
                    "shape": list(layer.shape),
                    "scheme": layer.scheme,
                    "snr_db": finite(layer.snr_db),
                    "max_error": layer.max_error,
                    "estimated": layer.estimated,
                    "bytes": layer.bytes,
                    "smoothing": layer.smoothing,
                }
                for layer in self.layers
            ],
            "changed_float": self.changed_float,
            "float_tensors": {
                name: {"shape": list(shape), "dtype": dtype, "bytes": size}
                for name, (shape, dtype, size) in self.float_tensors.items()
            },
        }


# ------------------------------------------------------------------------------ loading
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
        return _load_safetensors(path)
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
        state.update(_load_safetensors(file))
    return dict(sorted(state.items(), key=lambda item: natural_key(item[0])))


def natural_key(name: str) -> list:
    """Sort key putting numbers in order: layers.2 before layers.10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _unreadable(path: Path, kind: str, err: Exception) -> ValueError:
    return ValueError(
        f"checkpoint {str(path)!r} cannot be read as a {kind} file (truncated or corrupt?): "
        f"{type(err).__name__}: {err}"
    )


def _load_safetensors(path: Path) -> dict:
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


def _nbytes(value) -> int:
    return int(np.prod(getattr(value, "shape", ()), dtype=np.int64)) * _itemsize(value)


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

    tensors = []
    int8_biases = set()
    for name, value, dtype in bar(matrices, desc="measuring", unit="tensor", enabled=None if progress else False):
        w = _as_float32(value)
        report = measure_tensor(name, w, dtype, bits, group_size)
        report.bytes_before = report.bytes_after = _nbytes(value)
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
    bytes_before = sum(_nbytes(v) for v in state.values() if hasattr(v, "shape"))
    bytes_after = sum(t.bytes_after for t in tensors)
    for name, value in state.items():
        if name in int8_biases:
            bytes_after += value.shape[0] * 4
        elif name in skipped and hasattr(value, "shape"):
            bytes_after += _nbytes(value)
    return CheckpointReport(str(path), bits, group_size, tensors, skipped, bytes_before, bytes_after)


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


def is_quantized_checkpoint(path: str | Path) -> bool:
    """True for a safetensors file carrying save_quantized's header (not checked further)."""
    from safetensors import SafetensorError, safe_open

    from qtriton.serialization import METADATA_KEY

    path = Path(path)
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES or not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            return METADATA_KEY in (f.metadata() or {})
    except SafetensorError:
        return False  # load_checkpoint says what is wrong with it


def report_quantized(
    path: str | Path, original: str | Path | None = None, progress: bool = False
) -> QuantizedCheckpointReport:
    """Per Int8Linear of a save_quantized file: scheme, SNR of codes * scales (against the
    original float weights when given, else estimated from the rounding step), bytes."""
    from qtriton.serialization import check_layer_tensors, read_header

    header = read_header(path)
    check_layer_tensors(path, header)  # dtypes, shapes and scales as Int8Linear holds them
    stored = _load_safetensors(Path(path))
    aliases = {names[0]: names for names in header["shared"]}
    in_a_group = {name for names in header["shared"] for name in names}
    entries = [(n, spec) for n, spec in header["layers"].items() if n not in in_a_group or n in aliases]
    layers = []
    for name, spec in entries:
        names = aliases.get(name, [name])
        # safetensors stores a shared layer's tensors under one of its names (checked above).
        holder = next(n for n in names if _key(n, "weight") in stored)
        parts = [slot.name for slot in spec["scheme"].tensors(spec["in_features"], spec["out_features"], spec["bias"])]
        layers.append((name, names, holder, spec["scheme"].name, parts))
    return _report_layers(path, stored, layers, original, progress, header["smoothing_folds"])


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


def report_compressed_folder(
    path: str | Path, stored: dict, original: str | Path | None = None, progress: bool = False
) -> QuantizedCheckpointReport:
    """Per quantized layer of a compressed-tensors folder (qtriton.save_pretrained's, or
    another writer's): what report_quantized says of a save_quantized file."""
    from qtriton.hf import check_layer_tensors, scheme_for_name, unpacked_state

    from qtriton import checks

    quant = checks.json_object(Path(path) / "config.json")["quantization_config"]
    stored = unpacked_state(stored, where=f"{str(path)!r}: ")  # pack-quantized (W8A16) layers as int8 weights
    layers = []
    for key, tensor in stored.items():  # in numeric order (see _load_safetensors)
        name = key.removesuffix(".weight")
        if key.endswith(".weight") and f"{name}.weight_scale" in stored:
            scheme = scheme_for_name(quant, name, where=f"{str(path)!r}: ")
            parts = {k.removeprefix(f"{name}."): v for k, v in stored.items()
                     if k.startswith(f"{name}.") and "." not in k.removeprefix(f"{name}.")}
            check_layer_tensors(name, parts, tensor.shape[1], tensor.shape[0], scheme, where=f"{str(path)!r}: ")
            layers.append((name, [name], name, scheme.name, list(parts)))
    if not layers:
        raise ValueError(f"{str(path)!r}: its config says compressed-tensors, but it stores no int8 layer")
    folds = checks.smoothing_folds(quant.get(checks.SMOOTHING_RECORD), repr(str(Path(path) / "config.json")))
    return _report_layers(path, stored, layers, original, progress, folds)


def _smoothing(name: str, folds: dict[str, str]) -> str | None:
    """How a recorded SmoothQuant fold changed layer name's weight, or None."""
    parts = []
    if name in folds:
        parts.append(f"columns times s (1/s folded into {folds[name]})")
    parts += [f"rows divided by {consumer}'s s" for consumer, holder in folds.items() if holder == name]
    return "; ".join(parts) or None


def _report_layers(path, stored: dict, layers: list, original, progress: bool,
                   folds: dict[str, str]) -> QuantizedCheckpointReport:
    """The report on stored's quantized layers, each (name, all its names, the name its
    tensors are stored under, scheme name, the names of its tensors), in the order given.
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
                float_weights = _as_float32(reference_state[key])
            if input_scale is not None:  # the weight from_float quantized
                float_weights = float_weights / input_scale.to(torch.float32).numpy()
        if float_weights is not None:
            err = reference.quantization_error(float_weights, weights)
            snr, max_error, estimated = err["snr"], err["max_error"], False
        else:
            # Rounding to the nearest code leaves an error uniform over +-scale/2: variance scale^2 / 12.
            signal = float(np.sum(weights.astype(np.float64) ** 2))
            noise = float(np.sum(scale.double().numpy() ** 2)) * codes.shape[1] / 12
            snr = 10 * math.log10(signal / noise) if signal > 0 else -math.inf
            max_error, estimated = float(scale.max()) / 2, True
        measured.append(LayerReport(name or "(bare layer)", tuple(codes.shape), scheme, snr, max_error, estimated, size,
                                    smoothing))

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
                    or tuple(getattr(before, "shape", ())) != tuple(value.shape) or not _dtype_name(before)[1]):
                continue
            now, then = _as_float32(value), _as_float32(before)
            if not np.allclose(now, then, rtol=1e-2, atol=1e-6 * float(np.abs(then).max(initial=0.0)), equal_nan=True):
                changed.append(key)
    bytes_stored = sum(v.numel() * v.element_size() for v in stored.values())
    bytes_original = None
    if reference_state is not None:
        bytes_original = sum(_nbytes(v) for v in reference_state.values() if hasattr(v, "shape"))
    return QuantizedCheckpointReport(
        str(path), None if original is None else str(original), measured, float_tensors, bytes_stored, bytes_original,
        changed,
    )


# ---------------------------------------------------------------------------- rendering
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
        "-static (one calibrated scale), w8a16 (x float), +smooth (SmoothQuant input_scale);",
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


# ---------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `qtriton report`."""
    parser.add_argument(
        "path", help="checkpoint: a save_quantized file, a Hugging Face folder (float, or compressed-tensors as "
        "save_pretrained writes it; sharded or not), a .safetensors.index.json, or a float .safetensors, "
        ".pt/.pth/.bin/.ckpt state dict, .npz"
    )
    parser.add_argument(
        "--original", help="for a save_quantized file: the float checkpoint it came from, to measure the int8 weights"
    )
    parser.add_argument("--wide", action="store_true", help="every method side by side, full names (over 100 columns)")
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
    """Run `qtriton report`; 0 on success. A bad checkpoint or option raises ValueError or
    FileNotFoundError, which the `qtriton` command prints as one line (exit status 2)."""
    rep = report_checkpoint(
        args.path, args.bits, args.group_size, progress=not args.no_progress, original=args.original
    )
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2))
    else:
        print(format_table(rep, wide=args.wide))
    return 0
