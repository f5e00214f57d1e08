"""QuantScheme: the one description of a layer's quantization (qtriton/model/scheme.py)."""

from __future__ import annotations

import copy
import dataclasses
from typing import ClassVar

import numpy as np
import pytest
import torch

from qtriton import Int8Linear, load_quantized, quantize_model, save_quantized, use_backend
from qtriton.model import scheme as scheme_module
from qtriton.model.scheme import PRESETS, W8A8, W8A8_ASYMMETRIC, W8A8_STATIC, W8A16, InputTransform, QuantScheme
from qtriton.testing import assert_exact

ALL = [W8A8, W8A8_ASYMMETRIC, W8A8_STATIC, W8A16] + [s.replace(smoothed=True) for s in (W8A8, W8A8_ASYMMETRIC, W8A16)]


@pytest.mark.parametrize("scheme", ALL, ids=lambda s: s.name)
def test_names_and_dicts_round_trip(scheme):
    assert QuantScheme.parse(scheme.name) == scheme
    assert QuantScheme.from_dict(scheme.to_dict()) == scheme
    assert hash(QuantScheme.from_dict(scheme.to_dict())) == hash(scheme)


def test_preset_names_are_their_keys():
    assert {name: s.name for name, s in PRESETS.items()} == {name: name for name in PRESETS}
    assert len({s.describe() for s in ALL}) == len(ALL)


@pytest.mark.parametrize("scheme", [s for s in ALL if not s.smoothed], ids=lambda s: s.name)
def test_compressed_tensors_args_round_trip(scheme):
    args = scheme.to_compressed_tensors()
    assert QuantScheme.from_compressed_tensors(args["weights"], args["input_activations"]) == scheme


def test_smoothed_scheme_has_no_compressed_tensors_form():
    with pytest.raises(ValueError, match="fold the smoothing"):
        W8A8.replace(smoothed=True).to_compressed_tensors()


@pytest.mark.parametrize(
    "weights, activations, match",
    [
        ({"num_bits": 4, "strategy": "channel"}, None, "num_bits=4"),
        ({"num_bits": 8, "strategy": "group", "group_size": 128}, None, "group_size=128"),
        ({"num_bits": 8, "strategy": "channel", "symmetric": False}, None, "symmetric=False"),
        ({"num_bits": 8, "strategy": "tensor"}, None, "strategy='tensor'"),
        ({"num_bits": 8, "type": "float", "strategy": "channel"}, None, "type='float'"),
        ({"num_bits": 8, "strategy": "channel"}, {"num_bits": 8, "strategy": "tensor", "symmetric": False}, "symmetric=False"),
        ({"num_bits": 8, "strategy": "channel"}, {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True},
         "type='float'"),
        ({"num_bits": 8, "strategy": "channel"}, {"num_bits": 8, "strategy": "group", "group_size": 32}, "group_size"),
        (None, None, "no weight quantization"),
    ],
)
def test_compressed_tensors_groups_int8linear_cannot_run_are_refused(weights, activations, match):
    with pytest.raises(ValueError, match=match):
        QuantScheme.from_compressed_tensors(weights, activations)


@pytest.mark.parametrize(
    "changes, error, match",
    [
        ({"activations": "dynamc"}, ValueError, "activations must be one of"),
        ({"weight_bits": 4}, ValueError, "8-bit symmetric per-channel"),
        ({"activations": "static", "activation_symmetric": False}, ValueError, "static activations are symmetric"),
        ({"activations": "none", "activation_symmetric": False}, ValueError, "W8A16"),
        ({"smoothed": 1}, TypeError, "smoothed must be True or False"),
    ],
)
def test_bad_schemes_are_refused_with_the_field(changes, error, match):
    with pytest.raises(error, match=match):
        QuantScheme(**changes)


@pytest.mark.parametrize("text", ["w4a8", "w8a8+smoot", "", "w8a8-asym+smooth+smooth"])
def test_unknown_names_are_refused(text):
    with pytest.raises(ValueError, match="unknown scheme"):
        QuantScheme.parse(text)


