"""Launchers for the int8 GEMM in qtriton.kernels.matmul: configs, autotuning, per-card
tuned configs and the torch.library custom ops behind `int8_matmul` / `scaled_matmul`.

A launch picks its config in this order:

1. a config forced by the test hook (`config=` on the public functions, or `use_config`);
2. under Triton's interpreter, the first config of the M bucket's pool (the autotuner
   needs a GPU to benchmark);
3. on CUDA, for the variant `tune()` measures (int8 operands, no zero points), the entry
   for (M bucket, N, K, B layout) in the card's tuned JSON file
   (qtriton/configs/<card slug>.json, see the README there);
4. `triton.autotune` over the M bucket's pool, keyed on AUTOTUNE_KEY.

Nothing here syncs with the host: Python scalars travel as kernel scalars, tensors are
only looked at through their metadata.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import triton

from qtriton import checks
from qtriton.backend import interpreter_enabled
from qtriton.kernels import matmul as kernels

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

MAX_K = checks.MAX_K  # the int32 accumulator's limit, one rule for every entry (qtriton.checks)
_INT32_MAX = 2**31 - 1


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
    _config(128, 128, 64, 4, 4),
    _config(128, 256, 64, 8, 4),
    _config(64, 256, 128, 8, 3),
    _config(128, 64, 128, 4, 4),
]


def configs_for(M: int, N: int, K: int) -> list[triton.Config]:
    """The pruned config space for a problem: its M bucket's pool, blocks clamped to the
    problem (no 256-wide tile for N = 40), duplicates dropped, pool order kept."""
    bucket = m_bucket(M)
    pool = DECODE_CONFIGS if bucket <= 16 else SMALL_CONFIGS if bucket <= 128 else LARGE_CONFIGS
    # tl.dot needs every block dimension >= 16, and int8 K steps >= 32.
    limits = {
        "BLOCK_SIZE_M": max(16, triton.next_power_of_2(M)),
        "BLOCK_SIZE_N": max(16, triton.next_power_of_2(N)),
        "BLOCK_SIZE_K": max(32, triton.next_power_of_2(K)),
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
    """early_config_prune: keep the M bucket's pool (configs_for) for this call's shape."""
    return configs_for(named_args["M_BUCKET"], named_args["N"], named_args["K"])


# What the autotuner tunes separately (Triton adds every tensor argument's dtype itself).
# M_BUCKET stands for M (see m_bucket); the strides along K tell the B layouts apart. The
# variant flags change the kernel's cost: the uint8 shift and the zero points' row and
# column sums take registers (128 x 256 x 128 with uint8 A and a zero point was seen at
# 255 registers and spilling on an H100), so a variant must not inherit a config tuned
# for plain int8. Constexpr flags are named arguments like any other to the autotuner.
AUTOTUNE_KEY = [
    "M_BUCKET", "N", "K", "stride_ak", "stride_bk",
    "A_IS_UINT8", "B_IS_UINT8", "HAS_A_ZP", "HAS_B_ZP", "SCALED",
]


@functools.cache
def _autotuned_kernel():
    """The autotuned kernel, built on first CUDA use (the autotuner needs a GPU driver)."""
    return triton.autotune(
        configs=DECODE_CONFIGS + SMALL_CONFIGS + LARGE_CONFIGS,
        key=AUTOTUNE_KEY,
        prune_configs_by={"early_config_prune": _prune},
    )(kernels._int8_matmul_kernel)


# ------------------------------------------------------------------------ config hooks
_forced_config: dict | None = None


def _config_dict(config) -> dict:
    """A launch config as a plain dict (BLOCK_SIZE_M/N/K, GROUP_SIZE_M, num_warps, num_stages)."""
    if isinstance(config, triton.Config):
        return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict or triton.Config, got {type(config).__name__}")
    missing = {"BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K"} - config.keys()
    if missing:
        raise ValueError(f"config lacks {sorted(missing)}")
    unknown = config.keys() - {"BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages"}
    if unknown:
        raise ValueError(f"config has unknown keys {sorted(unknown)}")
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
    global _forced_config
    previous, _forced_config = _forced_config, _config_dict(config)
    try:
        yield
    finally:
        _forced_config = previous


def _maybe_forced(config):
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
    return {key: _config_dict(value) for key, value in data.get("configs", {}).items()}


@functools.cache
def _device_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def _tuned_config(device: torch.device, M: int, N: int, K: int, b_k_major: bool, flags: dict) -> dict | None:
    """The card's tuned config for this problem, or None. The files hold what `tune()`
    measures: int8 operands without zero points (int32 or scaled output, which differ only
    in the epilogue). A uint8 operand or a zero point adds work to the K loop and
    registers, so those variants go to the autotuner (keyed on the flags) instead."""
    if flags["HAS_A_ZP"] or flags["HAS_B_ZP"]:  # a uint8 operand sets one too (-128)
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _tuned_configs(_device_name(index)).get(shape_key(M, N, K, b_k_major))


# ------------------------------------------------------------------------- the launch
def _launch(a_q, b_q, out, a_scale, a_scale_value, b_scale, b_scale_value,
            a_zp, a_zp_value, b_zp, b_zp_value, bias, scaled: bool, tuned: bool = True) -> torch.Tensor:
    """Fill `out` (M, N) with the GEMM; the arguments are already checked and normalised.

    A tensor scale / zero point is 0-d, (1,) or per row (M,) / per column (N,); its
    Python counterpart (`*_value`) is used when the tensor is None (zero points: added
    to the tensor, which is how the uint8 shift's -128 gets in).
    """
    M, K = a_q.shape
    N = b_q.shape[1]
    if M == 0 or N == 0:
        return out
    a_is_uint8, b_is_uint8 = a_q.dtype == torch.uint8, b_q.dtype == torch.uint8
    a_zp_value = int(a_zp_value) - 128 * a_is_uint8
    b_zp_value = int(b_zp_value) - 128 * b_is_uint8

    def stride_of(v):  # a one-element tensor is broadcast with stride 0
        return 0 if v is None or v.numel() == 1 else v.stride(0)

    placeholder = a_q  # any tensor: passed where an optional pointer is absent, never read
    args = (
        a_q, b_q, out,
        placeholder if a_scale is None else a_scale,
        placeholder if b_scale is None else b_scale,
        placeholder if a_zp is None else a_zp,
        placeholder if b_zp is None else b_zp,
        placeholder if bias is None else bias,
        float(a_scale_value), float(b_scale_value), a_zp_value, b_zp_value,
        M, N, K, m_bucket(M),
        a_q.stride(0), a_q.stride(1), b_q.stride(0), b_q.stride(1), out.stride(0), out.stride(1),
        stride_of(a_scale), stride_of(b_scale), stride_of(a_zp), stride_of(b_zp),
        0 if bias is None else bias.stride(0),
    )
    flags = {
        "A_IS_UINT8": a_is_uint8,
        "B_IS_UINT8": b_is_uint8,
        "HAS_A_ZP": a_zp is not None or a_zp_value != 0,
        "HAS_B_ZP": b_zp is not None or b_zp_value != 0,
        "A_ZP_IS_TENSOR": a_zp is not None,
        "B_ZP_IS_TENSOR": b_zp is not None,
        "SCALED": scaled,
        "A_SCALE_IS_TENSOR": a_scale is not None,
        "B_SCALE_IS_TENSOR": b_scale is not None,
        "HAS_BIAS": bias is not None,
    }

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_SIZE_M"]) * triton.cdiv(N, meta["BLOCK_SIZE_N"]),)

    config = _forced_config
    if config is None and interpreter_enabled():
        config = _config_dict(configs_for(M, N, K)[0])
    if config is None and tuned:
        config = _tuned_config(a_q.device, M, N, K, b_q.stride(0) == 1, flags)
    # Triton launches on the current CUDA device, not on the tensors' one.
    on_device = torch.cuda.device(a_q.device) if a_q.device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        if config is None:
            _autotuned_kernel()[grid](*args, **flags)
        else:
            kernels._int8_matmul_kernel[grid](*args, **flags, **config)
    return out


# --------------------------------------------------------------------- the custom ops
@torch.library.custom_op("qtriton::int8_mm", mutates_args=())
def _int8_mm(a_q: torch.Tensor, b_q: torch.Tensor) -> torch.Tensor:
    out = torch.empty((a_q.shape[0], b_q.shape[1]), dtype=torch.int32, device=a_q.device)
    return _launch(a_q, b_q, out, None, 1.0, None, 1.0, None, 0, None, 0, None, scaled=False)


@_int8_mm.register_fake
def _int8_mm_fake(a_q, b_q):
    return a_q.new_empty((a_q.shape[0], b_q.shape[1]), dtype=torch.int32)


@torch.library.custom_op("qtriton::scaled_mm", mutates_args=())
def _scaled_mm(
    a_q: torch.Tensor,
    b_q: torch.Tensor,
    a_scale: torch.Tensor | None,
    a_scale_value: float,
    b_scale: torch.Tensor | None,
    b_scale_value: float,
    a_zp: torch.Tensor | None,
    a_zp_value: int,
    b_zp: torch.Tensor | None,
    b_zp_value: int,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    out = torch.empty((a_q.shape[0], b_q.shape[1]), dtype=out_dtype, device=a_q.device)
    return _launch(a_q, b_q, out, a_scale, a_scale_value, b_scale, b_scale_value,
                   a_zp, a_zp_value, b_zp, b_zp_value, bias, scaled=True)


@_scaled_mm.register_fake
def _scaled_mm_fake(a_q, b_q, a_scale, a_scale_value, b_scale, b_scale_value,
                    a_zp, a_zp_value, b_zp, b_zp_value, bias, out_dtype):
    return a_q.new_empty((a_q.shape[0], b_q.shape[1]), dtype=out_dtype)


# ----------------------------------------------------------------------- public entry
def _check_operands(a_q, b_q) -> None:
    """The operand rules of checks.matmul_operands, for torch tensors where the kernels run."""
    checks.torch_tensor(a_q, "a_q")
    checks.torch_tensor(b_q, "b_q")
    checks.matmul_operands(a_q, b_q)
    checks.kernel_device(a_q, "a_q")


def _split(value, default):
    """(tensor or None, Python number) for a checked scale or zero point: the custom op
    takes a tensor operand and a kernel scalar, the scalar used when the tensor is None."""
    return (value, default) if isinstance(value, torch.Tensor) else (None, value)


def int8_matmul(a_q: torch.Tensor, b_q: torch.Tensor, *, config=None) -> torch.Tensor:
    """Exact a_q @ b_q as int32 (M, N), for any M, N and K <= MAX_K (torch._int_mm
    semantics without its shape limits). a_q (M, K) and b_q (K, N) are int8 or uint8;
    b_q may be row-major or the transpose of a contiguous (N, K) weight (no copy).

    With uint8 operands the result must fit int32: K * max|a| * max|b| < 2**31 is
    required (K <= 65793 for one uint8 operand, 33025 for two). `config` forces a launch
    config (see use_config); leave it None outside tests.
    """
    _check_operands(a_q, b_q)
    bound = (255 if a_q.dtype == torch.uint8 else 128) * (255 if b_q.dtype == torch.uint8 else 128)
    if a_q.shape[1] * bound > _INT32_MAX:
        raise ValueError(
            f"K = {a_q.shape[1]} with {a_q.dtype} x {b_q.dtype} operands: the result could pass the "
            f"int32 range (K must be <= {_INT32_MAX // bound})"
        )
    with _maybe_forced(config):
        return torch.ops.qtriton.int8_mm(a_q, b_q)


def scaled_matmul(
    a_q: torch.Tensor,
    b_q: torch.Tensor,
    a_scale,
    b_scale,
    a_zp=None,
    b_zp=None,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    *,
    config=None,
) -> torch.Tensor:
    """((a_q - a_zp) @ (b_q - b_zp)) * a_scale * b_scale + bias, as out_dtype (M, N).

    a_q (M, K), b_q (K, N): int8 or uint8, b_q row-major or a (N, K) weight's .t().
    a_scale: float or float tensor 0-d / (1,) / (M,); b_scale: float or 0-d / (1,) / (N,).
    a_zp: int or integer tensor 0-d / (1,) / (M,); b_zp likewise with (N,); None = 0.
    bias: (N,) of any float dtype, or None. out_dtype: float32, float16 or bfloat16.
    The rules and messages are qtriton.checks' (as for qtriton.quantized_matmul): scales
    are float32 (a Python float is rounded to it; not positive, finite and normal there:
    ValueError), |zero points| <= 2**24, K <= MAX_K; tensors are checked through their
    metadata only (nothing syncs with the host, a NaN scale passes). The scales apply
    after an exact integer product (see kernels/matmul.py).
    """
    _check_operands(a_q, b_q)
    for name, value, integer in (("a_scale", a_scale, False), ("b_scale", b_scale, False),
                                 ("a_zp", 0 if a_zp is None else a_zp, True),
                                 ("b_zp", 0 if b_zp is None else b_zp, True)):
        checks.tensor_or_number(value, name, integer)
    if bias is not None:
        checks.torch_tensor(bias, "bias")
    args = checks.matmul(a_q, b_q, a_scale, b_scale, a_zp, b_zp, bias, out_dtype, read_values=False)
    with _maybe_forced(config):
        return _scaled_matmul_checked(*args[:-1], checks.OUT_DTYPES[args[-1]][1])


def _scaled_matmul_checked(a_q, b_q, a_scale, b_scale, a_zp, b_zp, bias, out_dtype: torch.dtype) -> torch.Tensor:
    """scaled_matmul on arguments checks.matmul has normalised, without checking again: the
    triton backend's quantized_matmul (the API validated its arguments)."""
    a_scale_t, a_scale_v = _split(a_scale, 1.0)
    b_scale_t, b_scale_v = _split(b_scale, 1.0)
    a_zp_t, a_zp_v = _split(0 if a_zp is None else a_zp, 0)
    b_zp_t, b_zp_v = _split(0 if b_zp is None else b_zp, 0)
    return torch.ops.qtriton.scaled_mm(
        a_q, b_q, a_scale_t, float(a_scale_v), b_scale_t, float(b_scale_v),
        a_zp_t, int(a_zp_v), b_zp_t, int(b_zp_v), bias, out_dtype,
    )


# ------------------------------------------------------------------------------ tuning
def tune(shapes: Sequence[tuple[int, int, int]], out_dtype: torch.dtype = torch.bfloat16) -> dict:
    """Autotune each (M, N, K) on the current GPU; returns the winners, JSON-able.

    The problem tuned is the Int8Linear one: int8 activations with per-row scales times
    the transpose of a contiguous (N, K) int8 weight with per-column scales, out_dtype
    output; launches read its entries only for that variant (int8 operands, no zero
    points), the others autotune on first use. The result is what save_tuned_configs writes:
    {"device": ..., "triton": ..., "out_dtype": ..., "configs": {shape_key: config}}.
    """
    if interpreter_enabled() or not torch.cuda.is_available():
        raise RuntimeError("tune needs a CUDA GPU (and TRITON_INTERPRET unset)")
    device = torch.device("cuda", torch.cuda.current_device())
    kernel = _autotuned_kernel()
    configs = {}
    for M, N, K in shapes:
        a_q = torch.randint(-128, 128, (M, K), dtype=torch.int8, device=device)
        weight = torch.randint(-128, 128, (N, K), dtype=torch.int8, device=device)
        a_scale = torch.rand(M, device=device) + 0.5
        b_scale = torch.rand(N, device=device) + 0.5
        out = torch.empty((M, N), dtype=out_dtype, device=device)
        _launch(a_q, weight.t(), out, a_scale, 1.0, b_scale, 1.0, None, 0, None, 0, None, scaled=True, tuned=False)
        configs[shape_key(M, N, K, b_k_major=True)] = _config_dict(kernel.best_config)
    return {
        "device": torch.cuda.get_device_name(device),
        "triton": triton.__version__,
        "out_dtype": str(out_dtype).removeprefix("torch."),
        "configs": configs,
    }


def save_tuned_configs(data: dict, path: str | Path | None = None) -> Path:
    """Write tune()'s result as JSON (default: qtriton/configs/<device slug>.json),
    merged over the configs already in that file; returns the path written."""
    if "device" not in data or "configs" not in data:
        raise ValueError("data must be tune()'s result: a dict with 'device' and 'configs'")
    for key, config in data["configs"].items():
        _config_dict(config)  # refuse a malformed entry before writing it
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

