"""`qtriton report`: the per-tensor table, its numbers against the oracle, and bad checkpoints."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from qtriton import reference
from qtriton.cli import EXIT_USAGE, main
from qtriton.report import add_arguments, report_checkpoint, run


def _state_dict(rng) -> dict[str, torch.Tensor]:
    return {
        "encoder.dense.weight": torch.from_numpy(rng.standard_normal((48, 256), dtype=np.float32)),
        "encoder.dense.bias": torch.from_numpy(rng.standard_normal(48, dtype=np.float32)),
        # Outlier column: per-tensor scales suffer, per-channel and group-wise do not.
        "head.weight": torch.from_numpy(rng.standard_normal((10, 30), dtype=np.float32)).to(torch.bfloat16),
        "step": torch.tensor(7),
    }


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args(argv))


@pytest.fixture
def checkpoint(tmp_path, rng):
    state = _state_dict(rng)
    state["head.weight"][3, 5] = 40.0
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    return path, state


def test_metrics_match_the_oracle(checkpoint):
    path, state = checkpoint
    rep = report_checkpoint(path)
    by_name = {t.name: t for t in rep.tensors}
    assert set(by_name) == {"encoder.dense.weight", "head.weight"}
    assert set(rep.skipped) == {"encoder.dense.bias", "step"}

    dense = by_name["encoder.dense.weight"]
    w = state["encoder.dense.weight"].numpy()
    assert list(dense.methods) == ["sym/tensor", "asym/tensor", "sym/channel", "asym/channel", "sym/g128", "asym/g128"]
    q, scale = reference.quantize_symmetric(w, 8, keep_axis=0)
    expected = reference.quantization_error(w, reference.dequantize_symmetric(q, scale, keep_axis=0))
    assert dense.methods["sym/channel"].snr_db == expected["snr"]
    assert dense.methods["sym/channel"].max_error == expected["max_error"]
    assert dense.best == max(dense.methods, key=lambda m: dense.methods[m].snr_db)

    head = by_name["head.weight"]
    assert head.dtype == "bfloat16" and head.shape == (10, 30)
    assert "sym/g128" not in head.methods  # 30 columns: no group of 128
    assert head.methods["sym/channel"].snr_db > head.methods["sym/tensor"].snr_db + 5
    assert head.best in ("sym/channel", "asym/channel")

    # Every tensor counts; head.weight (10 rows, under min_features) stays float as quantize_model keeps it;
    # the dense layer becomes int8 codes + fp32 scales + its fp32 bias.
    assert dense.kept_float is None and head.kept_float == "under min_features=16"
    assert rep.bytes_before == 48 * 256 * 4 + 48 * 4 + 10 * 30 * 2 + 8
    assert rep.bytes_after == (48 * 256 + 48 * 4 + 48 * 4) + 10 * 30 * 2 + 8


def test_fewer_bits_lose_about_6_db_per_bit(checkpoint):
    path, _ = checkpoint
    snr8 = report_checkpoint(path, bits=8).tensors[0].methods["sym/channel"].snr_db
    snr4 = report_checkpoint(path, bits=4).tensors[0].methods["sym/channel"].snr_db
    assert 20 < snr8 - snr4 < 28


def test_table_and_json(checkpoint, capsys):
    path, _ = checkpoint
    assert _run([str(path), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert max(len(line) for line in table.splitlines()) <= 100
    assert "*" not in table and "asym" not in table and "g128" not in table  # no advice it cannot run
    dense = next(line for line in table.splitlines() if line.startswith("encoder.dense.weight"))
    assert "48x256" in dense and " int8 " in dense
    head = next(line for line in table.splitlines() if line.startswith("head.weight"))
    assert " float " in head
    assert "kept float, under min_features=16: 1: head.weight" in table and "total:" in table

    assert _run([str(path), "--no-progress", "--wide"]) == 0
    wide = capsys.readouterr().out
    assert "asym/g128" in wide and "Int8Linear runs sym/channel" in wide

    assert _run([str(path), "--json", "--bits", "6", "--no-progress"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bits"] == 6
    assert [t["name"] for t in data["tensors"]] == ["encoder.dense.weight", "head.weight"]
    assert data["tensors"][0]["methods"]["asym/g128"]["snr_db"] > 0


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_torch_and_numpy_checkpoints(tmp_path, rng, suffix):
    state = _state_dict(rng)
    path = tmp_path / f"model{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": state, "epoch": 3}, path)  # a training checkpoint nests it
    else:
        np.savez(path, **{k: v.float().numpy() for k, v in state.items()})
    rep = report_checkpoint(path)
    assert [t.name for t in rep.tensors] == ["encoder.dense.weight", "head.weight"]


def test_nan_weight_is_flagged_not_measured(tmp_path, rng):
    state = _state_dict(rng)
    state["encoder.dense.weight"][1, 2] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path))
    rep = report_checkpoint(path)
    bad = rep.tensors[0]
    assert bad.problem is not None and "NaN" in bad.problem and not bad.methods
    assert rep.tensors[1].methods


def test_bad_checkpoints(tmp_path, rng, capsys):
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        report_checkpoint(tmp_path / "missing.safetensors")

    good = tmp_path / "good.safetensors"
    save_file(_state_dict(rng), str(good))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated.safetensors.*truncated or corrupt"):
        report_checkpoint(truncated)

    torch.save(_state_dict(rng), tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:700])
    with pytest.raises(ValueError, match="cut.pt"):
        report_checkpoint(tmp_path / "cut.pt")

    torch.save([torch.ones(3, 3)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        report_checkpoint(tmp_path / "list.pt")

    save_file({"bias": torch.ones(4), "ids": torch.ones(4, 4, dtype=torch.int64)}, str(tmp_path / "no2d.safetensors"))
    with pytest.raises(ValueError, match="no 2-D floating-point weights"):
        report_checkpoint(tmp_path / "no2d.safetensors")

    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported file type"):
        report_checkpoint(tmp_path / "notes.txt")

    with pytest.raises(ValueError, match="bits"):
        report_checkpoint(good, bits=9)

    # The command turns these into a message and exit status 2.
    assert main(["report", str(truncated)]) == EXIT_USAGE
    assert "truncated.safetensors" in capsys.readouterr().err


def test_unquantizable_method_is_na_and_never_best(tmp_path, rng, capsys):
    # Far from zero for its range: an asymmetric zero point would pass 2^24 (the oracle gives
    # a NaN scale), while symmetric quantization still works, if poorly.
    offset = (1e6 + 0.1 * rng.standard_normal((16, 128))).astype(np.float32)
    state = _state_dict(rng)
    state["offset.weight"] = torch.from_numpy(offset)
    path = tmp_path / "offset.safetensors"
    save_file(state, str(path))

    rep = report_checkpoint(path)
    far = {t.name: t for t in rep.tensors}["offset.weight"]
    assert far.problem is None
    asym = [m for m in far.methods if m.startswith("asym")]
    assert asym == ["asym/tensor", "asym/channel", "asym/g128"]
    for m in asym:
        assert "zero point" in far.methods[m].unquantizable
    for m in ("sym/tensor", "sym/channel", "sym/g128"):
        assert far.methods[m].unquantizable is None and np.isfinite(far.methods[m].snr_db)
    assert far.best.startswith("sym/")
    assert all(e.unquantizable is None for e in rep.tensors[0].methods.values())

    assert _run([str(path), "--no-progress"]) == 0
    narrow = capsys.readouterr().out  # shows only sym/channel: no notes on the asymmetric methods
    assert "asym" not in narrow and max(len(line) for line in narrow.splitlines()) <= 100

    assert _run([str(path), "--no-progress", "--wide"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("offset.weight"))
    assert row.count("n/a") == 3 and "inf" not in row and "nan" not in row
    assert "offset.weight asym/tensor, asym/channel, asym/g128: scale / zero point not representable" in table

    assert _run([str(path), "--json", "--no-progress"]) == 0
    tensors = json.loads(capsys.readouterr().out)["tensors"]
    methods = next(t for t in tensors if t["name"] == "offset.weight")["methods"]
    assert methods["asym/channel"] == {
        "snr_db": None,
        "max_error": None,
        "exact": False,
        "unquantizable": far.methods["asym/channel"].unquantizable,
    }
    assert methods["sym/channel"]["unquantizable"] is None and methods["sym/channel"]["snr_db"] is not None


def test_exact_round_trip_is_flagged_in_json(tmp_path, capsys):
    # Integers in -127..127 with 127 present: symmetric per-tensor codes reproduce them exactly.
    exact = torch.arange(-127, 129, dtype=torch.float32).clamp(max=127).reshape(2, 128)
    path = tmp_path / "exact.safetensors"
    save_file({"w": exact}, str(path))
    assert _run([str(path), "--json", "--no-progress"]) == 0
    sym = json.loads(capsys.readouterr().out)["tensors"][0]["methods"]["sym/tensor"]
    assert sym == {"snr_db": None, "max_error": 0.0, "exact": True, "unquantizable": None}


# ------------------------------------------------------------------ qtriton checkpoints
class _LM(torch.nn.Module):
    """Embedding, two linear layers, a norm, a small gate and an lm_head: what quantize_model
    replaces (up, down) and keeps float (embedding, gate under min_features, lm_head)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(200, 32)
        self.up = torch.nn.Linear(32, 64)
        self.down = torch.nn.Linear(64, 32, bias=False)
        self.norm = torch.nn.LayerNorm(32)
        self.gate = torch.nn.Linear(32, 4)
        self.lm_head = torch.nn.Linear(32, 200)


