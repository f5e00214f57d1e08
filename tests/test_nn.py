"""Int8Linear, quantize_model, and safetensors save / load of quantized models.

The torch-backend tests run on CPU tensors; the `interpreter` test runs the Triton kernels
(interpreter on CPU, the GPU with --device cuda)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from qtriton import reference
from qtriton.backend import use_backend
from qtriton.formats.serialization import load_quantized, save_quantized
from qtriton.model.nn import Int8Linear, QuantizationSummary, quantize_model
from qtriton.model.scheme import QuantScheme
from qtriton.testing import assert_close, assert_exact

EPS = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


def _linear(rng, in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    linear = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(rng.standard_normal((out_features, in_features), dtype=np.float32)))
        if bias:
            linear.bias.copy_(torch.from_numpy(rng.standard_normal(out_features, dtype=np.float32)))
    return linear


def _oracle(linear: nn.Linear, x: torch.Tensor, symmetric: bool) -> np.ndarray:
    """float64 W8A8 output by the NumPy oracle: what Int8Linear must compute."""
    w = linear.weight.detach().numpy()
    w_q, w_scale = reference.quantize_symmetric(w, 8, keep_axis=0)
    rows = x.detach().float().reshape(-1, linear.in_features).numpy()
    if symmetric:
        x_q, x_scale = reference.quantize_per_token(rows, 8, True)
        x_zp = 0
    else:
        x_q, x_scale, x_zp = reference.quantize_per_token(rows, 8, False, include_zero=True)
    bias = None if linear.bias is None else linear.bias.detach().numpy()
    out = reference.quantized_matmul(x_q, x_scale, w_q.T, w_scale, x_zp, 0, bias)
    return out.reshape(*x.shape[:-1], linear.out_features)


SHAPES = [  # (leading shape of x, in_features, out_features)
    ((), 7, 5),
    ((1,), 1, 3),
    ((3, 5), 33, 17),
    ((2, 1, 4), 64, 130),
    ((9,), 300, 1),
]


@pytest.mark.parametrize("leading, in_features, out_features", SHAPES)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_matches_the_oracle(rng, leading, in_features, out_features, symmetric, dtype):
    linear = _linear(rng, in_features, out_features, bias=out_features != 5)
    layer = Int8Linear.from_float(linear, QuantScheme(activation_symmetric=symmetric))
    x = torch.from_numpy(rng.standard_normal((*leading, in_features), dtype=np.float32)).to(dtype)
    x_before = x.clone()

    w_q, w_scale = reference.quantize_symmetric(linear.weight.detach().numpy(), 8, keep_axis=0)
    assert_exact(layer.weight, w_q, "weight")
    assert_exact(layer.weight_scale, w_scale, "weight_scale")

    y = layer(x)
    assert y.dtype == dtype and y.shape == (*leading, out_features)
    assert torch.equal(x, x_before)
    # The integer product is exact; what is left is the rounding of the output dtype.
    expected = _oracle(linear, x, symmetric)
    assert_close(y, expected, rtol=EPS[dtype], atol=EPS[dtype] * np.abs(expected).max(), name="y")


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_within_quantization_error_of_linear(rng, symmetric):
    """|y_int8 - y_float| <= sum_k |x| s_w / 2 + |w| dx + dx s_w / 2, with the rounding step
    dx = s_x / 2 (symmetric) or s_x (asymmetric: the zero point's rounding can cost one more
    half step at the top of the range)."""
    linear = _linear(rng, 96, 40)
    x = torch.from_numpy(rng.standard_normal((4, 6, 96), dtype=np.float32) * 3)
    layer = Int8Linear.from_float(linear, QuantScheme(activation_symmetric=symmetric))
    y = layer(x).double().reshape(-1, 40).numpy()

    rows = x.reshape(-1, 96).double().numpy()
    w = linear.weight.detach().double().numpy()
    exact = rows @ w.T + linear.bias.detach().double().numpy()
    s_w = layer.weight_scale.double().numpy()
    s_x = np.abs(rows).max(1) / 127 if symmetric else (rows.max(1) - rows.min(1)) / 255
    dx = (s_x / 2 if symmetric else s_x)[:, None]
    bound = np.abs(rows).sum(1, keepdims=True) * s_w / 2 + dx * np.abs(w).sum(1) + 96 * dx * s_w / 2
    assert (np.abs(y - exact) <= bound + 1e-5 * np.abs(exact)).all()
    assert np.abs(y - exact).max() > 0  # it is quantized


@pytest.mark.interpreter
@pytest.mark.parametrize("m, in_features, out_features", [(6, 40, 24), (1, 17, 9)])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_triton_backend_matches_the_oracle(rng, device, m, in_features, out_features, symmetric):
    linear = _linear(rng, in_features, out_features)
    x = torch.from_numpy(rng.standard_normal((m, in_features), dtype=np.float32))
    with use_backend("triton"):
        layer = Int8Linear.from_float(linear.to(device), QuantScheme(activation_symmetric=symmetric))
        y = layer(x.to(device))
    assert y.device.type == device and y.dtype == torch.float32
    expected = _oracle(linear.cpu(), x, symmetric)
    # Same integers as the oracle; the kernel's float32 epilogue rounds a few times.
    assert_close(y, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max(), name="y")


@pytest.mark.parametrize("backend", ["numpy", "torch", pytest.param("triton", marks=pytest.mark.interpreter)])
@pytest.mark.parametrize("smoothed, static", [(True, False), (False, True), (True, True)],
                         ids=["smoothed", "static", "smoothed+static"])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_calibrated_modes_match_the_oracle(rng, device, backend, smoothed, static, symmetric):
    """input_scale (SmoothQuant) and a static activation scale, as quantize_model's
    calibration sets them: the codes of reference.quantize_activations (a static scale
    clamps at -128 and 127), the weight W / input_scale, the oracle's GEMM."""
    linear = _linear(rng, 40, 24)
    x = rng.standard_normal((2, 3, 40), dtype=np.float32)
    x[..., 7] *= 30.0  # an outlier channel
    input_scale = rng.uniform(0.25, 4.0, 40).astype(np.float32) if smoothed else np.ones(40, np.float32)
    # The static scale is calibrated on the first batch; a token of the second goes past
    # its range on both sides.
    first_absmax = np.abs(x[0] * input_scale).max()
    x[1, 2, :2] = np.array([5.0, -5.0], np.float32) * first_absmax / input_scale[:2]
    static_scale = np.float32(first_absmax / 127) if static else None
    input_scale = input_scale if smoothed else None
    if static and not symmetric:  # one per-tensor scale has no zero point
        with pytest.raises(ValueError, match="static activations are symmetric"):
            QuantScheme(activations="static", activation_symmetric=False)
        return
    scheme = QuantScheme(activations="static" if static else "dynamic", activation_symmetric=symmetric,
                         smoothed=smoothed)
    layer = Int8Linear.from_float(linear, scheme,
                                  input_scale=None if input_scale is None else torch.from_numpy(input_scale),
                                  activation_scale=None if static_scale is None else float(static_scale))
    on = device if backend == "triton" else "cpu"
    x_in = torch.from_numpy(x).to(on)
    x_before = x_in.clone()
    with use_backend(backend):
        y = layer.to(on)(x_in)
    assert torch.equal(x_in, x_before)

    w = linear.weight.detach().numpy()
    w_q, w_scale = reference.quantize_symmetric(w if input_scale is None else w / input_scale, 8, keep_axis=0)
    x_q, x_scale, x_zp = reference.quantize_activations(x.reshape(6, 40), symmetric, input_scale, static_scale)
    if static:
        assert {-128, 127} <= set(x_q[5].tolist())  # the clamp is exercised
    expected = reference.quantized_matmul(x_q, x_scale, w_q.T, w_scale, 0 if x_zp is None else x_zp, 0,
                                          linear.bias.detach().numpy()).reshape(2, 3, 24)
    # The integers are exact; the torch and numpy backends round the float64 result once,
    # the kernel's float32 epilogue a few times.
    tol = 2.0**-23 if backend != "triton" else 1e-5
    assert_close(y, expected, rtol=tol, atol=tol * np.abs(expected).max(), name="y")


