"""Per-layer mixed-precision quantization: simulated (fake) quantization with a straight-through
estimator, activation calibration on the float model, and honest storage of the quantized weights.

Conventions (HAQ, Wang et al. CVPR 2019, arXiv 1811.08886, section 3):

- A layer's *activation bits* are the bits of its **input**: ``a_bits["conv2"] = 4`` quantizes the
  tensor that enters ``conv2``. HAQ keeps the first layer's input unquantized and runs the first
  layer W8 and the last W8A8 (see :func:`first_last_layers` and :func:`pin_first_last`).
- Bits are an int in 1..8; ``None`` or 32 means float (no quantization).

One module per concept:

============= ====================================================================================
``schemes``   weight schemes (linear, binary, ternary, k-means) as registered objects with
              ``encode``/``decode``; bit checks; the activation fake-quantizer
``observers`` one-pass activation statistics and the calibration rules (max, percentile, KL, MSE)
``config``    :class:`QuantConfig`, how to quantize (the bits come per layer)
``wrapper``   :class:`QuantWrapper`, the quantized ``Conv2d``/``Linear`` (STE, cached weight codes)
``cache``     :class:`QuantCache`, exact content-keyed reuse across ``quantize_model`` calls
``quantize``  :func:`quantize_model`, :func:`calibrate`, HAQ's first/last-layer rule
``storage``   bit-packed payload, storage sizes, and the model file (``amc.export``'s one format)
============= ====================================================================================
"""

from __future__ import annotations

from amc.quantization.cache import QuantCache
from amc.quantization.config import QuantConfig
from amc.quantization.observers import ACT_CALIBRATIONS
from amc.quantization.quantize import (
    activation_quantization_error,
    activation_scale,
    calibrate,
    first_last_layers,
    pin_first_last,
    quantize_model,
)
from amc.quantization.schemes import (
    WEIGHT_CLIPS,
    WEIGHT_SCHEMES,
    QuantizedWeight,
    WeightScheme,
    check_bits,
    fake_quant_activation,
    get_scheme,
    quantization_error,
    quantize_weight,
    quantize_weight_codes,
    register_scheme,
    scheme_names,
    weight_quantization_error,
)
from amc.quantization.storage import (
    huffman_size_bits,
    load_packed,
    pack_model,
    save_packed,
    skeleton_bytes,
    unpack_model,
    weight_storage_bits,
)
from amc.quantization.wrapper import QuantWrapper, quantized_layers

__all__ = [
    "ACT_CALIBRATIONS",
    "WEIGHT_CLIPS",
    "WEIGHT_SCHEMES",
    "QuantCache",
    "QuantConfig",
    "QuantWrapper",
    "QuantizedWeight",
    "WeightScheme",
    "activation_quantization_error",
    "activation_scale",
    "calibrate",
    "check_bits",
    "fake_quant_activation",
    "first_last_layers",
    "get_scheme",
    "huffman_size_bits",
    "load_packed",
    "pack_model",
    "pin_first_last",
    "quantization_error",
    "quantize_model",
    "quantize_weight",
    "quantize_weight_codes",
    "quantized_layers",
    "register_scheme",
    "save_packed",
    "scheme_names",
    "skeleton_bytes",
    "unpack_model",
    "weight_quantization_error",
    "weight_storage_bits",
]
