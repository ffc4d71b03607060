"""The Assistant: question -> retrieved passages -> grounded, cited, streamed answer.

    from assistant import Assistant, AssistantConfig
    bot = Assistant(AssistantConfig(domain="bank"))
    print(bot.respond("How much is an international wire?").answer)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property

from assistant.cite import attribute
from assistant.config import AssistantConfig
from assistant.generate import GenerationSettings, GenerationStats, Generator
from assistant.models import BUNDLED_LLM_NAME, LoadedModel, load_llm, resolve_llm_dir
from assistant.packs import DomainPack, load_pack
from assistant.prompt import build_messages
from index.embed import Embedder, resolve_embedder
from index.search import Hit, Searcher
from index.store import BuildReport, IndexError_, IndexStore, build_index


@dataclass
class Source:
    n: int
    source: str
    title: str
    text: str
    score: float
    page: int | None = None
    chunk_id: str = ""
    cited: bool = False


@dataclass
class Response:
    """One answer, complete when `done`; while streaming, `answer` grows."""

    answer: str
    sources: list[Source] = field(default_factory=list)
    intent: str | None = None
    action: str | None = None
    confidence: float | None = None
    ticket: str | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    done: bool = False
    grounded: bool = False  # True when the answer was generated from retrieved passages
    model: str = ""
    stats: dict[str, float] = field(default_factory=dict)  # prompt_tokens, new_tokens, decode_ms

    def to_dict(self) -> dict:
        data = asdict(self)
        data["sources"] = [
            {k: s[k] for k in ("source", "title", "text", "score", "page", "n", "cited", "chunk_id")}
            for s in data["sources"]
        ]
        return data


def ensure_index(pack: DomainPack, embedder: Embedder, index_dir, *, progress: bool = False) -> BuildReport | None:
    """Build the pack's index when missing or when the pack's documents changed (only changed files re-embed)."""
    fingerprint = pack.docs_fingerprint()
    if IndexStore.exists(index_dir):
        try:
            store = IndexStore.open(index_dir)
        except IndexError_:  # damaged, or written by an older version: rebuild below
            store = None
        if store is not None:
            current = (store.manifest.extra.get("pack_fingerprint") == fingerprint
                       and store.manifest.embedder == embedder.name)
            store.close()
            if current:
                return None
    return build_index([str(pack.docs_dir)], index_dir, embedder, progress=progress,
                       extra={"pack": pack.name, "pack_fingerprint": fingerprint})


class Assistant:
    """Loads the pack, its index and the models once; answers many questions, from many threads."""

    def __init__(self, config: AssistantConfig | None = None, *, generator: Generator | None = None,
                 embedder: Embedder | None = None, progress: bool = False):
        """`generator` and `embedder` let several assistants (one per domain) share loaded models."""
        self.config = config or AssistantConfig()
        if generator is not None:
            self.__dict__["generator"] = generator
        self.pack: DomainPack = load_pack(self.config.domain)
        resolve_llm_dir(self.config.model, convert=False)  # a bad model spec fails now, not at the first answer
        self.embedder = embedder or resolve_embedder(self.config.embedder, device=self.config.device)
        self.index_report = ensure_index(self.pack, self.embedder, self.config.index_dir, progress=progress)
        self.searcher = Searcher(IndexStore.open(self.config.index_dir, embedder=self.embedder.name), self.embedder)
        self.embedder.encode(["warm-up"])  # load now, so a question's latency is its own work

    @cached_property
    def generator(self) -> Generator:
        llm: LoadedModel = load_llm(self.config.model, device=self.config.device, adapter=self.config.adapter)
        return Generator(llm)

    def retrieval_query(self, message: str, history: list[tuple[str, str]]) -> str:
        """A short follow-up ("and for international?") is searched together with the previous question."""
        if history and len(message.split()) < 6:
            return f"{history[-1][0]} {message}"
        return message

    def stream(self, message: str, history: list[tuple[str, str]] | None = None, **overrides) -> Iterator[Response]:
        """Yield partial Responses while the answer is generated; the last one has done=True.

        `overrides` change settings for this call only (top_k, min_score, max_new_tokens, temperature).
        """
        config = replace(self.config, **overrides) if overrides else self.config
        history = history or []
        generator = self.generator  # the first call loads the LLM: outside the per-question timings
        started = time.perf_counter()
        message = message.strip()
        if not message:
            raise ValueError("the message is empty: ask a question")
        hits: list[Hit] = self.searcher.search(self.retrieval_query(message, history), k=config.top_k,
                                               min_score=config.min_score, mode=config.search_mode)
        retrieval_ms = (time.perf_counter() - started) * 1000
        sources = [Source(n=i, source=h.source, title=h.title, text=h.text, score=h.score, page=h.page,
                          chunk_id=h.chunk_id) for i, h in enumerate(hits, start=1)]
        if not hits:
            yield Response(answer=self.pack.reply("no_answer"), latency_ms={
                "retrieval": round(retrieval_ms, 1), "total": round((time.perf_counter() - started) * 1000, 1)},
                done=True, grounded=False, model=self.llm_name)
            return
        settings = GenerationSettings(max_new_tokens=config.max_new_tokens, temperature=config.temperature)
        messages = build_messages(self.pack.system_prompt, message, hits, history)
        stats = GenerationStats()
        text = ""
        for piece in generator.stream(messages, settings, stats):
            text += piece
            yield Response(answer=text, sources=sources, model=self.llm_name)
        answer, cited = attribute(text, [h.text for h in hits])
        for source in sources:
            source.cited = source.n in cited
        total_ms = (time.perf_counter() - started) * 1000
        yield Response(
            answer=answer or self.pack.reply("no_answer"), sources=sources, done=True, grounded=bool(answer),
            model=self.llm_name,
            latency_ms={"retrieval": round(retrieval_ms, 1), "generation": round(stats.total_ms, 1),
                        "ttft": round(stats.ttft_ms + retrieval_ms, 1), "total": round(total_ms, 1)},
            stats={"prompt_tokens": stats.prompt_tokens, "new_tokens": stats.new_tokens,
                   "decode_ms": round(stats.total_ms - stats.ttft_ms, 1)},
        )

    def respond(self, message: str, history: list[tuple[str, str]] | None = None, **overrides) -> Response:
        *_, final = self.stream(message, history, **overrides)
        return final

    @property
    def llm_name(self) -> str:
        name = BUNDLED_LLM_NAME if self.config.model == "bundled" else self.config.model
        return f"{name}+{self.config.adapter}" if self.config.adapter else name
