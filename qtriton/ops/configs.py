"""The GEMMs' launch configs and the int8 GEMM's launch plan: the per-M-bucket pools and
the one pool -> prune -> autotune pattern every GEMM launcher uses (TilePools), the forced-
config hook for tests and experiments, the per-card tuned JSON files
(qtriton/configs/<card slug>.json) with `save_tuned_configs`, which writes what
qtriton/ops/matmul.py's `tune` measures (there: it launches the GEMM; this module launches
nothing), and `launch_plan`: everything one int8 GEMM call decides before it launches
(main loop, operand copies, config, split-K), in one object.

A launch's config comes, in this order, from:

1. a config forced by `use_config` (or `config=` on the public functions); the forced
   config lives in a context variable, so it holds for the thread / asyncio task that
   set it and not for others running at the same time;
2. under Triton's interpreter, the first config of the M bucket's pool (the autotuner
   needs a GPU to benchmark);
3. on CUDA, for the variant `tune()` measures (int8 operands, no zero points) and int8
   operands with an A zero point (see _tuned_config), the entry for (M bucket, N, K, B
   layout) in the card's tuned JSON file;
4. None: the caller launches `autotuned_kernel()`, `triton.autotune` over the M bucket's
   pool keyed on AUTOTUNE_KEY.

What depends only on the problem's shape and the flags (pruned pools) is computed once and
cached: a call's host cost is a few dictionary look-ups, not a walk over the pools.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
import triton
import triton.language as tl

from qtriton.backend import check_gemm, gemm_environment, interpreter_enabled
from qtriton.kernels import matmul as kernels

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


# ------------------------------------------------------------------------------ configs
def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1). Plain Python: triton.next_power_of_2
    is a constexpr function whose call costs microseconds on the host."""
    return 1 << (n - 1).bit_length() if n > 1 else 1


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for ints (plain Python, as next_power_of_2)."""
    return -(-a // b)


def m_bucket(M: int) -> int:
    """The autotuning key for M: the next power of two, at least 16 (decode), at most 4096.

    Batch sizes vary call to call; tuning once per bucket instead of once per M keeps
    the autotuner from re-benchmarking every new batch size.
    """
    return min(max(16, next_power_of_2(M)), 4096)


def tile_config(block_m: int, block_n: int, block_k: int, num_warps: int, num_stages: int,
                group_m: int = 8) -> triton.Config:
    """A GEMM launch config: block sizes, GROUP_SIZE_M, warps and pipeline stages."""
    return triton.Config(
        {"BLOCK_SIZE_M": block_m, "BLOCK_SIZE_N": block_n, "BLOCK_SIZE_K": block_k, "GROUP_SIZE_M": group_m},
        num_warps=num_warps,
        num_stages=num_stages,
    )


def clamped(pool, M: int, N: int, K: int, min_block_k: int = 16) -> list[triton.Config]:
    """pool's configs with their blocks clamped to the problem (tl.dot needs every block
    dimension >= 16; K steps >= min_block_k), duplicates dropped, order kept; a config's
    pre_hook stays with it."""
    limits = {
        "BLOCK_SIZE_M": max(16, next_power_of_2(M)),
        "BLOCK_SIZE_N": max(16, next_power_of_2(N)),
        "BLOCK_SIZE_K": max(min_block_k, next_power_of_2(K)),
    }
    seen, configs = set(), []
    for config in pool:
        kwargs = {name: min(value, limits.get(name, value)) for name, value in config.kwargs.items()}
        ident = (tuple(sorted(kwargs.items())), config.num_warps, config.num_stages)
        if ident not in seen:
            seen.add(ident)
            configs.append(triton.Config(kwargs, num_warps=config.num_warps, num_stages=config.num_stages,
                                         pre_hook=config.pre_hook))
    return configs


# Accumulator elements per thread above which a zero-point epilogue spills on sm_90a: at
# 128 (128 x 256 or 256 x 128 tiles on 8 warps) the correction, scales, bias and column
# sums in flight reach 255 registers and 276-964 bytes of spill stores (offline compile,
# docs/kernels.md); at 64 (128 x 128 on 8 warps) 206 registers, none spilled.
ZERO_POINT_MAX_ELEMENTS_PER_THREAD = 64


def zero_point_epilogue_fits(block_m: int, block_n: int, num_warps: int) -> bool:
    """Whether a tile's zero-point epilogue stays within registers (see above)."""
    return block_m * block_n <= ZERO_POINT_MAX_ELEMENTS_PER_THREAD * 32 * num_warps


