"""qtriton: INT8 quantization kernels in Triton, behind the lab's functions.

NumPy arrays run on the NumPy oracle, CPU tensors on torch ops, CUDA tensors on the
Triton kernels (see `qtriton.backend` to force one)."""

from qtriton.api import (
    calculate_memory_savings,
    compare_quantization_methods,
    dequantize_asymmetric,
    dequantize_per_channel,
    dequantize_per_token,
    dequantize_symmetric,
    fake_quantize,
    quantization_error,
    quantize_asymmetric,
    quantize_per_channel,
    quantize_per_token,
    quantize_symmetric,
    quantized_matmul,
)
from qtriton.backend import get_backend, set_backend, use_backend
from qtriton.nn import Int8Linear, QuantizationSummary, quantize_model
from qtriton.scheme import QuantScheme
from qtriton.serialization import load_quantized, save_quantized

__version__ = "0.1.0"

__all__ = [
    "calculate_memory_savings",
    "compare_quantization_methods",
    "dequantize_asymmetric",
    "dequantize_per_channel",
    "dequantize_per_token",
    "dequantize_symmetric",
    "fake_quantize",
    "get_backend",
    "Int8Linear",
    "load_quantized",
    "QuantizationSummary",
    "QuantScheme",
    "quantize_model",
    "save_quantized",
    "quantization_error",
    "quantize_asymmetric",
    "quantize_per_channel",
    "quantize_per_token",
    "quantize_symmetric",
    "quantized_matmul",
    "set_backend",
    "use_backend",
]

# SmoothQuant calibration and the per-layer accuracy view (qtriton.calibration).
from qtriton.calibration import Calibration, calibrate, layer_report  # noqa: E402

__all__ += ["Calibration", "calibrate", "layer_report"]

# End-to-end sensitivity and per-layer plans (qtriton.sensitivity).
from qtriton.sensitivity import Plan, Sensitivity, plan, sensitivity  # noqa: E402

__all__ += ["Plan", "Sensitivity", "plan", "sensitivity"]
