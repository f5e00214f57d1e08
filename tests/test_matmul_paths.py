"""The int8 GEMM's newer paths against the oracle: the zero-point correction as a rank-1
epilogue (precomputed or per-call row / column sums, int32 / int64 / float64), split-K
for every split count on ragged K, and the bf16 output rounded to nearest even.

Exactness through the float output: with unit scales and float32 output, the kernel's
result is float32(C) for the exact integer C (an integer epilogue converts once, with
round to nearest), which is what the oracle's int64 C rounds to, so `assert_exact`
checks the integer product bit for bit even past 2**24.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import triton.language as tl

from qtriton.ops import configs as mcfg
from qtriton.ops import matmul as mops
from qtriton.testing import assert_close, assert_exact, to_numpy

from tests.gemm_cases import codes, exact_product, operand_b, zero_point

SMALL_TILES = {"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 32}


# (M, N, K), A dtype, B dtype, B layout, a_zp kind, b_zp kind
ZERO_POINT_CASES = [
    ((7, 33, 100), "uint8", "int8", "nk", "vec", None),  # Int8Linear asymmetric: int64 epilogue
    ((7, 33, 100), "uint8", "int8", "kn", "int", None),  # int32 epilogue
    ((33, 7, 65), "int8", "int8", "nk", None, "vec"),
    ((33, 7, 65), "int8", "uint8", "kn", "0d", "1"),
    ((17, 40, 33), "uint8", "uint8", "nk", "vec16", "vec"),
    ((17, 40, 33), "int8", "int8", "kn", "1", "int"),
    ((5, 19, 129), "uint8", "int8", "kn", "limit_vec", "vec"),
    ((5, 19, 129), "int8", "uint8", "nk", "limit", "limit_vec"),
    ((1, 50, 257), "uint8", "uint8", "kn", "int", "int"),
]


@pytest.mark.interpreter
@pytest.mark.parametrize("precomputed", [False, True])
@pytest.mark.parametrize("shape,a_dtype,b_dtype,layout,a_zp_kind,b_zp_kind", ZERO_POINT_CASES)
def test_zero_point_forms_are_exact(shape, a_dtype, b_dtype, layout, a_zp_kind, b_zp_kind, precomputed, rng, device):
    M, N, K = shape
    a_q = codes(rng, (M, K), a_dtype, device)
    b_q = operand_b(rng, K, N, b_dtype, layout, device)
    a_zp = zero_point(rng, a_zp_kind, M, device)
    b_zp = zero_point(rng, b_zp_kind, N, device)
    sums = {}
    if precomputed:
        sums = {"a_rowsum": a_q.sum(1, dtype=torch.int32), "b_colsum": b_q.sum(0, dtype=torch.int32)}
    before = [v.clone() for v in (a_q, b_q, *sums.values())]
    out = mops.scaled_matmul(a_q, b_q, 1.0, 1.0, a_zp, b_zp, config=SMALL_TILES, **sums)
    assert_exact(out, exact_product(a_q, b_q, a_zp, b_zp).astype(np.float32))
    assert all(torch.equal(v, w) for v, w in zip(before, (a_q, b_q, *sums.values()), strict=True))


@pytest.mark.interpreter
def test_precomputed_column_sums_are_used(rng, device):
    """The kernel reads b_colsum rather than recomputing it: wrong sums give a wrong result
    by exactly a_zp * (the sums' error), which also shows the correction's algebra."""
    M, N, K = 5, 33, 65
    a_q = codes(rng, (M, K), "uint8", device)
    b_q = operand_b(rng, K, N, "int8", "nk", device)
    a_zp = torch.from_numpy(rng.integers(0, 256, M).astype(np.int32)).to(device)
    colsum = b_q.sum(0, dtype=torch.int32)
    error = torch.zeros_like(colsum)
    error[3] = 1
    out = mops.scaled_matmul(a_q, b_q, 1.0, 1.0, a_zp, b_colsum=colsum + error, config=SMALL_TILES)
    expected = exact_product(a_q, b_q, a_zp, None) - np.outer(to_numpy(a_zp) - 128, to_numpy(error))
    assert_exact(out, expected.astype(np.float32))


def test_correction_dtype_follows_the_bound():
    i8, u8 = torch.int8, torch.uint8
    vec = torch.zeros(3, dtype=torch.int32)
    # Plain uint8 shift or small Python zero points: int32.
    assert mops.correction_dtype(4096, u8, i8, None, 0, None, 0) == tl.int32
    assert mops.correction_dtype(4096, u8, i8, None, 255, None, 0) == tl.int32
    assert mops.correction_dtype(2**16, u8, u8, None, 7, None, 9) == tl.int64  # 2**16 * 255 * 255
    # A tensor zero point is only known to |zp| <= 2**24: int64 (Int8Linear's asymmetric
    # activations: K * (255 + 2**24) * 128 < 2**48).
    assert mops.correction_dtype(mops.MAX_K, u8, i8, vec, 0, None, 0) == tl.int64
    assert mops.correction_dtype(mops.MAX_K, i8, i8, vec, 0, vec, 0) == tl.float64
    assert mops.correction_dtype(2**14, i8, i8, vec, 0, vec, 0) == tl.int64  # 2**14 * (2**24 + 128)**2 < 2**63
    assert mops.correction_dtype(40000, u8, u8, None, 2**24, None, -(2**24)) == tl.float64


@pytest.mark.interpreter
def test_int64_correction_at_its_bound(device):
    """K = 2**14, both zero points tensors at +-2**24 (int64 chosen): |C| = K * 2**48 =
    2**62, past float64's exact range but exact in int64."""
    K, N = 2**14, 16
    a_q = torch.full((1, K), 127, dtype=torch.int8, device=device)
    b_q = torch.full((N, K), -128, dtype=torch.int8, device=device).t()
    a_zp = torch.full((1,), -(2**24), dtype=torch.int32, device=device)
    b_zp = torch.full((N,), 2**24, dtype=torch.int32, device=device)
    assert mops.correction_dtype(K, a_q.dtype, b_q.dtype, a_zp, 0, b_zp, 0) == tl.int64
    out = mops.scaled_matmul(a_q, b_q, 1.0, 1.0, a_zp, b_zp, config={**SMALL_TILES, "BLOCK_SIZE_K": 2048})
    expected = exact_product(a_q, b_q, a_zp, b_zp)
    assert abs(int(expected[0, 0])) > 2**53
    assert_exact(out, expected.astype(np.float32))


# --------------------------------------------------------------------------------- split-K
SPLIT_CASES = [
    # (M, N, K), A dtype, B dtype, layout, a_zp, b_zp, scaled, bias, out dtype
    ((1, 40, 257), "int8", "int8", "nk", None, None, False, False, torch.int32),
    ((3, 33, 300), "uint8", "int8", "kn", None, None, False, False, torch.int32),
    ((16, 50, 257), "uint8", "int8", "nk", "vec", None, True, True, torch.bfloat16),
    ((5, 17, 290), "int8", "uint8", "kn", "int", "vec", True, False, torch.float32),
    ((2, 64, 200), "uint8", "uint8", "nk", "0d", "int", True, True, torch.float16),
]


@pytest.mark.interpreter
@pytest.mark.parametrize("split_k", [1, 2, 3, 4, 7, 16])
@pytest.mark.parametrize("case", SPLIT_CASES, ids=lambda c: "x".join(map(str, c[0])) + f"-{c[1]}-{c[2]}-{c[3]}")
def test_split_k_every_count(case, split_k, rng, device):
    """Every split count on ragged K (K tiles of 32: 7 to 10, so 16 leaves empty slices),
    both layouts, all epilogue forms: int32 exact, scaled with zero points and bias."""
    (M, N, K), a_dtype, b_dtype, layout, a_zp_kind, b_zp_kind, scaled, with_bias, out_dtype = case
    a_q = codes(rng, (M, K), a_dtype, device)
    b_q = operand_b(rng, K, N, b_dtype, layout, device)
    config = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 16, "BLOCK_SIZE_K": 32, "SPLIT_K": split_k}
    if not scaled:
        assert_exact(mops.int8_matmul(a_q, b_q, config=config), exact_product(a_q, b_q))
        return
    a_zp = zero_point(rng, a_zp_kind, M, device)
    b_zp = zero_point(rng, b_zp_kind, N, device)
    exact = exact_product(a_q, b_q, a_zp, b_zp)
    a_scale = torch.from_numpy(rng.uniform(0.5, 1.5, M).astype(np.float32)).to(device)
    b_scale = torch.from_numpy((rng.uniform(0.5, 1.5, N) * 64 / max(np.abs(exact).max(), 1)).astype(np.float32))
    b_scale = b_scale.to(device)
    bias = torch.from_numpy(rng.normal(0, 4, N).astype(np.float32)).to(device) if with_bias else None
    out = mops.scaled_matmul(a_q, b_q, a_scale, b_scale, a_zp, b_zp, bias, out_dtype, config=config)
    # The float32 result, computed as the kernel does: float32(C) * a_scale * b_scale + bias.
    f32 = exact.astype(np.float32) * to_numpy(a_scale)[:, None] * to_numpy(b_scale)[None, :]
    if with_bias:
        f32 = f32 + to_numpy(bias)[None, :]
    expected = torch.from_numpy(f32.astype(np.float32)).to(out_dtype)
    assert_exact(out.float().cpu(), expected.float())


