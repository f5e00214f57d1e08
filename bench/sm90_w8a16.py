"""Static sm_90a view of the W8A16 GEMM, no GPU needed: `python -m bench.sm90_w8a16`.

Compiles kernels/w8a16_matmul.py offline for Hopper (`triton.compile` with
GPUTarget("cuda", 90, 32)) for the first configs of each M bucket, specialized as a launch
on real shapes would be (16-byte-aligned pointers, N, K and row strides divisible by 16,
K-major B), and reads registers and spills (ptxas -v), shared memory, which MMA the dot
became (bf16/fp16 wgmma vs mma.sync), float64 ops and async copies from the PTX.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("unset TRITON_INTERPRET: the offline compile needs the compiled kernels")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from qtriton.kernels import w8a16_matmul as kernels  # noqa: E402
from qtriton.ops import w8a16 as ops  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
ALIGNED = ["a_ptr", "b_ptr", "c_ptr", "b_scale_ptr", "bias_ptr", "N", "K", "stride_am", "stride_bn", "stride_cm"]


def _ptxas() -> str:
    folder = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    # The newest ptxas the wheel ships: the plain one may be older than the PTX Triton emits.
    for name in ("ptxas-blackwell", "ptxas"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise SystemExit(f"no ptxas in {folder}")


def compile_stats(config: triton.Config, dtype: str) -> dict:
    fn = kernels._w8a16_matmul_kernel
    signature = {name: "i32" for name in fn.arg_names}
    signature.update({"a_ptr": f"*{dtype}", "b_ptr": "*i8", "c_ptr": f"*{dtype}", "b_scale_ptr": "*fp32", "bias_ptr": "*fp32"})
    constexprs = {
        "stride_ak": 1, "stride_bk": 1, "stride_cn": 1, "stride_b_scale": 1, "stride_bias": 1,
        "DOT_PRECISION": "tf32", "DOT_IN_FLOAT32": False, **config.kwargs,
    }
    signature.update({name: "constexpr" for name in constexprs})
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in ALIGNED}
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(source, target=TARGET, options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    ptx = compiled.asm["ptx"]
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    try:
        report = subprocess.run(
            [_ptxas(), "-v", "--gpu-name", "sm_90a", f.name, "-o", os.devnull], capture_output=True, text=True, check=True
        ).stderr
    finally:
        os.unlink(f.name)
    mma = sorted(set(re.findall(r"(wgmma\.mma_async\.\S+|mma\.sync\.\S+)", ptx)))
    return {
        "registers": int(re.search(r"Used (\d+) registers", report).group(1)),
        "spill_stores": int(re.search(r"(\d+) bytes spill stores", report).group(1)),
        "shared_bytes": compiled.metadata.shared,
        "mma": mma[0].rstrip(";") if mma else "none",
        "f64_ops": len(re.findall(r"\.f64\b", ptx)),
        "cp_async_16B": len(re.findall(r"cp\.async\.cg\.shared\.global \[[^]]+\], \[[^]]+\], 0x10", ptx)),
    }


def main() -> int:
    print("| dtype | M bucket | config (M x N x K, warps, stages) | registers | spill stores | shared | MMA | f64 | 16-byte cp.async |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for dtype in ("bf16", "fp16"):
        for bucket, pool in ((16, ops.DECODE_CONFIGS[:2]), (128, ops.SMALL_CONFIGS[:2]), (4096, ops.LARGE_CONFIGS[:3])):
            for config in pool:
                s = compile_stats(config, dtype)
                k = config.kwargs
                shape = f"{k['BLOCK_SIZE_M']}x{k['BLOCK_SIZE_N']}x{k['BLOCK_SIZE_K']}, {config.num_warps}, {config.num_stages}"
                print(
                    f"| {dtype} | {bucket} | {shape} | {s['registers']} | {s['spill_stores']} | {s['shared_bytes']} "
                    f"| `{s['mma']}` | {s['f64_ops']} | {s['cp_async_16B']} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
