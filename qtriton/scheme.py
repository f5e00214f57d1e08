"""One description of how a layer is quantized: `QuantScheme`.

A scheme says what an `Int8Linear` stores and computes, and nothing about one layer's data:

    weights       int8 codes, symmetric, one scale per output channel (what the GEMM runs)
    activations   "none"     W8A16: x stays float, the GEMM dequantizes the weight
                  "dynamic"  per-token int8 scales (and zero points if asymmetric) made on
                             every call from the token's own range
                  "static"   one calibrated per-tensor symmetric scale
    smoothed      the layer multiplies SmoothQuant's 1/s into x before quantizing it
                  (`input_scale`), where no norm or preceding layer could take it

The same object travels from `quantize_model` to the layer, the checkpoint header, the
calibration and the report; the presets have names (`QuantScheme.parse("w8a8-asym")`).
It maps one-to-one onto compressed-tensors' quantization arguments (`to_compressed_tensors`,
`from_compressed_tensors`), the format vLLM, transformers and llm-compressor share, except
for `smoothed`, which that format cannot express (the smoothing must be folded first).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

ACTIVATIONS = ("none", "dynamic", "static")


@dataclass(frozen=True)
class QuantScheme:
    """How one layer is quantized; frozen and hashable, so a plan can map names to it."""

    weight_bits: int = 8
    weight_symmetric: bool = True
    weight_strategy: str = "channel"
    activations: str = "dynamic"
    activation_symmetric: bool = True
    smoothed: bool = False

    def __post_init__(self) -> None:
        # A NumPy integer (np.int64(8)) is the int it holds: the header is JSON.
        if isinstance(self.weight_bits, bool) or not isinstance(self.weight_bits, numbers.Integral):
            raise TypeError(f"QuantScheme.weight_bits must be an int, got {self.weight_bits!r}")
        object.__setattr__(self, "weight_bits", int(self.weight_bits))
        for name in ("weight_strategy", "activations"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"QuantScheme.{name} must be a str, got {getattr(self, name)!r}")
        for name in ("weight_symmetric", "activation_symmetric", "smoothed"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"QuantScheme.{name} must be True or False, got {getattr(self, name)!r}")
        if self.activations not in ACTIVATIONS:
            raise ValueError(f"QuantScheme.activations must be one of {ACTIVATIONS}, got {self.activations!r}")
        # What Int8Linear runs; the format has more (group-wise, 4-bit, asymmetric weights).
        if (self.weight_bits, self.weight_symmetric, self.weight_strategy) != (8, True, "channel"):
            raise ValueError(
                "Int8Linear runs 8-bit symmetric per-channel weights only, got "
                f"weight_bits={self.weight_bits!r}, weight_symmetric={self.weight_symmetric!r}, "
                f"weight_strategy={self.weight_strategy!r}"
            )
        if self.activations == "static" and not self.activation_symmetric:
            raise ValueError("static activations are symmetric (one per-tensor scale, no zero point)")
        if self.activations == "none" and not self.activation_symmetric:
            raise ValueError(
                "activations='none' (W8A16) has no activation zero points: activation_symmetric must be True"
            )

    # ------------------------------------------------------------------ views
    @property
    def weight_only(self) -> bool:
        return self.activations == "none"

    @property
    def static(self) -> bool:
        return self.activations == "static"

    @property
    def name(self) -> str:
        """The preset name ("w8a8", "w8a8-asym", "w8a8-static", "w8a16"), "+smooth" if smoothed."""
        base = {"none": "w8a16", "static": "w8a8-static"}.get(self.activations)
        if base is None:
            base = "w8a8" if self.activation_symmetric else "w8a8-asym"
        return base + ("+smooth" if self.smoothed else "")

    def describe(self) -> str:
        """Activations in words, for `extra_repr`, summaries and reports."""
        if self.weight_only:
            text = "float (weight-only int8)"
        elif self.static:
            text = "int8 static per-tensor symmetric"
        else:
            text = "int8 per-token " + ("symmetric" if self.activation_symmetric else "asymmetric")
        return text + (", smoothed (input_scale)" if self.smoothed else "")

    def replace(self, **changes) -> QuantScheme:
        return dataclasses.replace(self, **changes)

    @classmethod
    def parse(cls, text: str) -> QuantScheme:
        """A preset by name: "w8a8", "w8a8-asym", "w8a8-static", "w8a16", each with an optional "+smooth"."""
        if not isinstance(text, str):
            raise TypeError(f"scheme name must be a str, got {type(text).__name__}")
        base, plus, suffix = text.strip().lower().partition("+")
        if plus and suffix != "smooth":
            raise ValueError(f"unknown scheme {text!r}: the only suffix is '+smooth'")
        if base not in PRESETS:
            raise ValueError(f"unknown scheme {text!r}: one of {sorted(PRESETS)}, optionally with '+smooth'")
        return PRESETS[base].replace(smoothed=bool(plus))

    # ------------------------------------------------------------------ qtriton's header
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, value) -> QuantScheme:
        """Inverse of to_dict (every key, as it writes them); ValueError naming the key for
        anything else: a scheme read from a file says what it is, no key is taken as a default."""
        if not isinstance(value, dict):
            raise ValueError(f"a scheme must be an object, got {value!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(value.keys() - known):
            raise ValueError(f"a scheme has unknown keys {unknown}")
        if missing := sorted(known - value.keys()):
            raise ValueError(f"a scheme lacks keys {missing}")
        try:
            return cls(**value)
        except TypeError as err:
            raise ValueError(str(err)) from None

    # ------------------------------------------------------------------ compressed-tensors
    def to_compressed_tensors(self) -> dict:
        """{"weights": args, "input_activations": args | None}, each a dict of compressed-tensors'
        `QuantizationArgs` fields (format "int-quantized"). A smoothed scheme has no such form."""
        if self.smoothed:
            raise ValueError(
                "a smoothed scheme (input_scale) cannot be written as compressed-tensors: "
                "fold the smoothing into a norm or a preceding layer first"
            )
        weights = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False}
        if self.weight_only:
            activations = None
        elif self.static:
            activations = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "tensor", "dynamic": False}
        else:
            activations = {
                "num_bits": 8, "type": "int", "symmetric": self.activation_symmetric,
                "strategy": "token", "dynamic": True,
            }
        return {"weights": weights, "input_activations": activations}

    @classmethod
    def from_compressed_tensors(cls, weights: dict | None, input_activations: dict | None = None) -> QuantScheme:
        """The scheme of a compressed-tensors config group, or ValueError saying what
        Int8Linear cannot run (group-wise or 4-bit weights, float8, output activations ...)."""
        if not isinstance(weights, dict):
            raise ValueError(f"the config group has no weight quantization (weights: {weights!r})")
        w = _args(weights, "weights")
        found = (w["num_bits"], w["type"], w["symmetric"], w["strategy"], w["dynamic"])
        if found != (8, "int", True, "channel", False):
            raise ValueError(
                "Int8Linear runs int8 symmetric per-channel static weights, the group has "
                f"num_bits={w['num_bits']!r}, type={w['type']!r}, symmetric={w['symmetric']!r}, "
                f"strategy={w['strategy']!r}, dynamic={w['dynamic']!r}"
            )
        if input_activations is None:
            return cls(activations="none")
        a = _args(input_activations, "input_activations")
        if (a["num_bits"], a["type"]) != (8, "int"):
            raise ValueError(f"Int8Linear quantizes activations to int8, the group asks num_bits={a['num_bits']!r}, "
                             f"type={a['type']!r}")
        if a["dynamic"] is True and a["strategy"] == "token":
            return cls(activations="dynamic", activation_symmetric=bool(a["symmetric"]))
        if a["dynamic"] is False and a["strategy"] == "tensor" and a["symmetric"]:
            return cls(activations="static")
        raise ValueError(
            "Int8Linear runs dynamic per-token or static per-tensor symmetric activations, the group has "
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


W8A8 = QuantScheme()
W8A8_ASYMMETRIC = QuantScheme(activation_symmetric=False)
W8A8_STATIC = QuantScheme(activations="static")
W8A16 = QuantScheme(activations="none")
PRESETS = {"w8a8": W8A8, "w8a8-asym": W8A8_ASYMMETRIC, "w8a8-static": W8A8_STATIC, "w8a16": W8A16}
