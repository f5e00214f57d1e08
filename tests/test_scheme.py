"""QuantScheme: the one description of a layer's quantization (qtriton/scheme.py)."""

from __future__ import annotations

import dataclasses

import pytest

from qtriton.scheme import PRESETS, W8A8, W8A8_ASYMMETRIC, W8A8_STATIC, W8A16, QuantScheme

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
