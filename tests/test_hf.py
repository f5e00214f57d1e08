"""Hugging Face folders in compressed-tensors format (qtriton.formats.hf): export, import, and the
real libraries reading them. Tiny Llama models built from a LlamaConfig (hidden 64, 2
layers), no network; transformers and compressed-tensors are optional (skipped without)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

import qtriton
from qtriton.formats.hf import export_state_dict, from_pretrained, quantization_config, save_pretrained
from qtriton.model.nn import Int8Linear, quantize_model
from qtriton.model.scheme import QuantScheme
from qtriton.testing import assert_close

from tests.cases import logits, token_ids

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")


def _tiny_llama(seed: int = 0, tie: bool = False) -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tie,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1, so that a norm loaded wrong shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


@pytest.fixture
def quantized():
    model = _tiny_llama()
    summary = quantize_model(model, scheme="w8a8-asym", min_features=16)
    assert "lm_head" not in summary.replaced
    return model


def test_export_writes_the_compressed_tensors_layout(quantized, tmp_path):
    from safetensors import safe_open

    folder = save_pretrained(quantized, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    quant = config["quantization_config"]
    assert quant["quant_method"] == "compressed-tensors" and quant["format"] == "int-quantized"
    assert quant["quantization_status"] == "compressed" and quant["ignore"] == ["lm_head"]
    assert quant["config_groups"] == {"group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False},
        "input_activations": {"num_bits": 8, "type": "int", "symmetric": False, "strategy": "token", "dynamic": True},
        "output_activations": None, "format": "int-quantized"}}
    assert (folder / "generation_config.json").is_file()
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        q = "model.layers.1.mlp.down_proj"
        assert f.get_slice(f"{q}.weight").get_dtype() == "I8" and f.get_slice(f"{q}.weight").get_shape() == [64, 96]
        assert f.get_slice(f"{q}.weight_scale").get_dtype() == "F32"
        assert f.get_slice(f"{q}.weight_scale").get_shape() == [64, 1]
        assert torch.equal(f.get_tensor(f"{q}.weight"), quantized.get_submodule(q).weight)
        assert f.get_slice("lm_head.weight").get_dtype() == "F32"
        assert not any("weight_colsum" in k for k in f.keys())


def test_round_trip_is_bit_identical_and_sharded(quantized, tmp_path, rng):
    folder = save_pretrained(quantized, tmp_path / "out", max_shard_size="20KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    loaded = from_pretrained(folder, dtype=torch.float32)
    assert isinstance(loaded.model.layers[1].mlp.down_proj, Int8Linear)
    assert loaded.model.layers[0].self_attn.q_proj.scheme == QuantScheme.parse("w8a8-asym")
    assert type(loaded.lm_head) is nn.Linear
    ids = token_ids(rng, 12)
    assert torch.equal(logits(loaded, ids), logits(quantized, ids))


def test_tied_embeddings_are_stored_once_and_tied_again(tmp_path, rng):
    model = _tiny_llama(tie=True)
    quantize_model(model)
    folder = save_pretrained(model, tmp_path / "tied")
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert "lm_head.weight" not in f.keys() and "model.embed_tokens.weight" in f.keys()
    loaded = from_pretrained(folder, dtype=torch.float32)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    ids = token_ids(rng, 12)
    assert torch.equal(logits(loaded, ids), logits(model, ids))


def test_a_quantized_head_tied_to_the_embedding_is_refused(tmp_path):
    model = _tiny_llama(tie=True)
    quantize_model(model, keep_output_head=False)
    with pytest.raises(ValueError, match="lm_head is quantized but the config ties it"):
        save_pretrained(model, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_mixed_schemes_get_a_group_each_and_round_trip(tmp_path, rng):
    model = _tiny_llama()
    quantize_model(model, scheme="w8a16", include="*.mlp.*")
    quantize_model(model, scheme="w8a8", include="*.self_attn.*")
    quant = quantization_config(model)
    assert quant["format"] == "mixed-precision"
    groups = {g["format"]: g for g in quant["config_groups"].values()}
    assert groups["pack-quantized"]["input_activations"] is None
    # One regex per layer type a group holds entirely, as llm-compressor writes them.
    assert groups["pack-quantized"]["targets"] == ["re:.*gate_proj$", "re:.*up_proj$", "re:.*down_proj$"]
    assert groups["int-quantized"]["targets"] == ["re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$", "re:.*o_proj$"]
    folder = save_pretrained(model, tmp_path / "mixed")
    loaded = from_pretrained(folder, dtype=torch.float32)
    assert loaded.model.layers[0].mlp.up_proj.scheme.weight_only
    assert not loaded.model.layers[0].self_attn.o_proj.scheme.weight_only
    ids = token_ids(rng, 12)
    assert torch.equal(logits(loaded, ids), logits(model, ids))


def test_a_group_holding_part_of_a_layer_type_names_its_layers(tmp_path):
    model = _tiny_llama()
    quantize_model(model, scheme="w8a8", include="*.self_attn.*")
    quantize_model(model, scheme="w8a16", include="model.layers.1.mlp.*")  # layer 0's MLP stays float
    groups = {g["format"]: g for g in quantization_config(model)["config_groups"].values()}
    assert groups["pack-quantized"]["targets"] == [f"model.layers.1.mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")]
    assert groups["int-quantized"]["targets"][0] == "re:.*q_proj$"


def test_w8a16_layers_are_packed_by_compressed_tensors_as_vllm_reads_them(tmp_path, rng):
    """W8A16 layers are written pack-quantized (vLLM serves int8 weight-only layers only so):
    the stored tensors are what compressed-tensors' own compressor makes of codes * scales,
    and they load back bit for bit."""
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig
    from safetensors.torch import load_file

    model = _tiny_llama()
    quantize_model(model, scheme="w8a16", min_features=16)
    q = "model.layers.1.mlp.down_proj"  # in_features 96
    layer = model.get_submodule(q)
    with torch.no_grad():  # the extreme codes, -128 included (llm-compressor's folders hold it)
        layer.weight[0, :4] = torch.tensor([-128, 127, -1, 0], dtype=torch.int8)
    folder = save_pretrained(model, tmp_path / "w8a16")
    quant = json.loads((folder / "config.json").read_text())["quantization_config"]
    parsed = QuantizationConfig.model_validate(quant)
    assert parsed.format == "pack-quantized" and quant["config_groups"]["group_0"]["targets"] == ["Linear"]
    scheme = parsed.config_groups["group_0"]
    assert (scheme.weights.num_bits, scheme.weights.strategy, scheme.input_activations) == (8, "channel", None)
    state = load_file(str(folder / "model.safetensors"))
    assert f"{q}.weight" not in state
    assert state[f"{q}.weight_packed"].dtype == torch.int32 and state[f"{q}.weight_packed"].shape == (64, 24)
    assert state[f"{q}.weight_shape"].tolist() == [64, 96]
    compressor = BaseCompressor.load_from_registry("pack-quantized")
    dense = {"weight": layer.weight.float() * layer.weight_scale[:, None], "weight_scale": layer.weight_scale[:, None]}
    theirs = compressor.compress(dense, scheme)
    assert torch.equal(theirs["weight_packed"], state[f"{q}.weight_packed"])
    assert theirs["weight_shape"].tolist() == state[f"{q}.weight_shape"].tolist()
    back = compressor.decompress({k: state[f"{q}.{k}"] for k in ("weight_packed", "weight_shape", "weight_scale")}, scheme)
    assert torch.equal(back["weight"], dense["weight"])
    loaded = from_pretrained(folder, dtype=torch.float32)
    assert torch.equal(loaded.get_submodule(q).weight, layer.weight)
    ids = token_ids(rng, 12)
    assert torch.equal(logits(loaded, ids), logits(model, ids))


def test_naive_quantized_w8a16_folders_still_load(tmp_path, rng):
    """The earlier W8A16 form (format naive-quantized, int8 weight as W8A8 layers store it)."""
    from safetensors.torch import load_file, save_file

    model = _tiny_llama()
    quantize_model(model, scheme="w8a16", min_features=16)
    folder = save_pretrained(model, tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"]["format"] = "naive-quantized"
    config["quantization_config"]["config_groups"]["group_0"]["format"] = "naive-quantized"
    (folder / "config.json").write_text(json.dumps(config))
    state = load_file(str(folder / "model.safetensors"))
    for name, layer in model.named_modules():
        if isinstance(layer, Int8Linear):
            del state[f"{name}.weight_packed"], state[f"{name}.weight_shape"]
            state[f"{name}.weight"] = layer.weight.clone()
    save_file(state, str(folder / "model.safetensors"))
    loaded = from_pretrained(folder, dtype=torch.float32)
    ids = token_ids(rng, 12)
    assert torch.equal(logits(loaded, ids), logits(model, ids))


@pytest.mark.parametrize("edit, message", [
    (lambda s, q: s.__setitem__(f"{q}.weight_shape", torch.tensor([64, 95])), "weight_shape is \\[64, 95\\]"),
    (lambda s, q: s.pop(f"{q}.weight_shape"), "weight_shape is missing"),
    (lambda s, q: s.__setitem__(f"{q}.weight_packed", s[f"{q}.weight_packed"].to(torch.int64)), "weight_packed is int64"),
    (lambda s, q: s.__setitem__(f"{q}.weight", torch.zeros(64, 96, dtype=torch.int8)), "weight and weight_packed"),
])
def test_packed_file_edits_are_refused_on_load(tmp_path, edit, message):
    from safetensors.torch import load_file, save_file

    model = _tiny_llama()
    quantize_model(model, scheme="w8a16", min_features=16)
    folder = save_pretrained(model, tmp_path / "w8a16")
    state = load_file(str(folder / "model.safetensors"))
    edit(state, "model.layers.1.mlp.down_proj")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=message):
        from_pretrained(folder)


@pytest.mark.parametrize("plan, named", [
    ({"*.q_proj": "w8a8", "*.k_proj": "w8a16", "*.v_proj": "w8a8"}, "k_proj w8a16"),
    ({"*.gate_proj": "w8a8"}, "up_proj float"),
])
def test_fused_layers_of_mixed_schemes_are_refused_before_writing(tmp_path, plan, named):
    """vLLM loads q/k/v and gate/up as one fused layer with one scheme: such a folder would not
    start there, so it is refused with the layers named, and nothing is written."""
    model = _tiny_llama()
    for pattern, scheme in plan.items():
        quantize_model(model, scheme=scheme, include=pattern, min_features=16)
    with pytest.raises(ValueError, match=f"fuses q_proj/k_proj/v_proj and gate_proj/up_proj.*{named}"):
        save_pretrained(model, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_unfolded_smoothing_is_refused_with_the_layer_names(tmp_path):
    model = _tiny_llama()
    layer = model.model.layers[0].self_attn.o_proj
    model.model.layers[0].self_attn.o_proj = Int8Linear.from_float(layer, "w8a8+smooth", input_scale=torch.ones(64))
    with pytest.raises(ValueError, match=r"1 layers .*SmoothQuant input_scale.*: model\.layers\.0\.self_attn\.o_proj;"):
        save_pretrained(model, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_static_activations_export_as_input_scale(tmp_path, rng):
    model = _tiny_llama()
    calibration = qtriton.calibrate(model, [token_ids(rng, 16)], alpha=None, static=True)
    quantize_model(model, calibration=calibration)
    state = export_state_dict(model)
    key = "model.layers.0.self_attn.q_proj.input_scale"
    assert state[key].shape == (1,) and float(state[key]) == float(model.model.layers[0].self_attn.q_proj.activation_scale)
    folder = save_pretrained(model, tmp_path / "static")
    loaded = from_pretrained(folder, dtype=torch.float32)
    ids = token_ids(rng, 12)
    assert torch.equal(logits(loaded, ids), logits(model, ids))


# ------------------------------------------------------------------------------ checks
def _layer(model):
    return model.model.layers[0].self_attn.k_proj


_BAD_SCALE = r"k_proj\.weight_scale must be positive, finite and a normal float32"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda l: l.weight_scale.__setitem__(0, 0.0), _BAD_SCALE),
        (lambda l: l.weight_scale.__setitem__(0, -1.0), _BAD_SCALE),
        (lambda l: l.weight_scale.__setitem__(0, float("nan")), _BAD_SCALE),
        (lambda l: l.weight_scale.__setitem__(0, float("inf")), _BAD_SCALE),
        (lambda l: l.weight_scale.__setitem__(0, 1e-40), _BAD_SCALE),  # denormal
    ],
    ids=["zero", "negative", "nan", "inf", "denormal"],
)
def test_bad_scales_are_refused_on_save_and_on_load(quantized, tmp_path, edit, message):
    folder = save_pretrained(quantized, tmp_path / "good")
    with torch.no_grad():
        edit(_layer(quantized))
    with pytest.raises(ValueError, match=message):
        save_pretrained(quantized, tmp_path / "bad")
    # The same tensor edited in the file: the same message on load.
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    state["model.layers.0.self_attn.k_proj.weight_scale"] = _layer(quantized).weight_scale.reshape(-1, 1).clone()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=message):
        from_pretrained(folder)


def test_bfloat16_model_exports_float32_scales(quantized, tmp_path, rng):
    quantized.to(torch.bfloat16)
    folder = save_pretrained(quantized, tmp_path / "bf16")
    loaded = from_pretrained(folder)
    assert loaded.model.embed_tokens.weight.dtype == torch.bfloat16
    for name, layer in quantized.named_modules():
        if isinstance(layer, Int8Linear):
            stored = loaded.get_submodule(name).weight_scale
            assert stored.dtype == torch.float32 and torch.equal(stored, layer.weight_scale.float())
    # .to(bfloat16) also rounded the original's rotary table, which the loaded model computes
    # afresh in float32: close, not equal.
    ids = token_ids(rng, 12)
    expected = logits(quantized, ids)
    assert_close(logits(loaded, ids), expected, rtol=0, atol=0.05 * float(expected.abs().max()), name="logits")


def test_file_edits_are_refused_on_load(quantized, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_pretrained(quantized, tmp_path / "out")
    original = load_file(str(folder / "model.safetensors"))
    edits = {
        "model.norm.weight": (original["model.norm.weight"].to(torch.int32), r"model\.norm\.weight is int32.*float"),
        "model.layers.0.self_attn.k_proj.weight": (original["model.layers.0.self_attn.k_proj.weight"].float(),
                                                   r"k_proj\.weight is float32 \[32, 64\], .* needs int8"),
        "model.layers.0.self_attn.k_proj.weight_scale": (original["model.layers.0.self_attn.k_proj.weight_scale"][:8],
                                                         r"k_proj\.weight_scale is float32 \[8, 1\]"),
    }
    for key, (value, message) in edits.items():
        save_file({**original, key: value}, str(folder / "model.safetensors"), metadata={"format": "pt"})
        with pytest.raises(ValueError, match=message):
            from_pretrained(folder)
    state = dict(original)
    del state["model.layers.1.mlp.up_proj.weight_scale"]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"up_proj\.weight_scale is missing"):
        from_pretrained(folder)


@pytest.mark.parametrize(
    "group, message",
    [
        ({"weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32}},
         "group_size=32 is not supported"),
        ({"weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
          "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True}},
         "type='float'"),
        ({"weights": {"num_bits": 8, "type": "int", "symmetric": False, "strategy": "channel"}}, "symmetric=False"),
    ],
    ids=["int4-group", "fp8", "asymmetric-weights"],
)
def test_schemes_int8linear_cannot_run_are_refused_by_name(quantized, tmp_path, group, message):
    folder = save_pretrained(quantized, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"]["config_groups"]["group_0"].update(group)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"14 layers have schemes Int8Linear cannot run: model.layers.0.self_attn.q_proj "
                                         f"\\(group_0: .*{message}"):
        from_pretrained(folder)


def test_float_folder_and_missing_files_are_named(tmp_path):
    model = _tiny_llama()
    model.save_pretrained(tmp_path / "float")
    with pytest.raises(ValueError, match="has no quantization_config"):
        from_pretrained(tmp_path / "float")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        from_pretrained(tmp_path / "nothing")
    with pytest.raises(TypeError, match="has no transformers config"):
        save_pretrained(nn.Sequential(Int8Linear(32, 32)), tmp_path / "x")
    with pytest.raises(ValueError, match="max_shard_size must be .* got '5 parsecs'"):
        save_pretrained(model, tmp_path / "x", max_shard_size="5 parsecs")
    assert not (tmp_path / "x").exists()


def test_from_pretrained_materialises_no_float_weight_of_a_quantized_layer(quantized, tmp_path, monkeypatch):
    """Every quantized layer is built on meta and gets the stored int8 tensors: no float
    (out, in) matrix is ever allocated for it."""
    folder = save_pretrained(quantized, tmp_path / "out")
    made = []
    original = nn.Linear.reset_parameters
    monkeypatch.setattr(nn.Linear, "reset_parameters",
                        lambda self: made.append(self.weight.device.type) or original(self))
    from_pretrained(folder)
    assert set(made) <= {"meta"}


def test_report_reads_an_exported_sharded_folder(tmp_path):
    from qtriton.report import format_table, report_checkpoint

    model = _tiny_llama()
    quantize_model(model, scheme="w8a8-asym")
    folder = save_pretrained(model, tmp_path / "out", max_shard_size="20KB")
    rep = report_checkpoint(folder)
    names = [layer.name for layer in rep.layers]
    assert len(names) == 14 and names[0] == "model.layers.0.mlp.down_proj" and names[-1].startswith("model.layers.1.")
    assert {layer.scheme for layer in rep.layers} == {"w8a8-asym"}
    assert "lm_head.weight" in rep.float_tensors and "w8a8-asym" in format_table(rep)
    float_folder = tmp_path / "float"
    _tiny_llama().save_pretrained(float_folder)
    against = report_checkpoint(folder, original=float_folder / "model.safetensors")
    assert not any(layer.estimated for layer in against.layers) and min(l.snr_db for l in against.layers) > 30


def test_report_reads_pack_quantized_layers_of_a_mixed_folder(tmp_path):
    from qtriton.report import report_checkpoint

    model = _tiny_llama()
    quantize_model(model, scheme="w8a16", include="*.mlp.*")
    quantize_model(model, scheme="w8a8", include="*.self_attn.*")
    rep = report_checkpoint(save_pretrained(model, tmp_path / "mixed"))
    schemes = {layer.name: layer.scheme for layer in rep.layers}
    assert len(schemes) == 14 and schemes["model.layers.1.mlp.up_proj"] == "w8a16"
    assert schemes["model.layers.0.self_attn.k_proj"] == "w8a8"


def test_report_gives_the_int8_flop_fraction_of_a_folder(tmp_path, capsys):
    """int8 x int8 share of the linear FLOPs from the folder alone: the int8 layers' codes and
    the weights of the layers config.json's `ignore` lists (the output head aside), as
    planning counts it on the model; a class name in `ignore` leaves it over what is known."""
    from qtriton.accuracy.planning import int8_flop_fraction
    from qtriton.report import format_table, report_checkpoint

    model = _tiny_llama()
    quantize_model(model, scheme="w8a16", include="*.mlp.down_proj")
    quantize_model(model, scheme="w8a8", include="*.self_attn.*")  # gate/up stay float
    folder = save_pretrained(model, tmp_path / "mixed")
    rep = report_checkpoint(folder)
    # Per layer: q, o 64x64, k, v 32x64 int8 x int8; gate, up 96x64 float, down 64x96 W8A16.
    attention, mlp = 2 * 64 * 64 + 2 * 32 * 64, 3 * 96 * 64
    assert rep.int8_flops == pytest.approx(attention / (attention + mlp)) and rep.int8_flops_note is None
    assert rep.int8_flops == pytest.approx(int8_flop_fraction(model))
    assert f"int8 x int8: {rep.int8_flops:.1%} of the linear layers' FLOPs" in format_table(rep)
    assert json.loads(json.dumps(rep.to_dict()))["int8_flops"] == rep.int8_flops

    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"]["ignore"] = ["re:.*mlp.gate_proj$", "LlamaMLPUp"]
    (folder / "config.json").write_text(json.dumps(config))
    rep = report_checkpoint(folder)
    known = attention + 2 * 96 * 64  # up's weights are not told apart from other float tensors
    assert rep.int8_flops == pytest.approx(attention / known)
    assert "'LlamaMLPUp'" in rep.int8_flops_note and "over the layers known" in rep.int8_flops_note


# ------------------------------------------------------------------- the real libraries
def test_compressed_tensors_reads_qtritons_export(quantized, tmp_path):
    """compressed-tensors' own config model parses the export, and its decompressor turns
    each layer's stored tensors into codes * scales, the weights Int8Linear multiplies by."""
    ct = pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig
    from safetensors.torch import load_file

    folder = save_pretrained(quantized, tmp_path / "out")
    quant = json.loads((folder / "config.json").read_text())["quantization_config"]
    parsed = QuantizationConfig.model_validate(quant)
    scheme = parsed.config_groups["group_0"]
    assert parsed.format == "int-quantized" and parsed.ignore == ["lm_head"]
    assert (scheme.weights.num_bits, scheme.weights.strategy, scheme.input_activations.strategy) == (8, "channel", "token")
    assert scheme.input_activations.dynamic is True and scheme.input_activations.symmetric is False
    compressor = BaseCompressor.load_from_registry(parsed.format)
    state = load_file(str(folder / "model.safetensors"))
    for name, layer in quantized.named_modules():
        if isinstance(layer, Int8Linear):
            stored = {k: state[f"{name}.{k}"] for k in ("weight", "weight_scale")}
            assert torch.equal(stored["weight"], layer.weight) and torch.equal(stored["weight_scale"][:, 0], layer.weight_scale)
            # Re-compressing the decompressed weights gives back the same int8 codes.
            dense = compressor.decompress(stored, scheme)
            assert torch.equal(dense["weight"], layer.weight.float() * layer.weight_scale[:, None])
            assert torch.equal(compressor.compress({**dense}, scheme)["weight"], layer.weight)
    assert ct.__version__