def _zero_point_fits(config: triton.Config) -> bool:
    return zero_point_epilogue_fits(config.kwargs["BLOCK_SIZE_M"], config.kwargs["BLOCK_SIZE_N"], config.num_warps)


@dataclasses.dataclass(frozen=True, eq=False)
class TilePools:
    """A GEMM kernel's launch configs and how one launch's are chosen: a pool per M bucket
    (decode M <= 16, small M <= 128, large; one pool for every M when `small` and `large`
    are None), without the tiles whose zero-point epilogue spills when the launch has one,
    blocks clamped to the problem (`clamp_m` False: BLOCK_SIZE_M is not, the tile staying
    whole warpgroups), duplicates dropped, pool order kept. `autotune` wraps a kernel in
    `triton.autotune` over them; `for_problem` is the same choice for a launch that does not
    autotune (the interpreter, split-K's reference tile). Both are cached per (M bucket, N,
    K, zero points): what a call costs on the host is a dictionary look-up."""

    decode: Sequence[triton.Config]
    small: Sequence[triton.Config] | None = None
    large: Sequence[triton.Config] | None = None
    min_block_k: int = 16
    clamp_m: bool = True
    _chosen: dict = dataclasses.field(default_factory=dict, repr=False)

    def pool(self, M: int) -> Sequence[triton.Config]:
        bucket = m_bucket(M)
        if self.small is None or bucket <= 16:
            return self.decode
        return self.small if bucket <= 128 else self.large

    def all_configs(self) -> list[triton.Config]:
        pools = [self.decode] + [pool for pool in (self.small, self.large) if pool is not None]
        return [config for pool in pools for config in pool]

    def for_problem(self, M: int, N: int, K: int, zero_points: bool = False,
                    launch: Callable[[triton.Config], triton.Config] | None = None) -> list[triton.Config]:
        """The configs a launch of this problem may run (see the class docstring), each passed
        through launch (the autotuner's form of a config) when given."""
        key = (m_bucket(M) if self.small is not None else 0, N, K, bool(zero_points), launch)
        chosen = self._chosen.get(key)
        if chosen is None:
            pool = self.pool(M)
            if zero_points:
                pool = [config for config in pool if _zero_point_fits(config)]
            chosen = clamped(pool, M if self.clamp_m else 256, N, K, self.min_block_k)
            chosen = tuple(chosen if launch is None else (launch(config) for config in chosen))
            self._chosen[key] = chosen
        return list(chosen)

    def prune(self, configs, named_args, launch=None, **kwargs) -> list[triton.Config]:
        """An `early_config_prune` hook: this launch's configs (the flags come as keyword
        arguments of the launch, the shape as the named M_BUCKET, N and K)."""
        args = {**named_args, **kwargs}
        zero_points = bool(args.get("HAS_A_ZP") or args.get("HAS_B_ZP"))
        return self.for_problem(args["M_BUCKET"], args["N"], args["K"], zero_points, launch)

    def autotune(self, kernel, key: Sequence[str], launch: Callable[[triton.Config], triton.Config] | None = None):
        """kernel wrapped in triton.autotune over these pools, keyed on key (which must name the
        kernel's M_BUCKET, N and K arguments), each launch pruned to its problem's configs."""
        configs = self.all_configs()
        if launch is not None:
            configs = [launch(config) for config in configs]
        return triton.autotune(
            configs=configs, key=list(key),
            prune_configs_by={"early_config_prune": functools.partial(self.prune, launch=launch)},
        )(kernel)


