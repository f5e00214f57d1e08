"""python -m bench host: the Python cost of one int8 GEMM call on the host, without a GPU.

On a GPU a call costs its host-side Python (checks, the launch plan, TMA descriptors, the
autotuner's lookup and pre_hook) plus Triton's own launch; at 4096^3 the GPU needs about
100 us, so a host cost of that size would show in the timings (it does not depend on the
shape; SHAPE keeps the CPU's output allocation small). This times the first part
on the CPU: the real `qtriton.ops.scaled_matmul` on CPU tensors, with each Triton kernel
launch replaced by a no-op (nothing compiles, nothing runs) and, for the Gluon loop, the
launcher's sm_90 test answering yes. Triton's own launch cost (argument binding, the
driver call) is not in these numbers.

Rows: the Gluon loop autotuned (a cache hit of the autotuner, the pre_hook run), the Gluon
loop with a forced config, the tl.dot loop autotuned, each a median over many calls.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator


@contextlib.contextmanager
def _patched(*changes) -> Iterator[None]:
    """(object, attribute name, value) set for the block, where the object has the attribute."""
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in changes if hasattr(obj, name)]
    for obj, name, value in changes:
        if hasattr(obj, name):
            setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def _no_launches():
    """Every Triton kernel launch returns at once; an autotuner "benchmarks" each config as
    1 ms (its first call per key), so that later calls hit its cache as on a GPU. The
    launchers take CPU tensors only under the interpreter (read at call time; the kernels
    were decorated without it), and the launch rules must not take its shortcuts (the pool's
    first config instead of the autotuner): they are told "no interpreter", "sm_90", "no
    tuned file" (no card to name one)."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    from qtriton.ops import configs, matmul_gluon

    no = lambda *args, **kwargs: False  # noqa: E731
    return _patched(
        (JITFunction, "run", lambda self, *args, grid, warmup, **kwargs: None),
        (Autotuner, "_bench", lambda self, *args, config, **kwargs: [1.0, 1.0, 1.0]),
        (configs, "sm90", lambda device: True),
        (configs, "_tuned_config", lambda *args, **kwargs: None),
        (configs, "interpreter_enabled", no),
        (matmul_gluon, "interpreter_enabled", no),
    )


def _median_us(fn, calls: int) -> float:
    fn()  # the autotuner's first call per key, caches
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


# M and N small enough that allocating the output on the CPU (one torch.empty, which on a GPU
# comes from torch's caching allocator in microseconds) does not dominate; nothing else in a
# call's host work depends on the shape.
SHAPE = (256, 256, 4096)


def measure(M: int = SHAPE[0], N: int = SHAPE[1], K: int = SHAPE[2], calls: int = 2000) -> dict[str, float]:
    """Median microseconds of host Python per scaled_matmul call (see the module docstring)."""
    import torch

    from qtriton import ops
    from qtriton.ops import configs

    a = torch.zeros((M, K), dtype=torch.int8)
    b = torch.zeros((N, K), dtype=torch.int8).t()
    a_scale, b_scale = torch.ones(M), torch.ones(N)

    def call():
        return ops.scaled_matmul(a, b, a_scale, b_scale, out_dtype=torch.bfloat16)

    from qtriton.ops import matmul as matmul_ops
    from qtriton.ops import matmul_gluon

    if hasattr(matmul_ops, "scaled_matmul_unchecked"):  # Int8Linear's path: checked once, before
        from qtriton.operands import MatmulOperands

        operands = MatmulOperands(a_scale, b_scale)

        def unchecked():
            return matmul_ops.scaled_matmul_unchecked(a, b, operands, torch.bfloat16)
    else:
        def unchecked():
            return matmul_ops._scaled_matmul_checked(a, b, a_scale, b_scale, None, None, None, torch.bfloat16)

    a_desc, b_desc = matmul_gluon._descriptors(a, b, 128, 256, 128)
    blocks = {"a_desc": a_desc, "b_desc": b_desc, "BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 128}
    forced = configs.config_dict(configs.GLUON_CONFIGS[0])
    results = {}
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        with _no_launches():
            with ops.use_gemm("gluon"):
                results["gluon loop, autotuned"] = _median_us(call, calls)
                results["gluon loop, autotuned, unchecked entry"] = _median_us(unchecked, calls)
                with ops.use_config(forced):
                    results["gluon loop, forced config"] = _median_us(call, calls)
            with ops.use_gemm("tl"):
                results["tl.dot loop, autotuned"] = _median_us(call, calls)
                results["tl.dot loop, autotuned, unchecked entry"] = _median_us(unchecked, calls)
            # The Gluon launcher's parts the issue (#30) measured at ~64, ~59 and ~35 us.
            results["part: gluon_configs_for"] = _median_us(lambda: configs.gluon_configs_for(M, N, K), calls)
            results["part: two TMA descriptors"] = _median_us(lambda: matmul_gluon._descriptors(a, b, 128, 256, 128),
                                                              calls)
            results["part: the autotuner's pre_hook"] = _median_us(lambda: matmul_gluon._descriptor_blocks(blocks),
                                                                    calls)
    finally:
        os.environ.pop("TRITON_INTERPRET", None)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench host", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("python -m bench host needs the kernels decorated as compiled: unset TRITON_INTERPRET")
    import triton

    print(f"# host Python per scaled_matmul call, {'x'.join(map(str, SHAPE))} int8 -> bf16, CPU tensors, launches stubbed; "
          f"triton {triton.__version__}, python {sys.version.split()[0]}")
    for name, us in measure(calls=args.calls).items():
        print(f"{name:40} {us:8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
