"""Which implementation runs a call: the NumPy oracle, torch ops, or the Triton kernels.

`auto` (the default) picks by input: NumPy arrays -> numpy (the oracle), CPU tensors ->
torch, CUDA tensors -> triton. `QTRITON_BACKEND` sets the default for a process (checked,
with `QTRITON_GEMM`, the GEMM's main loop, whenever the setting is read, on every backend);
`set_backend` and the `use_backend` context manager override it in code, for the current
thread or asyncio task only (a `contextvars.ContextVar`): another thread's setting never
leaks into this one. A new thread starts from $QTRITON_BACKEND / auto, not from its
parent's override (pass it on with `contextvars.copy_context().run`). torch.compile bakes
the setting in force when it traces a graph into it: set it before compiling
(`torch.compiler.reset()` drops graphs traced under another setting).

Triton's interpreter (TRITON_INTERPRET=1) is not thread-safe: run interpreted kernels
from one thread at a time. Compiled kernels on CUDA may be launched from several threads.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import torch

BACKENDS = ("auto", "numpy", "torch", "triton")
#: The GEMM's main loops (qtriton/ops/configs.py picks one; $QTRITON_GEMM or use_gemm asks).
GEMM_LOOPS = ("tl", "gluon")

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("qtriton_backend", default=None)


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


def _assume_constant_result(fn):
    """What `torch.compiler.assume_constant_result` does to fn (it marks it; tests/test_backend.py
    checks that the public decorator still marks it so), without its `import torch._dynamo`,
    which would add seconds to `import qtriton` for every program that never compiles."""
    fn._dynamo_marked_constant = True
    return fn


# torch.compile reads the setting once, when it traces, and bakes it into the graph. Said
# here rather than left to the torch version: torch 2.15 traces ContextVar.get without a
# guard (the same baking, silently), torch 2.11 cannot trace it and breaks fullgraph=True.
@_assume_constant_result
def get_backend() -> str:
    """The backend setting in force: set_backend/use_backend, else $QTRITON_BACKEND, else auto.
    Under torch.compile, the setting when the graph was traced."""
    override = _override.get()
    if override is not None:
        return override
    setting = os.environ.get("QTRITON_BACKEND", "auto").strip().lower() or "auto"
    if setting not in BACKENDS:
        raise ValueError(f"environment variable QTRITON_BACKEND={setting!r}: backend must be one of {BACKENDS}")
    gemm_environment()  # checked with QTRITON_BACKEND, whichever backend runs: a typo never goes unseen
    return setting


def check_gemm(loop, name: str) -> str:
    if loop not in GEMM_LOOPS:
        raise ValueError(f"{name} must be one of {', '.join(GEMM_LOOPS)}, got {loop!r}")
    return loop


def gemm_environment() -> str | None:
    """$QTRITON_GEMM checked (a main loop of GEMM_LOOPS, any case and spaces), None if unset."""
    env = os.environ.get("QTRITON_GEMM", "").strip().lower()
    return check_gemm(env, "QTRITON_GEMM") if env else None


def set_backend(name: str | None) -> None:
    """Force a backend for the current thread (or asyncio task); None goes back to
    $QTRITON_BACKEND / auto."""
    _override.set(None if name is None else _check(name))


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run a block with a given backend in the current thread (or asyncio task), restoring
    the previous setting after."""
    token = _override.set(_check(name))
    try:
        yield
    finally:
        _override.reset(token)


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


def chosen(device: torch.device | None) -> str:
    """The backend the setting in force picks for data on device (None: NumPy arrays):
    the setting itself, or under `auto` numpy for arrays, triton for CUDA tensors, torch
    for the others."""
    setting = get_backend()
    if setting != "auto":
        return setting
    return "numpy" if device is None else "triton" if device.type == "cuda" else "torch"


def device_problem(device: torch.device) -> str | None:
    """Why the backend in force cannot run a layer whose tensors are on device, or None."""
    if chosen(device) == "triton":
        return triton_device_error(device.type)
    if device.type not in ("cpu", "cuda"):
        return f"qtriton runs on CPU and CUDA tensors, not on {device.type!r}"
    return None
