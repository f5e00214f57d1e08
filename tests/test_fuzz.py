"""Differential fuzzing of every backend through the lab API (issue 15).

The same call runs on the numpy (the oracle), torch and triton backends (Triton's
interpreter without a GPU) on made-up inputs: zero points up to the int32 limits, scales
from FLT_MIN to 2^100, denormal and huge data, bf16 / fp16 inputs, constant slices, ragged
shapes. Every backend must give the oracle's result (integers and float32 exactly; the
Triton GEMM's float32 epilogue to a few ulps), or all must refuse with the same error.
Small on purpose: tens of examples, a few interpreter launches each.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qtriton
from qtriton.backend import use_backend
from qtriton.testing import assert_close, assert_exact, to_numpy

pytestmark = [
    pytest.mark.interpreter,
    pytest.mark.filterwarnings("ignore:(invalid value|overflow) encountered:RuntimeWarning"),
]

BACKENDS = ("numpy", "torch", "triton")
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT32_MAX = 2**31 - 1


def _run_everywhere(call) -> dict:
    """backend -> ("ok", result) or ("error", type, message)."""
    outcomes = {}
    for backend in BACKENDS:
        with use_backend(backend):
            try:
                outcomes[backend] = ("ok", call())
            except (ValueError, TypeError) as error:
                outcomes[backend] = ("error", type(error), str(error))
    return outcomes


def _as_tuple(result) -> tuple:
    return result if isinstance(result, tuple) else (result,)


def _check_agreement(outcomes: dict, compare=None) -> None:
    """All backends refuse with the same error, or each result equals the numpy backend's
    (compare(backend, got, expected) for a looser check)."""
    kinds = {backend: outcome[0] for backend, outcome in outcomes.items()}
    assert len(set(kinds.values())) == 1, f"some backends refuse and some do not: {outcomes}"
    if kinds["numpy"] == "error":
        assert len({outcome[1:] for outcome in outcomes.values()}) == 1, f"different errors: {outcomes}"
        return
    expected = _as_tuple(outcomes["numpy"][1])
    for backend in BACKENDS[1:]:
        got = _as_tuple(outcomes[backend][1])
        assert len(got) == len(expected)
        for i, (g, e) in enumerate(zip(got, expected)):
            if compare is None:
                assert_exact(g, e, f"{backend} output {i}")
            else:
                compare(backend, g, e)


# ----------------------------------------------------------------------------- strategies
@st.composite
def float_inputs(draw):
    """A float tensor: small integers times a power of two (denormal to huge, rounding
    ties), a shift that can push zero points past 2^24, maybe a constant last axis, as
    float32, bfloat16 or float16 (which may overflow to inf: then all must refuse)."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9))
    mantissas = draw(hnp.arrays(np.int32, shape, elements=st.integers(-255, 255)))
    exponent = draw(st.sampled_from([-149, -140, -133, -126, -60, -8, 0, 8, 60, 100, 119]))
    x = (mantissas.astype(np.float64) * 2.0**exponent).astype(np.float32)
    x = x + np.float32(draw(st.sampled_from([0.0, 0.0, 1e4, -3e3, 1e30, -3e38])))
    if draw(st.booleans()):
        x[...] = x[..., :1]  # constant rows
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
    return torch.from_numpy(x).to(dtype)


QUANTIZE_CALLS = {
    "symmetric": lambda x, bits, axis: qtriton.quantize_symmetric(x, bits),
    "asymmetric": lambda x, bits, axis: qtriton.quantize_asymmetric(x, bits),
    "per_channel": lambda x, bits, axis: qtriton.quantize_per_channel(x, axis, bits),
    "per_token": lambda x, bits, axis: qtriton.quantize_per_token(x, bits, symmetric=True),
    "per_token_asymmetric": lambda x, bits, axis: qtriton.quantize_per_token(x, bits, symmetric=False),
    "per_token_including_zero": lambda x, bits, axis: qtriton.quantize_per_token(
        x, bits, symmetric=False, include_zero=True),
    "fake_symmetric": lambda x, bits, axis: qtriton.fake_quantize(x, bits, symmetric=True),
    "fake_asymmetric": lambda x, bits, axis: qtriton.fake_quantize(x, bits, symmetric=False),
}


