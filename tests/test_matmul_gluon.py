"""The int8 GEMM's Gluon main loop for Hopper (kernels/matmul_gluon.py) and the rule that
picks it (qtriton/ops/configs.py: QTRITON_GEMM, use_gemm, gluon_suits).

Gluon kernels do not run in Triton's interpreter: the tests against the NumPy oracle take
the `device` fixture and skip unless `--device cuda` is an sm_90 card with a Triton that
has Gluon (they are in the GPU run's `-m on_device` selection; bench/gpu_check.sh runs
them). Each one checks that the Gluon kernel did launch, so a silent fallback to the tl.dot
loop cannot pass for it. The selection rules run everywhere. tests/test_static.py compiles
the Gluon loop for sm_90a offline (wait depth, TMA, spills).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import triton.language as tl

from qtriton import reference
from qtriton.ops import configs as mcfg
from qtriton.ops import matmul as mops
from qtriton.testing import assert_close, assert_exact, to_numpy

from tests.gemm_cases import codes, exact_product, operand_b, scale, zero_point, zero_points_np

# Ragged in every dimension (TMA's zero padding at the M, N and K edges), several tiles and
# K steps, K a multiple of 16 (what the loop takes; other K go to the tl.dot loop).
SHAPES = [(17, 33, 48), (100, 257, 272), (257, 100, 512), (300, 520, 1040)]


@pytest.fixture
def gluon_device(device, monkeypatch):
    """The device, when the Gluon loop can run there; counts the Gluon launches."""
    if device != "cuda" or not mcfg.sm90(torch.device("cuda")) or not mcfg.gluon_available():
        pytest.skip("the Gluon loop runs on an sm_90 CUDA card only (Gluon has no interpreter)")
    from qtriton.ops import matmul_gluon

    launches = []
    launch = matmul_gluon.launch

    def counted(*args, **kwargs):
        launches.append(args[0].shape)
        return launch(*args, **kwargs)

    monkeypatch.setattr(matmul_gluon, "launch", counted)
    with mcfg.use_gemm("gluon"):
        yield device, launches


# ----------------------------------------------------------------- on an sm_90 card
@pytest.mark.parametrize("config", [None, *[mcfg.config_dict(c) for c in mcfg.GLUON_CONFIGS]],
                         ids=lambda c: "pool" if c is None else "M{BLOCK_SIZE_M}N{BLOCK_SIZE_N}w{num_warps}s{num_stages}"
                         .format(**c))
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_gluon_int32_is_exact(M, N, K, config, rng, gluon_device):
    device, launches = gluon_device
    a_q = codes(rng, (M, K), "int8", device)
    b_q = operand_b(rng, K, N, "int8", "nk", device)
    before = (a_q.clone(), b_q.clone())
    out = mops.int8_matmul(a_q, b_q, config=config)
    assert launches, "the Gluon kernel did not run"
    assert_exact(out, exact_product(a_q, b_q))
    assert torch.equal(a_q, before[0]) and torch.equal(b_q, before[1])


@pytest.mark.parametrize("a_dtype,b_dtype,layout,strided", [
    ("int8", "int8", "kn", False),  # row-major B: copied K-major first
    ("uint8", "int8", "nk", False),  # uint8 A: shifted to int8 first
    ("int8", "uint8", "kn", False),
    ("int8", "int8", "nk", True),  # A with a column stride: copied
])
def test_gluon_operand_forms_are_exact(a_dtype, b_dtype, layout, strided, rng, gluon_device):
    device, launches = gluon_device
    M, N, K = 100, 257, 272
    a_q = codes(rng, (M, 2 * K if strided else K), a_dtype, device)
    a_q = a_q[:, ::2] if strided else a_q
    b_q = operand_b(rng, K, N, b_dtype, layout, device)
    assert_exact(mops.int8_matmul(a_q, b_q), exact_product(a_q, b_q))
    assert launches, "the Gluon kernel did not run"


# (M, N, K), A dtype, a_scale, b_scale, a_zp, b_zp, bias, out dtype: every epilogue form
SCALED_CASES = [
    ((100, 257, 272), "int8", "vec", "vec", None, None, True, torch.bfloat16),
    ((257, 100, 512), "int8", "float", "float", None, None, False, torch.float32),
    ((17, 33, 48), "int8", "vec", "vec", "vec", None, True, torch.bfloat16),  # Int8Linear asymmetric
    ((300, 520, 1040), "uint8", "vec", "float", "int", None, False, torch.float16),
    ((100, 257, 272), "int8", "float", "vec", "int", "vec", True, torch.float32),
    ((257, 100, 512), "uint8", "vec", "vec", "vec", "int", True, torch.float16),
]


@pytest.mark.parametrize("shape,a_dtype,a_scale_kind,b_scale_kind,a_zp_kind,b_zp_kind,with_bias,out_dtype",
                         SCALED_CASES)
def test_gluon_scaled_matches_oracle(shape, a_dtype, a_scale_kind, b_scale_kind, a_zp_kind, b_zp_kind, with_bias,
                                     out_dtype, rng, gluon_device):
    device, launches = gluon_device
    M, N, K = shape
    a_q = codes(rng, (M, K), a_dtype, device)
    b_q = operand_b(rng, K, N, "int8", "nk", device)
    a_zp = zero_point(rng, a_zp_kind, M, device)
    b_zp = zero_point(rng, b_zp_kind, N, device)
    zps = zero_points_np(a_zp, b_zp)
    exact = exact_product(a_q, b_q, a_zp, b_zp)
    magnitude = 2.0 ** -np.ceil(np.log2(max(np.abs(exact).max(), 1))) * 64  # outputs near 1..100 (fp16)
    a_scale = scale(rng, a_scale_kind, M, device)
    b_scale = scale(rng, b_scale_kind, N, device) * magnitude
    bias = torch.from_numpy(rng.normal(0, 16, N).astype(np.float32)).to(device) if with_bias else None

    out = mops.scaled_matmul(a_q, b_q, a_scale, b_scale, a_zp, b_zp, bias, out_dtype)
    assert launches, "the Gluon kernel did not run"

    def f64(v):
        return to_numpy(v).astype(np.float64)

    product = reference.quantized_matmul(to_numpy(a_q), f64(a_scale), to_numpy(b_q), f64(b_scale), *zps)
    expected = reference.quantized_matmul(to_numpy(a_q), f64(a_scale), to_numpy(b_q), f64(b_scale), *zps,
                                          f64(bias) if with_bias else None)
    rtol = {torch.float32: 2.0**-22, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}[out_dtype]
    assert_close(out, expected, rtol=rtol, atol=2.0**-21 * np.abs(product).max() + 2.0**-24)


def test_gluon_bf16_rounds_to_nearest_even(rng, gluon_device):
    device, launches = gluon_device
    M, N, K = 64, 128, 256
    a_q = codes(rng, (M, K), "int8", device)
    b_q = operand_b(rng, K, N, "int8", "nk", device)
    out = mops.scaled_matmul(a_q, b_q, 1.0, 1.0, out_dtype=torch.bfloat16)
    assert launches, "the Gluon kernel did not run"
    exact = exact_product(a_q, b_q)
    expected = torch.from_numpy(exact.astype(np.float32)).to(torch.bfloat16)  # torch rounds RNE
    truncated = (torch.from_numpy(exact.astype(np.float32)).view(torch.int32) & ~0xFFFF).view(torch.float32)
    assert not torch.equal(expected.float(), truncated), "the data must tell rounding from truncation"
    assert_exact(out.float().cpu(), expected.float())


def test_gluon_and_tl_loops_agree_bit_for_bit(rng, gluon_device):
    """The same epilogue code behind both loops: equal outputs, not merely close ones."""
    device, launches = gluon_device
    M, N, K = 257, 520, 1040
    a_q = codes(rng, (M, K), "int8", device)
    b_q = operand_b(rng, K, N, "int8", "nk", device)
    a_scale = scale(rng, "vec", M, device)
    b_scale = scale(rng, "vec", N, device) * 2.0**-14
    a_zp = zero_point(rng, "vec", M, device)
    bias = torch.from_numpy(rng.normal(0, 1, N).astype(np.float32)).to(device)
    gluon = mops.scaled_matmul(a_q, b_q, a_scale, b_scale, a_zp, None, bias, torch.bfloat16)
    assert launches, "the Gluon kernel did not run"
    with mcfg.use_gemm("tl"):
        plain = mops.scaled_matmul(a_q, b_q, a_scale, b_scale, a_zp, None, bias, torch.bfloat16)
    assert len(launches) == 1
    assert torch.equal(gluon, plain)


def _copies(monkeypatch) -> list:
    """Spy on the launcher's operand copies: (shape, k_major, shift) of each."""
    copies = []
    original = mops._operand_copy
    monkeypatch.setattr(mops, "_operand_copy", lambda x, k_major, shift: copies.append(
        (tuple(x.shape), k_major, shift)) or original(x, k_major, shift))
    return copies