def test_from_dict_refuses_unknown_keys_and_bad_types():
    with pytest.raises(ValueError, match="unknown keys"):
        QuantScheme.from_dict({**W8A8.to_dict(), "group_size": 128})
    with pytest.raises(ValueError, match="must be an object"):
        QuantScheme.from_dict("w8a8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        W8A8.activations = "none"


def test_compressed_tensors_parses_the_args():
    """The real library reads each scheme's arguments back to the same values."""
    ct = pytest.importorskip("compressed_tensors.quantization")
    for scheme in (s for s in ALL if not s.smoothed):
        args = scheme.to_compressed_tensors()
        for key, value in args.items():
            if value is None:
                continue
            parsed = ct.QuantizationArgs(**value)
            dumped = {k: v for k, v in parsed.model_dump(mode="json").items() if k in value}
            assert dumped == value, (scheme.name, key, dumped, value)


# ---------------------------------------------------------- a new input transform, one entry
@dataclasses.dataclass(frozen=True)
class Negate(InputTransform):
    """A toy input transform registered only here: x -> -x, W -> -W. Exact on float, and the
    symmetric codes of -x are minus those of x, so a negated layer computes bit for bit what
    the plain one does: the registry's hooks are all it needs, from layer to file."""

    keyword: ClassVar[str] = "negated"
    suffix_forms: ClassVar[str] = "'+neg'"
    compressed_tensors_types: ClassVar[tuple[str, ...]] = ("negate",)

    @classmethod
    def from_keyword(cls, value):
        return cls() if value else None

    def keyword_value(self):
        return True

    def suffix(self):
        return "neg"

    @classmethod
    def parse(cls, suffix):
        return cls() if suffix == "neg" else None

    def describe(self):
        return "negated"

    def build(self, layer, weight, data, name):
        return -weight

    def activation_options(self, layer):
        return {"input_scale": torch.full((layer.in_features,), -1.0, device=layer.weight.device)}

    def apply_float(self, layer, rows):
        return -rows.to(torch.float32)

    @classmethod
    def to_compressed_tensors(cls, layers):
        return {"negate": {"type": "negate", "apply": [{"targets": sorted(layers), "location": "input"}]}}

    @classmethod
    def from_compressed_tensors(cls, group):
        return cls()


@pytest.fixture
def negate(monkeypatch):
    """Negate registered: one entry appended to the registry, nothing else changed."""
    monkeypatch.setattr(scheme_module, "TRANSFORMS", (*scheme_module.TRANSFORMS, Negate))


def test_a_registered_transform_has_a_name_a_keyword_and_a_header_entry(negate):
    scheme = QuantScheme.parse("w8a8-asym+smooth+neg")
    assert scheme.transforms == (scheme_module.Smooth(), Negate())
    assert scheme.negated and scheme.smoothed and not W8A8.negated
    assert scheme == W8A8_ASYMMETRIC.replace(smoothed=True, negated=True) == QuantScheme.parse("w8a8-asym+neg+smooth")
    assert scheme.name == "w8a8-asym+smooth+neg"
    assert scheme.describe().endswith("smoothed (input_scale), negated")
    assert scheme.to_dict()["negated"] is True and "negated" not in W8A8.to_dict()
    assert QuantScheme.from_dict(scheme.to_dict()) == scheme
    with pytest.raises(ValueError, match="unknown scheme"):
        QuantScheme.parse("w8a8+neg+neg")


@pytest.mark.parametrize("backend", ["numpy", "torch", pytest.param("triton", marks=pytest.mark.interpreter)])
@pytest.mark.parametrize("name", ["w8a8", "w8a8-static", "w8a16"])
def test_a_registered_transform_runs_from_layer_to_file(negate, rng, tmp_path, device, backend, name):
    """Built, run on every backend and saved through the registry's hooks alone: the negated
    layer's output is the plain layer's, bit for bit, and survives save_quantized."""
    linear = torch.nn.Linear(24, 16)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(rng.standard_normal((16, 24), dtype=np.float32)))
    x = torch.from_numpy(rng.standard_normal((5, 24), dtype=np.float32))
    options = {"activation_scale": 0.1} if name == "w8a8-static" else {}  # no code clamps at -128
    plain = Int8Linear.from_float(linear, name, **options)
    negated = Int8Linear.from_float(linear, name + "+neg", **options)
    assert torch.equal(negated.weight, -plain.weight)
    on = device if backend == "triton" else "cpu"
    with use_backend(backend):
        expected = plain.to(on)(x.to(on))
        assert_exact(negated.to(on)(x.to(on)), expected, "negated layer")
    save_quantized(negated.cpu(), tmp_path / "layer.safetensors")
    loaded = load_quantized(torch.nn.Linear(24, 16), tmp_path / "layer.safetensors")
    assert loaded.scheme == negated.scheme
    with use_backend("torch"):
        assert_exact(loaded(x), negated.cpu()(x), "loaded layer")


def test_a_registered_transform_is_written_and_read_as_a_transform_config(negate):
    """compressed-tensors: the transform's group in transform_config, the quantization
    arguments without it; reading the config gives each layer its transform back."""
    from qtriton.formats.hf import layer_schemes, quantization_config

    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32))
    skeleton = copy.deepcopy(model)
    quantize_model(model, plan={"0": QuantScheme.parse("w8a8+neg"), "2": W8A8})
    config = quantization_config(model)
    assert config["transform_config"] == {"config_groups": {"negate": {"type": "negate", "apply": [
        {"targets": ["0"], "location": "input"}]}}}
    assert len(config["config_groups"]) == 1  # the same quantization for both layers
    assert layer_schemes(skeleton, config) == {"0": QuantScheme.parse("w8a8+neg"), "2": W8A8}


