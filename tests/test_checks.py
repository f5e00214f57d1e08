"""One set of argument rules (qtriton.checks) for every entry point: the lab API, the
`qtriton.ops` launchers and Int8Linear; limits and messages the same on every backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import qtriton
from qtriton import checks, ops, reference
from qtriton.backend import use_backend
from qtriton.testing import assert_exact

BACKENDS = ["numpy", "torch", "triton"]
ZP_MESSAGE = r"must be within \+-16777216"
SCALE_MESSAGE = "must be positive, finite and a normal float32"


def _operands(rng, m=5, k=7, n=3, device="cpu"):
    a_q = torch.from_numpy(rng.integers(-128, 128, (m, k), dtype=np.int8)).to(device)
    b_q = torch.from_numpy(rng.integers(-128, 128, (k, n), dtype=np.int8)).to(device)
    return a_q, b_q


# ------------------------------------------------------------- same limits everywhere
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("zp", [2**31 - 100, 2**24 + 1, -(2**24) - 1, 2**31])
def test_matmul_zero_point_limit_is_one_rule(backend, zp, rng, device):
    """The API let a_zp = 2**31 - 100 through, then ops refused it with another message."""
    a_q, b_q = _operands(rng, device=device)
    with use_backend(backend), pytest.raises(ValueError, match="a_zp " + ZP_MESSAGE):
        qtriton.quantized_matmul(a_q, 1.0, b_q, 1.0, a_zp=zp)
    with pytest.raises(ValueError, match="a_zp " + ZP_MESSAGE):
        qtriton.quantized_matmul(a_q.cpu().numpy(), 1.0, b_q.cpu().numpy(), 1.0, a_zp=zp)
    with pytest.raises(ValueError, match="a_zp " + ZP_MESSAGE):
        ops.scaled_matmul(a_q, b_q, 1.0, 1.0, a_zp=zp)
    with pytest.raises(ValueError, match="b_zp " + ZP_MESSAGE):
        qtriton.quantized_matmul(a_q.cpu().numpy(), 1.0, b_q.cpu().numpy(), 1.0, b_zp=np.full(3, zp, np.int64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_matmul_zero_points_at_the_limit_agree_with_the_oracle(backend, rng, device):
    a_q, b_q = _operands(rng, device=device)
    limit = reference.ZERO_POINT_LIMIT
    expected = reference.quantized_matmul(a_q.cpu().numpy(), 1.0, b_q.cpu().numpy(), 1.0, limit, -limit)
    with use_backend(backend):
        out = qtriton.quantized_matmul(a_q, 1.0, b_q, 1.0, a_zp=limit, b_zp=-limit)
    assert_exact(out, expected.astype(np.float32), "out")
    assert_exact(ops.scaled_matmul(a_q, b_q, 1.0, 1.0, limit, -limit), expected.astype(np.float32), "ops out")


def test_dequantize_zero_points_keep_the_int32_range():
    q = np.arange(4, dtype=np.uint8)
    assert np.isfinite(qtriton.dequantize_asymmetric(q, 1.0, 2**31 - 1)).all()
    with pytest.raises(ValueError, match="zero_point must fit in int32"):
        qtriton.dequantize_asymmetric(q, 1.0, 2**31)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        ({"a_scale": torch.ones(3)}, ValueError, r"a_scale must be 0-d, \(1,\) or \(M,\) = \(5,\), got shape \(3,\)"),
        ({"b_scale": torch.ones(3, dtype=torch.int32)}, TypeError, "b_scale must be a floating tensor or array"),
        ({"b_zp": torch.ones(3)}, TypeError, "b_zp must be an integer tensor or array"),
        ({"a_zp": 1.5}, TypeError, "a_zp must be an integer, got 1.5"),
        ({"b_scale": 1e39}, ValueError, "b_scale " + SCALE_MESSAGE),
        ({"a_scale": 1e-39}, ValueError, "a_scale " + SCALE_MESSAGE),
        ({"bias": torch.ones(4)}, ValueError, r"bias must have shape \(N,\) = \(3,\)"),
        ({"b_q": torch.zeros((6, 3), dtype=torch.int8)}, ValueError, r"K differs \(7 != 6\)"),
        ({"a_q": torch.zeros((5, 7))}, TypeError, "a_q must be int8 or uint8, got torch.float32"),
        ({"out_dtype": torch.int32}, ValueError, "out_dtype must be float32, float16 or bfloat16"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_api_and_ops_say_the_same(bad, error, message, rng, device):
    a_q, b_q = _operands(rng)
    args = {"a_q": a_q, "b_q": b_q, "a_scale": 1.0, "b_scale": 1.0, "a_zp": 0, "b_zp": 0, "bias": None,
            "out_dtype": torch.float32}
    args.update(bad)
    args = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    with pytest.raises(error, match=message):
        qtriton.quantized_matmul(args["a_q"], args["a_scale"], args["b_q"], args["b_scale"], args["a_zp"],
                                 args["b_zp"], bias=args["bias"], out_dtype=args["out_dtype"])
    with pytest.raises(error, match=message):
        ops.scaled_matmul(**args)


def test_k_limit_holds_on_every_backend():
    """K <= 131071 for the GEMM: the numpy backend used to take any K."""
    k = checks.MAX_K + 1
    a_q, b_q = np.zeros((1, k), np.int8), np.zeros((k, 1), np.int8)
    for backend in ("numpy", "torch"):
        with use_backend(backend), pytest.raises(ValueError, match="K = 131072 > 131071"):
            qtriton.quantized_matmul(a_q, 1.0, b_q, 1.0)
    with pytest.raises(ValueError, match="K = 131072 > 131071"):
        ops.scaled_matmul(torch.from_numpy(a_q), torch.from_numpy(b_q), 1.0, 1.0)


# -------------------------------------------------------------------- float32 scales
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e39, 1e-39, -1.0, 0.0, float("inf"), float("nan")])
def test_scales_that_float32_cannot_hold_are_refused_everywhere(backend, scale, rng, device):
    """1e39 and 1e-39 passed as float64 and became inf / a denormal on triton (2.0 elsewhere)."""
    a_q, b_q = _operands(rng, device=device)
    with use_backend(backend):
        with pytest.raises(ValueError, match="a_scale " + SCALE_MESSAGE):
            qtriton.quantized_matmul(a_q, scale, b_q, 1.0)
        with pytest.raises(ValueError, match="scale " + SCALE_MESSAGE):
            qtriton.dequantize_symmetric(a_q, scale)
        with pytest.raises(ValueError, match="scales " + SCALE_MESSAGE):
            qtriton.dequantize_per_channel(a_q, np.full(a_q.shape[0], scale), axis=0)
    with pytest.raises(ValueError, match="scale " + SCALE_MESSAGE):
        ops.dequantize(a_q, scale, granularity="tensor")
    with pytest.raises(ValueError, match="b_scale " + SCALE_MESSAGE):
        ops.scaled_matmul(a_q, b_q, 1.0, scale)


def test_float_scales_are_rounded_to_float32_on_every_backend(rng):
    """The numpy backend applied 0.1 as float64, triton as float32: now all use float32."""
    a_q, b_q = (v.numpy() for v in _operands(rng, k=64))
    b_scale = rng.uniform(0.01, 1.0, 3)  # float64
    expected = reference.quantized_matmul(a_q, np.float32(0.1), b_q, b_scale.astype(np.float32)).astype(np.float32)
    assert_exact(qtriton.quantized_matmul(a_q, 0.1, b_q, b_scale), expected, "numpy backend")
    with use_backend("torch"):
        assert_exact(qtriton.quantized_matmul(a_q, 0.1, b_q, b_scale), expected, "torch backend")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision_scale_tensors_are_accepted(dtype, backend, rng, device):
    """bf16 scales raised 'Got unsupported ScalarType BFloat16'; they are widened to float32."""
    a_q, b_q = _operands(rng, device=device)
    b_scale = torch.tensor([0.5, 0.25, 2.0], dtype=dtype, device=device)
    with use_backend(backend):
        got = qtriton.quantized_matmul(a_q, 1.0, b_q, b_scale)
        expected = qtriton.quantized_matmul(a_q, 1.0, b_q, b_scale.float())
        assert_exact(got, expected, "out")
        scales = torch.full((a_q.shape[0],), 0.5, dtype=dtype, device=device)
        expected = qtriton.dequantize_per_channel(a_q, scales.float(), 0)
        assert_exact(qtriton.dequantize_per_channel(a_q, scales, 0), expected, "deq")
    assert_exact(ops.scaled_matmul(a_q, b_q, 1.0, b_scale), ops.scaled_matmul(a_q, b_q, 1.0, b_scale.float()), "ops")


def _quantized_model(symmetric: bool = True) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16))
    qtriton.quantize_model(model, symmetric_activations=symmetric)
    return model


def test_bfloat16_quantized_model_runs():
    """quantize_model(m); m.bfloat16(); m(x) crashed on the bf16 weight_scale. Since #22 the
    scales stay float32 through m.bfloat16() (a bf16 / fp16 scale could underflow)."""
    model = _quantized_model()
    x = torch.randn(3, 32)
    expected = model(x)
    model.bfloat16()
    assert model[0].weight.dtype == torch.int8 and model[0].weight_scale.dtype == torch.float32
    out = model(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_torch_compile_fullgraph_on_cpu(symmetric):
    """fullgraph=True broke at bool(torch.isfinite(x).all()) in the API's checks."""
    model = _quantized_model(symmetric)
    x = torch.randn(4, 32)
    with use_backend("torch"):
        expected = model(x)
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        assert_exact(compiled(x), expected, "compiled")


