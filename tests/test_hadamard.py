"""The block Hadamard rotation before per-token quantization (issue 28).

The oracle (`reference.hadamard_rotate`) against the matrix it stands for and against its
own definition spelled one butterfly at a time; then the fast paths against the oracle,
bit for bit: the Triton kernel (in the interpreter, or on the GPU with --device cuda) and
the torch ops, for every block size, ragged K, float32 / float16 / bfloat16 inputs,
symmetric and asymmetric codes, SmoothQuant's input scale, a static scale, rounding ties
and extreme values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qtriton import reference as ref
from qtriton.dispatch import backend_module
from qtriton.model.scheme import ActivationQuant
from qtriton.ops import quantize as qops
from qtriton.testing import assert_close, assert_exact

from tests.cases import ACTIVATION_MODES, activation_codes, assert_same_codes

BLOCKS = [2**n for n in range(1, 12)]  # 2 ... 2048: SmolLM2's widest (down_proj: 512, 2048-wide inputs: 2048)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# NaN / Inf test data makes NumPy (and the interpreter's NumPy arithmetic) warn; results are checked.
pytestmark = pytest.mark.filterwarnings("ignore:(invalid value|overflow) encountered:RuntimeWarning")


def _sylvester(block: int) -> np.ndarray:
    h = np.ones((1, 1))
    while len(h) < block:
        h = np.block([[h, h], [h, -h]])
    return h


def _matrix(k: int, block: int) -> np.ndarray:
    """R = diag(H, ..., H) / sqrt(block), (k, k), float64."""
    return np.kron(np.eye(k // block), _sylvester(block)) / np.sqrt(block)


def _butterflies(row: np.ndarray, block: int, stages) -> np.ndarray:
    """The docstring's definition, one float32 butterfly at a time, stages in the given order."""
    v = [np.float32(t) for t in row]
    for h in stages:
        for i in range(len(v)):
            if i % (2 * h) < h:
                v[i], v[i + h] = v[i] + v[i + h], v[i] - v[i + h]
    return np.array(v, np.float32) * ref.hadamard_scale(block)


def _wide_range(rng, shape) -> np.ndarray:
    """Values over twelve decades with random signs: every sum rounds, so order shows."""
    return (rng.choice([-1, 1], shape) * 10.0 ** rng.uniform(-6, 6, shape)).astype(np.float32)


# ----------------------------------------------------------------------------- the oracle
@pytest.mark.parametrize("block", [2, 4, 8, 64, 512])
def test_rotation_is_the_block_diagonal_hadamard_matrix(rng, block):
    """x R with R = diag(H_b, ...) / sqrt(b): exact to float64 rounding in float64, and within
    the rounding of log2(b) float32 additions in float32."""
    x = rng.standard_normal((3, 2, 3 * block)) * 10
    expected = x @ _matrix(3 * block, block)
    assert_close(ref.hadamard_rotate(x, block), expected, rtol=0, atol=1e-12 * np.abs(x).max() * block)
    y32 = ref.hadamard_rotate(x.astype(np.float32), block)
    assert y32.dtype == np.float32 and y32.shape == x.shape
    block_sums = np.abs(x.astype(np.float32).astype(np.float64)).reshape(3, 2, 3, block).sum(-1).max()
    bound = (np.log2(block) + 1) * 2.0**-24 * block_sums / np.sqrt(block)
    assert_close(y32, x.astype(np.float32).astype(np.float64) @ _matrix(3 * block, block), rtol=0, atol=bound)


@pytest.mark.parametrize("block", [2, 16, 128])
def test_rotation_is_orthogonal_and_its_own_inverse(rng, block):
    """R R = I and R orthogonal, so rotating the input and the weight alike keeps x W^T:
    (x R)(W R)^T = x W^T (weights rotate along their input axis, the last)."""
    x = rng.standard_normal((5, 4 * block))
    w = rng.standard_normal((7, 4 * block))
    twice = ref.hadamard_rotate(ref.hadamard_rotate(x, block), block)
    assert_close(twice, x, rtol=0, atol=1e-12)
    assert_close(np.linalg.norm(ref.hadamard_rotate(x, block), axis=1), np.linalg.norm(x, axis=1), rtol=1e-13)
    product = ref.hadamard_rotate(x, block) @ ref.hadamard_rotate(w, block).T
    assert_close(product, x @ w.T, rtol=0, atol=1e-11 * np.abs(x @ w.T).max())