# M <= 16 (decode): one 16-row tile, narrow columns so N alone fills the SMs, deep K steps
# to stream B (the whole cost) in large contiguous pieces. mma.sync (BLOCK_M 16 < 64).
# BLOCK_N 16 (the smallest tl.dot allows) doubles the programs of BLOCK_N 32: N = 4096
# gives 256 on 132 SMs, all resident at once (48 KB of shared memory each), for more
# loads in flight per SM. Each column of a K-major B is a contiguous run of BLOCK_K bytes,
# so narrow tiles still read whole sectors; a row-major B reads 16-byte pieces and
# should lose to the wider tiles, which the autotuner will see. Not measured yet.
DECODE_CONFIGS = [
    tile_config(16, 64, 256, 4, 4, group_m=1),
    tile_config(16, 32, 256, 4, 4, group_m=1),
    tile_config(16, 32, 512, 4, 3, group_m=1),
    tile_config(16, 64, 512, 4, 3, group_m=1),
    tile_config(16, 16, 512, 4, 3, group_m=1),
    tile_config(16, 16, 256, 4, 4, group_m=1),
    tile_config(16, 128, 128, 4, 4, group_m=1),
    tile_config(16, 128, 256, 8, 3, group_m=1),
]
# 16 < M <= 128: 64-row tiles (the smallest wgmma M), a range of widths.
SMALL_CONFIGS = [
    tile_config(64, 128, 128, 4, 4),
    tile_config(64, 64, 128, 4, 4),
    tile_config(64, 64, 256, 4, 4),
    tile_config(64, 256, 128, 8, 3),
    tile_config(128, 128, 128, 8, 3),
    tile_config(32, 64, 256, 4, 4),
]
# M > 128: wgmma-friendly (BLOCK_M % 64 == 0, 4 or 8 warps, BLOCK_K >= 32), large tiles.
LARGE_CONFIGS = [
    tile_config(128, 256, 128, 8, 3),
    tile_config(256, 128, 128, 8, 3),
    tile_config(128, 128, 128, 8, 4),
    # 96 KB and ~113 registers: 2 CTAs per SM (bench static's CTAs/SM), so one drains its
    # wgmma (the tl.dot loop waits for 0 every K step) while the other computes.
    tile_config(128, 128, 128, 8, 3),
    tile_config(128, 128, 64, 4, 4),
    tile_config(128, 256, 64, 8, 4),
    tile_config(64, 256, 128, 8, 3),
    tile_config(128, 64, 128, 4, 4),
]
# The tl.dot loop's pools: int8 K steps are >= 32.
POOLS = TilePools(DECODE_CONFIGS, SMALL_CONFIGS, LARGE_CONFIGS, min_block_k=32)


def configs_for(M: int, N: int, K: int, zero_points: bool = False) -> list[triton.Config]:
    """The pruned config space for a problem: its M bucket's pool, blocks clamped to the
    problem (no 256-wide tile for N = 40), duplicates dropped, pool order kept; with
    zero_points (a zero-point epilogue: a uint8 operand or a zero point), without the
    tiles whose epilogue spills (ZERO_POINT_MAX_ELEMENTS_PER_THREAD)."""
    return POOLS.for_problem(M, N, K, zero_points)


# What the autotuner tunes separately (Triton adds every tensor argument's dtype itself).
# M_BUCKET stands for M (see m_bucket); the strides along K tell the B layouts apart. The
# variant flags change the kernel's cost: the uint8 shift costs K-loop instructions and
# the zero-point epilogue registers (see ZERO_POINT_MAX_ELEMENTS_PER_THREAD), so the
# autotuner tunes each variant on its own (the tuned files serve an A-zero-point variant
# only where its tile fits: _tuned_config). Constexpr flags are named arguments like any
# other to the autotuner.
AUTOTUNE_KEY = [
    "M_BUCKET", "N", "K", "stride_ak", "stride_bk",
    "A_IS_UINT8", "B_IS_UINT8", "HAS_A_ZP", "HAS_B_ZP", "CORRECTION_DTYPE", "SCALED", "SPLIT_K",
]


@functools.cache
def autotuned_kernel():
    """The autotuned kernel, built on first CUDA use (the autotuner needs a GPU driver)."""
    return POOLS.autotune(kernels._int8_matmul_kernel, AUTOTUNE_KEY)


