"""Launchers of the Triton kernels in `qtriton.kernels`: torch tensors on CUDA, or on CPU
under TRITON_INTERPRET=1. Each public entry checks its arguments by the rules of
`qtriton.checks`, from metadata and Python numbers only: nothing here syncs with the host.

What a dtype or a Python number already rules out is refused (a TypeError / ValueError
naming the argument): float8 data, an int64 (or uint32 / uint64) zero-point tensor, a
Python scale that is not a normal float32, a Python zero point out of range, meta tensors.
Values held in tensors are never read, so these ranges are the caller's duty:

- data without NaN / Inf (a slice holding them gets a NaN scale, q = 0);
- scale tensors positive, finite and normal once in float32 (a NaN scale is passed on);
- zero-point tensors: |zp| <= 2**24 for `scaled_matmul` (the exactness of the zero-point
  correction is proved for that bound), not -2**31 for `dequantize`;
- a bias finite once rounded to float32.

`qtriton.api` checks those values where it can see them (off CUDA, not while compiling)."""

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
