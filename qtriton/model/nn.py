"""W8A8 layers: `Int8Linear` and `quantize_model`, which swaps it in for `nn.Linear`.

`Int8Linear` stores its weight as int8 with one symmetric scale per output channel and
quantizes its input per token on every call, so one forward is

    q_x, s_x[, z_x] = quantize_activations(x)                     (one kernel on CUDA)
    y = ((q_x - z_x) @ q_w.T) * s_x[:, None] * s_w[None, :] + b   (int8 GEMM, int32 accumulator,
                                                                   scales and bias in its epilogue)

dispatched by backend: the Triton kernels for CUDA tensors, torch ops for CPU tensors (see
`qtriton.backend`). `reference.quantize_activations` says what the activation codes are in
each mode (per token, symmetric or asymmetric; SmoothQuant's input scale; a static scale).
The layer's scheme (`qtriton.model.scheme`) says which buffers it holds and how it runs: its
kind's `forward` (W8A8 as above, or W8A16's float x with the int8 weight) after its input
transforms. Inference only: no gradients flow through it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from qtriton import checks
from qtriton.model.scheme import DEFAULT, LAYER_TENSORS, W8A8, W8A8_STATIC, QuantScheme, as_scheme
from qtriton.progress import progress as bar

_COLSUM_BLOCK = 2**18  #: weight elements per block of refresh_weight_colsum (a 1 MiB int32 temporary)


def _refresh_weight_colsum_after_load(module: Int8Linear, incompatible_keys) -> None:
    """load_state_dict post hook (a module-level function, so the layer still pickles)."""
    module.refresh_weight_colsum()


def _check_scales_before_load(module: Int8Linear, state_dict, prefix, *args) -> None:
    """load_state_dict pre hook: the scales the layer computes with follow checks' scale
    rule (a 0 or denormal one would be used as is by torch and triton, refused by NumPy),
    checked before any of this layer's tensors is copied."""
    for slot in module.scheme.tensors(module.in_features, module.out_features, module.bias is not None):
        if slot.role == "scale" and (value := state_dict.get(prefix + slot.name)) is not None:
            checks.scale_values(value, prefix + slot.name)


