"""Inputs that several test files share (the GEMM's are in tests/gemm_cases.py).

Imported as `from tests.cases import ...` (pyproject's pytest `pythonpath` puts the
repository root on sys.path).
"""

from __future__ import annotations

import json
import struct

import torch

from qtriton.dispatch import backend_module
from qtriton.ops import quantize as qops
from qtriton.testing import assert_exact

#: Int8Linear's activation modes: (symmetric, input scale, static scale).
ACTIVATION_MODES = {
    "sym": (True, False, False),
    "asym": (False, False, False),
    "smoothed sym": (True, True, False),
    "smoothed asym": (False, True, False),
    "static": (True, False, True),
    "smoothed static": (True, True, True),
}


def edit_header(path, edit) -> None:
    """Rewrite a safetensors file's JSON header with edit(header) (the data bytes stay)."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    edit(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length :])


def assert_same_codes(got, expected) -> None:
    """(q, scale, zero point or None) equal to the oracle's, bit for bit."""
    for name, g, e in zip(("q", "scale", "zero_point"), got, expected, strict=True):
        if e is None:
            assert g is None, f"{name}: expected None"
        else:
            assert_exact(g, e, name)


def token_ids(rng, n: int) -> torch.Tensor:
    """(1, n) random token ids below 128 (the tiny test models' vocabularies hold them)."""
    return torch.from_numpy(rng.integers(0, 128, (1, n)))


def logits(model, ids) -> torch.Tensor:
    """A causal LM's float32 logits on ids, without autograd."""
    with torch.inference_mode():
        return model(ids).logits.float()


def activation_codes(backend: str, x, xt: torch.Tensor, spec, **launch):
    """(q, scale, zero point) of Int8Linear's activation quantize as spec (an ActivationQuant
    whose tensors are NumPy arrays) says, on one backend: "triton" the launcher itself (launch:
    its tile options), "torch" the torch backend, both on xt (x's values on the test device),
    "numpy" the oracle's backend on x."""
    if backend == "numpy":
        return backend_module("numpy").quantize_activations(x, spec)
    spec = spec.convert(lambda v: torch.as_tensor(v, device=xt.device))
    if backend == "torch":
        return backend_module("torch").quantize_activations(xt, spec)
    return qops.quantize_activations_unchecked(xt, **spec.arguments(), **launch)
