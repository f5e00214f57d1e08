"""Checkpoints are checked on load: header types, layer entries, tensor dtypes, shapes and
values; a bare Int8Linear round-trips; saving to a missing directory names the path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import SafetensorError
from torch import nn

from qtriton.formats.serialization import METADATA_KEY, load_quantized, save_quantized
from qtriton.model.nn import Int8Linear, quantize_model

from tests.cases import edit_header


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16))


@pytest.fixture
def saved(tmp_path):
    model = _model()
    quantize_model(model, symmetric_activations=False)
    path = tmp_path / "int8.safetensors"
    save_quantized(model, path)
    return model, path


def _edit_layers(path, edit) -> None:
    def on_metadata(header):
        qtriton = json.loads(header["__metadata__"][METADATA_KEY])
        edit(qtriton["layers"])
        header["__metadata__"][METADATA_KEY] = json.dumps(qtriton)

    edit_header(path, on_metadata)


def test_untouched_file_loads(saved, rng):
    model, path = saved
    skeleton = _model(seed=1)
    load_quantized(skeleton, path)
    x = torch.from_numpy(rng.standard_normal((3, 32), dtype=np.float32))
    assert torch.equal(skeleton(x), model(x))


@pytest.mark.parametrize(
    "key, dtype, message",
    [
        ("0.weight_scale", "I32", r"0\.weight_scale is I32 \[48\], an Int8Linear\(32, 48\) holds F32 \[48\]"),
        ("0.weight", "BOOL", r"0\.weight is BOOL \[48, 32\], an Int8Linear\(32, 48\) holds I8 \[48, 32\]"),
        ("2.bias", "I32", r"2\.bias is I32 \[16\]"),
    ],
)
def test_changed_dtype_is_refused(saved, key, dtype, message):
    _, path = saved
    edit_header(path, lambda h: h[key].update(dtype=dtype))  # same byte size: the file stays readable
    skeleton = _model()
    with pytest.raises(ValueError, match=message):
        load_quantized(skeleton, path)
    assert type(skeleton[0]) is nn.Linear  # checked before anything was swapped


def _replace_tensor(path, key, value) -> None:
    """Rewrite one tensor of a saved file, its header metadata kept."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    save_file({**load_file(str(path)), key: value}, str(path), metadata=metadata)


def _refused_on_save_and_on_load(model, key, value, path, message) -> None:
    """Saving the model with key set to value, and loading a good file whose key was
    edited to value, fail with the same message."""
    save_quantized(model, path)
    layer, _, part = key.rpartition(".")
    setattr(model.get_submodule(layer), part, value)
    with pytest.raises(ValueError, match=message):
        save_quantized(model, path.with_name("bad.safetensors"))
    assert not path.with_name("bad.safetensors").exists()
    _replace_tensor(path, key, value)
    with pytest.raises(ValueError, match=message):
        load_quantized(_model(), path)


def test_float_weight_is_refused(tmp_path):
    model = _model()
    quantize_model(model)
    # load_state_dict would cast a float32 weight back to int8 without a word.
    _refused_on_save_and_on_load(model, "0.weight", model[0].weight.float(), tmp_path / "f32.safetensors",
                                 r"0\.weight is F32 \[48, 32\]")


def test_changed_shape_is_refused(tmp_path):
    model = _model()
    quantize_model(model)
    _refused_on_save_and_on_load(model, "2.weight_scale", torch.ones(8), tmp_path / "shape.safetensors",
                                 r"2\.weight_scale is F32 \[8\], an Int8Linear\(48, 16\) holds F32 \[16\]")


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), 1e-40], ids=["0", "-1", "nan", "inf", "denormal"])
@pytest.mark.parametrize("scheme, key", [("w8a8", "weight_scale"), ("w8a8-static+smooth", "activation_scale"),
                                         ("w8a8-static+smooth", "input_scale")])
def test_scales_must_be_positive_finite_and_normal(tmp_path, bad, scheme, key):
    model = _model()
    model[0] = Int8Linear.from_float(model[0], scheme, **({} if scheme == "w8a8" else
                                     {"input_scale": torch.full((32,), 0.5), "activation_scale": 0.1}))
    value = getattr(model[0], key).clone()
    value.view(-1)[-1] = bad
    _refused_on_save_and_on_load(model, f"0.{key}", value, tmp_path / "scale.safetensors",
                                 rf"0\.{key} must be positive, finite and a normal float32")