class Int8Linear(nn.Module):
    """A drop-in for `nn.Linear` with int8 weights (per output channel, symmetric) and int8
    activations (per token, symmetric or asymmetric, quantized on the fly), or as its scheme
    says (`qtriton.model.scheme`: the scheme's kind builds and runs it).

    Buffers, so `state_dict` / `load_state_dict` / `.to(device)` work as for any module:
      weight        (out_features, in_features) int8, contiguous: the GEMM reads `weight.t()`,
                    a K-major B operand, without a copy
      weight_scale  (out_features,) float32
      bias          (out_features,) float32, or None
      the scheme's others (`scheme.tensors`): input_scale (in_features,) float32 when smoothed
                    (SmoothQuant's 1/s multiplied into x before quantizing, where no norm
                    precedes the layer to fold it into), activation_scale () float32 when
                    static (one calibrated per-tensor scale instead of the per-token reduction)
      weight_colsum (out_features,) int32, not saved: the weight's row sums (the GEMM's
                    B column sums), which asymmetric activations' zero points need; made
                    by from_float and after load_state_dict (after editing `weight` by
                    hand, call `refresh_weight_colsum()`)
    Input: (..., in_features) float32, float16 or bfloat16; output: (..., out_features), same dtype.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        scheme: QuantScheme | str = W8A8,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features = checks.positive_int(in_features, "in_features")
        self.out_features = checks.positive_int(out_features, "out_features")
        self.scheme = as_scheme(scheme).for_layer(in_features)
        # The handler forward runs, as a plain attribute (no lookup per call).
        self._kind = self.scheme.kind
        for slot in self.scheme.tensors(in_features, out_features, bias):
            self.register_buffer(slot.name, slot.empty(device))
        # Non-persistent: checkpoints keep their format; recomputed from the weight on load.
        self.register_buffer("weight_colsum", torch.zeros(out_features, dtype=torch.int32, device=device),
                             persistent=False)
        for name in LAYER_TENSORS:  # another scheme's tensors (a bias the layer has not) read as None
            if name not in self._buffers:
                self.register_buffer(name, None)
        self.register_load_state_dict_pre_hook(_check_scales_before_load)
        self.register_load_state_dict_post_hook(_refresh_weight_colsum_after_load)
        # Where SmoothQuant's 1/s for this layer went (a norm or a preceding layer), its weight's
        # columns then carrying s; None when the layer was not smoothed, or keeps 1/s itself
        # (input_scale). Set by quantize_model, recorded by both checkpoint formats
        # (smoothing_folds), read by Plan.of_model ("+smooth") and qtriton report.
        self.smoothing_folded_into: str | None = None

    @property
    def symmetric_activations(self) -> bool:
        """scheme.activation_symmetric (read-only: the scheme is fixed when the layer is built)."""
        return self.scheme.activation_symmetric

    @property
    def weight_only(self) -> bool:
        """scheme.weight_only: W8A16, activations stay float."""
        return self.scheme.weight_only

    def _apply(self, fn, recurse=True):
        """`.to()`, `.half()`, `.cuda()` ...: the float32 buffers (scales, bias) move with the
        module but stay float32, so `.half()` cannot underflow a small weight scale to 0."""
        kept = {name: b for name, b in self._buffers.items() if b is not None and b.dtype == torch.float32}
        super()._apply(fn, recurse)
        for name, before in kept.items():
            after = self._buffers[name]
            if after is not None and after.dtype != torch.float32:
                self._buffers[name] = before.to(after.device)
        return self

    @torch.no_grad()
    def refresh_weight_colsum(self) -> None:
        """Recompute weight_colsum from weight (no host sync). On CPU by blocks of rows: torch
        widens its operand to int32 before reducing, in its worker threads, whose allocator
        arenas kept those 4x copies of every layer's weight (+230 MiB when loading
        SmolLM2-135M in one block per layer)."""
        if self.weight_colsum.device != self.weight.device:  # a layer built on meta, its weight loaded
            self.weight_colsum = torch.empty(self.out_features, dtype=torch.int32, device=self.weight.device)
        rows = max(1, _COLSUM_BLOCK // self.in_features) if self.weight.device.type == "cpu" else self.out_features
        for start in range(0, self.out_features, rows):
            torch.sum(self.weight[start : start + rows], dim=1, dtype=torch.int32,
                      out=self.weight_colsum[start : start + rows])

    @classmethod
    @torch.no_grad()
    def from_float(
        cls,
        linear: nn.Linear,
        scheme: QuantScheme | str = W8A8,
        *,
        name: str = "linear",
        input_scale: torch.Tensor | None = None,
        activation_scale: float | torch.Tensor | None = None,
    ) -> Int8Linear:
        """Quantize an `nn.Linear` (on its device) as scheme says; name is used in error messages.

        input_scale (in_features,), given exactly when scheme.smoothed: the layer computes
        linear(x) as (x * input_scale) @ (W / input_scale).T, so W / input_scale is what gets
        quantized (SmoothQuant). activation_scale, given exactly when scheme.static: the
        calibrated per-tensor activation scale. (`scheme.calibrated_tensors()` names them.)

        Raises TypeError for anything but an nn.Linear, ValueError for a weight or bias
        holding NaN/Inf, on a device the backend in force cannot run, or scales that do not
        fit the scheme.
        """
        scheme = as_scheme(scheme)
        data = {"input_scale": input_scale, "activation_scale": activation_scale}
        needed = scheme.calibrated_tensors()
        for what, value in data.items():
            if what in needed and value is None:
                raise ValueError(f"{name}: scheme {scheme.name!r} needs {what}")
            if what not in needed and value is not None:
                raise ValueError(f"{name}: {what} was given but scheme {scheme.name!r} has no use for it")
        checks.float_layer(linear, name)
        try:  # the scheme made concrete for the layer (QuantScheme.for_layer) may not fit it
            layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, scheme=scheme,
                        device=linear.weight.device)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        weight = linear.weight.detach().to(torch.float32)
        for transform in layer.scheme.transforms:
            weight = transform.build(layer, weight, data, name)
        layer.scheme.kind.build(layer, weight, data, name)
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach())
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The one check of this call: the layer's own buffers were checked when it was built
        # (from_float / load_quantized), so the backend runs them unchecked.
        checks.layer_input(x, self.in_features, self.weight.device)
        leading = x.shape[:-1]
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] == 0:
            return x.new_zeros(*leading, self.out_features)
        rows = checks.float_input(rows, "input")  # NaN / Inf, where visible
        return self._kind.forward(self, rows, x.dtype).reshape(*leading, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"weight=int8 per-channel, activations={self.scheme.describe()}"
        )


# --------------------------------------------------------------------------- quantize_model
@dataclass
class QuantizationSummary:
    """What `quantize_model` did: layers replaced, layers kept in float (with why), and the
    bytes of the replaced layers' weights + biases before and after (scales included).
    fell_back: (layer, why) for each layer the default scheme (`scheme.DEFAULT`, no scheme
    given) refuses, quantized with the default's fallback instead.

    bytes_after counts what the model really holds afterwards: a replaced layer whose float
    weight or bias is tied to a tensor that stays (an `lm_head` tied to the embedding) keeps
    that float tensor alive beside its int8 copy; `tied` lists those (layer tensor, holder)."""

    replaced: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0
    tied: list[tuple[str, str]] = field(default_factory=list)
    fell_back: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        total = len(self.replaced) + len(self.skipped)
        ratio = f" ({self.bytes_after / self.bytes_before:.1%})" if self.bytes_before else ""
        head = (
            f"Int8Linear in place of {len(self.replaced)} of {total} nn.Linear layers: "
            f"{_mib(self.bytes_before)} -> {_mib(self.bytes_after)}{ratio}"
        )
        lines = [head]
        lines += [
            f"  tied: {tensor} is also {holder}, which stays float: the int8 layer is stored beside it"
            for tensor, holder in self.tied
        ]
        lines += [f"  {DEFAULT.fallback.name} in place of the default: {name}: {reason}"
                  for name, reason in self.fell_back]
        lines += [f"  kept float: {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _layer_bytes(linear: nn.Linear) -> tuple[int, int]:
    """(float bytes, Int8Linear bytes) of a layer's weight, scales and bias."""
    out_features, in_features = linear.weight.shape
    bias = linear.bias
    before = linear.weight.numel() * linear.weight.element_size()
    before += 0 if bias is None else bias.numel() * bias.element_size()
    after = out_features * in_features + out_features * 4 + (0 if bias is None else out_features * 4)
    return before, after