def test_split_rule():
    decode = mcfg.config_dict(mcfg.configs_for(1, 4096, 4096)[0])
    cpu = torch.device("cpu")
    tiles = 4096 // decode["BLOCK_SIZE_N"]
    split = mcfg.split_k_for(1, 4096, 4096, decode, cpu)
    assert split > 1 and tiles * split <= 2 * mcfg.DEFAULT_SM_COUNT < tiles * split * 2
    assert mcfg.split_k_for(1, 1024, 4096, decode, cpu) == 8  # 16 K tiles: slices keep 2 each
    assert mcfg.split_k_for(1, 1024, 8192, decode, cpu) == mcfg.MAX_SPLIT_K  # 16 tiles, room for 16 slices
    assert mcfg.split_k_for(1, 4096, 512, decode, cpu) == 1  # 2 K tiles: nothing to split
    large = mcfg.config_dict(mcfg.configs_for(4096, 4096, 4096)[0])
    assert mcfg.split_k_for(4096, 4096, 4096, large, cpu) == 1
    with pytest.raises(ValueError, match="SPLIT_K"):
        mcfg.config_dict({**decode, "SPLIT_K": 0})


@pytest.mark.interpreter
def test_split_k_chosen_by_rule_is_exact(rng, device):
    """No SPLIT_K forced: the rule splits this thin problem (one tile, 8 K tiles)."""
    M, N, K = 4, 16, 1000
    config = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 16, "BLOCK_SIZE_K": 128}
    assert mcfg.split_k_for(M, N, K, mcfg.config_dict(config), torch.device(device)) == 4
    a_q = codes(rng, (M, K), "uint8", device)
    b_q = operand_b(rng, K, N, "int8", "nk", device)
    a_zp = torch.from_numpy(rng.integers(0, 256, M).astype(np.int32)).to(device)
    out = mops.scaled_matmul(a_q, b_q, 1.0, 1.0, a_zp, config=config)
    assert_exact(out, exact_product(a_q, b_q, a_zp, None).astype(np.float32))


