"""SmoothQuant calibration and a per-layer accuracy view for W8A8 models.

Decoder LLMs carry a few activation channels hundreds of times larger than the rest; per-token
int8 then spends its 255 levels on them and rounds the others away. SmoothQuant (Xiao et al.,
2023) moves that range into the weights, which per-channel int8 handles well:

    y = x @ W.T = (x / s) @ (W * s).T,    s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha)

per input channel j, with max|X_j| recorded on calibration batches. Where a norm with a
per-channel weight produces x (Llama's input_layernorm before q/k/v, post_attention_layernorm
before gate/up), 1/s is folded into that weight, exactly and for free; elsewhere (o_proj,
down_proj) the layer keeps 1/s as an `input_scale` multiplied into x before it is quantized.

    calibration = qtriton.calibrate(model, batches, alpha=0.5)   # float model, before quantizing
    quantize_model(model, calibration=calibration)

`layer_report(model, batches)` shows, for each nn.Linear, the SNR of its W8A8 output against
float and how outlier-heavy its input is, to pick layers to keep in float.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from qtriton.scheme import W8A8, QuantScheme, as_scheme

# s is clamped so that neither 1/s nor s * W can overflow or vanish in float32 (a dead channel
# with max|X_j| = 0 gets s_j = 1).
_SCALE_RANGE = (1e-4, 1e4)
_EPS = 1e-6


def _is_norm(module: nn.Module) -> bool:
    """A norm whose output is y = f(x) * weight (+ bias) with a per-channel weight: LayerNorm,
    RMSNorm, and the HF *RMSNorm classes. Folding is still checked numerically (see _fold)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 1:
        return False
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


