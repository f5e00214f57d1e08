"""The quantize / dequantize kernels (qtriton.ops.quantize) against the NumPy oracle.

Integer codes and zero points must be equal, scales and dequantized values bit-equal
(both sides do the same float32 operations in the same order). fp16 / bf16 inputs are
compared with the oracle on the same values widened to float32 (an exact conversion).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

from qtriton import reference as ref
from qtriton.kernels.quantize import _cast_rne, _round_half_even
from qtriton.model.scheme import ActivationQuant
from qtriton.ops import quantize as qops
from qtriton.testing import assert_exact

from tests.cases import ACTIVATION_MODES, activation_codes, assert_same_codes

pytestmark = [
    pytest.mark.interpreter,
    # NaN / Inf test data makes the interpreter's NumPy arithmetic warn; the results are checked.
    pytest.mark.filterwarnings("ignore:(invalid value|overflow) encountered:RuntimeWarning"),
]

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
GRANULARITIES = ("tensor", "channel", "token")


# ----------------------------------------------------------------------------- helpers
def _tensor(values: np.ndarray, device: str, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(device=device, dtype=dtype)


def _as_oracle_input(x: torch.Tensor) -> np.ndarray:
    """The values of x as float32 NumPy (exact for fp16 / bf16)."""
    return x.detach().cpu().float().numpy()


def _oracle(x: torch.Tensor, granularity: str, axis: int | None, num_bits: int, symmetric: bool):
    x_np = _as_oracle_input(x)
    if granularity == "token":
        return ref.quantize_per_token(x_np, num_bits, symmetric)
    keep_axis = None if granularity == "tensor" else axis % x.dim()
    quantize = ref.quantize_symmetric if symmetric else ref.quantize_asymmetric
    return quantize(x_np, num_bits, keep_axis=keep_axis)


def _quantize(x: torch.Tensor, granularity: str, axis: int | None, num_bits: int, symmetric: bool, **launch):
    """Run the kernel entry point for granularity, checking x is left as it was."""
    before = x.clone()
    if granularity == "tensor":
        result = qops.quantize_per_tensor(x, num_bits, symmetric, **launch)
    elif granularity == "channel":
        result = qops.quantize_per_channel(x, axis, num_bits, symmetric, **launch)
    else:
        result = qops.quantize_per_token(x, num_bits, symmetric, **launch)
    assert_exact(x, before, "input after the call")
    return result


def _check_quantize(x, granularity, axis=None, num_bits=8, symmetric=True, **launch):
    """Kernel vs oracle: codes, scales, zero points, dtypes, contiguity."""
    result = _quantize(x, granularity, axis, num_bits, symmetric, **launch)
    expected = _oracle(x, granularity, axis, num_bits, symmetric)
    assert len(result) == len(expected) == (2 if symmetric else 3)
    q, scale = result[0], result[1]
    assert q.dtype == (torch.int8 if symmetric else torch.uint8) and q.is_contiguous()
    assert q.device == x.device and scale.device == x.device
    assert scale.dtype == torch.float32
    assert_exact(q, expected[0], "q")
    assert_exact(scale, expected[1], "scale")
    if not symmetric:
        assert result[2].dtype == torch.int32
        assert_exact(result[2], expected[2], "zero_point")
    return result


def _random(rng, shape, scale=1.0, offset=0.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale + offset).astype(np.float32)


# ----------------------------------------------------------------------------- rounding
@triton.jit
def _round_kernel(x_ptr, y_ptr, n, BLOCK_SIZE: tl.constexpr):
    offs = tl.arange(0, BLOCK_SIZE)
    mask = offs < n
    tl.store(y_ptr + offs, _round_half_even(tl.load(x_ptr + offs, mask=mask)), mask=mask)


def test_round_half_even_matches_rint(device, rng):
    ties = np.arange(-6, 6, dtype=np.float32) + np.float32(0.5)  # -5.5 ... 5.5
    special = np.array(
        [0.0, -0.0, 0.49999997, -0.49999997, 2.0**22 + 0.5, -(2.0**22) - 0.5, 2.0**22 + 1.5,
         2.0**23 - 0.5, 2.0**23, 2.0**23 + 1, -(2.0**23) - 2, 2.0**24 + 2, 1e30, -1e30,
         np.inf, -np.inf, np.nan],
        dtype=np.float32,
    )
    values = np.concatenate([ties, special, _random(rng, 40, scale=300.0)])
    x = _tensor(values, device)
    y = torch.empty_like(x)
    _round_kernel[(1,)](x, y, x.numel(), BLOCK_SIZE=triton.next_power_of_2(x.numel()))
    assert_exact(y, np.rint(values), "rint")  # the sign of a zero result is irrelevant to the codes


@triton.jit
def _cast_kernel(x_ptr, y_ptr, n, BLOCK_SIZE: tl.constexpr):
    offs = tl.arange(0, BLOCK_SIZE)
    mask = offs < n
    tl.store(y_ptr + offs, _cast_rne(tl.load(x_ptr + offs, mask=mask), y_ptr.dtype.element_ty), mask=mask)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cast_rounds_to_nearest_even(device, rng, dtype):
    """float32 -> half as torch casts (round to nearest even), ties and overflow included."""
    ulp = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11  # half an ulp at 1.0
    special = np.array(
        [1 + ulp, 1 + 3 * ulp, -(1 + ulp), 2 - ulp / 2, 0.0, -0.0, 1e-40, 3.3961e38, 65520.0,
         -3.4e38, np.inf, -np.inf, np.nan],
        dtype=np.float32,
    )
    values = np.concatenate([special, _random(rng, 50, scale=100.0)])
    x = _tensor(values, device)
    y = torch.empty(x.shape, dtype=dtype, device=device)
    _cast_kernel[(1,)](x, y, x.numel(), BLOCK_SIZE=triton.next_power_of_2(x.numel()))
    assert_exact(y, x.to(dtype), "cast")


# ----------------------------------------------------------------------------- per token
@pytest.mark.parametrize("shape", [(1,), (7,), (1, 1), (3, 33), (2, 3, 257), (2, 1031)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_per_token(device, rng, shape, dtype, symmetric):
    x = _tensor(_random(rng, shape, scale=3.0, offset=0.5), device, dtype)
    _check_quantize(x, "token", num_bits=8, symmetric=symmetric)


@pytest.mark.parametrize("layout", ["rows", "two_pass", "transposed"])
@pytest.mark.parametrize("num_bits", [4, 8])
def test_per_token_range_including_zero(device, rng, layout, num_bits):
    """include_zero: each row's range is [min(lo, 0), max(hi, 0)] (issue 15, item 5): a
    constant row c keeps its value (scale |c| / qmax), zero points lie in [0, qmax], and
    codes, scales and zero points equal the oracle's."""
    x = _random(rng, (8, 37), scale=2.0)
    x[0] = 0.3  # constant positive row
    x[1] = -7.5  # constant negative row
    x[2] = 0.0
    x[3] = np.abs(x[3]) + 5  # all positive: zero point 0
    x[4] = -np.abs(x[4]) - 5  # all negative: zero point qmax
    x[5, :] = 0.0
    x[5, 0] = 1e-30  # a denormal-size range
    launch = {"max_single_pass_k": 16} if layout == "two_pass" else {}
    xt = _tensor(x, device)
    if layout == "transposed":
        xt = _tensor(np.ascontiguousarray(x.T), device).t()
    q, scale, zero_point = qops.quantize_per_token(xt, num_bits, False, include_zero=True, **launch)
    q_ref, scale_ref, zp_ref = ref.quantize_per_token(x, num_bits, False, include_zero=True)
    assert_exact(q, q_ref, "q")
    assert_exact(scale, scale_ref, "scale")
    assert_exact(zero_point, zp_ref, "zero_point")
    qmax = 2**num_bits - 1
    assert ((zp_ref >= 0) & (zp_ref <= qmax)).all()
    assert scale_ref[0] == np.float32(0.3) / np.float32(qmax) and zp_ref[0] == 0 and (q_ref[0] == qmax).all()
    assert zp_ref[1] == qmax and (q_ref[1] == 0).all() and zp_ref[3] == 0 and zp_ref[4] == qmax
    deq = ref.dequantize_per_token(q_ref, scale_ref, zp_ref)
    np.testing.assert_allclose(deq[:2], x[:2], rtol=1e-6)
    assert (deq[x == 0] == 0).all()  # zero is exact