@pytest.mark.interpreter
@pytest.mark.parametrize("mode", ["sym", "asym", "smoothed static"])
def test_cuda_forward_never_syncs_and_replays_in_a_cuda_graph(rng, device, mode):
    """Serving runs decode steps as CUDA graphs: a forward must not wait for the GPU (a
    host sync stalls the stream, and graph capture refuses one) and must replay to the
    same output as an eager call."""
    if device != "cuda":
        pytest.skip("CUDA only: the interpreter has no stream to wait for")
    options = {
        "sym": {},
        "asym": {"scheme": "w8a8-asym"},
        "smoothed static": {"scheme": "w8a8-static+smooth", "input_scale": torch.full((256,), 0.5), "activation_scale": 0.05},
    }[mode]
    layer = Int8Linear.from_float(_linear(rng, 256, 512).cuda(), **options)
    x = torch.from_numpy(rng.standard_normal((4, 256), dtype=np.float32)).to("cuda", torch.bfloat16)
    expected = layer(x)  # compiles and autotunes (which syncs) outside the checked calls
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        again = layer(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(again, expected)

    static_x = x.clone()
    side = torch.cuda.Stream()  # warm up on a side stream before capture, as torch.cuda.graph asks
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        layer(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = layer(static_x)
    static_x.copy_(x * 2)
    graph.replay()
    assert torch.equal(static_out, layer(x * 2))


def test_buffers_state_dict_and_repr(rng):
    layer = Int8Linear.from_float(_linear(rng, 48, 20))
    assert list(layer.parameters()) == []
    state = layer.state_dict()
    assert list(state) == ["weight", "weight_scale", "bias"]
    assert state["weight"].dtype == torch.int8 and state["weight"].shape == (20, 48) and state["weight"].is_contiguous()
    assert state["weight_scale"].dtype == torch.float32 and state["bias"].dtype == torch.float32

    fresh = Int8Linear(48, 20)
    fresh.load_state_dict(state)
    x = torch.from_numpy(rng.standard_normal((5, 48), dtype=np.float32))
    assert torch.equal(fresh(x), layer(x))

    no_bias = Int8Linear.from_float(_linear(rng, 48, 20, bias=False), "w8a8-asym")
    assert "bias" not in no_bias.state_dict()
    assert repr(no_bias) == (
        "Int8Linear(in_features=48, out_features=20, bias=False, "
        "weight=int8 per-channel, activations=int8 per-token asymmetric)"
    )


def test_inference_mode_and_empty_input(rng):
    layer = Int8Linear.from_float(_linear(rng, 32, 16))
    x = torch.from_numpy(rng.standard_normal((3, 32), dtype=np.float32))
    with torch.inference_mode():
        y = layer(x)
    assert torch.equal(y, layer(x))
    assert layer(torch.zeros(0, 4, 32)).shape == (0, 4, 16)


@pytest.mark.parametrize("grad_mode", [torch.no_grad, torch.inference_mode])
def test_torch_compile(rng, grad_mode):
    layer = Int8Linear.from_float(_linear(rng, 64, 24))
    x = torch.from_numpy(rng.standard_normal((2, 3, 64), dtype=np.float32))
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager")  # inductor's C++ build is too slow for CI
    with grad_mode():
        y = compiled(x)
    assert torch.equal(y, layer(x))


def test_bad_input(rng, monkeypatch):
    linear = _linear(rng, 16, 8)
    with torch.no_grad():
        linear.weight[3, 4] = float("inf")
    with pytest.raises(ValueError, match=r"proj\.weight contains NaN or Inf"):
        Int8Linear.from_float(linear, name="proj")
    with pytest.raises(TypeError, match="nn.Linear"):
        Int8Linear.from_float(nn.Conv1d(3, 3, 1))

    layer = Int8Linear.from_float(_linear(rng, 16, 8))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 16\)"):
        layer(torch.ones(2, 15))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        layer(torch.ones(2, 16, dtype=torch.float64))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        layer(torch.ones(2, 16, dtype=torch.int32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer(torch.full((2, 16), float("nan")))
    with pytest.raises(ValueError, match="meta"):
        layer(torch.ones(2, 16, device="meta"))
    with pytest.raises(ValueError, match="meta"):
        Int8Linear.from_float(nn.Linear(16, 8, device="meta"))

    # The triton backend forced on CPU tensors without the interpreter: an error, not torch ops.
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with use_backend("triton"):
        with pytest.raises(ValueError, match="TRITON_INTERPRET"):
            layer(torch.ones(2, 16))
        with pytest.raises(ValueError, match="fc.*TRITON_INTERPRET"):
            quantize_model(_named(fc=nn.Linear(16, 16)))


def _named(**modules: nn.Module) -> nn.Module:
    model = nn.Module()
    for name, module in modules.items():
        model.add_module(name, module)
    return model


# ------------------------------------------------------------------------ quantize_model
class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(32, 64)
        self.down = nn.Linear(64, 32, bias=False)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)

    def forward(self, x):
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.down(torch.relu(self.up(x)))


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_Block(), _Block()])
        self.gate = nn.Linear(32, 4)
        self.lm_head = nn.Linear(32, 50)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.lm_head(x) + self.gate(x).sum(-1, keepdim=True)


