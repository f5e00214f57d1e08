"""The int8 GEMM (kernels/matmul.py via qtriton.ops.matmul) against the NumPy oracle.

Integer results must equal reference.int_matmul exactly; scaled results match the float64
reference.quantized_matmul to the output dtype's rounding. Under the interpreter most
tests force large blocks (the `config=` hook) so each launch runs a few programs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qtriton import reference
from qtriton.ops import configs as mcfg
from qtriton.ops import matmul as mops
from qtriton.testing import assert_close, assert_exact, to_numpy

from tests.gemm_cases import codes, exact_product, operand_b, scale, zero_point, zero_points_np

# Few programs per launch in the interpreter; still several tiles and K steps at 257.
BLOCKS = {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 64}
# One 16 x 16 tile with deep K steps, for the long-K tests (K / 512 steps).
DEEP_K = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 16, "BLOCK_SIZE_K": 512}
STRIDED = {"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 2}
# Every config the tests force: they must also launch on a GPU (test_forced_configs_fit).
FORCED_CONFIGS = [BLOCKS, DEEP_K, STRIDED]

# Shared memory per SM: 228 KB on Hopper (227 KB for one program), 164 KB on A100. Pool
# and test configs stay under this, which leaves room for the epilogue's scratch.
SHARED_MEMORY_BUDGET = 160 * 1024


def _shared_memory_bytes(config) -> int:
    """int8 A and B tiles, one copy per pipeline stage: what the K loop keeps in shared
    memory (the interpreter does not model it; a GPU raises OutOfResources past it)."""
    c = mcfg.config_dict(config)
    return c["num_stages"] * (c["BLOCK_SIZE_M"] + c["BLOCK_SIZE_N"]) * c["BLOCK_SIZE_K"]

# A covering subset of {1, 7, 33, 100, 257}^3: every size in every role, edges in all three.
SHAPES = [(1, 1, 1), (1, 257, 100), (7, 33, 257), (33, 100, 7), (100, 7, 33), (257, 100, 257)]


# -------------------------------------------------------------------------- int32 exact
@pytest.mark.interpreter
@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("layout", ["kn", "nk"])
@pytest.mark.parametrize("a_dtype,b_dtype", [("int8", "int8"), ("uint8", "int8"), ("int8", "uint8"), ("uint8", "uint8")])
def test_int8_matmul_exact(M, N, K, layout, a_dtype, b_dtype, rng, device):
    a_q = codes(rng, (M, K), a_dtype, device)
    b_q = operand_b(rng, K, N, b_dtype, layout, device)
    a_before, b_before = a_q.clone(), b_q.clone()
    c = mops.int8_matmul(a_q, b_q, config=BLOCKS)
    assert c.dtype == torch.int32 and c.shape == (M, N)
    assert_exact(c, exact_product(a_q, b_q))
    assert torch.equal(a_q, a_before) and torch.equal(b_q, b_before), "inputs were modified"


@pytest.mark.interpreter
@pytest.mark.parametrize(
    "a_value,b_value,dtype",
    [(-128, -128, torch.int8), (127, 127, torch.int8), (-128, 127, torch.int8), (255, 255, torch.uint8)],
)
def test_int8_matmul_extremes(a_value, b_value, dtype, device):
    M, N, K = 33, 7, 257
    a_q = torch.full((M, K), a_value, dtype=dtype, device=device)
    b_q = torch.full((N, K), b_value, dtype=dtype, device=device).t()
    assert_exact(mops.int8_matmul(a_q, b_q, config=BLOCKS), np.full((M, N), a_value * b_value * K))


@pytest.mark.interpreter
def test_int8_matmul_largest_k(device):
    """K = MAX_K at -128 x -128: 128 * 128 * 131071 = 2**31 - 2**14, the int32 edge."""
    K = mops.MAX_K
    a_q = torch.full((1, K), -128, dtype=torch.int8, device=device)
    b_q = torch.full((16, K), -128, dtype=torch.int8, device=device).t()
    assert_exact(mops.int8_matmul(a_q, b_q, config=DEEP_K), np.full((1, 16), 128 * 128 * K))


@pytest.mark.interpreter
def test_strided_operands_and_grouped_order(rng, device):
    """Non-unit strides on both operands, and a grid with several GROUP_SIZE_M groups."""
    M, N, K = 257, 100, 33
    a_q = codes(rng, (M, 2 * K), "int8", device)[:, ::2]
    b_q = codes(rng, (K, 3 * N), "uint8", device)[:, 1::3]
    assert_exact(mops.int8_matmul(a_q, b_q, config=STRIDED), exact_product(a_q, b_q))


@pytest.mark.interpreter
@pytest.mark.parametrize("M", [1, 5, 16, 17, 100, 300])
def test_default_configs_per_bucket(M, rng, device):
    """No config forced: the interpreter runs each bucket's first (largest-tile) config,
    so the decode (M <= 16), small and large pools all run here."""
    N, K = 300, 257
    a_q = codes(rng, (M, K), "uint8", device)
    b_q = operand_b(rng, K, N, "int8", "nk", device)
    b_scale = torch.from_numpy(rng.uniform(0.5, 1.5, N).astype(np.float32)).to(device)
    out = mops.scaled_matmul(a_q, b_q, 2.0**-10, b_scale, a_zp=3, out_dtype=torch.float32)
    expected = reference.quantized_matmul(to_numpy(a_q), 2.0**-10, to_numpy(b_q), to_numpy(b_scale), 3, 0)
    assert_close(out, expected, rtol=2.0**-22, atol=2.0**-22 * np.abs(expected).max())


# -------------------------------------------------------------------- scaled, vs oracle


# (M, N, K), A dtype, B dtype, B layout, a_scale, b_scale, a_zp, b_zp, bias, out dtype
SCALED_CASES = [
    ((1, 257, 100), "int8", "int8", "nk", "float", "vec", None, None, True, torch.bfloat16),
    ((7, 33, 257), "uint8", "int8", "nk", "vec", "vec", "vec", None, True, torch.float32),
    ((33, 100, 7), "uint8", "uint8", "kn", "0d", "1", "int", "vec", False, torch.float16),
    ((100, 7, 33), "int8", "uint8", "kn", "1", "float", "0d", "int", True, torch.float32),
    ((257, 100, 257), "uint8", "int8", "nk", "vec", "0d", "big_vec", "0d", True, torch.bfloat16),
    ((33, 257, 100), "int8", "int8", "kn", "float", "float", "big_int", "big_vec", False, torch.float32),
    ((7, 1, 33), "uint8", "uint8", "nk", "vec", "vec", "big_vec", "big_int", True, torch.float16),
    ((1, 7, 257), "uint8", "int8", "kn", "0d", "vec", None, "int", False, torch.float32),
    ((100, 33, 1), "int8", "int8", "nk", "vec", "1", "vec", "vec", True, torch.float32),
]


@pytest.mark.interpreter
@pytest.mark.parametrize(
    "shape,a_dtype,b_dtype,layout,a_scale_kind,b_scale_kind,a_zp_kind,b_zp_kind,with_bias,out_dtype", SCALED_CASES
)
def test_scaled_matmul_matches_oracle(
    shape, a_dtype, b_dtype, layout, a_scale_kind, b_scale_kind, a_zp_kind, b_zp_kind, with_bias, out_dtype, rng, device
):
    M, N, K = shape
    a_q = codes(rng, (M, K), a_dtype, device)
    b_q = operand_b(rng, K, N, b_dtype, layout, device)
    a_zp = zero_point(rng, a_zp_kind, M, device)
    b_zp = zero_point(rng, b_zp_kind, N, device)
    zps = zero_points_np(a_zp, b_zp)
    exact = exact_product(a_q, b_q, a_zp, b_zp)
    # A power-of-two factor in b's scale keeps the outputs near 1..100 (fp16 range).
    magnitude = 2.0 ** -np.ceil(np.log2(max(np.abs(exact).max(), 1))) * 64
    a_scale = scale(rng, a_scale_kind, M, device)
    b_scale = scale(rng, b_scale_kind, N, device)
    b_scale = b_scale * magnitude
    bias_dtype = {torch.float32: torch.float16, torch.float16: torch.float32, torch.bfloat16: torch.bfloat16}[out_dtype]
    bias = torch.from_numpy(rng.normal(0, 16, N).astype(np.float32)).to(bias_dtype).to(device) if with_bias else None

    out = mops.scaled_matmul(a_q, b_q, a_scale, b_scale, a_zp, b_zp, bias, out_dtype, config=BLOCKS)
    assert out.dtype == out_dtype and out.shape == (M, N)

    def f64(v):
        return to_numpy(v).astype(np.float64)

    product = reference.quantized_matmul(to_numpy(a_q), f64(a_scale), to_numpy(b_q), f64(b_scale), *zps)
    expected = reference.quantized_matmul(
        to_numpy(a_q), f64(a_scale), to_numpy(b_q), f64(b_scale), *zps, f64(bias.float()) if with_bias else None
    )
    rtol = {torch.float32: 2.0**-22, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}[out_dtype]
    # Adding the bias can cancel: allow float32 error on the product's magnitude, plus
    # the output dtype's subnormal spacing.
    atol = 2.0**-21 * np.abs(product).max() + 2.0**-24
    assert_close(out, expected, rtol=rtol, atol=atol)


@pytest.mark.interpreter
@pytest.mark.parametrize("a_dtype", ["int8", "uint8"])
def test_zero_point_correction_is_exact(a_dtype, rng, device):
    """Unit scales, fp32 out, |C| < 2**24: the huge correction terms (a_zp = 2**20 times
    row and column sums) must cancel to the exact integer."""
    M, N, K = 33, 100, 7
    a_q = codes(rng, (M, K), a_dtype, device)
    b_q = torch.from_numpy(rng.integers(-1, 2, (K, N)).astype(np.int8)).to(device)
    a_zp = torch.from_numpy(rng.integers(2**20 - 100, 2**20 + 100, M).astype(np.int32)).to(device)
    b_zp = torch.from_numpy(rng.integers(-1, 2, N).astype(np.int32)).to(device)
    exact = exact_product(a_q, b_q, a_zp, b_zp)
    assert np.abs(exact).max() < 2**24
    out = mops.scaled_matmul(a_q, b_q, 1.0, 1.0, a_zp, b_zp, config=BLOCKS)
    assert_exact(out, exact.astype(np.float32))


@pytest.mark.interpreter
def test_zero_points_at_the_limit_do_not_overflow(device):
    """Zero points +-2**24 with K = 40000: |C| = K * 2**48 > 2**63 (an int64 correction
    would wrap); the float64 correction keeps full float32 accuracy."""
    K = 40000
    a_q = torch.zeros((1, K), dtype=torch.uint8, device=device)
    b_q = torch.zeros((16, K), dtype=torch.uint8, device=device).t()
    out = mops.scaled_matmul(a_q, b_q, 1.0, 1.0, a_zp=2**24, b_zp=-(2**24), config=DEEP_K)
    expected = float(-K * 2**48)
    assert abs(expected) > 2**63
    assert_close(out, np.full((1, 16), expected), rtol=2.0**-23)


@pytest.mark.interpreter
def test_empty_and_zero_k(device):
    a_q = torch.zeros((3, 0), dtype=torch.int8, device=device)
    b_q = torch.zeros((0, 5), dtype=torch.uint8, device=device)
    bias = torch.arange(5, dtype=torch.float32, device=device)
    out = mops.scaled_matmul(a_q, b_q, 2.0, 3.0, a_zp=7, b_zp=9, bias=bias, config=BLOCKS)
    assert_exact(out, np.tile(np.arange(5, dtype=np.float32), (3, 1)))
    assert mops.int8_matmul(torch.zeros((0, 4), dtype=torch.int8, device=device),
                            torch.zeros((4, 6), dtype=torch.int8, device=device)).shape == (0, 6)


# ---------------------------------------------------------------------------- refusals
def test_k_overflow_is_refused(device):
    a_q = torch.zeros((1, mops.MAX_K + 1), dtype=torch.int8, device=device)
    b_q = torch.zeros((mops.MAX_K + 1, 1), dtype=torch.int8, device=device)
    with pytest.raises(ValueError, match="K = 131072"):
        mops.int8_matmul(a_q, b_q)
    with pytest.raises(ValueError, match="K = 131072"):
        mops.scaled_matmul(a_q, b_q, 1.0, 1.0)


def test_uint8_int32_range_is_refused(device):
    K = 2**31 // (255 * 255) + 1
    a_q = torch.zeros((1, K), dtype=torch.uint8, device=device)
    with pytest.raises(ValueError, match="int32 range"):
        mops.int8_matmul(a_q, torch.zeros((K, 1), dtype=torch.uint8, device=device))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"a_q": "float"}, TypeError, "a_q must be int8 or uint8"),
        ({"a_q": "3d"}, ValueError, "a_q must be 2-D"),
        ({"b_q": "short"}, ValueError, "K differs"),
        ({"a_scale": "bad_shape"}, ValueError, "a_scale must be 0-d"),
        ({"b_scale": "int_tensor"}, TypeError, "b_scale must be a floating tensor"),
        ({"a_zp": 1.5}, TypeError, "a_zp must be an int"),
        ({"b_zp": "float_tensor"}, TypeError, "b_zp must be an integer tensor"),
        ({"b_zp": 2**40}, ValueError, "b_zp"),
        ({"bias": "bad_shape"}, ValueError, "bias must have shape"),
        ({"out_dtype": torch.int32}, ValueError, "out_dtype"),
        ({"config": {"BLOCK_SIZE_M": 48, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 32}}, ValueError, "BLOCK_SIZE_M"),
        ({"config": {"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 32}}, ValueError, "lacks"),
    ],
)
def test_bad_inputs(kwargs, error, match, device):
    M, N, K = 4, 5, 6
    args = {
        "a_q": torch.zeros((M, K), dtype=torch.int8, device=device),
        "b_q": torch.zeros((K, N), dtype=torch.int8, device=device),
        "a_scale": 1.0,
        "b_scale": 1.0,
    }
    replacements = {
        "float": torch.zeros((M, K), device=device),
        "3d": torch.zeros((1, M, K), dtype=torch.int8, device=device),
        "short": torch.zeros((K - 1, N), dtype=torch.int8, device=device),
        "bad_shape": torch.ones(3, device=device),
        "int_tensor": torch.ones(N, dtype=torch.int32, device=device),
        "float_tensor": torch.ones(N, device=device),
    }
    for name, value in kwargs.items():
        args[name] = replacements.get(value, value) if isinstance(value, str) else value
    with pytest.raises(error, match=match):
        mops.scaled_matmul(**args)


# ---------------------------------------------------------------------- config space
def test_config_space():
    assert [mops.m_bucket(m) for m in (1, 16, 17, 128, 129, 5000)] == [16, 16, 32, 128, 256, 4096]
    for M, N, K in [(1, 4096, 4096), (64, 4096, 4096), (4096, 4096, 4096), (1, 40, 20)]:
        configs = mops.configs_for(M, N, K)
        assert configs
        for config in configs:
            block_m, block_n, block_k = (config.kwargs[f"BLOCK_SIZE_{d}"] for d in "MNK")
            assert block_n <= max(16, triton_next_pow2(N)) and block_k <= max(32, triton_next_pow2(K))
            assert block_k >= 32 and config.num_warps in (4, 8)
            if M <= 16:
                assert block_m == 16
            if M > 128:
                assert block_m % 64 == 0  # wgmma's instruction M
def test_pools_fit_shared_memory():
    pools = {"decode": mcfg.DECODE_CONFIGS, "small": mcfg.SMALL_CONFIGS, "large": mcfg.LARGE_CONFIGS}
    for name, pool in pools.items():
        for config in pool:
            assert _shared_memory_bytes(config) <= SHARED_MEMORY_BUDGET, (name, config)


def test_forced_configs_fit():
    for config in FORCED_CONFIGS:
        assert _shared_memory_bytes(config) <= SHARED_MEMORY_BUDGET, config


def test_decode_pool_fills_the_sms():
    """A 4096-wide decode GEMM can run more programs (256) than an H100 has SMs (132)."""
    widths = [config.kwargs["BLOCK_SIZE_N"] for config in mops.configs_for(1, 4096, 4096)]
    assert min(widths) == 16 and 4096 // 16 > 132


def test_autotune_key_separates_variants():
    """The flags that change the K loop's cost are in the key, and every key name is a
    kernel argument (Triton silently drops an unknown name from the key)."""
    kernel = mcfg.autotuned_kernel()  # builds without a GPU; running it needs one
    assert {"A_IS_UINT8", "B_IS_UINT8", "HAS_A_ZP", "HAS_B_ZP", "SCALED"} <= set(kernel.keys)
    assert set(kernel.keys) <= set(mops.kernels._int8_matmul_kernel.arg_names)


def triton_next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def test_tuned_config_files(tmp_path, monkeypatch):
    monkeypatch.setattr(mcfg, "CONFIG_DIR", tmp_path)
    mcfg._tuned_configs.cache_clear()
    try:
        assert mops.device_slug("NVIDIA H100 80GB HBM3") == "nvidia_h100_80gb_hbm3"
        key = mops.shape_key(3, 4096, 1024, b_k_major=True)
        assert key == "16,4096,1024,nk"
        config = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 256, "GROUP_SIZE_M": 1,
                  "num_warps": 4, "num_stages": 4}
        data = {"device": "NVIDIA H100 80GB HBM3", "triton": "3.6.0", "out_dtype": "bfloat16", "configs": {key: config}}
        path = mops.save_tuned_configs(data)
        assert path == tmp_path / "nvidia_h100_80gb_hbm3.json"
        other = {**data, "configs": {"256,4096,4096,kn": {**config, "BLOCK_SIZE_M": 128}}}
        mops.save_tuned_configs(other)  # merges
        assert set(json.loads(path.read_text())["configs"]) == {key, "256,4096,4096,kn"}
        assert mcfg._tuned_configs("NVIDIA H100 80GB HBM3")[key] == config
        assert mcfg._tuned_configs("NVIDIA A100-SXM4-80GB") == {}
        with pytest.raises(ValueError, match="bad configs key"):
            mops.save_tuned_configs({**data, "configs": {"4096x4096": config}})
    finally:
        mcfg._tuned_configs.cache_clear()


DECODE_TILE = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 256, "GROUP_SIZE_M": 1,
               "num_warps": 4, "num_stages": 4}
SPILLING_ZP_TILE = {"BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 256, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 8,
                    "num_warps": 8, "num_stages": 3}  # pruned from the zero-point pools
@pytest.mark.parametrize("config, a_uint8, has_a_zp, b_uint8, has_b_zp, used", [
    (DECODE_TILE, False, False, False, False, True),  # what tune() measures
    (DECODE_TILE, False, True, False, False, True),  # Int8Linear asymmetric: the same K loop
    (SPILLING_ZP_TILE, False, False, False, False, True),
    (SPILLING_ZP_TILE, False, True, False, False, False),  # its zero-point epilogue would spill
    (DECODE_TILE, True, True, False, False, False),  # uint8 A: shifted in the K loop
    (DECODE_TILE, False, False, True, True, False),
    (DECODE_TILE, False, False, False, True, False),  # B zero point: row sums of A
    (DECODE_TILE, False, True, False, True, False),
])
def test_tuned_entries_serve_the_variants_with_its_k_loop(config, a_uint8, has_a_zp, b_uint8, has_b_zp, used,
                                                          tmp_path, monkeypatch):
    """tune() measures int8 operands without zero points. Its entries also serve int8
    operands with an A zero point, where the tile's epilogue fits; uint8 operands and B
    zero points (heavier K loops) must autotune rather than reuse them."""
    monkeypatch.setattr(mcfg, "CONFIG_DIR", tmp_path)
    monkeypatch.setattr(mcfg, "_device_name", lambda index: "NVIDIA H100 80GB HBM3")
    mcfg._tuned_configs.cache_clear()
    try:
        key = mops.shape_key(3, 4096, 1024, b_k_major=True)
        mops.save_tuned_configs({"device": "NVIDIA H100 80GB HBM3", "configs": {key: config}})
        flags = {"A_IS_UINT8": a_uint8, "B_IS_UINT8": b_uint8, "HAS_A_ZP": has_a_zp, "HAS_B_ZP": has_b_zp}
        found = mcfg._tuned_config(torch.device("cuda", 0), 3, 4096, 1024, True, flags)
        assert found == (config if used else None)
    finally:
        mcfg._tuned_configs.cache_clear()


# ---------------------------------------------------------------------- torch.compile
@pytest.mark.interpreter
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_torch_compile_fullgraph(backend, rng, device):
    M, N, K = 7, 33, 100
    a_q = codes(rng, (M, K), "uint8", device)
    weight = codes(rng, (N, K), "int8", device)
    a_scale = torch.from_numpy(rng.uniform(0.5, 1.5, M).astype(np.float32)).to(device)
    b_scale = torch.from_numpy(rng.uniform(0.5, 1.5, N).astype(np.float32)).to(device)
    a_zp = torch.from_numpy(rng.integers(0, 256, M).astype(np.int32)).to(device)
    bias = torch.from_numpy(rng.normal(0, 1, N).astype(np.float32)).to(device)

    def linear(a_q, weight, a_scale, a_zp, bias):
        y = mops.scaled_matmul(a_q, weight.t(), a_scale, b_scale, a_zp=a_zp, bias=bias, out_dtype=torch.bfloat16)
        return y.float() * 2, mops.int8_matmul(a_q, weight.t())

    torch._dynamo.reset()
    compiled = torch.compile(linear, backend=backend, fullgraph=True)
    with mops.use_config(BLOCKS):
        y, c = compiled(a_q, weight, a_scale, a_zp, bias)
    assert_exact(c, reference.int_matmul(to_numpy(a_q), to_numpy(weight).T))
    expected = 2 * reference.quantized_matmul(to_numpy(a_q), to_numpy(a_scale), to_numpy(weight).T, to_numpy(b_scale), to_numpy(a_zp), 0, to_numpy(bias))
    assert_close(y, expected, rtol=2.0**-7, atol=2.0**-20 * np.abs(expected).max())


def test_custom_ops_registered():
    a_q = torch.zeros((2, 32), dtype=torch.int8)
    b_q = torch.zeros((32, 3), dtype=torch.int8)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake_a, fake_b = mode.from_tensor(a_q), mode.from_tensor(b_q)
        assert torch.ops.qtriton.int8_mm(fake_a, fake_b).shape == (2, 3)
        out = torch.ops.qtriton.scaled_mm(fake_a, fake_b, None, 1.0, None, 1.0, None, 0, None, 0, None, torch.float16)
        assert out.shape == (2, 3) and out.dtype == torch.float16


def test_forced_config_is_per_thread():
    """use_config holds in the thread that set it only (a context variable): a launch
    another thread makes meanwhile keeps the normal choice."""
    import threading

    inside, seen = threading.Event(), {}

    def force():
        with mops.use_config(BLOCKS):
            seen["worker"] = mcfg.forced_config()
            inside.set()
            release.wait(5)

    release = threading.Event()
    worker = threading.Thread(target=force)
    worker.start()
    inside.wait(5)
    seen["main"] = mcfg.forced_config()
    release.set()
    worker.join()
    assert seen["worker"]["BLOCK_SIZE_M"] == 64 and seen["main"] is None
    with mops.use_config(DEEP_K):
        with mops.use_config(BLOCKS):
            assert mcfg.forced_config()["BLOCK_SIZE_K"] == 64
        assert mcfg.forced_config()["BLOCK_SIZE_K"] == 512
    assert mcfg.forced_config() is None
