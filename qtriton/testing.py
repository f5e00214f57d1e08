"""Assertions for comparing fast paths with the oracle (used by the tests and by bench's smoke mode)."""

from __future__ import annotations

import numpy as np


def to_numpy(x) -> np.ndarray:
    """A NumPy copy of an array or tensor (any device, bf16 widened to float32)."""
    if isinstance(x, np.ndarray):
        return x
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return np.asarray(x)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _where(mask: np.ndarray, limit: int = 8) -> str:
    idx = np.argwhere(mask)
    shown = ", ".join(str(tuple(int(i) for i in row)) for row in idx[:limit])
    more = f" (+{len(idx) - limit} more)" if len(idx) > limit else ""
    return f"{len(idx)} of {mask.size} differ, at {shown}{more}"


def assert_exact(actual, expected, name: str = "result") -> None:
    """Integer (or bitwise float) equality, reporting the first mismatching indices."""
    a, e = to_numpy(actual), to_numpy(expected)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != expected {e.shape}"
    if np.issubdtype(a.dtype, np.floating) or np.issubdtype(e.dtype, np.floating):
        bad = ~((a == e) | (np.isnan(a) & np.isnan(e)))
    else:
        bad = a.astype(np.int64) != e.astype(np.int64)
    if bad.any():
        first = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{name}: {_where(bad)}; first {first}: got {a[first]!r}, expected {e[first]!r}"
        )


def assert_close(actual, expected, rtol: float, atol: float = 0.0, name: str = "result") -> None:
    """|actual - expected| <= atol + rtol * |expected| elementwise (NaN must match NaN)."""
    a = to_numpy(actual).astype(np.float64)
    e = to_numpy(expected).astype(np.float64)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != expected {e.shape}"
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    with np.errstate(invalid="ignore"):
        bad = (np.abs(a - e) > atol + rtol * np.abs(e)) | (nan_a != nan_e)
    bad &= ~(nan_a & nan_e)
    if bad.any():
        first = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{name}: {_where(bad)} beyond rtol={rtol}, atol={atol}; "
            f"first {first}: got {a[first]!r}, expected {e[first]!r}"
        )
