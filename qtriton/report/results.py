"""What `qtriton report` measured: the reports of float and quantized checkpoints, and their JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


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
    #: The share of the linear layers' FLOPs (in * out per token; the output head aside) that
    #: run int8 x int8 (W8A8; not W8A16 or float), as planning.int8_fraction counts it.
    int8_flops: float | None = None
    #: None where every linear layer is known; else over what the fraction is taken.
    int8_flops_note: str | None = None

    def to_dict(self) -> dict:
        def finite(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "kind": "qtriton",
            "path": self.path,
            "original": self.original,
            "bytes_stored": self.bytes_stored,
            "bytes_original": self.bytes_original,
            "int8_flops": self.int8_flops,
            "int8_flops_note": self.int8_flops_note,
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
