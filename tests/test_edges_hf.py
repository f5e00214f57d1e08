"""Hugging Face folders as a hostile user meets them (issue 26): which config group a layer
gets when several match, tensors the model has no place for, saves that must not destroy or
half-write a folder, values that overflow once cast, malformed files named with their
problem. Folders of other writers are written by compressed-tensors' own ModelCompressor
(the path llm-compressor saves through), never mocked."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest
import torch
from torch import nn

import qtriton
from qtriton.formats.hf import from_pretrained, save_pretrained
from qtriton.model.nn import Int8Linear, quantize_model
from qtriton.model.scheme import QuantScheme

from tests.cases import logits

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

W8 = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False}
W4_GROUP = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32}


def _activations(symmetric: bool) -> dict:
    return {"num_bits": 8, "type": "int", "symmetric": symmetric, "strategy": "token", "dynamic": True}


W8A8 = {"weights": W8, "input_activations": _activations(True)}
W8A8_ASYM = {"weights": W8, "input_activations": _activations(False)}
W8A16 = {"weights": W8, "input_activations": None}


def _tiny_llama(seed: int = 0, tie: bool = False, bias: bool = False) -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tie, attention_bias=bias,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config).eval()


def _files(folder) -> dict[str, bytes]:
    """Every file under folder by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def quantized():
    model = _tiny_llama()
    quantize_model(model, scheme="w8a8", min_features=16)
    return model


@pytest.fixture
def exported(quantized, tmp_path):
    return save_pretrained(quantized, tmp_path / "out")


@pytest.fixture
def other_export(tmp_path):
    """A folder of another model (other weights and schemes), for a save over it to change."""
    model = _tiny_llama(seed=1)
    quantize_model(model, scheme="w8a8-asym")
    return save_pretrained(model, tmp_path / "out", max_shard_size="20KB")