# ----------------------------------------------------------------------------- split-K
MAX_SPLIT_K = 16
# Streaming multiprocessors assumed where no CUDA card can say (the interpreter): an
# H100 / H200 SXM's, so the interpreter runs the same choices as those cards.
DEFAULT_SM_COUNT = 132


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return DEFAULT_SM_COUNT
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def split_k_for(M: int, N: int, K: int, config: dict, device: torch.device) -> int:
    """How many K slices a launch with this config's tiles runs (1: no split).

    Split when the tile grid leaves the card under-filled (fewer than 2 programs per SM,
    decode and thin problems): double the slices while the grid stays within 2 per SM and
    every slice keeps at least 2 K tiles of its own (fewer would spend more on the
    partials' round trip through memory than the loop saves), at most MAX_SPLIT_K."""
    tiles = cdiv(M, config["BLOCK_SIZE_M"]) * cdiv(N, config["BLOCK_SIZE_N"])
    k_tiles = cdiv(K, config["BLOCK_SIZE_K"])
    target = 2 * sm_count(device)
    split = 1
    while 2 * split <= MAX_SPLIT_K and tiles * 2 * split <= target and k_tiles >= 2 * (2 * split):
        split *= 2
    return split


# ------------------------------------------------------------------------- B's layout
# From this M on, a row-major (K, N) B is first copied K-major (kernels/matmul_copy.py):
# the copy reads and writes K * N bytes once, against M / BLOCK_SIZE_M re-reads of B
# through registers and a byte transpose per K step. 1024: the copy then costs under ~15 %
# of the GEMM's int8 dense time at any N, K (2 K N bytes at ~3 TB/s vs 2 M N K ops at
# ~1 POPS); not measured yet: bench/matmul.py times both layouts.
KMAJOR_MIN_M = 1024


def transpose_b_for(M: int, b_k_major: bool) -> bool:
    """Whether the launch copies a row-major B into K-major first."""
    return not b_k_major and M >= KMAJOR_MIN_M


# A uint8 A (an API caller's asymmetric codes; Int8Linear's come as int8 from its quantize
# kernel) is shifted to int8 in one pass before the GEMM from this M on: in the K loop
# the shift sends the A tile through registers and byte permutes
# (sm_90a, 128 x 128 x 128: 304 K-loop SASS instructions against 100 with int8 A, see
# docs/kernels.md). Below it, the decode tiles stream B and one more launch would cost
# more than the shift (unmeasured). A uint8 B is shifted from KMAJOR_MIN_M on (its copy
# reads K * N bytes; for Int8Linear B is int8 anyway).
SHIFT_A_MIN_M = 17


def shift_a_for(M: int) -> bool:
    """Whether a uint8 A is copied to int8 (q - 128) before the GEMM."""
    return M >= SHIFT_A_MIN_M


def shift_b_for(M: int) -> bool:
    """Whether a uint8 B is copied to int8 (q - 128) before the GEMM."""
    return M >= KMAJOR_MIN_M


# ------------------------------------------------------------------- the main loop
# Two K loops compute the int32 A @ B: kernels/matmul.py's tl.dot loop (every card, the
# interpreter) and, on Hopper (sm_90), kernels/matmul_gluon.py's Gluon loop, a TMA ring with
# one async wgmma K step in flight, which tl.dot cannot express for int8 (docs/kernels.md).
# `QTRITON_GEMM=tl|gluon` or `use_gemm(...)` picks one; unset, DEFAULT_GEMM. The Gluon loop
# runs only where it can: an sm_90 card (or bench/static.py's offline sm_90a compile), a
# Triton with Gluon, a problem that suits it (gluon_suits); elsewhere the tl.dot loop runs.
# "tl" until a GPU run has passed the Gluon loop's device tests and timed it faster
# (bench/gpu_check.sh times both main loops).
DEFAULT_GEMM = "tl"
_FORCED_GEMM: contextvars.ContextVar[str | None] = contextvars.ContextVar("qtriton_gemm_loop", default=None)