def _run(model: nn.Module, batch):
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def _first_tensor(output) -> torch.Tensor:
    """The main tensor of a model's output: itself, .logits / first field of a ModelOutput or
    dict, or the first element of a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find the output tensor in a {type(output).__name__}")


@dataclass
class _LayerStats:
    name: str
    absmax: torch.Tensor  # (in_features,) float32: max |x_j| over every calibration token
    producer: str | None = None  # the norm whose output is this layer's input, if always the same


@dataclass
class Calibration:
    """Activation statistics of a float model's nn.Linear layers and the SmoothQuant scales
    derived from them; pass it to `quantize_model(model, calibration=...)` once.

    alpha: migration strength (0: no smoothing, 1: all the range into the weights; None: no
    smoothing, statistics only). static: give each layer a calibrated per-tensor activation
    scale (max|x / s| / 127) instead of the per-token reduction.
    """

    alpha: float | None
    static: bool
    stats: dict[int, _LayerStats] = field(default_factory=dict)  # id(nn.Linear) -> stats
    modules: dict[int, nn.Module] = field(default_factory=dict)  # keeps the ids valid
    norms: dict[str, nn.Module] = field(default_factory=dict)
    norm_consumers: dict[str, set[str]] = field(default_factory=dict)  # norm -> modules that took its output
    norm_samples: dict[str, torch.Tensor] = field(default_factory=dict)
    smoothing: dict[int, torch.Tensor] = field(default_factory=dict)  # id(nn.Linear) -> s
    folded: dict[int, str] = field(default_factory=dict)  # id(nn.Linear) -> norm that took 1/s
    applied: bool = False
    sample: object = None  # the first batch, and the model's output on it, to check folding
    sample_output: torch.Tensor | None = None

    # ----------------------------------------------------------------- SmoothQuant scales
    def _groups(self, model: nn.Module) -> tuple[dict[str, list[int]], list[int]]:
        """Linears grouped by the norm they can fold into, and the rest."""
        by_norm: dict[str, list[int]] = {}
        for key, st in self.stats.items():
            if st.producer is not None:
                by_norm.setdefault(st.producer, []).append(key)
        groups, rest = {}, [key for key, st in self.stats.items() if st.producer is None]
        # A weight tied to another module (lm_head and the embedding) must not be scaled in place.
        uses: dict[int, int] = {}
        for module in model.modules():
            for param in module._parameters.values():
                if param is not None:
                    uses[id(param)] = uses.get(id(param), 0) + 1
        for norm_name, keys in by_norm.items():
            names = {self.stats[k].name for k in keys}
            if any(uses.get(id(self.modules[k].weight), 0) > 1 for k in keys):
                rest += keys
                continue
            # Every module that received the norm's output must be one of the group's linears or
            # contain one (an attention block passing it on): anything else (a residual add in a
            # post-norm block) would see the scaled output, so folding would change the model.
            ok = all(c in names or any(n.startswith(c + ".") for n in names) for c in self.norm_consumers[norm_name])
            if ok:
                groups[norm_name] = keys
            else:
                rest += keys
        return groups, rest

    def _scales(self, keys: list[int]) -> torch.Tensor:
        x_max = torch.stack([self.stats[k].absmax for k in keys]).amax(0)
        w_max = torch.stack([self.modules[k].weight.detach().abs().amax(0).float() for k in keys]).amax(0)
        s = x_max.clamp_min(_EPS).pow(self.alpha) / w_max.clamp_min(_EPS).pow(1 - self.alpha)
        s = torch.where(x_max > 0, s, torch.ones_like(s))
        return s.clamp(*_SCALE_RANGE)

    @torch.no_grad()
    def fold_into_norms(self, model: nn.Module) -> None:
        """Compute s for every recorded layer and fold 1/s into the norms that allow it (and s
        into those layers' float weights); called by quantize_model before it quantizes."""
        if self.applied:
            raise ValueError("this calibration was already applied to a model: calibrate again")
        self.applied = True
        if self.alpha is None:
            return
        groups, rest = self._groups(model)
        saved, pending = {}, {}
        for norm_name, keys in groups.items():
            s = self._scales(keys)
            norm = self.norms[norm_name]
            state = [t.detach().clone() for t in (norm.weight, getattr(norm, "bias", None)) if isinstance(t, torch.Tensor)]
            if _fold(norm, self.norm_samples[norm_name], s):
                saved[norm_name] = state
                pending.update((key, (norm_name, s)) for key in keys)
            else:
                rest += keys
        if pending and not self._function_kept(model, pending):
            # Something besides the layers saw a scaled norm output (a residual add inside a
            # post-norm block's forward, which no hook sees): undo, smooth by input_scale.
            for norm_name, state in saved.items():
                for tensor, value in zip((self.norms[norm_name].weight, getattr(self.norms[norm_name], "bias", None)), state):
                    tensor.copy_(value)
            rest += list(pending)
            pending = {}
        for key, (norm_name, s) in pending.items():
            weight = self.modules[key].weight
            weight.mul_(s.to(weight.device, weight.dtype))
            self.folded[key] = norm_name
            self.smoothing[key] = s
        for key in rest:
            self.smoothing[key] = self._scales([key])

    def _function_kept(self, model: nn.Module, pending: dict) -> bool:
        """Whether the model, with 1/s in the norms and s multiplied back into the inputs of
        the layers that will take it, computes on the first batch what it did before."""

        def restore(module, args):
            return (args[0] * pending[id(module)][1].to(args[0].device, args[0].dtype), *args[1:])

        handles = [self.modules[key].register_forward_pre_hook(restore) for key in pending]
        try:
            after = _first_tensor(_run(model, self.sample)).float()
        finally:
            for handle in handles:
                handle.remove()
        before = self.sample_output
        return after.shape == before.shape and float((after - before).abs().max()) <= 1e-3 * float(before.abs().max()) + 1e-6

    def layer_options(self, linear: nn.Linear, name: str, scheme: QuantScheme = W8A8) -> tuple[QuantScheme, dict]:
        """(scheme, Int8Linear.from_float arguments) for linear, quantized as scheme asks:
        input_scale = 1/s (and the "+smooth" scheme) where s was not folded into a norm, and
        activation_scale when static."""
        key = id(linear)
        if key not in self.stats:
            raise ValueError(f"layer {name} was not seen during calibration: no activation statistics")
        options = {}
        s = self.smoothing.get(key)
        if s is not None and key not in self.folded:
            options["input_scale"] = (1.0 / s).to(linear.weight.device)
            scheme = scheme.replace(smoothed=True)
        if scheme.static:
            absmax = self.stats[key].absmax if s is None else self.stats[key].absmax / s
            options["activation_scale"] = max(float(absmax.max()), _EPS) / 127.0
        return scheme, options

    def __str__(self) -> str:
        lines = [f"SmoothQuant calibration of {len(self.stats)} layers, alpha={self.alpha}, static={self.static}"]
        lines += [f"  folded into {norm}: {self.stats[k].name}" for k, norm in self.folded.items()]
        return "\n".join(lines)


def _fold(norm: nn.Module, sample: torch.Tensor, s: torch.Tensor) -> bool:
    """Divide norm's weight (and bias) by s in place if that divides its output by s, which is
    checked on a recorded input (a Gemma-style (1 + weight) norm would fail it); else undo."""
    before = norm(sample).float()
    weight, bias = norm.weight, getattr(norm, "bias", None)
    saved = [weight.detach().clone()] + ([] if bias is None else [bias.detach().clone()])
    weight.div_(s.to(weight.device, weight.dtype))
    if isinstance(bias, torch.Tensor):
        bias.div_(s.to(bias.device, bias.dtype))
    after = norm(sample).float()
    expected = before / s.to(before.device)
    tolerance = 1e-3 * float(expected.abs().max()) + 1e-6
    if float((after - expected).abs().max()) <= tolerance:
        return True
    weight.copy_(saved[0])
    if isinstance(bias, torch.Tensor):
        bias.copy_(saved[1])
    return False


def _check_alpha(alpha) -> float | None:
    if alpha is None:
        return None
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0 or math.isnan(alpha):
        raise ValueError(f"alpha must be a number in [0, 1] or None, got {alpha!r}")
    return float(alpha)


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable, *, alpha: float | None = 0.5, static: bool = False) -> Calibration:
    """Run model on batches (each a tensor, a tuple of positional arguments or a dict of
    keyword arguments) and record, for every nn.Linear, the per-input-channel max |x| and which
    norm, if any, produced its input. The model is not changed; pass the result to
    `quantize_model(model, calibration=...)`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    calibration = Calibration(alpha=_check_alpha(alpha), static=bool(static))
    names = {id(m): n for n, m in model.named_modules()}
    live: dict[int, tuple[str, torch.Tensor]] = {}  # id(norm output) -> (norm name, output), per batch

    def norm_hook(module, args, output):
        name = names[id(module)]
        calibration.norms[name] = module
        calibration.norm_consumers.setdefault(name, set())
        if isinstance(output, torch.Tensor):
            live[id(output)] = (name, output)
            if name not in calibration.norm_samples and args and isinstance(args[0], torch.Tensor):
                calibration.norm_samples[name] = args[0].detach().reshape(-1, args[0].shape[-1])[:8].clone()

    def consumer_hook(module, args, kwargs):
        for value in (*args, *kwargs.values()):
            entry = live.get(id(value)) if isinstance(value, torch.Tensor) else None
            if entry is not None and entry[1] is value:
                calibration.norm_consumers[entry[0]].add(names[id(module)])

    def linear_hook(module, args):
        x = args[0]
        name = names[id(module)]
        absmax = x.detach().reshape(-1, x.shape[-1]).abs().amax(0).float().cpu()
        entry = live.get(id(x))
        producer = entry[0] if entry is not None and entry[1] is x else None
        st = calibration.stats.get(id(module))
        if st is None:
            calibration.stats[id(module)] = _LayerStats(name, absmax, producer)
            calibration.modules[id(module)] = module
        else:
            st.absmax = torch.maximum(st.absmax, absmax)
            if st.producer != producer:
                st.producer = None  # not always the same norm: no folding

    handles = []
    try:
        for module in model.modules():
            if isinstance(module, nn.Linear):
                handles.append(module.register_forward_pre_hook(linear_hook))
            elif _is_norm(module):
                handles.append(module.register_forward_hook(norm_hook))
            if module is not model and not isinstance(module, nn.Linear):
                handles.append(module.register_forward_pre_hook(consumer_hook, with_kwargs=True))
        seen = 0
        for batch in batches:
            live.clear()
            output = _run(model, batch)
            if seen == 0:
                calibration.sample, calibration.sample_output = batch, _first_tensor(output).detach().float()
            seen += 1
    finally:
        for handle in handles:
            handle.remove()
        live.clear()
    if seen == 0:
        raise ValueError("batches is empty: calibration needs at least one batch")
    if not calibration.stats:
        raise ValueError(f"model ({type(model).__name__}) ran no torch.nn.Linear layer on the calibration batches")
    return calibration


# ------------------------------------------------------------------------ per-layer report
@dataclass
class LayerAccuracy:
    name: str
    snr_db: float  # 10 log10(|y_float|^2 / |y_int8 - y_float|^2) over every calibration token
    outlier_ratio: float  # max|x| / mean|x| of the layer's input, worst batch
    input_absmax: float


@dataclass
class LayerReport:
    layers: list[LayerAccuracy]

    def worst(self, n: int = 10) -> list[LayerAccuracy]:
        return sorted(self.layers, key=lambda layer: layer.snr_db)[:n]

    def __str__(self) -> str:
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'SNR dB':>7}  {'max/mean|x|':>11}  {'max|x|':>9}"]
        for layer in self.layers:
            lines.append(
                f"{layer.name:<{width}}  {layer.snr_db:7.1f}  {layer.outlier_ratio:11.1f}  {layer.input_absmax:9.3g}"
            )
        return "\n".join(lines)


@torch.no_grad()
def layer_report(model: nn.Module, batches: Iterable, *, scheme: QuantScheme | str = W8A8) -> LayerReport:
    """Per nn.Linear of a float model: the SNR of its W8A8 output against float on its own
    (float) inputs, and its input's outlier ratio max|x| / mean|x|. The model is not changed."""
    from qtriton.nn import Int8Linear  # nn imports this module's type for annotations only

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    scheme = as_scheme(scheme)
    if scheme.smoothed or scheme.static:
        raise ValueError(f"layer_report measures uncalibrated layers: scheme {scheme.name!r} needs a calibration")
    names = {id(m): n for n, m in model.named_modules()}
    quantized: dict[int, Int8Linear] = {}
    sums: dict[int, list[float]] = {}  # id -> [signal energy, noise energy, outlier ratio, absmax]

    def hook(module, args, output):
        x = args[0].detach()
        layer = quantized.get(id(module))
        if layer is None:
            layer = quantized[id(module)] = Int8Linear.from_float(
                module, scheme, name=names[id(module)]
            )
        y_int8 = layer(x).float()
        y = output.detach().float()
        magnitude = x.abs().float()
        acc = sums.setdefault(id(module), [0.0, 0.0, 0.0, 0.0])
        acc[0] += float(y.square().sum())
        acc[1] += float((y_int8 - y).square().sum())
        acc[2] = max(acc[2], float(magnitude.max() / magnitude.mean().clamp_min(1e-30)))
        acc[3] = max(acc[3], float(magnitude.max()))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    if not handles:
        raise ValueError(f"model ({type(model).__name__}) has no torch.nn.Linear layers")
    try:
        for batch in batches:
            _run(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    layers = []
    for key, (signal, noise, ratio, absmax) in sums.items():
        snr = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-300) / noise)
        layers.append(LayerAccuracy(names[key], snr, ratio, absmax))
    if not layers:
        raise ValueError("batches is empty: the report needs at least one batch")
    return LayerReport(layers)
