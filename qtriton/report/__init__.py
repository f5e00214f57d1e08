"""`qtriton report CHECKPOINT`: how well each weight matrix of a checkpoint survives int8.

A qtriton checkpoint (written by `save_quantized`): per `Int8Linear` layer, its scheme
(`QuantScheme.name`: weights int8 per channel, symmetric; activations int8 per token,
symmetric or asymmetric, static, or float),
the SNR and max |error| of the stored weights (codes * scales) against the float checkpoint
given with `--original`, or without it estimated from the rounding step (error uniform over
+-scale/2: SNR ~ signal / (scale^2 / 12), max |error| <= max(scale) / 2), and its bytes; then
the tensors stored in float, the file's total, and the share of the linear layers' FLOPs (the
output head aside) that run int8 x int8. A Hadamard-rotated layer is compared with W R.

A float state dict (.safetensors, .pt/.pth/.bin/.ckpt, .npz): every 2-D floating-point tensor
is quantized and dequantized with the NumPy oracle (`qtriton.reference`) and measured (SNR dB,
higher is better, and max |error|) with each method below; the default table shows the one
`Int8Linear` stores (sym/channel), `--wide` all of them side by side, for comparison:

    sym/tensor   asym/tensor    one scale (and zero point) for the whole matrix
    sym/channel  asym/channel   one per row: a row of an (out, in) weight is one output channel
    sym/g128     asym/g128      one per 128 consecutive values of a row (only if 128 divides it)

"plan" says what `quantize_model`'s defaults would do with each matrix (judged by name, see
`kept_float_reason`), and the totals are what `quantize_model` + `save_quantized` store:
int8 codes + fp32 scales + fp32 biases for replaced layers, every other tensor as it is.

A method that cannot quantize a matrix is "n/a", with the reason: the asymmetric ones on data
far from zero relative to its range (1e6 + N(0, 0.1): the zero point would pass 2^24, where
float32 stops holding every integer, so the oracle gives a NaN scale and the API raises
ValueError). The default tables fit in 100 columns; `--json` has everything.

The package, by concern: `loading` reads checkpoints (every format, which kind a path is),
`floats` measures a float checkpoint (and `report_checkpoint` dispatches by kind), `quantized`
a save_quantized file or a compressed-tensors folder, `results` holds the reports and their
JSON, `tables` renders them, `command` is `qtriton report`. Every public name is here.
"""

from __future__ import annotations

from qtriton.report.command import add_arguments, run
from qtriton.report.floats import kept_float_reason, measure_tensor, method_names, report_checkpoint
from qtriton.report.loading import (
    NUMPY_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    TORCH_SUFFIXES,
    is_compressed_folder,
    is_quantized_checkpoint,
    load_checkpoint,
    natural_key,
)
from qtriton.report.quantized import report_compressed_folder, report_quantized
from qtriton.report.results import CheckpointReport, LayerReport, MethodError, QuantizedCheckpointReport, TensorReport
from qtriton.report.tables import WIDTH, format_table

__all__ = [
    "CheckpointReport",
    "LayerReport",
    "MethodError",
    "NUMPY_SUFFIXES",
    "QuantizedCheckpointReport",
    "SAFETENSORS_SUFFIXES",
    "TORCH_SUFFIXES",
    "TensorReport",
    "WIDTH",
    "add_arguments",
    "format_table",
    "is_compressed_folder",
    "is_quantized_checkpoint",
    "kept_float_reason",
    "load_checkpoint",
    "measure_tensor",
    "method_names",
    "natural_key",
    "report_checkpoint",
    "report_compressed_folder",
    "report_quantized",
    "run",
]
