"""Streaming text generation: the interface every back end implements, and the transformers back end.

A back end turns chat messages into a stream of text pieces and fills in a GenerationStats. Back ends:
`transformers` (here), `llama-cpp` (assistant/llm/llamacpp.py) and `openai` (assistant/llm/openai_backend.py);
assistant/llm/backends.py picks one from the settings.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from assistant.llm.models import LoadedModel
from index.errors import SettingError, UserError


class GenerationError(UserError, ValueError):
    """A back end could not produce an answer (unreachable server, prompt too long, ...); the message says why."""


@dataclass
class GenerationSettings:
    max_new_tokens: int = 160
    temperature: float = 0.0  # 0 = greedy: reproducible answers for audits and tests
    top_p: float = 0.9
    repetition_penalty: float = 1.0  # >1 punishes copying figures from the passages
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= 4096:
            raise SettingError(f"--max-new-tokens must be between 1 and 4096 (got {self.max_new_tokens})")
        if not 0.0 <= self.temperature <= 2.0:
            raise SettingError(f"--temperature must be between 0 and 2 (got {self.temperature})")
        self.stop = tuple(s for s in self.stop if s)


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    ttft_ms: float = 0.0  # from the call to the first text piece (prompt processing included)
    total_ms: float = 0.0
    finish_reason: str = ""  # stop (end of turn or a stop string), length (max tokens) or cancelled

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: tokens after the first over the time after the first."""
        decode_s = (self.total_ms - self.ttft_ms) / 1000
        return (self.new_tokens - 1) / decode_s if self.new_tokens > 1 and decode_s > 0 else 0.0


class TextGenerator(Protocol):
    """What the assistant needs from a back end."""

    backend: str  # transformers, llama-cpp or openai
    model_id: str  # shown in answers and written to the audit log

    def stream(self, messages: list[dict], settings: GenerationSettings,
               stats: GenerationStats | None = None) -> Iterator[str]:
        """Yield the answer's text pieces as they are produced; fill `stats` when done."""
        ...


