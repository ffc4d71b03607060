"""Adapters out of the training run: merged into a full model, or exported as GGUF for llama.cpp/Ollama."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


class ExportError(RuntimeError):
    """The export cannot run; the message says what is missing."""


def _base_for(adapter: Path, model: str | None) -> str:
    if model:
        return model
    try:
        recorded = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{adapter} is not a PEFT adapter directory (adapter_config.json unreadable)") from exc
    if recorded and Path(recorded).is_dir():
        return recorded
    return "bundled" if not recorded else recorded


def merge_adapter(adapter: str | Path, out: str | Path, model: str | None = None) -> Path:
    """Write base model + adapter as one plain transformers model directory (float32 weights)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from assistant.models import ModelSpecError, resolve_llm_dir

    adapter, out = Path(adapter), Path(out)
    if not (adapter / "adapter_config.json").exists():
        raise ExportError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
    try:
        base_path, _ = resolve_llm_dir(_base_for(adapter, model))
    except ModelSpecError as exc:
        raise ExportError(f"base model: {exc}") from exc
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer_source = adapter if (adapter / "tokenizer_config.json").exists() else Path(base_path)
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def find_converter() -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py: $LLAMA_CPP_DIR, or on PATH."""
    candidates = []
    if os.environ.get("LLAMA_CPP_DIR"):
        candidates.append(Path(os.environ["LLAMA_CPP_DIR"]) / "convert_hf_to_gguf.py")
    for name in ("convert_hf_to_gguf.py", "convert_hf_to_gguf", "convert-hf-to-gguf.py"):
        found = shutil.which(name)
        if found:
            candidates.append(Path(found))
    return next((c for c in candidates if c.is_file()), None)


def export_gguf(adapter: str | Path, out: str | Path, model: str | None = None, outtype: str = "f16") -> Path:
    """Merge, then convert with llama.cpp's converter to a single .gguf file."""
    converter = find_converter()
    if converter is None:
        raise ExportError("export-gguf needs llama.cpp's convert_hf_to_gguf.py: check out llama.cpp and set "
                          "LLAMA_CPP_DIR to it (the script needs the `gguf` package, installed here), or run "
                          "`python -m finetune merge` and convert the merged model yourself")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="ra-merge-") as tmp:
        merged = merge_adapter(adapter, Path(tmp) / "merged", model)
        result = subprocess.run([sys.executable, str(converter), str(merged), "--outfile", str(out),
                                 "--outtype", outtype], capture_output=True, text=True)
    if result.returncode != 0 or not out.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise ExportError("the GGUF converter failed:\n" + "\n".join(tail))
    return out
