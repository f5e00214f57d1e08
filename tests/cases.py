"""Inputs that several test files share (the GEMM's are in tests/gemm_cases.py).

Imported as `from tests.cases import ...` (pyproject's pytest `pythonpath` puts the
repository root on sys.path).
"""

from __future__ import annotations

import json
import struct

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