# ------------------------------------------------------------------------ one check only
def test_the_api_checks_the_matmul_once(rng, device, monkeypatch):
    """api -> backend -> launcher: checks.matmul runs once (ops re-checked everything)."""
    calls = []
    original = checks.matmul
    monkeypatch.setattr(checks, "matmul", lambda *a, **k: calls.append(1) or original(*a, **k))
    a_q, b_q = _operands(rng, device=device)
    with use_backend("triton"):
        qtriton.quantized_matmul(a_q, 0.5, b_q, torch.ones(3, device=device), a_zp=3)
    assert len(calls) == 1
    layer = qtriton.Int8Linear.from_float(nn.Linear(7, 3).to(device))
    with use_backend("triton"):
        layer(torch.randn(2, 7, device=device))
    assert len(calls) == 1  # the layer checks its input and calls the inner entries


@pytest.mark.interpreter
def test_a_w8a16_layer_checks_its_input_once(rng, device, monkeypatch):
    """Int8Linear (W8A16) -> triton backend -> the launcher's unchecked entry: the launcher's
    own argument checks run for its public entry only, not on every forward."""
    from qtriton.ops import w8a16

    calls = []
    original = checks.weight_only_matmul
    monkeypatch.setattr(checks, "weight_only_matmul", lambda *a, **k: calls.append(1) or original(*a, **k))
    layer = qtriton.Int8Linear.from_float(nn.Linear(16, 8).to(device), "w8a16")
    x = torch.randn(3, 16, device=device)
    with use_backend("triton"):
        y = layer(x)
    assert calls == []
    w8a16.w8a16_matmul(x, layer.weight.t(), layer.weight_scale, layer.bias)
    assert calls == [1]  # the public entry still checks
    with use_backend("torch"):
        torch.testing.assert_close(y.cpu(), layer.cpu()(x.cpu()), rtol=1e-5, atol=1e-5)