@pytest.mark.parametrize("backend, layout", [
    ("numpy", "rows"), ("torch", "rows"), ("torch", "transposed"),
    ("triton", "rows"), ("triton", "two_pass"), ("triton", "transposed"),
])
@pytest.mark.parametrize("mode", ACTIVATION_MODES)
def test_activation_codes_match_the_oracle(device, rng, backend, layout, mode):
    """Int8Linear's activations (reference.quantize_activations) on every backend: signed
    asymmetric codes, the input scale, a static scale with codes clamped at both ends, the
    NaN scale of a row holding NaN or Inf, rounding ties; the input left as it was."""
    symmetric, smoothed, static = ACTIVATION_MODES[mode]
    x = _random(rng, (7, 37), scale=3.0)
    x[0, :4] = [0.0, 1.5, 2.5, 40.5]  # ties of rint at unit scale...
    x[0, 4:] = np.linspace(0.0, 40.5, 33)  # ...where the row's range makes the scale 40.5 / qmax
    x[1, 3] = np.nan
    x[2] = 0.75  # constant row
    x[3, 5] = -np.inf
    x[4] *= 100.0  # past a static scale: clamped to -128 and 127
    input_scale = rng.uniform(0.25, 4.0, 37).astype(np.float32) if smoothed else None
    static_scale = np.float32(0.05) if static else None
    xt = _tensor(np.ascontiguousarray(x.T), device).t() if layout == "transposed" else _tensor(x, device)
    before = xt.clone()
    launch = {"max_single_pass_k": 16} if backend == "triton" and layout == "two_pass" else {}
    spec = ActivationQuant(symmetric, static_scale=static_scale, input_scale=input_scale)
    q, scale, zero_point = activation_codes(backend, x, xt, spec, **launch)
    assert_exact(xt, before, "input after the call")
    q_ref, scale_ref, zp_ref = ref.quantize_activations(x, symmetric, input_scale, static_scale)
    assert q.dtype in (np.int8, torch.int8) and tuple(q.shape) == x.shape
    assert_same_codes((q, scale, zero_point), (q_ref, scale_ref, zp_ref))
    # What the oracle promises: NaN scale and q - zero point 0 for the NaN / Inf rows; the
    # asymmetric codes are the per-token ones moved down by 128.
    zp_bad = 0 if zp_ref is None else zp_ref[[1, 3], None]
    assert np.isnan(scale_ref[[1, 3]]).all() and (q_ref[[1, 3]].astype(np.int32) == zp_bad).all()
    if static:
        assert (scale_ref[[0, 2, 4, 5, 6]] == static_scale).all() and {-128, 127} <= set(q_ref[4].tolist())
    elif not symmetric:
        xs = x if input_scale is None else x * input_scale
        q_token, _, zp_token = ref.quantize_per_token(xs, 8, False, include_zero=True)
        assert_exact(q_ref, (q_token.astype(np.int16) - 128).astype(np.int8), "oracle q")
        assert_exact(zp_ref, zp_token - 128, "oracle zero_point")