def test_a_float_tensor_stored_as_integers_is_refused(tmp_path):
    """A header edit on a tensor that is not an Int8Linear's (a LayerNorm weight F32 -> I32,
    same bytes) would load as 1e9-sized floats."""
    model = nn.Sequential(nn.Linear(32, 48), nn.LayerNorm(48), nn.Linear(48, 16))
    quantize_model(model)
    path = tmp_path / "norm.safetensors"
    save_quantized(model, path)
    edit_header(path, lambda h: h["1.weight"].update(dtype="I32"))
    skeleton = nn.Sequential(nn.Linear(32, 48), nn.LayerNorm(48), nn.Linear(48, 16))
    with pytest.raises(ValueError, match=r"1\.weight is I32, the model's is float32"):
        load_quantized(skeleton, path)
    assert type(skeleton[0]) is nn.Linear  # the swaps undone


def test_a_bfloat16_model_saves_what_it_computes(tmp_path, rng):
    """quantize_model, then .to(torch.bfloat16): the scales and biases, which forward reads
    in float32, stay float32 (#22: bfloat16 could underflow them), and the file loads."""
    model = _model()
    quantize_model(model)
    model.to(torch.bfloat16)
    assert model[0].weight_scale.dtype == torch.float32 and model[0].bias.dtype == torch.float32
    path = tmp_path / "bf16.safetensors"
    save_quantized(model, path)
    loaded = load_quantized(_model().to(torch.bfloat16), path)
    assert loaded[0].weight_scale.dtype == torch.float32
    x = torch.from_numpy(rng.standard_normal((3, 32), dtype=np.float32)).to(torch.bfloat16)
    assert torch.equal(loaded(x), model(x))


def test_bias_must_be_finite(tmp_path):
    model = _model()
    quantize_model(model)
    bias = model[2].bias.clone()
    bias[0] = float("nan")
    _refused_on_save_and_on_load(model, "2.bias", bias, tmp_path / "bias.safetensors", r"2\.bias contains NaN or Inf")


ASYM = {"weight_bits": 8, "weight_symmetric": True, "weight_strategy": "channel", "activations": "dynamic",
        "activation_symmetric": False, "smoothed": False}


@pytest.mark.parametrize(
    "entry, message",
    [
        ({}, r"layer '0' .* lacks \['bias', 'in_features', 'out_features', 'scheme'\]"),
        (None, r"layer '0' .* must be an object with keys .*got None"),
        ([32, 48, True, True], r"layer '0' .* must be an object"),
        ({"in_features": 32, "out_features": 48, "bias": True, "scheme": {**ASYM, "activation_symmetric": "no"}},
         r"layer '0' .*activation_symmetric must be True or False, got 'no'"),
        ({"in_features": 32, "out_features": 48, "bias": True, "scheme": {**ASYM, "activations": "float"}},
         r"layer '0' .*activations must be one of"),
        ({"in_features": 32, "out_features": 48, "bias": True, "scheme": {**ASYM, "mode": 1}},
         r"layer '0' .*unknown keys \['mode'\]"),
        ({"in_features": 32, "out_features": 48, "bias": True, "scheme": {**ASYM, "weight_bits": 4}},
         r"layer '0' .*8-bit symmetric per-channel weights only"),
        ({"in_features": 32, "out_features": 48, "bias": True, "scheme": "w8a8-asym"},
         r"layer '0' .*scheme must be an object"),
        ({"in_features": 32, "out_features": 48, "bias": 1, "scheme": ASYM},
         r"bias must be true or false, got 1"),
        ({"in_features": "32", "out_features": 48, "bias": True, "scheme": ASYM},
         r"in_features must be a positive integer, got '32'"),
        ({"in_features": 32, "out_features": 0, "bias": True, "scheme": ASYM},
         r"out_features must be a positive integer, got 0"),
    ],
    ids=["empty", "null", "list", "string-bool", "unknown-activations", "unknown-key", "4-bit", "string-scheme",
         "int-bool", "string-int", "zero"],
)
def test_malformed_layer_entry_is_refused(saved, entry, message):
    _, path = saved
    _edit_layers(path, lambda layers: layers.update({"0": entry}))
    with pytest.raises(ValueError, match=message):
        load_quantized(_model(), path)


def _as_version_1(path, flags: dict) -> None:
    """Rewrite a file's header as qtriton 0.1 wrote it: version 1, a bool and flags per layer."""
    def on_metadata(header):
        qtriton = json.loads(header["__metadata__"][METADATA_KEY])
        qtriton["version"] = 1
        for spec in qtriton["layers"].values():
            spec.pop("scheme", None)
            spec.pop("weight_only", None)
            spec.update(flags)
        header["__metadata__"][METADATA_KEY] = json.dumps(qtriton)

    edit_header(path, on_metadata)