def test_quantize_model_replaces_and_explains(rng):
    torch.manual_seed(0)
    model = _Model()
    x = torch.from_numpy(rng.standard_normal((2, 5, 32), dtype=np.float32))
    expected = model(x)

    summary = quantize_model(model)
    assert isinstance(summary, QuantizationSummary)
    assert summary.replaced == ["blocks.0.up", "blocks.0.down", "blocks.1.up", "blocks.1.down"]
    reasons = dict(summary.skipped)
    assert set(reasons) == {"blocks.0.attn.out_proj", "blocks.1.attn.out_proj", "gate", "lm_head"}
    assert "MultiheadAttention" in reasons["blocks.0.attn.out_proj"]
    assert "too small" in reasons["gate"] and "lm_head" not in reasons["gate"]
    assert "output head" in reasons["lm_head"]
    assert isinstance(model.blocks[1].up, Int8Linear) and type(model.lm_head) is nn.Linear
    assert summary.bytes_before == 2 * (32 * 64 * 4 + 64 * 4 + 64 * 32 * 4)
    assert summary.bytes_after == 2 * (32 * 64 + 64 * 4 + 64 * 4 + 64 * 32 + 32 * 4)
    text = str(summary)
    assert "4 of 8 nn.Linear layers" in text and "kept float: lm_head" in text

    y = model(x)
    assert (y - expected).abs().max() < 0.05 * expected.abs().max()


