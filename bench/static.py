"""python -m bench static: compile the production kernels for Hopper (sm_90a) on a machine
without a GPU, and read what each compiled kernel costs: registers, spills, shared memory,
f64 instructions, whether the int8 dot is a wgmma and whether global loads are 128 bits wide,
the K loop's length and how many wgmma groups it leaves in flight, TMA use and CTAs per SM.

The launches are the package's own: the real `qtriton.ops` launchers run on small CPU
tensors while a hook turns every Triton kernel launch into a compile for sm_90a (Triton's
compiler and the ptxas it ships, a stub driver whose target is sm_90a, nothing launched).
So every argument, constexpr flag, block size and num_warps is whatever the launchers pass
today: a new kernel argument, a new kernel or a new config in a pool shows up here without
an edit. What this module chooses is only which calls to make (VARIANTS), which configs
to force on the GEMM (each M bucket's pool, from `configs_for`; the Gluon loop's from
`gluon_configs_for`) and, for the variants named "gluon: ...", the Gluon main loop
(`use_gemm("gluon")`, with the launcher's sm_90 test answering yes).

Needs a process in which `qtriton.kernels` was imported with TRITON_INTERPRET unset (the
kernels are then compiled JITFunctions); `python -m bench static` is one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# sm_90a: H100 / H200. 227 KB is the most dynamic shared memory one block may use there.
TARGET_ARCH = 90
SHARED_LIMIT_BYTES = 227 * 1024
# The smallest M of a wgmma instruction: tiles this tall or taller should use it.
WGMMA_MIN_BLOCK_M = 64
# Int8Linear's asymmetric activations against the plain int8 GEMM of the same config: the
# zero points belong in the epilogue, so its K loop may cost at most this much more (#11).
LOOP_PAIRS = {"int8 A + zp per row + bias -> bf16, B nk": "int8 + bias -> bf16, B nk",
              "gluon: int8 A + zp per row + bias -> bf16, B nk": "gluon: int8 + bias -> bf16, B nk"}
LOOP_RATIO_LIMIT = 1.25
# The Gluon main loop (kernels/matmul_gluon.py) exists to keep wgmma groups in flight across
# K steps: its K loop must wait with at least this many outstanding, and load through TMA.
GLUON_KERNEL = "_int8_matmul_gluon_kernel"
GLUON_MIN_WAIT_DEPTH = 1
# The Gluon variant compiled under every config of its pool even in the subset (CI): each
# Gluon config is checked there, the other variants under the pool's first.
GLUON_EVERY_CONFIG = "gluon: int8 row/col scales -> bf16, B nk"
# Hopper's SM: 64 K registers (allocated 256 per warp), 228 KB of shared memory (1 KB of it
# reserved per CTA), 64 warps, 32 CTAs.
SM_REGISTERS = 65536
SM_SHARED_BYTES = 228 * 1024
CTA_RESERVED_SHARED_BYTES = 1024
SM_MAX_WARPS = 64
SM_MAX_CTAS = 32

# Violations known and tracked: (a regular expression over a row's label "<family> <variant>
# <config>", the rule), each naming the issue that fixes it. check() reports them apart and
# does not fail on them; tests/test_static.py fails once an entry matches nothing, so that
# a fixed entry gets deleted and the check is strict again.
# The rotated per-token kernels (the block Hadamard in registers, issue #28) against the same
# call unrotated: SASS instructions per element at most this many times the unrotated one's.
# The butterflies alone add log2(b) FADDs per element; the rest is moving pairs between threads.
ROTATION_PAIRS = {
    f"{rotated} {dtype}": f"{plain} {dtype}"
    for rotated, plain in (
        ("per token single pass sym, hadamard 4096", "per token single pass sym"),
        ("Int8Linear activations sym, hadamard 64", "per token single pass sym"),
        ("Int8Linear activations asym, hadamard 512", "Int8Linear activations asym"),
        ("Int8Linear activations smoothed static, hadamard 2048", "Int8Linear activations smoothed static"),
    )
    for dtype in ("float32", "float16", "bfloat16")
}
ROTATION_RATIO_LIMIT = 2.0

KNOWN_VIOLATIONS: list[tuple[str, str]] = [
    # Empty since issue #11's GEMM work (rank-1 epilogue, spilling zero-point tiles pruned):
    # the asymmetric-activation GEMM no longer spills. An entry is (label regex, rule).
]

BEGIN = "<!-- static:begin -->"
END = "<!-- static:end -->"


@dataclasses.dataclass
class Compiled:
    """One kernel compiled for sm_90a, as a launcher launched it."""

    family: str  # "gemm" or "quantize"
    variant: str  # which public call launched it
    kernel: str
    config: str  # the launch's block sizes, warps and stages
    block_m: int | None
    picked_by_int8_linear: bool  # a config the tuned / Int8Linear path can run
    registers: int = 0
    spill_bytes: int = 0  # bytes of local-memory stores + loads (STL/LDL) in the SASS
    shared_bytes: int = 0
    f64_instructions: int = 0
    int8_dot: str = "none"  # "wgmma" (wgmma.mma_async ... .s8), "mma.sync" or "none" (no int8 dot)
    global_loads_128: bool = False
    loop_sass: int = 0  # SASS instructions in the kernel's longest loop: the GEMM's K loop
    # wgmma groups the K loop leaves in flight at its wait (WARPGROUP.DEPBAR.LE gsb0, N: the
    # smallest N in the loop); None: no wgmma wait in the loop.
    wait_depth: int | None = None
    tma: bool = False  # tensor loads through TMA (cp.async.bulk.tensor)
    # The K loop's TMA loads (UTMALDG: a slot's refill), those of them not separated from the
    # loop's last wgmma wait before them by a CTA barrier (BAR.SYNC 0: the warpgroups that
    # read the slot have all waited), and the loop's CTA barriers.
    loop_tma_loads: int = 0
    unguarded_refills: int = 0
    loop_barriers: int = 0
    num_warps: int = 0
    ctas_per_sm: int = 0  # resident CTAs an SM can hold, from registers, shared memory, warps
    fma_instructions: int = 0  # fma.*.f32 in the PTX: a multiply and an add rounded once
    body_sass: int = 0  # SASS instructions up to the last EXIT (not the out-of-line slow paths)
    tile_elements: int = 0  # elements of one program's tile (the product of its BLOCK_SIZE_*)
    error: str = ""

    @property
    def sass_per_element(self) -> float | None:
        """Thread instructions per element of a quantize kernel that runs straight through
        (no loop): body_sass x 32 lanes x warps / tile elements, an upper bound on those
        executed (every branch counted); None for the rest."""
        if self.family != "quantize" or self.loop_sass or not self.tile_elements or self.error:
            return None
        return self.body_sass * 32 * self.num_warps / self.tile_elements

    @property
    def label(self) -> str:
        return f"{self.family} {self.variant} {self.config}"


# ---------------------------------------------------------------------------- the hook
class _Sm90Driver:
    """What JITFunction.run asks of the active driver before it compiles: a device, a
    stream and the target. Nothing else is reached when no kernel is launched."""

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", TARGET_ARCH, 32)


@contextlib.contextmanager
def compile_launches() -> Iterator[list]:
    """Within the block every Triton kernel launch compiles for sm_90a and returns without
    running; yields the list that collects (JITFunction, launch kwargs, CompiledKernel).
    The output tensors of the launchers stay uninitialised."""
    from triton.runtime.driver import driver
    from triton.runtime.jit import JITFunction

    from qtriton.kernels import matmul, quantize
    from qtriton.ops import configs

    modules = (matmul, quantize) + ((configs._gluon_kernels(),) if configs.gluon_available() else ())
    kernels = [obj for module in modules for obj in vars(module).values()
               if isinstance(obj, JITFunction) or type(obj).__name__ == "InterpretedFunction"]
    if not kernels or not all(isinstance(obj, JITFunction) for obj in kernels):
        raise RuntimeError(
            "qtriton.kernels was imported under TRITON_INTERPRET=1: the kernels are interpreted, "
            "not compiled; run `python -m bench static` in a fresh process without it"
        )
    launches: list = []
    original_run = JITFunction.run

    def compile_only(self, *args, grid, warmup, **kwargs):
        kernel = original_run(self, *args, grid=grid, warmup=True, **kwargs)
        launches.append((self, dict(kwargs), kernel))
        return kernel

    previous_env = os.environ.get("TRITON_INTERPRET")
    # Not driver.active: reading it would create the default driver, which needs a GPU.
    previous_driver = getattr(driver, "_active", None)
    driver.set_active(_Sm90Driver())
    JITFunction.run = compile_only
    # The launcher's "is this an sm_90 card" test, for the CPU tensors launched here.
    original_sm90 = configs.sm90
    configs.sm90 = lambda device: True
    # The launchers accept CPU tensors only under the interpreter (their device check reads
    # the variable at call time); the kernels themselves were decorated without it.
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield launches
    finally:
        JITFunction.run = original_run
        configs.sm90 = original_sm90
        driver.set_active(previous_driver)
        if previous_env is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = previous_env


# ------------------------------------------------------------------------ the analysis
def _tool(name: str) -> str:
    """A CUDA binary shipped in Triton's wheel (cuobjdump)."""
    from triton.backends.nvidia import compiler

    return str(Path(compiler.__file__).parent / "bin" / name)