@FUZZ
@given(x=float_inputs(), name=st.sampled_from(sorted(QUANTIZE_CALLS)), bits=st.integers(2, 8), data=st.data())
def test_quantize_agrees_across_backends(x, name, bits, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    before = x.clone()
    _check_agreement(_run_everywhere(lambda: QUANTIZE_CALLS[name](x, bits, axis)))
    assert torch.equal(x, before)


SCALES = st.sampled_from([2.0**-126, 2.0**-100, 1e-30, 0.0123, 1.0, 3.5, 1e30, 2.0**100])
ZERO_POINTS = st.one_of(
    st.integers(-300, 300),
    st.sampled_from([2**24, -(2**24), INT32_MAX, -INT32_MAX, -(2**31), INT32_MAX - 200]),
    st.integers(-(2**31), INT32_MAX),
)


@FUZZ
@given(data=st.data(), per_token=st.booleans(), asymmetric=st.booleans())
def test_dequantize_agrees_across_backends(data, per_token, asymmetric):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9))
    dtype = np.uint8 if asymmetric else np.int8
    info = np.iinfo(dtype)
    q = torch.from_numpy(data.draw(hnp.arrays(dtype, shape, elements=st.integers(int(info.min), int(info.max)))))
    if per_token:
        rows = shape[:-1]
        scale = torch.from_numpy(data.draw(hnp.arrays(np.float32, rows, elements=SCALES)))
        zp = torch.from_numpy(data.draw(hnp.arrays(np.int32, rows, elements=ZERO_POINTS))) if asymmetric else None
        call = lambda: qtriton.dequantize_per_token(q, scale, zp)  # noqa: E731
    else:
        scale = float(np.float32(data.draw(SCALES)))
        zp = data.draw(ZERO_POINTS)
        call = (lambda: qtriton.dequantize_asymmetric(q, scale, zp)) if asymmetric else (
            lambda: qtriton.dequantize_symmetric(q, scale))
    _check_agreement(_run_everywhere(call))


@st.composite
def matmul_operands(draw):
    m, k, n = draw(st.integers(1, 9)), draw(st.integers(1, 40)), draw(st.integers(1, 9))
    a_dtype, b_dtype = draw(st.sampled_from([(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8)]))

    def codes(dtype, shape):
        info = np.iinfo(dtype)
        return torch.from_numpy(draw(hnp.arrays(dtype, shape, elements=st.integers(int(info.min), int(info.max)))))

    def per(count, elements, dtype):
        if draw(st.booleans()):
            return draw(elements)
        return torch.from_numpy(draw(hnp.arrays(dtype, (count,), elements=elements)))

    matmul_zero_points = st.one_of(st.integers(-300, 300), st.sampled_from([0, 2**24, -(2**24), 2**24 - 1]),
                                   st.integers(-(2**24), 2**24))
    float32_scales = st.sampled_from([2.0**-60, 1e-6, 0.0123, 1.0, 3.5, 2.0**40])
    a_zp = per(m, matmul_zero_points, np.int32) if a_dtype == np.uint8 or draw(st.booleans()) else 0
    b_zp = per(n, matmul_zero_points, np.int32) if draw(st.booleans()) else 0
    return dict(
        a_q=codes(a_dtype, (m, k)), b_q=codes(b_dtype, (k, n)),
        a_scale=per(m, float32_scales, np.float32), b_scale=per(n, float32_scales, np.float32),
        a_zp=a_zp, b_zp=b_zp,
        bias=torch.from_numpy(draw(hnp.arrays(np.float32, (n,), elements=st.floats(-1e3, 1e3, width=32))))
        if draw(st.booleans()) else None,
    )


def _gemm_within_rounding(backend, got, expected):
    """numpy and torch compute the float64 epilogue; the Triton GEMM's float32 one rounds
    a few times more."""
    if backend != "triton":
        assert_exact(got, expected, f"{backend} output")
        return
    e = to_numpy(expected).astype(np.float64)
    assert_close(got, e, rtol=2.0**-21, atol=2.0**-21 * np.abs(e).max(), name="triton output")


@FUZZ
@given(operands=matmul_operands())
def test_quantized_matmul_agrees_across_backends(operands):
    o = operands
    outcomes = _run_everywhere(lambda: qtriton.quantized_matmul(
        o["a_q"], o["a_scale"], o["b_q"], o["b_scale"], o["a_zp"], o["b_zp"], bias=o["bias"]))
    _check_agreement(outcomes, _gemm_within_rounding)


@pytest.mark.parametrize("values", [[1e30] * 3, [-3e38, 3e38], [5e8, 5e8 + 64]], ids=str)
@pytest.mark.parametrize("as_tensor", [False, True], ids=["numpy", "torch"])
def test_fake_quantize_refuses_what_quantize_asymmetric_refuses(values, as_tensor):
    """Issue 15, item 3: fake_quantize returned NaN where quantize_asymmetric raised."""
    x = np.array(values, np.float32)
    x = torch.from_numpy(x) if as_tensor else x
    refused = _run_everywhere(lambda: qtriton.quantize_asymmetric(x))
    faked = _run_everywhere(lambda: qtriton.fake_quantize(x, 8, symmetric=False))
    for backend in BACKENDS:
        assert refused[backend][0] == "error" and faked[backend][:2] == refused[backend][:2], (backend, faked)
    _check_agreement(faked)