# ------------------------------------------------------------------------------ bf16 out
@pytest.mark.interpreter
@pytest.mark.parametrize("split_k", [1, 2])
def test_bf16_output_rounds_to_nearest_even(split_k, rng, device):
    """Integer results in 256..65535 are exact in float32 and mostly not in bf16 (8 bits):
    the kernel must round them to nearest even, as a GPU's cvt.rn.bf16 does, not truncate
    (the interpreter's plain cast does)."""
    M, N, K = 16, 64, 256
    a_q = codes(rng, (M, K), "int8", device)
    b_q = operand_b(rng, K, N, "int8", "nk", device)
    config = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 64, "SPLIT_K": split_k}
    out = mops.scaled_matmul(a_q, b_q, 1.0, 1.0, out_dtype=torch.bfloat16, config=config)
    exact = exact_product(a_q, b_q)
    assert np.abs(exact).max() < 2**24
    expected = torch.from_numpy(exact.astype(np.float32)).to(torch.bfloat16)  # torch rounds RNE
    truncated = (torch.from_numpy(exact.astype(np.float32)).view(torch.int32) & ~0xFFFF).view(torch.float32)
    assert not torch.equal(expected.float(), truncated), "the data must tell rounding from truncation"
    assert_exact(out.float().cpu(), expected.float())


def test_sums_arguments_are_checked(device):
    a_q = torch.zeros((4, 8), dtype=torch.uint8, device=device)
    b_q = torch.zeros((8, 5), dtype=torch.int8, device=device)
    with pytest.raises(TypeError, match="b_colsum must be an int32 tensor"):
        mops.scaled_matmul(a_q, b_q, 1.0, 1.0, b_colsum=torch.zeros(5, device=device))
    with pytest.raises(ValueError, match=r"a_rowsum must have shape \(M,\) = \(4,\)"):
        mops.scaled_matmul(a_q, b_q, 1.0, 1.0, a_rowsum=torch.zeros(5, dtype=torch.int32, device=device))


