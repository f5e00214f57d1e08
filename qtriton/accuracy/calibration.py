"""SmoothQuant calibration and a per-layer accuracy view for W8A8 models.

Decoder LLMs carry a few activation channels hundreds of times larger than the rest; per-token
int8 then spends its 255 levels on them and rounds the others away. SmoothQuant (Xiao et al.,
2023) moves that range into the weights, which per-channel int8 handles well:

    y = x @ W.T = (x / s) @ (W * s).T,    s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha)

per input channel j, with max|X_j| recorded on calibration batches. 1/s is folded, exactly
and for free, into what produces x where the path allows it:

    a norm with a per-channel weight (Llama's input_layernorm -> q/k/v, post_attention_layernorm
      -> gate/up; Gemma's (1 + weight) norms too: weight' = (1 + weight) / s - 1)
    v_proj's output rows, for o_proj (attention mixes tokens, never channels; with grouped
      key/value heads s is shared by the query heads that read one value head)
    up_proj's output rows, for down_proj (act(gate) * up is linear in up, channel by channel)

Each fold is checked numerically on the first calibration batch (the whole model must compute
what it did); a layer with no exact fold keeps 1/s as an `input_scale` multiplied into x
before it is quantized.

    calibration = qtriton.calibrate(model, batches, alpha=0.5)   # float model, before quantizing
    quantize_model(model, calibration=calibration)

`layer_report(model, batches)` shows, for each nn.Linear, the SNR of its W8A8 output against
float and how outlier-heavy its input is, to pick layers to keep in float.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from qtriton import checks
from qtriton.model.nn import Int8Linear
from qtriton.model.scheme import W8A8, QuantScheme, as_scheme
from qtriton.progress import progress as bar

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


def run_batch(model: nn.Module, batch):
    """model on one batch (checks.model_batch says what a batch may be)."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def output_tensor(output) -> torch.Tensor:
    """The main tensor of a model's output: itself, .logits / first field of a ModelOutput or
    dict, or the first element of a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
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


# SmoothQuant's folds into a preceding layer (llm-compressor's mappings): consumer -> the sibling
# whose output rows reach the consumer's input channels through a path linear per channel.
_PRODUCERS = {"o_proj": "v_proj", "down_proj": "up_proj"}


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
    folded: dict[int, str] = field(default_factory=dict)  # id(nn.Linear) -> the norm or layer that took 1/s
    row_scale: dict[int, torch.Tensor] = field(default_factory=dict)  # id(producer) -> s its output rows take
    applied: bool = False
    sample: object = None  # the first batch, and the model's output on it, to check folding
    sample_output: torch.Tensor | None = None
    _saved: list = field(default_factory=list)  # (norm tensor, its value before folding)

    # ----------------------------------------------------------------- SmoothQuant scales
    def _groups(self, uses: dict[int, int]) -> tuple[dict[str, list[int]], list[int]]:
        """Linears grouped by the norm they can fold into, and the rest."""
        by_norm: dict[str, list[int]] = {}
        for key, st in self.stats.items():
            if st.producer is not None:
                by_norm.setdefault(st.producer, []).append(key)
        groups, rest = {}, [key for key, st in self.stats.items() if st.producer is None]
        for norm_name, keys in by_norm.items():
            names = {self.stats[k].name for k in keys}
            # A weight tied to another module (lm_head and the embedding) must not be scaled.
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

    def _scales(self, keys: list[int], index: torch.Tensor | None = None) -> torch.Tensor:
        """s per input channel of the layers keys (which share their input); with index, per
        group of channels index maps together (value heads read by several query heads)."""
        x_max = torch.stack([self.stats[k].absmax for k in keys]).amax(0)
        w_max = torch.stack([self.modules[k].weight.detach().abs().amax(0).float().cpu() for k in keys]).amax(0)
        if index is not None:
            size = int(index.max()) + 1
            x_max = torch.zeros(size).scatter_reduce(0, index, x_max, "amax")
            w_max = torch.zeros(size).scatter_reduce(0, index, w_max, "amax")
        s = x_max.clamp_min(_EPS).pow(self.alpha) / w_max.clamp_min(_EPS).pow(1 - self.alpha)
        s = torch.where(x_max > 0, s, torch.ones_like(s))
        return s.clamp(*_SCALE_RANGE)

    def _producer(self, model: nn.Module, key: int, uses: dict[int, int]) -> tuple[int, torch.Tensor | None] | None:
        """(id of the layer whose output rows can take the consumer key's 1/s, the map from
        the consumer's input channels to those rows or None for one-to-one), or None."""
        parent_name, _, attr = self.stats[key].name.rpartition(".")
        producer_attr = _PRODUCERS.get(attr)
        parent = model.get_submodule(parent_name) if producer_attr else None
        producer = getattr(parent, producer_attr, None) if producer_attr else None
        if not isinstance(producer, nn.Linear) or id(producer) not in self.stats:
            return None
        if any(uses.get(id(t), 0) > 1 for t in (producer.weight, producer.bias, self.modules[key].weight) if t is not None):
            return None
        channels, rows = self.modules[key].in_features, producer.out_features
        if channels == rows:
            return id(producer), None
        # Grouped-query attention: query head h reads value head h // repeat (HF's repeat_kv).
        head_dim = getattr(parent, "head_dim", None)
        if not isinstance(head_dim, int) or head_dim < 1 or channels % rows or rows % head_dim:
            return None
        channel = torch.arange(channels)
        return id(producer), (channel // head_dim // (channels // rows)) * head_dim + channel % head_dim

    def _check_model(self, model: nn.Module) -> None:
        present = {id(m) for m in model.modules()}
        for key, module in self.modules.items():
            if key not in present:
                raise ValueError(
                    f"this calibration was made on another model: its layer {self.stats[key].name} is not part of "
                    f"the {type(model).__name__} given (calibrate the model you quantize)"
                )

    @torch.no_grad()
    def fold_into_norms(self, model: nn.Module, select: set[str] | None = None) -> None:
        """Compute s for every recorded layer (or those named in select, with the other layers
        of a norm they share) and fold 1/s where a fold is exact: into norms, in place, and
        into v_proj / up_proj rows (kept here, applied as `float_layer` makes each layer's
        weight). Called by quantize_model before it quantizes; `restore()` undoes it."""
        if self.applied:
            raise ValueError("this calibration was already applied to a model: calibrate again")
        self._check_model(model)
        self.applied = True
        if self.alpha is None:
            return
        chosen = (lambda key: True) if select is None else (lambda key: self.stats[key].name in select)
        uses = _parameter_uses(model)
        groups, rest = self._groups(uses)
        norm_folds = {}  # consumer key -> (norm name, s)
        for norm_name, keys in groups.items():
            if not any(chosen(k) for k in keys):
                continue
            s = self._scales(keys)
            norm = self.norms[norm_name]
            state = [(t, t.detach().clone()) for t in (norm.weight, getattr(norm, "bias", None)) if isinstance(t, torch.Tensor)]
            if _fold(norm, self.norm_samples[norm_name], s):
                self._saved += state
                norm_folds.update((key, (norm_name, s)) for key in keys)
            else:
                rest += keys
        producer_folds = {}  # consumer key -> (producer key, s of the consumer's input, s of the producer's rows)
        for key in rest:
            found = self._producer(model, key, uses) if chosen(key) else None
            if found is not None:
                rows = self._scales([key], found[1])
                producer_folds[key] = (found[0], rows if found[1] is None else rows[found[1]], rows)
        if (norm_folds or producer_folds) and not self._function_kept(model, norm_folds, producer_folds):
            # Something the hooks cannot see took a scaled tensor (a post-norm residual add, a
            # norm on the values): keep only the kinds of fold that keep the model's function.
            if norm_folds and not self._function_kept(model, norm_folds, {}):
                self._restore_norms()
                norm_folds = {}
            kinds = {self.stats[key].name.rpartition(".")[2] for key in producer_folds}
            kept = {}
            for kind in sorted(kinds):
                subset = {k: v for k, v in producer_folds.items() if self.stats[k].name.endswith("." + kind)}
                if self._function_kept(model, norm_folds, subset):
                    kept.update(subset)
            producer_folds = kept
        for key, (norm_name, s) in norm_folds.items():
            self.folded[key], self.smoothing[key] = norm_name, s
        for key, (producer_key, s, rows) in producer_folds.items():
            self.folded[key], self.smoothing[key] = self.stats[producer_key].name, s
            self.row_scale[producer_key] = rows
        for key in self.stats:
            if key not in self.smoothing and chosen(key):
                self.smoothing[key] = self._scales([key])

    def _restore_norms(self) -> None:
        for tensor, value in self._saved:
            tensor.copy_(value)
        self._saved.clear()

    @torch.no_grad()
    def restore(self) -> None:
        """Undo fold_into_norms: every norm weight back bit for bit, the scales forgotten (the
        layers' float weights were never changed); quantize_model calls it when it fails."""
        self._restore_norms()
        self.smoothing.clear()
        self.folded.clear()
        self.row_scale.clear()
        self.applied = False

    def _function_kept(self, model: nn.Module, norm_folds: dict, producer_folds: dict) -> bool:
        """Whether the model, with 1/s in the norms and the producers' outputs and s multiplied
        back into the inputs of the layers that will take it, computes on the first batch what
        it did before."""

        def restore(module, args):
            return (args[0] * scales[id(module)].to(args[0].device, args[0].dtype), *args[1:])

        def divide(module, args, output):
            return output / rows[id(module)].to(output.device, output.dtype)

        scales = {key: s for key, (_, s) in norm_folds.items()}
        scales.update((key, s) for key, (_, s, _) in producer_folds.items())
        rows = {producer: r for producer, _, r in producer_folds.values()}
        handles = [self.modules[key].register_forward_pre_hook(restore) for key in scales]
        handles += [self.modules[key].register_forward_hook(divide) for key in rows]
        try:
            after = output_tensor(run_batch(model, self.sample)).float()
        finally:
            for handle in handles:
                handle.remove()
        before = self.sample_output
        return after.shape == before.shape and float((after - before).abs().max()) <= 1e-3 * float(before.abs().max()) + 1e-6

    def folded_into(self, linear: nn.Linear) -> str | None:
        """The norm or layer that took linear's 1/s (fold_into_norms), or None."""
        return self.folded.get(id(linear))

    def float_layer(self, linear: nn.Linear) -> nn.Linear:
        """The float layer to quantize: linear itself, or a copy (float32) whose weight carries
        the folds: input columns times s where 1/s went into a norm or a producer, output rows
        (and bias) divided by s where linear is the producer."""
        key = id(linear)
        columns = self.smoothing.get(key) if key in self.folded else None
        rows = self.row_scale.get(key)
        if columns is None and rows is None:
            return linear
        weight, bias = linear.weight.detach().float(), linear.bias
        if columns is not None:
            weight = weight * columns.to(weight.device)
        if rows is not None:
            weight = weight / rows.to(weight.device)[:, None]
            bias = None if bias is None else bias.detach().float() / rows.to(bias.device)
        layer = nn.Linear(linear.in_features, linear.out_features, bias=bias is not None, device="meta")
        layer.weight = nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            layer.bias = nn.Parameter(bias.detach().float(), requires_grad=False)
        return layer

    @torch.no_grad()
    def fold_in_place(self, linear: nn.Linear) -> None:
        """Write float_layer's weight into linear (a layer kept float whose neighbour folded)."""
        folded = self.float_layer(linear)
        if folded is not linear:
            linear.weight.copy_(folded.weight)
            if linear.bias is not None:
                linear.bias.copy_(folded.bias)

    def smooth(self, model: nn.Module) -> None:
        """SmoothQuant on the float model, in place (norms and layer weights; its function
        kept): fold_into_norms, then fold_in_place on every recorded layer."""
        self.fold_into_norms(model)
        for module in self.modules.values():
            self.fold_in_place(module)

    def layer_options(self, linear: nn.Linear, name: str, scheme: QuantScheme = W8A8) -> tuple[QuantScheme, dict]:
        """(scheme, Int8Linear.from_float arguments) for linear, quantized as scheme asks:
        input_scale = 1/s (and the "+smooth" scheme) where s was not folded, none where it was,
        and activation_scale when scheme is static."""
        key = id(linear)
        if key not in self.stats:
            raise ValueError(f"layer {name} was not seen during calibration: no activation statistics")
        options = {}
        s = self.smoothing.get(key)
        if s is not None and key not in self.folded:
            options["input_scale"] = (1.0 / s).to(linear.weight.device)
            scheme = scheme.replace(smoothed=True)
        else:
            scheme = scheme.replace(smoothed=False)  # folded, or not smoothed: x goes in as it is
        if scheme.static:
            absmax = self.stats[key].absmax if s is None else self.stats[key].absmax / s
            if not float(absmax.max()) > 0:
                raise ValueError(
                    f"layer {name}: its input was all zeros on every calibration batch: "
                    "a static activation scale needs calibration data that reaches it"
                )
            options["activation_scale"] = float(absmax.max()) / 127.0
        return scheme, options

    def __str__(self) -> str:
        lines = [f"SmoothQuant calibration of {len(self.stats)} layers, alpha={self.alpha}, static={self.static}"]
        lines += [f"  folded into {where}: {self.stats[k].name}" for k, where in self.folded.items()]
        return "\n".join(lines)


def _parameter_uses(model: nn.Module) -> dict[int, int]:
    """id(parameter) -> how many modules hold it (> 1: tied, e.g. lm_head and the embedding)."""
    uses: dict[int, int] = {}
    for module in model.modules():
        for param in module._parameters.values():
            if param is not None:
                uses[id(param)] = uses.get(id(param), 0) + 1
    return uses


def _fold(norm: nn.Module, sample: torch.Tensor, s: torch.Tensor) -> bool:
    """Scale norm's weight (and bias) in place so that its output is divided by s, checked on a
    recorded input: weight / s for y = f(x) * weight, else (1 + weight) / s - 1 for Gemma's
    y = f(x) * (1 + weight); if neither divides the output, undo and return False."""
    before = norm(sample).float()
    expected = before / s.to(before.device)
    tolerance = 1e-3 * float(expected.abs().max()) + 1e-6
    weight, bias = norm.weight, getattr(norm, "bias", None)
    saved = [weight.detach().clone()] + ([] if bias is None else [bias.detach().clone()])
    s_weight = s.to(weight.device, torch.float32)
    for offset in (0.0, 1.0):
        weight.copy_(((saved[0].float() + offset) / s_weight - offset).to(weight.dtype))
        if isinstance(bias, torch.Tensor):
            bias.copy_(saved[1] / s.to(bias.device, bias.dtype))
        if float((norm(sample).float() - expected).abs().max()) <= tolerance:
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
def calibrate(model: nn.Module, batches: Iterable, *, alpha: float | None = 0.5, static: bool = False,
              progress: bool | None = None) -> Calibration:
    """Run model on batches (each a tensor, a tuple of positional arguments or a dict of
    keyword arguments, as `checks.model_batch` says) and record, for every nn.Linear, the per-input-channel max |x| and which
    norm, if any, produced its input. The model is not changed; pass the result to
    `quantize_model(model, calibration=...)`. progress: a bar over the batches (None: a bar on a
    terminal, in logs a line per 30 s).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    calibration = Calibration(alpha=_check_alpha(alpha), static=bool(static))
    seen = 0
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
        if not bool(torch.isfinite(absmax).all()):
            raise ValueError(
                f"calibration batch {seen}: the input of layer {name} holds NaN or Inf "
                "(its statistics would turn smoothing off and make static scales meaningless)"
            )
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
        for batch in bar(batches, desc="calibrate", unit="batch", enabled=progress):
            checks.model_batch(batch, seen, "calibration batch")
            live.clear()
            output = run_batch(model, batch)
            if seen == 0:
                calibration.sample, calibration.sample_output = batch, output_tensor(output).detach().float()
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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    scheme = as_scheme(scheme)
    if scheme.needs_calibration:
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
        for index, batch in enumerate(batches):
            checks.model_batch(batch, index)
            run_batch(model, batch)
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
