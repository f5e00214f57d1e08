"""The oracle against its own properties: the spec must be right before anything is compared with it."""

from __future__ import annotations

import numpy as np
import pytest

from qtriton import reference as ref
from qtriton.testing import assert_exact

BITS = range(2, 9)


def _half_step_bound(scale):
    # |x - q*scale| <= scale/2, plus float32 rounding of x/scale and of q*scale.
    return np.float64(scale) * (0.5 + 1e-5)


@pytest.mark.parametrize("num_bits", BITS)
@pytest.mark.parametrize("shape", [(1,), (7,), (33, 5), (3, 4, 5)])
def test_symmetric_error_at_most_half_step_and_full_range(rng, num_bits, shape):
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    q, scale = ref.quantize_symmetric(x, num_bits)
    qmax = 2 ** (num_bits - 1) - 1
    assert q.dtype == np.int8 and scale.dtype == np.float32
    assert np.abs(q.astype(int)).max() == qmax  # the absmax element lands on the edge of the grid
    err = np.abs(ref.dequantize_symmetric(q, scale).astype(np.float64) - x)
    assert err.max() <= _half_step_bound(scale), err.max() / scale


@pytest.mark.parametrize("num_bits", BITS)
@pytest.mark.parametrize("lo, hi", [(-1.0, 3.0), (0.0, 5.0), (10.0, 11.5), (-1000.0, -999.0), (-3e5, 7e5)])
def test_asymmetric_maps_min_to_zero_and_max_to_top_for_any_range(rng, num_bits, lo, hi):
    x = rng.uniform(lo, hi, size=200).astype(np.float32)
    x[0], x[1] = lo, hi
    q, scale, zp = ref.quantize_asymmetric(x, num_bits)
    assert q.dtype == np.uint8 and zp.dtype == np.int32
    assert q[0] == 0 and q[1] == 2**num_bits - 1
    err = np.abs(ref.dequantize_asymmetric(q, scale, zp).astype(np.float64) - x)
    # |zp| can be large, so (q - zp) * scale rounds in float32 at the magnitude of x.
    assert err.max() <= _half_step_bound(scale) + 4 * np.spacing(np.float32(max(abs(lo), abs(hi))))


def test_rounding_is_half_to_even():
    # absmax 127 gives scale exactly 1.0, so these values are ties after scaling.
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -127.0, 127.0], np.float32)
    q, scale = ref.quantize_symmetric(x)
    assert scale == 1.0
    assert_exact(q, np.array([0, 2, 2, 0, -2, -2, 126, -127, 127], np.int8))


def test_zero_and_constant_inputs_get_scale_one():
    q, scale = ref.quantize_symmetric(np.zeros((3, 4), np.float32))
    assert scale == 1.0 and not q.any()
    q, scale, zp = ref.quantize_asymmetric(np.full(5, 7.3, np.float32))
    assert scale == 1.0 and zp == -7 and not q.any()
    assert np.allclose(ref.dequantize_asymmetric(q, scale, zp), 7.0)  # the grid point nearest 7.3
    q, scales = ref.quantize_symmetric(np.array([[0, 0], [1, -2]], np.float32), keep_axis=0)
    assert scales[0] == 1.0 and scales[1] == np.float32(2 / 127)


def test_unrepresentable_slices_get_nan_scale():
    _, scale = ref.quantize_symmetric(np.array([1.0, np.inf], np.float32))
    assert np.isnan(scale)
    q, scale, zp = ref.quantize_asymmetric(np.array([1e6, 1e6 + 0.5], np.float32))  # |zp| ~ 5e8 > 2^24
    assert np.isnan(scale) and zp == 0 and not q.any()
    q, scales = ref.quantize_symmetric(np.array([[1.0, 2.0], [np.nan, 1.0]], np.float32), keep_axis=0)
    assert not np.isnan(scales[0]) and np.isnan(scales[1]) and not q[1].any()


