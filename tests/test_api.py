"""The lab API against the oracle on every backend, its return types, and every bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import qtriton
from qtriton import reference as ref
from qtriton.backend import triton_device_error, use_backend
from qtriton.testing import assert_exact

# The triton backend runs the kernels: in the interpreter on CPU tensors here, on the GPU with --device cuda.
BACKENDS = ["numpy", "torch", pytest.param("triton", marks=pytest.mark.interpreter)]
SHAPES = [(1,), (7,), (33, 5), (4, 257), (2, 3, 5)]


def _tensor(x: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(x).to(device)


@pytest.fixture(params=["numpy-in", "tensor-in"])
def as_input(request, device):
    """Feed the API NumPy arrays, or tensors on the test device."""
    return (lambda x: x) if request.param == "numpy-in" else (lambda x: _tensor(x, device))


def _data(rng, shape, kind="normal"):
    x = rng.standard_normal(shape).astype(np.float32) * 2.5
    if kind == "relu":
        x = np.maximum(x, 0)
    return x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("num_bits", [2, 5, 8])
def test_per_tensor_matches_oracle(rng, as_input, backend, shape, num_bits):
    x = _data(rng, shape)
    with use_backend(backend):
        q, scale = qtriton.quantize_symmetric(as_input(x), num_bits)
        qa, scale_a, zp = qtriton.quantize_asymmetric(as_input(x + 3.0), num_bits)
        deq = qtriton.dequantize_asymmetric(qa, scale_a, zp)
    q_ref, scale_ref = ref.quantize_symmetric(x, num_bits)
    qa_ref, scale_a_ref, zp_ref = ref.quantize_asymmetric(x + 3.0, num_bits)
    assert_exact(q, q_ref, "q")
    assert_exact(qa, qa_ref, "q asymmetric")
    assert float(scale) == scale_ref and float(scale_a) == scale_a_ref and int(zp) == zp_ref
    assert_exact(deq, ref.dequantize_asymmetric(qa_ref, scale_a_ref, zp_ref), "dequantized")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape, axis", [((7,), 0), ((33, 5), 0), ((33, 5), -1), ((2, 3, 5), 1), ((2, 3, 5), -3)])
def test_per_channel_matches_oracle(rng, as_input, backend, shape, axis):
    x = _data(rng, shape) * rng.uniform(0.01, 10, size=shape).astype(np.float32)
    with use_backend(backend):
        q, scales = qtriton.quantize_per_channel(as_input(x), axis=axis, num_bits=7)
        deq = qtriton.dequantize_per_channel(q, scales, axis=axis)
    q_ref, scales_ref = ref.quantize_symmetric(x, 7, keep_axis=axis % len(shape))
    assert tuple(scales.shape) == (shape[axis],)
    assert_exact(q, q_ref, "q")
    assert_exact(scales, scales_ref, "scales")
    assert_exact(deq, ref.dequantize_symmetric(q_ref, scales_ref, axis % len(shape)), "dequantized")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("block", [2, 64])
def test_rotated_per_token_matches_oracle(rng, as_input, backend, symmetric, block):
    """hadamard_block: the codes and scales of each row rotated (reference.hadamard_rotate)."""
    x = _data(rng, (3, 4, 192), "relu")
    with use_backend(backend):
        out = qtriton.quantize_per_token(as_input(x), num_bits=8, symmetric=symmetric, hadamard_block=block)
        rotated = qtriton.hadamard_rotate(as_input(x), block)
    expected = ref.quantize_per_token(x, 8, symmetric, False, block)
    assert len(out) == len(expected)
    for got, want in zip(out, expected, strict=True):
        assert_exact(got, want)
    assert_exact(rotated, ref.hadamard_rotate(x, block), "rotation")
    assert isinstance(rotated, type(as_input(x)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_hadamard_rotate_keeps_float64_and_widens_half_types(rng, backend, device):
    """float64 in, float64 out (weights rotated once, rounded later); float16 / bfloat16 /
    float32 in, float32 out; W R computed from (out, in) weights along their last axis."""
    w = rng.standard_normal((6, 128))
    with use_backend(backend):
        assert qtriton.hadamard_rotate(w, 32).dtype == np.float64
        assert qtriton.hadamard_rotate(w.astype(np.float16), 32).dtype == np.float32
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            t = torch.from_numpy(w).to(device=device, dtype=dtype)
            out = qtriton.hadamard_rotate(t, 32)
            assert out.dtype == torch.float32 and out.device == t.device
            assert_exact(out, ref.hadamard_rotate(t.float().cpu().numpy(), 32), str(dtype))
        out64 = qtriton.hadamard_rotate(torch.from_numpy(w).to(device), 32)
    assert out64.dtype == torch.float64
    assert_exact(out64, ref.hadamard_rotate(w, 32), "float64")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_per_token_matches_oracle(rng, as_input, backend, symmetric):
    x = _data(rng, (3, 4, 65), "relu")
    with use_backend(backend):
        out = qtriton.quantize_per_token(as_input(x), num_bits=8, symmetric=symmetric)
        deq = qtriton.dequantize_per_token(*out)
    expected = ref.quantize_per_token(x, 8, symmetric)
    for got, want in zip(out, expected, strict=True):
        assert_exact(got, want)
    assert_exact(deq, ref.dequantize_per_token(*expected))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fake_quantize_keeps_dtype_and_matches_oracle(rng, device, backend, symmetric, dtype):
    x = torch.from_numpy(_data(rng, (5, 33))).to(device=device, dtype=dtype)
    with use_backend(backend):
        out = qtriton.fake_quantize(x, num_bits=6, symmetric=symmetric)
    assert out.dtype == dtype and out.shape == x.shape
    x32 = x.float().cpu().numpy()
    if symmetric:
        expected = ref.dequantize_symmetric(*ref.quantize_symmetric(x32, 6))
    else:
        expected = ref.dequantize_asymmetric(*ref.quantize_asymmetric(x32, 6))
    assert_exact(out, torch.from_numpy(expected).to(dtype), "fake-quantized")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("a_dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("per_row", [False, True])
def test_quantized_matmul_matches_oracle(rng, as_input, backend, a_dtype, per_row):
    m, k, n = 7, 33, 5
    lo, hi = np.iinfo(a_dtype).min, np.iinfo(a_dtype).max
    a = rng.integers(lo, hi + 1, (m, k)).astype(a_dtype)
    b = rng.integers(-128, 128, (n, k)).astype(np.int8).T  # the transpose of an (N, K) weight
    a_scale = rng.uniform(0.01, 0.1, m).astype(np.float32) if per_row else 0.05
    a_zp = rng.integers(-200, 200, m).astype(np.int32) if per_row else 17
    b_scale = rng.uniform(0.01, 0.1, n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    with use_backend(backend):
        out = qtriton.quantized_matmul(
            as_input(a), as_input(a_scale) if per_row else a_scale, as_input(b), as_input(b_scale),
            a_zp=as_input(a_zp) if per_row else a_zp, bias=as_input(bias),
        )
    expected = ref.quantized_matmul(a, a_scale, b, b_scale, a_zp, 0, bias)
    assert out.dtype in (np.float32, torch.float32)
    np.testing.assert_allclose(qtriton.testing.to_numpy(out), expected, rtol=2e-6, atol=2e-6 * np.abs(expected).max())


def test_quantized_matmul_integer_part_is_exact(rng, as_input):
    # Unit scales and a small K keep |C| < 2^24: the float32 result must equal the integer product.
    a = rng.integers(0, 256, (9, 40)).astype(np.uint8)
    b = rng.integers(-128, 128, (40, 6)).astype(np.int8)
    out = qtriton.quantized_matmul(as_input(a), 1.0, as_input(b), 1.0, a_zp=128, b_zp=-3)
    assert_exact(out, ref.int_matmul(a, b, 128, -3).astype(np.float32))


def _strided(values: np.ndarray, strides: tuple[int, int], device: str) -> torch.Tensor:
    """values as a tensor view with the given element strides (any, where a dimension is 1)."""
    rows, cols = values.shape
    storage = torch.zeros((rows - 1) * strides[0] + (cols - 1) * strides[1] + 1, dtype=torch.int8)
    view = storage.as_strided(values.shape, strides)
    view.copy_(torch.from_numpy(values))
    return view.to(device) if device != "cpu" else view


# One row or one column: any stride is legal along the dimension of length 1, and torch
# 2.11's CPU _int_mm misread some of them (K = 1 with strides (1, 1) returned garbage).
DEGENERATE = [  # (m, k, n, a strides, b strides)
    (1, 1, 3, (1, 1), (1, 1)),
    (4, 1, 5, (1, 4), (1, 1)),
    (1, 6, 3, (1, 1), (3, 1)),
    (1, 6, 3, (2, 2), (1, 6)),
    (5, 6, 1, (6, 1), (1, 2)),
    (1, 6, 1, (1, 1), (1, 1)),
]


@pytest.mark.parametrize("backend", BACKENDS[1:])
@pytest.mark.parametrize("m, k, n, a_strides, b_strides", DEGENERATE)
def test_quantized_matmul_reads_any_strides_of_a_row_or_column(rng, device, backend, m, k, n, a_strides, b_strides):
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    with use_backend(backend):
        out = qtriton.quantized_matmul(_strided(a, a_strides, device), 1.0, _strided(b, b_strides, device), 1.0)
    assert_exact(out, ref.int_matmul(a, b).astype(np.float32))


def test_torch_callers_get_bfloat16_from_the_numpy_backend(rng):
    a = torch.from_numpy(rng.integers(-128, 128, (3, 8)).astype(np.int8))
    b = torch.from_numpy(rng.integers(-128, 128, (8, 5)).astype(np.int8))
    with use_backend("numpy"):
        out = qtriton.quantized_matmul(a, 0.01, b, 0.02, out_dtype=torch.bfloat16)
    expected = torch.from_numpy(ref.quantized_matmul(a.numpy(), 0.01, b.numpy(), 0.02)).to(torch.bfloat16)
    assert out.dtype == torch.bfloat16
    assert_exact(out, expected)


def test_returns_the_callers_kind(rng):
    x = _data(rng, (4, 6))
    q, scale = qtriton.quantize_symmetric(x)
    assert isinstance(q, np.ndarray) and q.dtype == np.int8 and type(scale) is float
    q, scale, zp = qtriton.quantize_asymmetric(x)
    assert q.dtype == np.uint8 and type(scale) is float and type(zp) is int
    q, scales = qtriton.quantize_per_channel(x, axis=1)
    assert isinstance(scales, np.ndarray) and scales.dtype == np.float32 and scales.shape == (6,)
    q, scale, zp = qtriton.quantize_asymmetric(torch.from_numpy(x))
    assert q.dtype == torch.uint8 and scale.dtype == torch.float32 and scale.ndim == 0 and zp.dtype == torch.int32
    assert isinstance(qtriton.dequantize_symmetric(np.zeros(3, np.int8), 0.5), np.ndarray)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_inputs_are_never_modified(rng, backend):
    x = _data(rng, (5, 8))
    a = rng.integers(-128, 128, (5, 8)).astype(np.int8)
    b = rng.integers(-128, 128, (8, 3)).astype(np.int8)
    copies = [v.copy() for v in (x, a, b)]
    tensors = [torch.from_numpy(v.copy()) for v in (x, a, b)]
    with use_backend(backend):
        for xx, aa, bb in ((x, a, b), tensors):
            qtriton.quantize_asymmetric(xx)
            qtriton.quantize_per_channel(xx, axis=1)
            qtriton.fake_quantize(xx)
            qtriton.quantized_matmul(aa, 0.1, bb, 0.2, a_zp=3, b_zp=-1)
    for before, after in zip(copies, (x, a, b), strict=True):
        assert_exact(after, before)
    for before, after in zip(copies, tensors, strict=True):
        assert_exact(after, before)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4)])
def test_empty_input_quantizes_to_empty_with_unit_scales(as_input, backend, shape):
    x = np.zeros(shape, np.float32)
    with use_backend(backend):
        q, scale = qtriton.quantize_symmetric(as_input(x))
        qa, scale_a, zp = qtriton.quantize_asymmetric(as_input(x))
        q_c, scales_c = qtriton.quantize_per_channel(as_input(x), axis=0)
        q_t, scales_t, zps_t = qtriton.quantize_per_token(as_input(x), symmetric=False)
    assert tuple(q.shape) == tuple(qa.shape) == tuple(q_c.shape) == tuple(q_t.shape) == shape
    assert float(scale) == float(scale_a) == 1.0 and int(zp) == 0
    assert_exact(scales_c, np.ones(shape[0], np.float32))
    assert_exact(scales_t, np.ones(shape[:-1], np.float32))
    assert_exact(zps_t, np.zeros(shape[:-1], np.int32))


def test_error_metrics_of_empty_input_are_undefined():
    with pytest.raises(ValueError, match="empty"):
        qtriton.quantization_error(np.zeros(0), None, np.zeros(0))


def test_constant_data_far_from_zero():
    x = np.array([10.0, 11.5, 10.7, 11.2], np.float32)
    q, scale, zp = qtriton.quantize_asymmetric(x)
    assert q.min() == 0 and q.max() == 255 and zp < 0  # data [10, 11.5] still spans the grid
    assert np.abs(qtriton.dequantize_asymmetric(q, scale, zp) - x).max() <= scale * 0.51


def test_quantization_error_and_comparison(rng):
    w = _data(rng, (64, 256)) * np.geomspace(0.001, 1, 64)[:, None].astype(np.float32)
    results = qtriton.compare_quantization_methods(w, num_bits=8)
    assert {"symmetric_per_tensor", "asymmetric_per_tensor", "symmetric_per_channel"} <= results.keys()
    assert set(results["symmetric_per_tensor"]) == {"mse", "mae", "max_error", "relative_error", "snr"}
    # Rows of very different scale: per-channel must win clearly.
    assert results["symmetric_per_channel"]["snr"] > results["symmetric_per_tensor"]["snr"] + 6
    q, scale = qtriton.quantize_symmetric(w)
    err = qtriton.quantization_error(w, q, qtriton.dequantize_symmetric(q, scale))
    assert err == results["symmetric_per_tensor"]
    assert err["max_error"] <= scale * 0.5 * (1 + 1e-5)
    assert qtriton.quantization_error(w, None, w)["snr"] == float("inf")


@pytest.mark.parametrize(
    "dtype, bits, kwargs, reduction",
    [
        (np.float32, 8, {"include_scale_overhead": False}, 75.0),
        ("float16", 8, {"include_scale_overhead": False}, 50.0),
        (torch.bfloat16, 4, {"include_scale_overhead": False}, 75.0),
        (np.float32, 8, {"elements_per_scale": 32}, 100 * (1 - 9 / 32)),
        ("fp32", 8, {}, 100 * (1 - 40 / 32)),  # one float32 scale per value costs more than it saves
    ],
)
def test_memory_savings(dtype, bits, kwargs, reduction):
    m = qtriton.calculate_memory_savings(dtype, bits, **kwargs)
    assert m["memory_reduction"] == pytest.approx(reduction)
    assert m["compression_ratio"] == pytest.approx(m["original_bits"] / m["effective_bits"])


def test_backend_setting_env_and_override(monkeypatch, rng):
    calls = []
    import qtriton.torch_backend as torch_backend

    original = torch_backend.quantize
    monkeypatch.setattr(torch_backend, "quantize", lambda *a: calls.append(a) or original(*a))
    x = _data(rng, (3, 4))
    monkeypatch.setenv("QTRITON_BACKEND", "torch")
    assert qtriton.get_backend() == "torch"
    q, scale = qtriton.quantize_symmetric(x)  # NumPy in, torch ops run, NumPy out
    assert len(calls) == 1 and isinstance(q, np.ndarray) and type(scale) is float
    with use_backend("numpy"):
        qtriton.quantize_symmetric(x)
    assert len(calls) == 1
    monkeypatch.setenv("QTRITON_BACKEND", "cuda-please")
    with pytest.raises(ValueError, match="backend must be one of"):
        qtriton.quantize_symmetric(x)


def test_triton_backend_says_what_it_needs(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "TRITON_INTERPRET=1" in triton_device_error("cpu")
    assert triton_device_error("cuda") is None
    assert "not on 'mps'" in triton_device_error("mps")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_device_error("cpu") is None


# ---------------------------------------------------------------------------- bad input

X = np.ones((4, 3), np.float32)
Q = np.ones((4, 3), np.int8)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: qtriton.quantize_symmetric(np.array([1.0, np.nan])), ValueError, "x contains NaN or Inf"),
        (lambda: qtriton.quantize_asymmetric(torch.tensor([1.0, float("inf")])), ValueError, "x contains NaN or Inf"),
        (lambda: qtriton.quantize_symmetric(np.array([1e39, 1.0])), ValueError, "NaN or Inf"),
        (lambda: qtriton.quantize_symmetric(X, num_bits=9), ValueError, "num_bits must be between 2 and 8"),
        (lambda: qtriton.quantize_symmetric(X, num_bits=1), ValueError, "num_bits"),
        (lambda: qtriton.quantize_symmetric(X, num_bits=8.0), TypeError, "num_bits must be an int"),
        (lambda: qtriton.quantize_per_channel(X, num_bits=True), TypeError, "num_bits must be an int"),
        (lambda: qtriton.quantize_symmetric(np.array(["a"])), TypeError, "x must hold real numbers"),
        (lambda: qtriton.quantize_symmetric(torch.ones(3, dtype=torch.int32)), TypeError, "floating-point"),
        (lambda: qtriton.quantize_asymmetric(np.array([1e6, 1e6 + 0.5], np.float32)), ValueError, "asymmetrically"),
        (lambda: qtriton.dequantize_symmetric(X, 0.1), TypeError, "q must be int8 or uint8"),
        (lambda: qtriton.dequantize_symmetric(Q, 0.0), ValueError, "scale must be positive, finite and a normal float32"),
        (lambda: qtriton.dequantize_symmetric(Q, float("nan")), ValueError, "scale must be positive"),
        (lambda: qtriton.dequantize_symmetric(Q, np.ones(3)), ValueError, r"scale must be 0-d or \(1,\), got shape \(3,\)"),
        (lambda: qtriton.dequantize_asymmetric(Q, 0.1, 2.5), TypeError, "zero_point must be an integer"),
        (lambda: qtriton.dequantize_asymmetric(Q, 0.1, 2**40), ValueError, "zero_point must fit in int32"),
        (lambda: qtriton.dequantize_asymmetric(Q, 0.1, 2**70), ValueError, "zero_point must fit in int32"),
        (lambda: qtriton.dequantize_asymmetric(Q, 0.1, np.array(2**63, np.uint64)), ValueError, "must fit in int32"),
        (lambda: qtriton.quantized_matmul(Q, 0.1, Q.T, 0.1, b_zp=-(2**33)), ValueError, r"b_zp must be within \+-16777216"),
        (lambda: qtriton.quantized_matmul(Q, 0.1, Q.T, 0.1, bias=np.array([1, np.nan, 1, 1])), ValueError, "bias contains NaN"),
        (lambda: qtriton.quantize_per_channel(X, axis=2), ValueError, "axis=2 is out of range"),
        (lambda: qtriton.quantize_per_channel(X, axis=-3), ValueError, "axis=-3 is out of range"),
        (lambda: qtriton.quantize_per_channel(X, axis=0.5), TypeError, "axis must be an int"),
        (lambda: qtriton.dequantize_per_channel(Q, np.ones(3), axis=0), ValueError, r"scales must be 0-d, \(1,\) or \(4,\)"),
        (lambda: qtriton.dequantize_per_channel(Q, np.array([1, 1, -1.0]), axis=1), ValueError, "scales must be positive"),
        (lambda: qtriton.dequantize_per_token(Q, np.ones(3)), ValueError, r"scales must have shape \(4,\)"),
        (lambda: qtriton.quantized_matmul(Q, 0.1, Q, 0.1), ValueError, r"\(4, 3\).*\(4, 3\).*3 != 4"),
        (lambda: qtriton.quantized_matmul(Q, 0.1, Q.T.astype(np.int16), 0.1), TypeError, "b_q must be int8 or uint8"),
        (lambda: qtriton.quantized_matmul(Q, 0.1, Q.T.astype(np.float32), 0.1), TypeError, "b_q must be int8"),
        (lambda: qtriton.quantized_matmul(Q[0], 0.1, Q.T, 0.1), ValueError, "a_q must be 2-D"),
        (lambda: qtriton.quantized_matmul(Q, np.ones(3), Q.T, 0.1), ValueError, r"a_scale must be 0-d, \(1,\) or \(M,\) = \(4,\)"),
        (lambda: qtriton.quantized_matmul(Q, 0.1, Q.T, np.ones(5)), ValueError, r"b_scale must be 0-d, \(1,\) or \(N,\) = \(4,\)"),
        (lambda: qtriton.quantized_matmul(Q, 0.1, Q.T, -0.1), ValueError, "b_scale must be positive"),
        (lambda: qtriton.quantized_matmul(Q, 0.1, Q.T, 0.1, a_zp=np.ones(2, np.int32)), ValueError, "a_zp must be"),
        (lambda: qtriton.quantized_matmul(Q, 0.1, Q.T, 0.1, b_zp=np.ones(4)), TypeError, "b_zp must be an integer tensor or array"),
        (lambda: qtriton.quantized_matmul(Q, 0.1, Q.T, 0.1, bias=np.ones(3)), ValueError, "bias must"),
        (lambda: qtriton.quantized_matmul(Q, True, Q.T, 0.1), TypeError, "a_scale must be a number"),
        (lambda: qtriton.quantized_matmul(Q, np.ones(4, bool), Q.T, 0.1), TypeError, "a_scale must hold real numbers"),
        (lambda: qtriton.quantized_matmul(Q, torch.ones(4, dtype=torch.bool), Q.T, 0.1), TypeError, "a_scale must hold real"),
        (lambda: qtriton.quantized_matmul(Q, 1j, Q.T, 0.1), TypeError, "a_scale must hold real numbers"),
        (lambda: qtriton.quantized_matmul(Q, 0.1, Q.T, 0.1, out_dtype="int8"), ValueError, "out_dtype must be"),
        (lambda: qtriton.quantized_matmul(Q, 0.1, Q.T, 0.1, out_dtype=torch.bfloat16), ValueError, "NumPy has no bfloat16"),
        (lambda: qtriton.quantized_matmul(Q, 0.1, torch.from_numpy(Q.T), 0.1), TypeError, "both be NumPy arrays or both"),
        (lambda: qtriton.quantization_error(X, None, X[:2]), ValueError, "dequantized has shape"),
        (lambda: qtriton.calculate_memory_savings("float99", 8), ValueError, "original_dtype"),
        (lambda: qtriton.quantize_per_token(X, hadamard_block=2), ValueError, "hadamard_block=2 does not divide"),
        (lambda: qtriton.quantize_per_token(X[:, :2], hadamard_block=6), ValueError, "power of two"),
        (lambda: qtriton.quantize_per_token(np.full((1, 4), 3e38, np.float32), hadamard_block=4), ValueError,
         "x rotated in blocks of 4 cannot be quantized"),
        (lambda: qtriton.hadamard_rotate(np.full((1, 4), 3e38, np.float32), 4), ValueError,
         "x rotated in blocks of 4 overflows"),
        (lambda: qtriton.hadamard_rotate(np.array([1.0, np.nan]), 2), ValueError, "x contains NaN or Inf"),
        (lambda: qtriton.hadamard_rotate(np.float32(1.0), 2), ValueError, "at least one dimension"),
        (lambda: qtriton.hadamard_rotate(torch.ones(4, dtype=torch.int32), 2), TypeError, "floating-point"),
        (lambda: qtriton.calculate_memory_savings(np.float32, 0), ValueError, "quantized_bits"),
        (lambda: qtriton.calculate_memory_savings(np.float32, 8, elements_per_scale=0), ValueError, "elements_per_scale"),
    ],
)
def test_bad_input_gets_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.interpreter
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CPU data is moved to it)")
def test_forced_triton_moves_host_data_to_the_gpu_and_back(rng, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = _data(rng, (5, 33))
    with use_backend("triton"):
        q, scale = qtriton.quantize_symmetric(x)
        q_t, scales_t = qtriton.quantize_per_channel(torch.from_numpy(x), axis=1)
    assert isinstance(q, np.ndarray) and type(scale) is float and q_t.device.type == "cpu"
    assert_exact(q, ref.quantize_symmetric(x)[0])
    assert_exact(scales_t, ref.quantize_symmetric(x, keep_axis=1)[1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the forced triton backend runs there")
def test_forced_triton_without_gpu_or_interpreter_says_so(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with use_backend("triton"), pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        qtriton.quantize_symmetric(np.ones(3, np.float32))