def test_ops_scaled_matmul_checks_its_operands_once(rng, device, monkeypatch):
    """ops.scaled_matmul ran checks.matmul_operands twice (its own pre-check, then
    checks.matmul's); ops.int8_matmul runs it once too."""
    calls = []
    original = checks.matmul_operands
    monkeypatch.setattr(checks, "matmul_operands", lambda *a, **k: calls.append(1) or original(*a, **k))
    a_q, b_q = _operands(rng, device=device)
    ops.scaled_matmul(a_q, b_q, 0.5, 1.0, config={"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 16, "BLOCK_SIZE_K": 32})
    assert len(calls) == 1
    ops.int8_matmul(a_q, b_q, config={"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 16, "BLOCK_SIZE_K": 32})
    assert len(calls) == 2


# ---------------------------------------------------------------- ops explain themselves
OPS_CALLS = {
    "quantize_per_token": lambda x, q: ops.quantize_per_token(x),
    "quantize_per_channel": lambda x, q: ops.quantize_per_channel(x, 0),
    "quantize_per_tensor": lambda x, q: ops.quantize_per_tensor(x),
    "fake_quantize": lambda x, q: ops.fake_quantize(x),
    "dequantize": lambda x, q: ops.dequantize(q, 1.0, granularity="tensor"),
    "int8_matmul": lambda x, q: ops.int8_matmul(q, q.t()),
    "scaled_matmul": lambda x, q: ops.scaled_matmul(q, q.t(), 1.0, 1.0),
}


@pytest.mark.parametrize("name", sorted(OPS_CALLS))
def test_every_ops_entry_explains_a_cpu_tensor_without_the_interpreter(name, monkeypatch):
    """ops.quantize_per_token(torch.randn(4, 8)) said '0 active drivers' without TRITON_INTERPRET."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x, q = torch.randn(4, 8), torch.zeros((4, 8), dtype=torch.int8)
    with pytest.raises(ValueError, match=r"on cpu: the triton backend needs a CUDA GPU.*TRITON_INTERPRET=1"):
        OPS_CALLS[name](x, q)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: ops.quantize_per_token(torch.ones(4, 8, dtype=torch.int32)), TypeError, "x must be float32, float16"),
        (lambda: ops.quantize_per_token(np.ones((4, 8), np.float32)), TypeError, "x must be a torch.Tensor"),
        (lambda: ops.quantize_per_token(torch.ones(4, 8), num_bits=9), ValueError, "num_bits must be between 2 and 8"),
        (lambda: ops.quantize_per_token(torch.ones(4, 8), symmetric="no"), TypeError, "symmetric must be a bool"),
        (lambda: ops.quantize_per_token(torch.ones(())), ValueError, "x must have at least 1 dimension"),
        (lambda: ops.quantize_per_channel(torch.ones(4, 8), axis=2), ValueError, "axis=2 is out of range"),
        (lambda: ops.dequantize(torch.ones(4, 8), 1.0, granularity="tensor"), TypeError, "q must be int8 or uint8"),
        (lambda: ops.dequantize(torch.ones(4, 8, dtype=torch.int8), torch.ones(3), granularity="channel", axis=0),
         ValueError, r"scale must be 0-d, \(1,\) or \(4,\)"),
        (lambda: ops.dequantize(torch.ones(4, 8, dtype=torch.uint8), 1.0, 2**31, granularity="tensor"),
         ValueError, "zero_point must fit in int32"),
        (lambda: ops.dequantize(torch.ones(4, 8, dtype=torch.int8), torch.ones(3), granularity="token"),
         ValueError, r"scale must have shape \(4,\)"),
    ],
)
def test_ops_quantize_entries_check_their_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("block, error, message", [
    (3, ValueError, "must be a power of two from 2 to 16384, got 3"),
    (1, ValueError, "must be a power of two from 2 to 16384, got 1"),
    (0, ValueError, "must be a power of two"),
    (-4, ValueError, "must be a power of two"),
    (2**15, ValueError, "must be a power of two from 2 to 16384, got 32768"),
    (16, ValueError, "=16 does not divide the rotated axis: its length is 24"),
    (True, TypeError, "must be an int .a power of two. or None, got bool"),
    (8.0, TypeError, "must be an int .a power of two. or None, got float"),
    ("8", TypeError, "must be an int .*, got str"),
])
def test_hadamard_block_rule_is_the_same_everywhere(block, error, message):
    """The lab API, qtriton.ops and the rotation alone refuse the same blocks, with the same words."""
    x = torch.ones(4, 24)
    calls = [lambda: qtriton.quantize_per_token(x, hadamard_block=block),
             lambda: qtriton.quantize_per_token(x.numpy(), symmetric=False, hadamard_block=block),
             lambda: ops.quantize_per_token(x, hadamard_block=block)]
    for call in calls:
        with pytest.raises(error, match="hadamard_block" + ("" if message.startswith("=") else " ") + message):
            call()
    if block is not None:
        with pytest.raises(error, match="block" + ("" if message.startswith("=") else " ") + message):
            qtriton.hadamard_rotate(x, block)


@pytest.mark.parametrize("call", [
    lambda x: qtriton.quantize_per_token(x, symmetric="no"),
    lambda x: qtriton.fake_quantize(x, symmetric="no"),
    lambda x: ops.quantize_per_tensor(x, symmetric="no"),
    lambda x: ops.fake_quantize(x, symmetric=None),
])
def test_symmetric_must_be_a_bool_everywhere(call):
    """The API took symmetric="no" as True (bool("no"))."""
    with pytest.raises(TypeError, match="symmetric must be a bool"):
        call(torch.ones(4, 8))


def test_ops_dequantize_passes_a_nan_scale_on(device):
    """ops never reads tensor values: a NaN scale (the kernels' mark) dequantizes to NaN."""
    q = torch.ones(2, 3, dtype=torch.int8, device=device)
    out = ops.dequantize(q, torch.tensor([1.0, float("nan")], device=device), granularity="token")
    assert torch.isnan(out[1]).all().item() and not torch.isnan(out[0]).any().item()


def test_int8linear_on_the_numpy_backend_matches_the_torch_backend():
    """Int8Linear goes straight to a tensor backend, through the API for the NumPy oracle."""
    layer = qtriton.Int8Linear.from_float(nn.Linear(16, 8))
    x = torch.randn(5, 16)
    with use_backend("numpy"):
        expected = layer(x)
    with use_backend("torch"):
        assert_exact(layer(x), expected, "torch backend")
    with use_backend("numpy"), pytest.raises(ValueError, match="input contains NaN or Inf"):
        layer(torch.full((1, 16), float("nan")))