@pytest.mark.parametrize("view", ["a row stride != K", "a column slice", "a row offset", "B a column slice"])
def test_gluon_reads_tma_ready_views_in_place(view, rng, gluon_device, monkeypatch):
    """Views TMA can read as they are (int8, rows contiguous and 16-byte aligned, a row
    stride other than K) go to the descriptors without a copy, and are read right."""
    device, launches = gluon_device
    M, N, K = 100, 72, 256
    a_q = codes(rng, (M + 16, K + 64), "int8", device)
    weight = codes(rng, (N, K + 32), "int8", device)
    a, b = a_q[:M, :K], weight[:, :K].t()
    if view == "a column slice":
        a = a_q[:M, 64:]
    elif view == "a row offset":
        a = a_q[16:, :K]
    elif view == "B a column slice":
        b = weight[:, 32:].t()
    assert mcfg.tma_ready(a) and mcfg.tma_ready(b.t()) and a.stride(0) != K
    copies = _copies(monkeypatch)
    assert_exact(mops.int8_matmul(a, b), exact_product(a, b))
    assert launches and copies == []


@pytest.mark.parametrize("form", ["misaligned base", "row stride % 16 != 0", "fully transposed A",
                                  "broadcast rows"])
def test_gluon_copies_what_tma_cannot_read(form, rng, gluon_device, monkeypatch):
    """A base off the 16-byte alignment, a row stride not a multiple of 16, a column-major
    (transposed) A, rows that overlap (stride 0): copied first, then exact."""
    device, launches = gluon_device
    M, N, K = 67, 40, 96
    b = operand_b(rng, K, N, "int8", "nk", device)
    if form == "misaligned base":
        a = codes(rng, (M, K + 16), "int8", device)[:, 1:K + 1]
    elif form == "row stride % 16 != 0":
        a = codes(rng, (M, K + 8), "int8", device)[:, :K]
    elif form == "fully transposed A":
        a = codes(rng, (K, M), "int8", device).t()
    else:
        a = codes(rng, (1, K), "int8", device).expand(M, K)
    assert not mcfg.tma_ready(a)
    copies = _copies(monkeypatch)
    assert_exact(mops.int8_matmul(a, b), exact_product(a, b))
    assert launches and copies == [((M, K), False, False)]


