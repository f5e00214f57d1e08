"""Checkpoints are checked on load: header types, layer entries, tensor dtypes, shapes and
values; a bare Int8Linear round-trips; saving to a missing directory names the path."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from safetensors import SafetensorError
from torch import nn

from qtriton.nn import Int8Linear, quantize_model
from qtriton.serialization import METADATA_KEY, load_quantized, save_quantized


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


def _edit_header(path, edit) -> None:
    """Rewrite a safetensors file's JSON header with edit(header) (the data bytes stay)."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    edit(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length :])


def _edit_layers(path, edit) -> None:
    def on_metadata(header):
        qtriton = json.loads(header["__metadata__"][METADATA_KEY])
        edit(qtriton["layers"])
        header["__metadata__"][METADATA_KEY] = json.dumps(qtriton)

    _edit_header(path, on_metadata)


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
    _edit_header(path, lambda h: h[key].update(dtype=dtype))  # same byte size: the file stays readable
    skeleton = _model()
    with pytest.raises(ValueError, match=message):
        load_quantized(skeleton, path)
    assert type(skeleton[0]) is nn.Linear  # checked before anything was swapped


def test_float_weight_is_refused(tmp_path):
    model = _model()
    quantize_model(model)
    model[0].weight = model[0].weight.float()  # re-saved as float32: load_state_dict would cast it back
    path = tmp_path / "f32.safetensors"
    save_quantized(model, path)
    with pytest.raises(ValueError, match=r"0\.weight is F32 \[48, 32\]"):
        load_quantized(_model(), path)


def test_changed_shape_is_refused(tmp_path):
    model = _model()
    quantize_model(model)
    model[2].weight_scale = torch.ones(8)
    path = tmp_path / "shape.safetensors"
    save_quantized(model, path)
    with pytest.raises(ValueError, match=r"2\.weight_scale is F32 \[8\], an Int8Linear\(48, 16\) holds F32 \[16\]"):
        load_quantized(_model(), path)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), 1e-40])
def test_scales_must_be_positive_and_finite(tmp_path, bad):
    """1e-40, a float32 denormal, was loaded (#22): the torch / triton paths then computed
    with it where the NumPy one refused it."""
    model = _model()
    quantize_model(model)
    model[0].weight_scale[5] = bad
    path = tmp_path / "scale.safetensors"
    save_quantized(model, path)
    with pytest.raises(ValueError, match=r"0\.weight_scale must be positive, finite and a normal float32"):
        load_quantized(_model(), path)


@pytest.mark.parametrize("bad", [0.0, 1e-40])
@pytest.mark.parametrize("buffer", ["activation_scale", "input_scale"])
def test_activation_scales_must_be_normal(tmp_path, buffer, bad):
    """A static activation scale or SmoothQuant input scale of 0 or a denormal was loaded
    unchecked (#22); the layer then computed with it."""
    linear = nn.Linear(8, 4)
    options = {"activation_scale": 1.0} if buffer == "activation_scale" else {"input_scale": torch.ones(8)}
    layer = Int8Linear.from_float(linear, **options)
    getattr(layer, buffer).fill_(bad)
    path = tmp_path / "layer.safetensors"
    save_quantized(layer, path)
    with pytest.raises(ValueError, match=rf"{buffer} must be positive, finite and a normal float32"):
        load_quantized(nn.Linear(8, 4), path)


def test_bias_must_be_finite(tmp_path):
    model = _model()
    quantize_model(model)
    model[2].bias[0] = float("nan")
    path = tmp_path / "bias.safetensors"
    save_quantized(model, path)
    with pytest.raises(ValueError, match=r"2\.bias holds NaN or Inf"):
        load_quantized(_model(), path)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({}, r"layer '0' .* lacks \['bias', 'in_features', 'out_features', 'symmetric_activations'\]"),
        (None, r"layer '0' .* must be an object with keys .*got None"),
        ([32, 48, True, True], r"layer '0' .* must be an object"),
        ({"in_features": 32, "out_features": 48, "bias": True, "symmetric_activations": "no"},
         r"symmetric_activations must be true or false, got 'no'"),
        ({"in_features": 32, "out_features": 48, "bias": 1, "symmetric_activations": True},
         r"bias must be true or false, got 1"),
        ({"in_features": "32", "out_features": 48, "bias": True, "symmetric_activations": True},
         r"in_features must be a positive integer, got '32'"),
        ({"in_features": 32, "out_features": 0, "bias": True, "symmetric_activations": True},
         r"out_features must be a positive integer, got 0"),
    ],
    ids=["empty", "null", "list", "string-bool", "int-bool", "string-int", "zero"],
)
def test_malformed_layer_entry_is_refused(saved, entry, message):
    _, path = saved
    _edit_layers(path, lambda layers: layers.update({"0": entry}))
    with pytest.raises(ValueError, match=message):
        load_quantized(_model(), path)


def test_bare_int8_linear_saves_and_loads(tmp_path, rng):
    layer = Int8Linear.from_float(nn.Linear(32, 24), symmetric_activations=False)
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
