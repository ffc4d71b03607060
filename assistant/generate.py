"""Streaming text generation with a transformers causal LM."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from assistant.models import LoadedModel


@dataclass
class GenerationSettings:
    max_new_tokens: int = 160
    temperature: float = 0.0  # 0 = greedy: reproducible answers for audits and tests
    top_p: float = 0.9
    repetition_penalty: float = 1.0  # >1 punishes copying figures from the passages

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= 4096:
            raise ValueError(f"--max-new-tokens must be between 1 and 4096 (got {self.max_new_tokens})")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"--temperature must be between 0 and 2 (got {self.temperature})")


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    ttft_ms: float = 0.0
    total_ms: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        decode_s = (self.total_ms - self.ttft_ms) / 1000
        return (self.new_tokens - 1) / decode_s if self.new_tokens > 1 and decode_s > 0 else 0.0


class Generator:
    """Chat-template prompting and token streaming over one loaded model."""

    def __init__(self, llm: LoadedModel, max_prompt_tokens: int = 1536):
        self.llm = llm
        self.max_prompt_tokens = max_prompt_tokens
        self._lock = threading.Lock()  # one generate() at a time on a shared model

    def prompt_ids(self, messages: list[dict]):
        tok = self.llm.tokenizer
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        input_ids = ids["input_ids"]
        if input_ids.shape[1] > self.max_prompt_tokens:
            raise ValueError(
                f"prompt is {input_ids.shape[1]} tokens, over the {self.max_prompt_tokens}-token budget: "
                "lower top-k or the chunk size"
            )
        return input_ids

    def stream(self, messages: list[dict], settings: GenerationSettings,
               stats: GenerationStats | None = None) -> Iterator[str]:
        """Yield text pieces as the model produces them."""
        import torch
        from transformers import TextIteratorStreamer

        stats = stats if stats is not None else GenerationStats()
        tok, model = self.llm.tokenizer, self.llm.model
        input_ids = self.prompt_ids(messages).to(self.llm.device)
        stats.prompt_tokens = int(input_ids.shape[1])
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=300)
        sample = settings.temperature > 0
        kwargs = dict(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=settings.max_new_tokens,
            do_sample=sample,
            repetition_penalty=settings.repetition_penalty,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            streamer=streamer,
        )
        if sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
        result: dict = {}

        def run() -> None:
            try:
                with self._lock, torch.inference_mode():
                    result["output"] = model.generate(**kwargs)
            except Exception as exc:  # surfaced in the caller's thread below
                result["error"] = exc
                streamer.end()

        started = time.perf_counter()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        first = True
        for piece in streamer:
            if first and piece:
                stats.ttft_ms = (time.perf_counter() - started) * 1000
                first = False
            if piece:
                yield piece
        thread.join()
        stats.total_ms = (time.perf_counter() - started) * 1000
        if "error" in result:
            raise result["error"]
        stats.new_tokens = int(result["output"].shape[1] - input_ids.shape[1])