_F64 = re.compile(r"^\s*[a-z][\w.]*\.f64\b", re.MULTILINE)
_FMA_F32 = re.compile(r"^\s*fma\.[\w.]*f32\b", re.MULTILINE)
_WGMMA_S8 = re.compile(r"\bwgmma\.mma_async\S*\.s8\b")
_MMA_SYNC_S8 = re.compile(r"\bmma\.sync\S*\.s8\b")
# A 128-bit global load: into registers (ld.global.v4.b32, .v2.b64, ...) or, in pipelined
# GEMM loops, straight into shared memory (cp.async of 16 bytes).
_LOAD_128 = re.compile(
    r"\bld\.global\S*\.(v4\.[busf]32|v2\.[busf]64)\b|\bcp\.async\.c[ag]\.shared\.global[^;]*,\s*(16|0x10)\s*[;,]"
)


# Spill code in SASS: stores to and loads from local memory (STL / LDL), with their width.
_LOCAL_ACCESS = re.compile(r"\b(?:STL|LDL)((?:\.[A-Z0-9]+)*)")
_WIDTH_BYTES = {"U8": 1, "S8": 1, "U16": 2, "S16": 2, "64": 8, "128": 16}


def local_memory_bytes(sass: str) -> int:
    """Bytes a thread moves to and from local memory per pass over the code (the STL and
    LDL instructions' widths summed): ptxas's "spill stores" + "spill loads" when, as in
    these kernels, nothing else lives in local memory."""
    total = 0
    for suffixes in _LOCAL_ACCESS.findall(sass):
        widths = [_WIDTH_BYTES[part] for part in suffixes.split(".") if part in _WIDTH_BYTES]
        total += widths[-1] if widths else 4
    return total