@pytest.mark.parametrize("N", [1, 8, 15])
def test_gluon_narrow_n(N, rng, gluon_device):
    """N < 16: the tile and the TMA box are wider than B; the zero padding and the masked
    store keep the result exact (N = 1 included)."""
    device, launches = gluon_device
    M, K = 70, 160
    a_q = codes(rng, (M, K), "int8", device)
    b_q = operand_b(rng, K, N, "int8", "nk", device)
    a_scale = scale(rng, "vec", M, device)
    assert_exact(mops.int8_matmul(a_q, b_q), exact_product(a_q, b_q))
    out = mops.scaled_matmul(a_q, b_q, a_scale, 1.0, out_dtype=torch.float32)
    expected = reference.quantized_matmul(to_numpy(a_q), to_numpy(a_scale).astype(np.float64), to_numpy(b_q), 1.0)
    assert_close(out, expected, rtol=2.0**-22, atol=0)
    assert launches


def test_gluon_int64_correction(gluon_device):
    """Zero-point tensors at +-2**24 with K = 2**12: the bound passes 2**31, the correction runs
    in int64 (an int32 one would wrap), and |C| passes float64's 2**53: exact through a
    float32 output with unit scales (float32(C) of the exact C)."""
    device, launches = gluon_device
    M, N, K = 33, 48, 2**12
    a_q = torch.full((M, K), 127, dtype=torch.int8, device=device)
    b_q = torch.full((N, K), -128, dtype=torch.int8, device=device).t()
    a_zp = torch.full((M,), -(2**24), dtype=torch.int32, device=device)
    b_zp = torch.full((N,), 2**24, dtype=torch.int32, device=device)
    assert mops.correction_dtype(K, a_q.dtype, b_q.dtype, a_zp, 0, b_zp, 0) == tl.int64
    out = mops.scaled_matmul(a_q, b_q, 1.0, 1.0, a_zp, b_zp)
    expected = exact_product(a_q, b_q, a_zp, b_zp)
    assert abs(int(expected[0, 0])) > 2**53
    assert_exact(out, expected.astype(np.float32))
    assert launches