def test_the_header_stores_each_layers_scheme(saved):
    _, path = saved
    from qtriton.formats.serialization import read_header

    header = read_header(path)
    assert header["version"] == 2
    assert {name: spec["scheme"].name for name, spec in header["layers"].items()} == {"0": "w8a8-asym", "2": "w8a8-asym"}


def test_version_1_files_keep_loading(saved, rng):
    """Files written before the scheme existed: their flags mean the same scheme."""
    model, path = saved
    _as_version_1(path, {"symmetric_activations": False})
    skeleton = _model(seed=1)
    load_quantized(skeleton, path)
    assert skeleton[0].scheme == model[0].scheme and skeleton[2].scheme.name == "w8a8-asym"
    x = torch.from_numpy(rng.standard_normal((3, 32), dtype=np.float32))
    assert torch.equal(skeleton(x), model(x))


def test_version_1_flags_map_onto_schemes(tmp_path):
    from qtriton.formats.serialization import read_header

    model = _model()
    quantize_model(model, scheme="w8a16")
    path = tmp_path / "w8a16.safetensors"
    save_quantized(model, path)
    _as_version_1(path, {"symmetric_activations": True, "weight_only": True})
    assert {spec["scheme"].name for spec in read_header(path)["layers"].values()} == {"w8a16"}
    _as_version_1(path, {"symmetric_activations": True, "weight_only": "yes"})
    with pytest.raises(ValueError, match=r"layer '0' .*weight_only must be true or false, got 'yes'"):
        read_header(path)
    _as_version_1(path, {"symmetric_activations": True, "weight_only": True, "static_activations": True})
    with pytest.raises(ValueError, match=r"layer '0' .*weight_only keeps activations float"):
        read_header(path)


def test_bare_int8_linear_saves_and_loads(tmp_path, rng):
    layer = Int8Linear.from_float(nn.Linear(32, 24), "w8a8-asym")
    path = tmp_path / "bare.safetensors"
    save_quantized(layer, path)
    loaded = load_quantized(nn.Linear(32, 24), path)
    assert isinstance(loaded, Int8Linear) and not loaded.symmetric_activations
    x = torch.from_numpy(rng.standard_normal((5, 32), dtype=np.float32))
    assert torch.equal(loaded(x), layer(x))
    with pytest.raises(ValueError, match=r"\(32, 16, True\), .* stores \(32, 24, True\)"):
        load_quantized(nn.Linear(32, 16), path)
    with pytest.raises(TypeError, match="stores a bare Int8Linear"):
        load_quantized(nn.Sequential(nn.Linear(32, 24)), path)


def test_save_to_a_missing_directory_names_the_path(saved):
    model, _ = saved
    with pytest.raises(FileNotFoundError, match=r"'/nonexistent/dir/x\.safetensors'.*'/nonexistent/dir' does not exist"):
        save_quantized(model, "/nonexistent/dir/x.safetensors")


def test_save_error_names_the_path_not_a_temporary_file(saved, tmp_path):
    model, _ = saved
    target = tmp_path / "is_a_dir.safetensors"
    target.mkdir()  # the directory exists, but the file cannot be written
    with pytest.raises(OSError, match="is_a_dir.safetensors") as info:
        save_quantized(model, target)
    assert ".tmp" not in str(info.value) and not isinstance(info.value, SafetensorError)


def _with_extra_key(path):
    """path rewritten with one tensor more than its layers hold, its header kept."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        metadata = f.metadata()
    save_file({**tensors, "stray": torch.zeros(2)}, str(path), metadata=metadata)


@pytest.mark.parametrize("bare", [True, False], ids=["bare-layer", "module"])
def test_extra_key_is_the_same_value_error_on_both_paths(tmp_path, bare):
    """A bare layer's file with an extra tensor raised load_state_dict's raw RuntimeError,
    the module path a ValueError naming the file (#22): now both the latter."""
    path = tmp_path / "extra.safetensors"
    if bare:
        save_quantized(Int8Linear.from_float(nn.Linear(8, 4)), path)
    else:
        model = _model()
        quantize_model(model)
        save_quantized(model, path)
    _with_extra_key(path)
    with pytest.raises(ValueError, match=r"(?s)extra\.safetensors' does not fit the model: .*stray"):
        load_quantized(nn.Linear(8, 4) if bare else _model(), path)
