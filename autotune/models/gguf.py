"""Import a GGUF file once: dequantize through transformers and save a safetensors HF folder."""

from __future__ import annotations

from pathlib import Path

from autotune.errors import ModelError

GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path) -> None:
    """Refuse a missing, non-GGUF or truncated file before transformers sees it."""
    if not path.is_file():
        raise ModelError(str(path), "no such GGUF file")
    with path.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ModelError(str(path), "not a GGUF file (bad magic bytes)")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        size = path.stat().st_size
        for tensor in reader.tensors:
            if tensor.data_offset + tensor.n_bytes > size:
                raise ModelError(str(path), "the GGUF file is truncated")
    except ModelError:
        raise
    except Exception as exc:  # the reader raises assorted errors on a cut file
        raise ModelError(str(path), f"cannot read GGUF: {str(exc).splitlines()[0][:160]}") from None


def convert_gguf(gguf_path: Path, output: Path, *, trust_remote_code: bool = False) -> None:
    """Write a safetensors HF folder (fp32 weights, tokenizer) for ``gguf_path`` into ``output``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_gguf(gguf_path)
    folder, name = str(gguf_path.parent), gguf_path.name
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=trust_remote_code)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it until unmarked;
    # the weights are already dequantized to fp32 here.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
