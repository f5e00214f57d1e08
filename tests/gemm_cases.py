"""Operands for the GEMM tests (test_matmul_kernels, test_matmul_paths, test_matmul_gluon,
test_w8a16): random integer codes, B in either layout, scales and zero points in every form
the launchers take, and the exact integer product the oracle gives for them.

Imported as `from tests.gemm_cases import ...` (pyproject's pytest `pythonpath` puts the
repository root on sys.path).
"""

from __future__ import annotations

import numpy as np
import torch

from qtriton import reference
from qtriton.testing import to_numpy

# Half-open ranges of the codes per dtype: rng.integers(lo, hi) covers every value.
CODE_RANGE = {"int8": (-128, 128), "uint8": (0, 256)}


def codes(rng, shape, dtype: str, device) -> torch.Tensor:
    """Uniform random int8 / uint8 codes of `shape` on `device`."""
    lo, hi = CODE_RANGE[dtype]
    return torch.from_numpy(rng.integers(lo, hi, shape).astype(np.dtype(dtype))).to(device)


def operand_b(rng, K: int, N: int, dtype: str, layout: str, device) -> torch.Tensor:
    """B (K, N): row-major ("kn") or the transpose of a contiguous (N, K) weight ("nk")."""
    if layout == "nk":
        return codes(rng, (N, K), dtype, device).t()
    return codes(rng, (K, N), dtype, device)


def scale(rng, kind: str, length: int, device):
    """A scale in 0.5..1.5: a Python float ("float"), a 0-d ("0d") or (1,) ("1") tensor, or
    one per row / column ("vec", `length` of them), float32."""
    values = rng.uniform(0.5, 1.5, length).astype(np.float32)
    if kind == "float":
        return float(values[0])
    if kind == "0d":
        return torch.tensor(values[0], device=device)
    if kind == "1":
        return torch.tensor(values[:1], device=device)
    if kind != "vec":
        raise ValueError(f"unknown scale kind {kind!r}")
    return torch.from_numpy(values).to(device)


def zero_point(rng, kind, length: int, device):
    """A zero point of one of these kinds:

    None; "int" (a Python int in -300..299); "big_int" (-2**20); "limit" (+-ZERO_POINT_LIMIT,
    a Python int); tensors: "0d", "1" ((1,)), "vec" (`length` values in -300..300, int32),
    "vec16" (the same as int16: any integer dtype up to int32 is taken unread), "big_vec"
    (values in +-2**20) and "limit_vec" (values within 600 below ZERO_POINT_LIMIT).
    """
    if kind is None:
        return None
    if kind == "int":
        return int(rng.integers(-300, 300))
    if kind == "big_int":
        return -(2**20)
    if kind == "limit":
        return int(rng.choice([-1, 1])) * reference.ZERO_POINT_LIMIT
    if kind == "big_vec":
        values = rng.integers(-(2**20), 2**20 + 1, length)
    else:
        values = rng.integers(-300, 301, length)
    if kind == "limit_vec":
        values = values + reference.ZERO_POINT_LIMIT - 300
    values = values.astype(np.int16 if kind == "vec16" else np.int32)
    if kind == "0d":
        return torch.tensor(values[0], device=device)
    if kind == "1":
        return torch.from_numpy(values[:1]).to(device)
    if kind not in ("vec", "vec16", "big_vec", "limit_vec"):
        raise ValueError(f"unknown zero-point kind {kind!r}")
    return torch.from_numpy(values).to(device)


def zero_points_np(a_zp, b_zp) -> tuple[np.ndarray, np.ndarray]:
    """The zero points as the oracle takes them (None is 0)."""
    return to_numpy(0 if a_zp is None else a_zp), to_numpy(0 if b_zp is None else b_zp)


def exact_product(a_q, b_q, a_zp=None, b_zp=None) -> np.ndarray:
    """The oracle's exact (A - a_zp) @ (B - b_zp), int64."""
    return reference.int_matmul(to_numpy(a_q), to_numpy(b_q), *zero_points_np(a_zp, b_zp))
