"""qtriton: INT8 quantization kernels in Triton, behind the lab's functions.

NumPy arrays run on the NumPy oracle, CPU tensors on torch ops, CUDA tensors on the
Triton kernels (see `qtriton.backend` to force one).

The names below are imported on first use (PEP 562), so that `import qtriton` and the
`qtriton` command's --help and --version cost no torch import; `from qtriton import X`
and `qtriton.X` work as for any package.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Each public name -> the module that defines it.
_EXPORTS = {
    **dict.fromkeys(
        [
            "calculate_memory_savings",
            "compare_quantization_methods",
            "dequantize_asymmetric",
            "dequantize_per_channel",
            "dequantize_per_token",
            "dequantize_symmetric",
            "fake_quantize",
            "hadamard_rotate",
            "quantization_error",
            "quantize_asymmetric",
            "quantize_per_channel",
            "quantize_per_token",
            "quantize_symmetric",
            "quantized_matmul",
        ],
        "qtriton.api",
    ),
    **dict.fromkeys(["get_backend", "set_backend", "use_backend"], "qtriton.backend"),
    **dict.fromkeys(["from_pretrained", "save_pretrained"], "qtriton.hf"),
    **dict.fromkeys(["Int8Linear", "QuantizationSummary", "quantize_model"], "qtriton.nn"),
    "QuantScheme": "qtriton.scheme",
    **dict.fromkeys(["load_quantized", "save_quantized"], "qtriton.serialization"),
    # SmoothQuant calibration and the per-layer accuracy view.
    **dict.fromkeys(["Calibration", "calibrate", "layer_report"], "qtriton.calibration"),
    # End-to-end sensitivity and per-layer plans.
    **dict.fromkeys(["Plan", "Sensitivity", "int8_flop_fraction", "plan", "sensitivity"], "qtriton.planning"),
}

__all__ = sorted(_EXPORTS, key=str.lower)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        try:  # a submodule: qtriton.reference, qtriton.testing, ...
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
