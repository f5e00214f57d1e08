"""Which layers a model's accuracy depends on, measured end to end, and a per-layer plan.

A layer's own output SNR does not predict the model's loss (on Gemma 3 the six lowest-SNR
layers changed nothing when kept float; the `down_proj` layers, not among them, did). So:

    report = qtriton.sensitivity(model, batches)   # KL(float || model with one group quantized)
    print(report)                                   # sorted, worst first; report.to_dict() for JSON
    plan = qtriton.plan(model, batches, target_kl=0.005)
    print(plan)
    quantize_model(model, plan=plan, calibration=qtriton.calibrate(model, batches))

`sensitivity` quantizes one group of like layers (every `*.down_proj`, ...; or each layer) at a
time with each candidate scheme, by swapping Int8Linear modules in and out of the model (no
copy per group), and compares the model's output distribution with the float one it kept
from a single float pass. `plan` keeps the most int8 x int8 work that meets the target: every
group starts at its most accurate scheme of the cheapest GEMM (symmetric W8A8), moves to zero
points where that lowers its KL, and only then to W8A16 (the most KL saved per FLOP given up)
and, once no W8A8 group is left, to float. `int8_flop_fraction` says what share of the decoder
layers' linear FLOPs a quantized model runs int8 x int8.
"""

from __future__ import annotations

import copy
import fnmatch
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from qtriton import checks
from qtriton.accuracy.calibration import calibrate, output_tensor, run_batch
from qtriton.accuracy.fidelity import kl_top1, log_probs, quantized_copy
from qtriton.formats.hf import FUSED
from qtriton.model.nn import Int8Linear
from qtriton.model.scheme import CANDIDATES, DEFAULT, W8A16, QuantScheme
from qtriton.progress import progress as bar

DEFAULT_SCHEMES = CANDIDATES


def _schemes(schemes) -> list[QuantScheme]:
    if isinstance(schemes, (str, QuantScheme)):
        schemes = [schemes]
    out = [QuantScheme.parse(s) if isinstance(s, str) else s for s in schemes]
    if not out or not all(isinstance(s, QuantScheme) for s in out):
        raise TypeError(f"schemes must be QuantScheme objects or preset names, got {schemes!r}")
    if any(s.static for s in out):
        raise ValueError("static schemes are not measured: one per-tensor scale does not fit decoder LLMs")
    return out


def _is_head(name: str) -> bool:
    return name.rpartition(".")[2] == "lm_head"


#: Layer types vLLM runs as one fused layer (hf.FUSED), one scheme for all parts, and the glob
#: that names them together in a "fused" grouping.
FUSED_GROUPS = {FUSED[0]: "*.[qkv]_proj", FUSED[1]: "*.[gu][ap]*_proj"}