def test_gluon_uint8_b_with_zero_points_scaled(rng, gluon_device, monkeypatch):
    """uint8 B (shifted to int8 by its K-major copy) with per-column zero points and an A zero
    point, scaled to bfloat16: the correction's -128 * K shift of the sums is right."""
    device, launches = gluon_device
    M, N, K = 100, 130, 272
    a_q = codes(rng, (M, K), "int8", device)
    b_q = operand_b(rng, K, N, "uint8", "nk", device)
    a_zp = zero_point(rng, "vec", M, device)
    b_zp = torch.from_numpy(rng.integers(0, 256, N).astype(np.int32)).to(device)
    a_scale, b_scale = scale(rng, "vec", M, device), scale(rng, "vec", N, device) * 2.0**-16
    copies = _copies(monkeypatch)
    out = mops.scaled_matmul(a_q, b_q, a_scale, b_scale, a_zp, b_zp, out_dtype=torch.float32)
    assert launches and copies == [((K, N), True, True)]
    expected = reference.quantized_matmul(to_numpy(a_q), to_numpy(a_scale).astype(np.float64), to_numpy(b_q),
                                          to_numpy(b_scale).astype(np.float64), to_numpy(a_zp), to_numpy(b_zp))
    assert_close(out, expected, rtol=2.0**-22, atol=2.0**-30)


@pytest.mark.parametrize("a_dtype", ["int8", "uint8"])
def test_gluon_uses_caller_sums(a_dtype, rng, gluon_device):
    """Caller-given a_rowsum / b_colsum (stored codes) reach the Gluon epilogue: wrong sums
    move the result by exactly zero point x error. With uint8 A the launcher shifts A and
    its row sums by -128 * K; the result must still be the exact product."""
    device, launches = gluon_device
    M, N, K = 65, 48, 160
    a_q = codes(rng, (M, K), a_dtype, device)
    b_q = operand_b(rng, K, N, "int8", "nk", device)
    a_zp = torch.from_numpy(rng.integers(-100, 100, M).astype(np.int32)).to(device)
    b_zp = torch.from_numpy(rng.integers(-100, 100, N).astype(np.int32)).to(device)
    rowsum, colsum = a_q.sum(1, dtype=torch.int32), b_q.sum(0, dtype=torch.int32)
    exact = exact_product(a_q, b_q, a_zp, b_zp)
    out = mops.scaled_matmul(a_q, b_q, 1.0, 1.0, a_zp, b_zp, a_rowsum=rowsum, b_colsum=colsum)
    assert_exact(out, exact.astype(np.float32))
    error = torch.zeros_like(colsum)
    error[5] = 1
    out = mops.scaled_matmul(a_q, b_q, 1.0, 1.0, a_zp, b_zp, a_rowsum=rowsum, b_colsum=colsum + error)
    # The kernel's A zero point: a uint8 A is shifted to int8 codes, its zero point with it.
    kernel_a_zp = to_numpy(a_zp) - (128 if a_dtype == "uint8" else 0)
    assert_exact(out, (exact - np.outer(kernel_a_zp, to_numpy(error))).astype(np.float32))
    assert len(launches) == 2


