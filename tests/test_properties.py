"""Property-based: on inputs hypothesis makes up (odd shapes, repeated values, halves that
become rounding ties, wide magnitude ranges), the torch and triton backends reproduce the
oracle's integers exactly, and the oracle keeps its error bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qtriton
from qtriton import numpy_backend, torch_backend, triton_backend
from qtriton import reference as ref
from qtriton.model.scheme import ActivationQuant
from qtriton.operands import MatmulOperands
from qtriton.testing import assert_exact

from tests.cases import assert_same_codes

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def float_arrays(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=17))
    # Half-integers times a power of two: after scaling by a power-of-two absmax they
    # land on exact .5 ties; the exponent range covers tiny to huge magnitudes.
    halves = draw(hnp.arrays(np.int32, shape, elements=st.integers(-255, 255)))
    exponent = draw(st.integers(-100, 100))
    x = halves.astype(np.float32) * np.float32(2.0**exponent)
    if draw(st.booleans()):  # or plain floats, with a shift that moves them off zero
        x = draw(hnp.arrays(np.float32, shape, elements=st.floats(-1e4, 1e4, width=32)))
        x = x + np.float32(draw(st.sampled_from([0.0, 10.0, -3e3])))
    return x


CASES = st.tuples(
    float_arrays(),
    st.integers(2, 8),
    st.booleans(),
    st.sampled_from(["tensor", "channel", "token"]),
)


def _check_backend(module, case, device):
    x, num_bits, symmetric, granularity = case
    axis = x.ndim - 1 if granularity == "channel" else None
    expected = numpy_backend.quantize(x, num_bits, symmetric, granularity, axis)
    got = module.quantize(torch.from_numpy(x).to(device), num_bits, symmetric, granularity, axis)
    assert_same_codes(got, expected)


@SETTINGS
@given(case=CASES)
def test_torch_backend_reproduces_the_oracle(case):
    _check_backend(torch_backend, case, "cpu")


@pytest.mark.interpreter
@SETTINGS
@given(case=CASES)
def test_triton_kernels_reproduce_the_oracle(case, device):
    _check_backend(triton_backend, case, device)


@SETTINGS
@given(x=float_arrays(), num_bits=st.integers(2, 8))
@example(x=np.array([9998.0, -9998.0], np.float32), num_bits=3)  # found by hypothesis on CI's second leg
def test_oracle_error_is_at_most_half_a_step(x, num_bits):
    q, scale = ref.quantize_symmetric(x, num_bits)
    if not np.isfinite(scale) or scale == ref.FLT_MIN:
        return  # floored scales (denormal data) and overflow are covered by unit tests
    err = np.abs(ref.dequantize_symmetric(q, scale).astype(np.float64) - x)
    assert err.max() <= scale * (0.5 + 1e-5)
    q, scale, zp = ref.quantize_asymmetric(x, num_bits)
    if np.isfinite(scale) and scale > ref.FLT_MIN:
        err = np.abs(ref.dequantize_asymmetric(q, scale, zp).astype(np.float64) - x)
        # Half a step, plus the float32 roundings of x / scale + zp and of the dequantized
        # value: relative 2^-24 each, of magnitudes up to max|x| / scale + |zp| steps.
        slack = 2.0**-21 * (float(np.abs(x).max()) / float(scale) + abs(float(zp)) + 1)
        assert err.max() <= scale * (0.5 + slack)
        assert q[np.unravel_index(np.argmin(x), x.shape)] == 0
        # The max lands on 2^b - 1, or one step lower where float32 puts -min / scale just
        # below a .5 tie that is exact in real numbers (x = [9998, -9998], 3 bits: 3.4999998,
        # zero point 3, max at 6.4999998 -> 6): still within half a step, as checked above.
        top = float(x.max()) / float(scale) + float(zp)
        q_top = int(q[np.unravel_index(np.argmax(x), x.shape)])
        near_tie = abs(top % 1 - 0.5) < slack
        assert q_top == 2**num_bits - 1 or np.ptp(x) == 0 or (q_top == 2**num_bits - 2 and near_tie)


@st.composite
def activation_cases(draw):
    """Int8Linear's activation modes on made-up rows: (rows (M, K) float32, symmetric,
    input_scale (K,) or None, static scale or None, Hadamard block or None). The static
    scale sits around the rows' own range, so some codes clamp; input scales from 1/8 to 8;
    the block, when K is even, any power of two dividing K."""
    rows = draw(float_arrays())
    rows = rows.reshape(-1, rows.shape[-1])
    symmetric = draw(st.booleans())
    input_scale = None
    if draw(st.booleans()):
        input_scale = draw(hnp.arrays(np.float32, rows.shape[1], elements=st.floats(0.125, 8.0, width=32)))
    static_scale = None
    if draw(st.booleans()):
        smoothed = rows if input_scale is None else rows * input_scale
        absmax = float(np.abs(smoothed).max())
        if 0 < absmax < 1e30:
            static_scale = np.float32(absmax / 127 * draw(st.sampled_from([0.5, 1.0, 2.0])))
    k = rows.shape[1]
    blocks = [2**n for n in range(1, (k & -k).bit_length())]  # the powers of two dividing K
    block = draw(st.sampled_from([None, *blocks]))
    return rows, symmetric, input_scale, static_scale, block


def _check_activations(module, case, device):
    rows, symmetric, input_scale, static_scale, block = case
    spec = ActivationQuant(symmetric, static_scale=static_scale, input_scale=input_scale, hadamard_block=block)
    expected = numpy_backend.quantize_activations(rows, spec)

    def on_device(v):
        return None if v is None else torch.from_numpy(np.asarray(v)).to(device)

    got = module.quantize_activations(on_device(rows), spec.convert(on_device))
    assert_same_codes(got, expected)


@SETTINGS
@given(case=activation_cases())
def test_torch_activations_reproduce_the_oracle(case):
    _check_activations(torch_backend, case, "cpu")


@pytest.mark.interpreter
@SETTINGS
@given(case=activation_cases())
def test_triton_activations_reproduce_the_oracle(case, device):
    _check_activations(triton_backend, case, device)


@st.composite
def matmul_cases(draw):
    """Integer operands of ragged shapes, int8 or uint8, with zero points from 0 to the
    int32 limit (scalar or per row / per column), as the backend contract takes them."""
    m, k, n = draw(st.integers(1, 9)), draw(st.integers(0, 40)), draw(st.integers(1, 9))
    operands = []
    for shape, count in (((m, k), m), ((k, n), n)):
        dtype = draw(st.sampled_from([np.int8, np.uint8]))
        info = np.iinfo(dtype)
        q = draw(hnp.arrays(dtype, shape, elements=st.integers(int(info.min), int(info.max))))
        zp_values = st.one_of(st.just(0), st.integers(-300, 300), st.integers(-(2**31) + 1, 2**31 - 1),
                              st.sampled_from([2**24, -(2**24), 2**31 - 1, -(2**31) + 1]))
        if draw(st.booleans()):
            zp = draw(zp_values)
        else:
            zp = draw(hnp.arrays(np.int32, (count,), elements=zp_values))
        operands.append((q, zp))
    return operands


_ZERO_A, _ZERO_B = np.zeros((1, 4), np.int8), np.zeros((4, 1), np.int8)


@SETTINGS
@given(case=matmul_cases(), per_row_scale=st.booleans())
@example(case=[(_ZERO_A, 2**31 - 200), (_ZERO_B, 2**31 - 200)], per_row_scale=False)  # issue 15's case
@example(case=[(_ZERO_A.view(np.uint8), 2**24), (_ZERO_B, -(2**24))], per_row_scale=True)
def test_torch_matmul_reproduces_the_oracle_for_any_zero_points(case, per_row_scale):
    # The integer product rounds once to float64 as the oracle's does (issue 15, item 1):
    # int64 overflowed for zero points near 2^31 before.
    (a, a_zp), (b, b_zp) = case
    a_scale = np.linspace(0.5, 2.0, a.shape[0]).astype(np.float32) if per_row_scale else 0.75
    b_scale = np.float32(1.5)
    expected = numpy_backend.quantized_matmul(a, b, MatmulOperands(a_scale, b_scale, a_zp, b_zp), np.float64)

    def as_torch(v):
        return v if isinstance(v, (int, float)) else torch.from_numpy(np.asarray(v))

    operands = MatmulOperands(*(as_torch(v) for v in (a_scale, b_scale, a_zp, b_zp)))
    got = torch_backend.quantized_matmul(as_torch(a), as_torch(b), operands, torch.float64)
    assert_exact(got, expected)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpreter)])
@pytest.mark.parametrize("in_features", [1, 16])
def test_asymmetric_int8_linear_keeps_a_constant_token(device, backend, in_features):
    """Issue 15, item 5: with the lab's constant-slice rule (scale 1.0, zp = -round(c)) a
    constant token quantized to the zero point and the layer returned the bias alone. Its
    activations now use ranges that include 0: the codes equal the oracle's, and the
    output is the float layer's to within the int8 weight's error."""
    from qtriton.backend import use_backend
    from qtriton.model.nn import Int8Linear

    torch.manual_seed(in_features)
    linear = torch.nn.Linear(in_features, 3).to(device)
    layer = Int8Linear.from_float(linear, "w8a8-asym").to(device)
    x = torch.full((2, in_features), 0.3, device=device)
    x[1] = -2.5
    x_q, x_scale, x_zp = ref.quantize_per_token(x.cpu().numpy(), 8, False, include_zero=True)
    with use_backend(backend):
        q, scale, zp = qtriton.quantize_per_token(x, symmetric=False, include_zero=True)
        y = layer(x)
    assert_exact(q, x_q, "q")
    assert_exact(scale, x_scale, "scale")
    assert_exact(zp, x_zp, "zero_point")
    expected = ref.quantized_matmul(x_q, x_scale, layer.weight.cpu().numpy().T, layer.weight_scale.cpu().numpy(),
                                    x_zp, 0, linear.bias.detach().cpu().numpy())
    np.testing.assert_allclose(y.detach().cpu().numpy(), expected, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(y.cpu().numpy(), linear(x).cpu().numpy(), atol=0.02 * in_features)
