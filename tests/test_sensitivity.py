"""End-to-end sensitivity and per-layer plans (qtriton.accuracy.planning) on a tiny Llama-style
language model whose down_proj inputs carry outlier channels: the measurement must find them,
leave the model as it was, and the plan must meet its target end to end."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import qtriton
from qtriton.accuracy.planning import Plan, layer_groups
from qtriton.formats.serialization import load_quantized, save_quantized
from qtriton.model.nn import Int8Linear, quantize_model
from qtriton.model.scheme import W8A8, W8A16, QuantScheme

D, HIDDEN, VOCAB = 32, 64, 50


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = nn.RMSNorm(D), nn.RMSNorm(D)
        self.q_proj, self.v_proj, self.o_proj = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        self.up_proj, self.gate_proj, self.down_proj = nn.Linear(D, HIDDEN), nn.Linear(D, HIDDEN), nn.Linear(HIDDEN, D)
        with torch.no_grad():
            self.up_proj.weight[[3, 40]] *= 60  # outlier channels at down_proj's input

    def forward(self, x):
        h = self.input_layernorm(x)
        att = torch.softmax(self.q_proj(h) @ h.transpose(-1, -2) / D**0.5, -1) @ self.v_proj(h)
        x = x + self.o_proj(att)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(nn.functional.silu(self.gate_proj(h)) * self.up_proj(h))


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D)
        self.layers = nn.ModuleList([Block(), Block()])
        self.lm_head = nn.Linear(D, VOCAB)

    def forward(self, ids):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(x)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyLM().eval()


def _ids(seed, n=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (2, 24), generator=g) for _ in range(n)]


def test_groups(model):
    groups = layer_groups(model, "type")
    assert set(groups) == {f"*.{p}" for p in ("q_proj", "v_proj", "o_proj", "up_proj", "gate_proj", "down_proj")}
    # The default: the parts vLLM fuses planned together (gate/up here; q/v without a k_proj stay apart).
    fused = layer_groups(model)
    assert list(fused) == ["*.q_proj", "*.v_proj", "*.o_proj", "*.[gu][ap]*_proj", "*.down_proj"]
    assert sorted(fused["*.[gu][ap]*_proj"]) == ["layers.0.gate_proj", "layers.0.up_proj", "layers.1.gate_proj", "layers.1.up_proj"]
    plan = Plan.from_groups(model, {"*.[gu][ap]*_proj": "w8a16", "*": "w8a8"})
    assert {n for n, s in plan.schemes.items() if s == W8A16} == set(fused["*.[gu][ap]*_proj"])
    assert groups["*.down_proj"] == ["layers.0.down_proj", "layers.1.down_proj"]
    assert len(layer_groups(model, "layer")) == 12
    assert layer_groups(model, ["layers.0.*"])["layers.0.*"][0] == "layers.0.q_proj"
    with pytest.raises(ValueError, match="matches no"):
        layer_groups(model, ["nothing.*"])


def test_sensitivity_finds_the_outlier_group_and_leaves_the_model(model):
    reference = copy.deepcopy(model)
    report = qtriton.sensitivity(model, _ids(1), schemes=["w8a8", "w8a8-asym+smooth", "w8a16"], progress=False)
    assert all(p.equal(q) for p, q in zip(model.state_dict().values(), reference.state_dict().values()))
    assert not any(isinstance(m, Int8Linear) for m in model.modules())
    assert len(report.rows) == 5 * 3  # gate/up measured together (fused)
    worst = report.sorted()[0]
    assert (worst.group, worst.scheme) == ("*.down_proj", "w8a8")
    # Smoothing and weight-only both cut the worst group's KL; every KL is >= 0.
    assert report.kl("*.down_proj", "w8a8-asym+smooth") < 0.5 * worst.kl
    assert report.kl("*.down_proj", "w8a16") < 0.5 * worst.kl
    assert all(r.kl >= 0 and 0 <= r.top1 <= 1 for r in report.rows)
    assert "*.down_proj" in str(report).splitlines()[1]
    assert json.loads(json.dumps(report.to_dict()))["rows"][0]["group"] == "*.down_proj"


def test_sensitivity_matches_quantizing_the_group(model):
    """One group's KL equals what quantize_model(include=...) on a copy measures."""
    report = qtriton.sensitivity(model, _ids(1), schemes=["w8a8"], groups=["*.down_proj"], progress=False)
    copied = copy.deepcopy(model)
    quantize_model(copied, include="*.down_proj", symmetric_activations=True)
    with torch.no_grad():
        kl = sum(float(nn.functional.kl_div(copied(b).log_softmax(-1), model(b).log_softmax(-1), log_target=True,
                                            reduction="sum")) for b in _ids(1)) / (2 * 2 * 24)
    assert report.rows[0].kl == pytest.approx(kl, rel=1e-4)