def test_tiny_scale_is_floored_at_the_smallest_normal():
    x = np.array([1e-40, -3e-41], np.float32)  # denormals: absmax / 127 would be denormal too
    q, scale = ref.quantize_symmetric(x)
    assert scale == ref.FLT_MIN and np.all(np.isfinite(x / scale))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_per_channel_equals_per_tensor_on_each_slice(rng, axis):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32) * rng.uniform(0.1, 10, size=(3, 4, 5)).astype(np.float32)
    q, scales = ref.quantize_symmetric(x, 6, keep_axis=axis)
    assert scales.shape == (x.shape[axis],)
    for c in range(x.shape[axis]):
        q_c, s_c = ref.quantize_symmetric(np.take(x, c, axis=axis), 6)
        assert_exact(np.take(q, c, axis=axis), q_c, name=f"channel {c}")
        assert scales[c] == s_c


def test_per_token_equals_per_tensor_on_each_row(rng):
    x = rng.standard_normal((2, 3, 9)).astype(np.float32)
    q, scales, zps = ref.quantize_per_token(x, 8, symmetric=False)
    assert scales.shape == zps.shape == (2, 3)
    for i in np.ndindex(2, 3):
        q_r, s_r, z_r = ref.quantize_asymmetric(x[i])
        assert_exact(q[i], q_r) and scales[i] == s_r and zps[i] == z_r
    x_deq = ref.dequantize_per_token(q, scales, zps)
    assert np.abs(x_deq - x).max() <= scales.max() * 0.51


@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (7, 33, 5), (16, 100, 3)])
def test_int_matmul_is_exact_with_zero_points(rng, m, k, n):
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    a_zp = rng.integers(-300, 300, m)
    b_zp = rng.integers(-5, 5, n)
    # An independent formulation: broadcast products summed in Python ints' range (int64).
    expected = ((a.astype(np.int64) - a_zp[:, None])[:, :, None] * (b.astype(np.int64) - b_zp)[None]).sum(axis=1)
    assert_exact(ref.int_matmul(a, b, a_zp, b_zp), expected)
    out = ref.quantized_matmul(a, 0.5, b, np.full(n, 2.0), a_zp, b_zp, bias=np.arange(n, dtype=np.float64))
    assert_exact(out, expected.astype(np.float64) + np.arange(n))


def test_quantization_error_metrics():
    x = np.array([1.0, -1.0, 1.0, -1.0])
    err = ref.quantization_error(x, x + np.array([0.1, 0.0, -0.1, 0.0]))
    assert err["mse"] == pytest.approx(0.005) and err["mae"] == pytest.approx(0.05)
    assert err["max_error"] == pytest.approx(0.1) and err["relative_error"] == pytest.approx(0.005)
    assert err["snr"] == pytest.approx(10 * np.log10(1 / 0.005))
    assert ref.quantization_error(x, x)["snr"] == float("inf")


@pytest.mark.parametrize("zp", [2**24, 2**31 - 200, -(2**31)])
def test_int_matmul_is_exact_with_zero_points_near_the_int32_limit(rng, zp):
    # (0 - zp)^2 * K passes 2^63 for zp near 2^31: int64 would wrap (issue 15, item 1).
    a = rng.integers(0, 256, (3, 4)).astype(np.uint8)
    b = rng.integers(-128, 128, (4, 2)).astype(np.int8)
    a_zp, b_zp = np.array([zp, 0, -zp]), np.array([zp, 1])
    expected = [[sum((int(a[i, t]) - int(a_zp[i])) * (int(b[t, j]) - int(b_zp[j])) for t in range(4))
                 for j in range(2)] for i in range(3)]
    got = ref.int_matmul(a, b, a_zp, b_zp)
    assert got.tolist() == expected
    out = ref.quantized_matmul(np.zeros((1, 4), np.int8), 1.0, np.zeros((4, 1), np.int8), 1.0, zp, zp)
    assert out[0, 0] == float(4 * zp * zp)  # one rounding of the exact integer
