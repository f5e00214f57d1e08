"""Issue 26, round 5 of "no silent wrong results": plans, eval, report and the checks of
what users actually pass (items 6-10, 12, 14, 15, 17-20). Tiny random Llama models
(LlamaConfig, 2 layers, hidden 64) stand in for the real ones."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import qtriton
from qtriton import api
from qtriton.accuracy import evaluate
from qtriton.accuracy.planning import Plan, layer_groups
from qtriton.cli import main
from qtriton.formats.serialization import METADATA_KEY, load_quantized, save_quantized
from qtriton.model.nn import Int8Linear, quantize_model
from qtriton.model.scheme import DEFAULT, W8A8, W8A8_ASYMMETRIC, W8A16, QuantScheme

from tests.cases import edit_header, logits

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

VOCAB = 128


def _tiny_llama(seed: int = 0, outliers: bool = False) -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
        if outliers:  # a few large activation channels, as decoder LLMs have: smoothing matters
            for layer in model.model.layers:
                layer.input_layernorm.weight[[3, 17]] = 40.0
                layer.post_attention_layernorm.weight[[5, 30]] = 30.0
    return model


def _batches(seed: int = 1, n: int = 2, length: int = 16) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (1, length), generator=g) for _ in range(n)]


def _one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


# ------------------------------------------------------------------------ 6: all-float plans
def test_plan_with_only_w8a16_uses_w8a16_not_float():
    model = _tiny_llama()
    plan = qtriton.plan(model, _batches(), schemes=["w8a16"], target_kl=10, progress=False)
    assert set(plan.groups.values()) == {"w8a16"}, plan.groups
    assert all(s == W8A16 for s in plan.schemes.values())


def test_plan_refuses_a_report_of_other_groups():
    model, batches = _tiny_llama(), _batches()
    report = qtriton.sensitivity(model, batches, schemes=["w8a8", "w8a16"], groups="layer", progress=False)
    with pytest.raises(ValueError, match=r"report .*groups"):
        qtriton.plan(model, batches, target_kl=10, schemes=["w8a8", "w8a16"], groups="type", report=report,
                     progress=False)
    # The same grouping is reused as it is (no new measurement) and gives int8 layers.
    plan = qtriton.plan(model, batches, target_kl=10, schemes=["w8a8", "w8a16"], groups="layer", report=report,
                        progress=False)
    assert "float" not in plan.groups.values()


def test_plan_refuses_a_report_missing_a_scheme():
    model, batches = _tiny_llama(), _batches()
    report = qtriton.sensitivity(model, batches, schemes=["w8a16"], progress=False)
    with pytest.raises(ValueError, match=r"report .*w8a8"):
        qtriton.plan(model, batches, target_kl=10, schemes=["w8a8", "w8a16"], report=report, progress=False)


# ----------------------------------------------------- 7: report on a folder with a bad config
def test_report_refuses_a_compressed_folder_whose_config_is_not_json(tmp_path, capsys):
    from qtriton.formats.hf import save_pretrained
    from qtriton.report import report_checkpoint

    model = _tiny_llama()
    quantize_model(model)
    folder = save_pretrained(model, tmp_path / "q")
    (folder / "config.json").write_text('{"quantization_config": {"quant_method": "compressed-tensors",')
    with pytest.raises(ValueError, match=r"config\.json.* not valid JSON"):
        report_checkpoint(folder)
    assert main(["report", str(folder)]) == 2
    _one_error_line(capsys, "config.json", "not valid JSON")
    (folder / "config.json").write_text("[]")
    with pytest.raises(ValueError, match=r"config\.json.* not a JSON object"):
        report_checkpoint(folder)


# ------------------------------------------------------ 8: eval on an already-quantized folder
def test_eval_refuses_an_already_quantized_folder(tmp_path, monkeypatch, capsys):
    from qtriton.formats.hf import save_pretrained

    model = _tiny_llama()
    quantize_model(model)
    folder = save_pretrained(model, tmp_path / "q")
    (tmp_path / "t.txt").write_text("some text to measure on")
    assert main(["eval", str(folder), "--text", str(tmp_path / "t.txt"), "--recipe", "w8a8"]) == 2
    _one_error_line(capsys, "already quantized", "compressed-tensors", "float model")
    with pytest.raises(ValueError, match="already quantized"):
        evaluate.evaluate(model, _batches()[0], ["w8a8"], progress=False)


def test_eval_takes_a_model_loaded_from_gguf():
    """transformers dequantizes a GGUF file to float and keeps quant_method 'gguf' in the
    config: that model is the float baseline (the suite's real models are GGUF files)."""
    from transformers.utils.quantization_config import QuantizationMethod

    model = _tiny_llama()
    model.config.quantization_config = SimpleNamespace(quant_method=QuantizationMethod.GGUF)
    rows = evaluate.evaluate(model, _batches()[0], ["w8a8"], progress=False)
    assert rows[0]["recipe"] == "w8a8"
    model.config.quantization_config = {"quant_method": "compressed-tensors"}
    with pytest.raises(ValueError, match="already quantized .*'compressed-tensors'"):
        evaluate.evaluate(model, _batches()[0], ["w8a8"], progress=False)


# ------------------------------------------------------------------ 9: plans keep smoothing
def _smoothed(plan_of=None):
    """A tiny Llama quantized with SmoothQuant (every layer "+smooth"), and its plan."""
    model, batches = _tiny_llama(outliers=True), _batches()
    plan = Plan.from_groups(model, {"*": "w8a8-asym+smooth"})
    quantize_model(model, plan=plan, calibration=qtriton.calibrate(model, batches))
    return model, plan


def test_plan_of_a_smoothed_model_says_smooth():
    model, plan = _smoothed()
    folded = [n for n, m in model.named_modules() if isinstance(m, Int8Linear) and m.smoothing_folded_into]
    assert folded and all(not model.get_submodule(n).scheme.smoothed for n in folded)  # no input_scale
    assert _quantized_part(Plan.of_model(model)) == plan.schemes


def _quantized_part(plan: Plan) -> dict:
    return {name: scheme for name, scheme in plan.schemes.items() if scheme is not None}


def test_plan_of_a_loaded_smoothed_model_is_the_plan_it_was_made_with(tmp_path):
    from qtriton.formats.hf import from_pretrained, save_pretrained

    model, plan = _smoothed()
    folder = save_pretrained(model, tmp_path / "smoothed")
    config = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert config["qtriton_smoothing_folds"]["model.layers.0.self_attn.q_proj"] == "model.layers.0.input_layernorm"
    loaded = from_pretrained(folder)
    assert _quantized_part(Plan.of_model(loaded)) == plan.schemes
    path = tmp_path / "smoothed.safetensors"
    save_quantized(model, path)
    skeleton = _tiny_llama(seed=3)
    load_quantized(skeleton, path)
    assert _quantized_part(Plan.of_model(skeleton)) == plan.schemes


def test_compressed_tensors_and_transformers_read_a_folder_with_the_smoothing_record(tmp_path):
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.quantization import QuantizationConfig

    from qtriton.formats.hf import save_pretrained

    model, _ = _smoothed()
    folder = save_pretrained(model, tmp_path / "smoothed")
    config = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert QuantizationConfig.model_validate(config).config_groups
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = _batches()[0]
    expected, got = logits(model, ids), logits(loaded, ids)
    assert float((got - expected).abs().max()) <= 1e-3 * float(expected.abs().max())


def test_a_bad_smoothing_record_is_refused(tmp_path):
    from qtriton.formats.hf import from_pretrained, save_pretrained

    model, _ = _smoothed()
    folder = save_pretrained(model, tmp_path / "smoothed")
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"]["qtriton_smoothing_folds"] = {"model.nothing": "model.norm"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"qtriton_smoothing_folds.*model\.nothing"):
        from_pretrained(folder)


# ------------------------------------------------------- 10: report --original on smoothed layers
def test_report_original_does_not_compare_folded_layers(tmp_path, capsys):
    from safetensors.torch import save_file

    from qtriton.formats.hf import save_pretrained
    from qtriton.report import format_table, report_checkpoint

    float_model = _tiny_llama(outliers=True)
    original = tmp_path / "float.safetensors"
    save_file({k: v.contiguous() for k, v in float_model.state_dict().items()}, str(original))
    model, _ = _smoothed()
    folder = save_pretrained(model, tmp_path / "smoothed")
    rep = report_checkpoint(folder, original=original)
    by_name = {layer.name: layer for layer in rep.layers}
    # q_proj's columns took the norm's 1/s; v_proj's rows took o_proj's; both differ from the original.
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                 "model.layers.0.mlp.down_proj"):
        assert by_name[name].smoothing is not None, name
        assert by_name[name].estimated, name
        assert by_name[name].snr_db > 30, (name, by_name[name].snr_db)
    text = format_table(rep)
    assert "SmoothQuant" in text and "cannot be compared" in text
    assert json.loads(json.dumps(rep.to_dict()))["layers"][0]["smoothing"] is not None


