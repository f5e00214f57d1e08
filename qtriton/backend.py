"""Which implementation runs a call: the NumPy oracle, torch ops, or the Triton kernels.

`auto` (the default) picks by input: NumPy arrays -> numpy (the oracle), CPU tensors ->
torch, CUDA tensors -> triton. `QTRITON_BACKEND` sets the default for a process;
`set_backend` and the `use_backend` context manager override it in code.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

BACKENDS = ("auto", "numpy", "torch", "triton")

_override: str | None = None


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


def get_backend() -> str:
    """The backend setting in force: set_backend/use_backend, else $QTRITON_BACKEND, else auto."""
    if _override is not None:
        return _override
    setting = os.environ.get("QTRITON_BACKEND", "auto").strip().lower() or "auto"
    if setting not in BACKENDS:
        raise ValueError(f"environment variable QTRITON_BACKEND={setting!r}: backend must be one of {BACKENDS}")
    return setting


def set_backend(name: str | None) -> None:
    """Force a backend for this process; None goes back to $QTRITON_BACKEND / auto."""
    global _override
    _override = None if name is None else _check(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run a block with a given backend, restoring the previous setting after."""
    global _override
    previous, _override = _override, _check(name)
    try:
        yield
    finally:
        _override = previous


def interpreter_enabled() -> bool:
    """True when Triton kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_device_error(device_type: str) -> str | None:
    """Why the Triton kernels cannot run on tensors of this device type, or None if they can."""
    if device_type == "cuda":
        if interpreter_enabled():
            return "TRITON_INTERPRET=1 is set: Triton kernels run in the CPU interpreter, pass CPU tensors"
        return None
    if device_type == "cpu":
        if interpreter_enabled():
            return None
        return (
            "the triton backend needs a CUDA GPU, or Triton's interpreter for CPU tensors: "
            "set TRITON_INTERPRET=1 in the environment before importing qtriton"
        )
    return f"the triton backend runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), not on {device_type!r}"
