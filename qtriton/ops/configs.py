"""The int8 GEMM's launch configs: the per-M-bucket pools, the autotuner (key, pruning),
the forced-config hook for tests and experiments, and the per-card tuned JSON files
(qtriton/configs/<card slug>.json) with `save_tuned_configs`, which writes what
qtriton/ops/matmul.py's `tune` measures (there: it launches the GEMM; this module launches nothing).

qtriton/ops/matmul.py picks a launch's config through `launch_config` in this order:

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
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch
import triton
import triton.language as tl

from qtriton.backend import check_gemm, gemm_environment, interpreter_enabled
from qtriton.kernels import matmul as kernels

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


# ------------------------------------------------------------------------------ configs
def m_bucket(M: int) -> int:
    """The autotuning key for M: the next power of two, at least 16 (decode), at most 4096.

    Batch sizes vary call to call; tuning once per bucket instead of once per M keeps
    the autotuner from re-benchmarking every new batch size.
    """
    return min(max(16, triton.next_power_of_2(M)), 4096)


def _config(block_m: int, block_n: int, block_k: int, num_warps: int, num_stages: int, group_m: int = 8):
    return triton.Config(
        {"BLOCK_SIZE_M": block_m, "BLOCK_SIZE_N": block_n, "BLOCK_SIZE_K": block_k, "GROUP_SIZE_M": group_m},
        num_warps=num_warps,
        num_stages=num_stages,
    )


# M <= 16 (decode): one 16-row tile, narrow columns so N alone fills the SMs, deep K steps
# to stream B (the whole cost) in large contiguous pieces. mma.sync (BLOCK_M 16 < 64).
# BLOCK_N 16 (the smallest tl.dot allows) doubles the programs of BLOCK_N 32: N = 4096
# gives 256 on 132 SMs, all resident at once (48 KB of shared memory each), for more
# loads in flight per SM. Each column of a K-major B is a contiguous run of BLOCK_K bytes,
# so narrow tiles still read whole sectors; a row-major B reads 16-byte pieces and
# should lose to the wider tiles, which the autotuner will see. Not measured yet.
DECODE_CONFIGS = [
    _config(16, 64, 256, 4, 4, group_m=1),
    _config(16, 32, 256, 4, 4, group_m=1),
    _config(16, 32, 512, 4, 3, group_m=1),
    _config(16, 64, 512, 4, 3, group_m=1),
    _config(16, 16, 512, 4, 3, group_m=1),
    _config(16, 16, 256, 4, 4, group_m=1),
    _config(16, 128, 128, 4, 4, group_m=1),
    _config(16, 128, 256, 8, 3, group_m=1),
]
# 16 < M <= 128: 64-row tiles (the smallest wgmma M), a range of widths.
SMALL_CONFIGS = [
    _config(64, 128, 128, 4, 4),
    _config(64, 64, 128, 4, 4),
    _config(64, 64, 256, 4, 4),
    _config(64, 256, 128, 8, 3),
    _config(128, 128, 128, 8, 3),
    _config(32, 64, 256, 4, 4),
]
# M > 128: wgmma-friendly (BLOCK_M % 64 == 0, 4 or 8 warps, BLOCK_K >= 32), large tiles.
LARGE_CONFIGS = [
    _config(128, 256, 128, 8, 3),
    _config(256, 128, 128, 8, 3),
    _config(128, 128, 128, 8, 4),
    # 96 KB and ~113 registers: 2 CTAs per SM (bench static's CTAs/SM), so one drains its
    # wgmma (the tl.dot loop waits for 0 every K step) while the other computes.
    _config(128, 128, 128, 8, 3),
    _config(128, 128, 64, 4, 4),
    _config(128, 256, 64, 8, 4),
    _config(64, 256, 128, 8, 3),
    _config(128, 64, 128, 4, 4),
]


# Accumulator elements per thread above which a zero-point epilogue spills on sm_90a: at
# 128 (128 x 256 or 256 x 128 tiles on 8 warps) the correction, scales, bias and column
# sums in flight reach 255 registers and 276-964 bytes of spill stores (offline compile,
# docs/kernels.md); at 64 (128 x 128 on 8 warps) 206 registers, none spilled.
ZERO_POINT_MAX_ELEMENTS_PER_THREAD = 64


def _zero_point_epilogue_fits(block_m: int, block_n: int, num_warps: int) -> bool:
    """Whether a tile's zero-point epilogue stays within registers (see above)."""
    return block_m * block_n <= ZERO_POINT_MAX_ELEMENTS_PER_THREAD * 32 * num_warps


