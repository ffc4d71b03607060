"""Retrieval evaluation: Recall@5, MRR@10 and nDCG@10 per search mode, at the document level.

Questions come as JSONL `{"question", "relevant": [source file names]}` (the format of
../shared/data/medquad_dev/questions.jsonl). Chunk hits are collapsed to their documents, a
document ranking where it first appears, so several passages of one document count once.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from index.errors import UserError
from index.search import Searcher

DEPTH = 30  # chunk hits fetched per question; enough for ten distinct documents in practice



class QuestionsError(UserError, ValueError):
    """A questions file that cannot be used; the message names the line."""


def read_jsonl(path: str | Path, what: str = "file"):
    """(line number, record) for each non-blank line; a QuestionsError names the line that is not JSON."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise QuestionsError(f"cannot read {what} {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise QuestionsError(f"{path}, line {number}: invalid JSON ({exc.msg})") from exc


def load_questions(path: str | Path) -> list[dict]:
    questions = []
    for number, record in read_jsonl(path, "questions file"):
        text = record.get("question") or record.get("text") if isinstance(record, dict) else None
        relevant = record.get("relevant") if isinstance(record, dict) else None
        if not isinstance(text, str) or not isinstance(relevant, list) or not relevant:
            raise QuestionsError(f"{path}, line {number}: needs \"question\" and a non-empty \"relevant\" list")
        questions.append({"question": text, "relevant": [str(r) for r in relevant]})
    if not questions:
        raise QuestionsError(f"{path} holds no questions")
    return questions


def doc_metrics(ranked_sources: list[str], relevant: set[str]) -> dict[str, float]:
    """Recall@5, MRR@10, nDCG@10 of one ranking (sources best first, duplicates collapsed)."""
    docs: list[str] = []
    for source in ranked_sources:
        name = Path(source).name if source not in relevant else source
        if name not in docs:
            docs.append(name)
    docs = docs[:10]
    hits = [d in relevant for d in docs]
    recall5 = sum(hits[:5]) / len(relevant)
    mrr = next((1 / (i + 1) for i, h in enumerate(hits) if h), 0.0)
    dcg = sum(1 / math.log2(i + 2) for i, h in enumerate(hits) if h)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
    return {"recall@5": recall5, "mrr@10": mrr, "ndcg@10": dcg / idcg}


@dataclass
class ModeResult:
    mode: str
    n: int
    metrics: dict[str, float]
    seconds: float
    per_question: list[dict[str, float]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "questions": self.n, **{k: round(v, 4) for k, v in self.metrics.items()},
                "queries_per_s": round(self.n / self.seconds, 1) if self.seconds else None}


def evaluate(searcher: Searcher, questions: list[dict], modes: list[str], batch: int = 256) -> list[ModeResult]:
    results = []
    for mode in modes:
        rerank = mode.endswith("+rerank")
        base = mode.removesuffix("+rerank")
        started = time.perf_counter()
        per_q = []
        for start in range(0, len(questions), batch):
            part = questions[start:start + batch]
            hits = searcher.search_many([q["question"] for q in part], k=DEPTH, mode=base, rerank=rerank)
            per_q += [doc_metrics([h.source for h in hs], set(q["relevant"])) for q, hs in zip(part, hits, strict=True)]
        seconds = time.perf_counter() - started
        mean = {k: sum(m[k] for m in per_q) / len(per_q) for k in per_q[0]}
        results.append(ModeResult(mode, len(per_q), mean, seconds, per_q))
    return results


def format_table(results: list[ModeResult]) -> str:
    lines = [f"{'mode':<16}{'Recall@5':>10}{'MRR@10':>10}{'nDCG@10':>10}{'q/s':>8}"]
    for r in results:
        m = r.metrics
        lines.append(f"{r.mode:<16}{m['recall@5']:>10.4f}{m['mrr@10']:>10.4f}{m['ndcg@10']:>10.4f}"
                     f"{r.n / r.seconds if r.seconds else 0:>8.1f}")
    return "\n".join(lines)