def test_transformers_loads_qtritons_export_through_compressed_tensors(quantized, tmp_path, rng):
    """transformers with compressed-tensors installed: the folder loads as a quantized model
    (weights decompressed to codes * scales, activations fake-quantized per token) whose
    logits are close to qtriton's."""
    pytest.importorskip("compressed_tensors")
    folder = save_pretrained(quantized, tmp_path / "out")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    for name, layer in quantized.named_modules():  # before a forward decompresses them: our int8 tensors
        if isinstance(layer, Int8Linear):
            module = loaded.get_submodule(name)
            assert module.weight.dtype == torch.int8 and torch.equal(module.weight, layer.weight)
            assert torch.equal(module.weight_scale.reshape(-1), layer.weight_scale)
    ids = token_ids(rng, 12)
    expected, got = logits(quantized, ids), logits(loaded, ids)
    assert_close(got, expected, rtol=0, atol=1e-3 * float(expected.abs().max()), name="logits")


def test_transformers_loads_a_mixed_pack_quantized_export_through_compressed_tensors(tmp_path, rng):
    """A mixed folder (W8A8 int-quantized, W8A16 pack-quantized, float, each group with its own
    format and regex targets) decompressed by compressed-tensors in transformers: logits close
    to qtriton's."""
    pytest.importorskip("compressed_tensors")
    model = _tiny_llama()
    quantize_model(model, scheme="w8a16", include="*.mlp.*")
    quantize_model(model, scheme="w8a8-asym", include=["*.q_proj", "*.k_proj", "*.v_proj"])
    folder = save_pretrained(model, tmp_path / "mixed")  # o_proj stays float
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = token_ids(rng, 12)
    expected, got = logits(model, ids), logits(loaded, ids)
    assert_close(got, expected, rtol=0, atol=1e-3 * float(expected.abs().max()), name="logits")


