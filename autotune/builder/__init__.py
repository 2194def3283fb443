"""onnxruntime-genai's model builder: its call (``build``), the child process it runs in (``process``), which
models it exports (``support``) and the ONNX folder it writes (``onnx_folder``). The ``ModelBuilder`` pass is
:mod:`autotune.passes.model_builder`."""