# Gluon tiles: whole warpgroups along M (BLOCK_SIZE_M % (16 * num_warps) == 0), int8 wgmma K
# steps of 32, num_stages is the depth of the TMA ring. 128 x 256 x 128 over 8 warps with 4
# slots is the headline tile (192 KB of ring, one CTA per SM); 128 x 128 leaves
# room for zero-point epilogues (the 128 x 256 one spills, as the tl.dot one does).
GLUON_CONFIGS = [
    tile_config(128, 256, 128, 8, 4),
    tile_config(128, 128, 128, 8, 4),
    tile_config(128, 128, 128, 4, 4),
    tile_config(128, 128, 128, 8, 3),
    tile_config(64, 128, 128, 4, 4),
    tile_config(64, 256, 128, 4, 3),
]
# One pool for every M the Gluon loop takes; BLOCK_SIZE_M is not clamped (a tile is whole
# warpgroups whatever M is).
GLUON_POOLS = TilePools(GLUON_CONFIGS, min_block_k=32, clamp_m=False)
# The smallest M that takes the Gluon loop: decode shapes keep the tl.dot loop's 16-row
# mma.sync tiles and its split-K (the Gluon loop's tiles are >= 64 rows, one pass over K).
GLUON_MIN_M = 17
# What a Gluon tile may use on sm_90a: the ring's shared memory (227 KB is the most one
# block may have) and int32 accumulator elements per thread (128: 128 x 256 on 8 warps,
# 154-255 registers without spills in bench static; 256 would need more than the 255
# registers a thread has). TMA boxes are at most 256 elements a side, and the K step at
# most one 128-byte swizzle row (the widest any Gluon config compiles and runs with).
GLUON_SHARED_LIMIT_BYTES = 227 * 1024
GLUON_MAX_ELEMENTS_PER_THREAD = 128
GLUON_MAX_BLOCK_K = 128


@contextlib.contextmanager
def use_gemm(loop: str) -> Iterator[None]:
    """Ask every GEMM launch in the block (this thread / task) for this main loop: "tl"
    (kernels/matmul.py) or "gluon" (kernels/matmul_gluon.py, where it can run; see
    gluon_suits). Wins over QTRITON_GEMM."""
    token = _FORCED_GEMM.set(check_gemm(loop, "use_gemm's loop"))
    try:
        yield
    finally:
        _FORCED_GEMM.reset(token)


def gemm_setting() -> str:
    """The main loop asked for: use_gemm's, else $QTRITON_GEMM's, else DEFAULT_GEMM."""
    forced = _FORCED_GEMM.get()
    if forced is not None:
        return forced
    return gemm_environment() or DEFAULT_GEMM


def gluon_available() -> bool:
    """Whether this Triton has what the Gluon loop needs: Gluon's Hopper API (the kernel
    module imports) and the host-side TMA descriptor (the launcher imports)."""
    return _gluon_kernels() is not None


@functools.cache
def _gluon_kernels():
    # A Triton without Gluon, or without its Hopper names, fails the import (ImportError) or
    # its first attribute read (AttributeError: neither TMA load name, an API renamed):
    # either way the tl.dot loop runs.
    try:
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor  # noqa: F401

        from qtriton.kernels import matmul_gluon
    except (ImportError, AttributeError):
        return None
    return matmul_gluon


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def sm90(device: torch.device) -> bool:
    """Whether launches on device compile for Hopper (sm_90). bench/static.py answers True
    for its offline sm_90a compiles."""
    if device.type != "cuda" or interpreter_enabled():
        return False
    return _capability(device.index if device.index is not None else torch.cuda.current_device())[0] == 9


def gluon_tile(config: dict, zero_points: bool = False) -> bool:
    """Whether a launch config is a tile the Gluon loop can run (see GLUON_CONFIGS): whole
    warpgroups along M, K steps of 32 to GLUON_MAX_BLOCK_K, a ring of >= 2 slots, and within
    sm_90a's resources: the ring's shared memory, the accumulator's registers (half as many
    with a zero-point epilogue, ZERO_POINT_MAX_ELEMENTS_PER_THREAD). A forced config that is
    not one runs in the tl.dot loop instead (gluon_suits)."""
    warps = config.get("num_warps", 4)
    stages = config.get("num_stages", 3)
    block_m, block_n, block_k = config["BLOCK_SIZE_M"], config["BLOCK_SIZE_N"], config["BLOCK_SIZE_K"]
    if not (config.get("SPLIT_K", 1) == 1 and warps in (4, 8) and block_m % (16 * warps) == 0 and stages >= 2
            and 32 <= block_k <= GLUON_MAX_BLOCK_K and max(block_m, block_n) <= 256):
        return False
    ring_bytes = stages * ((block_m + block_n) * block_k + 8)  # the two tiles and an mbarrier per slot
    per_thread = block_m * block_n // (32 * warps)
    limit = ZERO_POINT_MAX_ELEMENTS_PER_THREAD if zero_points else GLUON_MAX_ELEMENTS_PER_THREAD
    return ring_bytes <= GLUON_SHARED_LIMIT_BYTES and per_thread <= limit