def test_report_original_measures_an_input_scale_layer_against_its_smoothed_weight(tmp_path):
    """No norm to fold into: the layers keep 1/s as input_scale and quantize W / input_scale,
    which is what the report compares with (the original W itself differs by s per column)."""
    from safetensors.torch import save_file

    from qtriton.report import format_table, report_checkpoint

    model = _mlp()
    with torch.no_grad():
        model[0].weight[:, 3] *= 0.01
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "float.safetensors"))
    x = torch.randn(64, 32)
    x[:, 3] *= 100  # an outlier channel: s far from 1 there
    quantize_model(model, calibration=qtriton.calibrate(model, [x]), min_features=8, scheme="w8a8-asym")
    save_quantized(model, tmp_path / "q.safetensors")
    rep = report_checkpoint(tmp_path / "q.safetensors", original=tmp_path / "float.safetensors")
    assert [layer.scheme for layer in rep.layers] == ["w8a8-asym+smooth"] * 2
    for layer in rep.layers:
        assert not layer.estimated and layer.snr_db > 40 and layer.smoothing.startswith("input_scale"), layer
    assert "compared with the original weight / input_scale" in format_table(rep)


def test_report_original_warns_when_float_tensors_differ(tmp_path):
    """A folder without qtriton's record (another writer's SmoothQuant): the norms it stores
    differ from the original's, and the report says so."""
    from safetensors.torch import save_file

    from qtriton.formats.hf import save_pretrained
    from qtriton.report import format_table, report_checkpoint

    float_model = _tiny_llama(outliers=True)
    original = tmp_path / "float.safetensors"
    save_file({k: v.contiguous() for k, v in float_model.state_dict().items()}, str(original))
    model, _ = _smoothed()
    folder = save_pretrained(model, tmp_path / "smoothed")
    config = json.loads((folder / "config.json").read_text())
    del config["quantization_config"]["qtriton_smoothing_folds"]
    (folder / "config.json").write_text(json.dumps(config))
    rep = report_checkpoint(folder, original=original)
    assert "model.layers.0.input_layernorm.weight" in rep.changed_float
    assert "differ from the original" in format_table(rep)