@pytest.mark.parametrize("shape", [(3, 1000), (2, 2, 129), (1, 64)])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_per_token_two_pass(device, rng, shape, symmetric):
    """Rows longer than the single-pass limit are reduced, then quantized, in chunks."""
    values = _random(rng, shape, scale=2.0)
    values[..., -1] = 40.0  # the extreme in the last chunk
    values[0, ..., 0] = -50.0  # and in the first
    x = _tensor(values, device)
    _check_quantize(x, "token", num_bits=8, symmetric=symmetric, max_single_pass_k=32)


def test_absent_zero_points_are_none_pointers(device, rng, monkeypatch):
    """Symmetric launches pass None for the zero-point operand (and the per-tensor lower
    partials), as the matmul kernels pass absent operands: no tensor stands in for it (#27)."""
    seen = {}

    def spy(name):
        original = getattr(qops._kernels, name)

        class Launch:
            def __getitem__(self, grid):
                def launch(*args, **kwargs):
                    seen.setdefault(name, []).append(dict(zip(original.arg_names, args)))
                    return original[grid](*args, **kwargs)
                return launch
        monkeypatch.setattr(qops._kernels, name, Launch())

    for name in ("_quantize_rows_kernel", "_quantize_channels_kernel", "_tensor_range_partials_kernel",
                 "_tensor_params_kernel", "_quantize_tensor_kernel", "_dequantize_kernel"):
        spy(name)
    x = _tensor(_random(rng, (6, 40)), device)
    qops.quantize_per_token(x)
    qops.quantize_per_token(x.t())  # transposed rows: the channel kernel
    qops.quantize_per_channel(x, 1)
    q, scale = qops.quantize_per_tensor(x)
    qops.dequantize(q, scale, granularity="tensor")
    assert len(seen) == 6
    for name, launches in seen.items():
        for args in launches:
            assert args.get("zero_point_ptr") is None and (name == "_tensor_range_partials_kernel"
                                                           or "zero_point_ptr" in args), name
    assert all(args["partial_lo_ptr"] is None for args in seen["_tensor_range_partials_kernel"])
    qops.quantize_per_token(x, symmetric=False)  # and an asymmetric launch gets its tensor
    assert isinstance(seen["_quantize_rows_kernel"][-1]["zero_point_ptr"], torch.Tensor)