def test_quantize_model_filters(rng):
    model = _Model()
    summary = quantize_model(model, include="blocks.*", exclude=["*.down"], predicate=lambda name, _: "1" not in name)
    assert summary.replaced == ["blocks.0.up"]
    reasons = dict(summary.skipped)
    assert reasons["blocks.0.down"] == "matches exclude pattern '*.down'"
    assert reasons["blocks.1.up"] == "predicate returned False"
    assert reasons["lm_head"] == "matches no include pattern"

    model = _Model()
    summary = quantize_model(model, keep_output_head=False, min_features=4, symmetric_activations=False)
    assert "lm_head" in summary.replaced and "gate" in summary.replaced
    assert not model.lm_head.symmetric_activations


def test_quantize_model_shared_layer_is_replaced_everywhere():
    shared = nn.Linear(32, 32)
    model = _named(a=shared, b=nn.Sequential(shared))
    summary = quantize_model(model)
    assert summary.replaced == ["a"]
    assert isinstance(model.a, Int8Linear) and model.b[0] is model.a


def test_quantize_model_bad_input():
    with pytest.raises(ValueError, match="no torch.nn.Linear layers"):
        quantize_model(nn.Sequential(nn.ReLU(), nn.LayerNorm(4)))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        quantize_model(lambda x: x)
    with pytest.raises(TypeError, match="Int8Linear.from_float"):
        quantize_model(nn.Linear(32, 32))
    with pytest.raises(ValueError, match="include pattern 'decoder.*' matches no"):
        quantize_model(_Model(), include="decoder.*")

    model = _Model()
    with torch.no_grad():
        model.blocks[1].down.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"blocks\.1\.down\.weight contains NaN"):
        quantize_model(model)
    # Nothing was swapped in: every layer is converted before any replacement.
    assert not any(isinstance(m, Int8Linear) for m in model.modules())