# ------------------------------------------------------------------ Int8Linear's col sums
@pytest.mark.interpreter
def test_int8_linear_keeps_weight_column_sums(rng, device, tmp_path):
    """Asymmetric Int8Linear: the weight's column sums are a buffer made once (from_float,
    load_state_dict), not saved in checkpoints, and the GEMM uses them."""
    from qtriton.backend import use_backend
    from qtriton.model.nn import Int8Linear

    linear = torch.nn.Linear(40, 24).to(device)
    layer = Int8Linear.from_float(linear, "w8a8-asym")
    assert torch.equal(layer.weight_colsum, layer.weight.sum(1, dtype=torch.int32))
    assert "weight_colsum" not in layer.state_dict()

    loaded = Int8Linear(40, 24, scheme="w8a8-asym", device=device)
    loaded.load_state_dict(layer.state_dict())
    assert torch.equal(loaded.weight_colsum, layer.weight_colsum)
    restored = pickle.loads(pickle.dumps(loaded))  # the load hook must not stop torch.save(model)
    assert torch.equal(restored.weight_colsum, layer.weight_colsum)

    x = torch.from_numpy(rng.normal(0, 1, (5, 40)).astype(np.float32)).to(device)
    with use_backend("triton"), mops.use_config(SMALL_TILES):
        right = loaded(x)
        loaded.weight_colsum[0] += 1  # a stale buffer must show: proof the GEMM reads it
        wrong = loaded(x)
    assert not torch.equal(right[:, 0], wrong[:, 0]) and torch.equal(right[:, 1:], wrong[:, 1:])
    with use_backend("torch"):
        expected = loaded.to("cpu")(x.cpu())  # the torch backend's float ops, for reference
    assert_close(right, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_zero_point_pools_drop_spilling_tiles():
    """A zero-point epilogue spills at 128 accumulator elements per thread (sm_90a compile):
    its pools keep the smaller tiles only, every bucket keeps some, plain int8 keeps all."""
    for M in (1, 64, 4096):
        plain = mcfg.configs_for(M, 4096, 4096)
        pruned = mcfg.configs_for(M, 4096, 4096, zero_points=True)
        kept = {(str(c.kwargs), c.num_warps, c.num_stages) for c in plain}
        assert pruned and all((str(c.kwargs), c.num_warps, c.num_stages) in kept for c in pruned)
        for c in pruned:
            per_thread = c.kwargs["BLOCK_SIZE_M"] * c.kwargs["BLOCK_SIZE_N"] // (32 * c.num_warps)
            assert per_thread <= mcfg.ZERO_POINT_MAX_ELEMENTS_PER_THREAD
    assert len(mcfg.configs_for(4096, 4096, 4096, zero_points=True)) < len(mcfg.configs_for(4096, 4096, 4096))
    # The autotuner's pruning hook sees the flags as keyword arguments of the launch.
    named = {"M_BUCKET": 4096, "N": 4096, "K": 4096}
    widths = {c.kwargs["BLOCK_SIZE_N"] * c.kwargs["BLOCK_SIZE_M"] for c in mcfg.autotuned_kernel().early_config_prune([], named, HAS_A_ZP=True)}
    assert max(widths) <= 128 * 128


# --------------------------------------------------------------------------- K-major B
@pytest.mark.interpreter
@pytest.mark.parametrize("K,N", [(1, 7), (33, 100), (130, 65)])
def test_k_major_copy(K, N, rng, device):
    """The transpose copy: a row-major (K, N) and a strided view, ragged edges."""
    b_q = codes(rng, (K, 2 * N), "uint8", device)[:, ::2]
    copy = mops._operand_copy(b_q, k_major=True, shift=False)
    assert copy.stride(0) == 1 and torch.equal(copy, b_q)  # also N = 7 < 16, K = 1
@pytest.mark.interpreter
@pytest.mark.parametrize("b_dtype", ["int8", "uint8"])
def test_row_major_b_at_large_m_goes_k_major(b_dtype, rng, device, monkeypatch):
    """From KMAJOR_MIN_M on, a row-major B is copied K-major first (a uint8 one shifted to
    int8 in the same pass); the result is the same exact product (zero points included)
    and the copies happen (spied on)."""
    M, N, K = mcfg.KMAJOR_MIN_M + 3, 40, 70
    a_q = codes(rng, (M, K), "uint8", device)
    b_q = codes(rng, (K, N), b_dtype, device)
    a_zp = torch.from_numpy(rng.integers(0, 256, M).astype(np.int32)).to(device)
    copies = []
    original = mops._operand_copy
    monkeypatch.setattr(mops, "_operand_copy", lambda x, k_major, shift: copies.append(
        (tuple(x.shape), k_major, shift)) or original(x, k_major, shift))
    config = {"BLOCK_SIZE_M": 256, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128}
    out = mops.scaled_matmul(a_q, b_q, 1.0, 1.0, a_zp, config=config)
    b_shift = b_dtype == "uint8"
    assert copies == [((M, K), False, True), ((K, N), True, b_shift)]
    assert_exact(out, exact_product(a_q, b_q, a_zp, None).astype(np.float32))
    assert_exact(mops.int8_matmul(a_q, b_q, config=config), exact_product(a_q, b_q))
    copies.clear()
    mops.int8_matmul(a_q[:16], b_q, config=config)  # decode M: nothing copied
    assert copies == []
    mops.int8_matmul(a_q[:, :K].to(torch.int8), b_q.t().contiguous().t(), config=config)  # K-major int8 B
    assert copies == ([((K, N), True, True)] if b_shift else [])


@pytest.mark.interpreter
@pytest.mark.parametrize("M", [mcfg.SHIFT_A_MIN_M - 1, mcfg.SHIFT_A_MIN_M])
@pytest.mark.parametrize("precomputed", [False, True])
def test_uint8_a_shifted_before_the_gemm(M, precomputed, rng, device, monkeypatch):
    """uint8 A is shifted to int8 in one pass from SHIFT_A_MIN_M on (in the K loop below);
    both give the exact product, with computed or caller-given row sums (b_zp)."""
    N, K = 33, 100
    a_q = codes(rng, (M, K), "uint8", device)
    b_q = operand_b(rng, K, N, "int8", "nk", device)
    a_zp = torch.from_numpy(rng.integers(0, 256, M).astype(np.int32)).to(device)
    b_zp = torch.from_numpy(rng.integers(-5, 6, N).astype(np.int32)).to(device)
    shifted = []
    original = mops._operand_copy
    monkeypatch.setattr(mops, "_operand_copy", lambda x, k_major, shift: shifted.append(shift) or original(
        x, k_major, shift))
    sums = {"a_rowsum": a_q.sum(1, dtype=torch.int32)} if precomputed else {}
    before = a_q.clone()
    out = mops.scaled_matmul(a_q, b_q, 1.0, 1.0, a_zp, b_zp, config=SMALL_TILES, **sums)
    assert shifted == ([True] if M >= mcfg.SHIFT_A_MIN_M else [])
    assert_exact(out, exact_product(a_q, b_q, a_zp, b_zp).astype(np.float32))
    assert torch.equal(a_q, before)


@pytest.mark.interpreter
@pytest.mark.parametrize("k_major,shift", [(True, False), (False, True), (True, True)])
def test_operand_copy(k_major, shift, rng, device):
    x = codes(rng, (70, 2 * 33), "uint8", device)[:, ::2]
    y = mops._operand_copy(x, k_major, shift)
    expected = (x.to(torch.int16) - 128).to(torch.int8) if shift else x
    assert torch.equal(y, expected) and (y.stride(0) == 1) == k_major


def test_int8_linear_column_sums_survive_save_and_load(tmp_path):
    """qtriton.load_quantized (safetensors, the model's load_state_dict) remakes the
    column sums of every Int8Linear, whose checkpoint does not hold them."""
    from qtriton import load_quantized, quantize_model, save_quantized
    from qtriton.model.nn import Int8Linear

    torch.manual_seed(0)
    def build():
        return torch.nn.Sequential(torch.nn.Linear(32, 24), torch.nn.ReLU(), torch.nn.Linear(24, 16))

    model = build()
    quantize_model(model, symmetric_activations=False, keep_output_head=False)
    save_quantized(model, tmp_path / "m.safetensors")
    skeleton = build()
    loaded = load_quantized(skeleton, tmp_path / "m.safetensors")
    layers = [m for m in loaded.modules() if isinstance(m, Int8Linear)]
    assert len(layers) == 2
    for layer in layers:
        assert torch.equal(layer.weight_colsum, layer.weight.sum(1, dtype=torch.int32))
        assert layer.weight_colsum.abs().sum() > 0
