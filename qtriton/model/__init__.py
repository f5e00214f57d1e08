"""The model layer: how a layer is quantized (`scheme`: QuantScheme and the registry of scheme
kinds and input transforms) and the layer that runs it (`nn`: Int8Linear, quantize_model)."""