def _storage_key(tensor: torch.Tensor) -> tuple:
    """Equal for tensors that are the same memory (tied weights), whatever their Python
    identity; views of one flat buffer at different offsets or shapes stay apart."""
    pointer = tensor.data_ptr() if tensor.device.type != "meta" else 0
    if not pointer:  # meta or empty tensors have no address to compare
        return ("id", id(tensor))
    return (tensor.device, pointer, tuple(tensor.shape), tuple(tensor.stride()))


def _tied_tensors(model: nn.Module, replaced: set[int]) -> dict[tuple, str]:
    """Storage key -> name of each parameter or buffer outside the replaced layers: a
    replaced layer's tensor found here stays in the model after the swap."""
    kept = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        if id(module) in replaced:
            continue
        for tensor_name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if tensor is not None:
                kept.setdefault(_storage_key(tensor), f"{module_name}.{tensor_name}".lstrip("."))
    return kept


def _linear_slots(model: nn.Module) -> dict[int, tuple[nn.Linear, list[tuple[str, nn.Module, str]]]]:
    """Every nn.Linear by identity, with each (qualified name, parent, attribute) it sits at:
    a layer shared by two parents must be replaced in both."""
    found: dict[int, tuple[nn.Linear, list[tuple[str, nn.Module, str]]]] = {}
    for qualified, module in model.named_modules(remove_duplicate=False):
        if not isinstance(module, nn.Linear) or not qualified:
            continue
        parent_name, _, attr = qualified.rpartition(".")
        parent = model.get_submodule(parent_name)
        found.setdefault(id(module), (module, []))[1].append((qualified, parent, attr))
    return found


