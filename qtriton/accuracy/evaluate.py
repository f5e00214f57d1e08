"""`qtriton eval`: how far a quantized model is from its float self on a text.

    qtriton eval MODEL --text test.txt [--calibration calib.txt] [--recipe w8a8-asym+smooth,w8a16]
                 [--alpha 0.3,0.5,0.7] [--plan plan.json] [--tokens 512] [--json] [--no-progress]

MODEL is a Hugging Face folder, a hub id already in the local cache, or a GGUF file, of the
float model (a quantized folder is refused: its own int8 error would be the baseline). Each
recipe (a scheme name for every layer but the output head, or a plan from `qtriton.plan`
saved with `Plan.to_json`) quantizes a copy of the float model, calibrated on the calibration
text when the recipe smooths (once per alpha); each row gives the perplexity change, the
top-1 next-token agreement and the mean KL divergence per token from the float model on the
text, on the torch backend (exact like the kernels), and the fraction of the decoder layers'
linear FLOPs the recipe runs int8 x int8. Keep the calibration text apart from the
one measured on: a number on the calibration text says nothing about unseen text. Every
option is checked before the model loads.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from qtriton.accuracy.fidelity import kl_top1, log_probs, perplexity, quantized_copy
from qtriton.model.scheme import CANDIDATES, QuantScheme
from qtriton.progress import progress as bar

DEFAULT_RECIPES = ",".join(CANDIDATES)


def compare(logits: torch.Tensor, reference: torch.Tensor, ids: torch.Tensor) -> dict:
    """perplexity_change, top1 (agreement) and kl (mean KL(float || quantized) per token) of
    logits against the float model's reference logits, both (T, vocab), on ids (T,): the
    measurement of `qtriton.sensitivity` and `qtriton.plan` (qtriton.accuracy.fidelity)."""
    kl, top1 = kl_top1([(log_probs(logits), log_probs(reference))])
    return {"perplexity_change": perplexity(logits, ids) / perplexity(reference, ids) - 1, "top1": top1, "kl": kl}


_NEEDS_CALIBRATION = "a smoothed or static recipe needs a calibration text (--calibration)"


def _needs_calibration(recipe) -> bool:
    return any(s is not None and s.needs_calibration for s in _schemes_of(recipe))


def _already_quantized(what: str, how: str) -> ValueError:
    return ValueError(
        f"{what} is already quantized ({how}): eval measures quantized recipes against the float model, and a "
        "quantized baseline would hide their error; pass the float model it was made from"
    )


def check_float_model(model) -> None:
    """ValueError unless model is float: no Int8Linear layer, no quantization_config (a
    transformers model loaded from a quantized folder, its weights decompressed)."""
    from qtriton.model.nn import Int8Linear

    layers = sum(isinstance(m, Int8Linear) for m in model.modules())
    if layers:
        raise _already_quantized(f"model ({type(model).__name__})", f"{layers} Int8Linear layers")
    quant = getattr(getattr(model, "config", None), "quantization_config", None)
    if quant is not None and _quant_method(quant) != "gguf":
        raise _already_quantized(f"model ({type(model).__name__})", f"its config has a quantization_config, "
                                 f"quant_method {_quant_method(quant)!r}")


def _quant_method(quant) -> str | None:
    """quant_method of a quantization_config (a dict, or transformers' object with an enum).
    "gguf" is no quantized model: transformers dequantizes a GGUF file to float when it loads
    it (the float models of this suite are GGUF files)."""
    method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    return None if method is None else str(getattr(method, "value", method))


def check_recipes(recipes: list) -> None:
    """ValueError for no recipe, or a plan that quantizes no layer (a row of 100 % and KL 0)."""
    if not recipes:
        raise ValueError("no recipe to measure: give scheme names or plans")
    for recipe in recipes:
        if not isinstance(recipe, str) and all(s is None for s in _schemes_of(recipe)):
            label = getattr(recipe, "label", "plan")
            raise ValueError(f"{label} quantizes no layer (every layer float): there is nothing to measure")


def quantize_recipe(model, recipe, calibration_ids: torch.Tensor | None, alpha: float | None):
    """A quantized copy of model: recipe is a scheme name (every layer but the output head) or
    a Plan / {name: QuantScheme | None}; smoothed or static schemes calibrate on calibration_ids."""
    from qtriton.accuracy.planning import layer_groups

    if isinstance(recipe, str):
        scheme = QuantScheme.parse(recipe)
        recipe = {name: scheme for name in layer_groups(model, "layer")}
    schemes = getattr(recipe, "schemes", recipe)
    needs = _needs_calibration(recipe)
    if needs and calibration_ids is None:
        raise ValueError(_NEEDS_CALIBRATION)
    # A plan decides every layer, the output head included (Plan.of_model of a model whose head is int8).
    return quantized_copy(model, schemes, [calibration_ids] if needs else None, alpha)


def evaluate(model, ids: torch.Tensor, recipes: list, *, calibration_ids: torch.Tensor | None = None,
             alphas: tuple[float, ...] = (0.5,), reference: torch.Tensor | None = None,
             progress: bool | None = None) -> list[dict]:
    """One row per recipe (and per alpha for recipes that smooth): recipe, alpha, float
    perplexity, perplexity_change, top1, kl, int8_flops (the fraction of the decoder layers'
    linear FLOPs that run int8 x int8), seconds. ids: (1, T) token ids. model must be
    float (check_float_model); a plan must quantize some layer. progress: a bar over the rows
    (None: a bar on a terminal, in logs a line per 30 s)."""
    from qtriton.accuracy.planning import int8_flop_fraction
    from qtriton.backend import use_backend

    check_recipes(recipes)
    check_float_model(model)
    if reference is None:
        with torch.inference_mode():
            reference = model(ids).logits[0]
    work = []
    for recipe in recipes:
        label = recipe if isinstance(recipe, str) else getattr(recipe, "label", "plan")
        smooths = any(s is not None and s.smoothed for s in _schemes_of(recipe))
        work += [(label, recipe, a) for a in (alphas if smooths else (None,))]
    work = bar(work, desc="eval", enabled=progress)
    rows = []
    for label, recipe, alpha in work:
        start = time.perf_counter()
        quantized = quantize_recipe(model, recipe, calibration_ids, 0.5 if alpha is None else alpha)
        with torch.inference_mode(), use_backend("torch"):
            logits = quantized(ids).logits[0]
        row = {"recipe": label, "alpha": alpha, "float_perplexity": perplexity(reference, ids[0])}
        row.update(compare(logits, reference, ids[0]))
        row["int8_flops"] = int8_flop_fraction(quantized)
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
    return rows


def _schemes_of(recipe) -> list:
    if isinstance(recipe, str):
        return [QuantScheme.parse(recipe)]
    return list(getattr(recipe, "schemes", recipe).values())


def table(rows: list[dict]) -> str:
    lines = ["| recipe | alpha | perplexity vs float | top-1 agreement | KL | int8 x int8 FLOPs | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        alpha = "-" if r["alpha"] is None else f"{r['alpha']:g}"
        lines.append(f"| {r['recipe']} | {alpha} | {r['perplexity_change']:+.2%} | {r['top1']:.1%} | "
                     f"{r['kl']:.4f} | {r['int8_flops']:.1%} | {r['seconds']:.0f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- the command
def load(source: str):
    """(float32 causal LM, tokenizer) from a folder, a GGUF file or a cached hub id, offline;
    a folder whose config has a quantization_config is refused before anything loads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ValueError("qtriton eval needs transformers (and gguf, accelerate for GGUF files): "
                         "pip install 'qtriton[models]'") from None
    path = Path(source)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file {source}")
        where, options = path.parent, {"gguf_file": path.name}
    else:
        where, options = source, {"local_files_only": True}
    quant = None
    try:
        if "gguf_file" not in options:  # the config alone, read in a moment
            quant = getattr(AutoConfig.from_pretrained(where, **options), "quantization_config", None)
    except (OSError, ValueError, ImportError) as err:
        raise ValueError(f"cannot load {source} as a causal language model: {err}") from None
    if quant is not None and _quant_method(quant) != "gguf":
        raise _already_quantized(source, f"its config.json has a quantization_config, quant_method "
                                         f"{_quant_method(quant)!r}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **options)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **options).eval()
    except (OSError, ValueError, ImportError) as err:
        raise ValueError(f"cannot load {source} as a causal language model: {err}") from None
    return model, tokenizer


def add_arguments(parser) -> None:
    parser.add_argument("model", help="a Hugging Face folder, a hub id in the local cache, or a .gguf file")
    parser.add_argument("--text", required=True, help="the text to measure on (not the calibration text)")
    parser.add_argument("--calibration", help="calibration text for smoothed or static recipes")
    parser.add_argument("--recipe", default=DEFAULT_RECIPES,
                        help="comma-separated scheme names for every layer (default: %(default)s)")
    parser.add_argument("--plan", action="append", default=[], help="a plan JSON file (Plan.to_json); repeatable")
    parser.add_argument("--alpha", default="0.5", help="comma-separated SmoothQuant alphas (default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=512, help="cut each text to this many tokens (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (a positive integer)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress on stderr (a bar on a terminal, in logs a line per 30 s)")


def _alphas(text: str) -> tuple[float, ...]:
    try:
        alphas = tuple(float(a) for a in text.split(","))
    except ValueError:
        raise ValueError(f"--alpha must be comma-separated numbers, got {text!r}") from None
    if not alphas or not all(0 <= a <= 1 for a in alphas):
        raise ValueError(f"--alpha values must be in [0, 1], got {text!r}")
    return alphas


def _read(option: str, file: str) -> str:
    """The text of an option's file; ValueError naming the option if it cannot be read."""
    try:
        return Path(file).read_text()
    except FileNotFoundError:
        raise ValueError(f"{option} {file}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{option} {file} cannot be read: {err}") from None


def _read_plan(file: str):
    from qtriton.accuracy.planning import Plan

    text = _read("--plan", file)
    try:
        plan = Plan.from_dict(json.loads(text))
    except json.JSONDecodeError as err:
        raise ValueError(f"--plan {file} is not valid JSON: {err}") from None
    except ValueError as err:
        raise ValueError(f"--plan {file}: {err}") from None
    if all(s is None for s in plan.schemes.values()):
        raise ValueError(f"--plan {file} quantizes no layer (every layer float): there is nothing to measure")
    plan.label = f"plan {Path(file).name}"
    return plan


def run(args) -> int:
    from qtriton.model.scheme import QuantScheme

    # Every option first: a mistake costs no model load.
    if args.tokens < 2:
        raise ValueError(f"--tokens must be at least 2, got {args.tokens}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    alphas = _alphas(args.alpha)
    recipes: list = [r.strip() for r in args.recipe.split(",") if r.strip()]
    for r in recipes:
        QuantScheme.parse(r)  # a bad name fails before the model loads
    if not recipes and not args.plan:
        raise ValueError(f"--recipe names no scheme (got {args.recipe!r}) and no --plan is given: nothing to measure")
    recipes += [_read_plan(file) for file in args.plan]
    texts = {"text": _read("--text", args.text)}
    if args.calibration:
        texts["calibration"] = _read("--calibration", args.calibration)
    for key, text in texts.items():
        if not text.strip():
            raise ValueError(f"--{key} {getattr(args, key)} is empty")
    if "calibration" not in texts and any(_needs_calibration(r) for r in recipes):
        raise ValueError(_NEEDS_CALIBRATION)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load(args.model)
    ids = {k: tokenizer(v, return_tensors="pt").input_ids[:, : args.tokens] for k, v in texts.items()}
    if ids["text"].shape[1] < 2:
        raise ValueError(f"--text {args.text} has fewer than 2 tokens")
    if "calibration" in ids and ids["calibration"].shape[1] < 1:
        raise ValueError(f"--calibration {args.calibration} has no tokens")
    rows = evaluate(model, ids["text"], recipes, calibration_ids=ids.get("calibration"), alphas=alphas,
                    progress=False if args.no_progress else None)
    if args.json:
        print(json.dumps({"model": args.model, "text": args.text, "tokens": int(ids["text"].shape[1]), "rows": rows},
                         indent=1))
    else:
        print(f"# {args.model} on {args.text} ({ids['text'].shape[1]} tokens), float perplexity "
              f"{rows[0]['float_perplexity']:.2f}")
        print(table(rows))
    return 0