def test_plan_meets_its_target_and_applies(model):
    ids = _ids(1)
    everything = qtriton.sensitivity(model, ids, schemes=["w8a8"], groups=["layers.*"], progress=False).rows[0].kl
    target = everything / 3
    result = qtriton.plan(model, ids, target_kl=target, schemes=["w8a8", "w8a8-asym"], progress=False)
    assert result.kl <= target
    assert set(result.schemes) == {n for n, m in model.named_modules() if isinstance(m, nn.Linear)} - {"lm_head"}
    # The outlier group gives up int8 compute (W8A16), the others keep it; nothing is float.
    assert result.groups["*.down_proj"] == "w8a16"
    assert all(result.groups[g].startswith("w8a8") for g in result.groups if g != "*.down_proj")
    assert "top-1" in str(result) and "*.down_proj" in str(result)
    # What stays int8 x int8: every decoder layer's FLOPs but down_proj's (in * out each).
    shapes = {n: m.in_features * m.out_features for n, m in model.named_modules()
              if isinstance(m, nn.Linear) and n != "lm_head"}
    int8 = sum(f for n, f in shapes.items() if not n.endswith("down_proj"))
    assert result.int8_flops == pytest.approx(int8 / sum(shapes.values())) and result.int8_flops < 1
    assert f"int8 x int8: {result.int8_flops:.1%} of the decoder layers' linear FLOPs" in str(result)
    # Applying the plan gives the model it measured; it survives JSON.
    restored = Plan.from_dict(json.loads(result.to_json()))
    assert restored.schemes == result.schemes
    quantized = copy.deepcopy(model)
    summary = quantize_model(quantized, plan=restored)
    assert len(summary.replaced) == sum(s is not None for s in result.schemes.values())
    for name, scheme in result.schemes.items():
        layer = quantized.get_submodule(name)
        if scheme is None:
            assert isinstance(layer, nn.Linear)
        else:
            assert layer.weight_only == scheme.weight_only
            assert layer.symmetric_activations == scheme.activation_symmetric


def test_plan_keeps_the_cheapest_int8_gemm_where_it_is_enough(model):
    """Symmetric activations first (no zero-point correction): with a target any scheme meets,
    every group is symmetric W8A8, even where the asymmetric one measured a lower KL."""
    ids = _ids(1)
    report = qtriton.sensitivity(model, ids, schemes=["w8a8-asym", "w8a8", "w8a16"], progress=False)
    assert any(report.kl(g, "w8a8-asym") < report.kl(g, "w8a8") for g in layer_groups(model))
    result = qtriton.plan(model, ids, target_kl=1e9, schemes=["w8a8-asym", "w8a8"], report=report, progress=False)
    assert set(result.groups.values()) == {"w8a8"} and result.int8_flops == 1.0
    assert qtriton.int8_flop_fraction(model) == 0.0  # the float model itself


def test_plan_travels_with_the_checkpoint(model, tmp_path):
    """A checkpoint stores every layer's scheme: the loaded model gives back the plan."""
    plan = Plan.from_groups(model, {"*.down_proj": "float", "layers.0.*": "w8a16", "*": "w8a8-asym"})
    quantize_model(model, plan=plan)
    assert Plan.of_model(model).schemes == {**plan.schemes, "lm_head": None}
    save_quantized(model, tmp_path / "planned.safetensors")
    torch.manual_seed(1)
    loaded = load_quantized(TinyLM().eval(), tmp_path / "planned.safetensors")
    assert Plan.of_model(loaded).schemes == Plan.of_model(model).schemes


def test_plan_by_hand(model):
    plan = Plan.from_groups(model, {"*.down_proj": "float", "layers.0.*_proj": "w8a16", "layers.1.*_proj": "w8a8"})
    assert plan.schemes["layers.0.down_proj"] is None and plan.schemes["layers.1.down_proj"] is None
    assert plan.schemes["layers.0.q_proj"] == W8A16 and plan.schemes["layers.1.up_proj"] == W8A8
    with pytest.raises(ValueError, match="unknown scheme"):
        Plan.from_groups(model, {"*.q_proj": "w4a4"})


def test_quantize_model_plan_checks(model):
    with pytest.raises(ValueError, match="does not have"):
        quantize_model(model, plan={"layers.9.q_proj": W8A8})
    with pytest.raises(ValueError, match="needs calibration"):
        quantize_model(model, plan={"layers.0.q_proj": QuantScheme.parse("w8a8+smooth")})
    with pytest.raises(TypeError, match="QuantScheme or None"):
        quantize_model(model, plan={"layers.0.q_proj": "w8a8"})
    assert not any(isinstance(m, Int8Linear) for m in model.modules())
    summary = quantize_model(model, plan={"layers.0.q_proj": W8A16, "layers.0.v_proj": None})
    assert summary.replaced == ["layers.0.q_proj"] and model.layers[0].q_proj.weight_only
    assert ("layers.0.v_proj", "kept float by the plan") in summary.skipped


def test_smoothed_plan_smooths_only_its_layers(model):
    """A plan smoothing only down_proj: up_proj takes its 1/s in its rows, no norm is touched."""
    reference = copy.deepcopy(model)
    smooth = QuantScheme.parse("w8a8-asym+smooth")
    schemes = {n: (smooth if n.endswith("down_proj") else W8A16) for n in layer_groups(model, "layer")}
    quantize_model(model, plan=schemes, calibration=qtriton.calibrate(model, _ids(1)))
    assert model.layers[0].input_layernorm.weight.equal(reference.layers[0].input_layernorm.weight)
    assert model.layers[0].down_proj.input_scale is None  # folded into up_proj's rows


def test_plan_arguments(model):
    with pytest.raises(ValueError, match="target_kl or target_top1"):
        qtriton.plan(model, _ids(1))
    with pytest.raises(ValueError, match="target_top1"):
        qtriton.plan(model, _ids(1), target_top1=1.5)
    with pytest.raises(ValueError, match="static"):
        qtriton.sensitivity(model, _ids(1), schemes=["w8a8-static"])