# ----------------------------------------------------------------------------- per channel
CHANNEL_CASES = [((33,), a) for a in (0, -1)] + [
    (shape, axis)
    for shape in [(7, 33), (3, 5, 7), (2, 3, 5, 7)]
    for axis in range(-len(shape), len(shape))
]


@pytest.mark.parametrize("shape, axis", CHANNEL_CASES, ids=str)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_per_channel_every_axis(device, rng, shape, axis, symmetric):
    x = _tensor(_random(rng, shape, scale=2.0, offset=-0.3), device)
    _check_quantize(x, "channel", axis, num_bits=8, symmetric=symmetric)


@pytest.mark.parametrize("shape, axis", [((2, 3, 5, 7), 1), ((2, 3, 5, 7), 3), ((40, 6), 1), ((6, 100), 0)], ids=str)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_per_channel_multi_tile(device, rng, shape, axis, symmetric):
    """Slices larger than one tile: the channel kernel's (and the row kernel's) two-pass loops."""
    x = _tensor(_random(rng, shape), device)
    _check_quantize(x, "channel", axis, num_bits=6, symmetric=symmetric, tile=16, max_single_pass_k=16)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_per_channel_half_inputs(device, rng, dtype, axis):
    x = _tensor(_random(rng, (3, 9, 17), scale=5.0), device, dtype)
    _check_quantize(x, "channel", axis, num_bits=8, symmetric=axis != 1)


