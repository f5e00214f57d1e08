"""`qtriton demo`: the lab walkthrough on a weight matrix and ReLU-like activations."""

from __future__ import annotations

import argparse
import contextlib

import numpy as np
import torch

import qtriton
from qtriton.backend import chosen, get_backend, interpreter_enabled


def _int_in(low: int, high: int | None = None):
    """An argparse type: an int in low..high (high None: no upper bound)."""
    wanted = f"an integer in {low}..{high}" if high is not None else f"an integer >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=_int_in(1, 8192), default=256, help="weight matrix is SIZE x SIZE (default 256)")
    parser.add_argument("--tokens", type=_int_in(1, 65536), default=32, help="rows of activations (default 32)")
    parser.add_argument("--bits", type=_int_in(2, 8), default=8, help="bit width, 2..8 (default 8)")
    parser.add_argument(
        "--device",
        choices=("numpy", "cpu", "cuda"),
        default="numpy",
        help="numpy arrays (the oracle), or torch tensors on cpu / cuda (default numpy)",
    )
    parser.add_argument("--backend", choices=qtriton.backend.BACKENDS, default=None, help="force a backend")
    parser.add_argument("--seed", type=int, default=0)


def _cannot_run(device: str, setting: str) -> str | None:
    """Why the demo cannot run on this machine with these options, or None."""
    has_gpu = torch.cuda.is_available()
    if device == "cuda" and not has_gpu:
        return "--device cuda, but no CUDA GPU is visible (try --device cpu or --device numpy)"
    if setting == "triton" and not has_gpu and not interpreter_enabled():
        return (
            "the triton backend needs a CUDA GPU, or Triton's CPU interpreter "
            "(set TRITON_INTERPRET=1 in the environment); neither is available"
        )
    if device == "cuda" and setting in ("auto", "triton") and interpreter_enabled():
        return "TRITON_INTERPRET=1 runs the Triton kernels on CPU: use --device cpu or --device numpy with it"
    return None


def _where_it_runs(device: str) -> str:
    setting = get_backend()
    backend = chosen(None if device == "numpy" else torch.device(device))
    if setting == "auto":  # named by what runs
        backend = {"numpy": "numpy (oracle)", "torch": "torch ops", "triton": "triton kernels"}[backend]
    if backend.startswith("triton"):
        where = "Triton interpreter on CPU" if interpreter_enabled() else torch.cuda.get_device_name()
    else:
        where = "CPU" if device != "cuda" else torch.cuda.get_device_name()
    return f"backend: {backend}   device: {where}   (setting: {setting})"


def _row(name: str, err: dict) -> str:
    return f"  {name:<28} {err['mse']:>11.3e} {err['max_error']:>11.3e} {err['snr']:>8.2f}"


def run(args: argparse.Namespace) -> int:
    """The walkthrough; ValueError (the command prints it as one line) if it cannot run here."""
    setting = args.backend or get_backend()  # get_backend names QTRITON_BACKEND if it is bad
    problem = _cannot_run(args.device, setting)
    if problem is not None:
        raise ValueError(problem)
    # A context, not set_backend: `main(["demo", "--backend", ...])` leaves the caller's setting alone.
    with qtriton.use_backend(args.backend) if args.backend else contextlib.nullcontext():
        return _walkthrough(args)


def _walkthrough(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    n, bits = args.size, args.bits
    # Rows of very different magnitude: what makes per-channel scales worth their bytes.
    weights = (rng.standard_normal((n, n)) * rng.uniform(0.05, 1.0, (n, 1))).astype(np.float32)
    activations = np.maximum(rng.standard_normal((args.tokens, n)), 0).astype(np.float32)
    to = (lambda a: a) if args.device == "numpy" else (lambda a: torch.from_numpy(a).to(args.device))
    w, x = to(weights), to(activations)

    print(f"qtriton {qtriton.__version__} demo: {n}x{n} weights, {args.tokens}x{n} ReLU activations, {bits} bits")
    print(_where_it_runs(args.device))
    for title, data in (("weights", w), ("activations", x)):
        print(f"\n{title}: error per method")
        print(f"  {'method':<28} {'MSE':>11} {'max error':>11} {'SNR dB':>8}")
        for name, err in qtriton.compare_quantization_methods(data, num_bits=bits).items():
            print(_row(name, err))

    w_q, w_scales = qtriton.quantize_per_channel(w, axis=0, num_bits=bits)
    x_q, x_scale, x_zp = qtriton.quantize_asymmetric(x, num_bits=bits)
    w_q_t = w_q.T
    out = qtriton.quantized_matmul(x_q, x_scale, w_q_t, w_scales, a_zp=x_zp)
    exact = activations.astype(np.float64) @ weights.T.astype(np.float64)
    print("\nquantized matmul  x @ W.T  (x asymmetric per tensor, W symmetric per channel)")
    print(f"  {'':<28} {'MSE':>11} {'max error':>11} {'SNR dB':>8}")
    print(_row("int8 matmul vs float64", qtriton.quantization_error(exact, None, out)))

    print("\nmemory, float32 -> int codes (scales stored as float32)")
    for label, per in (("per tensor", n * n), ("per channel", n), ("group-wise 128", 128)):
        m = qtriton.calculate_memory_savings(np.float32, bits, elements_per_scale=per)
        print(
            f"  {label:<16} {m['effective_bits']:6.3f} bits/value   "
            f"{m['compression_ratio']:5.2f}x smaller   {m['memory_reduction']:5.1f}% saved"
        )
    return 0
