"""Moving scales and zero points onto a device without a host sync."""

from __future__ import annotations

import numbers

import numpy as np
import torch


def device_tensor(value, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """value (a tensor, a Python/NumPy number or a host array) as a dtype tensor on device.

    A number becomes a device-side fill: torch.as_tensor would copy it from the host and
    wait for the device, a sync on the CUDA hot path. Host arrays are copied either way."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype)
    if isinstance(value, numbers.Number):
        return torch.full((), value, dtype=dtype, device=device)
    return torch.from_numpy(np.ascontiguousarray(value)).to(device=device, dtype=dtype)
