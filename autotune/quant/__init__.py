"""The quantization helpers the int4 passes run on: calibration inputs and their statistics (``calibration``),
GPTQ (``gptq``), the layers' sensitivity (``sensitivity``) and ONNX Runtime's weight-only quantizers
(``weight_only``). The passes themselves are in :mod:`autotune.passes`."""
