"""SmoothQuant calibration (qtriton.accuracy.calibration) on small Llama-style blocks: which norms
take 1/s (and which must not), that folding keeps the float model's function, that
smoothing cuts the W8A8 error of inputs with outlier channels, static scales, the
per-layer report, and the save -> load round trip of the new Int8Linear modes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from qtriton.accuracy.calibration import calibrate, layer_report
from qtriton.formats.serialization import load_quantized, save_quantized
from qtriton.model.nn import Int8Linear, quantize_model

D, HIDDEN = 64, 128
OUTLIERS = [3, 17, 40]  # input channels 100x larger than the rest, as in decoder LLMs


class PreNormBlock(nn.Module):
    """x + attn_out(q(norm(x)) * k(norm(x))), then x + down(relu(up(norm2(x)))): the shapes
    of a Llama decoder layer (o_proj and down_proj have no norm before them)."""

    def __init__(self, norm=nn.RMSNorm):
        super().__init__()
        self.norm = norm(D)
        self.q, self.k = nn.Linear(D, D), nn.Linear(D, D)
        self.attn_out = nn.Linear(D, D)
        self.norm2 = nn.LayerNorm(D)
        self.up, self.down = nn.Linear(D, HIDDEN), nn.Linear(HIDDEN, D)
        with torch.no_grad():
            for norm_module in (self.norm, self.norm2):
                norm_module.weight.uniform_(0.5, 1.5)
                norm_module.weight[OUTLIERS] = 60.0  # the norm's weight makes the outliers
            self.norm2.bias.normal_()

    def forward(self, x):
        h = self.norm(x)
        x = x + self.attn_out(torch.tanh(self.q(h)) * self.k(h))
        return x + self.down(torch.relu(self.up(self.norm2(x))))


class PostNormBlock(nn.Module):
    """BERT-style: the norm's output is also the residual, so 1/s cannot go into it."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(D)
        self.inner = nn.Linear(D, D)

    def forward(self, x):
        h = self.norm(x)
        return h + self.inner(h)


