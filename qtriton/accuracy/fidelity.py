"""How far a quantized model is from its float self: the one measurement of `sensitivity`,
`plan` and `qtriton eval`, and the one way they quantize a copy of a model by a plan.

    kl, top1 = kl_top1([(quantized_log_probs, float_log_probs), ...])   # over every token
    copy = quantized_copy(model, {name: QuantScheme | None}, calibration_batches, alpha)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from qtriton.accuracy.calibration import calibrate
from qtriton.model.nn import quantize_model


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """The log-probabilities the measurements compare: float32 log_softmax over the vocabulary."""
    return logits.float().log_softmax(-1)


def kl_top1(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """(mean KL(float || quantized) per token, top-1 agreement) over every token of pairs of
    (quantized, float) log-probabilities, each (..., vocab) (see log_probs)."""
    kl = agree = tokens = 0.0
    for log_q, reference in pairs:
        kl += float(nn.functional.kl_div(log_q, reference, log_target=True, reduction="sum"))
        agree += float((log_q.argmax(-1) == reference.argmax(-1)).sum())
        tokens += reference.numel() // reference.shape[-1]
    return kl / tokens, agree / tokens


def perplexity(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """exp(mean next-token cross entropy) of logits (T, vocab) on ids (T,)."""
    return float(torch.exp(nn.functional.cross_entropy(logits[:-1].float(), ids[1:])))


def quantized_copy(model: nn.Module, schemes: Mapping, batches: list | None = None, alpha: float | None = 0.5,
                   progress: bool | None = False) -> nn.Module:
    """A copy of model quantized by schemes ({layer name: QuantScheme or None (float)}, a
    plan: it decides every layer, the output head included); calibrated on batches with alpha
    when a scheme smooths or is static. The model is not changed."""
    needs = any(s is not None and s.needs_calibration for s in schemes.values())
    if needs and batches is None:
        raise ValueError("a smoothed or static scheme needs calibration batches")
    quantized = copy.deepcopy(model)
    calibration = calibrate(quantized, batches, alpha=alpha, progress=progress) if needs else None
    quantize_model(quantized, plan=schemes, calibration=calibration, keep_output_head=False, progress=progress)
    return quantized