class StopTrimmer:
    """Cuts a text stream before the first stop string, holding back only a possible stop prefix."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return piece
        self.pending += piece
        cuts = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.stopped = True
            out, self.pending = self.pending[:min(cuts)], ""
            return out
        hold = 0  # the longest tail of the text that could still grow into a stop string
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        out = self.pending[:len(self.pending) - hold]
        self.pending = self.pending[len(out):]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def stream_tokens(token_ids: Iterator[int], is_end: Callable[[int], bool], text_of: Callable[[int], str],
                  rest: Callable[[], str], settings: GenerationSettings, stats: GenerationStats) -> Iterator[str]:
    """Text pieces from a stream of token ids, for back ends that decode token by token: ends at an end
    token or a stop string ("stop") or after max_new_tokens ("length"); "cancelled" when the consumer
    closes it first. `text_of` turns a token into the text it adds (possibly ""), `rest` flushes what
    is still held back; stats gets the counts and timings."""
    trimmer = StopTrimmer(settings.stop)
    started = time.perf_counter()
    finished = False
    try:
        stats.finish_reason = "length"
        for token in token_ids:
            if is_end(token):
                stats.finish_reason = "stop"
                break
            stats.new_tokens += 1
            piece = trimmer.feed(text_of(token))
            if piece:
                if not stats.ttft_ms:
                    stats.ttft_ms = (time.perf_counter() - started) * 1000
                yield piece
            if trimmer.stopped:
                stats.finish_reason = "stop"
                break
            if stats.new_tokens >= settings.max_new_tokens:
                break
        if tail := trimmer.feed(rest()) + trimmer.flush():
            yield tail
        finished = True
    finally:
        if not finished:
            stats.finish_reason = "cancelled"
        stats.total_ms = (time.perf_counter() - started) * 1000


class _TextSoFar:
    """Incremental text of a growing token list, holding back a character split across tokens."""

    def __init__(self, tokenizer):
        self.tokenizer, self.tokens, self.sent = tokenizer, [], ""

    def add(self, token: int) -> str:
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # wait for the rest of the character
            return ""
        piece, self.sent = text[len(self.sent):], text
        return piece

    def rest(self) -> str:
        return self.tokenizer.decode(self.tokens, skip_special_tokens=True)[len(self.sent):]


class Generator:
    """The `transformers` back end: chat-template prompting and token streaming over one loaded model.

    On CUDA it decodes with a static KV cache. Greedy answers (the default) go through our own loop
    with the one-token step compiled into a CUDA graph (assistant/llm/graph_decode.py); sampled ones
    through `generate` with the static cache, which transformers compiles too. On CPU it runs eagerly.
    """

    backend = "transformers"

    def __init__(self, llm: LoadedModel, max_prompt_tokens: int = 1536, *, static_cache: bool | None = None,
                 graph_decode: bool | None = None, max_cache_len: int = 2048):
        self.llm = llm
        self.max_prompt_tokens = max_prompt_tokens
        self.model_id = llm.model_id + (f"+{llm.adapter}" if llm.adapter else "")
        on_gpu = str(llm.device).startswith("cuda")
        self.static_cache = on_gpu if static_cache is None else static_cache
        self.graph_decode = self.static_cache if graph_decode is None else graph_decode
        self.max_cache_len = max_cache_len
        self._graph = None  # built on first use: compiling takes a while, once
        self._lock = threading.Lock()  # one generate() at a time on a shared model

    def prompt_ids(self, messages: list[dict]):
        tok = self.llm.tokenizer
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        input_ids = ids["input_ids"]
        if input_ids.shape[1] > self.max_prompt_tokens:
            raise GenerationError(
                f"prompt is {input_ids.shape[1]} tokens, over the {self.max_prompt_tokens}-token budget: "
                "lower top-k or the chunk size"
            )
        return input_ids

    def stream(self, messages: list[dict], settings: GenerationSettings,
               stats: GenerationStats | None = None) -> Iterator[str]:
        """Yield text pieces as the model produces them. Closing the iterator stops the generation."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stats = stats if stats is not None else GenerationStats()
        tok, model = self.llm.tokenizer, self.llm.model
        input_ids = self.prompt_ids(messages).to(self.llm.device)
        stats.prompt_tokens = int(input_ids.shape[1])
        if self.graph_decode and settings.temperature <= 0 and settings.repetition_penalty == 1.0:
            yield from self._stream_graph(input_ids, settings, stats)
            return
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=300)
        cancelled = threading.Event()

        class Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

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
            stopping_criteria=StoppingCriteriaList([Cancel()]),
        )
        if settings.stop:
            kwargs.update(stop_strings=list(settings.stop), tokenizer=tok)
        if self.static_cache:  # one cache size for every request, so the compiled graph is reused
            kwargs.update(cache_implementation="static",
                          max_cache_len=max(2048, stats.prompt_tokens + settings.max_new_tokens))
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

        trimmer = StopTrimmer(settings.stop)
        started = time.perf_counter()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        finished = exhausted = False
        try:
            for piece in streamer:
                piece = trimmer.feed(piece)
                if piece:
                    if not stats.ttft_ms:
                        stats.ttft_ms = (time.perf_counter() - started) * 1000
                    yield piece
                if trimmer.stopped:
                    break
            else:
                exhausted = True
            if tail := trimmer.flush():
                yield tail
            finished = True
        finally:
            if not finished:
                stats.finish_reason = "cancelled"
            if not exhausted:  # the consumer stopped reading, or a stop string ended it: free the model
                cancelled.set()
                deque(streamer, maxlen=0)  # drain, so generate() never blocks on a full queue
            thread.join()
        stats.total_ms = (time.perf_counter() - started) * 1000
        if "error" in result:
            raise result["error"]
        stats.new_tokens = int(result["output"].shape[1] - input_ids.shape[1])
        stats.finish_reason = ("stop" if trimmer.stopped or stats.new_tokens < settings.max_new_tokens
                               else "length")

    def _eos_ids(self) -> set[int]:
        ids = {self.llm.tokenizer.eos_token_id}
        configured = getattr(getattr(self.llm.model, "generation_config", None), "eos_token_id", None)
        ids |= set(configured) if isinstance(configured, list) else {configured}
        return {i for i in ids if i is not None}

    def _stream_graph(self, input_ids, settings: GenerationSettings, stats: GenerationStats) -> Iterator[str]:
        """Greedy decoding through GraphDecoder, text streamed as it forms; closing the stream stops it."""
        from assistant.llm.graph_decode import GraphDecoder

        if stats.prompt_tokens + settings.max_new_tokens > self.max_cache_len:
            raise GenerationError(
                f"prompt is {stats.prompt_tokens} tokens; with {settings.max_new_tokens} new tokens that is over "
                f"the {self.max_cache_len}-token cache: lower top-k, the chunk size or --max-new-tokens")
        eos = self._eos_ids()
        text = _TextSoFar(self.llm.tokenizer)
        with self._lock:
            if self._graph is None:
                self._graph = GraphDecoder(self.llm.model, self.max_cache_len)
            yield from stream_tokens(self._graph.tokens(input_ids, settings.max_new_tokens), eos.__contains__,
                                     text.add, text.rest, settings, stats)


TransformersGenerator = Generator