def gluon_suits(device: torch.device, M: int, N: int, K: int, correction, zero_points: bool = False) -> bool:
    """Whether the Gluon loop runs this launch if asked: an sm_90 target, Gluon present, no
    decode shape (M < GLUON_MIN_M), K a positive multiple of 16 (TMA's 16-byte row
    stride; the launcher copies operands whose layout does not fit), an int32 / int64
    zero-point correction (the float64 one stays with the tl.dot loop), and a forced
    config, if any, that is a Gluon tile (gluon_tile; else the tl.dot loop runs it)."""
    forced = forced_config()
    return (M >= GLUON_MIN_M and K > 0 and K % 16 == 0 and correction != tl.float64
            and (forced is None or gluon_tile(forced, zero_points)) and sm90(device) and gluon_available())


def main_loop(device: torch.device, M: int, N: int, K: int, correction, zero_points: bool = False) -> str:
    """The main loop this launch runs: "gluon" when asked for and it suits, else "tl"."""
    return "gluon" if gemm_setting() == "gluon" and gluon_suits(device, M, N, K, correction, zero_points) else "tl"


def gluon_configs_for(M: int, N: int, K: int, zero_points: bool = False) -> list[triton.Config]:
    """GLUON_CONFIGS clamped to the problem, without the zero-point epilogues that spill."""
    return GLUON_POOLS.for_problem(M, N, K, zero_points)


def tma_ready(x: torch.Tensor) -> bool:
    """Whether x (R, C) can be a TMA source as it is: int8, rows contiguous and apart (a
    row stride of at least C: no zero stride, no overlapping rows, which a TMA descriptor
    cannot describe), base and row stride 16-byte aligned."""
    stride_r, stride_c = x.stride()
    return (x.dtype == torch.int8 and stride_c == 1 and stride_r >= x.shape[1] and stride_r % 16 == 0
            and x.data_ptr() % 16 == 0)


# ------------------------------------------------------------------------ config hooks
# Per thread / asyncio task (contextvars), so a test or an experiment forcing a config
# cannot leak it into a launch another thread makes meanwhile.
_FORCED_CONFIG: contextvars.ContextVar[dict | None] = contextvars.ContextVar("qtriton_gemm_config", default=None)


def config_dict(config) -> dict:
    """A launch config as a plain dict (BLOCK_SIZE_M/N/K, GROUP_SIZE_M, num_warps,
    num_stages, and SPLIT_K when it forces a split; without it the launcher's rule,
    split_k_for, decides)."""
    if isinstance(config, triton.Config):
        return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict or triton.Config, got {type(config).__name__}")
    missing = {"BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K"} - config.keys()
    if missing:
        raise ValueError(f"config lacks {sorted(missing)}")
    unknown = config.keys() - {"BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "SPLIT_K",
                               "num_warps", "num_stages"}
    if unknown:
        raise ValueError(f"config has unknown keys {sorted(unknown)}")
    split_k = config.get("SPLIT_K", 1)
    if not isinstance(split_k, int) or isinstance(split_k, bool) or not 1 <= split_k <= MAX_SPLIT_K:
        raise ValueError(f"config SPLIT_K must be an int in [1, {MAX_SPLIT_K}], got {split_k!r}")
    for name in ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K"):
        value = config[name]
        if not isinstance(value, int) or value < 16 or value & (value - 1):
            raise ValueError(f"config {name} must be a power of two >= 16, got {value!r}")
    return {"GROUP_SIZE_M": 8, "num_warps": 4, "num_stages": 3, **config}


