"""Loading HF models and tokenizers from local folders (safetensors only, never pickle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autotune.errors import ModelError


def check_hf_folder(path: Path, *, where: str = "input_model.model_path") -> None:
    if not path.is_dir():
        raise ModelError(where, f"no such model folder: {path}")
    if not (path / "config.json").is_file():
        raise ModelError(where, f"{path} has no config.json (expected a Hugging Face model folder)")
    weights = list(path.glob("*.safetensors"))
    if not weights:
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        extra = f" (found {pickled[0]}; pickle weights are never loaded)" if pickled else ""
        raise ModelError(where, f"{path} has no .safetensors weights{extra}")
    for file in weights:
        _check_safetensors(file)


def _check_safetensors(path: Path) -> None:
    import json
    import struct

    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > size - 8:
                raise ValueError("header runs past the end of the file")
            header = json.loads(handle.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + header_len + end > size:
            raise ValueError("the file is truncated")
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise ModelError(str(path), f"not a valid safetensors file: {exc}") from None


def load_tokenizer(path: Path, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: Path, *, trust_remote_code: bool = False, quantization_config: Any = None, device_map: Any = None) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch.float32, "trust_remote_code": trust_remote_code, "use_safetensors": True}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if device_map is not None:  # e.g. {"": 0}: a 4-bit base quantized straight onto the GPU
        kwargs["device_map"] = device_map
    return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
