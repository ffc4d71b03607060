"""Pick and build the generation back end for a configuration.

    auto          an OpenAI-compatible server when --base-url (or $RA_OPENAI_BASE_URL) is set;
                  else transformers on a CUDA GPU; else llama.cpp on CPU when llama-cpp-python is
                  installed and the model is a GGUF without an adapter; else transformers.
    transformers  in-process PyTorch (any model, PEFT adapters, static-cache CUDA graphs on GPU)
    llama-cpp     in-process llama.cpp on a GGUF (the fast path on CPU)
    openai        any OpenAI-compatible chat-completions server (vLLM, TGI, llama.cpp server, Ollama)
"""

from __future__ import annotations

from pathlib import Path

from assistant.config import BACKENDS
from assistant.llm import llamacpp
from assistant.llm.generate import Generator, TextGenerator
from assistant.llm.models import load_llm
from index.errors import SettingError


def _cuda(device: str | None) -> bool:
    if device not in (None, "auto"):
        return device.startswith("cuda")
    import torch

    return torch.cuda.is_available()


def choose_backend(backend: str, *, model: str = "bundled", adapter: str | None = None,
                   device: str | None = None, base_url: str | None = None) -> str:
    """The back end `auto` stands for with these settings (other names are returned as they are)."""
    if backend not in BACKENDS:
        raise SettingError(f"--backend must be one of {', '.join(BACKENDS)} (got {backend})")
    if backend != "auto":
        return backend
    if base_url:
        return "openai"
    if _cuda(device):
        return "transformers"
    is_gguf = model == "bundled" or Path(model).suffix.lower() == ".gguf"
    if is_gguf and not adapter and llamacpp.available():
        return "llama-cpp"
    return "transformers"


def make_generator(backend: str = "auto", *, model: str = "bundled", adapter: str | None = None,
                   device: str | None = None, base_url: str | None = None, timeout: float = 60.0,
                   retries: int = 2, gguf_quant: str = "auto") -> TextGenerator:
    """Load the model (or connect to the server) for a back end."""
    name = choose_backend(backend, model=model, adapter=adapter, device=device, base_url=base_url)
    if name == "openai":
        from assistant.llm.generate import GenerationError
        from assistant.llm.openai_backend import OpenAIGenerator

        if not base_url:
            raise GenerationError("--backend openai needs --base-url (or $RA_OPENAI_BASE_URL), "
                                  "such as http://localhost:8000/v1")
        if adapter:
            raise GenerationError("--adapter cannot be applied to a remote server: serve the adapter there "
                                  "(vLLM: --enable-lora --lora-modules NAME=DIR) and pass --model NAME")
        return OpenAIGenerator(base_url, model, timeout=timeout, retries=retries)
    if name == "llama-cpp":
        return llamacpp.LlamaCppGenerator(model, adapter=adapter, quant=gguf_quant,
                                          gpu_layers=-1 if device and device.startswith("cuda") else 0)
    return Generator(load_llm(model, device=device, adapter=adapter))
