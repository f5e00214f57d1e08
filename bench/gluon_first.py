"""python -m bench.gluon_first: the Gluon main loop's first launch on this machine, alone.

The Gluon loop (kernels/matmul_gluon.py) is the package's one kernel with an mbarrier ring:
a wrong phase or byte count would hang the GPU, not fail a test. bench/gpu_check.sh runs
this in its own process under a short time limit before the test suite, so a hang costs
seconds, and leaves the Gluon tests and benchmark rows out when it fails.

One forced config (GLUON_CONFIGS' first, no autotuning), one small ragged problem, exact
against torch._int_mm, then the scaled bf16 output against the same product in torch ops.
Exit status: 0 passed, 1 wrong result or error, 3 not applicable here (no sm_90 card, no
Gluon): printed with the reason.
"""

from __future__ import annotations

import sys
import time

NOT_APPLICABLE = 3


def main() -> int:
    import torch

    from qtriton import ops
    from qtriton.ops import configs

    if not torch.cuda.is_available():
        print("gluon first launch: not applicable (no CUDA device)")
        return NOT_APPLICABLE
    device = torch.device("cuda", torch.cuda.current_device())
    if not configs.sm90(device) or not configs.gluon_available():
        print(f"gluon first launch: not applicable on {torch.cuda.get_device_name(device)} "
              f"(sm_90: {configs.sm90(device)}, Gluon: {configs.gluon_available()})")
        return NOT_APPLICABLE
    from qtriton.ops import matmul_gluon

    launches = []
    launch = matmul_gluon.launch
    matmul_gluon.launch = lambda *args, **kwargs: launches.append(1) or launch(*args, **kwargs)
    M, N, K = 200, 264, 1040  # ragged in M and N, 9 K steps of 128: every slot refilled twice
    torch.manual_seed(0)
    a = torch.randint(-128, 128, (M, K), dtype=torch.int8, device=device)
    b = torch.randint(-128, 128, (N, K), dtype=torch.int8, device=device).t()
    config = configs.config_dict(configs.GLUON_CONFIGS[0])
    start = time.perf_counter()
    with ops.use_gemm("gluon"):
        out = ops.int8_matmul(a, b, config=config)
        torch.cuda.synchronize()
        first = time.perf_counter() - start
        a_scale = torch.rand(M, device=device) + 0.5
        scaled = ops.scaled_matmul(a, b, a_scale, 2.0, out_dtype=torch.bfloat16, config=config)
        torch.cuda.synchronize()
    if len(launches) != 2:
        print(f"gluon first launch: FAILED, the Gluon kernel ran {len(launches)} times, not 2 (a fallback?)")
        return 1
    # torch._int_mm needs M > 16 and K, N multiples of 8: pad N to 272 for the reference.
    expected = torch._int_mm(a, torch.nn.functional.pad(b, (0, 272 - N)))[:, :N]
    wrong = (out != expected).nonzero()
    if len(wrong):
        print(f"gluon first launch: FAILED, {len(wrong)} of {out.numel()} int32 elements wrong, "
              f"first at {wrong[0].tolist()}: {out[tuple(wrong[0])]} != {expected[tuple(wrong[0])]}")
        return 1
    reference = expected.double() * a_scale.double()[:, None] * 2.0
    bad = ((scaled.double() - reference).abs() > 2.0**-8 * reference.abs()).sum().item()
    if bad:  # bf16 keeps 8 bits: within one rounding of the exact scaled product
        print(f"gluon first launch: FAILED, {bad} bf16 outputs beyond 2^-8 of the exact scaled product")
        return 1
    print(f"gluon first launch: ok on {torch.cuda.get_device_name(device)}, {M}x{N}x{K} exact, "
          f"config {config}, {first:.1f} s to the first result (compile included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
