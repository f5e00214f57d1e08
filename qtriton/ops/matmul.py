"""Launchers for the int8 GEMM in qtriton.kernels.matmul: validation of what a launch
needs, the launch itself and the torch.library custom ops behind `int8_matmul` /
`scaled_matmul`. Configs (pools, autotuner, forced configs, per-card tuned files) live in
qtriton/ops/configs.py; its public names are re-exported here.

Nothing here syncs with the host: Python scalars travel as kernel scalars, tensors are
only looked at through their metadata.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from qtriton import checks
from qtriton.backend import interpreter_enabled
from qtriton.kernels import matmul as kernels
from qtriton.kernels import matmul_copy as copy_kernels
from qtriton.kernels import matmul_split_k as split_k_kernels
from qtriton.kernels import matmul_sums as sums_kernels
from qtriton.operands import MatmulOperands
from qtriton.ops import configs
from qtriton.ops.configs import (  # re-exported: qtriton.ops.matmul's public config API
    configs_for,
    device_slug,
    m_bucket,
    save_tuned_configs,
    shape_key,
    use_config,
    use_gemm,
)
from qtriton.reference import ZERO_POINT_LIMIT

__all__ = [
    "MAX_K", "MatmulOperands", "configs_for", "device_slug", "int8_matmul", "kernel_args", "m_bucket",
    "save_tuned_configs", "scaled_matmul", "scaled_matmul_unchecked", "shape_key", "tune", "use_config", "use_gemm",
]

MAX_K = checks.MAX_K  # the int32 accumulator's limit, one rule for every entry (qtriton.checks)
_INT32_MAX = 2**31 - 1


# ------------------------------------------------------------------------- the launch
def _operand_bound(dtype: torch.dtype, zp_tensor, zp_value: int) -> int:
    """max |q - zp| over the codes of dtype and the zero points the call can have: a
    Python zero point is known exactly; a tensor one only to |zp| <= ZERO_POINT_LIMIT
    (the API checks it; reading it here would sync with the host)."""
    lo, hi = (0, 255) if dtype == torch.uint8 else (-128, 127)
    if zp_tensor is not None:
        return max(-lo, hi) + ZERO_POINT_LIMIT + abs(zp_value)
    return max(abs(lo - zp_value), abs(hi - zp_value))


def correction_dtype(K: int, a_dtype, b_dtype, a_zp, a_zp_value: int, b_zp, b_zp_value: int):
    """The type the kernel's zero-point correction runs in: int32 / int64 when the true
    |C| = |(A - a_zp) @ (B - b_zp)| <= K * max|A - a_zp| * max|B - b_zp| provably fits it
    (the correction's +, -, * wrap modulo 2**32 / 2**64, so the result is then exact
    whatever its terms do), float64 only when it does not fit int64."""
    bound = K * _operand_bound(a_dtype, a_zp, a_zp_value) * _operand_bound(b_dtype, b_zp, b_zp_value)
    return tl.int32 if bound < 2**31 else tl.int64 if bound < 2**63 else tl.float64


def _row_sums(x: torch.Tensor, stride_r: int, stride_k: int, R: int, K: int) -> torch.Tensor:
    """int32 (R,) sums over K of x's stored codes (a uint8 as 0..255): A's rows
    (strides of A) or B's columns (B's strides swapped)."""
    out = torch.empty(R, dtype=torch.int32, device=x.device)
    # The tile runs along the contiguous dimension, 256 bytes of it per row of the tile.
    block_r, block_k = (16, 256) if stride_k == 1 else (256, 16)
    block_r = min(block_r, max(16, configs.next_power_of_2(R)))
    block_k = min(block_k, max(16, configs.next_power_of_2(K)))
    grid = (configs.cdiv(R, block_r),)
    sums_kernels._row_sums_kernel[grid](x, out, R, K, stride_r, stride_k, BLOCK_SIZE_R=block_r, BLOCK_SIZE_K=block_k)
    return out


def _operand_copy(x: torch.Tensor, k_major: bool, shift: bool) -> torch.Tensor:
    """x (R, C) copied contiguous, as int8 `x - 128` when shift (x uint8); k_major: into
    a contiguous (C, R) returned as its .t() (B (K, N) K-major: what wgmma reads)."""
    R, C = x.shape
    dtype = torch.int8 if shift else x.dtype
    if k_major:
        copy = torch.empty((C, R), dtype=dtype, device=x.device)
        view, stride_yr, stride_yc = copy.t(), 1, copy.stride(0)
    else:
        view = copy = torch.empty((R, C), dtype=dtype, device=x.device)
        stride_yr, stride_yc = copy.stride(0), 1
    grid = (configs.cdiv(R, 64), configs.cdiv(C, 64))
    copy_kernels._copy_kernel[grid](
        x, copy, R, C, x.stride(0), x.stride(1), stride_yr, stride_yc,
        SHIFT=shift, BLOCK_SIZE_R=64, BLOCK_SIZE_C=64,
    )
    return view


# The optional operands whose tensors the kernels read: `<name>_ptr` (None compiles away)
# and `stride_<name>`.
_VECTORS = ("a_scale", "b_scale", "a_zp", "b_zp", "bias", "a_rowsum", "b_colsum")


def _split(value, default):
    """(tensor or None, Python number) of a checked scale or zero point: the kernels take a
    tensor operand and a kernel scalar, the scalar used when the tensor is None."""
    return (value, default) if isinstance(value, torch.Tensor) else (None, value)


def kernel_args(operands: MatmulOperands, a_zp_shift: int = 0, b_zp_shift: int = 0) -> dict:
    """The kernels' keyword arguments for a checked MatmulOperands (kernels/matmul.py's names):
    `<name>_ptr` for each tensor, None when absent (Triton specialises a None argument as a
    constexpr: the code reading it compiles away), `stride_<name>` (0 broadcasts a
    one-element tensor) and the four Python values as kernel scalars, a zero point's value
    added to its tensor (a_zp_shift / b_zp_shift: the uint8 shift's -128)."""
    a_scale, a_scale_value = _split(operands.a_scale, 1.0)
    b_scale, b_scale_value = _split(operands.b_scale, 1.0)
    a_zp, a_zp_value = _split(operands.a_zp, 0)
    b_zp, b_zp_value = _split(operands.b_zp, 0)
    args = {"a_scale_value": float(a_scale_value), "b_scale_value": float(b_scale_value),
            "a_zp_value": int(a_zp_value) + a_zp_shift, "b_zp_value": int(b_zp_value) + b_zp_shift}
    vectors = {"a_scale": a_scale, "b_scale": b_scale, "a_zp": a_zp, "b_zp": b_zp, "bias": operands.bias,
               "a_rowsum": operands.a_rowsum, "b_colsum": operands.b_colsum}
    for name in _VECTORS:
        vector = vectors[name]
        args[f"{name}_ptr"] = vector
        args[f"stride_{name}"] = 0 if vector is None or vector.numel() == 1 else vector.stride(0)
    return args


def _launch(a_q, b_q, out, operands: MatmulOperands, scaled: bool, tuned: bool = True) -> torch.Tensor:
    """Fill `out` (M, N) with the GEMM; the arguments are already checked and normalised.
    Everything the launch decides comes from one configs.launch_plan; sums the zero points
    need and the caller did not give (Int8Linear keeps its weight's) are computed here, once."""
    M, K = a_q.shape
    N = b_q.shape[1]
    if M == 0 or N == 0:
        return out
    a_is_uint8, b_is_uint8 = a_q.dtype == torch.uint8, b_q.dtype == torch.uint8
    args = kernel_args(operands, -128 * a_is_uint8, -128 * b_is_uint8)
    a_zp, b_zp = args["a_zp_ptr"], args["b_zp_ptr"]
    correction = correction_dtype(K, a_q.dtype, b_q.dtype, a_zp, args["a_zp_value"] + 128 * a_is_uint8,
                                  b_zp, args["b_zp_value"] + 128 * b_is_uint8)
    flags = {
        "A_IS_UINT8": a_is_uint8,
        "B_IS_UINT8": b_is_uint8,
        "HAS_A_ZP": a_zp is not None or args["a_zp_value"] != 0,
        "HAS_B_ZP": b_zp is not None or args["b_zp_value"] != 0,
        "CORRECTION_DTYPE": correction,
        "SCALED": scaled,
    }
    a_rowsum, b_colsum = operands.a_rowsum, operands.b_colsum
    on_device = torch.cuda.device(a_q.device) if a_q.device.type == "cuda" else contextlib.nullcontext()
    with on_device:  # Triton launches on the current CUDA device, not on the tensors' one.
        plan = configs.launch_plan(a_q, b_q, flags, tuned)
        # Copies that take byte work out of every K step or make an operand TMA-ready
        # (kernels/matmul_copy.py); a shifted operand is int8 from here on, its caller-given
        # sums made int8's too.
        if plan.copy_a:
            a_q = _operand_copy(a_q, k_major=False, shift=plan.shift_a)
            a_rowsum = None if a_rowsum is None or not plan.shift_a else a_rowsum - 128 * K
        if plan.copy_b:
            b_q = _operand_copy(b_q, k_major=plan.b_copy_k_major, shift=plan.shift_b)
            b_colsum = None if b_colsum is None or not plan.shift_b else b_colsum - 128 * K
        if plan.flags["HAS_A_ZP"] and b_colsum is None:
            b_colsum = _row_sums(b_q, b_q.stride(1), b_q.stride(0), N, K)
        if plan.flags["HAS_B_ZP"] and a_rowsum is None:
            a_rowsum = _row_sums(a_q, a_q.stride(0), a_q.stride(1), M, K)
        args.update(a_rowsum_ptr=a_rowsum, b_colsum_ptr=b_colsum, M=M, N=N, K=K, M_BUCKET=plan.m_bucket,
                    stride_a_rowsum=0 if a_rowsum is None or a_rowsum.numel() == 1 else a_rowsum.stride(0),
                    stride_b_colsum=0 if b_colsum is None or b_colsum.numel() == 1 else b_colsum.stride(0))

        if plan.loop == "gluon":
            from qtriton.ops import matmul_gluon  # needs Gluon, which launch_plan made sure of

            matmul_gluon.launch(a_q, b_q, out, args, plan)
            return out

        split_k = plan.split_k
        target = out if split_k == 1 else torch.empty((split_k, M, N), dtype=torch.int32, device=out.device)

        def grid(meta):
            return (configs.cdiv(M, meta["BLOCK_SIZE_M"]) * configs.cdiv(N, meta["BLOCK_SIZE_N"]), split_k)

        launch = dict(a_ptr=a_q, b_ptr=b_q, c_ptr=target,
                      stride_am=a_q.stride(0), stride_ak=a_q.stride(1), stride_bk=b_q.stride(0),
                      stride_bn=b_q.stride(1), stride_cm=target.stride(-2), stride_cn=target.stride(-1),
                      stride_cs=target.stride(0) if split_k > 1 else 0, **args, **plan.flags, SPLIT_K=split_k)
        if plan.config is None:
            configs.autotuned_kernel()[grid](**launch)
        else:
            kernels._int8_matmul_kernel[grid](**launch, **plan.config)
        if split_k > 1:
            # The exact sum of the partials, then the epilogue, once per element.
            block_m = min(32, max(16, configs.next_power_of_2(M)))
            block_n = min(128, max(16, configs.next_power_of_2(N)))
            reduce_grid = (configs.cdiv(M, block_m), configs.cdiv(N, block_n))
            epilogue = {name: value for name, value in args.items() if name != "M_BUCKET"}
            split_k_kernels._split_k_epilogue_kernel[reduce_grid](
                partials_ptr=target, c_ptr=out, stride_ps=target.stride(0), stride_pm=target.stride(1),
                stride_pn=target.stride(2), stride_cm=out.stride(0), stride_cn=out.stride(1),
                **epilogue, **plan.flags, SPLIT_K=split_k, BLOCK_SIZE_M=block_m, BLOCK_SIZE_N=block_n,
            )
    return out


# ------------------------------------------------------------------------------ tuning
def tune(shapes: Sequence[tuple[int, int, int]], out_dtype: torch.dtype = torch.bfloat16,
         layouts: Sequence[str] = ("nk",)) -> dict:
    """Autotune each (M, N, K) on the current GPU; returns the winners, JSON-able.

    The problem tuned is the Int8Linear one: int8 activations with per-row scales times
    an int8 B with per-column scales, out_dtype output; B is the transpose of a contiguous
    (N, K) weight ("nk") and, with "kn" in layouts, also a row-major (K, N) matrix (the
    lab API's layout; skipped where the launcher copies it K-major, M >= KMAJOR_MIN_M).
    Launches read the entries only for that variant (int8 operands, no zero points), the
    others autotune on first use. An entry records the split-K the launch ran with. The
    result is what save_tuned_configs writes:
    {"device": ..., "triton": ..., "out_dtype": ..., "configs": {shape_key: config}}.
    """
    if interpreter_enabled() or not torch.cuda.is_available():
        raise RuntimeError("tune needs a CUDA GPU (and TRITON_INTERPRET unset)")
    unknown = set(layouts) - {"nk", "kn"}
    if unknown:
        raise ValueError(f"layouts must be 'nk' and / or 'kn', got {sorted(unknown)}")
    device = torch.device("cuda", torch.cuda.current_device())
    kernel = configs.autotuned_kernel()
    tuned = {}
    for M, N, K in shapes:
        a_q = torch.randint(-128, 128, (M, K), dtype=torch.int8, device=device)
        weight = torch.randint(-128, 128, (N, K), dtype=torch.int8, device=device)
        a_scale = torch.rand(M, device=device) + 0.5
        b_scale = torch.rand(N, device=device) + 0.5
        out = torch.empty((M, N), dtype=out_dtype, device=device)
        for layout in layouts:
            k_major = layout == "nk"
            if configs.transpose_b_for(M, k_major):
                continue  # runs K-major: the "nk" entry serves it
            b_q = weight.t() if k_major else weight.t().contiguous()
            with configs.use_gemm("tl"):  # the tl.dot loop's autotuner is what is tuned
                _launch(a_q, b_q, out, MatmulOperands(a_scale, b_scale), scaled=True, tuned=False)
            split = configs.split_k_for(M, N, K, configs.config_dict(configs_for(M, N, K)[0]), device)
            tuned[shape_key(M, N, K, b_k_major=k_major)] = {**configs.config_dict(kernel.best_config), "SPLIT_K": split}
    return {
        "device": torch.cuda.get_device_name(device),
        "triton": triton.__version__,
        "out_dtype": str(out_dtype).removeprefix("torch."),
        "configs": tuned,
    }


# --------------------------------------------------------------------- the custom ops
@torch.library.custom_op("qtriton::int8_mm", mutates_args=())
def _int8_mm(a_q: torch.Tensor, b_q: torch.Tensor) -> torch.Tensor:
    out = torch.empty((a_q.shape[0], b_q.shape[1]), dtype=torch.int32, device=a_q.device)
    return _launch(a_q, b_q, out, MatmulOperands(), scaled=False)


@_int8_mm.register_fake
def _int8_mm_fake(a_q, b_q):
    return a_q.new_empty((a_q.shape[0], b_q.shape[1]), dtype=torch.int32)


# A custom op's schema lists tensors and numbers, not objects: MatmulOperands crosses it as
# (tensor or None, Python value) per scale / zero point, and is made whole again inside.
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
    a_rowsum: torch.Tensor | None = None,
    b_colsum: torch.Tensor | None = None,
) -> torch.Tensor:
    out = torch.empty((a_q.shape[0], b_q.shape[1]), dtype=out_dtype, device=a_q.device)
    operands = MatmulOperands(
        a_scale=a_scale_value if a_scale is None else a_scale, b_scale=b_scale_value if b_scale is None else b_scale,
        a_zp=a_zp_value if a_zp is None else a_zp, b_zp=b_zp_value if b_zp is None else b_zp, bias=bias,
        a_rowsum=a_rowsum, b_colsum=b_colsum,
    )
    return _launch(a_q, b_q, out, operands, scaled=True)