class OnePlusRMSNorm(nn.Module):
    """Gemma's norm: x / rms(x) * (1 + weight), which dividing weight by s does not scale."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + self.weight)


def _batches(seed, n=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 16, D, generator=g) for _ in range(n)]


def _relative_error(model, reference, batches):
    with torch.no_grad():
        num = sum(float((model(b) - reference(b)).square().sum()) for b in batches)
        den = sum(float(reference(b).square().sum()) for b in batches)
    return (num / den) ** 0.5


@pytest.fixture
def block():
    torch.manual_seed(0)
    return PreNormBlock().eval()


def test_folds_into_prenorms_and_keeps_function(block):
    reference = copy.deepcopy(block)
    calibration = calibrate(block, _batches(1), alpha=0.5)
    assert all(p.equal(q) for p, q in zip(block.state_dict().values(), reference.state_dict().values()))
    calibration.smooth(block)
    folded = {calibration.stats[k].name: norm for k, norm in calibration.folded.items()}
    assert folded == {"q": "norm", "k": "norm", "up": "norm2"}
    assert not block.norm.weight.equal(reference.norm.weight)
    assert _relative_error(block, reference, _batches(2)) < 1e-5  # the float function is kept
    # The layers without a norm before them get 1/s as input_scale, the folded ones none.
    options = {n: calibration.layer_options(getattr(block, n), n) for n in ("q", "attn_out", "down")}
    assert "input_scale" not in options["q"][1] and options["q"][0].name == "w8a8"
    assert options["attn_out"][1]["input_scale"].shape == (D,) and options["down"][1]["input_scale"].shape == (HIDDEN,)
    assert options["attn_out"][0].name == options["down"][0].name == "w8a8+smooth"


def test_smoothing_cuts_w8a8_error_on_outliers(block):
    reference = copy.deepcopy(block)
    plain = copy.deepcopy(block)
    # Unrotated: the rotation alone spreads the outliers too (rotated, smoothing cuts the
    # error by a third here: 0.014 against 0.022).
    quantize_model(plain, scheme="w8a8-asym")
    quantize_model(block, calibration=calibrate(block, _batches(1), alpha=0.5), scheme="w8a8-asym")
    assert sum(isinstance(m, Int8Linear) for m in block.modules()) == 5
    held_out = _batches(2)
    error_plain = _relative_error(plain, reference, held_out)
    error_smooth = _relative_error(block, reference, held_out)
    assert error_smooth < 0.5 * error_plain, (error_smooth, error_plain)


def test_static_scales(block):
    reference = copy.deepcopy(block)
    quantize_model(block, calibration=calibrate(block, _batches(1), alpha=0.5, static=True))
    layers = [m for m in block.modules() if isinstance(m, Int8Linear)]
    assert all(m.activation_scale is not None and float(m.activation_scale) > 0 for m in layers)
    assert "static" in repr(layers[0])
    assert _relative_error(block, reference, _batches(2)) < 0.05


def test_post_norm_is_not_folded():
    torch.manual_seed(1)
    model = PostNormBlock().eval()
    reference = copy.deepcopy(model)
    calibration = calibrate(model, _batches(3), alpha=0.5)
    calibration.smooth(model)
    assert not calibration.folded and model.norm.weight.equal(reference.norm.weight)
    assert _relative_error(model, reference, _batches(4)) < 1e-5


def test_one_plus_weight_norm_is_folded():
    """Gemma's x * (1 + weight): weight' = (1 + weight) / s - 1 divides the output by s."""
    torch.manual_seed(1)
    model = PreNormBlock(norm=OnePlusRMSNorm).eval()
    reference = copy.deepcopy(model)
    calibration = calibrate(model, _batches(3), alpha=0.5)
    calibration.smooth(model)
    folded = {calibration.stats[k].name: norm for k, norm in calibration.folded.items()}
    assert folded == {"q": "norm", "k": "norm", "up": "norm2"}
    assert _relative_error(model, reference, _batches(4)) < 1e-5


def test_tied_weight_is_not_scaled():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, D)
            self.norm = nn.RMSNorm(D)
            self.head = nn.Linear(D, 50, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids):
            return self.head(self.norm(self.embed(ids)))

    model = Tied().eval()
    embedding = model.embed.weight.detach().clone()
    calibration = calibrate(model, [torch.arange(50).reshape(5, 10)], alpha=0.5)
    calibration.smooth(model)
    assert not calibration.folded and model.embed.weight.equal(embedding)


def test_bad_arguments(block):
    with pytest.raises(ValueError, match="alpha"):
        calibrate(block, _batches(1), alpha=1.5)
    with pytest.raises(ValueError, match="empty"):
        calibrate(block, [], alpha=0.5)
    with pytest.raises(TypeError, match="model"):
        calibrate("model", _batches(1))
    calibration = calibrate(block, _batches(1))
    quantize_model(block, calibration=calibration)
    with pytest.raises(ValueError, match="already applied"):
        calibration.fold_into_norms(block)
    with pytest.raises(ValueError, match="not seen"):
        calibrate(PreNormBlock(), _batches(1)).layer_options(nn.Linear(D, D), "stranger")


def test_layer_report_finds_the_outlier_layers(block):
    report = layer_report(block, _batches(1))
    by_name = {layer.name: layer for layer in report.layers}
    assert set(by_name) == {"q", "k", "attn_out", "up", "down"}
    # q, k and up read the norm outputs with the 60x channels; attn_out does not.
    assert by_name["q"].outlier_ratio > 5 * by_name["attn_out"].outlier_ratio
    assert by_name["q"].snr_db < by_name["attn_out"].snr_db
    assert report.worst(1)[0].name in {"q", "k", "up"}
    assert "SNR dB" in str(report) and "attn_out" in str(report)


def test_modes_round_trip(tmp_path, block):
    """input_scale, static and weight-only layers save and load bit-identically."""
    skeleton = copy.deepcopy(block)
    quantize_model(block, calibration=calibrate(block, _batches(1), alpha=0.5, static=True), exclude="down")
    block.down = Int8Linear.from_float(skeleton.down, "w8a16")
    path = tmp_path / "smooth.safetensors"
    save_quantized(block, path)
    loaded = load_quantized(skeleton, path)
    x = _batches(5, 1)[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), block(x))
    assert loaded.down.weight_only and loaded.attn_out.input_scale is not None
    assert loaded.q.activation_scale is not None and loaded.q.input_scale is None


# ------------------------------------------------- folds into v_proj / up_proj, grouped heads
HEADS, KV_HEADS, HEAD_DIM = 4, 2, 8


class Attention(nn.Module):
    """Causal attention with 4 query heads on 2 key/value heads (HF's repeat_kv layout)."""

    def __init__(self, value_norm=False):
        super().__init__()
        self.head_dim = HEAD_DIM
        self.q_proj = nn.Linear(D, HEADS * HEAD_DIM)
        self.k_proj = nn.Linear(D, KV_HEADS * HEAD_DIM)
        self.v_proj = nn.Linear(D, KV_HEADS * HEAD_DIM)
        self.o_proj = nn.Linear(HEADS * HEAD_DIM, D)
        self.v_norm = nn.RMSNorm(HEAD_DIM) if value_norm else nn.Identity()  # Gemma 3n's: not linear

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, HEADS, HEAD_DIM).transpose(1, 2)
        k = self.k_proj(x).view(b, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
        v = self.v_norm(self.v_proj(x).view(b, t, KV_HEADS, HEAD_DIM)).transpose(1, 2)
        k, v = (z.repeat_interleave(HEADS // KV_HEADS, dim=1) for z in (k, v))
        out = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, HEADS * HEAD_DIM))


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(D, HIDDEN), nn.Linear(D, HIDDEN)
        self.down_proj = nn.Linear(HIDDEN, D)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    def __init__(self, value_norm=False):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = nn.RMSNorm(D), nn.RMSNorm(D)
        self.self_attn, self.mlp = Attention(value_norm), Mlp()
        with torch.no_grad():  # outlier channels at the inputs of o_proj and down_proj too
            self.self_attn.v_proj.weight[:3] *= 40
            self.mlp.up_proj.weight[[5, 70]] *= 40

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


def test_folds_into_v_proj_and_up_proj_with_grouped_heads():
    torch.manual_seed(2)
    model = LlamaBlock().eval()
    reference = copy.deepcopy(model)
    calibration = calibrate(model, _batches(1), alpha=0.5)
    calibration.smooth(model)
    folded = {calibration.stats[k].name: where for k, where in calibration.folded.items()}
    assert folded["self_attn.o_proj"] == "self_attn.v_proj" and folded["mlp.down_proj"] == "mlp.up_proj"
    # One s per value channel, shared by the two query heads that read it.
    s = calibration.smoothing[id(model.self_attn.o_proj)].view(KV_HEADS, HEADS // KV_HEADS, HEAD_DIM)
    assert torch.equal(s[:, 0], s[:, 1]) and not torch.equal(s[0, 0], s[1, 0])
    assert _relative_error(model, reference, _batches(2)) < 1e-5
    # Quantized: no layer is left with an input_scale multiply, and smoothing helps.
    plain, smoothed = copy.deepcopy(reference), copy.deepcopy(reference)
    quantize_model(plain, symmetric_activations=False)
    quantize_model(smoothed, calibration=calibrate(smoothed, _batches(1)), symmetric_activations=False)
    assert all(m.input_scale is None for m in smoothed.modules() if isinstance(m, Int8Linear))
    held_out = _batches(2)
    assert _relative_error(smoothed, reference, held_out) < _relative_error(plain, reference, held_out)


def test_no_fold_through_a_value_norm():
    """An RMSNorm on the values is not linear per channel: o_proj keeps an input_scale."""
    torch.manual_seed(2)
    model = LlamaBlock(value_norm=True).eval()
    reference = copy.deepcopy(model)
    calibration = calibrate(model, _batches(1), alpha=0.5)
    calibration.smooth(model)
    folded = {calibration.stats[k].name: where for k, where in calibration.folded.items()}
    assert "self_attn.o_proj" not in folded and folded["mlp.down_proj"] == "mlp.up_proj"
    assert _relative_error(model, reference, _batches(2)) < 1e-5
    assert "input_scale" in calibration.layer_options(model.self_attn.o_proj, "self_attn.o_proj")[1]


# ------------------------------------------------------ calibration that cannot go wrong silently
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_calibration_data_raises(block, bad):
    batches = _batches(1)
    batches[1][2, 5, 7] = bad
    with pytest.raises(ValueError, match="calibration batch 1 contains NaN or Inf"):
        calibrate(block, batches)
    with torch.no_grad():
        block.up.weight[0, 0] = bad  # data turned NaN inside the model
    with pytest.raises(ValueError, match="calibration batch 0: the input of layer down holds NaN or Inf"):
        calibrate(block, _batches(1))


def test_all_zero_data_for_static_scales_raises(block):
    reference = copy.deepcopy(block)
    calibration = calibrate(block, [torch.zeros(2, 8, D)], alpha=0.5, static=True)
    with pytest.raises(ValueError, match="layer q: its input was all zeros"):
        quantize_model(block, calibration=calibration)
    assert_same_model(block, reference)


def assert_same_model(model, reference):
    assert not any(isinstance(m, Int8Linear) for m in model.modules())
    for (name, p), q in zip(model.state_dict().items(), reference.state_dict().values()):
        assert p.equal(q), f"{name} changed"


def test_failures_after_folding_leave_the_model_as_it_was(block):
    """An unused Linear, weight_only with a static calibration, a raising predicate."""
    reference = copy.deepcopy(block)
    block.unused = nn.Linear(D, D)
    reference.unused = copy.deepcopy(block.unused)
    calibration = calibrate(block, _batches(1), alpha=0.5)
    with pytest.raises(ValueError, match="layer unused was not seen"):
        quantize_model(block, calibration=calibration)
    assert_same_model(block, reference)
    # The calibration is whole again: it applies once the stray layer is excluded.
    quantize_model(block, calibration=calibration, exclude="unused")
    assert sum(isinstance(m, Int8Linear) for m in block.modules()) == 5

    model = copy.deepcopy(reference)
    with pytest.raises(ValueError, match="weight_only"):
        quantize_model(model, calibration=calibrate(model, _batches(1), static=True), weight_only=True)
    assert_same_model(model, reference)

    def predicate(name, layer):
        if name == "down":
            raise RuntimeError("predicate failed")
        return True

    with pytest.raises(RuntimeError, match="predicate failed"):
        quantize_model(model, calibration=calibrate(model, _batches(1)), predicate=predicate)
    assert_same_model(model, reference)


def test_calibration_of_another_model_is_refused(block):
    twin = copy.deepcopy(block)
    reference = copy.deepcopy(block)
    calibration = calibrate(block, _batches(1), alpha=0.5)
    with pytest.raises(ValueError, match="made on another model: its layer q"):
        quantize_model(twin, calibration=calibration)
    assert_same_model(block, reference)
    assert_same_model(twin, reference)


# ------------------------------------------------------------------------------ progress
@pytest.mark.parametrize("progress, shown", [(True, True), (False, False), (None, False)])
def test_calibrate_and_quantize_model_show_progress_when_asked(capsys, progress, shown):
    """A bar over the batches and one over the layers on stderr; None (the default) shows
    them only where stderr is a terminal, which pytest's capture is not."""
    block = PreNormBlock().eval()
    calibration = calibrate(block, _batches(2), progress=progress)
    quantize_model(block, calibration=calibration, progress=progress)
    err = capsys.readouterr().err
    assert ("calibrate" in err and "quantize" in err) == shown, err


@pytest.mark.parametrize("progress", [None, False])
def test_long_steps_print_plain_lines_off_a_terminal(capsys, monkeypatch, progress):
    """Off a terminal (pytest's capture), None prints a plain progress line per interval
    (here every item: interval 0), no bar's carriage returns; False prints nothing."""
    from qtriton import progress as progress_module

    monkeypatch.setattr(progress_module, "LINE_INTERVAL_S", 0.0)
    block = PreNormBlock().eval()
    calibration = calibrate(block, _batches(3), progress=progress)
    quantize_model(block, calibration=calibration, progress=progress)
    err = capsys.readouterr().err
    if progress is False:
        assert err == ""
        return
    lines = err.splitlines()
    assert "\r" not in err and [line.split(":")[0] for line in lines[:3]] == ["calibrate"] * 3, err
    assert "3/3" in lines[2] and "batch" in lines[2], err
    assert any(line.startswith("quantize:") and "layer" in line for line in lines[3:]), err