class _TiedLM(nn.Module):
    """A decoder's ends: an embedding whose weight the lm_head shares (tie_word_embeddings)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(100, 32)
        self.proj = nn.Linear(32, 32)
        self.lm_head = nn.Linear(32, 100, bias=False)
        self.lm_head.weight = self.embed_tokens.weight

    def forward(self, ids):
        return self.lm_head(self.proj(self.embed_tokens(ids)))


def _unique_bytes(model: nn.Module) -> int:
    """Bytes of the distinct tensors a model holds (what save_quantized stores)."""
    # The state dict: non-persistent buffers (Int8Linear's column sums) are not stored.
    tensors = {t.untyped_storage().data_ptr(): t for t in model.state_dict(keep_vars=True).values()}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def test_quantize_model_counts_a_tied_head_as_stored():
    model = _TiedLM()
    before = _unique_bytes(model)
    summary = quantize_model(model, keep_output_head=False)
    assert summary.replaced == ["proj", "lm_head"]
    assert summary.tied == [("lm_head.weight", "embed_tokens.weight")]
    # The float embedding stays and an int8 head is added: the model grows by the summary's delta.
    assert _unique_bytes(model) - before == summary.bytes_after - summary.bytes_before
    head_float, head_int8 = 100 * 32 * 4, 100 * 32 + 100 * 4
    assert summary.bytes_after == (32 * 32 + 32 * 4 + 32 * 4) + head_float + head_int8
    assert "tied: lm_head.weight is also embed_tokens.weight, which stays float" in str(summary)


def test_quantize_model_untied_head_is_not_tied():
    model = _TiedLM()
    model.lm_head.weight = nn.Parameter(model.embed_tokens.weight.detach().clone())
    summary = quantize_model(model, keep_output_head=False)
    assert summary.tied == [] and "tied" not in str(summary)

    # Weights that are views of one flat buffer (as some loaders make them) are not tied.
    flat = torch.randn(2 * 32 * 32)
    model = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 32))
    model[0].weight = nn.Parameter(flat[: 32 * 32].view(32, 32))
    model[1].weight = nn.Parameter(flat[32 * 32 :].view(32, 32))
    assert quantize_model(model, exclude="1").tied == []  # the kept layer shares the storage only


@pytest.mark.parametrize("scheme", ["w8a8", "w8a8-asym", "w8a16"])
def test_quantize_model_gives_every_layer_the_scheme(rng, scheme):
    model = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16))
    reference = nn.Sequential(*(Int8Linear.from_float(m, scheme) if isinstance(m, nn.Linear) else m for m in model))
    quantize_model(model, scheme=QuantScheme.parse(scheme))
    assert [m.scheme.name for m in model if isinstance(m, Int8Linear)] == [scheme, scheme]
    assert f"activations={QuantScheme.parse(scheme).describe()}" in repr(model[0])
    x = torch.from_numpy(rng.standard_normal((3, 32), dtype=np.float32))
    assert torch.equal(model(x), reference(x))


def test_the_default_is_rotated_w8a8_with_a_fallback_for_odd_layers(rng):
    """scheme.DEFAULT: "w8a8+had" (the largest power-of-two block dividing in_features) where
    the rotation fits, "w8a8-asym" for an odd in_features, named in the summary and the plan;
    the output head stays float; the shorthands keep their unrotated presets."""
    from qtriton.accuracy.planning import Plan
    from qtriton.model.scheme import DEFAULT

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.odd, self.lm_head = nn.Linear(48, 33), nn.Linear(33, 40), nn.Linear(40, 64)

        def forward(self, x):
            return self.lm_head(self.odd(torch.relu(self.up(x))))

    model = LM()
    float_model = {name: m for name, m in model.named_children()}
    summary = quantize_model(model)
    assert (DEFAULT.scheme.name, DEFAULT.fallback.name) == ("w8a8+had", "w8a8-asym")
    assert (model.up.scheme.name, model.odd.scheme.name) == ("w8a8+had16", "w8a8-asym")
    assert type(model.lm_head) is nn.Linear and [n for n, _ in summary.skipped] == ["lm_head"]
    assert [name for name, _ in summary.fell_back] == ["odd"] and "in_features=33" in summary.fell_back[0][1]
    assert "w8a8-asym in place of the default: odd: w8a8+had refuses it" in str(summary)
    plan = Plan.of_model(model)
    assert list(plan.fell_back) == ["odd"] and "w8a8-asym in place of the default w8a8+had (1 layers): odd" in str(plan)
    assert Plan.from_dict(plan.to_dict()) == plan
    # Each layer computes what Int8Linear.from_float of its scheme does.
    for name, scheme in (("up", "w8a8+had"), ("odd", "w8a8-asym")):
        expected = Int8Linear.from_float(float_model[name], scheme)
        rows = torch.from_numpy(rng.standard_normal((5, expected.in_features), dtype=np.float32))
        assert torch.equal(getattr(model, name)(rows), expected(rows))

    with pytest.raises(ValueError, match="odd: a Hadamard rotation needs an even in_features"):
        quantize_model(LM(), scheme="w8a8+had")  # asked for by name: refused, not replaced
    assert [m.scheme.name for m in _quantized(LM(), symmetric_activations=False)] == ["w8a8-asym"] * 2
    assert [m.scheme.name for m in _quantized(LM(), symmetric_activations=True)] == ["w8a8"] * 2
    assert [m.scheme.name for m in _quantized(LM(), weight_only=True)] == ["w8a16"] * 2


def _quantized(model, **kwargs) -> list[Int8Linear]:
    quantize_model(model, **kwargs)
    return [m for m in model.modules() if isinstance(m, Int8Linear)]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"scheme": "w8a8-asym", "symmetric_activations": False}, TypeError, "not both"),
        ({"weight_only": True, "symmetric_activations": False}, ValueError, "has no activation zero points"),
        ({"scheme": "w8a8-static"}, ValueError, r"'w8a8-static' needs a calibration made with .*static=True"),
        ({"scheme": "w8a8+smooth"}, ValueError, "smoothing comes from a calibration"),
        ({"scheme": "int4"}, ValueError, "unknown scheme 'int4'"),
        ({"scheme": 8}, TypeError, "scheme must be a QuantScheme or a preset name"),
    ],
    ids=["both", "w8a16-asym", "static-uncalibrated", "smooth-uncalibrated", "unknown", "int"],
)
def test_quantize_model_refuses_schemes_it_cannot_give(kwargs, error, message):
    model = nn.Sequential(nn.Linear(32, 32))
    with pytest.raises(error, match=message):
        quantize_model(model, **kwargs)
    assert type(model[0]) is nn.Linear


def test_from_float_scales_must_fit_the_scheme():
    linear = nn.Linear(32, 16)
    with pytest.raises(ValueError, match="scheme 'w8a8\\+smooth' needs input_scale"):
        Int8Linear.from_float(linear, "w8a8+smooth")
    with pytest.raises(ValueError, match="activation_scale was given but scheme 'w8a8' has no use for it"):
        Int8Linear.from_float(linear, activation_scale=0.1)
    layer = Int8Linear.from_float(linear, "w8a8-static", activation_scale=0.1)
    assert layer.scheme.static and float(layer.activation_scale) == pytest.approx(0.1)


def test_quantize_model_twice_says_already_quantized():
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    quantize_model(model)
    with pytest.raises(ValueError, match=r"already quantized: 2 Int8Linear layers"):
        quantize_model(model)


@pytest.mark.parametrize("flag", ["symmetric_activations", "weight_only", "keep_output_head"])
@pytest.mark.parametrize("value", ["no", 0, 1.0])
def test_quantize_model_flags_must_be_bool(flag, value):
    model = nn.Sequential(nn.Linear(32, 32))
    with pytest.raises(TypeError, match=f"{flag} must be True or False, got {value!r}"):
        quantize_model(model, **{flag: value})
    assert type(model[0]) is nn.Linear


# ----------------------------------------------------------------------------- safetensors
def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128), nn.LayerNorm(128), nn.Linear(128, 96))


def test_save_and_load_are_bit_identical_at_a_quarter_of_the_size(tmp_path, rng):
    from safetensors.torch import save_model

    model = _mlp(seed=0)
    save_model(model, str(tmp_path / "float.safetensors"))
    quantize_model(model, symmetric_activations=False)
    save_quantized(model, tmp_path / "int8.safetensors")
    ratio = (tmp_path / "int8.safetensors").stat().st_size / (tmp_path / "float.safetensors").stat().st_size
    assert 0.25 < ratio < 0.27

    skeleton = _mlp(seed=1)  # different float weights: all of them must come from the file
    assert load_quantized(skeleton, tmp_path / "int8.safetensors") is skeleton
    assert isinstance(skeleton[2], Int8Linear) and not skeleton[2].symmetric_activations
    x = torch.from_numpy(rng.standard_normal((7, 128), dtype=np.float32))
    assert torch.equal(skeleton(x), model(x))


def test_load_errors(tmp_path):
    model = _mlp(seed=0)
    with pytest.raises(ValueError, match="no Int8Linear layers"):
        save_quantized(model, tmp_path / "nothing.safetensors")
    quantize_model(model)
    path = tmp_path / "int8.safetensors"
    save_quantized(model, path)

    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_quantized(_mlp(0), tmp_path / "missing.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.safetensors.*truncated or corrupt"):
        load_quantized(_mlp(0), truncated)

    from safetensors.torch import save_model

    save_model(_mlp(0), str(tmp_path / "float.safetensors"))
    with pytest.raises(ValueError, match="not written by qtriton.save_quantized"):
        load_quantized(_mlp(0), tmp_path / "float.safetensors")

    other = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 64))
    with pytest.raises(ValueError, match=r"model\.2 has \(in_features, out_features, bias\) = \(256, 64, True\)"):
        load_quantized(other, path)
    assert type(other[0]) is nn.Linear  # checked before anything was swapped

    missing_norm = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128), nn.Identity(), nn.Linear(128, 96))
    with pytest.raises(ValueError, match="does not fit the model"):
        load_quantized(missing_norm, path)
    assert type(missing_norm[0]) is nn.Linear  # swaps undone

    with pytest.raises(TypeError, match=r"model\.2 is a Identity"):
        load_quantized(nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Identity()), path)


class _Shared(nn.Module):
    """One nn.Linear in two slots (`b` is `a`) and, nested, a third."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.a = nn.Linear(64, 64)
        self.b = self.a
        self.tail = nn.Sequential(nn.GELU(), self.a)
        self.out = nn.Linear(64, 48)

    def forward(self, x):
        return self.out(self.tail(self.b(self.a(x))))


