"""`qtriton eval` and qtriton.accuracy.evaluate: perplexity, top-1 and KL of quantized recipes against
the float model, on a tiny language model (the real ones are in tests/test_llm.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from qtriton.accuracy import evaluate
from qtriton.accuracy.planning import Plan, layer_groups
from qtriton.cli import main
from qtriton.model.nn import Int8Linear
from qtriton.model.scheme import W8A16

VOCAB, D = 40, 32


class TinyCausalLM(nn.Module):
    """Embedding, norm, two Linear layers with outlier channels, head; returns .logits as HF does."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D)
        self.norm = nn.RMSNorm(D)
        self.up_proj, self.down_proj = nn.Linear(D, 64), nn.Linear(64, D)
        self.lm_head = nn.Linear(D, VOCAB)
        with torch.no_grad():
            self.norm.weight[[1, 9]] = 50.0

    def forward(self, ids):
        x = self.embed(ids)
        x = x + self.down_proj(torch.relu(self.up_proj(self.norm(x))))
        return SimpleNamespace(logits=self.lm_head(x))


class Tokenizer:
    """One token per character."""

    def __call__(self, text, return_tensors="pt"):
        return SimpleNamespace(input_ids=torch.tensor([[ord(c) % VOCAB for c in text]]))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyCausalLM().eval()


def _ids(seed, n=64):
    return torch.randint(0, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


def test_compare_measures_the_difference():
    torch.manual_seed(1)
    reference = torch.randn(30, VOCAB)
    ids = torch.randint(0, VOCAB, (30,))
    same = evaluate.compare(reference.clone(), reference, ids)
    assert same == {"perplexity_change": 0.0, "top1": 1.0, "kl": pytest.approx(0.0, abs=1e-6)}
    other = evaluate.compare(reference + torch.randn(30, VOCAB), reference, ids)
    assert other["kl"] > 0.1 and other["top1"] < 1.0


def test_rows_per_recipe_and_alpha(model):
    ids, calibration = _ids(1), _ids(2)
    rows = evaluate.evaluate(model, ids, ["w8a8", "w8a8-asym+smooth", "w8a16"], calibration_ids=calibration,
                             alphas=(0.3, 0.7), progress=False)
    assert [(r["recipe"], r["alpha"]) for r in rows] == [
        ("w8a8", None), ("w8a8-asym+smooth", 0.3), ("w8a8-asym+smooth", 0.7), ("w8a16", None)]
    by = {(r["recipe"], r["alpha"]): r for r in rows}
    # The outlier channels: smoothing and weight-only are both far closer to float than W8A8.
    assert by[("w8a8-asym+smooth", 0.3)]["kl"] < by[("w8a8", None)]["kl"]
    assert by[("w8a16", None)]["kl"] < by[("w8a8", None)]["kl"]
    assert "| w8a8-asym+smooth | 0.3 |" in evaluate.table(rows)
    assert not any(isinstance(m, Int8Linear) for m in model.modules())  # each recipe quantized a copy
    with pytest.raises(ValueError, match="calibration text"):
        evaluate.evaluate(model, ids, ["w8a8+smooth"], progress=False)


def test_command(model, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "load", lambda source: (model, Tokenizer()))
    text, calibration = tmp_path / "text.txt", tmp_path / "calibration.txt"
    text.write_text("the quick brown fox jumps over the lazy dog " * 3)
    calibration.write_text("pack my box with five dozen liquor jugs " * 3)
    plan = Plan({name: W8A16 for name in layer_groups(model, "layer")})
    (tmp_path / "plan.json").write_text(plan.to_json())
    argv = ["eval", "tiny", "--text", str(text), "--calibration", str(calibration), "--recipe", "w8a8-asym+smooth",
            "--alpha", "0.4,0.6", "--plan", str(tmp_path / "plan.json"), "--tokens", "100", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == 100 and [r["alpha"] for r in out["rows"]] == [0.4, 0.6, None]
    assert out["rows"][2]["recipe"] == "plan plan.json" and out["rows"][2]["kl"] > 0
    assert main(argv[:-1]) == 0
    assert "| plan plan.json | - |" in capsys.readouterr().out


@pytest.mark.parametrize(("option", "message"), [
    (["--recipe", "w9a9"], "unknown scheme"),
    (["--alpha", "0.5,x"], "--alpha"),
    (["--alpha", "1.5"], "--alpha"),
    (["--tokens", "1"], "--tokens"),
])
def test_bad_options_are_one_line(model, tmp_path, monkeypatch, capsys, option, message):
    monkeypatch.setattr(evaluate, "load", lambda source: (model, Tokenizer()))
    (tmp_path / "t.txt").write_text("some text to measure on")
    assert main(["eval", "tiny", "--text", str(tmp_path / "t.txt"), *option]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qtriton eval: error:") and message in err[0]


def test_unknown_model_is_one_line(tmp_path, capsys):
    pytest.importorskip("transformers")
    (tmp_path / "t.txt").write_text("some text")
    assert main(["eval", str(tmp_path / "missing.gguf"), "--text", str(tmp_path / "t.txt"), "--recipe", "w8a8"]) == 2
    assert "missing.gguf" in capsys.readouterr().err
