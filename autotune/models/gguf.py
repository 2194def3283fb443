"""Import a GGUF file once: dequantize through transformers and save a safetensors HF folder."""

from __future__ import annotations

import struct
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
    from gguf import GGUFReader  # an ImportError is a broken install, not the file's fault

    try:
        reader = GGUFReader(str(path))
    # What the reader raises on a cut or corrupt file (numpy reshape/view errors, a bad enum value, a
    # short unpack, undecodable text). Anything else is a library failure and keeps its type and traceback.
    except (ValueError, IndexError, KeyError, OverflowError, struct.error) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelError(str(path), f"cannot read GGUF: {first}") from None
    except OSError as exc:
        raise ModelError(str(path), f"cannot read: {exc.strerror or exc}") from None
    size = path.stat().st_size
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size:
            raise ModelError(str(path), "the GGUF file is truncated")


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


def gguf_source_id(path: Path) -> str | None:
    """The Hugging Face id a GGUF file names as its source (``general.source.huggingface.repository`` or a
    huggingface.co ``general.source.url``), or None. ``general.basename``/``name`` are not ids, and
    ``general.base_model.*`` names the model this one was made from, not this one."""
    from gguf import GGUFReader

    from autotune.models.hub import id_from_url, looks_like_hub_id

    try:
        fields = GGUFReader(str(path)).fields
    except (OSError, ValueError, IndexError, KeyError, OverflowError, struct.error):
        return None  # an unreadable file: check_gguf reports it where it matters
    for key in ("general.source.huggingface.repository", "general.source.url"):
        field = fields.get(key)
        value = field.contents() if field is not None else None
        if isinstance(value, str):
            value = value.strip()
            found = value if looks_like_hub_id(value) else id_from_url(value)
            if found:
                return found
    return None