def layer_groups(model: nn.Module, groups: str | Sequence[str] = "fused") -> dict[str, list[str]]:
    """{group label: qualified names of its nn.Linear layers}: "type" groups like layers across
    blocks ("*.down_proj"); "fused" (the default) too, but the types vLLM fuses into one layer
    go together ("*.[qkv]_proj", "*.[gu][ap]*_proj"), so that a plan gives them one scheme
    and save_pretrained's folder loads in vLLM; "layer" makes each layer its own group, and
    a sequence of glob patterns makes one group per pattern. The output head (lm_head) is in
    no "type", "fused" or "layer" group, and matched only by a pattern that names it
    ("lm_head", "*.lm_head"): "*" leaves it out, as quantize_model's keep_output_head does."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n]
    names = [n for n in linears if not _is_head(n)]
    if not names:
        raise ValueError(f"model ({type(model).__name__}) has no torch.nn.Linear layers to measure")
    if groups == "layer":
        return {n: [n] for n in names}
    if groups in ("type", "fused"):
        out: dict[str, list[str]] = {}
        for n in names:
            out.setdefault("*." + n.rpartition(".")[2] if "." in n else n, []).append(n)
        if groups == "fused":
            for parts, label in FUSED_GROUPS.items():
                members = [f"*.{p}" for p in parts]
                together = [n for m in members for n in out.get(m, [])]
                # Only where the glob names exactly these layers (no other type matches it).
                if all(m in out for m in members) and sorted(together) == sorted(
                        n for n in names if fnmatch.fnmatchcase(n, label)):
                    first = min(list(out).index(m) for m in members)
                    items = [(k, v) for k, v in out.items() if k not in members]
                    items.insert(first, (label, [n for n in names if n in set(together)]))
                    out = dict(items)
        return out
    if isinstance(groups, str) or not isinstance(groups, Sequence):
        raise ValueError(f"groups must be 'fused', 'type', 'layer' or a list of glob patterns, got {groups!r}")
    out = {}
    for pattern in groups:
        if not isinstance(pattern, str):
            raise TypeError(f"a group pattern must be a str, got {pattern!r}")
        candidates = linears if _is_head(pattern) else names
        matched = [n for n in candidates if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise ValueError(f"group pattern {pattern!r} matches no nn.Linear layer of the model")
        out[pattern] = matched
    return out


def linear_flops(model: nn.Module) -> dict[str, int]:
    """{qualified name: in_features * out_features} of each linear layer (nn.Linear or
    Int8Linear) but the output head: its multiply-adds per token, the decoder layers' share of
    a forward's matmul work (attention's token-by-token products aside)."""
    return linear_flops_of({name: (m.out_features, m.in_features) for name, m in model.named_modules()
                            if isinstance(m, (nn.Linear, Int8Linear)) and name})


def linear_flops_of(shapes: dict[str, tuple[int, int]]) -> dict[str, int]:
    """linear_flops from {layer name: its weight's (out_features, in_features)}, as a
    checkpoint records them (`qtriton report`): the output head left out."""
    return {name: int(out) * int(inp) for name, (out, inp) in shapes.items() if not _is_head(name)}


def int8_fraction(schemes: dict[str, QuantScheme | None], flops: dict[str, int]) -> float:
    """The fraction of flops (linear_flops) in layers whose scheme runs its GEMM int8 x int8
    (W8A8; W8A16 and float layers do not); a layer schemes does not name counts as float."""
    total = sum(flops.values())
    int8 = sum(f for name, f in flops.items() if (s := schemes.get(name)) is not None and not s.weight_only)
    return int8 / total if total else 0.0


def int8_flop_fraction(model: nn.Module) -> float:
    """The fraction of the decoder layers' linear FLOPs (the output head aside) that a
    quantized model runs int8 x int8: what its int8 tensor cores do, against bf16 work."""
    return int8_fraction(Plan.of_model(model).schemes, linear_flops(model))


class _Reference:
    """The float model's log-probabilities on each batch, kept from one pass."""

    def __init__(self, model: nn.Module, batches: list):
        if not batches:
            raise ValueError("batches is empty: the measurement needs at least one batch")
        for index, batch in enumerate(batches):
            checks.model_batch(batch, index)
        with torch.inference_mode():
            self.log_probs = [log_probs(output_tensor(run_batch(model, b))) for b in batches]
        self.batches = batches

    def compare(self, model: nn.Module) -> tuple[float, float]:
        """(mean KL(float || model) per token, top-1 agreement) of model on the batches."""
        with torch.inference_mode():
            return kl_top1((log_probs(output_tensor(run_batch(model, batch))), reference)
                           for batch, reference in zip(self.batches, self.log_probs))


@dataclass
class GroupSensitivity:
    group: str
    scheme: str
    layers: int
    kl: float  # mean KL(float || model) per token with only this group quantized
    top1: float  # top-1 agreement with float


@dataclass
class Sensitivity:
    rows: list[GroupSensitivity] = field(default_factory=list)

    def sorted(self) -> list[GroupSensitivity]:
        return sorted(self.rows, key=lambda r: -r.kl)

    def kl(self, group: str, scheme: str) -> float:
        for row in self.rows:
            if row.group == group and row.scheme == scheme:
                return row.kl
        raise KeyError(f"no measurement of {group!r} with {scheme!r}")

    def to_dict(self) -> dict:
        return {"rows": [vars(r) for r in self.sorted()]}

    def __str__(self) -> str:
        width = max([len(r.group) for r in self.rows] + [5])
        lines = [f"{'group':<{width}}  {'scheme':<16}  {'layers':>6}  {'KL':>9}  {'top-1':>6}"]
        for r in self.sorted():
            lines.append(f"{r.group:<{width}}  {r.scheme:<16}  {r.layers:>6}  {r.kl:9.5f}  {r.top1:6.1%}")
        return "\n".join(lines)


class _Swapper:
    """Puts Int8Linear layers into a model in place of named nn.Linear ones, and back."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.slots = {}
        for qualified, module in model.named_modules(remove_duplicate=False):
            if isinstance(module, nn.Linear) and qualified:
                parent_name, _, attr = qualified.rpartition(".")
                self.slots.setdefault(qualified, (model.get_submodule(parent_name), attr, module))

    def measure(self, names: list[str], make, reference: _Reference) -> tuple[float, float]:
        swapped = []
        try:
            for name in names:
                parent, attr, linear = self.slots[name]
                setattr(parent, attr, make(name, linear))
                swapped.append((parent, attr, linear))
            return reference.compare(self.model)
        finally:
            for parent, attr, linear in swapped:
                setattr(parent, attr, linear)


def _quantizer(scheme: QuantScheme, calibration):
    def make(name, linear):
        if not scheme.smoothed:
            return Int8Linear.from_float(linear, scheme, name=name)
        # linear belongs to the smoothed copy: input_scale only where s was not folded
        layer_scheme, options = calibration.layer_options(linear, name, scheme)
        return Int8Linear.from_float(linear, layer_scheme, name=name, **options)

    return make


@torch.no_grad()
def sensitivity(
    model: nn.Module,
    batches: Iterable,
    *,
    schemes: Sequence[str | QuantScheme] = DEFAULT_SCHEMES,
    groups: str | Sequence[str] = "fused",
    alpha: float = 0.5,
    progress: bool | None = None,
) -> Sensitivity:
    """KL divergence (and top-1 agreement) of the model's output distribution from float's
    when only one group of layers is quantized, for each group and each scheme; the model is
    left as it was. Smoothed schemes are measured on one SmoothQuant-smoothed copy of the
    model (alpha; same float function), made only if one is asked for. progress: a bar over
    the measurements (None: a bar on a terminal, in logs a line per 30 s)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    batches = list(batches)
    candidates = _schemes(schemes)
    layout = layer_groups(model, groups)
    reference = _Reference(model, batches)
    smoothed = calibration = None
    if any(s.smoothed for s in candidates):
        smoothed = copy.deepcopy(model)
        calibration = calibrate(smoothed, batches, alpha=alpha)
        calibration.smooth(smoothed)
    swappers = {False: _Swapper(model), True: None if smoothed is None else _Swapper(smoothed)}
    report = Sensitivity()
    work = [(g, s) for g in layout for s in candidates]
    for group, scheme in bar(work, desc="sensitivity", total=len(work), enabled=progress):
        kl, top1 = swappers[scheme.smoothed].measure(layout[group], _quantizer(scheme, calibration), reference)
        report.rows.append(GroupSensitivity(group, scheme.name, len(layout[group]), kl, top1))
    return report


# --------------------------------------------------------------------------------- plan
@dataclass
class Plan:
    """{layer name: QuantScheme or None (float)} for `quantize_model(model, plan=...)`, with
    the group choices it was made from, what the whole quantized model measured, and the
    fraction of the decoder layers' linear FLOPs its schemes run int8 x int8 (`int8_flops`,
    known where the plan was made from a model); of a quantized model (`of_model`), the
    layers whose scheme is the default's fallback because the default scheme refuses them
    (`fell_back`: {layer: why})."""

    schemes: dict[str, QuantScheme | None]
    groups: dict[str, str] = field(default_factory=dict)  # group -> scheme name or "float"
    kl: float | None = None
    top1: float | None = None
    target: str = ""
    int8_flops: float | None = None
    fell_back: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "schemes": {n: None if s is None else s.to_dict() for n, s in self.schemes.items()},
            "groups": self.groups, "kl": self.kl, "top1": self.top1, "target": self.target,
            "int8_flops": self.int8_flops, "fell_back": self.fell_back,
        }

    @classmethod
    def from_dict(cls, value: dict) -> Plan:
        """Inverse of to_dict; ValueError naming the key for anything else (a plan read from a
        file is checked here, not when it is printed or applied)."""
        if not isinstance(value, dict) or not isinstance(value.get("schemes"), dict):
            raise ValueError("a plan must be an object with a 'schemes' object")
        keys = ("schemes", "groups", "kl", "top1", "target", "int8_flops", "fell_back")
        if unknown := sorted(value.keys() - set(keys)):
            raise ValueError(f"plan: unknown keys {unknown} (a plan has {', '.join(keys)})")
        schemes = {}
        for name, scheme in value["schemes"].items():
            try:
                schemes[name] = None if scheme is None else QuantScheme.from_dict(scheme)
            except ValueError as err:
                raise ValueError(f"plan: schemes[{name!r}]: {err}") from None
        groups = value.get("groups", {})
        if not isinstance(groups, dict):
            raise ValueError(f"plan: groups must be an object of group -> scheme name, got {groups!r}")
        for group, name in groups.items():
            try:
                if name != "float":
                    QuantScheme.parse(name)
            except (TypeError, ValueError):
                raise ValueError(f"plan: groups[{group!r}] must be a scheme name or 'float', got {name!r}") from None
        for key in ("kl", "top1", "int8_flops"):
            number = value.get(key)
            if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))):
                raise ValueError(f"plan: {key} must be a number or null, got {number!r}")
        if not isinstance(value.get("target", ""), str):
            raise ValueError(f"plan: target must be a string, got {value['target']!r}")
        fell_back = value.get("fell_back", {})
        if not isinstance(fell_back, dict) or not all(isinstance(v, str) for v in fell_back.values()):
            raise ValueError(f"plan: fell_back must be an object of layer -> reason, got {fell_back!r}")
        return cls(schemes, dict(groups), value.get("kl"), value.get("top1"), value.get("target", ""),
                   value.get("int8_flops"), dict(fell_back))

    @classmethod
    def from_groups(cls, model: nn.Module, groups: dict[str, str]) -> Plan:
        """A plan by hand: {glob pattern of layer names ("*.down_proj"): scheme name or "float"};
        the first pattern that matches a layer decides. The output head is matched only by a
        pattern that names it ("lm_head"; see layer_groups), and quantize_model then needs
        keep_output_head=False to quantize it."""
        layout = layer_groups(model, list(groups))
        schemes = {}
        for pattern, name in groups.items():
            scheme = None if name == "float" else QuantScheme.parse(name)
            for layer in layout[pattern]:
                schemes.setdefault(layer, scheme)
        return cls(schemes, dict(groups), int8_flops=int8_fraction(schemes, linear_flops(model)))

    @classmethod
    def of_model(cls, model: nn.Module) -> Plan:
        """The plan a quantized model carries: each Int8Linear's scheme, "+smooth" where
        SmoothQuant's 1/s was folded into a norm or a preceding layer (the layer's own scheme
        then has no input_scale; quantize_model records the fold), None for each nn.Linear.

        qtriton's checkpoints keep all of it (save_quantized's header; save_pretrained's
        config groups and, for the folds, a "qtriton_smoothing_folds" entry beside them, which
        compressed-tensors, transformers and vLLM ignore), so a model loaded from them gives
        back the schemes of the plan it was made with. Not kept: the alpha and calibration
        data (a new `calibrate` applies the plan again), the groups and measurements of
        `qtriton.plan`. A folder from another writer (llm-compressor's SmoothQuant) has no
        fold record: its folded layers read as their plain scheme.

        fell_back names each layer that runs the default's fallback scheme because the default
        scheme refuses it (`scheme.DEFAULT`: "w8a8-asym" where the rotation cannot take an odd
        in_features), read off the layer, so a loaded model says it too."""
        schemes, fell_back = {}, {}
        for name, module in model.named_modules():
            if isinstance(module, Int8Linear):
                folded = module.smoothing_folded_into is not None
                schemes[name] = module.scheme.replace(smoothed=True) if folded else module.scheme
                if (why := DEFAULT.fallback_reason(module.scheme.replace(smoothed=False), module.in_features)):
                    fell_back[name] = why
            elif isinstance(module, nn.Linear) and name:
                schemes[name] = None
        return cls(schemes, int8_flops=int8_fraction(schemes, linear_flops(model)), fell_back=fell_back)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def __str__(self) -> str:
        counts: dict[str, int] = {}
        for s in self.schemes.values():
            counts["float" if s is None else s.name] = counts.get("float" if s is None else s.name, 0) + 1
        width = max([len(g) for g in self.groups] + [5])
        lines = [f"{'group':<{width}}  scheme"] + [f"{g:<{width}}  {s}" for g, s in self.groups.items()]
        measured = "" if self.kl is None else f": KL {self.kl:.5f}, top-1 {self.top1:.1%}"
        lines.append(f"{len(self.schemes)} layers ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))})"
                     f"{measured}" + (f" (target {self.target})" if self.target else ""))
        if self.int8_flops is not None:
            lines.append(f"int8 x int8: {self.int8_flops:.1%} of the decoder layers' linear FLOPs")
        if self.fell_back:
            lines.append(f"{DEFAULT.fallback.name} in place of the default {DEFAULT.scheme.name} "
                         f"({len(self.fell_back)} layers): " + ", ".join(self.fell_back))
        return "\n".join(lines)


