"""A peft LoRA adapter as a GGUF LoRA adapter that llama.cpp loads (``lora_path``).

Written with the ``gguf`` package's writer, as llama.cpp's ``convert_lora_to_gguf.py`` writes
it (the same tensors, checked side by side when this was built): ``general.type=adapter``,
``adapter.type=lora``, ``adapter.lora.alpha``, and for each adapted weight ``NAME.lora_a``
(peft's A, rank × inputs) and ``NAME.lora_b`` (peft's B, outputs × rank). The architecture
and the names come from the base GGUF itself, so no Hugging Face config is needed.

Only architectures whose conversion to GGUF keeps the attention weights as they are qualify
(Qwen2 and Qwen3, Gemma, Phi-3); llama-style models permute q and k, so their adapters
are refused rather than written wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tierflow.errors import ConfigError

__all__ = ["to_gguf_adapter", "SUPPORTED_ARCHITECTURES"]

SUPPORTED_ARCHITECTURES = frozenset({"qwen2", "qwen3", "qwen2moe", "gemma", "gemma2", "gemma3", "phi3"})


def to_gguf_adapter(adapter_dir: Path, base_gguf: Path, out: Path) -> dict[str, Any]:
    """Write ``adapter_dir`` (peft's ``adapter_config.json`` and ``adapter_model.safetensors``)
    to ``out`` for ``base_gguf``; what was written (tensors, rank, alpha, architecture)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("use_dora") or config.get("use_rslora"):
        raise ConfigError("llama.cpp's LoRA takes neither DoRA nor rsLoRA", hint="Train a plain LoRA.")
    reader = gguf.GGUFReader(str(base_gguf))
    architecture = str(reader.fields["general.architecture"].contents())
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ConfigError(
            f"adapters for {architecture} models cannot be written yet",
            hint=f"tierflow learn supports: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}.",
        )
    blocks = int(reader.fields[f"{architecture}.block_count"].contents())
    shapes = {tensor.name: [int(n) for n in tensor.shape] for tensor in reader.tensors}  # [inputs, outputs]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[architecture.upper()], blocks)
    pairs: dict[str, dict[str, Any]] = {}
    for name, tensor in load_file(str(adapter_dir / "adapter_model.safetensors")).items():
        module, part = _lora_part(name)
        target = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None or target not in shapes:
            raise ConfigError(f"the base model has no weight for the adapter's {module}")
        pairs.setdefault(target, {})[part] = tensor.astype(np.float32)
    writer = gguf.GGUFWriter(str(out), architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    writer.add_name(f"tierflow LoRA for {reader.fields['general.name'].contents()}")
    for target in sorted(pairs):
        a, b = pairs[target]["a"], pairs[target]["b"]
        inputs, outputs = shapes[target]
        if a.shape[1] != inputs or b.shape[0] != outputs or a.shape[0] != b.shape[1]:
            raise ConfigError(
                f"the adapter's {target} has shapes {a.shape} and {b.shape}; the base weight is "
                f"{inputs} × {outputs}",
                hint="Train the adapter on this base model.",
            )
        writer.add_tensor(f"{target}.lora_a", a)
        writer.add_tensor(f"{target}.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {
        "architecture": architecture,
        "tensors": 2 * len(pairs),
        "rank": int(config["r"]),
        "alpha": float(config["lora_alpha"]),
    }


def _lora_part(name: str) -> tuple[str, str]:
    """The module a peft tensor adapts, and which half of the LoRA pair it is (a or b)."""
    weight = name.removeprefix("base_model.model.")
    for suffix, part in ((".lora_A.weight", "a"), (".lora_B.weight", "b")):
        if weight.endswith(suffix):
            return weight.removesuffix(suffix), part
    raise ConfigError(f"the adapter holds {name}, not a LoRA weight", hint="Train a plain LoRA.")