@_scaled_mm.register_fake
def _scaled_mm_fake(a_q, b_q, a_scale, a_scale_value, b_scale, b_scale_value,
                    a_zp, a_zp_value, b_zp, b_zp_value, bias, out_dtype, a_rowsum=None, b_colsum=None):
    return a_q.new_empty((a_q.shape[0], b_q.shape[1]), dtype=out_dtype)


# ----------------------------------------------------------------------- public entry
def int8_matmul(a_q: torch.Tensor, b_q: torch.Tensor, *, config=None) -> torch.Tensor:
    """Exact a_q @ b_q as int32 (M, N), for any M, N and K <= MAX_K (torch._int_mm
    semantics without its shape limits). a_q (M, K) and b_q (K, N) are int8 or uint8;
    b_q may be row-major or the transpose of a contiguous (N, K) weight (no copy).

    With uint8 operands the result must fit int32: K * max|a| * max|b| < 2**31 is
    required (K <= 65793 for one uint8 operand, 33025 for two). `config` forces a launch
    config (see use_config); leave it None outside tests.
    """
    checks.torch_tensor(a_q, "a_q")
    checks.torch_tensor(b_q, "b_q")
    checks.matmul_operands(a_q, b_q)
    checks.kernel_device(a_q, "a_q")
    bound = (255 if a_q.dtype == torch.uint8 else 128) * (255 if b_q.dtype == torch.uint8 else 128)
    if a_q.shape[1] * bound > _INT32_MAX:
        raise ValueError(
            f"K = {a_q.shape[1]} with {a_q.dtype} x {b_q.dtype} operands: the result could pass the "
            f"int32 range (K must be <= {_INT32_MAX // bound})"
        )
    with configs.maybe_forced(config):
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
    a_rowsum: torch.Tensor | None = None,
    b_colsum: torch.Tensor | None = None,
) -> torch.Tensor:
    """((a_q - a_zp) @ (b_q - b_zp)) * a_scale * b_scale + bias, as out_dtype (M, N).

    a_q (M, K), b_q (K, N): int8 or uint8, b_q row-major or a (N, K) weight's .t().
    a_scale: float or float tensor 0-d / (1,) / (M,); b_scale: float or 0-d / (1,) / (N,).
    a_zp: int or integer tensor 0-d / (1,) / (M,); b_zp likewise with (N,); None = 0.
    bias: (N,) of any float dtype, or None. out_dtype: float32, float16 or bfloat16 (or fp32, fp16, half, bf16).
    The rules and messages are qtriton.checks' (as for qtriton.quantized_matmul): scales
    are float32 (a Python float is rounded to it; not positive, finite and normal there:
    ValueError), |zero points| <= 2**24, K <= MAX_K; tensors are checked through their
    metadata only (nothing syncs with the host, a NaN scale passes): a zero-point tensor
    must be int32 or narrower (int64: TypeError). The caller's duty, unread: scale
    tensors positive, finite and normal in float32; zero-point tensors within +-2**24
    (beyond it the result wraps); a bias finite in float32. The scales apply after an
    exact integer product (see kernels/matmul.py).
    a_rowsum (M,) / b_colsum (N,): optional int32 sums of a_q's rows / b_q's columns (the
    stored codes, `b_q.sum(0, dtype=torch.int32)`), which the zero-point correction
    needs for a b_zp / an a_zp; computed once per call when not given. A constant
    weight's column sums are worth keeping (Int8Linear does): they cost a pass over B.
    """
    checks.torch_tensor(a_q, "a_q")
    checks.torch_tensor(b_q, "b_q")
    for name, value, integer in (("a_scale", a_scale, False), ("b_scale", b_scale, False),
                                 ("a_zp", 0 if a_zp is None else a_zp, True),
                                 ("b_zp", 0 if b_zp is None else b_zp, True)):
        checks.tensor_or_number(value, name, integer)
    if bias is not None:
        checks.torch_tensor(bias, "bias")
    operands = MatmulOperands(a_scale, b_scale, a_zp, b_zp, bias, a_rowsum, b_colsum)
    a_q, b_q, operands, out_dtype = checks.matmul(a_q, b_q, operands, out_dtype, read_values=False)
    checks.kernel_device(a_q, "a_q")
    with configs.maybe_forced(config):
        return scaled_matmul_unchecked(a_q, b_q, operands, checks.OUT_DTYPES[out_dtype][1])


def scaled_matmul_unchecked(a_q: torch.Tensor, b_q: torch.Tensor, operands: MatmulOperands,
                            out_dtype: torch.dtype) -> torch.Tensor:
    """scaled_matmul on arguments qtriton.checks.matmul has checked and normalised, without
    checking again: the triton backend's quantized_matmul (the API and Int8Linear check
    their arguments once, before it). One call of the custom op."""
    a_scale, a_scale_value = _split(operands.a_scale, 1.0)
    b_scale, b_scale_value = _split(operands.b_scale, 1.0)
    a_zp, a_zp_value = _split(0 if operands.a_zp is None else operands.a_zp, 0)
    b_zp, b_zp_value = _split(0 if operands.b_zp is None else operands.b_zp, 0)
    return torch.ops.qtriton.scaled_mm(
        a_q, b_q, a_scale, float(a_scale_value), b_scale, float(b_scale_value),
        a_zp, int(a_zp_value), b_zp, int(b_zp_value), operands.bias, out_dtype, operands.a_rowsum, operands.b_colsum,
    )