def test_shared_layer_saves_and_loads_as_one_layer(tmp_path, rng):
    from safetensors import safe_open

    from qtriton.formats.serialization import read_header

    model = _Shared(seed=0)
    quantize_model(model, keep_output_head=False)
    path = tmp_path / "shared.safetensors"
    save_quantized(model, path)
    header = read_header(path)
    assert set(header["layers"]) == {"a", "b", "tail.1", "out"}
    assert header["shared"] == [["a", "b", "tail.1"]]
    with safe_open(str(path), framework="pt") as f:  # the shared layer's tensors are stored once
        assert sorted(f.keys()) == [f"{layer}.{t}" for layer in ("a", "out") for t in ("bias", "weight", "weight_scale")]

    skeleton = _Shared(seed=1)
    load_quantized(skeleton, path)
    assert isinstance(skeleton.a, Int8Linear) and skeleton.b is skeleton.a and skeleton.tail[1] is skeleton.a
    x = torch.from_numpy(rng.standard_normal((5, 64), dtype=np.float32))
    assert torch.equal(skeleton(x), model(x))

    # The skeleton must share exactly what the file shares; nothing is swapped otherwise.
    unshared = _Shared(seed=1)
    unshared.b = nn.Linear(64, 64)
    with pytest.raises(ValueError, match="stores one layer at a and b, but the model has different modules"):
        load_quantized(unshared, path)
    assert type(unshared.a) is nn.Linear
    plain = _mlp(seed=0)
    quantize_model(plain)
    save_quantized(plain, tmp_path / "plain.safetensors")
    tied = _mlp(seed=0)
    tied[4] = nn.Linear(128, 96)
    tied.add_module("alias", tied[0])
    with pytest.raises(ValueError, match=r"model\.0 is also model\.alias, but .* does not store them as one layer"):
        load_quantized(tied, tmp_path / "plain.safetensors")


@pytest.mark.parametrize("block", [1, 100, 2**16], ids=["row-by-row", "partial-blocks", "one-block"])
def test_weight_colsum_by_blocks_is_the_row_sums(rng, monkeypatch, block):
    """On CPU the row sums are taken by blocks of rows (torch widens the operand to int32
    first); every blocking gives the same sums, including a last partial block."""
    import qtriton.model.nn as qnn

    monkeypatch.setattr(qnn, "_COLSUM_BLOCK", block)
    layer = Int8Linear.from_float(_linear(rng, 48, 37), "w8a8-asym")
    assert_exact(layer.weight_colsum, layer.weight.to(torch.int64).sum(1).to(torch.int32), name="colsum")