def _skip_reason(
    name: str,
    linear: nn.Linear,
    parent: nn.Module,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    predicate: Callable[[str, nn.Linear], bool] | None,
    min_features: int,
    keep_output_head: bool,
) -> str | None:
    if isinstance(parent, nn.MultiheadAttention):
        return "inside nn.MultiheadAttention, which reads out_proj.weight directly instead of calling the layer"
    if type(linear).forward is not nn.Linear.forward:
        return f"{type(linear).__name__} overrides nn.Linear.forward"
    if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
        return "matches no include pattern"
    for pattern in exclude:
        if fnmatch.fnmatchcase(name, pattern):
            return f"matches exclude pattern {pattern!r}"
    if keep_output_head and name.rpartition(".")[2] == "lm_head":
        return "output head: the logits are the most sensitive to int8 error (and often tied to the embedding)"
    if predicate is not None and not predicate(name, linear):
        return "predicate returned False"
    smallest = min(linear.in_features, linear.out_features)
    if smallest < min_features:
        return (
            f"too small ({linear.in_features} -> {linear.out_features}, under min_features={min_features}): "
            "per-token quantization costs more than the int8 GEMM saves"
        )
    return None


def _entry_scheme(scheme: QuantScheme | None, symmetric_activations, weight_only, calibration) -> QuantScheme | None:
    """quantize_model's one scheme for every layer (without a plan): scheme, or the
    shorthands' preset ("w8a8", "w8a8-asym", "w8a16"), or "w8a8-static" with a static
    calibration, checked against the calibration (which decides smoothing and static scales
    per layer); None for the default (`DEFAULT`, chosen per layer)."""
    shorthands = symmetric_activations is not None or weight_only is not None
    if shorthands and scheme is not None:
        raise TypeError("give scheme= or the shorthands symmetric_activations= / weight_only=, not both")
    if scheme is None:
        if not shorthands and calibration is not None and calibration.static:
            scheme = W8A8_STATIC
        elif shorthands:
            scheme = W8A8
        else:
            return None
    if weight_only:  # W8A16; ValueError with symmetric_activations=False: no zero points
        scheme = scheme.replace(activations="none", activation_symmetric=symmetric_activations is not False)
    elif symmetric_activations is not None:
        scheme = scheme.replace(activation_symmetric=symmetric_activations)
    if scheme.smoothed:
        raise ValueError(f"scheme {scheme.name!r}: smoothing comes from a calibration "
                         "(quantize_model(model, calibration=qtriton.calibrate(model, batches)))")
    if calibration is not None and calibration.static:
        if scheme.weight_only or not scheme.activation_symmetric:
            why = "weight_only keeps activations float" if scheme.weight_only else "its activations have zero points"
            raise ValueError(f"a calibration made with static=True gives static symmetric activation scales: "
                             f"scheme {scheme.name!r} cannot take them ({why})")
        return scheme.replace(activations="static")
    if scheme.static:
        raise ValueError(f"scheme {scheme.name!r} needs a calibration made with "
                         "qtriton.calibrate(model, batches, static=True)")
    return scheme


