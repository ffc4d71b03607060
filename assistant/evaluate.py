"""Measure a domain pack end to end on its own question sets (`python -m assistant eval`, `make eval`).

Answerable questions (eval/questions.jsonl) check retrieval, citations and answers against the expected
facts; unanswerable ones (eval/unanswerable.jsonl) check how often the assistant declines.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from assistant.pipeline import Assistant


@dataclass
class EvalReport:
    domain: str
    questions: int
    retrieved_source: float  # the expected document is among the passages given to the model
    cited_fact: float  # a cited passage contains the expected fact
    answer_has_fact: float  # the answer text itself states the expected fact
    unanswerable: int
    declined_unanswerable: float  # the fixed no-information reply instead of a generated answer
    latency_p50_ms: float
    latency_p95_ms: float
    ttft_p50_ms: float
    decode_tokens_per_s: float
    seconds: float

    def table(self) -> str:
        rows = [
            ("answerable questions", f"{self.questions}"),
            ("expected document retrieved (top-k)", f"{self.retrieved_source:.0%}"),
            ("a cited passage holds the fact", f"{self.cited_fact:.0%}"),
            ("the answer states the fact", f"{self.answer_has_fact:.0%}"),
            ("unanswerable questions declined", f"{self.declined_unanswerable:.0%} of {self.unanswerable}"),
            ("latency p50 / p95", f"{self.latency_p50_ms / 1000:.1f} s / {self.latency_p95_ms / 1000:.1f} s"),
            ("time to first token p50", f"{self.ttft_p50_ms / 1000:.2f} s"),
            ("decode speed", f"{self.decode_tokens_per_s:.1f} tokens/s"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

    def to_dict(self) -> dict:
        return asdict(self)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def _read_jsonl(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate(bot: Assistant, limit: int | None = None, progress: bool = True) -> EvalReport:
    started = time.time()
    answerable = _read_jsonl(bot.pack.root / "eval" / "questions.jsonl")[:limit]
    unanswerable = _read_jsonl(bot.pack.root / "eval" / "unanswerable.jsonl")[:limit]
    retrieved = cited = stated = declined = 0
    latencies, ttfts = [], []
    tokens = decode_seconds = 0.0
    for q in tqdm(answerable, desc=f"{bot.pack.name} answerable", disable=not progress):
        response = bot.respond(q["question"])
        facts = [f.lower() for f in q["expected"]]
        retrieved += any(s.source == q["source"] for s in response.sources)
        cited += any(s.cited and any(f in s.text.lower() for f in facts) for s in response.sources)
        stated += any(f in response.answer.lower() for f in facts)
        latencies.append(response.latency_ms["total"])
        if "ttft" in response.latency_ms:
            ttfts.append(response.latency_ms["ttft"])
            tokens += response.stats["new_tokens"]
            decode_seconds += response.stats["decode_ms"] / 1000
    for q in tqdm(unanswerable, desc=f"{bot.pack.name} unanswerable", disable=not progress):
        declined += not bot.respond(q["question"]).grounded
    n = max(len(answerable), 1)
    return EvalReport(
        domain=bot.pack.name, questions=len(answerable), retrieved_source=retrieved / n, cited_fact=cited / n,
        answer_has_fact=stated / n, unanswerable=len(unanswerable),
        declined_unanswerable=declined / max(len(unanswerable), 1),
        latency_p50_ms=_percentile(latencies, 50), latency_p95_ms=_percentile(latencies, 95),
        ttft_p50_ms=_percentile(ttfts, 50),
        decode_tokens_per_s=tokens / decode_seconds if decode_seconds else 0.0, seconds=time.time() - started,
    )