def test_a_transform_config_no_kind_reads_is_refused():
    from qtriton.formats.hf import layer_schemes

    model = torch.nn.Sequential(torch.nn.Linear(32, 32))
    config = {"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": ["Linear"], "weights": {
        "num_bits": 8, "strategy": "channel"}}}, "transform_config": {"config_groups": {"u": {"type": "random-hadamard"}}}}
    with pytest.raises(ValueError, match="'u' of type 'random-hadamard': Int8Linear runs no such transform"):
        layer_schemes(model, config)


# ------------------------------------------------------------------------- the kinds
def test_kinds_say_what_runs_int8_and_the_plan_candidates():
    assert [s.int8_compute for s in (W8A8, W8A8_ASYMMETRIC, W8A8_STATIC, W8A16)] == [True, True, True, False]
    assert [s.tier for s in (W8A8, W8A16)] == [0, 1]
    assert scheme_module.CANDIDATES == ("w8a8", "w8a8-asym", "w8a8-asym+smooth", "w8a8+had", "w8a8-asym+had", "w8a16")
    assert W8A8_STATIC.calibrated_tensors() == ("activation_scale",)
    assert W8A16.replace(smoothed=True).calibrated_tensors() == ("input_scale",)
    assert not W8A8.needs_calibration


@pytest.mark.parametrize("scheme", ALL, ids=lambda s: s.name)
def test_a_layer_holds_its_schemes_tensors(scheme):
    layer = Int8Linear(6, 4, bias=True, scheme=scheme)
    slots = scheme.tensors(6, 4, True)
    assert list(layer.state_dict()) == [slot.name for slot in slots]
    for slot in slots:
        assert getattr(layer, slot.name).dtype == slot.dtype and tuple(getattr(layer, slot.name).shape) == slot.shape
    for name in scheme_module.LAYER_TENSORS:
        if name not in {slot.name for slot in slots}:
            assert getattr(layer, name) is None


@pytest.mark.parametrize("name", ["w8a8", "w8a8-asym+smooth", "w8a8-static+smooth", "w8a16+smooth"])
def test_every_kind_and_transform_compiles_in_one_graph(rng, name):
    """A kind's forward and its transforms' activation options trace with fullgraph=True (a
    graph break would fail here), and the compiled layer computes what the eager one does."""
    linear = torch.nn.Linear(32, 16)
    scheme = QuantScheme.parse(name)
    data = {"input_scale": torch.from_numpy(rng.uniform(0.5, 2.0, 32).astype(np.float32)),
            "activation_scale": 0.05}
    layer = Int8Linear.from_float(linear, scheme, **{k: v for k, v in data.items() if k in scheme.calibrated_tensors()})
    x = torch.from_numpy(rng.standard_normal((4, 32), dtype=np.float32))
    torch._dynamo.reset()
    with use_backend("torch"):
        assert_exact(torch.compile(layer, fullgraph=True, backend="eager")(x), layer(x), "compiled")


@dataclasses.dataclass(frozen=True)
class NegateInBlocks(Negate):
    """Negate with a parameter the layer decides (as a rotation's block size): None in the
    scheme a plan names, the largest power of two dividing in_features once built."""

    block: int | None = None
    keyword: ClassVar[str] = "negated_block"
    suffix_forms: ClassVar[str] = "'+negb' or '+negb<block>'"

    @classmethod
    def from_keyword(cls, value):
        return None if value is None else cls(None if value == "auto" else value)

    def keyword_value(self):
        return "auto" if self.block is None else self.block

    def suffix(self):
        return "negb" if self.block is None else f"negb{self.block}"

    @classmethod
    def parse(cls, suffix):
        if not suffix.startswith("negb"):
            return None
        return cls(int(suffix[4:]) if suffix[4:] else None)

    def for_layer(self, in_features):
        return self if self.block is not None else dataclasses.replace(self, block=in_features & -in_features)


def test_a_transform_made_concrete_for_its_layer(monkeypatch, rng, tmp_path):
    monkeypatch.setattr(scheme_module, "TRANSFORMS", (*scheme_module.TRANSFORMS, NegateInBlocks))
    linear = torch.nn.Linear(48, 8)
    layer = Int8Linear.from_float(linear, "w8a8+negb")
    assert layer.scheme == QuantScheme.parse("w8a8+negb16") and layer.scheme.negated_block == 16
    assert Int8Linear(40, 8, scheme="w8a8+negb").scheme.name == "w8a8+negb8"
    save_quantized(layer, tmp_path / "layer.safetensors")
    assert load_quantized(linear, tmp_path / "layer.safetensors").scheme == layer.scheme