def _plan_schemes(plan, names: list[str], calibration) -> dict:
    """The plan's {layer name: QuantScheme | None}, checked against the model's layer names."""
    schemes = getattr(plan, "schemes", plan)
    if not isinstance(schemes, Mapping):
        raise TypeError(f"plan must map layer names to a QuantScheme or None, got {type(plan).__name__}")
    if unknown := sorted(set(schemes) - set(names)):
        raise ValueError(f"plan names {len(unknown)} layers the model does not have, e.g. {unknown[0]!r}")
    for name, scheme in schemes.items():
        if scheme is not None and not isinstance(scheme, QuantScheme):
            raise TypeError(f"plan[{name!r}] must be a QuantScheme or None, got {type(scheme).__name__}")
        if scheme is not None and scheme.needs_calibration and calibration is None:
            raise ValueError(f"plan[{name!r}] is {scheme.name}: it needs calibration=qtriton.calibrate(model, ...)")
    return dict(schemes)


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    *,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    predicate: Callable[[str, nn.Linear], bool] | None = None,
    min_features: int = 16,
    keep_output_head: bool = True,
    scheme: QuantScheme | str | None = None,
    calibration=None,
    plan: Mapping[str, QuantScheme | None] | None = None,
    symmetric_activations: bool | None = None,
    weight_only: bool | None = None,
    progress: bool | None = None,
) -> QuantizationSummary:
    """Replace the `nn.Linear` layers of model with `Int8Linear`, in place; returns a summary.

    A layer is replaced unless: it is inside `nn.MultiheadAttention` or overrides forward;
    include (glob patterns on qualified names, e.g. "encoder.*") is given and none matches;
    an exclude pattern matches; it is an `lm_head` (while keep_output_head); predicate(name,
    layer) is False; or in_features or out_features is below min_features.

    scheme (a `QuantScheme` or a preset name: "w8a8", "w8a8-asym", "w8a8+had", "w8a16", ...)
    says how every replaced layer is quantized. The default (None, `scheme.DEFAULT`) is
    "w8a8+had": x and W rotated by a block Hadamard matrix, symmetric per-token activations,
    every layer int8 x int8: 97 % top-1 agreement with float on SmolLM2-135M and Gemma 3 270M
    without data, against 91-92 % for unrotated "w8a8-asym" (docs/models.md); a layer the
    rotation cannot take (odd in_features) gets "w8a8-asym", listed in the summary's
    fell_back. symmetric_activations= and weight_only=True are shorthands for the unrotated
    "w8a8"/"w8a8-asym" and "w8a16". calibration, from `qtriton.calibrate(model, batches)` on
    this model before quantizing, applies SmoothQuant (folding 1/s into the norms and producer
    layers it can, before any weight is quantized; the layers it cannot fold get the scheme's
    "+smooth" variant) and, if made with static=True, static activation scales ("w8a8-static",
    the default then: a static scale is calibrated on unrotated x).

    plan ({qualified layer name: QuantScheme or None}, e.g. from `qtriton.plan`) gives each
    layer its own scheme (scheme and its shorthands are then not given): None and
    layers the plan does not name stay float; smoothed and static schemes take their scales
    from calibration. A plan that quantizes the output head needs keep_output_head=False
    (ValueError otherwise: the head would stay float against the plan's word).

    progress: a bar over the layers (None: a bar on a terminal, in logs a line per 30 s).

    All layers are converted before any is swapped in, so an error (ValueError naming the
    layer for NaN/Inf weights, no calibration data, or a device the backend cannot run)
    leaves model unchanged, the calibration's folds undone.
    A model with Int8Linear layers and no nn.Linear left is a ValueError saying it is
    already quantized; keep_output_head and symmetric_activations must be bools (TypeError).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, nn.Linear):
        raise TypeError("model is itself an nn.Linear and cannot be replaced in place: use Int8Linear.from_float")
    checks.positive_int(min_features, "min_features")
    if predicate is not None and not callable(predicate):
        raise TypeError(f"predicate must be callable, got {type(predicate).__name__}")
    checks.true_or_false(keep_output_head, "keep_output_head")
    checks.true_or_false(symmetric_activations, "symmetric_activations", optional=True)
    checks.true_or_false(weight_only, "weight_only", optional=True)
    if plan is not None and (scheme, symmetric_activations, weight_only) != (None, None, None):
        raise TypeError("plan gives each layer its scheme: scheme=, symmetric_activations= and weight_only= "
                        "cannot be given with it")
    if plan is None:
        scheme = _entry_scheme(None if scheme is None else as_scheme(scheme), symmetric_activations, weight_only,
                               calibration)
    include_patterns = checks.glob_patterns(include, "include")
    exclude_patterns = checks.glob_patterns(exclude, "exclude")

    layers = _linear_slots(model)
    if not layers:
        already = sum(isinstance(m, Int8Linear) for m in model.modules())
        if already:
            raise ValueError(
                f"model ({type(model).__name__}) is already quantized: {already} Int8Linear layers "
                "and no torch.nn.Linear layers left"
            )
        raise ValueError(f"model ({type(model).__name__}) has no torch.nn.Linear layers to quantize")
    all_names = [slot[0] for _, slots in layers.values() for slot in slots]
    for pattern in include_patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in all_names):
            raise ValueError(f"include pattern {pattern!r} matches no nn.Linear layer of the model")

    schemes = None if plan is None else _plan_schemes(plan, all_names, calibration)
    chosen = []  # (linear, slots, scheme or None, why it stays float or None), decided before any fold
    for linear, slots in layers.values():
        name, parent, _ = slots[0]
        reason = _skip_reason(
            name, linear, parent, include_patterns, exclude_patterns, predicate, min_features, keep_output_head
        )
        layer_scheme, fell_back = (scheme if schemes is None else schemes.get(name)), None
        if schemes is None and scheme is None:
            layer_scheme, fell_back = DEFAULT.for_layer(linear.in_features)
        if schemes is not None and layer_scheme is not None and keep_output_head and name.rpartition(".")[2] == "lm_head":
            raise ValueError(f"plan[{name!r}] is {layer_scheme.name}, but keep_output_head=True keeps the output head "
                             "float: pass keep_output_head=False to quantize it as the plan says")
        if reason is None and schemes is not None and layer_scheme is None:
            reason = "kept float by the plan" if name in schemes else "not in the plan"
        chosen.append((linear, slots, layer_scheme, reason, fell_back))
    if calibration is not None:  # exact in float: the model computes what it did
        smooth = None if schemes is None else {n for n, sc in schemes.items() if sc is not None and sc.smoothed}
        calibration.fold_into_norms(model, smooth)
    summary = QuantizationSummary()
    replacements = []
    try:
        for linear, slots, layer_scheme, reason, fell_back in bar(chosen, desc="quantize", unit="layer",
                                                                  enabled=progress):
            name = slots[0][0]
            if reason is not None:
                summary.skipped.append((name, reason))
                continue
            source, options = linear, {}
            if calibration is not None:
                layer_scheme, options = calibration.layer_options(linear, name, layer_scheme)
                source = calibration.float_layer(linear)
            quantized = Int8Linear.from_float(source, layer_scheme, name=name, **options)
            if calibration is not None:
                quantized.smoothing_folded_into = calibration.folded_into(linear)
            replacements.append((linear, quantized, slots))
            before, after = _layer_bytes(linear)
            summary.replaced.append(name)
            if fell_back is not None:
                summary.fell_back.append((name, fell_back))
            summary.bytes_before += before
            summary.bytes_after += after
    except BaseException:
        if calibration is not None:
            calibration.restore()
        raise
    if calibration is not None:  # layers kept float whose input or output rows took a fold
        for linear, _, _, reason, _ in chosen:
            if reason is not None:
                calibration.fold_in_place(linear)

    kept = _tied_tensors(model, {id(linear) for linear, _, _ in replacements})
    for linear, _, slots in replacements:
        for part in ("weight", "bias"):
            tensor = getattr(linear, part)
            if tensor is not None and (holder := kept.get(_storage_key(tensor))) is not None:
                summary.tied.append((f"{slots[0][0]}.{part}", holder))
                summary.bytes_after += tensor.numel() * tensor.element_size()

    for _, quantized, slots in replacements:
        for _, parent, attr in slots:
            setattr(parent, attr, quantized)
    return summary


# ------------------------------------------------------------------ the smoothing record
def smoothing_folds(model: nn.Module) -> dict[str, str]:
    """{Int8Linear name: the norm or layer that took its SmoothQuant 1/s}: what a checkpoint
    records so that a loaded model still says it was smoothed (see Int8Linear)."""
    return {name: m.smoothing_folded_into for name, m in model.named_modules()
            if isinstance(m, Int8Linear) and m.smoothing_folded_into is not None}


def apply_smoothing_folds(model: nn.Module, folds, where: str) -> None:
    """Set each named layer's smoothing_folded_into from a checkpoint's record (checks'
    smoothing_folds rule); ValueError naming the entry if a layer is not an Int8Linear of model
    or the module that took 1/s is not part of it."""
    folds = checks.smoothing_folds(folds, where)
    layers = {}
    for name, holder in folds.items():
        try:
            layer = model.get_submodule(name)
            model.get_submodule(holder)
        except AttributeError:
            layer = None
        if not isinstance(layer, Int8Linear) or layer.scheme.smoothed:
            raise ValueError(f"{where}: its record {checks.SMOOTHING_RECORD}[{name!r}] = {holder!r} does not fit the "
                             "model: no such int8 layer without input_scale, or no such module")
        layers[name] = layer
    for name, layer in layers.items():
        layer.smoothing_folded_into = folds[name]