def _tensor_bytes(path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in f.keys())


@pytest.fixture
def lm_files(tmp_path):
    from safetensors.torch import save_model

    from qtriton.formats.serialization import save_quantized
    from qtriton.model.nn import quantize_model

    torch.manual_seed(0)
    model = _LM()
    save_model(model, str(tmp_path / "float.safetensors"))
    summary = quantize_model(model, symmetric_activations=False)
    save_quantized(model, tmp_path / "int8.safetensors")
    return tmp_path / "float.safetensors", tmp_path / "int8.safetensors", summary


def test_float_totals_match_what_quantize_model_and_save_quantized_store(lm_files):
    float_path, int8_path, summary = lm_files
    rep = report_checkpoint(float_path)
    plan = {t.name: t.kept_float for t in rep.tensors}
    assert plan == {
        "embed_tokens.weight": "embedding",
        "up.weight": None,
        "down.weight": None,
        "gate.weight": "under min_features=16",
        "lm_head.weight": "output head (keep_output_head)",
    }
    assert sorted(n.removesuffix(".weight") for n, why in plan.items() if why is None) == sorted(summary.replaced)
    assert rep.bytes_before == _tensor_bytes(float_path)
    assert rep.bytes_after == _tensor_bytes(int8_path)


def test_quantized_checkpoint_against_the_original(lm_files, capsys):
    from safetensors.torch import load_file

    float_path, int8_path, _ = lm_files
    rep = report_checkpoint(int8_path, original=float_path)
    assert [layer.name for layer in rep.layers] == ["up", "down"]
    assert {layer.scheme for layer in rep.layers} == {"w8a8-asym"}
    original = load_file(str(float_path))
    for layer in rep.layers:
        w = original[f"{layer.name}.weight"].numpy()
        q, scale = reference.quantize_symmetric(w, 8, keep_axis=0)
        expected = reference.quantization_error(w, reference.dequantize_symmetric(q, scale, keep_axis=0))
        assert not layer.estimated
        assert layer.snr_db == pytest.approx(expected["snr"], rel=1e-6)
        assert layer.max_error == pytest.approx(expected["max_error"], rel=1e-6)
    assert rep.layers[0].bytes == 64 * 32 + 64 * 4 + 64 * 4 and rep.layers[1].bytes == 32 * 64 + 32 * 4
    assert set(rep.float_tensors) == {
        "embed_tokens.weight", "norm.weight", "norm.bias", "gate.weight", "gate.bias", "lm_head.weight", "lm_head.bias"
    }
    assert rep.bytes_stored == _tensor_bytes(int8_path) and rep.bytes_original == _tensor_bytes(float_path)

    assert _run([str(int8_path), "--original", str(float_path), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert max(len(line) for line in table.splitlines()) <= 100
    up = next(line for line in table.splitlines() if line.startswith("up "))
    assert "64x32" in up and " w8a8-asym " in up and "~" not in up and f"{rep.layers[0].snr_db:.2f}" in up
    assert "original" in table.splitlines()[-1]


def test_quantized_checkpoint_alone_estimates_the_error(lm_files, capsys):
    float_path, int8_path, _ = lm_files
    measured = {layer.name: layer for layer in report_checkpoint(int8_path, original=float_path).layers}
    rep = report_checkpoint(int8_path)
    for layer in rep.layers:
        assert layer.estimated
        # Uniform rounding noise: within 1.5 dB of the measured SNR on Gaussian-like weights.
        assert abs(layer.snr_db - measured[layer.name].snr_db) < 1.5
        assert layer.max_error >= measured[layer.name].max_error  # a bound: scale / 2
    assert _run([str(int8_path), "--no-progress"]) == 0
    up = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("up "))
    assert "~" in up and "<=" in up

    assert _run([str(int8_path), "--json", "--no-progress"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "qtriton" and [layer["name"] for layer in data["layers"]] == ["up", "down"]
    assert data["layers"][0]["estimated"] is True and data["bytes_stored"] == _tensor_bytes(int8_path)


def test_quantized_checkpoint_gives_the_int8_flop_fraction(lm_files, tmp_path, capsys):
    """up and down int8 x int8, gate float (under min_features), lm_head aside: the header's
    float_linears make it exact; a file without them gives it over the int8 layers and says so."""
    import safetensors

    from qtriton.formats.serialization import METADATA_KEY

    _, int8_path, _ = lm_files
    rep = report_checkpoint(int8_path)
    assert rep.int8_flops == pytest.approx(2 * 32 * 64 / (2 * 32 * 64 + 32 * 4)) and rep.int8_flops_note is None
    assert _run([str(int8_path), "--no-progress"]) == 0
    assert f"int8 x int8: {rep.int8_flops:.1%} of the linear layers' FLOPs" in capsys.readouterr().out
    assert _run([str(int8_path), "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["int8_flops"] == pytest.approx(rep.int8_flops)

    with safetensors.safe_open(str(int8_path), framework="pt") as f:  # as a file written before the record
        metadata, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    header = json.loads(metadata[METADATA_KEY])
    del header["float_linears"]
    save_file(state, str(tmp_path / "older.safetensors"), metadata={**metadata, METADATA_KEY: json.dumps(header)})
    rep = report_checkpoint(tmp_path / "older.safetensors")
    assert rep.int8_flops == 1.0 and "does not record its float nn.Linear layers" in rep.int8_flops_note
    header["float_linears"] = {"gate": [4]}
    save_file(state, str(tmp_path / "bad.safetensors"), metadata={**metadata, METADATA_KEY: json.dumps(header)})
    with pytest.raises(ValueError, match="malformed 'float_linears'"):
        report_checkpoint(tmp_path / "bad.safetensors")


def test_rotated_layers_compare_with_the_rotated_original(lm_files, tmp_path):
    """The default scheme stores W R (Hadamard-rotated): the report measures the codes against
    the original rotated by the oracle, as the layer quantized it, not against W."""
    from safetensors.torch import load_file

    from qtriton.formats.serialization import save_quantized
    from qtriton.model.nn import quantize_model

    float_path, _, _ = lm_files
    model = _LM()
    model.load_state_dict(load_file(str(float_path)))
    quantize_model(model)
    save_quantized(model, tmp_path / "rotated.safetensors")
    rep = report_checkpoint(tmp_path / "rotated.safetensors", original=float_path)
    assert [layer.scheme for layer in rep.layers] == ["w8a8+had32", "w8a8+had64"]
    original = load_file(str(float_path))
    for layer, block in zip(rep.layers, (32, 64)):
        w = reference.hadamard_rotate(original[f"{layer.name}.weight"].numpy().astype(np.float64), block)
        w = w.astype(np.float32)
        q, scale = reference.quantize_symmetric(w, 8, keep_axis=0)
        expected = reference.quantization_error(w, reference.dequantize_symmetric(q, scale, keep_axis=0))
        assert not layer.estimated and layer.snr_db == pytest.approx(expected["snr"], rel=1e-6), layer


def test_quantized_checkpoint_shared_and_bare_layers(tmp_path):
    from qtriton.formats.serialization import save_quantized
    from qtriton.model.nn import Int8Linear, quantize_model

    shared = torch.nn.Linear(32, 32)
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared)
    quantize_model(model)
    save_quantized(model, tmp_path / "shared.safetensors")
    rep = report_checkpoint(tmp_path / "shared.safetensors")
    assert [layer.name for layer in rep.layers] == ["0"] and rep.float_tensors == {}

    save_quantized(Int8Linear.from_float(torch.nn.Linear(32, 24)), tmp_path / "bare.safetensors")
    rep = report_checkpoint(tmp_path / "bare.safetensors")
    assert [layer.name for layer in rep.layers] == ["(bare layer)"] and rep.layers[0].shape == (24, 32)


def test_quantized_checkpoint_with_the_wrong_original(lm_files, tmp_path):
    _, int8_path, _ = lm_files
    save_file({"up.weight": torch.ones(8, 8)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match=r"has no \(64, 32\) weight for layer 'up'"):
        report_checkpoint(int8_path, original=tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="is itself a quantized checkpoint"):
        report_checkpoint(int8_path, original=int8_path)
    with pytest.raises(ValueError, match="original is for quantized checkpoints"):
        report_checkpoint(tmp_path / "other.safetensors", original=tmp_path / "other.safetensors")


def test_original_of_a_wrapped_model_matches_by_name_suffix(lm_files, tmp_path):
    # A wrapper (SentenceTransformer's "0.auto_model.") saved from the plain checkpoint.
    from safetensors.torch import load_file

    from qtriton.formats.serialization import save_quantized
    from qtriton.model.nn import quantize_model

    float_path, _, _ = lm_files
    inner = _LM()
    inner.load_state_dict(load_file(str(float_path)))
    wrapped = torch.nn.Sequential(torch.nn.ModuleDict({"auto_model": inner}))
    quantize_model(wrapped, symmetric_activations=False)  # as lm_files
    save_quantized(wrapped, tmp_path / "wrapped.safetensors")
    rep = report_checkpoint(tmp_path / "wrapped.safetensors", original=float_path)
    assert [layer.name for layer in rep.layers] == ["0.auto_model.up", "0.auto_model.down"]
    plain = report_checkpoint(lm_files[1], original=float_path)
    # Same weights, same codes: the same SNR as the unwrapped model's, measured, not estimated.
    assert [layer.snr_db for layer in rep.layers] == [layer.snr_db for layer in plain.layers]
    assert not any(layer.estimated for layer in rep.layers)


def _numbered_state(rng) -> dict:
    return {f"layers.{i}.proj.weight": torch.from_numpy(rng.standard_normal((24, 32), dtype=np.float32))
            for i in (10, 2, 1)}


def test_layers_are_in_numeric_order(tmp_path, rng):
    from safetensors.torch import save_file

    path = tmp_path / "float.safetensors"
    save_file(_numbered_state(rng), str(path))  # the file itself sorts names as strings: 1, 10, 2
    names = [t.name for t in report_checkpoint(path).tensors]
    assert names == ["layers.1.proj.weight", "layers.2.proj.weight", "layers.10.proj.weight"]


def test_a_sharded_folder_and_its_index_are_read(tmp_path, rng):
    from safetensors.torch import save_file

    state = _numbered_state(rng)
    folder = tmp_path / "sharded"
    folder.mkdir()
    weight_map = {}
    for i, (name, tensor) in enumerate(state.items(), 1):
        save_file({name: tensor}, str(folder / f"model-{i:05d}-of-00003.safetensors"))
        weight_map[name] = f"model-{i:05d}-of-00003.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    expected = ["layers.1.proj.weight", "layers.2.proj.weight", "layers.10.proj.weight"]
    for path in (folder, folder / "model.safetensors.index.json"):
        assert [t.name for t in report_checkpoint(path).tensors] == expected
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00003.safetensors"):
        report_checkpoint(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .safetensors file"):
        report_checkpoint(tmp_path / "empty")
