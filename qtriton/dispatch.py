"""Which backend module and device run one call: the backends imported by name on first use.

Kept apart from the setting (`qtriton.backend`): the backend modules import the kernels'
launchers, which read the setting, so the setting must not import them. Here is the one place
that maps the setting and an input to a backend module (`resolve`) and a device
(`triton_device`); `qtriton.backend.chosen` says which backend the setting picks.
"""

from __future__ import annotations

import importlib

import torch

from qtriton.backend import chosen, interpreter_enabled, triton_device_error

_BACKEND_MODULES = {
    "numpy": "qtriton.numpy_backend",
    "torch": "qtriton.torch_backend",
    "triton": "qtriton.triton_backend",
}
_loaded_modules: dict = {}


def backend_module(name: str):
    """The module implementing backend name (the contract in docs/design.md). Imported on
    first use (the kernels decide at import whether they run compiled or in the
    interpreter), then a plain dict lookup that torch.compile traces without a break."""
    module = _loaded_modules.get(name)
    if module is None:
        module = _loaded_modules[name] = importlib.import_module(_BACKEND_MODULES[name])
    return module


def resolve(x) -> tuple[object, torch.device | None]:
    """(backend module, device) for a call whose main input is x: device is where its
    tensors go, None for the numpy backend (which takes arrays). Meta tensors (no values,
    shapes only: low-memory loaders, shape tracing) always go to the torch backend, whose
    ops give meta results of the right shapes and dtypes."""
    is_tensor = isinstance(x, torch.Tensor)
    if is_tensor and x.device.type == "meta":  # no values: the torch ops propagate shapes, whatever the setting
        return backend_module("torch"), x.device
    backend = chosen(x.device if is_tensor else None)
    if backend == "numpy":
        return backend_module(backend), None
    device = x.device if is_tensor else torch.device("cpu")
    return backend_module(backend), triton_device(device) if backend == "triton" else device


def triton_device(device: torch.device) -> torch.device:
    """Where the forced triton backend runs data that lives on device: there if the kernels
    can run there; CPU data on a GPU machine goes to the GPU (and its results come back)."""
    error = triton_device_error(device.type)
    if error is None:
        return device
    if device.type == "cpu" and torch.cuda.is_available() and not interpreter_enabled():
        return torch.device("cuda")
    raise RuntimeError(error)