# ------------------------------------------------------- 1. which group quantizes a layer
def _compressed_tensors_folder(folder, groups: dict, seed: int = 3):
    """A folder as compressed-tensors' ModelCompressor writes it for config_groups (in this
    order), its weight scales computed by compressed-tensors' own calculate_qparams (what
    llm-compressor's observers call); returns the model compressed-tensors set up, whose
    modules carry the scheme compressed-tensors resolved for each (quantization_scheme)."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
    from compressed_tensors.quantization.utils import calculate_qparams

    model = _tiny_llama(seed)
    # Each group's format named: left out, compressed-tensors packs 8-bit weight-only groups
    # into int32 (pack-quantized), a layout Int8Linear does not read.
    groups = {name: {**group, "format": "pack-quantized" if group["weights"]["num_bits"] == 4 else
                     "naive-quantized" if group.get("input_activations") is None else "int-quantized"}
              for name, group in groups.items()}
    formats = {group["format"] for group in groups.values()}
    config = QuantizationConfig.model_validate({
        "quant_method": "compressed-tensors", "ignore": ["lm_head"], "config_groups": groups,
        "format": formats.pop() if len(formats) == 1 else "mixed-precision",
    })
    apply_quantization_config(model, config, show_progress=False)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "weight_scale"):
                args, weight = module.quantization_scheme.weights, module.weight
                if args.strategy == "group":
                    weight = weight.reshape(weight.shape[0], -1, args.group_size)
                    scale, zero_point = calculate_qparams(weight.amin(-1), weight.amax(-1), args)
                else:
                    scale, zero_point = calculate_qparams(weight.amin(1, keepdim=True), weight.amax(1, keepdim=True),
                                                          args)
                module.weight_scale.copy_(scale)
                if hasattr(module, "weight_zero_point"):
                    module.weight_zero_point.copy_(zero_point)
    resolved = {name: module.quantization_scheme for name, module in model.named_modules()
                if getattr(module, "quantization_scheme", None) is not None}
    compressor = ModelCompressor(quantization_config=config)
    compressor.compress_model(model)
    model.save_pretrained(folder)
    compressor.update_config(folder)
    return resolved


def _qtriton_scheme(ct_scheme) -> QuantScheme:
    activations = ct_scheme.input_activations
    return QuantScheme.from_compressed_tensors(ct_scheme.weights.model_dump(),
                                               None if activations is None else activations.model_dump())


DOWN_0, DOWN_1 = "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"
PRECEDENCE = {
    # name: (config_groups in file order, {layer: the scheme compressed-tensors gives it})
    "regex-over-class": ({"group_0": {"targets": ["Linear"], **W8A8},
                          "group_1": {"targets": ["re:.*down_proj$"], **W8A8_ASYM}},
                         {DOWN_0: "w8a8-asym", DOWN_1: "w8a8-asym", "model.layers.0.self_attn.q_proj": "w8a8"}),
    "regex-over-class-first": ({"group_0": {"targets": ["re:.*down_proj$"], **W8A8_ASYM},
                                "group_1": {"targets": ["Linear"], **W8A8}},
                               {DOWN_0: "w8a8-asym", "model.layers.1.mlp.up_proj": "w8a8"}),
    "regex-w8a16": ({"group_0": {"targets": ["Linear"], **W8A8},
                     "group_1": {"targets": ["re:.*down_proj$"], **W8A16}},
                    {DOWN_0: "w8a16", DOWN_1: "w8a16", "model.layers.1.mlp.up_proj": "w8a8"}),
    "name-over-class": ({"group_0": {"targets": ["Linear"], **W8A8},
                         "group_1": {"targets": [DOWN_0], **W8A8_ASYM}},
                        {DOWN_0: "w8a8-asym", DOWN_1: "w8a8"}),
    "name-over-regex": ({"group_0": {"targets": ["re:.*down_proj$"], **W8A16},
                         "group_1": {"targets": [DOWN_0], **W8A8_ASYM}},
                        {DOWN_0: "w8a8-asym", DOWN_1: "w8a16"}),
    "same-class-later-group": ({"group_0": {"targets": ["Linear"], **W8A8},
                                "group_1": {"targets": ["Linear"], **W8A8_ASYM}},
                               {DOWN_0: "w8a8-asym", "model.layers.0.self_attn.o_proj": "w8a8-asym"}),
}


@pytest.mark.parametrize("case", PRECEDENCE, ids=list(PRECEDENCE))
def test_a_layer_in_several_groups_gets_the_scheme_compressed_tensors_gives_it(tmp_path, case):
    """from_pretrained and qtriton report resolve a layer matched by several config groups as
    compressed-tensors does (an exact name over a regex over a class name; for the same
    target the later group), checked against the scheme compressed-tensors itself attached
    to every module of the model it wrote the folder from."""
    from qtriton.report import report_checkpoint

    groups, expected = PRECEDENCE[case]
    resolved = _compressed_tensors_folder(tmp_path / "ct", groups)
    for name, scheme in expected.items():  # the table above is compressed-tensors' own answer
        assert _qtriton_scheme(resolved[name]).name == scheme, name
    loaded = from_pretrained(tmp_path / "ct", dtype=torch.float32)
    got = {name: m.scheme for name, m in loaded.named_modules() if isinstance(m, Int8Linear)}
    assert got == {name: _qtriton_scheme(s) for name, s in resolved.items()}
    reported = {layer.name: layer.scheme for layer in report_checkpoint(tmp_path / "ct").layers}
    assert reported == {name: s.name for name, s in got.items()}


def test_a_4_bit_override_is_refused_by_its_group(tmp_path):
    """A pack-quantized 4-bit group overriding down_proj: refused as a scheme Int8Linear
    cannot run, naming the layer and its group (not a missing int8 weight)."""
    _compressed_tensors_folder(tmp_path / "ct", {"group_0": {"targets": ["Linear"], **W8A8},
                                                 "group_1": {"targets": ["re:.*down_proj$"], "weights": W4_GROUP}})
    with pytest.raises(ValueError, match=r"2 layers have schemes Int8Linear cannot run: "
                                         r"model\.layers\.0\.mlp\.down_proj \(group_1: "):
        from_pretrained(tmp_path / "ct")


# ---------------------------------------------------------------- 2. a bias with no place
def test_a_stored_bias_on_a_bias_free_layer_is_refused(exported):
    from safetensors.torch import load_file, save_file

    state = load_file(str(exported / "model.safetensors"))
    state["model.layers.0.self_attn.q_proj.bias"] = torch.full((64,), 5.0)
    save_file(state, str(exported / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"'[^']*out': model\.layers\.0\.self_attn\.q_proj\.bias is stored, but the "
                                         r"model's layer has no bias"):
        from_pretrained(exported)


# ------------------------------------------------------ 3, 4, 21. what a save writes and keeps
def test_save_keeps_files_it_did_not_write(quantized, tmp_path):
    """model.int8.safetensors (save_quantized's name in the README) and a float backup stay;
    a previous export's shards and index go (they would be read with the new config)."""
    folder = tmp_path / "out"
    save_pretrained(quantized, folder, max_shard_size="20KB")
    assert (folder / "model.safetensors.index.json").is_file()
    qtriton.save_quantized(quantized, folder / "model.int8.safetensors")
    (folder / "model.float.safetensors").write_bytes(b"float backup")
    (folder / "README.md").write_text("mine")
    save_pretrained(quantized, folder)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["README.md", "config.json", "generation_config.json", "model.float.safetensors",
                     "model.int8.safetensors", "model.safetensors"]
    assert (folder / "model.float.safetensors").read_bytes() == b"float backup"
    qtriton.load_quantized(_tiny_llama(), folder / "model.int8.safetensors")
    from_pretrained(folder)


def test_a_config_json_cannot_write_leaves_the_folder_as_it_was(quantized, other_export):
    before = _files(other_export)
    quantized.config.custom_setting = {1, 2}  # a set: JSON has no such value
    with pytest.raises(ValueError, match=r"config\.json': the model's config attribute 'custom_setting' cannot be "
                                         r"written as JSON"):
        save_pretrained(quantized, other_export)
    assert _files(other_export) == before
    assert sorted(p.name for p in other_export.parent.iterdir()) == ["out"]  # no temporary folder left


def test_an_invalid_generation_config_leaves_the_folder_as_it_was(quantized, other_export):
    before = _files(other_export)
    quantized.generation_config.max_new_tokens = -1
    with pytest.raises(ValueError, match="max_new_tokens"):
        save_pretrained(quantized, other_export)
    assert _files(other_export) == before
    assert sorted(p.name for p in other_export.parent.iterdir()) == ["out"]


@pytest.mark.parametrize("existing", [True, False], ids=["over-a-folder", "new-folder"])
def test_an_interrupt_on_shard_3_of_6_leaves_the_old_folder_intact(quantized, tmp_path, monkeypatch, existing):
    import safetensors.torch

    folder = tmp_path / "out"
    if existing:
        old = _tiny_llama(seed=1)
        quantize_model(old, scheme="w8a8-asym")
        save_pretrained(old, folder)
    before = _files(folder) if existing else None
    assert existing == folder.exists()
    written = []
    real = safetensors.torch.save_file

    def interrupted(tensors, filename, metadata=None):
        written.append(filename)
        if len(written) == 3:
            raise KeyboardInterrupt
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(quantized, folder, max_shard_size="20KB")
    assert written[-1].endswith("model-00003-of-00006.safetensors")
    if existing:
        assert _files(folder) == before
    else:
        assert not folder.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if existing else [])