def test_plain_transformers_never_loads_the_export_as_float(quantized, tmp_path, monkeypatch):
    """Without compressed-tensors, transformers refuses the folder instead of reading int8
    codes as float weights."""
    from transformers.quantizers import quantizer_compressed_tensors

    folder = save_pretrained(quantized, tmp_path / "out")
    monkeypatch.setattr(quantizer_compressed_tensors, "is_compressed_tensors_available", lambda: False)
    with pytest.raises(ImportError, match="compressed.tensors"):
        transformers.AutoModelForCausalLM.from_pretrained(folder)


def test_a_folder_compressed_tensors_writes_runs_on_int8linear(tmp_path, rng):
    """A W8A8 folder written by compressed-tensors' own compressor (the path llm-compressor
    saves through) imports into Int8Linear layers with logits equal to the fake-quant
    reference: codes * scales as weights, activations quantized per token by the oracle."""
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
    from compressed_tensors.quantization.utils import calculate_qparams

    model = _tiny_llama(seed=3)
    config = QuantizationConfig.model_validate({
        "quant_method": "compressed-tensors", "format": "int-quantized", "ignore": ["lm_head"],
        "config_groups": {"group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False},
            "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                                  "dynamic": True},
        }},
    })
    apply_quantization_config(model, config, show_progress=False)
    with torch.no_grad():  # llm-compressor's observers call calculate_qparams: absmax / 127.5 per output channel
        for module in model.modules():
            if hasattr(module, "weight_scale"):
                weight = module.weight
                scale, _ = calculate_qparams(weight.amin(1, keepdim=True), weight.amax(1, keepdim=True),
                                             module.quantization_scheme.weights)
                module.weight_scale.copy_(scale)
    compressor = ModelCompressor(quantization_config=config)
    compressor.compress_model(model)
    model.save_pretrained(tmp_path / "ct")
    compressor.update_config(tmp_path / "ct")

    loaded = from_pretrained(tmp_path / "ct", dtype=torch.float32)
    assert isinstance(loaded.model.layers[1].mlp.gate_proj, Int8Linear)
    # A channel whose largest magnitude is negative rounds to code -128 (-127.5 to even), as
    # in real llm-compressor exports; Int8Linear runs the whole int8 range.
    codes = [m.weight for m in loaded.modules() if isinstance(m, Int8Linear)]
    assert sum(int((w == -128).sum()) for w in codes) > 10 and max(int(w.max()) for w in codes) == 127
    # The fake-quant reference: the float model with each Linear's weight replaced by codes *
    # scales and its input fake-quantized per token, symmetric (the oracle's rounding).
    reference_model = _tiny_llama(seed=3)
    for name, module in list(reference_model.named_modules()):
        if isinstance(module, nn.Linear) and name != "lm_head":
            layer = loaded.get_submodule(name)
            with torch.no_grad():
                module.weight.copy_(layer.weight.float() * layer.weight_scale[:, None])
            module.register_forward_pre_hook(_fake_quantize_input)
    ids = token_ids(rng, 12)
    expected, got = logits(reference_model, ids), logits(loaded, ids)
    assert_close(got, expected, rtol=0, atol=1e-4 * float(expected.abs().max()), name="logits")


def _fake_quantize_input(module, args):
    """x -> its per-token symmetric int8 codes times their scales, by the oracle."""
    from qtriton import reference

    x = args[0]
    rows = x.detach().reshape(-1, x.shape[-1]).to(torch.float32).numpy()
    codes, scale, _ = reference.quantize_activations(rows, True)
    fake = codes.astype(np.float32) * scale.reshape(-1, 1)
    return (torch.from_numpy(fake).to(x.dtype).reshape(x.shape),)
