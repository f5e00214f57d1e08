"""One description of how a layer is quantized (`QuantScheme`), and the registry that says
what each kind of scheme means from the layer to the file to the report.

A scheme has three parts:

    weights           int8 codes, symmetric, one scale per output channel (what the GEMM runs)
    activations       "none"     W8A16: x stays float, the GEMM dequantizes the weight
                      "dynamic"  per-token int8 scales (and zero points if asymmetric) made on
                                 every call from the token's own range
                      "static"   one calibrated per-tensor symmetric scale
    input transforms  x -> T(x) before the activations are quantized, with the weight stored
                      as W T^-T so that the layer computes what it did: SmoothQuant's
                      smoothing (`smoothed`, the "+smooth" suffix: x * input_scale, the
                      weight W / input_scale) where no norm or preceding layer could take it

`QuantScheme` is the public, frozen, hashable config: it travels from `quantize_model` to the
layer, qtriton's checkpoint header, the compressed-tensors config, calibration, planning and
the report; the presets have names (`QuantScheme.parse("w8a8-asym")`). What a scheme *does* is
in two registries here, which every module reads instead of branching on fields:

    KINDS       one `SchemeKind` handler per kind of scheme (its weight format and its
                activations), torchao's config + handler: the tensors an `Int8Linear` of it
                holds (`TensorSlot`: buffer name, shape, role, compressed-tensors' name and
                shapes), how it is built from float (`build`) and how it runs (`forward`), its
                compressed-tensors arguments and format, whether its GEMM runs int8 x int8
                (planning's tier and int8 FLOP fraction), its presets and plan candidates.
    TRANSFORMS  one `InputTransform` class per kind of input transform: what it does to the
                weight at build and to x in float, what it asks of the activation quantize
                (an `ActivationQuant` field), its tensors, its suffix in scheme names, its key
                in qtriton's header and its compressed-tensors form (`transform_config`, or
                none: then saving refuses the layers by name), and whether it is exact on float.

The backend contract's activation quantize takes one `ActivationQuant` (docs/design.md).
docs/design.md ("Schemes") says how to add a kind or an input transform.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch

from qtriton import api, checks
from qtriton.backend import chosen
from qtriton.dispatch import backend_module, resolve
from qtriton.operands import MatmulOperands


# --------------------------------------------------------------------- the backend contract
class ActivationQuant(NamedTuple):
    """What one activation quantize does (`quantize_activations(rows, spec)` of every backend,
    `reference.quantize_activations`): rows (M, K) -> (q int8, scale (M,), zero point (M,) | None).

        symmetric       per-token symmetric codes (False: asymmetric, with zero points)
        static_scale    0-d float32: symmetric codes with this one calibrated scale instead
        input_scale     (K,) float32: x * input_scale first (SmoothQuant's 1/s)
        hadamard_block  the block size of a block-diagonal Hadamard rotation of x (after
                        input_scale, before the scale; the Hadamard transform sets it)

    A tuple, so torch.compile traces it as it traces a tuple of tensors. An implementation
    takes the fields as keywords of the same names (`spec.arguments()`); the optional fields
    left None are not passed, so a backend needs to know only the fields a scheme sets."""

    symmetric: bool = True
    static_scale: object = None
    input_scale: object = None
    hadamard_block: int | None = None

    def arguments(self) -> dict:
        """The keywords of the implementations: symmetric, and every optional field that is set."""
        options = {"symmetric": self.symmetric}
        for name in self._fields[1:]:
            value = getattr(self, name)
            if value is not None:
                options[name] = value
        return options

    def convert(self, fn) -> ActivationQuant:
        """The spec with fn applied to each tensor field (the API's conversion to a backend's kind)."""
        return self._replace(**{n: fn(getattr(self, n)) for n in ("static_scale", "input_scale")
                                if getattr(self, n) is not None})


# ------------------------------------------------------------------------- tensor slots
@dataclass(frozen=True)
class TensorSlot:
    """One tensor an Int8Linear of a scheme holds, as a buffer of that name (and key of
    qtriton's checkpoints), and how compressed-tensors folders store it.

        role        "codes": int8; "scale": float32, positive, finite and normal (checks'
                    scale rule); "bias": float32, finite
        calibrated  its value comes from a calibration: `Int8Linear.from_float`'s keyword of
                    the same name
        ct_name     its name in a compressed-tensors folder; None: the format has none
        ct_shapes   the shapes a folder may hold it in (read), ct_shape the one written
        ct_packed   codes written pack-quantized (<ct_name>_packed, four to an int32, and
                    <ct_name>_shape); read packed or as int8 <ct_name>"""

    name: str
    shape: tuple[int, ...]
    role: str
    calibrated: bool = False
    ct_name: str | None = None
    ct_shapes: tuple[tuple[int, ...], ...] = ()
    ct_shape: tuple[int, ...] | None = None
    ct_packed: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return torch.int8 if self.role == "codes" else torch.float32

    def empty(self, device) -> torch.Tensor:
        """The buffer a new layer starts with: zero codes and biases, unit scales."""
        fill = torch.ones if self.role == "scale" else torch.zeros
        return fill(self.shape, dtype=self.dtype, device=device)

    def to_file(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor as a compressed-tensors folder stores it."""
        return tensor if self.role == "codes" else tensor.to(torch.float32).reshape(self.ct_shape)

    def from_file(self, tensor: torch.Tensor) -> torch.Tensor:
        """A folder's tensor (checked) as the layer holds it."""
        if self.role == "codes":
            return tensor.contiguous()
        return tensor.to(torch.float32).reshape(self.shape).contiguous()


# ------------------------------------------------------------------- input transforms
class InputTransform:
    """One kind of input transform: x -> T(x) before the activation quantize, the weight
    stored as W T^-T (so that T(x) (W T^-T)^T = x W^T), registered in TRANSFORMS. A
    scheme holds at most one of each kind, applied to x in TRANSFORMS' order. Instances are
    frozen and hashable (parameters such as a block size are fields); the class says:

        keyword   the QuantScheme keyword and attribute for it, and its key in qtriton's
                  header (`QuantScheme(smoothed=True)`, `scheme.smoothed`, "smoothed": true)
        exact     T then W T^-T is the float layer's function in exact arithmetic
    """

    keyword: ClassVar[str]
    exact: ClassVar[bool] = True
    #: qtriton's header writes the keyword for schemes without the transform too (False): the
    #: version 2 header had the key on every layer. New kinds leave it out.
    in_every_header: ClassVar[bool] = False

    # ------------------------------------------------------------- naming and the header
    @classmethod
    def from_keyword(cls, value) -> InputTransform | None:
        """The transform a keyword value asks for (None: none); TypeError / ValueError naming
        QuantScheme.<keyword> otherwise."""
        raise NotImplementedError

    def keyword_value(self):
        """This transform's value of the keyword (`from_keyword`'s inverse)."""
        raise NotImplementedError

    @classmethod
    def absent_value(cls):
        """The keyword's value on a scheme without the transform."""
        return None

    def suffix(self) -> str:
        """Its part of the scheme's name, after a "+" ("smooth")."""
        raise NotImplementedError

    @classmethod
    def parse(cls, suffix: str) -> InputTransform | None:
        """The transform a name suffix (without the "+") stands for, or None if not this kind."""
        raise NotImplementedError

    #: How the suffix is written, for error messages ("+smooth").
    suffix_forms: ClassVar[str]

    def describe(self) -> str:
        raise NotImplementedError

    def check(self, scheme: QuantScheme) -> None:
        """ValueError if scheme's kind cannot run this transform (QuantScheme's validation)."""

    # ------------------------------------------------------------------- the layer
    def for_layer(self, in_features: int) -> InputTransform:
        """The transform as a layer of in_features inputs has it: a parameter the scheme
        leaves to the layer (a block size chosen from in_features) made concrete, so that
        the layer's scheme, header and config say what it runs; ValueError if the layer
        cannot take it. Int8Linear calls it when it is built."""
        return self

    def tensors(self, in_features: int, out_features: int) -> list[TensorSlot]:
        """The tensors it adds to a layer."""
        return []

    def build(self, layer, weight: torch.Tensor, data: dict, name: str) -> torch.Tensor:
        """At `from_float`: fill this transform's tensors of layer (from data, the calibrated
        values by slot name) and return the float32 (out, in) weight transformed (W T^-T)."""
        return weight

    def activation_options(self, layer) -> dict:
        """What it asks of the activation quantize: `ActivationQuant` fields, read from layer."""
        return {}

    def apply_float(self, layer, rows: torch.Tensor) -> torch.Tensor:
        """T(x) on float rows (M, K), for the W8A16 path (no activation quantize)."""
        raise NotImplementedError

    # ------------------------------------------------------------ compressed-tensors
    @classmethod
    def to_compressed_tensors(cls, layers: dict[str, InputTransform]) -> dict:
        """{group name: transform scheme} of compressed-tensors' `transform_config` for the
        layers (name -> transform) that have this kind; ValueError naming them if the format
        cannot express it (vLLM would serve them wrong)."""
        raise NotImplementedError

    #: Why a scheme with this kind cannot be written as compressed-tensors at all, or None.
    compressed_tensors_refusal: ClassVar[str | None] = None
    #: The `type`s of compressed-tensors' transform schemes this kind reads.
    compressed_tensors_types: ClassVar[tuple[str, ...]] = ()
    #: Scheme names with this transform that sensitivity, plan and `qtriton eval` measure by default.
    candidates: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_compressed_tensors_tensor(cls, group: dict, key: str, tensor: torch.Tensor) -> None:
        """A tensor a folder stores for a `transform_config` group of this kind (compressed-tensors
        saves a transform's matrix as `<layer>.<group>_<location>.weight`): ValueError naming
        key unless it is what the transform runs (Int8Linear builds its own, so it is not loaded)."""
        raise ValueError(f"stores {key} for its transform_config, which Int8Linear does not read")

    @classmethod
    def from_compressed_tensors(cls, group: dict) -> InputTransform:
        """The transform a `transform_config` group of one of compressed_tensors_types
        stands for (its `input` application's targets say which layers have it); ValueError
        for one Int8Linear cannot run."""
        raise ValueError(f"transform type {group.get('type')!r}")


@dataclass(frozen=True)
class Smooth(InputTransform):
    """SmoothQuant's smoothing where no norm or preceding layer could take it: the layer holds
    input_scale (1/s, calibrated) and computes (x * input_scale) @ (W / input_scale).T."""

    keyword: ClassVar[str] = "smoothed"
    in_every_header: ClassVar[bool] = True
    suffix_forms: ClassVar[str] = "'+smooth'"
    candidates: ClassVar[tuple[str, ...]] = ("w8a8-asym+smooth",)
    compressed_tensors_refusal: ClassVar[str] = (
        "a smoothed scheme (input_scale) cannot be written as compressed-tensors: "
        "fold the smoothing into a norm or a preceding layer first"
    )

    @classmethod
    def from_keyword(cls, value) -> Smooth | None:
        if not isinstance(value, bool):
            raise TypeError(f"QuantScheme.smoothed must be True or False, got {value!r}")
        return cls() if value else None

    def keyword_value(self) -> bool:
        return True

    @classmethod
    def absent_value(cls) -> bool:
        return False

    def suffix(self) -> str:
        return "smooth"

    @classmethod
    def parse(cls, suffix: str) -> Smooth | None:
        return cls() if suffix == "smooth" else None

    def describe(self) -> str:
        return "smoothed (input_scale)"

    def tensors(self, in_features: int, out_features: int) -> list[TensorSlot]:
        return [TensorSlot("input_scale", (in_features,), "scale", calibrated=True)]

    def build(self, layer, weight: torch.Tensor, data: dict, name: str) -> torch.Tensor:
        layer.input_scale.copy_(checks.calibrated_scale(data["input_scale"], layer.in_features, f"{name} input_scale"))
        weight = weight / layer.input_scale
        if not bool(torch.isfinite(weight).all()):
            raise ValueError(f"{name}.weight / input_scale overflows float32: input_scale is too small for it")
        return weight

    def activation_options(self, layer) -> dict:
        return {"input_scale": layer.input_scale.to(torch.float32)}

    def apply_float(self, layer, rows: torch.Tensor) -> torch.Tensor:
        return rows.to(torch.float32) * layer.input_scale

    @classmethod
    def to_compressed_tensors(cls, layers: dict[str, InputTransform]) -> dict:
        raise ValueError(
            f"{len(layers)} layers multiply a SmoothQuant input_scale into x, which compressed-tensors cannot "
            f"express (vLLM would serve them without it, wrongly): {', '.join(layers)}; calibrate so that "
            "the smoothing folds into norms, or exclude these layers from quantization"
        )


@dataclass(frozen=True)
class Hadamard(InputTransform):
    """A block-diagonal Hadamard rotation of x (QuaRot / QuIP's incoherence processing):
    x -> x R with R = diag(H, ..., H) / sqrt(block), H Sylvester's Hadamard matrix of order
    `block` (a power of two dividing in_features; `reference.hadamard_rotate`), the weight
    stored as W R: R is orthogonal and symmetric, so x R (W R)^T = x W^T. It spreads a
    token's outlier channels over their block before the per-token quantize, which rotates x
    in registers as it loads the row (ActivationQuant.hadamard_block): no extra pass over x.

    block None ("+had"): the largest power of two dividing in_features (at most
    checks.MAX_HADAMARD_BLOCK), made concrete when a layer is built (576 -> 64, 1536 -> 512,
    640 -> 128, 2048 -> 2048): docs/models.md measured the widest block the most accurate,
    `down_proj` most of all. compressed-tensors writes it as a `hadamard` transform with
    head_dim = block, applied at `input` and, inverted, at `weight_input` (the stored weight
    is already rotated), as llm-compressor's QuIP writes it; one group per block size."""

    block: int | None = None

    keyword: ClassVar[str] = "hadamard"
    suffix_forms: ClassVar[str] = "'+had' or '+had<block>' (a power of two)"
    candidates: ClassVar[tuple[str, ...]] = ("w8a8+had", "w8a8-asym+had")
    compressed_tensors_types: ClassVar[tuple[str, ...]] = ("hadamard",)

    def __post_init__(self) -> None:
        if self.block is not None:
            object.__setattr__(self, "block", checks.hadamard_block(self.block, name="QuantScheme.hadamard"))

    def check(self, scheme: QuantScheme) -> None:
        if scheme.static:
            raise ValueError("a Hadamard-rotated scheme quantizes x R, and a static scale is calibrated on x: "
                             "rotate with per-token (dynamic) activations or W8A16")

    @classmethod
    def from_keyword(cls, value) -> Hadamard | None:
        """None or False: no rotation; True: the layer's largest power-of-two block; an int: that block."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if not isinstance(value, numbers.Integral):
            raise TypeError(f"QuantScheme.hadamard must be True, False, None or a power-of-two block size, got {value!r}")
        return cls(int(value))

    def keyword_value(self) -> bool | int:
        return True if self.block is None else self.block

    @classmethod
    def absent_value(cls) -> bool:
        return False

    def suffix(self) -> str:
        return "had" if self.block is None else f"had{self.block}"

    @classmethod
    def parse(cls, suffix: str) -> Hadamard | None:
        if suffix == "had":
            return cls()
        if suffix.startswith("had") and suffix[3:].isdigit():
            return cls(int(suffix[3:]))
        return None

    def describe(self) -> str:
        return "Hadamard-rotated (" + ("largest power-of-two blocks" if self.block is None
                                       else f"blocks of {self.block}") + ")"

    def for_layer(self, in_features: int) -> Hadamard:
        block = self.block if self.block is not None else min(in_features & -in_features, checks.MAX_HADAMARD_BLOCK)
        if block < 2:
            raise ValueError(f"a Hadamard rotation needs an even in_features (blocks of a power of two >= 2), "
                             f"got in_features={in_features}")
        if in_features % block:
            raise ValueError(f"Hadamard block {block} does not divide in_features={in_features}: "
                             f"use '+had' (the largest power of two dividing it) or a block that divides it")
        return self if block == self.block else Hadamard(block)

    def build(self, layer, weight: torch.Tensor, data: dict, name: str) -> torch.Tensor:
        # W R with the oracle's butterflies in float64, rounded once to float32: within half a
        # float32 ulp of the exact W R (R's entries are +-1/sqrt(block); tests/test_rotation.py).
        return backend_module("torch").hadamard_rotate(weight.to(torch.float64), self.block).to(torch.float32)

    def activation_options(self, layer) -> dict:
        return {"hadamard_block": self.block}

    def apply_float(self, layer, rows: torch.Tensor) -> torch.Tensor:
        return backend_module("torch").hadamard_rotate(rows.to(torch.float32), self.block)

    @classmethod
    def to_compressed_tensors(cls, layers: dict[str, InputTransform]) -> dict:
        by_block: dict[int, list[str]] = {}
        for name, transform in layers.items():
            by_block.setdefault(transform.block, []).append(name)
        groups = {}
        for block, names in sorted(by_block.items()):
            targets = {"targets": names, "ignore": []}
            groups[f"hadamard_{block}"] = {
                "type": "hadamard", "head_dim": block, "randomize": False, "requires_grad": False,
                "precision": "torch.float64",
                "apply": [{**targets, "location": "input", "inverse": False},
                          {**targets, "location": "weight_input", "inverse": True}],
            }
        return groups

    @classmethod
    def check_compressed_tensors_tensor(cls, group: dict, key: str, tensor: torch.Tensor) -> None:
        """llm-compressor's folders keep the unnormalized +-1 Sylvester matrix of order head_dim
        (compressed-tensors' deterministic_hadamard_matrix) once; anything else is refused."""
        block = group.get("head_dim")
        if isinstance(block, int) and key.endswith(".weight") and tuple(tensor.shape) == (block, block):
            sylvester = torch.ones(1, 1, dtype=torch.float64)
            while sylvester.shape[0] < block:
                sylvester = torch.cat([torch.cat([sylvester, sylvester], 1), torch.cat([sylvester, -sylvester], 1)])
            if torch.equal(tensor.to(torch.float64), sylvester):
                return
        raise ValueError(f"{key} is not the Sylvester Hadamard matrix of order head_dim={block!r} that its "
                         "transform_config group describes (Int8Linear rotates by that matrix only)")

    @classmethod
    def from_compressed_tensors(cls, group: dict) -> Hadamard:
        """A `hadamard` group: head_dim a power of two, no random permutation, applied at
        `input` (and `weight_input`, already in the stored weights) only."""
        if group.get("randomize"):
            raise ValueError("a randomized (permuted) Hadamard transform: Int8Linear runs the deterministic one only")
        head_dim = group.get("head_dim")
        if head_dim is None:
            raise ValueError("a Hadamard transform without head_dim (one rotation over all of in_features): "
                             "Int8Linear runs block-diagonal rotations of a stated head_dim")
        applies = group.get("apply") or []
        if not isinstance(applies, list) or not all(isinstance(a, dict) for a in applies):
            raise ValueError(f"apply must be a list of objects, got {applies!r}")
        if other := sorted({str(a.get("location")) for a in applies} - {"input", "weight_input"}):
            raise ValueError(f"applied at {other}: Int8Linear runs rotations of a linear layer's input only "
                             "(locations 'input' and 'weight_input')")
        if not any(a.get("location") == "input" for a in applies):
            raise ValueError("no 'input' application: the stored weights are rotated but nothing rotates x")
        try:
            return cls(head_dim)
        except (TypeError, ValueError) as err:
            raise ValueError(f"head_dim: {err}") from None


#: The input transforms, in the order a scheme applies them to x.
TRANSFORMS: tuple[type[InputTransform], ...] = (Smooth, Hadamard)


def _transform_kind(keyword: str) -> type[InputTransform] | None:
    """The registered input transform kind with this keyword."""
    return next((kind for kind in TRANSFORMS if kind.keyword == keyword), None)


# ------------------------------------------------------------------------- scheme kinds
class SchemeKind:
    """The handler of one kind of scheme: a weight format and an `activations` value,
    registered in KINDS. Subclasses say what the layer holds, how it is built and run, and
    how compressed-tensors writes it; QuantScheme's validation, names, header and
    compressed-tensors parsing, Int8Linear, both checkpoint formats, planning and the report
    all ask the scheme's kind."""

    #: QuantScheme's (weight_bits, weight_symmetric, weight_strategy) it runs, in words, and
    #: the compressed-tensors weights it reads in words.
    weights: ClassVar[tuple[int, bool, str]]
    weights_text: ClassVar[str]
    compressed_tensors_weights: ClassVar[str]
    #: QuantScheme.activations it runs, and its compressed-tensors activations in words.
    activations: ClassVar[str]
    compressed_tensors_activations: ClassVar[str | None] = None
    #: Its GEMM runs int8 x int8 (the int8 tensor-core work qtriton exists for).
    int8_compute: ClassVar[bool]
    #: The plan's order of preference: 0 int8 compute and memory, 1 int8 memory only.
    tier: ClassVar[int]
    #: compressed-tensors' format of its config groups.
    compressed_tensors_format: ClassVar[str]
    #: Preset names -> QuantScheme field values (weights and activations are the kind's).
    presets: ClassVar[dict[str, dict]] = {}
    #: Scheme names sensitivity, plan and `qtriton eval` measure by default.
    candidates: ClassVar[tuple[str, ...]] = ()

    def check(self, scheme: QuantScheme) -> None:
        """ValueError for field values this kind cannot run."""

    def base_name(self, scheme: QuantScheme) -> str:
        raise NotImplementedError

    def describe(self, scheme: QuantScheme) -> str:
        """Activations in words, for `extra_repr`, summaries and reports."""
        raise NotImplementedError

    # ------------------------------------------------------------------- the layer
    def weight_tensors(self, scheme: QuantScheme, in_features: int, out_features: int, bias: bool) -> list[TensorSlot]:
        raise NotImplementedError

    def activation_tensors(self, scheme: QuantScheme, in_features: int, out_features: int) -> list[TensorSlot]:
        return []

    def build(self, layer, weight: torch.Tensor, data: dict, name: str) -> None:
        """At `from_float`: quantize the float32 (out, in) weight (already transformed) into
        layer's tensors, and fill its activation tensors from data (calibrated values)."""
        raise NotImplementedError

    def forward(self, layer, rows: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        """layer on checked rows (M, in_features), non-empty; (M, out_features) in out_dtype."""
        raise NotImplementedError

    # ------------------------------------------------------------ compressed-tensors
    def to_compressed_tensors(self, scheme: QuantScheme) -> dict:
        """{"weights": args, "input_activations": args | None}: compressed-tensors'
        `QuantizationArgs` fields."""
        raise NotImplementedError

    def from_compressed_tensors(self, weights: dict, input_activations: dict | None) -> QuantScheme | None:
        """The scheme of this kind a config group's arguments (defaults filled in) describe, or None."""
        raise NotImplementedError


class _Int8ChannelWeights(SchemeKind):
    """int8 symmetric per-output-channel weights: `weight` (out, in) int8, contiguous (the
    GEMM reads `weight.t()`, a K-major B operand, without a copy), `weight_scale` (out,)
    float32, `bias` (out,) float32 or None."""

    weights = (8, True, "channel")
    weights_text = "8-bit symmetric per-channel"
    compressed_tensors_weights = "int8 symmetric per-channel static"
    _CT_WEIGHTS: ClassVar[dict] = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel",
                                   "dynamic": False}

    def weight_tensors(self, scheme, in_features, out_features, bias):
        slots = [
            TensorSlot("weight", (out_features, in_features), "codes", ct_name="weight",
                       ct_shapes=((out_features, in_features),), ct_shape=(out_features, in_features)),
            TensorSlot("weight_scale", (out_features,), "scale", ct_name="weight_scale",
                       ct_shapes=((out_features,), (out_features, 1)), ct_shape=(out_features, 1)),
        ]
        if bias:
            slots.append(TensorSlot("bias", (out_features,), "bias", ct_name="bias", ct_shapes=((out_features,),),
                                    ct_shape=(out_features,)))
        return slots

    def build(self, layer, weight, data, name):
        weight_q, weight_scale = api.quantize_per_channel(weight, axis=0)
        layer.weight.copy_(weight_q)
        layer.weight_scale.copy_(weight_scale)
        layer.refresh_weight_colsum()

    def weights_match(self, weights: dict) -> bool:
        return tuple(weights[k] for k in self._CT_WEIGHTS) == tuple(self._CT_WEIGHTS.values())


class _Int8Activations(_Int8ChannelWeights):
    """W8A8: x quantized to int8 by one activation quantize (one kernel on CUDA), then the
    int8 GEMM with the scales, zero points and bias in its epilogue."""

    int8_compute = True
    tier = 0
    compressed_tensors_format = "int-quantized"

    def activation_options(self, layer) -> dict:
        """The `ActivationQuant` fields of this kind, read from layer."""
        raise NotImplementedError

    def forward(self, layer, rows, out_dtype):
        # float32 scales and bias (Int8Linear keeps them float32 through m.half() / m.bfloat16()).
        weight_scale = layer.weight_scale.to(torch.float32)
        bias = None if layer.bias is None else layer.bias.to(torch.float32)
        options = self.activation_options(layer)
        for transform in layer.scheme.transforms:
            options.update(transform.activation_options(layer))
        spec = ActivationQuant(**options)
        backend, device = resolve(rows)
        if device is None:  # the NumPy oracle takes arrays: the API converts both ways
            x_q, x_scale, x_zero_point = api.quantize_activations(rows, spec)
            return api.quantized_matmul(x_q, x_scale, layer.weight.t(), weight_scale,
                                        0 if x_zero_point is None else x_zero_point, 0, bias=bias, out_dtype=out_dtype)
        # Straight to the backend: the layer's input and buffers are checked, nothing below checks
        # again. One pass over x (the input transforms, the scales, int8 codes: asymmetric ones
        # moved down by 128, so that the GEMM runs its plain int8 K loop).
        x_q, x_scale, x_zero_point = backend.quantize_activations(rows, spec)
        checks.activations_result(x_scale, spec)
        # The weight's kept column sums: the activations' zero points need them, and computing
        # them per call is a pass over the weight.
        colsum = None if x_zero_point is None else layer.weight_colsum
        operands = MatmulOperands(a_scale=x_scale, b_scale=weight_scale,
                                  a_zp=0 if x_zero_point is None else x_zero_point, bias=bias, b_colsum=colsum)
        return backend.quantized_matmul(x_q, layer.weight.t(), operands, out_dtype)


class DynamicW8A8(_Int8Activations):
    """Per-token int8 activations made on every call from each token's range: symmetric, or
    asymmetric with a zero point per token (0 kept in each range)."""

    activations = "dynamic"
    compressed_tensors_activations = "dynamic per-token"
    presets = {"w8a8": {}, "w8a8-asym": {"activation_symmetric": False}}
    candidates = ("w8a8", "w8a8-asym")

    def base_name(self, scheme):
        return "w8a8" if scheme.activation_symmetric else "w8a8-asym"

    def describe(self, scheme):
        return "int8 per-token " + ("symmetric" if scheme.activation_symmetric else "asymmetric")

    def activation_options(self, layer):
        return {"symmetric": layer.scheme.activation_symmetric}

    def to_compressed_tensors(self, scheme):
        return {"weights": dict(self._CT_WEIGHTS), "input_activations": {
            "num_bits": 8, "type": "int", "symmetric": scheme.activation_symmetric, "strategy": "token",
            "dynamic": True}}

    def from_compressed_tensors(self, weights, input_activations):
        a = input_activations
        if a is not None and a["dynamic"] is True and a["strategy"] == "token":
            return QuantScheme(activations="dynamic", activation_symmetric=bool(a["symmetric"]))
        return None


class StaticW8A8(_Int8Activations):
    """One calibrated per-tensor symmetric activation scale (`activation_scale`, 0-d float32)
    instead of the per-token reduction."""

    activations = "static"
    compressed_tensors_activations = "static per-tensor symmetric"
    presets = {"w8a8-static": {}}

    def check(self, scheme):
        if not scheme.activation_symmetric:
            raise ValueError("static activations are symmetric (one per-tensor scale, no zero point)")

    def base_name(self, scheme):
        return "w8a8-static"

    def describe(self, scheme):
        return "int8 static per-tensor symmetric"

    def activation_tensors(self, scheme, in_features, out_features):
        return [TensorSlot("activation_scale", (), "scale", calibrated=True, ct_name="input_scale",
                           ct_shapes=((), (1,)), ct_shape=(1,))]

    def build(self, layer, weight, data, name):
        layer.activation_scale.copy_(checks.calibrated_scale(data["activation_scale"], None, f"{name} activation_scale"))
        super().build(layer, weight, data, name)

    def activation_options(self, layer):
        return {"symmetric": True, "static_scale": layer.activation_scale.to(torch.float32)}

    def to_compressed_tensors(self, scheme):
        return {"weights": dict(self._CT_WEIGHTS), "input_activations": {
            "num_bits": 8, "type": "int", "symmetric": True, "strategy": "tensor", "dynamic": False}}

    def from_compressed_tensors(self, weights, input_activations):
        a = input_activations
        if a is not None and a["dynamic"] is False and a["strategy"] == "tensor" and a["symmetric"]:
            return QuantScheme(activations="static")
        return None


class W8A16Kind(_Int8ChannelWeights):
    """Weight-only int8: x stays float and the GEMM dequantizes the weight tile by tile (the
    Triton kernel where the triton backend runs, float32 torch ops otherwise): int8 memory,
    float compute."""

    activations = "none"
    int8_compute = False
    tier = 1
    # The form vLLM serves weight-only integer layers in (CompressedTensorsWNA16) and
    # llm-compressor's W8A16 preset writes; naive-quantized folders (int8 weight) load too.
    compressed_tensors_format = "pack-quantized"
    presets = {"w8a16": {}}
    candidates = ("w8a16",)

    def check(self, scheme):
        if not scheme.activation_symmetric:
            raise ValueError(
                "activations='none' (W8A16) has no activation zero points: activation_symmetric must be True"
            )

    def base_name(self, scheme):
        return "w8a16"

    def describe(self, scheme):
        return "float (weight-only int8)"

    def weight_tensors(self, scheme, in_features, out_features, bias):
        weight, *rest = super().weight_tensors(scheme, in_features, out_features, bias)
        return [dataclasses.replace(weight, ct_packed=True), *rest]

    def forward(self, layer, rows, out_dtype):
        for transform in layer.scheme.transforms:
            rows = transform.apply_float(layer, rows)
        # The numpy setting too runs torch ops here: the oracle has no weight-only GEMM.
        backend = backend_module("triton" if chosen(rows.device) == "triton" else "torch")
        operands = MatmulOperands(b_scale=layer.weight_scale, bias=layer.bias)
        return backend.weight_only_matmul(rows, layer.weight.t(), operands, out_dtype)

    def to_compressed_tensors(self, scheme):
        return {"weights": dict(self._CT_WEIGHTS), "input_activations": None}

    def from_compressed_tensors(self, weights, input_activations):
        return QuantScheme(activations="none") if input_activations is None else None


#: The scheme kinds; QuantScheme.activations is one of theirs.
KINDS: tuple[SchemeKind, ...] = (W8A16Kind(), DynamicW8A8(), StaticW8A8())
ACTIVATIONS = tuple(dict.fromkeys(kind.activations for kind in KINDS))
_BY_KEY = {(*kind.weights, kind.activations): kind for kind in KINDS}


# --------------------------------------------------------------------------- the config
_FIELDS = ("weight_bits", "weight_symmetric", "weight_strategy", "activations", "activation_symmetric")


@dataclass(frozen=True, init=False)
class QuantScheme:
    """How one layer is quantized; frozen and hashable, so a plan can map names to it.

    transforms: its input transforms (instances of TRANSFORMS' classes), at most one of each
    kind, kept in TRANSFORMS' order. Each kind also has a keyword, set in the constructor and
    read as an attribute: `QuantScheme(smoothed=True).smoothed`."""

    weight_bits: int = 8
    weight_symmetric: bool = True
    weight_strategy: str = "channel"
    activations: str = "dynamic"
    activation_symmetric: bool = True
    transforms: tuple[InputTransform, ...] = ()

    def __init__(self, weight_bits: int = 8, weight_symmetric: bool = True, weight_strategy: str = "channel",
                 activations: str = "dynamic", activation_symmetric: bool = True,
                 transforms: tuple[InputTransform, ...] = (), **keywords) -> None:
        if not isinstance(transforms, (tuple, list)) or not all(isinstance(t, TRANSFORMS) for t in transforms):
            raise TypeError(f"QuantScheme.transforms must be a tuple of input transforms {[k.__name__ for k in TRANSFORMS]}, "
                            f"got {transforms!r}")
        chosen_transforms = {type(t): t for t in transforms}
        if len(chosen_transforms) != len(transforms):
            raise ValueError(f"QuantScheme.transforms has two transforms of one kind: {transforms!r}")
        for keyword, value in keywords.items():
            kind = _transform_kind(keyword)
            if kind is None:
                raise TypeError(f"QuantScheme() got an unexpected keyword argument {keyword!r}")
            transform = kind.from_keyword(value)
            if transform is None:
                chosen_transforms.pop(kind, None)
            else:
                chosen_transforms[kind] = transform
        values = (weight_bits, weight_symmetric, weight_strategy, activations, activation_symmetric,
                  tuple(chosen_transforms[k] for k in TRANSFORMS if k in chosen_transforms))
        for name, value in zip((*_FIELDS, "transforms"), values):
            object.__setattr__(self, name, value)
        self._check()

    def _check(self) -> None:
        # A NumPy integer (np.int64(8)) is the int it holds: the header is JSON.
        if isinstance(self.weight_bits, bool) or not isinstance(self.weight_bits, numbers.Integral):
            raise TypeError(f"QuantScheme.weight_bits must be an int, got {self.weight_bits!r}")
        object.__setattr__(self, "weight_bits", int(self.weight_bits))
        for name in ("weight_strategy", "activations"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"QuantScheme.{name} must be a str, got {getattr(self, name)!r}")
        for name in ("weight_symmetric", "activation_symmetric"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"QuantScheme.{name} must be True or False, got {getattr(self, name)!r}")
        if self.activations not in ACTIVATIONS:
            raise ValueError(f"QuantScheme.activations must be one of {ACTIVATIONS}, got {self.activations!r}")
        # What Int8Linear runs; the format has more (group-wise, 4-bit, asymmetric weights).
        if (self.weight_bits, self.weight_symmetric, self.weight_strategy, self.activations) not in _BY_KEY:
            formats = " or ".join(dict.fromkeys(k.weights_text for k in KINDS if k.activations == self.activations))
            raise ValueError(
                f"Int8Linear runs {formats} weights only, got "
                f"weight_bits={self.weight_bits!r}, weight_symmetric={self.weight_symmetric!r}, "
                f"weight_strategy={self.weight_strategy!r}"
            )
        self.kind.check(self)
        for transform in self.transforms:
            transform.check(self)

    def __getattr__(self, name: str):
        """An input transform's keyword (`smoothed`): its value on this scheme."""
        kind = _transform_kind(name)
        if kind is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        transform = self.transform(kind)
        return kind.absent_value() if transform is None else transform.keyword_value()

    # ------------------------------------------------------------------ views
    @property
    def kind(self) -> SchemeKind:
        """The registered handler of this scheme's kind (KINDS)."""
        return _BY_KEY[(self.weight_bits, self.weight_symmetric, self.weight_strategy, self.activations)]

    def transform(self, kind: type[InputTransform]) -> InputTransform | None:
        """The scheme's input transform of this kind, or None."""
        return next((t for t in self.transforms if isinstance(t, kind)), None)

    @property
    def weight_only(self) -> bool:
        return self.activations == "none"

    @property
    def static(self) -> bool:
        return self.activations == "static"

    @property
    def int8_compute(self) -> bool:
        """Its GEMM runs int8 x int8 (W8A8); W8A16 runs float compute on int8 memory."""
        return self.kind.int8_compute

    @property
    def tier(self) -> int:
        """The plan's order of preference: 0 int8 compute and memory, 1 int8 memory only."""
        return self.kind.tier

    @property
    def needs_calibration(self) -> bool:
        """Some of its tensors come from a calibration (a static scale, a smoothing's input_scale)."""
        return bool(self.calibrated_tensors())

    @property
    def name(self) -> str:
        """The preset name ("w8a8", "w8a8-asym", "w8a8-static", "w8a16") and a "+" suffix per
        input transform ("+smooth")."""
        return self.kind.base_name(self) + "".join("+" + t.suffix() for t in self.transforms)

    def describe(self) -> str:
        """Activations in words, for `extra_repr`, summaries and reports."""
        return self.kind.describe(self) + "".join(", " + t.describe() for t in self.transforms)

    def replace(self, **changes) -> QuantScheme:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ the layer
    def for_layer(self, in_features: int) -> QuantScheme:
        """The scheme as a layer of in_features inputs runs it (`InputTransform.for_layer`)."""
        transforms = tuple(t.for_layer(in_features) for t in self.transforms)
        return self if transforms == self.transforms else self.replace(transforms=transforms)

    def tensors(self, in_features: int, out_features: int, bias: bool) -> list[TensorSlot]:
        """The tensors an Int8Linear(in_features, out_features, bias) of this scheme holds,
        in the order it registers them: the weight's, the input transforms', the activations'."""
        slots = self.kind.weight_tensors(self, in_features, out_features, bias)
        for transform in self.transforms:
            slots += transform.tensors(in_features, out_features)
        return slots + self.kind.activation_tensors(self, in_features, out_features)

    def calibrated_tensors(self) -> tuple[str, ...]:
        """Names of the tensors whose values come from a calibration (`from_float`'s keywords)."""
        return tuple(slot.name for slot in self.tensors(1, 1, False) if slot.calibrated)

    @classmethod
    def parse(cls, text: str) -> QuantScheme:
        """A preset by name ("w8a8", "w8a8-asym", "w8a8-static", "w8a16"), each with optional
        input transform suffixes ("+smooth")."""
        if not isinstance(text, str):
            raise TypeError(f"scheme name must be a str, got {type(text).__name__}")
        base, *suffixes = text.strip().lower().split("+")
        forms = ", ".join(kind.suffix_forms for kind in TRANSFORMS)
        if base not in PRESETS:
            raise ValueError(f"unknown scheme {text!r}: one of {sorted(PRESETS)}, optionally with {forms}")
        transforms = []
        for suffix in suffixes:
            found = next((t for kind in TRANSFORMS if (t := kind.parse(suffix)) is not None), None)
            if found is None or any(type(t) is type(found) for t in transforms):
                raise ValueError(f"unknown scheme {text!r}: the suffixes are {forms}, each at most once")
            transforms.append(found)
        return PRESETS[base].replace(transforms=tuple(transforms))

    # ------------------------------------------------------------------ qtriton's header
    def to_dict(self) -> dict:
        """The fields, and each input transform kind's keyword where the scheme has one (the
        version 2 header's "smoothed" on every scheme)."""
        value = {name: getattr(self, name) for name in _FIELDS}
        for kind in TRANSFORMS:
            transform = self.transform(kind)
            if transform is not None or kind.in_every_header:
                value[kind.keyword] = kind.absent_value() if transform is None else transform.keyword_value()
        return value

    @classmethod
    def from_dict(cls, value) -> QuantScheme:
        """Inverse of to_dict (every key, as it writes them); ValueError naming the key for
        anything else: a scheme read from a file says what it is, no key is taken as a default."""
        if not isinstance(value, dict):
            raise ValueError(f"a scheme must be an object, got {value!r}")
        if unknown := sorted(value.keys() - {*_FIELDS, *(kind.keyword for kind in TRANSFORMS)}):
            raise ValueError(f"a scheme has unknown keys {unknown}")
        written = {*_FIELDS, *(kind.keyword for kind in TRANSFORMS if kind.in_every_header)}
        if missing := sorted(written - value.keys()):
            raise ValueError(f"a scheme lacks keys {missing}")
        try:
            return cls(**value)
        except TypeError as err:
            raise ValueError(str(err)) from None

    # ------------------------------------------------------------------ compressed-tensors
    def to_compressed_tensors(self) -> dict:
        """{"weights": args, "input_activations": args | None}, each a dict of compressed-tensors'
        `QuantizationArgs` fields (format "int-quantized"). Input transforms are the
        format's `transform_config` (`qtriton.formats.hf`); a scheme with one the format cannot
        express (smoothing) has no such form."""
        for transform in self.transforms:
            if transform.compressed_tensors_refusal:
                raise ValueError(transform.compressed_tensors_refusal)
        return self.kind.to_compressed_tensors(self)

    @classmethod
    def from_compressed_tensors(cls, weights: dict | None, input_activations: dict | None = None) -> QuantScheme:
        """The scheme of a compressed-tensors config group, or ValueError saying what
        Int8Linear cannot run (group-wise or 4-bit weights, float8, output activations ...)."""
        if not isinstance(weights, dict):
            raise ValueError(f"the config group has no weight quantization (weights: {weights!r})")
        w = _args(weights, "weights")
        kinds = [kind for kind in KINDS if kind.weights_match(w)]
        if not kinds:
            runs = " or ".join(dict.fromkeys(kind.compressed_tensors_weights for kind in KINDS))
            raise ValueError(
                f"Int8Linear runs {runs} weights, the group has "
                f"num_bits={w['num_bits']!r}, type={w['type']!r}, symmetric={w['symmetric']!r}, "
                f"strategy={w['strategy']!r}, dynamic={w['dynamic']!r}"
            )
        a = None if input_activations is None else _args(input_activations, "input_activations")
        if a is not None and (a["num_bits"], a["type"]) != (8, "int"):
            raise ValueError(f"Int8Linear quantizes activations to int8, the group asks num_bits={a['num_bits']!r}, "
                             f"type={a['type']!r}")
        for kind in kinds:
            scheme = kind.from_compressed_tensors(w, a)
            if scheme is not None:
                return scheme
        runs = " or ".join(k.compressed_tensors_activations for k in kinds if k.compressed_tensors_activations)
        raise ValueError(
            f"Int8Linear runs {runs} activations, the group has "
            f"strategy={a['strategy']!r}, dynamic={a['dynamic']!r}, symmetric={a['symmetric']!r}"
        )


def _args(value: dict, where: str) -> dict:
    """compressed-tensors' QuantizationArgs defaults filled in (num_bits 8, type int, symmetric,
    dynamic False); a group size, block structure or activation ordering is refused."""
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object of quantization arguments, got {value!r}")
    for key in ("group_size", "block_structure", "actorder"):
        if value.get(key) not in (None, False):
            raise ValueError(f"{where}: {key}={value[key]!r} is not supported by Int8Linear")
    args = {
        "num_bits": value.get("num_bits", 8),
        "type": value.get("type", "int"),
        "symmetric": value.get("symmetric", True),
        "strategy": value.get("strategy", "tensor"),
        "dynamic": value.get("dynamic", False),
    }
    # JSON types as compressed-tensors' QuantizationArgs has them: "8" is not 8.
    if isinstance(args["num_bits"], bool) or not isinstance(args["num_bits"], int):
        raise ValueError(f"{where}: num_bits must be an integer, got {args['num_bits']!r}")
    return args


def as_scheme(value, name: str = "scheme") -> QuantScheme:
    """A QuantScheme, or a preset name parsed into one; TypeError naming the argument otherwise."""
    if isinstance(value, QuantScheme):
        return value
    if isinstance(value, str):
        return QuantScheme.parse(value)
    raise TypeError(f"{name} must be a QuantScheme or a preset name such as 'w8a8-asym', got {type(value).__name__}")


def _presets() -> dict[str, QuantScheme]:
    found = {}
    for kind in KINDS:
        bits, symmetric, strategy = kind.weights
        for name, fields in kind.presets.items():
            found[name] = QuantScheme(bits, symmetric, strategy, kind.activations, **fields)
    return found


PRESETS = _presets()
W8A8 = PRESETS["w8a8"]
W8A8_ASYMMETRIC = PRESETS["w8a8-asym"]
W8A8_STATIC = PRESETS["w8a8-static"]
W8A16 = PRESETS["w8a16"]


@dataclass(frozen=True)
class DefaultScheme:
    """`quantize_model`'s scheme when it is given none (no scheme, shorthand, plan or static
    calibration): `scheme` for every layer that can take it, `fallback` for a layer it refuses.

    Chosen on held-out text, every decoder layer int8 x int8 (docs/models.md, the rotation
    tables): rotated symmetric W8A8 ("w8a8+had", blocks of the largest power of two dividing
    in_features) without data gives SmolLM2-135M 97.1 % top-1, Gemma 3 270M 96.7 % (KL 0.0038,
    0.0036) where unrotated asymmetric W8A8 gives 91.2 % and 92.1 %; rotated, symmetric
    activations equal asymmetric ones in validation KL, so the cheaper GEMM (no zero-point
    correction) wins. A Hadamard rotation needs an even in_features, so a layer with an odd one
    gets the best unrotated scheme measured, "w8a8-asym" (the default before the rotation).
    An explicit scheme="w8a8+had" still refuses such a layer (ValueError)."""

    scheme: QuantScheme
    fallback: QuantScheme

    def for_layer(self, in_features: int) -> tuple[QuantScheme, str | None]:
        """(the scheme a layer of in_features inputs gets, None; or the fallback and why)."""
        try:
            self.scheme.for_layer(in_features)
        except ValueError as err:
            return self.fallback, f"{self.scheme.name} refuses it ({err})"
        return self.scheme, None

    def fallback_reason(self, scheme: QuantScheme, in_features: int) -> str | None:
        """Why a layer of scheme runs the fallback (the default scheme refuses its in_features:
        what the default gives it), or None: what Plan.of_model reads off a quantized model."""
        if scheme != self.fallback:
            return None
        return self.for_layer(in_features)[1]


#: quantize_model's default; Int8Linear's own default stays "w8a8".
DEFAULT = DefaultScheme(QuantScheme.parse("w8a8+had"), W8A8_ASYMMETRIC)


def _candidates() -> tuple[str, ...]:
    """The kinds' and transforms' candidates, int8 compute first (stable within a tier)."""
    names = [name for kind in KINDS for name in kind.candidates]
    names += [name for kind in TRANSFORMS for name in kind.candidates]
    return tuple(sorted(names, key=lambda name: QuantScheme.parse(name).tier))


#: The schemes sensitivity, plan and `qtriton eval` measure unless told otherwise.
CANDIDATES = _candidates()
#: The name of every tensor a layer of a preset or candidate scheme holds: an Int8Linear
#: whose scheme has none of that name holds it as None.
LAYER_TENSORS = tuple(dict.fromkeys(slot.name for name in (*PRESETS, *CANDIDATES)
                                    for slot in QuantScheme.parse(name).tensors(1, 1, True)))
