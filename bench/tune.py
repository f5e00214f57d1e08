"""Autotune the int8 GEMM on this card for the benchmark's shapes and save the winners
(qtriton.ops.matmul.tune / save_tuned_configs): qtriton/configs/<card>.json by default,
which qtriton loads on the first CUDA launch on a card of that name."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.matmul import FULL_SHAPES, QUICK_SHAPES


def tune(quick: bool, out: Path | None) -> int:
    import torch

    if not torch.cuda.is_available():
        print("tune: needs a CUDA GPU (the autotuner times real launches)", file=sys.stderr)
        return 1
    from qtriton.ops import matmul as ops

    seen, shapes = set(), []
    for m, n, k in QUICK_SHAPES if quick else FULL_SHAPES:
        key = ops.shape_key(m, n, k, b_k_major=True)  # one tuning per M bucket
        if key not in seen:
            seen.add(key)
            shapes.append((m, n, k))
    print(f"tuning {len(shapes)} shapes: {shapes}", flush=True)
    data = ops.tune(shapes)
    if out is not None and out.is_dir():
        out = out / f"{ops.device_slug(data['device'])}.json"
    path = ops.save_tuned_configs(data, out)
    for key, config in data["configs"].items():
        print(f"{key}: {config}")
    print(f"wrote {path}")
    return 0
