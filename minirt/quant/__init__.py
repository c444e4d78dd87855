"""Weight (and activation) quantization: formats, QuantLinear, whole-model conversion."""