def _tier(scheme_name: str) -> int:
    """The scheme's tier (0: int8 compute and memory, 1: int8 memory only), 2 for float."""
    return 2 if scheme_name == "float" else QuantScheme.parse(scheme_name).tier


def _check_report(report: Sensitivity, layout: dict[str, list[str]], candidates: list[QuantScheme], groups) -> None:
    """ValueError unless report measured every group of layout (the same layers) with every
    candidate: a report of another grouping would leave every group unmeasured, all float."""
    counts = {r.group: r.layers for r in report.rows}
    if other := sorted(counts.keys() ^ layout.keys()) or sorted(g for g in layout if counts[g] != len(layout[g])):
        raise ValueError(
            f"report was measured on other groups than groups={groups!r} makes of this model (e.g. {other[0]!r}): "
            "measure it with the same groups, or leave report out"
        )
    measured = {(r.group, r.scheme) for r in report.rows}
    for group in layout:
        for scheme in candidates:
            if (group, scheme.name) not in measured:
                raise ValueError(
                    f"report has no measurement of {group!r} with {scheme.name!r}: measure it with the schemes "
                    f"plan is given ({', '.join(s.name for s in candidates)}; W8A16 always), or leave report out"
                )


def _level(scheme_name: str) -> int:
    """The plan's order of cost: 0 int8 x int8 with symmetric activations (the plain GEMM),
    1 int8 x int8 with zero points (a rank-1 correction in the epilogue), 2 W8A16 (no int8
    compute), 3 float."""
    tier = _tier(scheme_name)
    if tier:
        return tier + 1
    return 0 if QuantScheme.parse(scheme_name).activation_symmetric else 1


