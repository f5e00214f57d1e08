"""The weight-only int8 GEMM (kernels/w8a16_matmul.py via qtriton.ops.w8a16) and the W8A16
mode of Int8Linear, against the NumPy oracle reference.weight_only_matmul.

The products a * q are exact in float32 (an fp16/bf16/fp32 value times an 8-bit integer),
so the kernel differs from the float64 oracle only by float32 summation (bounded by
K * 2**-23 * (|a| @ |b|) * scale) and the output dtype's rounding (half an ulp).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qtriton import reference
from qtriton.backend import use_backend
from qtriton.model.nn import Int8Linear
from qtriton.ops import w8a16
from qtriton.testing import to_numpy

from tests.gemm_cases import operand_b

BLOCKS = {"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 2}
SHAPES = [(1, 1, 1), (1, 100, 257), (7, 33, 100), (33, 257, 7), (100, 7, 33)]
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def _operands(rng, M, K, N, dtype, device, layout="nk"):
    a = torch.from_numpy(rng.standard_normal((M, K)).astype(np.float32) * 3).to(dtype).to(device)
    b_q = operand_b(rng, K, N, "int8", layout, device)
    b_scale = torch.from_numpy(rng.uniform(1e-3, 2e-2, N).astype(np.float32)).to(device)
    bias = torch.from_numpy(rng.standard_normal(N).astype(np.float32)).to(device)
    return a, b_q, b_scale, bias


def _check(out, a, b_q, b_scale, bias, out_dtype):
    a64, b64 = to_numpy(a).astype(np.float64), to_numpy(b_q).astype(np.float64)
    scale = to_numpy(b_scale).astype(np.float64)
    expected = reference.weight_only_matmul(a64, b64, scale, None if bias is None else to_numpy(bias))
    K = a64.shape[1]
    summation = K * 2.0**-23 * (np.abs(a64) @ np.abs(b64)) * scale[None, :]
    bound = summation * (1 + 2 * UNIT_ROUNDOFF[out_dtype]) + UNIT_ROUNDOFF[out_dtype] * np.abs(expected) + 1e-30
    got = to_numpy(out).astype(np.float64)
    assert got.shape == expected.shape and out.dtype == out_dtype
    bad = np.abs(got - expected) > bound
    assert not bad.any(), f"{bad.sum()} of {bad.size} beyond the bound, first at {np.argwhere(bad)[0]}"


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_matches_oracle(rng, device, dtype, M, K, N):
    a, b_q, b_scale, bias = _operands(rng, M, K, N, dtype, device)
    out = w8a16.w8a16_matmul(a, b_q, b_scale, bias, config=BLOCKS)
    _check(out, a, b_q, b_scale, bias, dtype)


@pytest.mark.interpreter
@pytest.mark.parametrize("layout", ["nk", "kn"])
def test_layouts_no_bias_and_out_dtype(rng, device, layout):
    a, b_q, b_scale, _ = _operands(rng, 20, 70, 45, torch.bfloat16, device, layout)
    out = w8a16.w8a16_matmul(a, b_q, b_scale, out_dtype=torch.float32, config=BLOCKS)
    _check(out, a, b_q, b_scale, None, torch.float32)


@pytest.mark.interpreter
def test_pool_config_and_extremes(rng, device):
    """The interpreter's default (first pool config, not a forced one), all-extreme codes."""
    M, K, N = 5, 300, 40
    a = torch.full((M, K), -2.5, dtype=torch.float16, device=device)
    b_q = torch.full((N, K), -128, dtype=torch.int8, device=device).t()
    b_scale = torch.full((N,), 0.01, device=device)
    out = w8a16.w8a16_matmul(a, b_q, b_scale)
    _check(out, a, b_q, b_scale, None, torch.float16)
    assert float(out[0, 0]) == pytest.approx(2.5 * 128 * 300 * 0.01, rel=1e-3)


def test_configs_fit_the_problem():
    for M, N, K in [(1, 40, 20), (100, 4096, 4096), (4096, 11008, 4096)]:
        for config in w8a16.configs_for(M, N, K):
            assert config.kwargs["BLOCK_SIZE_N"] <= max(16, 2 ** (N - 1).bit_length())
            assert config.kwargs["BLOCK_SIZE_K"] >= 16


