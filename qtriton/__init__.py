"""qtriton: INT8 quantization kernels in Triton, behind the lab's functions.

NumPy arrays run on the NumPy oracle, CPU tensors on torch ops, CUDA tensors on the
Triton kernels (see `qtriton.backend` to force one).

The names below are imported on first use (PEP 562), so that `import qtriton` and the
`qtriton` command's --help and --version cost no torch import; `from qtriton import X`
and `qtriton.X` work as for any package.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

#: Each public name -> the module that defines it.
_EXPORTS = {
    **dict.fromkeys(
        [
            "calculate_memory_savings",
            "compare_quantization_methods",
            "dequantize_asymmetric",
            "dequantize_per_channel",
            "dequantize_per_token",
            "dequantize_symmetric",
            "fake_quantize",
            "hadamard_rotate",
            "quantization_error",
            "quantize_asymmetric",
            "quantize_per_channel",
            "quantize_per_token",
            "quantize_symmetric",
            "quantized_matmul",
        ],
        "qtriton.api",
    ),
    **dict.fromkeys(["get_backend", "set_backend", "use_backend"], "qtriton.backend"),
    **dict.fromkeys(["from_pretrained", "save_pretrained"], "qtriton.formats.hf"),
    **dict.fromkeys(["Int8Linear", "QuantizationSummary", "quantize_model"], "qtriton.model.nn"),
    "QuantScheme": "qtriton.model.scheme",
    **dict.fromkeys(["load_quantized", "save_quantized"], "qtriton.formats.serialization"),
    # SmoothQuant calibration and the per-layer accuracy view.
    **dict.fromkeys(["Calibration", "calibrate", "layer_report"], "qtriton.accuracy.calibration"),
    # End-to-end sensitivity and per-layer plans.
    **dict.fromkeys(["Plan", "Sensitivity", "int8_flop_fraction", "plan", "sensitivity"], "qtriton.accuracy.planning"),
}

__all__ = sorted(_EXPORTS, key=str.lower)


#: Modules that moved into the tier folders, importable by their first names too (user code
#: `from qtriton.nn import quantize_model`, pickles that name `qtriton.nn.Int8Linear`).
_MOVED = {f"qtriton.{name}": f"qtriton.{tier}.{name}" for tier, names in (
    ("model", ("scheme", "nn")),
    ("formats", ("hf", "serialization")),
    ("accuracy", ("calibration", "planning", "evaluate")),
) for name in names}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a moved module's first name as the module itself: one module object under
    both names, so its classes, state and monkeypatches are shared."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in _MOVED else None

    def create_module(self, spec):
        module = importlib.import_module(_MOVED[spec.name])
        spec.loader_state = module.__spec__  # the import system sets __spec__ to this alias' spec
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state  # the module keeps its own spec


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        try:  # a submodule: qtriton.reference, qtriton.testing, ...
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
