"""The `triton` backend: the Triton kernels of `qtriton.ops`, behind the backend contract.

Imported lazily by the API: the kernels are decorated at import, and Triton decides then
whether they run compiled (GPU) or in the interpreter (TRITON_INTERPRET=1)."""

from __future__ import annotations

from qtriton import torch_backend
from qtriton.ops import matmul as matmul_ops
from qtriton.ops import quantize as quantize_ops
from qtriton.ops import w8a16 as w8a16_ops


def quantize(x, num_bits: int, symmetric: bool, granularity: str, axis: int | None, include_zero: bool = False,
             hadamard_block: int | None = None):
    """(q, scale, zero_point or None); scale shaped () / (C,) / x.shape[:-1] by granularity.
    include_zero (asymmetric, per token): each row's range includes 0. hadamard_block (per
    token): each row rotated first, in the kernel."""
    for name, value in (("include_zero", include_zero), ("hadamard_block", hadamard_block)):
        if value not in (False, None) and granularity != "token":
            raise ValueError(f"{name} is supported for per-token quantization, not granularity={granularity!r}")
    if granularity == "tensor":
        out = quantize_ops.quantize_per_tensor_unchecked(x, num_bits, symmetric)
    elif granularity == "channel":
        out = quantize_ops.quantize_per_channel_unchecked(x, axis, num_bits, symmetric)
    else:
        out = quantize_ops.quantize_per_token_unchecked(x, num_bits, symmetric, include_zero=include_zero,
                                                       hadamard_block=hadamard_block)
    return (*out, None) if symmetric else out


def quantize_activations(rows, spec):
    """Int8Linear's activations (reference.quantize_activations) in one kernel launch, as
    spec (a `qtriton.model.scheme.ActivationQuant`) says."""
    return quantize_ops.quantize_activations_unchecked(rows, **spec.arguments())


def weight_only_matmul(a, b_q, operands, out_dtype):
    """W8A16: (a @ b_q) * b_scale + bias (a MatmulOperands' b_scale and bias), the weight
    dequantized tile by tile in the kernel."""
    return w8a16_ops.w8a16_matmul_unchecked(a, b_q, operands, out_dtype)


def hadamard_rotate(x, block: int):
    """The rotation alone (weights, tests): torch ops; the kernels rotate only inside the
    quantize kernel, and a weight is rotated once, when it is quantized."""
    return torch_backend.hadamard_rotate(x, block)


def dequantize(q, scale, zero_point, granularity: str, axis: int | None, out_dtype):
    return quantize_ops.dequantize_unchecked(q, scale, zero_point, granularity=granularity, axis=axis, out_dtype=out_dtype)


def fake_quantize(x, num_bits: int, symmetric: bool):
    return quantize_ops.fake_quantize_unchecked(x, num_bits, symmetric)


# quantized_matmul(a_q, b_q, operands, out_dtype): the API (or Int8Linear) has checked the
# arguments into a MatmulOperands, so the backend entry is the launcher behind
# ops.scaled_matmul's checks itself (one call to the custom op).
quantized_matmul = matmul_ops.scaled_matmul_unchecked