def _evaluate(model, batches, reference, groups_choice, layout, alpha) -> tuple[float, float, Plan]:
    schemes = {}
    for group, name in groups_choice.items():
        for layer in layout[group]:
            schemes[layer] = None if name == "float" else QuantScheme.parse(name)
    kl, top1 = reference.compare(quantized_copy(model, schemes, batches, alpha))
    return kl, top1, Plan(schemes, dict(groups_choice), kl, top1, int8_flops=int8_fraction(schemes, linear_flops(model)))


@torch.no_grad()
def plan(
    model: nn.Module,
    batches: Iterable,
    *,
    target_kl: float | None = None,
    target_top1: float | None = None,
    schemes: Sequence[str | QuantScheme] = DEFAULT_SCHEMES,
    groups: str | Sequence[str] = "fused",
    alpha: float = 0.5,
    progress: bool | None = None,
    report: Sensitivity | None = None,
) -> Plan:
    """A per-layer plan that meets target_kl (mean KL from float per token) and/or target_top1
    (top-1 agreement) on batches with the most int8 x int8 work: the most decoder linear
    FLOPs in W8A8, the cheapest GEMM where it is enough.

    Greedy on the `sensitivity` ranking, in the order of cost `_level` gives (int8 with
    symmetric activations, int8 with zero points, W8A16, float): each group starts at its
    lowest-KL scheme of the cheapest level it has a candidate in; while the whole quantized
    model (a copy, measured end to end) misses the target, a group moves up a level: first
    a move that keeps its GEMM int8 x int8 (the one whose group KL drops the most), then a
    move to W8A16 (the most KL saved per FLOP given up), and only when no W8A8 group is left,
    a W8A16 group to float. The model is not changed.
    report: a `sensitivity` of this model on these batches, groups and schemes, to reuse
    (refused if it lacks a group or a scheme: W8A16 is always a candidate).
    progress: bars over the measurements and the steps (None: a bar on a terminal, in logs a
    line per 30 s).
    """
    if target_kl is None and target_top1 is None:
        raise ValueError("plan needs target_kl or target_top1 (or both)")
    for label, value, bound in (("target_kl", target_kl, None), ("target_top1", target_top1, 1.0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0
                                  or (bound is not None and value > bound)):
            raise ValueError(f"{label} must be a number >= 0{' and <= 1' if bound else ''}, got {value!r}")
    batches = list(batches)
    candidates = _schemes(schemes)
    if W8A16 not in candidates:
        candidates.append(W8A16)
    layout = layer_groups(model, groups)
    if report is None:
        report = sensitivity(model, batches, schemes=candidates, groups=groups, alpha=alpha, progress=progress)
    else:
        _check_report(report, layout, candidates, groups)
    reference = _Reference(model, batches)
    asked = {s.name for s in candidates}  # a reused report may hold more

    flops = linear_flops(model)
    group_flops = {g: sum(flops[n] for n in names) for g, names in layout.items()}

    def best(group: str, level: int) -> str | None:
        found = [r for r in report.rows if r.group == group and r.scheme in asked and _level(r.scheme) == level]
        return min(found, key=lambda r: r.kl).scheme if found else ("float" if level == 3 else None)

    def cost(group: str, name: str) -> float:
        return 0.0 if name == "float" else report.kl(group, name)

    def met(kl: float, top1: float) -> bool:
        return (target_kl is None or kl <= target_kl) and (target_top1 is None or top1 >= target_top1)

    def next_move(group: str) -> str | None:
        """The group's scheme one level up that helps: a lower group KL within int8 x int8,
        else the next tier (W8A16, then float)."""
        level = _level(choice[group])
        if level == 0 and (up := best(group, 1)) is not None and cost(group, up) < cost(group, choice[group]):
            return up
        for higher in range(max(level + 1, 2), 4):
            if (up := best(group, higher)) is not None:
                return up
        return None

    target = " and ".join(t for t in (
        None if target_kl is None else f"KL <= {target_kl:g}",
        None if target_top1 is None else f"top-1 >= {target_top1:.1%}") if t)
    choice = {g: next(best(g, level) for level in range(4) if best(g, level) is not None) for g in layout}
    steps = bar(range(3 * len(layout) + 1), desc="plan", enabled=progress)
    for _ in steps:
        kl, top1, result = _evaluate(model, batches, reference, choice, layout, alpha)
        result.target = target
        moves = {g: up for g in layout if (up := next_move(g)) is not None}
        if met(kl, top1) or not moves:
            return result
        gain = {g: cost(g, choice[g]) - cost(g, up) for g, up in moves.items()}
        within = [g for g, up in moves.items() if _level(up) <= 1]
        to_w8a16 = [g for g, up in moves.items() if _level(up) == 2]
        if within:  # still int8 x int8: the group whose KL drops the most
            group = max(within, key=lambda g: gain[g])
        elif to_w8a16:  # the most KL saved per int8 FLOP given up
            group = max(to_w8a16, key=lambda g: gain[g] / max(group_flops[g], 1))
        else:  # W8A16 -> float: least memory first, so only once no W8A8 group is left
            group = max(moves, key=lambda g: gain[g])
        choice[group] = moves[group]
    return result