def analyse(kernel, row: Compiled) -> Compiled:
    """Fill row from a CompiledKernel: shared memory from Triton's metadata, registers and
    spills from the cubin Triton built (cuobjdump: resource usage and SASS; a second ptxas
    run would not use Triton's flags and allocates registers differently), the rest from
    the PTX."""
    ptx = kernel.asm["ptx"]
    row.shared_bytes = int(kernel.metadata.shared)
    row.f64_instructions = len(_F64.findall(ptx))
    row.fma_instructions = len(_FMA_F32.findall(ptx))
    row.int8_dot = "wgmma" if _WGMMA_S8.search(ptx) else "mma.sync" if _MMA_SYNC_S8.search(ptx) else "none"
    row.global_loads_128 = bool(_LOAD_128.search(ptx))
    with tempfile.TemporaryDirectory(prefix="qtriton-static-") as tmp:
        cubin = Path(tmp, "k.cubin")
        cubin.write_bytes(kernel.asm["cubin"])
        usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", str(cubin)],
                               capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([_tool("cuobjdump"), "--dump-sass", str(cubin)],
                              capture_output=True, text=True, check=True).stdout
    row.registers = int(re.search(r"REG:(\d+)", usage).group(1))
    row.spill_bytes = local_memory_bytes(sass)
    row.loop_sass = longest_loop(sass)
    row.body_sass = body_instructions(sass)
    row.wait_depth = loop_wait_depth(sass)
    row.tma = bool(_TMA.search(ptx))
    row.loop_tma_loads, row.unguarded_refills, row.loop_barriers = refill_barriers(sass)
    row.num_warps = int(kernel.metadata.num_warps)
    row.ctas_per_sm = ctas_per_sm(row.registers, row.shared_bytes, row.num_warps)
    return row