@pytest.mark.parametrize(
    "args,message",
    [
        (lambda a, b, s: (a.to(torch.int32), b, s), "a must be"),
        (lambda a, b, s: (a, b.float(), s), "b_q must be"),
        (lambda a, b, s: (a, b[:-1], s), "inner dimensions"),
        (lambda a, b, s: (a, b, s[:-1]), "b_scale must be"),
    ],
)
def test_bad_input(rng, args, message):
    a, b_q, b_scale, _ = _operands(rng, 4, 8, 6, torch.float32, "cpu")
    with pytest.raises((TypeError, ValueError), match=message):
        w8a16.w8a16_matmul(*args(a, b_q, b_scale))


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8linear_weight_only(rng, device, dtype):
    """Int8Linear(weight_only=True): the torch fallback and the kernel compute the oracle's
    formula on the layer's int8 weight, and stay close to the float layer."""
    torch.manual_seed(int(rng.integers(2**31)))
    linear = torch.nn.Linear(96, 40)
    layer = Int8Linear.from_float(linear, "w8a16")
    assert layer.weight.dtype == torch.int8 and "weight-only" in repr(layer)
    x = torch.randn(3, 5, 96).to(dtype)
    with use_backend("torch"):
        fallback = layer(x)
    with use_backend("triton"):
        kernel = layer.to(device)(x.to(device)).cpu()
    for out in (fallback, kernel):
        assert out.shape == (3, 5, 40) and out.dtype == dtype
        _check(out.reshape(15, 40), x.reshape(15, 96), layer.weight.t(), layer.weight_scale, layer.bias, dtype)
    float_out = linear(x.float())
    assert (fallback.float() - float_out).abs().max() < 0.02 * float_out.abs().max()


# ------------------------------------------------ the int8 GEMM's conventions, held here too
def test_custom_op_registered():
    a = torch.zeros((2, 32), dtype=torch.bfloat16)
    b_q = torch.zeros((32, 3), dtype=torch.int8)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake_a, fake_b, fake_s = mode.from_tensor(a), mode.from_tensor(b_q), mode.from_tensor(torch.ones(3))
        out = torch.ops.qtriton.w8a16_mm(fake_a, fake_b, fake_s, None, torch.float32)
        assert out.shape == (2, 3) and out.dtype == torch.float32


@pytest.mark.interpreter
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_torch_compile_fullgraph(backend, rng, device):
    """One custom op, as the int8 GEMM: torch.compile traces through it without a break."""
    a, b_q, b_scale, bias = _operands(rng, 7, 40, 33, torch.float32, device)

    def layer(a, b_q, b_scale, bias):
        return w8a16.w8a16_matmul(a, b_q, b_scale, bias) * 2

    torch._dynamo.reset()
    compiled = torch.compile(layer, backend=backend, fullgraph=True)
    out = compiled(a, b_q, b_scale, bias)
    _check(out / 2, a, b_q, b_scale, bias, torch.float32)


@pytest.mark.interpreter
def test_forced_config_reaches_the_launch_and_is_undone(rng, device, monkeypatch):
    """config= forces the launch's tiles (read inside the custom op) for that call only; an
    int8 GEMM config forced around it does not leak in."""
    seen = []
    launch = w8a16.kernels._w8a16_matmul_kernel.__getitem__

    def spy(grid):
        run = launch(grid)
        return lambda **kwargs: seen.append(kwargs["BLOCK_SIZE_K"]) or run(**kwargs)

    monkeypatch.setattr(type(w8a16.kernels._w8a16_matmul_kernel), "__getitem__", lambda self, grid: spy(grid))
    a, b_q, b_scale, bias = _operands(rng, 5, 70, 9, torch.float32, device)
    w8a16.w8a16_matmul(a, b_q, b_scale, bias, config=BLOCKS)
    from qtriton.ops import use_config

    with use_config({"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 16, "BLOCK_SIZE_K": 512}):
        w8a16.w8a16_matmul(a, b_q, b_scale, bias)
    assert seen == [BLOCKS["BLOCK_SIZE_K"], w8a16.configs_for(5, 9, 70)[0].kwargs["BLOCK_SIZE_K"]]


@pytest.mark.interpreter
def test_int8linear_w8a16_forward_checks_once(rng, device, monkeypatch):
    """The layer checks its input; the kernel's entry below it does not check again."""
    from qtriton import checks

    calls = []
    original = checks.weight_only_matmul
    monkeypatch.setattr(checks, "weight_only_matmul", lambda *a, **k: calls.append(1) or original(*a, **k))
    layer = Int8Linear.from_float(torch.nn.Linear(16, 8), "w8a16").to(device)
    with use_backend("triton"):
        out = layer(torch.randn(3, 16, device=device))
    assert out.shape == (3, 8) and calls == []
    w8a16.w8a16_matmul(torch.ones(2, 16, device=device), layer.weight.t(), layer.weight_scale)
    assert calls == [1]
