"""The scaled int8 GEMM's operands besides A and B, as one object from the API down to the
kernel launch (triton_kernels' PrecisionConfig):

    C = ((A - a_zp) @ (B - b_zp)) * a_scale * b_scale + bias

`qtriton.checks.matmul` checks and normalises them into a MatmulOperands; the backends'
`quantized_matmul(a_q, b_q, operands, out_dtype)` and qtriton/ops/matmul.py's launcher take
it whole, so no layer lists the optional operands positionally or in its own order. The
public entries keep their signatures: `qtriton.quantized_matmul(a_q, a_scale, b_q,
b_scale, ...)` (the lab's order, the oracle's) and `qtriton.ops.scaled_matmul(a_q, b_q,
a_scale, b_scale, ...)` (torch's) both build one.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class MatmulOperands:
    """What the GEMM's epilogue reads besides A @ B, by name.

    a_scale / b_scale: a Python float, or a float tensor / array 0-d, (1,) or per row (M,)
    / per column (N,); a_zp / b_zp: a Python int or an integer tensor / array of the same
    shapes (0: none); bias: (N,) or None. a_rowsum (M,) / b_colsum (N,): optional int32
    sums of A's rows / B's columns (the stored codes), which the triton backend's
    zero-point correction uses instead of computing them (Int8Linear keeps its weight's);
    the other backends ignore them. Built unchecked: `qtriton.checks.matmul` checks one.
    """

    a_scale: Any = 1.0
    b_scale: Any = 1.0
    a_zp: Any = 0
    b_zp: Any = 0
    bias: Any = None
    a_rowsum: Any = None
    b_colsum: Any = None

    def replace(self, **changes) -> MatmulOperands:
        """A copy with some fields changed (dataclasses.replace)."""
        return dataclasses.replace(self, **changes)
