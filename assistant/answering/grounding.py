"""The grounding check run on every generated answer, and the answer confidence.

Support of one answer sentence: its best match among the sentences of the passages it cites (all
passages when it cites none), mixing embedding cosine and the share of its content words found
there; a figure (amount, time, phone number, percentage) absent from those passages cuts it hard,
since a wrong number is the costliest mistake here. The answer's support is its weakest sentence.
An answer with such a figure is never shown unflagged: at least a caveat, whatever the other signals.

Coverage: the share of the question's content words that the passages contain at all. It is
computed and logged, but the fit below gave it no weight.

Confidence in [0, 1] is a weighted mean of intent confidence, retrieval strength, coverage and
support. The weights and the two thresholds (refuse below, caveat below) were fitted by grid search
on the bank pack's evaluation answers (answerable, unanswerable, document removed) under the rule
"at most 5 % of answerable answers refused", and checked on the hospital pack's, which they were not
fitted on (`python -m assistant eval --dump`, README).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np

from assistant.answering.cite import _MARKER
from assistant.answering.cite import sentences as split_sentences
from index.bm25 import tokenize
from index.embed import Embedder

_FIGURE = re.compile(r"\$?\d[\d,.:/-]*\s*(?:%|a\.m\.|p\.m\.|am|pm)?", re.IGNORECASE)


@dataclass
class GroundingWeights:
    intent: float = 0.10
    retrieval: float = 0.50
    coverage: float = 0.0
    support: float = 0.15
    refuse_below: float = 0.30
    caveat_below: float = 0.675
    figure_caveat: bool = True  # a figure the cited passages do not hold always earns at least a caveat


@dataclass
class Grounding:
    support: float
    coverage: float
    retrieval: float
    confidence: float
    sentences: list[tuple[str, float]] = field(default_factory=list)
    ms: float = 0.0
    verdict: str = "ok"  # ok | caveat | refuse
    unsupported_figures: list[str] = field(default_factory=list)  # figures in the answer, absent from its passages


def _figures(text: str) -> set[str]:
    return {re.sub(r"[\s,]", "", m.group(0)).rstrip(".:-/").lower() for m in _FIGURE.finditer(text)
            if any(ch.isdigit() for ch in m.group(0))}


def coverage(question: str, passages: list[str]) -> float:
    """Share of the question's content words (stemmed) found in the passages."""
    words = set(tokenize(question))
    if not words:
        return 1.0
    present = set()
    for p in passages:
        present |= set(tokenize(p))
    return len(words & present) / len(words)


def retrieval_strength(top_cosine: float) -> float:
    """Map the best passage's cosine to [0, 1]: 0.30 (the relevance floor) -> 0, 0.70 -> 1."""
    return float(np.clip((top_cosine - 0.30) / 0.40, 0.0, 1.0))


class GroundingChecker:
    def __init__(self, embedder: Embedder, weights: GroundingWeights | None = None):
        self.embedder = embedder
        self.weights = weights or GroundingWeights()

    def support(self, answer: str, passages: list[str], missing_figures: list[str] | None = None
                ) -> list[tuple[str, float]]:
        """(sentence, support in [0, 1]) for each answer sentence, against the passages it cites.

        Figures absent from a sentence's passages are appended to `missing_figures` when it is given."""
        raw = [s for s in split_sentences(answer) if re.search(r"\w", _MARKER.sub("", s))]
        cited = {i: {int(n) - 1 for n in _MARKER.findall(s) if 1 <= int(n) <= len(passages)}
                 for i, s in enumerate(raw)}
        sentences = [_MARKER.sub("", s).strip() for s in raw]
        if not sentences or not passages:
            return [(s, 0.0) for s in sentences]
        passage_sents = [[s for s in split_sentences(p) if s.strip()] or [p] for p in passages]
        flat = [s for group in passage_sents for s in group]
        owner = [i for i, group in enumerate(passage_sents) for _ in group]
        vectors = self.embedder.encode(sentences + flat)
        a_vec, p_vec = vectors[: len(sentences)], vectors[len(sentences):]
        sims = a_vec @ p_vec.T
        out = []
        for i, sentence in enumerate(sentences):
            allowed = cited.get(i) or set(range(len(passages)))
            cols = [j for j, o in enumerate(owner) if o in allowed]
            words = set(tokenize(sentence))
            best = 0.0
            for j in cols:
                lexical = len(words & set(tokenize(flat[j]))) / len(words) if words else 0.0
                best = max(best, 0.5 * float(sims[i, j]) + 0.5 * lexical)
            context = " ".join(passages[k] for k in allowed)
            missing = _figures(sentence) - _figures(context)
            if missing:
                best *= 0.3
                if missing_figures is not None:
                    missing_figures.extend(sorted(missing))
            out.append((sentence, float(np.clip(best, 0.0, 1.0))))
        return out

    def check(self, question: str, answer: str, passages: list[str], top_cosine: float,
              intent_confidence: float | None) -> Grounding:
        started = time.perf_counter()
        missing: list[str] = []
        sentences = self.support(answer, passages, missing)
        support = min((s for _, s in sentences), default=0.0)
        cov = coverage(question, passages)
        retrieval = retrieval_strength(top_cosine)
        w = self.weights
        intent = 1.0 if intent_confidence is None else intent_confidence
        confidence = (w.intent * intent + w.retrieval * retrieval + w.coverage * cov + w.support * support) / (
            w.intent + w.retrieval + w.coverage + w.support)
        verdict = "refuse" if confidence < w.refuse_below else "caveat" if confidence < w.caveat_below else "ok"
        if verdict == "ok" and missing and w.figure_caveat:  # a number the passages do not hold: never unflagged
            verdict = "caveat"
            confidence = min(confidence, w.caveat_below - 0.005)
        return Grounding(support=round(support, 3), coverage=round(cov, 3), retrieval=round(retrieval, 3),
                         confidence=round(float(confidence), 3), sentences=sentences,
                         ms=round((time.perf_counter() - started) * 1000, 1), verdict=verdict,
                         unsupported_figures=missing)