def ctas_per_sm(registers: int, shared_bytes: int, num_warps: int) -> int:
    """CTAs of this kernel one Hopper SM holds at once: the least of what its registers
    (256 per warp at a time), shared memory and warp slots allow."""
    warp_registers = -(-registers * 32 // 256) * 256
    by_registers = SM_REGISTERS // (warp_registers * num_warps) if registers else SM_MAX_CTAS
    by_shared = SM_SHARED_BYTES // (shared_bytes + CTA_RESERVED_SHARED_BYTES)
    return min(by_registers, by_shared, SM_MAX_WARPS // num_warps, SM_MAX_CTAS)


# A branch in cuobjdump's SASS: "/*0f70*/  @P0 BRA 0xf50 ;" (address, target).
_BRANCH = re.compile(r"/\*([0-9a-f]+)\*/[^;/]*?\bBRA(?:\.\w+)*\s+(?:`?\(?)0x([0-9a-f]+)")
_SASS_INSTRUCTION_BYTES = 16
# An unpredicated EXIT: "/*99c0*/  EXIT ;". Code after the kernel's last one is out of line
# (an mbarrier wait's retry loop), whose branch back into the body is no loop of the body.
_EXIT = re.compile(r"/\*([0-9a-f]+)\*/\s+EXIT\s*;")
_WGMMA_WAIT = re.compile(r"/\*([0-9a-f]+)\*/\s+WARPGROUP\.DEPBAR\.LE\s+gsb0,\s*0x([0-9a-f]+)")
_TMA = re.compile(r"\bcp\.async\.bulk\.tensor\b")
# A CTA-wide barrier (bar.sync 0 over every thread: no thread count), a TMA load issue, in
# cuobjdump SASS ("/*2090*/  BAR.SYNC.DEFER_BLOCKING 0x0 ;", "/*20c0*/  @UP0 UTMALDG.2D [UR16], [UR6] ;").
_CTA_BARRIER = re.compile(r"/\*([0-9a-f]+)\*/\s+(?:@!?U?P\w+\s+)?BAR\.SYNC(?:\.DEFER_BLOCKING)?\s+0x0\s*;")
_TMA_LOAD = re.compile(r"/\*([0-9a-f]+)\*/\s+(?:@!?U?P\w+\s+)?UTMALDG\b")


def loop_span(sass: str) -> tuple[int, int] | None:
    """(first, last) address of the kernel's longest loop in cuobjdump SASS: from the target
    of the longest backward branch to that branch, among the branches before the last EXIT
    (the K loop, in a GEMM kernel); None when there is no loop."""
    exits = [int(addr, 16) for addr in _EXIT.findall(sass)]
    end = max(exits, default=float("inf"))
    spans = [(int(target, 16), int(addr, 16)) for addr, target in _BRANCH.findall(sass)
             if int(target, 16) < int(addr, 16) < end]
    return max(spans, key=lambda span: span[1] - span[0], default=None)


_INSTRUCTION = re.compile(r"/\*([0-9a-f]+)\*/\s+[^;/]+;")


def body_instructions(sass: str) -> int:
    """SASS instructions at or before the kernel's last EXIT: its body, without the slow
    paths placed after it (the IEEE division's subnormal case, called out of line)."""
    end = max((int(addr, 16) for addr in _EXIT.findall(sass)), default=None)
    return sum(1 for addr in _INSTRUCTION.findall(sass) if end is None or int(addr, 16) <= end)


def longest_loop(sass: str) -> int:
    """Instructions in the kernel's longest loop (loop_span; 16 bytes an instruction on sm_90)."""
    span = loop_span(sass)
    return 0 if span is None else (span[1] - span[0]) // _SASS_INSTRUCTION_BYTES + 1


def loop_wait_depth(sass: str) -> int | None:
    """The wgmma groups left in flight by the longest loop's wait (the smallest N of its
    `WARPGROUP.DEPBAR.LE gsb0, N`: wgmma.wait_group N in PTX); None without one."""
    span = loop_span(sass)
    if span is None:
        return None
    depths = [int(n, 16) for addr, n in _WGMMA_WAIT.findall(sass) if span[0] <= int(addr, 16) <= span[1]]
    return min(depths, default=None)


def refill_barriers(sass: str) -> tuple[int, int, int]:
    """(TMA loads in the longest loop, those of them not guarded, CTA barriers in the loop).

    The Gluon K loop refills the slot the previous step read right after its
    `wgmma.wait_group 1` (WARPGROUP.DEPBAR.LE). Each warpgroup waits for its own wgmma
    only, and one thread issues the refill, so a CTA barrier must lie between the wait and
    the TMA load, else the load may overwrite a tile another warpgroup's wgmma still reads.
    A load is guarded when a CTA barrier comes after the last wait before it, walking the
    loop's body in order and around its back edge; a load with no wait before it in the
    loop at all counts as unguarded (nothing orders it after the MMAs)."""
    span = loop_span(sass)
    if span is None:
        return 0, 0, 0

    def inside(pattern):
        addresses = [int(match.group(1), 16) for match in pattern.finditer(sass)]
        return [address for address in addresses if span[0] <= address <= span[1]]

    loads, barriers = inside(_TMA_LOAD), inside(_CTA_BARRIER)
    waits = inside(_WGMMA_WAIT)
    events = sorted([(a, "wait") for a in waits] + [(a, "barrier") for a in barriers] + [(a, "load") for a in loads])
    unguarded = 0
    for address in loads:
        # Walk back from the load (around the back edge once) to the nearest wait.
        before = [e for e in events if e[0] < address][::-1] + [e for e in events if e[0] > address][::-1]
        guarded = False
        for _, kind in before:
            if kind == "barrier":
                guarded = True
            elif kind == "wait":
                break
        else:
            guarded = False  # no wait anywhere in the loop
        unguarded += not guarded
    return len(loads), unguarded, len(barriers)


def _launch_config(kwargs: dict) -> tuple[str, int | None]:
    """The launch's block sizes, split, warps and stages as a short string ("M128 N256 K128
    w8 s3"), and its BLOCK_SIZE_M."""
    blocks = {k.removeprefix("BLOCK_SIZE_"): v for k, v in kwargs.items() if k.startswith("BLOCK_SIZE_")}
    parts = [f"{name}{value}" for name, value in blocks.items()]
    parts += [f"H{kwargs['HADAMARD_BLOCK']}"] if kwargs.get("HADAMARD_BLOCK", 1) > 1 else []
    parts += [f"split{kwargs['SPLIT_K']}"] if kwargs.get("SPLIT_K", 1) != 1 else []
    parts += [f"w{kwargs['num_warps']}", f"s{kwargs.get('STAGES', kwargs['num_stages'])}"]
    return " ".join(parts), blocks.get("M")


# ---------------------------------------------------------------------------- variants
@dataclasses.dataclass(frozen=True)
class Variant:
    family: str
    name: str
    run: Callable[[int, int, int], object]  # (M, N, K) -> launches through qtriton.ops
    picked_by_int8_linear: bool = False
    gluon: bool = False  # run with use_gemm("gluon"), under the Gluon loop's configs
    zero_points: bool = False  # a zero-point epilogue: the configs whose epilogue fits (Gluon's)
    small: bool = False  # a Gluon variant run at GLUON_SMALL_SHAPES, where the pool is clamped


def _gemm_variants() -> list[Variant]:
    import torch

    from qtriton import ops

    def operands(M, N, K, a_dtype=torch.int8, b_dtype=torch.int8, b_layout="nk"):
        a = torch.zeros((M, K), dtype=a_dtype)
        b = torch.zeros((N, K), dtype=b_dtype).t() if b_layout == "nk" else torch.zeros((K, N), dtype=b_dtype)
        return a, b

    def scaled(out_dtype=torch.bfloat16, b_layout="nk", a_uint8=False, a_zp=None, b_uint8=False,
               b_zp=None, bias=False, per_tensor=False):
        def run(M, N, K):
            a, b = operands(M, N, K, torch.uint8 if a_uint8 else torch.int8,
                            torch.uint8 if b_uint8 else torch.int8, b_layout)
            a_scale = 0.5 if per_tensor else torch.ones(M)
            b_scale = 0.5 if per_tensor else torch.ones(N)
            zp_a = torch.zeros(M, dtype=torch.int32) if a_zp == "row" else 3 if a_zp == "tensor" else None
            zp_b = torch.zeros(N, dtype=torch.int32) if b_zp == "column" else None
            return ops.scaled_matmul(a, b, a_scale, b_scale, zp_a, zp_b,
                                     torch.zeros(N, dtype=out_dtype) if bias else None, out_dtype)
        return run

    def int32(b_layout):
        return lambda M, N, K: ops.int8_matmul(*operands(M, N, K, b_layout=b_layout))

    def gluon(variant: Variant, zero_points: bool = False) -> Variant:
        def run(M, N, K):
            with ops.use_gemm("gluon"):
                return variant.run(M, N, K)
        return Variant("gemm", f"gluon: {variant.name}", run, variant.picked_by_int8_linear, True, zero_points)

    f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16
    tl_variants = [
        Variant("gemm", "int8 -> int32, B nk", int32("nk"), True),
        Variant("gemm", "int8 -> int32, B kn", int32("kn")),
        Variant("gemm", "int8 row/col scales -> bf16, B nk", scaled(bf16), True),
        Variant("gemm", "int8 row/col scales -> bf16, B kn", scaled(bf16, b_layout="kn")),
        Variant("gemm", "int8 row/col scales -> fp16, B nk", scaled(f16), True),
        Variant("gemm", "int8 tensor scales -> fp32, B nk", scaled(f32, per_tensor=True), True),
        Variant("gemm", "int8 + bias -> bf16, B nk", scaled(bf16, bias=True), True),
        Variant("gemm", "uint8 A + zp per tensor -> bf16, B nk", scaled(bf16, a_uint8=True, a_zp="tensor")),
        Variant("gemm", "uint8 A + zp per row + bias -> bf16, B nk", scaled(bf16, a_uint8=True, a_zp="row", bias=True)),
        # Int8Linear's asymmetric activations: signed codes (q - 128) from the quantize kernel.
        Variant("gemm", "int8 A + zp per row + bias -> bf16, B nk", scaled(bf16, a_zp="row", bias=True), True),
        Variant("gemm", "uint8 B + zp per column -> fp32, B nk", scaled(f32, b_uint8=True, b_zp="column")),
    ]
    by_name = {variant.name: variant for variant in tl_variants}
    # The Gluon loop under the epilogues that change its code: int32 out, scales to each
    # float type, bias, Int8Linear's A zero points, and the copies (row-major B, uint8 A).
    gluon_variants = [gluon(by_name[name], zero_points) for name, zero_points in (
        ("int8 -> int32, B nk", False),
        ("int8 row/col scales -> bf16, B nk", False),
        ("int8 row/col scales -> fp16, B nk", False),
        ("int8 tensor scales -> fp32, B nk", False),
        ("int8 + bias -> bf16, B nk", False),
        ("int8 A + zp per row + bias -> bf16, B nk", True),
        ("int8 row/col scales -> bf16, B kn", False),
        ("uint8 A + zp per tensor -> bf16, B nk", True),
    )]
    # The tiles the Gluon pool clamps to a narrow N or a short K (GLUON_SMALL_SHAPES): 32- and
    # 64-byte swizzles, wgmma instructions 16 to 64 wide.
    clamped = gluon(by_name["int8 row/col scales -> bf16, B nk"])
    clamped = dataclasses.replace(clamped, name=f"gluon clamped: {clamped.name.removeprefix('gluon: ')}", small=True)
    return tl_variants + gluon_variants + [clamped]


# (M, N, K) per M bucket pool: decode, small batch, prefill. N and K large enough that no
# config's blocks are clamped to the problem.
GEMM_SHAPES = {"decode": (1, 4096, 4096), "small": (64, 4096, 4096), "large": (512, 4096, 4096)}
# Problems whose N or K clamps the Gluon pool's tiles (configs.gluon_configs_for): N = 16,
# 32, 64 (wgmma instructions that wide) with K steps of 32 and 64 bytes (the swizzle).
GLUON_SMALL_SHAPES = ((100, 16, 32), (100, 32, 64), (100, 64, 48))


def _quantize_variants() -> list[Variant]:
    import torch

    from qtriton import ops
    from qtriton.ops.quantize import _quantize_activations as _activations

    variants = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        short = str(dtype).removeprefix("torch.")

        def add(name, fn, dtype=dtype, short=short):
            variants.append(Variant("quantize", f"{name} {short}", lambda M, N, K: fn(dtype)))

        add("per token single pass sym", lambda d: ops.quantize_per_token(torch.zeros(64, 4096, dtype=d)))
        add("per token single pass asym",
            lambda d: ops.quantize_per_token(torch.zeros(64, 4096, dtype=d), symmetric=False))
        add("per token two pass asym",
            lambda d: ops.quantize_per_token(torch.zeros(4, 32768, dtype=d), symmetric=False))
        add("per token transposed input sym", lambda d: ops.quantize_per_token(torch.zeros(4096, 64, dtype=d).t()))
        add("per channel axis 0 sym", lambda d: ops.quantize_per_channel(torch.zeros(4096, 4096, dtype=d), 0))
        add("per channel axis 1 asym",
            lambda d: ops.quantize_per_channel(torch.zeros(64, 4096, dtype=d), 1, symmetric=False))
        add("per channel 3-D axis 1 sym", lambda d: ops.quantize_per_channel(torch.zeros(8, 64, 512, dtype=d), 1))
        add("per tensor asym", lambda d: ops.quantize_per_tensor(torch.zeros(1024, 4096, dtype=d), symmetric=False))
        add("fake quantize sym", lambda d: ops.fake_quantize(torch.zeros(1024, 4096, dtype=d)))
        add("dequantize token",
            lambda d: ops.dequantize(torch.zeros(64, 4096, dtype=torch.int8), torch.ones(64),
                                     granularity="token", out_dtype=d))
        # Int8Linear's activations: signed asymmetric codes, SmoothQuant's input scale, static.
        add("Int8Linear activations asym", lambda d: _activations(torch.zeros(64, 4096, dtype=d), False))
        add("Int8Linear activations smoothed sym",
            lambda d: _activations(torch.zeros(64, 4096, dtype=d), True, torch.ones(4096)))
        add("Int8Linear activations smoothed static",
            lambda d: _activations(torch.zeros(64, 4096, dtype=d), True, torch.ones(4096), torch.ones(())))
        # The same with each row rotated first (block Hadamard in registers, #28): the rotated
        # variants have their unrotated partner of the same shape in ROTATION_PAIRS; the last
        # ones are SmolLM2's down_proj (1536 wide, blocks of 512) and a two-pass row.
        add("per token single pass sym, hadamard 4096",
            lambda d: ops.quantize_per_token(torch.zeros(64, 4096, dtype=d), hadamard_block=4096))
        add("Int8Linear activations sym, hadamard 64",
            lambda d: _activations(torch.zeros(64, 4096, dtype=d), True, hadamard_block=64))
        add("Int8Linear activations asym, hadamard 512",
            lambda d: _activations(torch.zeros(64, 4096, dtype=d), False, hadamard_block=512))
        add("Int8Linear activations smoothed static, hadamard 2048",
            lambda d: _activations(torch.zeros(64, 4096, dtype=d), True, torch.ones(4096), torch.ones(()), 2048))
        add("Int8Linear activations sym 1536 wide, hadamard 512",
            lambda d: _activations(torch.zeros(64, 1536, dtype=d), True, hadamard_block=512))
        add("per token two pass asym, hadamard 2048",
            lambda d: ops.quantize_per_token(torch.zeros(4, 32768, dtype=d), symmetric=False, hadamard_block=2048))
    for granularity, axis in (("tensor", None), ("channel", 0), ("channel", 1)):
        variants.append(Variant(
            "quantize", f"dequantize {granularity}{'' if axis is None else f' axis {axis}'} uint8 + zp",
            lambda M, N, K, g=granularity, a=axis: ops.dequantize(
                torch.zeros(1024, 4096, dtype=torch.uint8),
                torch.ones(() if a is None else 4096 if a == 1 else 1024),
                torch.zeros(() if a is None else 4096 if a == 1 else 1024, dtype=torch.int32),
                granularity=g, axis=a, out_dtype=torch.float32)))
    return variants


def cases(full: bool = True, configs: list | None = None):
    """(variant, (M, N, K), forced GEMM config or None) for every compile to make: each GEMM
    variant under every config of every M bucket's pool (or, not full, each pool's largest
    tile; or `configs` instead of the pools, each at the large shape), the Gluon variants
    under the Gluon pool at the large shape (not full: its first config, all of them for
    GLUON_EVERY_CONFIG), the clamped Gluon variant under the pool of each of
    GLUON_SMALL_SHAPES (not full: its first config), and every quantize variant once."""
    from qtriton.ops.configs import gluon_configs_for
    from qtriton.ops.matmul import configs_for

    out = []
    for variant in _gemm_variants():
        if configs is not None:
            out.extend((variant, GEMM_SHAPES["large"], config) for config in configs)
            continue
        if variant.small:  # each clamped pool's first tile (its widest), all of them in full
            for shape in GLUON_SMALL_SHAPES:
                pool = gluon_configs_for(*shape, variant.zero_points)
                out.extend((variant, shape, config) for config in (pool if full else pool[:1]))
            continue
        if variant.gluon:  # one pool for every M the Gluon loop takes; the first is its widest tile
            pool = gluon_configs_for(*GEMM_SHAPES["large"], variant.zero_points)
            every = full or variant.name == GLUON_EVERY_CONFIG
            out.extend((variant, GEMM_SHAPES["large"], config) for config in (pool if every else pool[:1]))
            continue
        for shape in GEMM_SHAPES.values():
            pool = configs_for(*shape)
            if not full:  # the largest tile: the most registers and shared memory of the pool
                pool = [max(pool, key=lambda c: (c.kwargs["BLOCK_SIZE_M"] * c.kwargs["BLOCK_SIZE_N"],
                                                 c.kwargs["BLOCK_SIZE_K"], c.num_stages))]
            out.extend((variant, shape, config) for config in pool)
    out.extend((variant, (0, 0, 0), None) for variant in _quantize_variants())
    return out


def compile_all(full: bool = True, only: str | None = None, configs: list | None = None,
                progress: Callable[[str], None] | None = None) -> list[Compiled]:
    """Compile every case for sm_90a (see cases); `only`: a regular expression "<family>
    <variant>" must match; `configs`: GEMM configs (dicts for `use_config`) to force instead
    of the pools. Returns one row per kernel compiled; a case that fails to compile gives a
    row with its error."""
    from qtriton.ops import use_config

    rows: list[Compiled] = []
    with compile_launches() as launches:
        for variant, shape, config in cases(full, configs):
            if only and not re.search(only, f"{variant.family} {variant.name}"):
                continue
            start = len(launches)
            try:
                with use_config(config) if config is not None else contextlib.nullcontext():
                    variant.run(*shape)
            except Exception as err:  # a config that does not compile is a finding, not a crash
                text, block_m = _launch_config(_as_dict(config)) if config is not None else ("", None)
                rows.append(Compiled(variant.family, variant.name, "?", text, block_m,
                                     variant.picked_by_int8_linear, error=f"{type(err).__name__}: {err}"[:300]))
                del launches[start:]
                continue
            for _, kwargs, kernel in launches[start:]:
                text, block_m = _launch_config({**kwargs, "num_stages": kernel.metadata.num_stages,
                                                "num_warps": kernel.metadata.num_warps})
                row = Compiled(variant.family, variant.name, kernel.metadata.name, text, block_m,
                               variant.picked_by_int8_linear,
                               tile_elements=math.prod(v for k, v in kwargs.items() if k.startswith("BLOCK_SIZE_")))
                rows.append(analyse(kernel, row))
                if progress:
                    progress(_format_row(rows[-1]))
    return rows


def _as_dict(config) -> dict:
    if isinstance(config, dict):
        return config
    return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}


# ------------------------------------------------------------------------- the checks
def _known(row: Compiled, rule: str) -> bool:
    return any(r == rule and re.search(p, row.label) for p, r in KNOWN_VIOLATIONS)


def check(rows: list[Compiled]) -> tuple[list[str], list[str]]:
    """(violations, known violations) of what must hold on sm_90a: every case compiles,
    shared memory < 227 KB, no spills in a config the tuned / Int8Linear path can pick, a
    wgmma for every int8 dot of a tile with BLOCK_M >= 64, 128-bit global loads in every
    quantize kernel, a K loop of each LOOP_PAIRS variant at most LOOP_RATIO_LIMIT times
    that of its plain partner in the same config, for the Gluon main loop, in every
    config: a K loop that waits with >= GLUON_MIN_WAIT_DEPTH wgmma groups in flight, TMA
    loads, a CTA barrier between that wait and every TMA refill in the loop
    (refill_barriers: a compiler that dropped it would open a race on the ring's slots),
    and no spills; no FMA in a quantize kernel (the oracle rounds every multiply and
    add); and a rotated per-token kernel (ROTATION_PAIRS) at most ROTATION_RATIO_LIMIT times
    the SASS instructions per element of the same call unrotated."""
    found, known = [], []
    plain_loops = {(row.variant, row.kernel, row.config): row.loop_sass for row in rows if not row.error}
    per_element = {row.variant: row.sass_per_element for row in rows if row.sass_per_element}

    def flag(row, rule, text):
        (known if _known(row, rule) else found).append(f"{rule}: {row.label} [{row.kernel}]: {text}")

    for row in rows:
        if row.error:
            flag(row, "compiles", row.error)
            continue
        if row.shared_bytes >= SHARED_LIMIT_BYTES:
            flag(row, "shared", f"{row.shared_bytes} bytes of shared memory >= {SHARED_LIMIT_BYTES}")
        if row.picked_by_int8_linear and row.spill_bytes:
            flag(row, "spills", f"{row.spill_bytes} bytes of spills at {row.registers} registers")
        # Kernels without a dot (a column sum, a transpose) have nothing to check here.
        if row.int8_dot == "mma.sync" and (row.block_m or 0) >= WGMMA_MIN_BLOCK_M:
            flag(row, "wgmma", f"BLOCK_M {row.block_m}: the int8 dot is mma.sync, not wgmma.mma_async .s8")
        if row.family == "quantize" and not row.global_loads_128:
            flag(row, "loads", "no 128-bit global load")
        if row.kernel == GLUON_KERNEL:
            if row.wait_depth is None or row.wait_depth < GLUON_MIN_WAIT_DEPTH:
                flag(row, "wait", f"K loop waits with {row.wait_depth} wgmma groups in flight, "
                                  f"not >= {GLUON_MIN_WAIT_DEPTH}")
            if not row.tma:
                flag(row, "tma", "no TMA load (cp.async.bulk.tensor)")
            if row.loop_tma_loads == 0 or row.unguarded_refills:
                flag(row, "barrier", f"{row.unguarded_refills} of the K loop's {row.loop_tma_loads} TMA refills "
                                     "not separated from its wgmma wait by a CTA barrier (bar.sync 0)")
            if row.spill_bytes and not row.picked_by_int8_linear:  # (those are flagged above)
                flag(row, "spills", f"{row.spill_bytes} bytes of spills at {row.registers} registers")
        plain = plain_loops.get((LOOP_PAIRS.get(row.variant), row.kernel, row.config))
        if plain and row.loop_sass > LOOP_RATIO_LIMIT * plain:
            flag(row, "loop", f"K loop of {row.loop_sass} SASS instructions, plain int8 {plain}: over "
                              f"{LOOP_RATIO_LIMIT}x")
        if row.family == "quantize" and row.fma_instructions:
            flag(row, "fma", f"{row.fma_instructions} fused multiply-adds in the PTX: the oracle rounds the "
                             "multiply and the add apart")
        unrotated = per_element.get(ROTATION_PAIRS.get(row.variant))  # (absent when --only left it out)
        if unrotated and row.sass_per_element and row.sass_per_element > ROTATION_RATIO_LIMIT * unrotated:
            flag(row, "rotation", f"{row.sass_per_element:.1f} SASS instructions per element, unrotated "
                                  f"{unrotated:.1f}: over {ROTATION_RATIO_LIMIT}x")
    return found, known


# ------------------------------------------------------------------------------ output
_HEADER = ("| kernel | variant | config | regs | spill B | shared KB | f64 | FMA | int8 dot | 128-bit loads "
           "| loop SASS | SASS/elem | wgmma wait | TMA | loop barriers | CTAs/SM |\n"
           "|---|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|---:|---:|\n")


def _format_row(row: Compiled) -> str:
    if row.error:
        return f"| {row.kernel} | {row.variant} | {row.config} | error: {row.error} | | | | | | | | | | | | |"
    per_element = row.sass_per_element
    return (f"| {row.kernel} | {row.variant} | {row.config} | {row.registers} | {row.spill_bytes} | "
            f"{row.shared_bytes / 1024:.0f} | {row.f64_instructions} | {row.fma_instructions} | {row.int8_dot} | "
            f"{'yes' if row.global_loads_128 else 'no'} | {row.loop_sass} | "
            f"{'-' if per_element is None else f'{per_element:.1f}'} | "
            f"{'-' if row.wait_depth is None else row.wait_depth} | {'yes' if row.tma else 'no'} | "
            f"{_barriers_text(row)} | {row.ctas_per_sm} |")


def _barriers_text(row: Compiled) -> str:
    """The K loop's CTA barriers, and for a loop with TMA refills how many are guarded."""
    if not row.loop_tma_loads:
        return str(row.loop_barriers)
    guarded = row.loop_tma_loads - row.unguarded_refills
    return f"{row.loop_barriers} ({guarded}/{row.loop_tma_loads} refills after one)"


def markdown(rows: list[Compiled], versions: str) -> str:
    lines = [f"Compiled offline for sm_90a with {versions} (`python -m bench static`); "
             f"{len(rows)} kernels. spill B: bytes per thread of the local-memory stores and loads "
             "(STL/LDL) in the cubin's SASS; FMA: `fma.*.f32` in the PTX; loop SASS: instructions in the "
             "kernel's longest loop (a GEMM's K loop); SASS/elem: a loop-free quantize kernel's instructions up "
             "to its last EXIT x 32 lanes x warps / its tile's elements (every branch counted); wgmma wait: the "
             "wgmma groups that loop leaves in flight when it waits (`wgmma.wait_group N`, - for none); TMA: "
             "loads through `cp.async.bulk.tensor`; loop barriers: CTA barriers (`bar.sync 0`) in that loop, and "
             "of its TMA refills how many follow one after the wgmma wait; CTAs/SM: how many an SM holds at once "
             "(registers, shared memory, warps).", "", _HEADER.rstrip("\n")]
    lines += [_format_row(row) for row in rows]
    return "\n".join(lines) + "\n"


def write_into(path: Path, table: str) -> None:
    """Replace the text between the static markers of path (created at the end if absent)."""
    text = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{table}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n## Compiled for sm_90a\n\n{block}\n"
    path.write_text(text)


def main(full: bool = True, only: str | None = None, write: Path | None = None) -> int:
    import torch
    import triton

    versions = f"triton {triton.__version__}, torch {torch.__version__}"
    print(f"# sm_90a offline compile, {versions}", flush=True)
    print(_HEADER, end="", flush=True)
    rows = compile_all(full=full, only=only, progress=lambda line: print(line, flush=True))
    found, known = check(rows)
    for line in known:
        print(f"known (KNOWN_VIOLATIONS): {line}")
    for line in found:
        print(f"VIOLATION: {line}")
    print(f"# {len(rows)} kernels compiled, {len(found)} violations, {len(known)} known", flush=True)
    if write is not None:
        write_into(write, markdown(rows, versions))
        print(f"wrote {write}")
    return 1 if found else 0
