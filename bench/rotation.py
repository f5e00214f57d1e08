"""python -m bench rotation [--model smollm2|gemma3] [--recipes ...] [--out results.jsonl]:
the rotation study behind `+had` (docs/models.md, "Hadamard rotation"): which rotation of each
`nn.Linear`'s input makes per-token int8 activations accurate, measured before any of it was
built into the package, on rotations the package does not run (full non-power-of-two
rotations, random signs) as well as the one it does.

Each recipe replaces every decoder `nn.Linear` (the output head aside) by a layer that
rotates x -> x R and stores W R (R orthogonal, so the float layer computes what it did),
quantizes the weight per output channel (symmetric, qtriton's codes) and, unless `float`,
x R per token with qtriton's own activation codes (`torch_backend.quantize_activations`);
the product runs dequantized in float32, which differs from Int8Linear's exact int32 GEMM by
float rounding only. A recipe is `rotation/activations[/seed][/smooth<alpha>]`:

    rotation     none; pow2: blocks of the largest power of two dividing in_features (what
                 `+had` runs: 576 -> 64, 1536 -> 512, 640 -> 128); b<N>: blocks of N; full:
                 one rotation of all in_features (compressed-tensors' `random_hadamard_matrix`
                 construction with every sign +1: a known Hadamard matrix of order 144, 192 or
                 160 times a Sylvester one for 576, 1536, 640); an `R` suffix (pow2R, fullR)
                 multiplies the rows of the Hadamard matrix by random signs (compressed-tensors'
                 `random-hadamard`, seeded); mix:<a>:<b>: rotation a on the 576/640-wide
                 inputs, b on the others
    activations  sym | asym (per-token int8) | float (the rotated float model: exactness)
    smooth<a>    SmoothQuant (alpha a, calibrated on llm_calibration.txt) folded first

Measured against the float model on tests/data/llm_validation.txt (what choices are made on)
and tests/data/llm_test.txt (reported), float logits cached in --cache. Needs the `models`
extra and compressed-tensors.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

DEFAULT_RECIPES = ("none/sym,none/asym,pow2/float,pow2/sym,pow2/asym,pow2R/sym,pow2R/asym,full/sym,fullR/sym,"
                   "b64/sym,mix:full:pow2/sym,mix:pow2:full/sym,pow2/sym/0/smooth0.5,pow2/asym/0/smooth0.5")


def _hadamard(n: int, seed: int | None) -> torch.Tensor:
    """An n x n Hadamard matrix (entries +-1, float64) by compressed-tensors' constructions:
    Sylvester's for powers of two, else a known order-K matrix times Sylvester's; seed: random
    row signs (its random_hadamard_matrix), None: none."""
    from compressed_tensors.transform.utils import hadamard

    if seed is None:
        if n & (n - 1) == 0:
            return hadamard.deterministic_hadamard_matrix(n, torch.float64)
        return hadamard._matmul_hadU(torch.eye(n, dtype=torch.float64))
    generator = torch.Generator()
    generator.manual_seed(seed)
    return hadamard.random_hadamard_matrix(n, torch.float64, gen=generator)


def rotation(in_features: int, spec: str, seed: int) -> torch.Tensor | None:
    """The orthonormal block (b x b, float64) applied to each b consecutive inputs, or None."""
    if spec == "none":
        return None
    if spec.startswith("mix:"):
        _, wide, other = spec.split(":")
        return rotation(in_features, wide if in_features in (576, 640) else other, seed)
    signs = seed if spec.endswith("R") else None
    spec = spec.removesuffix("R")
    if spec == "pow2":
        block = in_features & -in_features
    elif spec == "full":
        block = in_features
    elif spec.startswith("b"):
        block = int(spec[1:])
    else:
        raise ValueError(f"unknown rotation {spec!r}")
    return _hadamard(block, signs) / math.sqrt(block)


class RotatedLayer(nn.Module):
    """x -> quantize?(x R) @ quantize(W R)^T + b, R block-diagonal with blocks q."""

    def __init__(self, linear: nn.Linear, q: torch.Tensor | None, activations: str):
        from qtriton import torch_backend

        super().__init__()
        weight = linear.weight.detach().to(torch.float64)
        if q is not None:
            weight = (weight.reshape(weight.shape[0], -1, q.shape[0]) @ q).reshape(weight.shape)
        weight = weight.to(torch.float32)
        if activations != "float":
            codes, scale, _ = torch_backend.quantize(weight, 8, True, "channel", 0)
            weight = codes.to(torch.float32) * scale[:, None]
        self.register_buffer("weight", weight)
        self.register_buffer("q", None if q is None else q.to(torch.float32))
        self.bias = None if linear.bias is None else linear.bias.detach().to(torch.float32)
        self.activations = activations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from qtriton import torch_backend

        shape = x.shape
        rows = x.to(torch.float32).reshape(-1, shape[-1])
        if self.q is not None:
            rows = (rows.reshape(rows.shape[0], -1, self.q.shape[0]) @ self.q).reshape(rows.shape)
        if self.activations != "float":
            codes, scale, zero_point = torch_backend.quantize_activations(rows, self.activations == "sym")
            codes = codes.to(torch.float32) if zero_point is None else (codes.to(torch.int32) - zero_point[:, None]).float()
            rows = codes * scale[:, None]
        out = rows @ self.weight.t()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], -1).to(x.dtype)


def _swap(model: nn.Module, layers: dict[str, nn.Module]) -> dict[str, nn.Module]:
    old = {}
    for name, layer in layers.items():
        parent, _, attr = name.rpartition(".")
        holder = model.get_submodule(parent)
        old[name] = getattr(holder, attr)
        setattr(holder, attr, layer)
    return old


def _parse(recipe: str) -> tuple[str, str, int, float | None]:
    parts = recipe.split("/")
    if len(parts) < 2 or parts[1] not in ("sym", "asym", "float"):
        raise ValueError(f"recipe {recipe!r}: rotation/sym|asym|float[/seed][/smooth<alpha>]")
    seed, alpha = 0, None
    for extra in parts[2:]:
        if extra.startswith("smooth"):
            alpha = float(extra.removeprefix("smooth"))
        else:
            seed = int(extra)
    return parts[0], parts[1], seed, alpha


def main(argv: list[str] | None = None) -> int:
    from bench import smoothquant
    from qtriton.accuracy.calibration import calibrate
    from qtriton.accuracy.evaluate import compare

    parser = argparse.ArgumentParser(prog="python -m bench rotation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(smoothquant.LOADERS), default="smollm2")
    parser.add_argument("--recipes", default=DEFAULT_RECIPES, help="comma-separated (default: %(default)s)")
    parser.add_argument("--texts", default="validation,test")
    parser.add_argument("--out", type=Path, help="append each row as a JSON line here")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/qtriton-rotation-cache"),
                        help="float logits cached here (default: %(default)s)")
    args = parser.parse_args(argv)
    recipes = [_parse(r) + (r,) for r in args.recipes.split(",")]

    model, tokenizer = smoothquant.LOADERS[args.model]()
    texts = args.texts.split(",")
    ids = {t: smoothquant.text_ids(tokenizer, f"llm_{t}") for t in texts}
    args.cache.mkdir(parents=True, exist_ok=True)
    reference = {}
    for t in texts:
        path = args.cache / f"{args.model}_{t}_{ids[t].shape[1]}.pt"
        if not path.exists():
            with torch.inference_mode():
                torch.save(model(ids[t]).logits[0].float(), path)
        reference[t] = torch.load(path)
    calibration_ids = smoothquant.text_ids(tokenizer, "llm_calibration", None)
    print(f"# {args.model}: {', '.join(f'{t} {ids[t].shape[1]} tokens' for t in texts)}; torch {torch.__version__}")
    print("| recipe | " + " | ".join(f"{t} top-1 | {t} perplexity | {t} KL" for t in texts) + " |")
    print("|---|" + "---:|" * 3 * len(texts))
    smoothed: dict[float, nn.Module] = {}
    for rotation_spec, activations, seed, alpha, label in recipes:
        base = model
        if alpha is not None:
            if alpha not in smoothed:
                smoothed.clear()  # one smoothed copy at a time
                smoothed[alpha] = copy.deepcopy(model)
                calibrate(smoothed[alpha], [calibration_ids], alpha=alpha, progress=False).smooth(smoothed[alpha])
            base = smoothed[alpha]
        start = time.perf_counter()
        layers = {name: RotatedLayer(m, rotation(m.in_features, rotation_spec, seed), activations)
                  for name, m in base.named_modules()
                  if isinstance(m, nn.Linear) and name.rpartition(".")[2] != "lm_head"}
        old = _swap(base, layers)
        row = {"model": args.model, "recipe": label}
        try:
            for t in texts:
                with torch.inference_mode():
                    logits = base(ids[t]).logits[0].float()
                row[t] = compare(logits, reference[t], ids[t][0])
                row[t]["tokens"] = int(ids[t].shape[1])
                if activations == "float":
                    row[t]["max_abs_logit_change"] = float((logits - reference[t]).abs().max())
        finally:
            _swap(base, old)
        row["seconds"] = round(time.perf_counter() - start, 1)
        print(f"| {label} | " + " | ".join(f"{row[t]['top1']:.1%} | {row[t]['perplexity_change']:+.2%} | "
                                           f"{row[t]['kl']:.4f}" for t in texts) + " |", flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    return 0