# ----------------------------------------------------------------- 12: user errors, no traceback
def test_calibrate_refuses_a_string_batch():
    model = _tiny_llama()
    with pytest.raises(TypeError, match=r"calibration batch 0 is a str.*tokenize"):
        qtriton.calibrate(model, ["hello"])


def test_calibrate_and_plan_refuse_a_batch_without_tokens():
    model = _tiny_llama()
    empty = torch.zeros(1, 0, dtype=torch.long)
    with pytest.raises(ValueError, match=r"calibration batch 0 holds an empty tensor \(shape \(1, 0\)\)"):
        qtriton.calibrate(model, [empty])
    with pytest.raises(ValueError, match=r"batch 1 holds an empty tensor \(shape \(1, 0\)\)"):
        qtriton.plan(model, [_batches()[0], empty], target_kl=1, progress=False)
    with pytest.raises(ValueError, match=r"batch 0 holds an empty tensor"):
        qtriton.sensitivity(model, [{"input_ids": empty}], progress=False)


def test_calibrate_takes_a_tokenizers_batch_encoding():
    """What a tokenizer returns (a BatchEncoding, a UserDict, not a dict) is keyword arguments."""
    model = _tiny_llama()
    ids = _batches()[0]
    encoding = transformers.BatchEncoding({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert qtriton.calibrate(model, [encoding]).stats


class _Tokenizer:
    """One token per character."""

    def __call__(self, text, return_tensors="pt"):
        return SimpleNamespace(input_ids=torch.tensor([[ord(c) % VOCAB for c in text]], dtype=torch.long))


@pytest.fixture
def texts(tmp_path):
    (tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog " * 2)
    (tmp_path / "c.txt").write_text("pack my box with five dozen liquor jugs " * 2)
    (tmp_path / "empty.txt").write_text("")
    return tmp_path


def _not_loaded(source):
    raise AssertionError("the model was loaded before the arguments were checked")


@pytest.mark.parametrize(("option", "needles"), [
    (["--calibration", "{d}/empty.txt", "--recipe", "w8a8+smooth"], ("--calibration", "empty")),
    (["--threads", "-1"], ("--threads", "-1")),
    (["--threads", "0"], ("--threads",)),
    (["--recipe", "w8a8+smooth"], ("--calibration",)),
    (["--recipe", ""], ("--recipe", "no scheme")),
    (["--recipe", ",,"], ("--recipe", "no scheme")),
    (["--calibration", "{d}/missing.txt"], ("--calibration", "missing.txt")),
    (["--plan", "{d}/missing.json"], ("--plan", "missing.json")),
    (["--plan", "{d}/t.txt"], ("--plan", "JSON")),
    (["--plan", "{d}/empty_plan.json"], ("--plan", "quantizes no layer")),
])
def test_eval_checks_its_arguments_before_loading(texts, monkeypatch, capsys, option, needles):
    (texts / "empty_plan.json").write_text(json.dumps({"schemes": {}}))
    monkeypatch.setattr(evaluate, "load", _not_loaded)
    option = [o.format(d=texts) for o in option]
    assert main(["eval", "tiny", "--text", str(texts / "t.txt"), *option]) == 2
    _one_error_line(capsys, "qtriton eval: error:", *needles)


def test_eval_names_the_text_option(texts, monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "load", _not_loaded)
    assert main(["eval", "tiny", "--text", str(texts / "nofile.txt")]) == 2
    _one_error_line(capsys, "--text", "nofile.txt")


def test_eval_text_without_tokens_is_one_line(texts, monkeypatch, capsys):
    model = _tiny_llama()
    monkeypatch.setattr(evaluate, "load", lambda source: (model, _Tokenizer()))
    (texts / "blank.txt").write_text("\n")
    assert main(["eval", "tiny", "--text", str(texts / "t.txt"), "--calibration", str(texts / "blank.txt"),
                 "--recipe", "w8a8+smooth"]) == 2
    _one_error_line(capsys, "--calibration")


def test_eval_progress_only_on_a_terminal(texts, monkeypatch, capsys):
    model = _tiny_llama()
    monkeypatch.setattr(evaluate, "load", lambda source: (model, _Tokenizer()))
    assert main(["eval", "tiny", "--text", str(texts / "t.txt"), "--recipe", "w8a8", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and json.loads(captured.out)["rows"]
    assert main(["eval", "tiny", "--text", str(texts / "t.txt"), "--recipe", "w8a8", "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_evaluate_refuses_no_recipe_and_an_empty_plan():
    model = _tiny_llama()
    ids = _batches()[0]
    with pytest.raises(ValueError, match="no recipe"):
        evaluate.evaluate(model, ids, [], progress=False)
    with pytest.raises(ValueError, match="quantizes no layer"):
        evaluate.evaluate(model, ids, [Plan({})], progress=False)


# ---------------------------------------------------------------------- 14: version-1 files
def _as_version_1(path, flags: dict) -> None:
    def on_metadata(header):
        qtriton_header = json.loads(header["__metadata__"][METADATA_KEY])
        qtriton_header["version"] = 1
        for spec in qtriton_header["layers"].values():
            spec.pop("scheme", None)
            spec.update(flags)
        header["__metadata__"][METADATA_KEY] = json.dumps(qtriton_header)

    edit_header(path, on_metadata)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16))


def test_version_1_weight_only_asymmetric_file_loads_as_w8a16(tmp_path, rng):
    """qtriton 0.1 wrote weight_only layers with whatever symmetric_activations was given:
    W8A16 has no activation codes, so the flag changed nothing and loads as W8A16."""
    model = _mlp()
    quantize_model(model, scheme="w8a16")
    path = tmp_path / "v1.safetensors"
    save_quantized(model, path)
    _as_version_1(path, {"symmetric_activations": False, "weight_only": True})
    skeleton = _mlp()
    load_quantized(skeleton, path)
    assert skeleton[0].scheme == W8A16
    x = torch.from_numpy(rng.standard_normal((5, 32), dtype=np.float32))
    assert torch.equal(skeleton(x), model(x))


def test_version_1_static_files_are_refused_with_the_reason(tmp_path):
    model = _mlp()
    batches = [torch.randn(4, 32)]
    quantize_model(model, calibration=qtriton.calibrate(model, batches, alpha=None, static=True))
    path = tmp_path / "v1.safetensors"
    save_quantized(model, path)
    _as_version_1(path, {"symmetric_activations": True, "static_activations": True})
    with pytest.raises(ValueError, match=r"version 1 .*static.*\[-127, 127\].*\[-128, 127\]"):
        load_quantized(_mlp(), path)


# ------------------------------------------------------------------------ 15 covered above


# ---------------------------------------------------------------------- 17: float8 and meta
float8 = pytest.mark.skipif(not hasattr(torch, "float8_e4m3fn"), reason="no float8 in this torch")


@float8
def test_from_float_and_quantize_model_refuse_float8():
    linear = nn.Linear(32, 16).to(torch.float8_e4m3fn)
    with pytest.raises(TypeError, match=r"linear\.weight is torch\.float8_e4m3fn: float8 is refused"):
        Int8Linear.from_float(linear)
    model = _mlp().to(torch.float8_e4m3fn)
    with pytest.raises(TypeError, match=r"0\.weight is torch\.float8_e4m3fn: float8 is refused"):
        quantize_model(model)
    assert isinstance(model[0], nn.Linear)


@float8
def test_quantization_error_refuses_float8():
    x = torch.randn(8, 16)
    with pytest.raises(TypeError, match=r"original is torch\.float8_e4m3fn: float8 is refused"):
        api.quantization_error(x.to(torch.float8_e4m3fn), None, x)
    with pytest.raises(TypeError, match=r"dequantized is torch\.float8_e4m3fn: float8 is refused"):
        api.quantization_error(x, None, x.to(torch.float8_e4m3fn))


def test_error_metrics_refuse_meta_tensors():
    meta = torch.empty(8, 16, device="meta")
    with pytest.raises(ValueError, match=r"x is a meta tensor .*no values"):
        api.compare_quantization_methods(meta)
    with pytest.raises(ValueError, match=r"original is a meta tensor .*no values"):
        api.quantization_error(meta, None, torch.zeros(8, 16))


# --------------------------------------------------------------------- 18: QuantScheme inputs
def test_scheme_weight_bits_numpy_integer_is_a_plain_int(tmp_path):
    scheme = QuantScheme(weight_bits=np.int64(8))
    assert type(scheme.weight_bits) is int and scheme == W8A8
    layer = Int8Linear.from_float(nn.Linear(32, 16), scheme)
    save_quantized(layer, tmp_path / "layer.safetensors")  # JSON-serialisable header
    with pytest.raises(TypeError, match=r"QuantScheme\.weight_bits must be an int, got '8'"):
        QuantScheme(weight_bits="8")
    with pytest.raises(TypeError, match=r"QuantScheme\.activations must be a str"):
        QuantScheme(activations=None)


def test_scheme_from_dict_needs_every_key():
    with pytest.raises(ValueError, match=r"a scheme lacks keys \['activation_symmetric', 'activations'"):
        QuantScheme.from_dict({})
    assert QuantScheme.from_dict(W8A8_ASYMMETRIC.to_dict()) == W8A8_ASYMMETRIC


def test_compressed_tensors_num_bits_as_a_string_is_named():
    weights = {"num_bits": "8", "type": "int", "symmetric": True, "strategy": "channel"}
    with pytest.raises(ValueError, match=r"weights: num_bits must be an integer, got '8'"):
        QuantScheme.from_compressed_tensors(weights)
    with pytest.raises(ValueError, match=r"input_activations: num_bits must be an integer, got '8'"):
        QuantScheme.from_compressed_tensors({**weights, "num_bits": 8}, {"num_bits": "8", "strategy": "token",
                                                                         "dynamic": True})


# -------------------------------------------------------------------------- 19: plans by hand
def test_plan_of_a_quantized_head_is_not_dropped_silently():
    model = _tiny_llama()
    quantize_model(model, keep_output_head=False)  # the default, rotated: the head too
    plan = Plan.of_model(model)
    assert plan.schemes["lm_head"] == DEFAULT.scheme.for_layer(model.lm_head.in_features) and not plan.fell_back
    fresh = _tiny_llama()
    with pytest.raises(ValueError, match=r"plan\['lm_head'\] is w8a8\+had\d+.*keep_output_head=False"):
        quantize_model(fresh, plan=plan)
    assert not any(isinstance(m, Int8Linear) for m in fresh.modules())
    quantize_model(fresh, plan=plan, keep_output_head=False)
    assert Plan.of_model(fresh).schemes == plan.schemes


def test_plan_from_groups_can_name_the_output_head():
    model = _tiny_llama()
    plan = Plan.from_groups(model, {"lm_head": "w8a8", "*": "w8a16"})
    assert plan.schemes["lm_head"] == W8A8
    assert plan.schemes["model.layers.0.mlp.down_proj"] == W8A16
    assert "lm_head" not in layer_groups(model)  # measured groups still leave it out
    assert "lm_head" not in Plan.from_groups(model, {"*": "w8a16"}).schemes


@pytest.mark.parametrize(("value", "message"), [
    ({"schemes": {}, "kl": "abc"}, r"plan: kl must be a number or null, got 'abc'"),
    ({"schemes": {}, "top1": [1]}, r"plan: top1 must be a number or null"),
    ({"schemes": {}, "groups": ["*.q_proj"]}, r"plan: groups must be an object"),
    ({"schemes": {}, "groups": {"*": 3}}, r"plan: groups\['\*'\] must be a scheme name or 'float'"),
    ({"schemes": {}, "target": 5}, r"plan: target must be a string"),
    ({"schemes": {"a": "w8a8"}}, r"plan: schemes\['a'\]: a scheme must be an object"),
    ({"schemes": {}, "colour": 1}, r"plan: unknown keys \['colour'\]"),
])
def test_plan_from_dict_is_checked(value, message):
    with pytest.raises(ValueError, match=message):
        Plan.from_dict(value)


def test_plan_round_trips_through_json():
    model = _tiny_llama()
    plan = Plan.from_groups(model, {"*.down_proj": "w8a16", "*": "w8a8-asym"})
    plan.kl, plan.top1 = 0.01, 0.9
    again = Plan.from_dict(json.loads(plan.to_json()))
    assert again.schemes == plan.schemes and str(again) == str(plan)


# ------------------------------------------------------------ 20: QTRITON_GEMM and out_dtype
def test_a_bad_qtriton_gemm_is_refused_on_every_backend(monkeypatch):
    monkeypatch.setenv("QTRITON_GEMM", "bogus")
    message = "QTRITON_GEMM must be one of tl, gluon, got 'bogus'"
    with pytest.raises(ValueError, match=message):
        api.quantize_symmetric(np.ones(4, dtype=np.float32))
    with pytest.raises(ValueError, match=message):
        api.quantize_symmetric(torch.ones(4))
    monkeypatch.delenv("QTRITON_GEMM")
    layer = Int8Linear.from_float(nn.Linear(32, 16))
    monkeypatch.setenv("QTRITON_GEMM", "bogus")
    with pytest.raises(ValueError, match=message):
        layer(torch.ones(2, 32))
    monkeypatch.setenv("QTRITON_GEMM", " Gluon ")
    assert layer(torch.ones(2, 32)).shape == (2, 16)  # a valid setting, whatever the backend


def test_out_dtype_spellings_are_documented_and_named():
    a, b = np.ones((2, 4), dtype=np.int8), np.ones((4, 3), dtype=np.int8)
    out = api.quantized_matmul(torch.from_numpy(a), 1.0, torch.from_numpy(b), 1.0, out_dtype="bf16")
    assert out.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"out_dtype must be float32, float16 or bfloat16 \(or fp32, fp16, half, "
                                         r"bf16\), got 'bfloat'"):
        api.quantized_matmul(a, 1.0, b, 1.0, out_dtype="bfloat")
    assert "bf16" in api.quantized_matmul.__doc__
