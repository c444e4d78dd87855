"""Weight (and activation) quantization: formats, QuantLinear, whole-model conversion;
what it costs (accuracy), why activations are harder (outliers), grids at any bit width (grid)."""