@pytest.mark.parametrize("block", [2, 4, 8, 32])
def test_butterfly_order_is_the_one_the_docstring_defines(rng, block):
    """The vectorized oracle equals its definition butterfly by butterfly (stages 1, 2, 4,
    ...), bit for bit; the other order (stages b/2, ..., 1), the same matrix in exact
    arithmetic, rounds differently on the same data: the order is part of the spec."""
    x = _wide_range(rng, (4, 3 * block))
    y = ref.hadamard_rotate(x, block)
    forward = [2**s for s in range(block.bit_length() - 1)]
    assert_exact(y, np.stack([_butterflies(row, block, forward) for row in x]), "oracle vs its definition")
    if block >= 4:
        reverse = np.stack([_butterflies(row, block, forward[::-1]) for row in x])
        assert not np.array_equal(y, reverse)


def test_normalization_is_one_float32_constant():
    """1/sqrt(b) is a power of two, exact, for b = 4^k; otherwise the float32 of 1/sqrt(b)."""
    for n in range(1, 15):
        scale = ref.hadamard_scale(2**n)
        assert scale.dtype == np.float32 and scale == np.float32(1 / np.sqrt(2.0**n))  # (no double rounding here)
        if n % 2 == 0:
            assert scale == 2.0 ** (-n // 2)
    assert ref.hadamard_scale(2) == np.float32(0.70710677) and ref.hadamard_scale(2, np.float64) == 0.5**0.5


def test_input_scale_applies_before_the_rotation(rng):
    """quantize_activations: rows * input_scale, then the rotation (the two do not commute)."""
    x = rng.standard_normal((3, 32)).astype(np.float32)
    s = rng.uniform(0.25, 4, 32).astype(np.float32)
    got = ref.quantize_activations(x, True, s, None, 8)
    assert_exact(got[0], ref.quantize_per_token(ref.hadamard_rotate(x * s, 8), 8, True)[0], "q")
    assert not np.array_equal(got[0], ref.quantize_per_token(ref.hadamard_rotate(x, 8) * s, 8, True)[0])


# ----------------------------------------------------------------------------- fast paths
def _tensor(values: np.ndarray, device: str, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(device=device, dtype=dtype)


def _widened(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().float().numpy()  # exact for float16 / bfloat16


def _check_per_token(x: torch.Tensor, block: int, symmetric: bool, include_zero: bool = False, num_bits: int = 8,
                     **launch) -> None:
    """Kernel and torch ops vs the oracle: codes, scales, zero points; x left as it was."""
    expected = ref.quantize_per_token(_widened(x), num_bits, symmetric, include_zero, block)
    before = x.clone()
    kernel = qops.quantize_per_token(x, num_bits, symmetric, include_zero=include_zero, hadamard_block=block,
                                     **launch)
    torch_ops = backend_module("torch").quantize(x, num_bits, symmetric, "token", None, include_zero, block)
    assert_exact(x, before, "input after the call")
    for path, got in (("kernel", kernel), ("torch", torch_ops[:len(expected)])):
        assert len(got) == len(expected)
        for name, g, want in zip(("q", "scale", "zero_point"), got, expected):
            assert_exact(g, want, f"{path} {name}")


@pytest.mark.interpreter
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_block_size(device, rng, block, dtype):
    """K = b (one block) and K = 3b (ragged: the tile is padded to the next power of two, the
    padding a whole number of zero blocks); several rows per tile where K is small."""
    for k in (block, 3 * block):
        x = _tensor(rng.standard_normal((5, k)) * 3 + 0.5, device, dtype)
        _check_per_token(x, block, symmetric=True)
        _check_per_token(x, block, symmetric=False, include_zero=block % 4 == 0)


@pytest.mark.interpreter
@pytest.mark.parametrize("block", [4096, 8192, 16384])
def test_the_largest_blocks(device, rng, block):
    """Up to checks.MAX_HADAMARD_BLOCK: a row of 16384, one pass over one tile of it."""
    x = _tensor(rng.standard_normal((2, 16384)) * 3, device, torch.bfloat16)
    _check_per_token(x, block, symmetric=False)


@pytest.mark.interpreter
@pytest.mark.parametrize("block, k, limit", [(8, 96, 16), (64, 192, 16), (512, 1536, 1024), (4, 36, 8)])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_rows_longer_than_a_tile(device, rng, block, k, limit, symmetric):
    """Rows past the single-pass limit run in two passes over tiles of whole blocks (a tile
    at least one block wide, even when the limit is smaller), rotating in each."""
    values = rng.standard_normal((3, k)) * 2
    values[0, -1] = 40.0  # the extreme in the last tile
    values[1, 0] = -50.0  # and in the first
    _check_per_token(_tensor(values, device, torch.bfloat16), block, symmetric, max_single_pass_k=limit)


@pytest.mark.interpreter
@pytest.mark.parametrize("layout", ["transposed", "sliced", "3-D"])
def test_strided_inputs(device, rng, layout):
    """Rows read at a large stride are copied to row-major for the row kernel (the channel
    kernel has no rotation); sliced rows and 3-D inputs are read in place."""
    base = _tensor(rng.standard_normal((6, 64, 32)) * 3, device)
    x = {"transposed": base[0].t(), "sliced": base[1:5, 3, ::2], "3-D": base[:, ::2, :]}[layout]
    for symmetric in (True, False):
        _check_per_token(x, 16, symmetric)


@pytest.mark.interpreter
@pytest.mark.parametrize("num_bits", [2, 4, 7])
def test_narrow_codes(device, rng, num_bits):
    _check_per_token(_tensor(rng.standard_normal((4, 96)), device), 32, True, num_bits=num_bits)
    _check_per_token(_tensor(rng.standard_normal((4, 96)), device), 32, False, num_bits=num_bits)


def _tie_rows(symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """(x, its rotation y): rows whose rotation is dyadic, exact in float32, with scale 1.0
    (absmax 127; asymmetric: range 0..255) and values at .5: rint ties. Made by rotating y
    (R is its own inverse; blocks of 4 normalize by 1/2, exactly)."""
    y = np.zeros((2, 16), np.float32)
    if symmetric:
        y[:, 0] = 127.0
        y[:, 1:] = np.array([2.5, -3.5, 0.5, -0.5, 1.5, -126.5, 5.5, 6.5, -7.5, 0.0, 9.5, -10.5, 11.5, 12.5, 126.5])
    else:
        y[:, 0], y[:, 1] = 0.0, 255.0
        y[:, 2:] = np.array([0.5, 1.5, 2.5, 3.5, 100.5, 101.5, 253.5, 254.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5])
    y[1] = y[1, ::-1]  # the ties elsewhere in the blocks
    return ref.hadamard_rotate(y.astype(np.float64), 4).astype(np.float32), y


@pytest.mark.interpreter
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_rounding_ties_after_the_rotation(device, symmetric):
    """Exact ties in the rotated values round half to even in the kernel and the torch ops
    as in the oracle (and the oracle's codes are the even neighbours)."""
    x, y = _tie_rows(symmetric)
    assert_exact(ref.hadamard_rotate(x, 4), y, "rotation of the constructed rows")  # every step exact
    q, scale, *zp = ref.quantize_per_token(x, 8, symmetric, False, 4)
    assert (scale == 1.0).all() and (not zp or (zp[0] == 0).all())
    assert_exact(q, np.rint(y), "oracle codes are rint's")
    _check_per_token(_tensor(x, device), 4, symmetric)


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_extreme_values(device, rng, dtype, symmetric):
    """float16 at its largest (the rotation grows a value by up to sqrt(b): finite in float32),
    values whose butterfly sums overflow float32 (bfloat16 / float32 near 3.4e38: a NaN
    scale, codes 0, as for Inf), NaN and Inf (spread over their block: the row's scale is
    NaN), subnormals (the normalizing multiply of a subnormal rounds), an all-zero row."""
    big = float(torch.finfo(dtype).max)
    rows = rng.standard_normal((8, 256)).astype(np.float32)
    rows[0] = big  # a constant block: its first output is b * big before the normalization
    rows[1] = np.where(np.arange(256) % 2, big, -big)
    rows[2, 5] = np.nan
    rows[3, 200] = -np.inf
    rows[4] = rng.standard_normal(256) * 1e-42  # float32 subnormals (zeros in half types)
    rows[5] = 0.0
    rows[6, :2] = [big, big] if dtype == torch.float16 else [1e38, 1e38]  # 2e38 in the first stage: finite
    x = _tensor(rows, device, dtype)
    for block in (2, 256):
        _check_per_token(x, block, symmetric)
    expected = ref.quantize_per_token(_widened(x), 8, symmetric, False, 256)
    finite = dtype == torch.float16
    assert np.isfinite(expected[1][0]) == finite and np.isnan(expected[1][[2, 3]]).all()


@pytest.mark.interpreter
@pytest.mark.parametrize("backend, layout", [
    ("numpy", "rows"), ("torch", "rows"), ("torch", "transposed"),
    ("triton", "rows"), ("triton", "two_pass"), ("triton", "transposed"),
])
@pytest.mark.parametrize("mode", ACTIVATION_MODES)
@pytest.mark.parametrize("block", [16, 64])
def test_rotated_activation_codes_match_the_oracle(device, rng, backend, layout, mode, block):
    """Int8Linear's activations with the rotation (reference.quantize_activations with
    hadamard_block) on every backend: the input scale before the rotation, signed
    asymmetric codes, a static scale with codes clamped at both ends, the NaN scale of a row
    holding NaN or Inf; the input left as it was."""
    symmetric, smoothed, static = ACTIVATION_MODES[mode]
    x = rng.standard_normal((7, 192)).astype(np.float32) * 3
    x[1, 3] = np.nan
    x[2] = 0.75  # constant row: rotated to one value per block, the rest 0
    x[3, 5] = -np.inf
    x[4] *= 100.0  # past a static scale: clamped to -128 and 127
    x[5, :block] = np.linspace(-2, 2, block)  # a block holding a ramp
    input_scale = rng.uniform(0.25, 4.0, 192).astype(np.float32) if smoothed else None
    static_scale = np.float32(0.05) if static else None
    xt = _tensor(np.ascontiguousarray(x.T), device).t() if layout == "transposed" else _tensor(x, device)
    before = xt.clone()
    launch = {"max_single_pass_k": 64} if backend == "triton" and layout == "two_pass" else {}
    spec = ActivationQuant(symmetric, static_scale=static_scale, input_scale=input_scale, hadamard_block=block)
    q, scale, zero_point = activation_codes(backend, x, xt, spec, **launch)
    assert_exact(xt, before, "input after the call")
    q_ref, scale_ref, zp_ref = ref.quantize_activations(x, symmetric, input_scale, static_scale, block)
    assert q.dtype in (np.int8, torch.int8) and tuple(q.shape) == x.shape
    assert_same_codes((q, scale, zero_point), (q_ref, scale_ref, zp_ref))
    assert np.isnan(scale_ref[[1, 3]]).all() and np.isfinite(scale_ref[[0, 2, 4, 5, 6]]).all()
    if static:
        assert {-128, 127} <= set(q_ref[4].tolist())


@pytest.mark.interpreter
def test_one_kernel_launch_reads_x_once(device, rng, monkeypatch):
    """The rotation runs inside the quantize kernel: one launch, single pass, no other
    kernel and no rotated copy of x (the torch rotation is never called)."""
    launches = []
    original = qops._kernels._quantize_rows_kernel

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches.append(kwargs)
                return original[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(qops._kernels, "_quantize_rows_kernel", Spy())
    monkeypatch.setattr(backend_module("torch"), "hadamard_rotate", None)
    x = _tensor(rng.standard_normal((4, 1536)), device, torch.bfloat16)
    q, scale, _ = qops._quantize_activations(x, True, None, None, 512)
    assert len(launches) == 1 and launches[0]["HADAMARD_BLOCK"] == 512 and launches[0]["SINGLE_PASS"]
    assert launches[0]["enable_fp_fusion"] is False
    assert_exact(q, ref.quantize_activations(_widened(x), True, None, None, 512)[0], "q")


def test_torch_rotation_of_weights_matches_the_oracle(rng):
    """backend "torch" rotates weights (W -> W R): the oracle's values, float32 and float64."""
    for dtype in (np.float32, np.float64):
        w = _wide_range(rng, (6, 3, 128)).astype(dtype)
        got = backend_module("torch").hadamard_rotate(torch.from_numpy(w), 64)
        assert got.dtype == (torch.float64 if dtype == np.float64 else torch.float32)
        assert_exact(got, ref.hadamard_rotate(w, 64), f"{dtype.__name__} rotation")
    meta = backend_module("torch").hadamard_rotate(torch.empty(3, 256, device="meta", dtype=torch.bfloat16), 256)
    assert meta.shape == (3, 256) and meta.dtype == torch.float32
