"""Launchers of the Triton kernels in `qtriton.kernels`: torch tensors on CUDA, or on CPU
under TRITON_INTERPRET=1. No validation beyond what a launch needs (the lab API in
`qtriton.api` validates), and nothing here syncs with the host."""

from qtriton.ops.matmul import int8_matmul, scaled_matmul, use_config, use_gemm
from qtriton.ops.quantize import (
    dequantize,
    fake_quantize,
    quantize_per_channel,
    quantize_per_tensor,
    quantize_per_token,
)

__all__ = [
    "dequantize",
    "fake_quantize",
    "int8_matmul",
    "quantize_per_channel",
    "quantize_per_tensor",
    "quantize_per_token",
    "scaled_matmul",
    "use_config",
    "use_gemm",
]
