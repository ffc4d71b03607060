"""Adapters out of the training run: merged into a full model, or exported as GGUF for llama.cpp/Ollama."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from index.errors import UserError


class ExportError(UserError, RuntimeError):
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

    from assistant.llm.models import ModelSpecError, resolve_llm_dir

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


CONVERTER_DIR = "llama.cpp-convert"  # in the venv: what `make gguf-converter` unpacks


def find_converter() -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py: in $LLAMA_CPP_DIR when that is set (and only there); else the
    copy `make gguf-converter` puts in this Python environment, or one on PATH."""
    if os.environ.get("LLAMA_CPP_DIR"):
        path = Path(os.environ["LLAMA_CPP_DIR"]) / "convert_hf_to_gguf.py"
        return path if path.is_file() else None
    candidates = [Path(sys.prefix) / CONVERTER_DIR / "convert_hf_to_gguf.py"]
    for name in ("convert_hf_to_gguf.py", "convert_hf_to_gguf", "convert-hf-to-gguf.py"):
        found = shutil.which(name)
        if found:
            candidates.append(Path(found))
    return next((c for c in candidates if c.is_file()), None)


def export_gguf(adapter: str | Path, out: str | Path, model: str | None = None, outtype: str = "f16") -> Path:
    """Merge, then convert with llama.cpp's converter to a single .gguf file."""
    import importlib.util

    converter = find_converter()
    if converter is None:
        where = (f"LLAMA_CPP_DIR={os.environ['LLAMA_CPP_DIR']} has no convert_hf_to_gguf.py"
                 if os.environ.get("LLAMA_CPP_DIR") else "it is not installed")
        raise ExportError(f"export-gguf needs llama.cpp's convert_hf_to_gguf.py and {where}: run `make "
                          "gguf-converter` (it takes the script from the llama-cpp-python source package on "
                          "PyPI), or set LLAMA_CPP_DIR to a llama.cpp checkout, or run `python -m finetune "
                          "merge` and convert the merged model yourself")
    if importlib.util.find_spec("sentencepiece") is None:
        raise ExportError("llama.cpp's converter needs sentencepiece: pip install sentencepiece "
                          "(`make gguf-converter` installs it)")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="ra-merge-") as tmp:
        merged = merge_adapter(adapter, Path(tmp) / "merged", model)
        result = subprocess.run([sys.executable, str(converter), str(merged), "--outfile", str(out),
                                 "--outtype", outtype], capture_output=True, text=True)
    if result.returncode != 0 or not out.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise ExportError("the GGUF converter failed:\n" + "\n".join(tail))
    return out