# ----------------------------------------------------------------------------- per tensor
@pytest.mark.parametrize("shape", [(1,), (7,), (33, 7), (2, 3, 5, 7), (3, 1031)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_per_tensor(device, rng, shape, dtype, symmetric):
    x = _tensor(_random(rng, shape, scale=4.0, offset=1.0), device, dtype)
    _, scale, *zero_point = _check_quantize(x, "tensor", num_bits=8, symmetric=symmetric)
    assert scale.shape == () and all(z.shape == () for z in zero_point)


@pytest.mark.parametrize("tile", [8, 64])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_per_tensor_many_partials(device, rng, tile, symmetric):
    """Many partial ranges (the extremes in different tiles) reduced by the finalize
    program, in several steps (its step is at most one tile)."""
    values = _random(rng, (5, 203))
    values[2, 100] = 9.0  # a middle step of the finalize loop
    values[0, 3] = -7.0  # its first step
    _check_quantize(_tensor(values, device), "tensor", num_bits=8, symmetric=symmetric, tile=tile)


# ------------------------------------------------------------------ every width, every form
@pytest.mark.parametrize("num_bits", range(2, 9))
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_every_bit_width(device, rng, num_bits, granularity, symmetric):
    x = _tensor(_random(rng, (6, 45), scale=2.0, offset=0.7), device)
    _check_quantize(x, granularity, 1, num_bits=num_bits, symmetric=symmetric)


# ----------------------------------------------------------------------------- layouts
def _layouts(rng, device):
    base = _tensor(_random(rng, (6, 10, 12), scale=3.0), device)
    return {
        "transposed": base[0].t(),  # (12, 10), strides (1, 12)
        "sliced": base[1:5, ::2, 3:],  # strided on every axis
        "permuted": base.permute(2, 0, 1),  # no (rows, K) view: copied
        "column": base[:, 3, 5],  # 1-D with stride 120
    }


@pytest.mark.parametrize("layout", ["transposed", "sliced", "permuted", "column"])
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_non_contiguous_inputs(device, rng, layout, granularity, symmetric):
    x = _layouts(rng, device)[layout]
    assert not x.is_contiguous()
    axis = 0 if granularity == "channel" else None
    _check_quantize(x, granularity, axis, num_bits=8, symmetric=symmetric)
    if x.dim() > 1 and granularity == "channel":
        _check_quantize(x, granularity, -1, num_bits=8, symmetric=symmetric)


def _transposed_row_layouts(rng, device, dtype):
    """Inputs whose rows (the last axis for per token, axis 0 for per channel) have stride
    1 across rows and a large stride along them, keyed by (granularity, name)."""
    base = _tensor(_random(rng, (40, 3, 12), scale=3.0, offset=0.5), device, dtype)
    return {
        ("token", "2-D transposed"): base[:, 0].t(),  # (12, 40), strides (1, 36)
        ("token", "3-D last axis strided"): base.permute(1, 2, 0),  # (3, 12, 40) -> rows (36, 40)
        ("channel", "2-D transposed"): base[:, 1].t(),  # (12, 40), axis 0: rows of a w.t()
        ("channel", "3-D last axis strided"): base.permute(2, 0, 1),  # (12, 40, 3) -> rows (12, 120)
    }


@pytest.mark.parametrize("granularity, layout", [
    ("token", "2-D transposed"), ("token", "3-D last axis strided"),
    ("channel", "2-D transposed"), ("channel", "3-D last axis strided"),
], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_transposed_rows_go_to_the_channel_kernel(device, rng, monkeypatch, granularity, layout, dtype, symmetric):
    """Rows read at a large stride would be uncoalesced in the row kernel: they are the
    channels of the channel kernel's (K, M, 1) view instead, which writes q (M, K)
    row-major through its output strides. Also with tiles too small for one pass."""
    x = _transposed_row_layouts(rng, device, dtype)[granularity, layout]
    assert x.stride(-1 if granularity == "token" else 1) != 1

    def row_kernel_launch(*args):
        raise AssertionError("rows with stride 1 across rows reached the row kernel")

    monkeypatch.setattr(qops, "_launch_rows", row_kernel_launch)
    _check_quantize(x, granularity, 0, num_bits=8, symmetric=symmetric)
    _check_quantize(x, granularity, 0, num_bits=7, symmetric=symmetric, tile=64)


def test_channel_blocks_keep_many_programs():
    """Per channel along a contiguous last axis (inner == 1): 64 contiguous bytes per row
    of the tile (16 float32 / 32 half channels), so a (4096, 4096) weight runs on 256 /
    128 programs rather than 64, with outer filling the tile."""
    for element_size, channels_per_program in [(4, 16), (2, 32)]:
        block_o, block_c, block_i = qops._channel_blocks(4096, 4096, 1, element_size, qops.TILE_ELEMENTS)
        assert (block_c, block_i) == (channels_per_program, 1)
        assert block_o * block_c == qops.TILE_ELEMENTS
        assert triton.cdiv(4096, block_c) >= 128
    assert qops._channel_blocks(100, 5, 1, 4, qops.TILE_ELEMENTS) == (128, 8, 1)  # few channels: all in one


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_per_channel_last_axis_many_programs(device, rng, dtype, symmetric):
    """inner == 1 with more channels than one program takes (3 programs of 16 or 32)."""
    x = _tensor(_random(rng, (5, 70), scale=2.0), device, dtype)
    _check_quantize(x, "channel", 1, num_bits=8, symmetric=symmetric)
    _check_quantize(x.t(), "channel", 0, num_bits=8, symmetric=symmetric)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_tensors_on_a_gpu_other_than_the_current_one(rng, granularity):
    """Triton launches on the current CUDA device: the launchers must switch to x's."""
    x = _tensor(_random(rng, (9, 70)), "cuda:1")
    with torch.cuda.device(0):
        q, scale, zero_point = _check_quantize(x, granularity, 1, num_bits=8, symmetric=False)
        out = qops.dequantize(q, scale, zero_point, granularity=granularity, axis=1)
        expected = _oracle_dequantize(q, scale, zero_point, granularity, 1)
        assert out.device == x.device
        assert_exact(out, expected, "dequantized")
        assert_exact(qops.fake_quantize(x, 8, True), qops.fake_quantize(x.cpu().to("cuda:0"), 8, True), "fake")


# ----------------------------------------------------------------------------- values
def _special_rows(rng) -> np.ndarray:
    """One row per case, 37 columns."""
    rows = np.zeros((8, 37), dtype=np.float32)  # row 0: all zero
    rows[1] = 2.5  # constant positive
    rows[2] = -1e-3  # constant negative
    rows[3] = _random(rng, 37, scale=1e30)  # huge
    rows[4] = _random(rng, 37, scale=1e-30)  # tiny: scale floored at FLT_MIN
    rows[5] = _random(rng, 37, scale=1e-42)  # denormal inputs
    rows[6] = _random(rng, 37, scale=3.0, offset=1000.0)  # far from zero, narrow range
    rows[7, :3] = [3.4e38, -3.4e38, 0.0]  # asymmetric range overflows float32
    return rows


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_special_values(device, rng, granularity, symmetric, dtype):
    rows = _special_rows(rng)
    if granularity == "tensor":  # one case per call
        for row in rows:
            _check_quantize(_tensor(row, device, dtype), "tensor", None, 8, symmetric)
    else:
        _check_quantize(_tensor(rows, device, dtype), granularity, 0, 8, symmetric)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_denormal_half_inputs(device, rng, granularity, symmetric, dtype):
    """Denormal bf16 / fp16 inputs widen exactly (issue 15, item 8: the interpreter turned
    bf16 denormals into other values, e.g. -2.76e-40 into -5.88e-39, and zero points
    differed from the oracle's)."""
    tiny = np.float32(2.0**-134 if dtype == torch.bfloat16 else 2.0**-24)
    x = _tensor(rng.integers(-200, 200, (4, 9)).astype(np.float32) * tiny, device, dtype)
    x[1] = x[1].abs()  # rows of one sign: zero points away from the middle
    q, scale, *zero_point = _quantize(x, granularity, 1, 8, symmetric)
    x_np = _as_oracle_input(x)
    assert (np.abs(x_np[x_np != 0]) < 2.0**-126).all() or dtype == torch.float16
    if granularity == "token":
        expected = ref.quantize_per_token(x_np, 8, symmetric)
    else:
        keep_axis = 1 if granularity == "channel" else None
        quantize = ref.quantize_symmetric if symmetric else ref.quantize_asymmetric
        expected = quantize(x_np, 8, keep_axis)
    got = (q, scale, *zero_point)
    assert len(got) == len(expected)
    for name, g, want in zip(("q", "scale", "zero_point"), got, expected):
        assert_exact(g, want, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fake_quantize_gives_positive_zero(device, dtype):
    """A small negative x rounds to code 0: +0.0 as the oracle's integer 0 gives, not -0.0."""
    x = _tensor(np.array([-0.001, 1.0, -1.0, -0.0], np.float32), device, dtype)
    out = qops.fake_quantize(x, 8, True)
    expected = ref.dequantize_symmetric(*ref.quantize_symmetric(_as_oracle_input(x)))
    assert not torch.signbit(out[[0, 3]]).any()
    assert np.array_equal(np.signbit(out.float().cpu().numpy()), np.signbit(expected))


def test_rounding_ties_at_unit_scale(device):
    """absmax 127 (symmetric) / range 0..255 (asymmetric) give scale exactly 1.0, so each
    k + 0.5 is a tie that must round to even."""
    ties = np.arange(-127, 127, dtype=np.float32) + np.float32(0.5)
    x = _tensor(np.concatenate([ties, [127.0]]), device)
    q, scale = qops.quantize_per_tensor(x)
    assert_exact(scale, np.float32(1.0), "scale")
    assert_exact(q, np.clip(np.rint(x.cpu().numpy()), -128, 127).astype(np.int8), "q")

    ties = np.arange(0, 255, dtype=np.float32) + np.float32(0.5)
    x = _tensor(np.concatenate([ties[:-1], [0.0, 255.0]])[None, :], device)
    q, scale, zero_point = qops.quantize_per_token(x, symmetric=False)
    assert_exact(scale, np.ones(1, np.float32), "scale")
    assert_exact(zero_point, np.zeros(1, np.int32), "zero_point")
    assert_exact(q, np.rint(x.cpu().numpy()).astype(np.uint8), "q")


def test_zero_point_ties_round_half_up(device):
    """-lo / scale = k + 0.5 exactly: the zero point rounds up (4.5 -> 5, 5.5 -> 6), so lo
    and hi land on 0 and qmax; also where float32 still has halves (2^22 .. 2^23)."""
    x = _tensor(np.array([[-4.5, 10.5, 0.0], [-5.5, 9.5, 1.25], [-2.5, 12.5, 3.5]]), device)  # 4 bits: scale 1
    zero_point = _check_quantize(x, "token", None, 4, symmetric=False)[2]
    assert_exact(zero_point, np.array([5, 6, 3], np.int32), "zero_point")
    _check_quantize(x, "channel", 0, 4, symmetric=False)
    _check_quantize(x[0], "tensor", None, 4, symmetric=False)

    lo = np.float32(-(2.0**22) - 0.5)
    x = _tensor(np.array([[lo, lo + 255.0, lo + 100.0], [-(2.0**22) - 1.5, -(2.0**22) + 253.5, 0.0]]), device)
    _check_quantize(x[:, :2], "token", None, 8, symmetric=False)
    _check_quantize(x[0], "tensor", None, 8, symmetric=False)


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_nan_inf_policy(device, rng, granularity, symmetric):
    """A slice with NaN / +-Inf, or (asymmetric) a zero point beyond 2^24, gets scale NaN,
    zero point 0 and q 0; the other slices are unaffected."""
    rows = _random(rng, (6, 19))
    rows[0, 4] = np.nan
    rows[1, 0] = np.inf
    rows[2, 18] = -np.inf
    rows[3] = np.nan
    rows[4] = 1e9 + np.arange(19, dtype=np.float32) * 64  # |zp| ~ 2^25 (asymmetric)
    x = _tensor(rows, device)
    if granularity == "tensor":
        for row in x:
            _check_quantize(row, "tensor", None, 8, symmetric)
        result = _check_quantize(x, "tensor", None, 8, symmetric)
        assert torch.isnan(result[1]).item()
    else:
        result = _check_quantize(x, granularity, 0, 8, symmetric)
        bad = [0, 1, 2, 3, 4] if not symmetric else [0, 1, 2, 3]
        assert torch.isnan(result[1][bad]).all().item() and not torch.isnan(result[1][5]).item()


@pytest.mark.parametrize("shape", [(0,), (0, 5), (5, 0), (2, 0, 3)], ids=str)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_empty(device, shape, symmetric):
    x = torch.empty(shape, device=device)
    code = torch.int8 if symmetric else torch.uint8
    cases = {
        "tensor": (qops.quantize_per_tensor(x, 8, symmetric), ()),
        "token": (qops.quantize_per_token(x, 8, symmetric), shape[:-1]),
        "channel": (qops.quantize_per_channel(x, -1, 8, symmetric), shape[-1:]),
    }
    for name, (result, param_shape) in cases.items():
        assert result[0].shape == shape and result[0].dtype == code, name
        assert_exact(result[1], np.ones(param_shape, np.float32), f"{name} scale")
        if not symmetric:
            assert_exact(result[2], np.zeros(param_shape, np.int32), f"{name} zero_point")
        out = qops.dequantize(result[0], *result[1:], granularity=name, axis=-1)
        assert out.shape == shape and out.dtype == torch.float32
    assert qops.fake_quantize(x, 8, symmetric).shape == shape


# ----------------------------------------------------------------------------- dequantize
def _oracle_dequantize(q, scale, zero_point, granularity, axis):
    q, scale = q.cpu().numpy(), scale.cpu().numpy()
    if granularity == "token":
        return ref.dequantize_per_token(q, scale, None if zero_point is None else zero_point.cpu().numpy())
    keep_axis = None if granularity == "tensor" else axis % q.ndim
    if zero_point is None:
        return ref.dequantize_symmetric(q, scale, keep_axis)
    return ref.dequantize_asymmetric(q, scale, zero_point.cpu().numpy(), keep_axis)


@pytest.mark.parametrize("shape, granularity, axis", [
    ((5, 33), "tensor", None),
    ((2, 3, 5, 7), "tensor", None),
    ((4, 1031), "token", None),
    ((2, 3, 17), "token", None),
    ((7, 33), "channel", 0),
    ((7, 33), "channel", -1),
    ((2, 3, 5, 7), "channel", 1),
    ((2, 3, 5, 7), "channel", -2),
], ids=str)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("out_dtype", DTYPES, ids=str)
def test_dequantize(device, rng, shape, granularity, axis, symmetric, out_dtype):
    x = _tensor(_random(rng, shape, scale=3.0, offset=-1.0), device)
    q, scale, *zero_point = _quantize(x, granularity, axis, 8, symmetric)
    zero_point = zero_point[0] if zero_point else None
    q_before = q.clone()
    out = qops.dequantize(q, scale, zero_point, granularity=granularity, axis=axis, out_dtype=out_dtype)
    assert out.dtype == out_dtype and out.shape == x.shape and out.is_contiguous()
    expected = torch.from_numpy(_oracle_dequantize(q, scale, zero_point, granularity, axis)).to(out_dtype)
    assert_exact(out, expected, "dequantized")
    assert_exact(q, q_before, "q after the call")


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("out_dtype", DTYPES, ids=str)
def test_dequantize_non_contiguous_and_extreme_values(device, rng, granularity, out_dtype):
    """Strided codes; zero points far from the codes (the difference is int32, no uint8
    wrap, rounded to float32 like the reference's int64 difference); NaN scales; results
    beyond the output dtype's range (rounded to inf, as a float32 -> out_dtype cast)."""
    q = torch.from_numpy(rng.integers(0, 256, (9, 14), dtype=np.uint8)).to(device).t()  # (14, 9)
    n = {"tensor": None, "channel": 14, "token": 14}[granularity]
    shape = () if n is None else (n,)
    scale = _tensor(np.abs(_random(rng, shape)) + 0.01, device)
    zero_point = torch.from_numpy(rng.integers(-(2**24), 2**24, shape, dtype=np.int32)).to(device)
    if n is not None:
        scale[1] = float("nan")
        scale[3], zero_point[3] = 0.01, -(2**24)  # ~1.7e5: past float16's range
        scale[4], zero_point[4] = 1e33, 2**20  # ~-1e39: past bfloat16's and float32's
        zero_point[2] = 2**24
    out = qops.dequantize(q, scale, zero_point, granularity=granularity, axis=0, out_dtype=out_dtype)
    expected = torch.from_numpy(_oracle_dequantize(q, scale, zero_point, granularity, 0)).to(out_dtype)
    assert_exact(out, expected, "dequantized")


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("zero_point", [-(2**31 - 1), -(2**31), 2**31 - 1])
def test_dequantize_zero_points_at_the_int32_limits(device, granularity, zero_point):
    """q - zp near the int32 limits passes int32 (issue 15, item 2: an int32 difference
    flipped the sign of 1 - (-(2^31 - 1))); the kernel's equals the oracle's int64 one."""
    q = torch.tensor([[0, 1, 128, 255]] * 3, dtype=torch.uint8, device=device)
    n = {"tensor": (), "channel": (3,), "token": (3,)}[granularity]
    scale = torch.full(n, 1.0, device=device)
    zero_points = torch.full(n, zero_point, dtype=torch.int32, device=device)
    out = qops.dequantize(q, scale, zero_points, granularity=granularity, axis=0)
    expected = _oracle_dequantize(q, scale, zero_points, granularity, 0)
    assert (np.sign(expected) == -np.sign(zero_point)).all()  # the oracle's: no wrap
    assert_exact(out, expected, "dequantized")
    if granularity == "tensor":  # a Python int zero point too
        assert_exact(qops.dequantize(q, 1.0, zero_point, granularity="tensor"), expected, "dequantized")


@pytest.mark.parametrize("zero_point", [None, 3, -(2**20)])
def test_dequantize_python_number_parameters(device, rng, zero_point):
    """A Python float scale and int zero point (filled on the device, no host copy) give
    the reference's values, as the same parameters as tensors do."""
    q = torch.from_numpy(rng.integers(-128, 128, (6, 11), dtype=np.int8)).to(device)
    if zero_point is not None:
        q = (q.to(torch.int16) + 128).to(torch.uint8)
    out = qops.dequantize(q, 0.037, zero_point, granularity="tensor")
    q_np = q.cpu().numpy()
    if zero_point is None:
        expected = ref.dequantize_symmetric(q_np, np.float32(0.037))
    else:
        expected = ref.dequantize_asymmetric(q_np, np.float32(0.037), np.int32(zero_point))
    assert out.device == q.device
    assert_exact(out, expected, "dequantized")


# ----------------------------------------------------------------------------- fake quantize
@pytest.mark.parametrize("shape", [(7,), (33, 7), (2, 3, 5, 7)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_fake_quantize(device, rng, shape, dtype, symmetric):
    x = _tensor(_random(rng, shape, scale=3.0, offset=0.4), device, dtype)
    before = x.clone()
    out = qops.fake_quantize(x, 5, symmetric, tile=64)
    assert_exact(x, before, "input after the call")
    x_np = _as_oracle_input(x)
    if symmetric:
        expected = ref.dequantize_symmetric(*ref.quantize_symmetric(x_np, 5))
    else:
        expected = ref.dequantize_asymmetric(*ref.quantize_asymmetric(x_np, 5))
    assert out.dtype == dtype and out.shape == x.shape
    assert_exact(out, torch.from_numpy(expected).to(dtype), "fake quantized")


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_fake_quantize_non_finite_and_strided(device, rng, symmetric):
    x = _tensor(_random(rng, (8, 6)), device).t()
    out = qops.fake_quantize(x, 8, symmetric)
    quantize = ref.quantize_symmetric if symmetric else ref.quantize_asymmetric
    dequantize = ref.dequantize_symmetric if symmetric else ref.dequantize_asymmetric
    assert_exact(out, dequantize(*quantize(_as_oracle_input(x))), "fake quantized")
    x = x.clone()
    x[2, 3] = float("inf")
    assert torch.isnan(qops.fake_quantize(x, 8, symmetric)).all().item()