def configs_for(M: int, N: int, K: int, zero_points: bool = False) -> list[triton.Config]:
    """The pruned config space for a problem: its M bucket's pool, blocks clamped to the
    problem (no 256-wide tile for N = 40), duplicates dropped, pool order kept; with
    zero_points (a zero-point epilogue: a uint8 operand or a zero point), without the
    tiles whose epilogue spills (ZERO_POINT_MAX_ELEMENTS_PER_THREAD)."""
    bucket = m_bucket(M)
    pool = DECODE_CONFIGS if bucket <= 16 else SMALL_CONFIGS if bucket <= 128 else LARGE_CONFIGS
    if zero_points:
        pool = [config for config in pool
                if _zero_point_epilogue_fits(config.kwargs["BLOCK_SIZE_M"], config.kwargs["BLOCK_SIZE_N"],
                                             config.num_warps)]
    return clamped(pool, M, N, K, min_block_k=32)  # int8 K steps are >= 32


def clamped(pool, M: int, N: int, K: int, min_block_k: int = 16) -> list[triton.Config]:
    """pool's configs with their blocks clamped to the problem (tl.dot needs every block
    dimension >= 16; K steps >= min_block_k), duplicates dropped, order kept."""
    limits = {
        "BLOCK_SIZE_M": max(16, triton.next_power_of_2(M)),
        "BLOCK_SIZE_N": max(16, triton.next_power_of_2(N)),
        "BLOCK_SIZE_K": max(min_block_k, triton.next_power_of_2(K)),
    }
    seen, configs = set(), []
    for config in pool:
        kwargs = {name: min(value, limits.get(name, value)) for name, value in config.kwargs.items()}
        ident = (tuple(sorted(kwargs.items())), config.num_warps, config.num_stages)
        if ident not in seen:
            seen.add(ident)
            configs.append(triton.Config(kwargs, num_warps=config.num_warps, num_stages=config.num_stages))
    return configs


def _prune(configs, named_args, **kwargs):
    """early_config_prune: keep the M bucket's pool (configs_for) for this call's shape
    and variant (the flags come as keyword arguments of the launch)."""
    args = {**named_args, **kwargs}
    zero_points = bool(args.get("HAS_A_ZP") or args.get("HAS_B_ZP"))
    return configs_for(args["M_BUCKET"], args["N"], args["K"], zero_points)


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
    return triton.autotune(
        configs=DECODE_CONFIGS + SMALL_CONFIGS + LARGE_CONFIGS,
        key=AUTOTUNE_KEY,
        prune_configs_by={"early_config_prune": _prune},
    )(kernels._int8_matmul_kernel)


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
    tiles = triton.cdiv(M, config["BLOCK_SIZE_M"]) * triton.cdiv(N, config["BLOCK_SIZE_N"])
    k_tiles = triton.cdiv(K, config["BLOCK_SIZE_K"])
    target = 2 * sm_count(device)
    split = 1
    while 2 * split <= MAX_SPLIT_K and tiles * 2 * split <= target and k_tiles >= 2 * (2 * split):
        split *= 2
    return split


# ------------------------------------------------------------------------- B's layout
# From this M on, a row-major (K, N) B is first copied K-major (kernels/matmul_transpose.py):
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
# (bench/gpu_check.sh times both); the issue that lands those numbers flips it.
DEFAULT_GEMM = "tl"
_FORCED_GEMM: contextvars.ContextVar[str | None] = contextvars.ContextVar("qtriton_gemm_loop", default=None)