@contextlib.contextmanager
def use_config(config) -> Iterator[None]:
    """Run every GEMM launch in the block with this config (tests, experiments): a dict
    with BLOCK_SIZE_M/N/K and optionally GROUP_SIZE_M, num_warps, num_stages, or a
    triton.Config. Bypasses the tuned files and the autotuner; also reaches launches
    made inside torch.compile'd code, since the custom ops read it when they run."""
    token = _FORCED_CONFIG.set(config_dict(config))
    try:
        yield
    finally:
        _FORCED_CONFIG.reset(token)


def forced_config() -> dict | None:
    """The config `use_config` forces in this thread / task, or None."""
    return _FORCED_CONFIG.get()


def maybe_forced(config):
    """use_config(config), or nothing when config is None (the public `config=` keyword)."""
    return contextlib.nullcontext() if config is None else use_config(config)


# ------------------------------------------------------------------- per-card configs
def device_slug(name: str) -> str:
    """File name stem for a GPU name: "NVIDIA H100 80GB HBM3" -> "nvidia_h100_80gb_hbm3"."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def shape_key(M: int, N: int, K: int, b_k_major: bool) -> str:
    """The tuned-file key of a problem: "<M bucket>,<N>,<K>,<nk|kn>" (nk: B is the
    transpose of a contiguous (N, K) weight; kn: B is a row-major (K, N) matrix)."""
    return f"{m_bucket(M)},{N},{K},{'nk' if b_k_major else 'kn'}"


@functools.cache
def _tuned_configs(device_name: str) -> dict[str, dict]:
    """The configs of qtriton/configs/<slug>.json for this card, {} when there is none."""
    path = CONFIG_DIR / f"{device_slug(device_name)}.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {key: config_dict(value) for key, value in data.get("configs", {}).items()}


@functools.cache
def _device_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def _tuned_config(device: torch.device, M: int, N: int, K: int, b_k_major: bool, flags: dict) -> dict | None:
    """The card's tuned config for this problem, or None. The files hold what `tune()`
    measures: int8 operands without zero points (int32 or scaled output, which differ only
    in the epilogue). It also serves int8 operands with an A zero point (Int8Linear's
    asymmetric activations: the same K loop instruction for instruction, bench/static.py's
    `loop` rule, and a rank-1 epilogue) when its tile is in that variant's pool (no tile
    whose zero-point epilogue spills); uint8 operands and B zero points change the K loop
    or need row sums, so they go to the autotuner (keyed on the flags) instead."""
    if flags["A_IS_UINT8"] or flags["B_IS_UINT8"] or flags["HAS_B_ZP"]:
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    config = _tuned_configs(_device_name(index)).get(shape_key(M, N, K, b_k_major))
    if config is None or not flags["HAS_A_ZP"]:
        return config
    return config if zero_point_epilogue_fits(config["BLOCK_SIZE_M"], config["BLOCK_SIZE_N"],
                                               config["num_warps"]) else None


def launch_config(device: torch.device, M: int, N: int, K: int, b_k_major: bool, flags: dict,
                  tuned: bool = True) -> dict | None:
    """The config a launch uses (see the module docstring), or None for the autotuner."""
    config = forced_config()
    if config is None and interpreter_enabled():
        config = config_dict(configs_for(M, N, K, flags["HAS_A_ZP"] or flags["HAS_B_ZP"])[0])
    if config is None and tuned:
        config = _tuned_config(device, M, N, K, b_k_major, flags)
    return config


# --------------------------------------------------------------------- the launch plan
@dataclasses.dataclass(frozen=True)
class LaunchPlan:
    """What one int8 GEMM launch runs, decided in one place (launch_plan) before anything
    launches, as triton_kernels' OptFlags: the main loop, the operand copies that take byte
    work out of the K loop or make an operand TMA-ready (kernels/matmul_copy.py), the
    kernels' constexpr flags as they are after those copies, the config (None: the
    autotuner picks it per key), the tile that split-K's rule and the TMA descriptors start
    from (the config, or the pool's first), and the number of K slices."""

    loop: str  # "tl" or "gluon"
    copy_a: bool  # A copied row-major (shifted to int8 when shift_a)
    shift_a: bool  # a uint8 A copied as int8 q - 128
    copy_b: bool  # B copied (K-major when b_copy_k_major; shifted when shift_b)
    b_copy_k_major: bool
    shift_b: bool
    b_k_major: bool  # B as the kernel reads it: the transpose of a contiguous (N, K)
    flags: dict  # A_IS_UINT8, B_IS_UINT8, HAS_A_ZP, HAS_B_ZP, CORRECTION_DTYPE, SCALED
    config: dict | None
    tile: dict
    split_k: int
    m_bucket: int


def launch_plan(a_q: torch.Tensor, b_q: torch.Tensor, flags: dict, tuned: bool = True) -> LaunchPlan:
    """The plan of one launch of a_q (M, K) @ b_q (K, N) with the kernels' flags as the
    operands give them (A_IS_UINT8 / B_IS_UINT8: the inputs' dtypes). Reads the forced
    config and main loop of this thread, the card (sm_90, SM count, tuned file) and the
    operands' layouts; launches nothing."""
    M, K = a_q.shape
    N = b_q.shape[1]
    device = a_q.device
    zero_points = flags["HAS_A_ZP"] or flags["HAS_B_ZP"]
    gluon = main_loop(device, M, N, K, flags["CORRECTION_DTYPE"], zero_points) == "gluon"
    a_uint8, b_uint8 = flags["A_IS_UINT8"], flags["B_IS_UINT8"]
    # The Gluon loop reads both operands through TMA: int8, K-major, 16-byte aligned rows.
    shift_a = a_uint8 and K > 0 and (gluon or shift_a_for(M))
    shift_b = b_uint8 and K > 0 and (gluon or shift_b_for(M))
    b_k_major = b_q.stride(0) == 1
    if gluon:
        transpose_b = not tma_ready(b_q.t())
        copy_a = shift_a or not tma_ready(a_q)
    else:
        transpose_b = transpose_b_for(M, b_k_major or K <= 1)
        copy_a = shift_a
    copy_b = shift_b or transpose_b
    b_copy_k_major = transpose_b or b_k_major
    if copy_b:  # a contiguous copy: K-major, or row-major (K, N), K-major too when N == 1
        b_k_major = b_copy_k_major or N == 1
    flags = {**flags, "A_IS_UINT8": a_uint8 and not shift_a, "B_IS_UINT8": b_uint8 and not shift_b}
    if gluon:
        config = forced_config()
        tile = config or config_dict(gluon_configs_for(M, N, K, zero_points)[0])
        if config is None and interpreter_enabled():  # bench/static.py's compile: nothing to time
            config = tile
        split_k = 1
    else:
        config = launch_config(device, M, N, K, b_k_major, flags, tuned)
        # The autotuner picks the tiles: the split follows the pool's first (widest) one.
        tile = config or config_dict(configs_for(M, N, K, zero_points)[0])
        split_k = tile.get("SPLIT_K") or split_k_for(M, N, K, tile, device)
        if config is not None and "SPLIT_K" in config:
            config = {name: value for name, value in config.items() if name != "SPLIT_K"}
    return LaunchPlan("gluon" if gluon else "tl", copy_a, shift_a, copy_b, b_copy_k_major, shift_b, b_k_major,
                      flags, config, tile, split_k, m_bucket(M))


# ------------------------------------------------------------------------------ tuning
def save_tuned_configs(data: dict, path: str | Path | None = None) -> Path:
    """Write tune()'s result as JSON (default: qtriton/configs/<device slug>.json),
    merged over the configs already in that file; returns the path written."""
    if "device" not in data or "configs" not in data:
        raise ValueError("data must be tune()'s result: a dict with 'device' and 'configs'")
    for key, config in data["configs"].items():
        config_dict(config)  # refuse a malformed entry before writing it
        if not re.fullmatch(r"\d+,\d+,\d+,(nk|kn)", key):
            raise ValueError(f"bad configs key {key!r}: expected '<M bucket>,<N>,<K>,<nk|kn>'")
    path = Path(path) if path is not None else CONFIG_DIR / f"{device_slug(data['device'])}.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update({k: v for k, v in data.items() if k != "configs"})
    merged["configs"] = {**merged.get("configs", {}), **data["configs"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    _tuned_configs.cache_clear()
    return path