def test_a_folder_no_rename_can_move_gets_its_files_replaced(quantized, tmp_path, monkeypatch):
    """A mount point (or a folder in a read-only parent) cannot swap places with a new one:
    the export is written inside it, and only then replaces the files; an interrupt while
    writing still leaves it as it was."""
    import safetensors.torch

    folder = tmp_path / "mounted"
    old = _tiny_llama(seed=1)
    quantize_model(old, scheme="w8a8-asym")
    save_pretrained(old, folder, max_shard_size="20KB")
    (folder / "README.md").write_text("mine")
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda path: str(path) == str(folder) or real_ismount(path))
    before = _files(folder)
    real = safetensors.torch.save_file

    def interrupted(tensors, filename, metadata=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(quantized, folder)
    assert _files(folder) == before and sorted(tmp_path.iterdir()) == [folder]
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    save_pretrained(quantized, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "generation_config.json",
                                                       "model.safetensors"]
    ids = torch.randint(0, 128, (1, 9), generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits(from_pretrained(folder, dtype=torch.float32), ids), logits(quantized, ids))


def test_every_file_and_the_folder_get_the_umask_modes(quantized, tmp_path):
    """model.safetensors (safetensors writes 0600) and shards get the mode config.json gets,
    and the folder that of a plain mkdir: a server running as another user reads them."""
    old = os.umask(0o022)
    try:
        single = save_pretrained(quantized, tmp_path / "single")
        sharded = save_pretrained(quantized, tmp_path / "sharded", max_shard_size="20KB")
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(old)
    for folder in (single, sharded):
        assert stat.S_IMODE(folder.stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o755
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
        assert set(modes.values()) == {0o644}, modes


# ------------------------------------------------------------ 5, 16. finite in the model's dtype
def test_a_float64_bias_that_overflows_float32_is_refused_on_load(tmp_path):
    from safetensors.torch import load_file, save_file

    model = _tiny_llama(bias=True)
    quantize_model(model, scheme="w8a8")
    folder = save_pretrained(model, tmp_path / "out")
    state = load_file(str(folder / "model.safetensors"))
    state["model.layers.0.self_attn.q_proj.bias"] = torch.full((64,), 1e300, dtype=torch.float64)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"q_proj\.bias contains NaN or Inf once rounded to float32"):
        from_pretrained(folder)


def test_a_float_tensor_that_overflows_the_model_dtype_is_refused_on_load(exported):
    from safetensors.torch import load_file, save_file

    state = load_file(str(exported / "model.safetensors"))
    state["model.embed_tokens.weight"][3, 5] = 1e5
    state["model.norm.weight"] = state["model.norm.weight"].double()
    save_file(state, str(exported / "model.safetensors"), metadata={"format": "pt"})
    from_pretrained(exported, dtype=torch.float32)  # 1e5 is a float32
    with pytest.raises(ValueError, match=r"model\.embed_tokens\.weight contains NaN or Inf once rounded to float16 "
                                         r"\(\|model\.embed_tokens\.weight\| <= 6\.55e\+04\)"):
        from_pretrained(exported, dtype=torch.float16)
    state["model.embed_tokens.weight"][3, 5] = 0.0
    state["model.norm.weight"][0] = 1e300
    save_file(state, str(exported / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model\.norm\.weight contains NaN or Inf once rounded to float32"):
        from_pretrained(exported, dtype=torch.float32)


@pytest.mark.parametrize("tensor", ["model.norm.weight", "model.embed_tokens.weight", "lm_head.weight"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_nan_or_inf_in_a_float_tensor_is_refused_on_save(quantized, other_export, tensor, value):
    before = _files(other_export)
    with torch.no_grad():
        quantized.get_parameter(tensor).view(-1)[7] = value
    with pytest.raises(ValueError, match=re.escape(tensor) + " contains NaN or Inf"):
        save_pretrained(quantized, other_export)
    assert _files(other_export) == before


# ---------------------------------------------------------------------- 11. a tied quantized head
def test_a_quantized_head_the_config_ties_is_refused_on_load(tmp_path):
    model = _tiny_llama()
    quantize_model(model, keep_output_head=False)
    folder = save_pretrained(model, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    config["tie_word_embeddings"] = True
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"lm_head is quantized but the config ties it to the input embedding"):
        from_pretrained(folder)


# ------------------------------------------------------------------------ 13. malformed files
def _edit_config(folder, edit):
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def _quant(config):
    return config["quantization_config"]


MALFORMED_CONFIGS = {
    "bad-regex": (lambda c: _quant(c)["config_groups"]["group_0"].update(targets=["re:model.(layers"]),
                  r"config\.json': quantization_config\.config_groups\.group_0\.targets: 're:model\.\(layers' is not a "
                  r"valid regular expression"),
    "bad-regex-in-ignore": (lambda c: _quant(c).update(ignore=["re:[lm_head"]),
                            r"config\.json': quantization_config\.ignore: 're:\[lm_head' is not a valid regular expression"),
    "groups-a-list": (lambda c: _quant(c).update(config_groups=[_quant(c)["config_groups"]["group_0"]]),
                      r"config\.json': quantization_config\.config_groups must be an object of named groups, got a list"),
    "group-a-string": (lambda c: _quant(c)["config_groups"].update(group_0="w8a8"),
                       r"config\.json': quantization_config\.config_groups\.group_0 must be an object, got a str"),
    "targets-a-string": (lambda c: _quant(c)["config_groups"]["group_0"].update(targets="Linear"),
                         r"config\.json': quantization_config\.config_groups\.group_0\.targets must be a list of "
                         r"strings, got a str"),
    "ignore-a-string": (lambda c: _quant(c).update(ignore="lm_head"),
                        r"config\.json': quantization_config\.ignore must be a list of strings, got a str"),
    "quantization-config-a-list": (lambda c: c.update(quantization_config=[]),
                                   r"config\.json': quantization_config must be an object, got a list"),
    "dtype-auto": (lambda c: c.update(dtype="auto"),
                   r"config\.json': dtype 'auto' is not a float dtype a model runs in \(float32, float16, bfloat16\)"),
    "dtype-int8": (lambda c: c.update(dtype="int8"),
                   r"config\.json': dtype 'int8' is not a float dtype a model runs in"),
}


@pytest.mark.parametrize("case", MALFORMED_CONFIGS, ids=list(MALFORMED_CONFIGS))
def test_a_malformed_config_is_named_with_its_file_and_problem(exported, case):
    edit, message = MALFORMED_CONFIGS[case]
    _edit_config(exported, edit)
    with pytest.raises(ValueError, match=message):
        from_pretrained(exported)


def test_a_dtype_argument_a_model_cannot_run_in_is_refused(exported):
    with pytest.raises(ValueError, match=r"dtype 'float64' is not a float dtype a model runs in"):
        from_pretrained(exported, dtype=torch.float64)
    with pytest.raises(TypeError, match="dtype must be a torch.dtype or its name, got int"):
        from_pretrained(exported, dtype=16)
    assert from_pretrained(exported, dtype="bfloat16").model.norm.weight.dtype == torch.bfloat16


def test_report_names_a_bad_regex_as_from_pretrained_does(exported, capsys):
    from qtriton.cli import main

    _edit_config(exported, MALFORMED_CONFIGS["bad-regex"][0])
    assert main(["report", str(exported)]) == 2
    err = capsys.readouterr().err
    assert "'re:model.(layers' is not a valid regular expression" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "file, content, message",
    [
        ("config.json", "{not json", r"config\.json' is not valid JSON: "),
        ("config.json", "[]", r"config\.json' holds a list, not a JSON object"),
        ("model.safetensors.index.json", "{\"weight_map\": ", r"model\.safetensors\.index\.json' is not valid JSON: "),
        ("model.safetensors.index.json", "{\"weight_map\": [1]}",
         r"model\.safetensors\.index\.json' has no weight_map of tensor names to files"),
    ],
    ids=["config-not-json", "config-a-list", "index-not-json", "index-weight-map-a-list"],
)
def test_a_malformed_json_file_is_named_with_its_problem(quantized, tmp_path, file, content, message):
    folder = save_pretrained(quantized, tmp_path / "out", max_shard_size="20KB")
    (folder / file).write_text(content)
    with pytest.raises(ValueError, match=message):
        from_pretrained(folder)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_a_corrupt_or_missing_shard_is_named(quantized, tmp_path, damage):
    folder = save_pretrained(quantized, tmp_path / "out", max_shard_size="20KB")
    shard = folder / "model-00002-of-00006.safetensors"
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-100])
        message = r"model-00002-of-00006\.safetensors' is not a readable safetensors file \(truncated or corrupt\?\)"
    elif damage == "garbage":
        shard.write_bytes(b"\x07" * 64)
        message = r"model-00002-of-00006\.safetensors' is not a readable safetensors file \(truncated or corrupt\?\)"
    else:
        shard.unlink()
        message = r"model\.safetensors\.index\.json' names model-00002-of-00006\.safetensors, which does not exist"
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        from_pretrained(folder)


# --------------------------------------------------------- 22. what a server reads of the config
def test_the_export_names_the_architecture_and_no_machine_path(quantized, tmp_path):
    """What a model loaded from a GGUF file carries: no architectures, the local folder in
    _name_or_path. The export says what the model is and leaves the path out, as
    transformers' own save_pretrained does."""
    quantized.config.architectures = None
    quantized.config._name_or_path = str(tmp_path / "models" / "smollm2-gguf")
    folder = save_pretrained(quantized, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "_name_or_path" not in config and str(tmp_path) not in (folder / "config.json").read_text()
    assert quantized.config.architectures is None  # the model is left as it was
    assert type(transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(folder))) \
        is transformers.LlamaForCausalLM


# ------------------------------------------------------------ 23. progress bars off a terminal
@pytest.mark.parametrize("entry", ["sensitivity", "plan"])
def test_sensitivity_and_plan_draw_no_bar_where_stderr_is_not_a_terminal(entry, capsys):
    model = _tiny_llama()
    batches = [torch.randint(0, 128, (1, 8), generator=torch.Generator().manual_seed(0))]
    if entry == "sensitivity":
        qtriton.sensitivity(model, batches, schemes=["w8a8"], groups="layer")
    else:
        qtriton.plan(model, batches, target_kl=1.0, schemes=["w8a8"])
    assert capsys.readouterr().err == ""