def test_gluon_race_exposing_shape_matches_int_mm(rng, gluon_device):
    """2048 x 2048 x 8192: 64 K steps through a 4-slot ring on 128 CTAs, every slot
    refilled 16 times; a refill that overtook a wgmma still reading its slot would show as
    a wrong element. Against torch._int_mm (cuBLAS), for both B layouts' inputs."""
    device, launches = gluon_device
    M, N, K = 2048, 2048, 8192
    a_q = torch.randint(-128, 128, (M, K), dtype=torch.int8, device=device)
    weight = torch.randint(-128, 128, (N, K), dtype=torch.int8, device=device)
    expected = torch._int_mm(a_q, weight.t())
    for config in (None, mcfg.config_dict(mcfg.GLUON_CONFIGS[0])):
        assert torch.equal(mops.int8_matmul(a_q, weight.t(), config=config), expected), config
    assert len(launches) == 2


def test_gluon_second_call_hits_the_autotuner_cache(rng, gluon_device):
    """The same autotune key twice: the second call reuses the tuned config (its pre_hook sets
    the new descriptors' blocks) and is exact on new data."""
    from qtriton.ops import matmul_gluon

    device, launches = gluon_device
    M, N, K = 257, 520, 1040
    kernel = matmul_gluon.autotuned_kernel()
    results, keys = [], []
    for _ in range(2):
        a_q = codes(rng, (M, K), "int8", device)
        b_q = operand_b(rng, K, N, "int8", "nk", device)
        results.append((mops.int8_matmul(a_q, b_q), exact_product(a_q, b_q)))
        keys.append(dict(kernel.cache))
    for out, expected in results:
        assert_exact(out, expected)
    assert len(launches) == 2 and keys[0] and keys[1] == keys[0]  # no new key: a cache hit
def test_gluon_cuda_graph_capture(rng, gluon_device):
    """The Gluon launch captured in a CUDA graph (after a warm-up that compiles and tunes)
    and replayed on new inputs copied into the captured ones: exact each time."""
    device, launches = gluon_device
    M, N, K = 128, 256, 512
    a_q = codes(rng, (M, K), "int8", device)
    weight = codes(rng, (N, K), "int8", device)
    a_scale = scale(rng, "vec", M, device)
    mops.scaled_matmul(a_q, weight.t(), a_scale, 1.0, out_dtype=torch.float32)  # compile, tune
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
        out = mops.scaled_matmul(a_q, weight.t(), a_scale, 1.0, out_dtype=torch.float32)
    torch.cuda.current_stream().wait_stream(stream)
    for _ in range(2):
        a_q.copy_(codes(rng, (M, K), "int8", device))
        weight.copy_(codes(rng, (N, K), "int8", device))
        graph.replay()
        torch.cuda.synchronize()
        expected = reference.quantized_matmul(to_numpy(a_q), to_numpy(a_scale).astype(np.float64), to_numpy(weight).T, 1.0)
        assert_close(out, expected, rtol=2.0**-22, atol=0)
    assert len(launches) >= 2