# Gluon tiles: whole warpgroups along M (BLOCK_SIZE_M % (16 * num_warps) == 0), int8 wgmma K
# steps of 32, num_stages is the depth of the TMA ring. 128 x 256 x 128 over 8 warps with 4
# slots is the headline tile (192 KB of ring, one CTA per SM); 128 x 128 leaves
# room for zero-point epilogues (the 128 x 256 one spills, as the tl.dot one does).
GLUON_CONFIGS = [
    _config(128, 256, 128, 8, 4),
    _config(128, 128, 128, 8, 4),
    _config(128, 128, 128, 4, 4),
    _config(128, 128, 128, 8, 3),
    _config(64, 128, 128, 4, 4),
    _config(64, 256, 128, 4, 3),
]
# The smallest M that takes the Gluon loop: decode shapes keep the tl.dot loop's 16-row
# mma.sync tiles and its split-K (the Gluon loop's tiles are >= 64 rows, one pass over K).
GLUON_MIN_M = 17


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
    """Whether this Triton has Gluon's Hopper API (the kernel module imports)."""
    return _gluon_kernels() is not None


@functools.cache
def _gluon_kernels():
    try:
        from qtriton.kernels import matmul_gluon
    except ImportError:  # a Triton without Gluon, or without its Hopper names
        return None
    return matmul_gluon


def sm90(device: torch.device) -> bool:
    """Whether launches on device compile for Hopper (sm_90). bench/static.py answers True
    for its offline sm_90a compiles."""
    if device.type != "cuda" or interpreter_enabled():
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index)[0] == 9


def gluon_tile(config: dict) -> bool:
    """Whether a launch config is a tile the Gluon loop can run (see GLUON_CONFIGS)."""
    warps = config.get("num_warps", 4)
    return (config.get("SPLIT_K", 1) == 1 and warps in (4, 8) and config["BLOCK_SIZE_M"] % (16 * warps) == 0
            and config["BLOCK_SIZE_K"] >= 32 and config.get("num_stages", 3) >= 2)


def gluon_suits(device: torch.device, M: int, N: int, K: int, correction) -> bool:
    """Whether the Gluon loop runs this launch if asked: an sm_90 target, Gluon present, no
    decode shape (M < GLUON_MIN_M), K a positive multiple of 16 (TMA's 16-byte row
    stride; the launcher copies operands whose layout does not fit), an int32 / int64
    zero-point correction (the float64 one stays with the tl.dot loop), and a forced
    config, if any, that is a Gluon tile."""
    forced = forced_config()
    return (M >= GLUON_MIN_M and K > 0 and K % 16 == 0 and correction != tl.float64
            and (forced is None or gluon_tile(forced)) and sm90(device) and gluon_available())


def main_loop(device: torch.device, M: int, N: int, K: int, correction) -> str:
    """The main loop this launch runs: "gluon" when asked for and it suits, else "tl"."""
    return "gluon" if gemm_setting() == "gluon" and gluon_suits(device, M, N, K, correction) else "tl"


def gluon_configs_for(M: int, N: int, K: int, zero_points: bool = False) -> list[triton.Config]:
    """GLUON_CONFIGS clamped to the problem, without the zero-point epilogues that spill."""
    pool = [config for config in GLUON_CONFIGS
            if not zero_points or _zero_point_epilogue_fits(config.kwargs["BLOCK_SIZE_M"],
                                                            config.kwargs["BLOCK_SIZE_N"], config.num_warps)]
    # BLOCK_SIZE_M is not clamped (as if M were 256): a tile is whole warpgroups whatever M is.
    return clamped(pool, 256, N, K, min_block_k=32)


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
    return config if _zero_point_epilogue_fits(config["BLOCK_SIZE_M"], config["BLOCK_SIZE_N"],
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