# --------------------------------------------------------------- selection, everywhere
def test_setting_env_and_context(monkeypatch):
    monkeypatch.delenv("QTRITON_GEMM", raising=False)
    assert mcfg.gemm_setting() == mcfg.DEFAULT_GEMM == "tl"
    monkeypatch.setenv("QTRITON_GEMM", " Gluon ")
    assert mcfg.gemm_setting() == "gluon"
    with mcfg.use_gemm("tl"):  # the context manager wins over the environment
        assert mcfg.gemm_setting() == "tl"
    assert mcfg.gemm_setting() == "gluon"
    monkeypatch.setenv("QTRITON_GEMM", "cutlass")
    with pytest.raises(ValueError, match="QTRITON_GEMM must be one of tl, gluon, got 'cutlass'"):
        mcfg.gemm_setting()
    with pytest.raises(ValueError, match="use_gemm's loop must be one of tl, gluon"):
        with mcfg.use_gemm("fast"):
            pass


def test_gluon_runs_only_where_it_suits(monkeypatch):
    if not mcfg.gluon_available():
        pytest.skip("this Triton has no Gluon")
    cuda = torch.device("cuda")
    monkeypatch.setattr(mcfg, "sm90", lambda device: True)
    assert mcfg.gluon_suits(cuda, 17, 8, 16, tl.int32)
    assert mcfg.gluon_suits(cuda, 4096, 4096, 4096, tl.int64)
    assert not mcfg.gluon_suits(cuda, 16, 4096, 4096, tl.int32)  # decode: the tl.dot loop's tiles and split-K
    assert not mcfg.gluon_suits(cuda, 64, 64, 40, tl.int32)  # K % 16: TMA's 16-byte row stride
    assert not mcfg.gluon_suits(cuda, 64, 64, 0, tl.int32)
    assert not mcfg.gluon_suits(cuda, 64, 64, 64, tl.float64)
    with mcfg.use_config({"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 256}):
        assert not mcfg.gluon_suits(cuda, 64, 64, 64, tl.int32)  # a forced tl-only tile
    with mcfg.use_config({"BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 128, "num_warps": 8}):
        assert mcfg.gluon_suits(cuda, 64, 64, 64, tl.int32)
    with mcfg.use_gemm("gluon"):
        assert mcfg.main_loop(cuda, 64, 64, 64, tl.int32) == "gluon"
    assert mcfg.main_loop(cuda, 64, 64, 64, tl.int32) == mcfg.DEFAULT_GEMM
    monkeypatch.setattr(mcfg, "sm90", lambda device: False)
    with mcfg.use_gemm("gluon"):
        assert mcfg.main_loop(cuda, 64, 64, 64, tl.int32) == "tl"


def test_gluon_pools_hold_gluon_tiles():
    for zero_points in (False, True):
        pool = [mcfg.config_dict(c) for c in mcfg.gluon_configs_for(100, 40, 48, zero_points)]
        assert pool and all(mcfg.gluon_tile(c) for c in pool)
        assert all(c["BLOCK_SIZE_N"] <= 64 and c["BLOCK_SIZE_K"] in (32, 64) for c in pool)
    zero_point_pool = mcfg.gluon_configs_for(4096, 4096, 4096, zero_points=True)
    assert all(c.kwargs["BLOCK_SIZE_M"] * c.kwargs["BLOCK_SIZE_N"] <= 64 * 32 * c.num_warps for c in zero_point_pool)
    assert len(zero_point_pool) < len(mcfg.GLUON_CONFIGS)


def test_gluon_autotuner_sets_descriptor_blocks_per_config():
    """The autotuner launches every config with the same TMA descriptors: each config's
    pre_hook gives them its tiles; the zero-point prune keeps the tiles whose epilogue fits."""
    if not mcfg.gluon_available():
        pytest.skip("this Triton has no Gluon")
    from qtriton.ops import matmul_gluon

    kernel = matmul_gluon.autotuned_kernel()
    assert [(c.kwargs["BLOCK_SIZE_M"], c.kwargs["BLOCK_SIZE_N"], c.kwargs["STAGES"], c.num_warps) for c in kernel.configs] \
        == [(c.kwargs["BLOCK_SIZE_M"], c.kwargs["BLOCK_SIZE_N"], c.num_stages, c.num_warps) for c in mcfg.GLUON_CONFIGS]
    a_q = torch.zeros((100, 272), dtype=torch.int8)
    b_q = torch.zeros((257, 272), dtype=torch.int8).t()
    a_desc, b_desc = matmul_gluon._descriptors(a_q, b_q, 128, 256, 128)
    for config in kernel.configs:
        config.pre_hook({"a_desc": a_desc, "b_desc": b_desc, **config.all_kwargs()})
        assert a_desc.block_shape == [config.kwargs["BLOCK_SIZE_M"], config.kwargs["BLOCK_SIZE_K"]]
        assert b_desc.block_shape == [config.kwargs["BLOCK_SIZE_N"], config.kwargs["BLOCK_SIZE_K"]]
    shape = {"M_BUCKET": 4096, "N": 4096, "K": 4096}
    assert kernel.early_config_prune(kernel.configs, shape, HAS_A_ZP=False, HAS_B_ZP=False) == kernel.configs
    kept = kernel.early_config_prune(kernel.configs, shape, HAS_A_ZP=True, HAS_B_ZP=False)
    assert 0 < len(kept) < len(kernel.configs) and all(c.pre_hook is not None for c in kept)
    assert all(c.kwargs["BLOCK_SIZE_M"] * c.kwargs["BLOCK_SIZE_N"] <= 64 * 32 * c.num_warps for c in kept)
    # Clamped to the problem, the pre_hook and STAGES kept: what tests/test_static.py compiles.
    small = kernel.early_config_prune(kernel.configs, {"M_BUCKET": 128, "N": 40, "K": 48})
    assert [(c.kwargs["BLOCK_SIZE_N"], c.kwargs["BLOCK_SIZE_K"], c.kwargs["STAGES"]) for c in small] == [
        (c.kwargs["BLOCK_SIZE_N"], c.kwargs["BLOCK_SIZE_K"], c.num_stages) for c in mcfg.gluon_configs_for(128, 40, 48)]
    assert all(c.pre_hook is not None for c in small)
    assert matmul_gluon.tma_ready(a_q) and matmul_gluon.tma_ready(b_q.t())
    assert not matmul_gluon.tma_ready(a_q[:, 1:])  # a base 1 byte off the 16-byte alignment
    assert not matmul_gluon.tma_ready(torch.zeros((4, 40), dtype=torch.int8))  # 40-byte rows
    assert not matmul_gluon.tma_ready(b_q)  # not K-major
    assert not matmul_gluon.tma_ready(torch.zeros((4, 64), dtype=torch.uint8))


def test_gluon_tile_refuses_what_cannot_fit(monkeypatch):
    """A forced config whose ring passes sm_90a's shared memory, whose accumulator passes a
    thread's registers (half of them with a zero-point epilogue) or whose K step passes one
    swizzle row is no Gluon tile: the launch runs it in the tl.dot loop instead of failing."""
    ok = {"BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 256, "BLOCK_SIZE_K": 128, "num_warps": 8, "num_stages": 4}
    assert mcfg.gluon_tile(ok)
    assert not mcfg.gluon_tile({**ok, "num_stages": 5})  # 5 x 48 KB of ring > 227 KB
    assert not mcfg.gluon_tile({**ok, "num_warps": 4})  # 256 int32 accumulators a thread
    assert not mcfg.gluon_tile(ok, zero_points=True)  # 128 a thread: its zero-point epilogue spills
    assert not mcfg.gluon_tile({**ok, "BLOCK_SIZE_K": 256, "num_stages": 2})
    assert not mcfg.gluon_tile({**ok, "BLOCK_SIZE_N": 512, "num_stages": 2})  # a TMA box is <= 256
    assert all(mcfg.gluon_tile(mcfg.config_dict(c)) for c in mcfg.GLUON_CONFIGS)
    assert all(mcfg.gluon_tile(mcfg.config_dict(c), zero_points=True)
               for c in mcfg.gluon_configs_for(4096, 4096, 4096, zero_points=True))
    monkeypatch.setattr(mcfg, "sm90", lambda device: True)
    monkeypatch.setattr(mcfg, "gluon_available", lambda: True)
    cuda = torch.device("cuda")
    with mcfg.use_gemm("gluon"):
        with mcfg.use_config(ok):
            assert mcfg.main_loop(cuda, 4096, 4096, 4096, tl.int32) == "gluon"
            assert mcfg.main_loop(cuda, 4096, 4096, 4096, tl.int32, zero_points=True) == "tl"
        with mcfg.use_config({**ok, "num_stages": 5}):
            assert mcfg.main_loop(cuda, 4096, 4096, 4096, tl.int32) == "tl"


def test_tma_ready_refuses_rows_a_descriptor_cannot_describe():
    """A zero row stride (an expanded row) or rows that overlap (a stride below the row's
    length) cannot be a TMA descriptor's; the launcher copies them instead."""
    x = torch.zeros((64, 64), dtype=torch.int8)
    assert mcfg.tma_ready(x) and mcfg.tma_ready(x[:, :32]) and mcfg.tma_ready(x[16:])
    assert not mcfg.tma_ready(x[:1].expand(64, 64))  # stride (0, 1)
    assert not mcfg.tma_ready(x.view(-1).as_strided((64, 64), (16, 1)))  # rows 16 apart, 64 long
    assert mcfg.tma_ready(x.view(-1).as_strided((64, 16), (16, 1)))  # 16 apart, 16 long: fine
    assert not mcfg.tma_ready(x.t())


def test_gluon_unavailable_when_triton_lacks_a_name(monkeypatch):
    """A Triton whose Gluon has neither TMA load name (AttributeError while the kernel module
    imports) or no host TensorDescriptor (ImportError) falls back to the tl.dot loop."""
    if not mcfg.gluon_available():
        pytest.skip("this Triton has no Gluon")
    import sys

    from triton.experimental.gluon.language.nvidia import hopper
    from triton.experimental.gluon.nvidia import hopper as host

    import qtriton.kernels

    def forget_the_kernel_module():  # so that the next import runs it again
        monkeypatch.delitem(sys.modules, "qtriton.kernels.matmul_gluon")
        monkeypatch.delattr(qtriton.kernels, "matmul_gluon")

    try:
        forget_the_kernel_module()
        monkeypatch.setattr(hopper, "tma", object())  # neither async_load nor async_copy_global_to_shared
        mcfg._gluon_kernels.cache_clear()
        assert not mcfg.gluon_available()
        monkeypatch.undo()
        forget_the_kernel_module()
        monkeypatch.delattr(host, "TensorDescriptor")
        mcfg._gluon_kernels.cache_clear()
        assert not mcfg.gluon_available()
        monkeypatch.setattr(mcfg, "sm90", lambda device: True)
        with mcfg.use_gemm("gluon"):
            assert mcfg.main_loop(torch.device("cuda"), 64, 64, 64, tl.int32) == "tl"
    finally:
        monkeypatch.undo()
        mcfg._gluon_kernels.cache_clear()
    assert mcfg.gluon_available()


@pytest.mark.interpreter
def test_asking_for_gluon_off_hopper_runs_the_tl_loop(rng, device, monkeypatch):
    """QTRITON_GEMM=gluon where the Gluon loop cannot run (the interpreter, another card):
    the tl.dot loop, the same answer."""
    if mcfg.sm90(torch.device(device)):
        pytest.skip("an sm_90 card runs the Gluon loop here (the tests above)")
    monkeypatch.setenv("QTRITON_GEMM", "gluon")
    M, N, K = 33, 40, 64
    a_q = codes(rng, (M, K), "int8", device)
    b_q = operand_b(rng, K, N, "int8", "nk", device)
    config = {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 64}
    assert_exact(mops.int8_matmul(a_q, b_q, config=config), exact_product(a_q, b_q))
