"""Sentence-by-sentence verification of a generated answer against its evidence.

A generated sentence is kept ("verified") only when
- every figure in it (amount, percentage, time, day count, phone number) is copied from the evidence,
  and said of what the evidence says it of (the words before it occur near it in an evidence sentence,
  and it keeps the qualifier that tells it from another figure: "incoming" in "incoming wire: $20");
- its content words are there: most of them occur in the evidence or the question (stemmed);
- its meaning is close to one evidence sentence (embedding cosine), and
- it does not negate what that sentence says, or affirm what it negates.
Anything else is removed with the reason, never shown with a caveat. Sentences with no content of
their own ("I hope this helps!") are dropped as filler. A verified sentence that only restates one
evidence sentence is marked "restated": the quote below the answer shows that sentence already.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from assistant.answering.cite import _MARKER
from assistant.answering.cite import sentences as split_sentences
from assistant.answering.grounding import _figures
from index.bm25 import tokenize
from index.embed import Embedder

_NEGATION = re.compile(r"\b(?:not|no|never|cannot|can't|won't|don't|doesn't|isn't|aren't|without|unable|"
                       r"none|nothing)\b", re.I)
_FILLER = re.compile(r"^(?:i hope|hope this|let me know|feel free|is there anything|glad to|happy to|"
                     r"thank you|thanks)\b", re.I)


@dataclass
class VerifyThresholds:
    words: float = 0.75  # share of content words found in the evidence or the question
    cosine: float = 0.55  # closeness to the best evidence sentence
    echo: float = 0.8  # share of content words taken from the question above which a sentence only repeats it
    restate: float = 0.8  # share of an evidence sentence's content words (and all of the sentence's) = a restatement


@dataclass
class SentenceCheck:
    text: str
    status: str  # verified | restated (verified, but the quote says the same) | removed | quoted
    reason: str = ""
    cites: tuple[int, ...] = ()
    support: float = 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["cites"] = list(self.cites)
        data["support"] = round(self.support, 3)
        return data


_TOKEN = re.compile(r"\$?\d[\d,.:/-]*\s*(?:%|a\.m\.|p\.m\.|am\b|pm\b)?|[A-Za-z][A-Za-z'-]*", re.I)


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value) per token: ("fig", normalised figure) or ("word", stem) for content words only."""
    out = []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if any(ch.isdigit() for ch in token):
            out += [("fig", f) for f in _figures(token)]
        else:
            out += [("word", w) for w in tokenize(token)]
    return out


def strip_labels(text: str, labels: list[str]) -> str:
    """`text` without the "Section › Heading:" labels of the facts list that a model copies in front of a
    sentence ("Wire Transfers › Fees: An incoming wire costs $15." → "An incoming wire costs $15.")."""
    for label in sorted({lab.strip() for lab in labels if lab and lab.strip()}, key=len, reverse=True):
        text = re.sub(rf"(^|(?<=[.!?]\s)|(?<=\n))\s*{re.escape(label)}\s*:\s*", r"\1", text)
    return text


def restates(sentence: str, evidence_sentence: str, share: float = 0.8) -> bool:
    """True when `sentence` says nothing beyond `evidence_sentence`: all of its content words and figures are
    in it, and it carries at least `share` of the evidence sentence's content words."""
    mine = set(_tokens(sentence))
    theirs = set(_tokens(evidence_sentence))
    return bool(mine) and mine <= theirs and len(mine) >= share * len(theirs)


def misplaced_figures(sentence: str, evidence: list[str], question: str = "", before: int = 3,
                      window: int = 8) -> list[str]:
    """Figures the sentence attaches to words the evidence does not put near them.

    "An international wire costs $30" is refused when the evidence says "a domestic wire costs $30 and an
    international wire costs $45", and "Sunday 9:00 a.m." when it says "Saturday 9:00 a.m. to 1:00 p.m.,
    closed Sunday": a content word just before a figure in the sentence (up to `before`, back to the
    previous figure) that the evidence uses, but never within `window` words before that figure or the
    word after it, marks the figure as misplaced. Words the evidence does not use at all ("direct deposit"
    beside "Our routing number is 021555013") are left to the other checks."""
    near: dict[str, set[str]] = {}
    present: set[str] = set()
    for text in evidence:
        tokens = _tokens(text)
        present |= {v for k, v in tokens if k == "word"}
        for i, (kind, value) in enumerate(tokens):
            if kind != "fig":
                continue
            words = set()
            for k, v in reversed(tokens[max(0, i - window): i]):
                if k == "word":
                    words.add(v)
            if i + 1 < len(tokens) and tokens[i + 1][0] == "word":
                words.add(tokens[i + 1][1])
            near.setdefault(value, set()).update(words)
    bad = []
    tokens = _tokens(sentence)
    for i, (kind, value) in enumerate(tokens):
        if kind != "fig" or value not in near:
            continue
        lead: list[str] = []
        for k, v in reversed(tokens[:i]):
            if k == "fig" or len(lead) == before:
                break
            lead.append(v)
        if any(w in present and w not in near[value] for w in lead):
            bad.append(value)
    return bad


def _labels(tokens: list[tuple[str, str]], before: int) -> list[tuple[str, set[str]]]:
    """(figure, the content words just before it, back to the previous figure) for each figure."""
    out = []
    for i, (kind, value) in enumerate(tokens):
        if kind != "fig":
            continue
        lead: set[str] = set()
        for k, v in reversed(tokens[:i]):
            if k == "fig" or len(lead) == before:
                break
            lead.add(v)
        out.append((value, lead))
    return out


def dropped_qualifiers(sentence: str, evidence: list[str], question: str = "", before: int = 3) -> list[str]:
    """Figures whose evidence label the sentence shortens to one that fits another figure as well.

    The evidence "Incoming international wire: $20. Outgoing international wire: $45." does not support
    "An international wire costs $20.": the sentence drops "incoming", and what it keeps ("international
    wire") labels $45 too. A qualifier the question already names ("how much is an incoming wire") counts
    as said; "It costs $20" is read with the question's words. Shortened labels that fit no other figure ("Expedited delivery costs $25") pass."""
    labels = [lab for text in evidence for lab in _labels(_tokens(text), before)]
    said = {v for k, v in _tokens(sentence + " " + question) if k == "word"}
    asked = {v for k, v in _tokens(question) if k == "word"}
    bad = []
    for value, lead in _labels(_tokens(sentence), before):
        own = [words for fig, words in labels if fig == value]
        if not own:
            continue
        kept_words = [words & (lead | asked) for words in own]  # what a reader takes the figure to be of
        if all(not (words - said) for words in own):
            continue  # some evidence label of this figure is fully said
        ambiguous = any(kept and any(kept <= words for fig, words in labels if fig != value)
                        for kept in kept_words)
        if ambiguous:
            bad.append(value)
    return bad


class Verifier:
    def __init__(self, embedder: Embedder, thresholds: VerifyThresholds | None = None):
        self.embedder = embedder
        self.thresholds = thresholds or VerifyThresholds()

    def check(self, answer: str, question: str, evidence: list[tuple[int, str]]) -> list[SentenceCheck]:
        """Each sentence of `answer` checked against `evidence` ((passage number, sentence) pairs)."""
        raw = [s for s in split_sentences(answer) if re.search(r"\w", _MARKER.sub("", s))]
        if not raw:
            return []
        texts = [t for _, t in evidence]
        if not texts:
            return [SentenceCheck(_MARKER.sub("", s).strip(), "removed", "no evidence") for s in raw]
        clean = [_MARKER.sub("", s).strip() for s in raw]
        vectors = self.embedder.encode(clean + texts)
        sims = vectors[: len(clean)] @ vectors[len(clean):].T
        allowed_figures = _figures(" ".join(texts))
        known = set(tokenize(" ".join(texts) + " " + question))
        out: list[SentenceCheck] = []
        seen: set[str] = set()
        for i, sentence in enumerate(clean):
            key = sentence.lower()
            if key in seen:
                continue
            seen.add(key)
            best = int(sims[i].argmax())
            cites = (evidence[best][0],)
            check = SentenceCheck(sentence, "verified", cites=cites, support=float(sims[i, best]))
            words = set(tokenize(sentence))
            missing = sorted(_figures(sentence) - allowed_figures)
            misplaced = [] if missing else misplaced_figures(sentence, texts, question)
            dropped = [] if missing or misplaced else dropped_qualifiers(sentence, texts, question)
            if missing:
                check.status, check.reason = "removed", f"figure not in the evidence: {', '.join(missing)}"
            elif misplaced:
                check.status, check.reason = "removed", f"figure said of something else: {', '.join(misplaced)}"
            elif dropped:
                check.status, check.reason = "removed", f"figure without its qualifier: {', '.join(dropped)}"
            elif not words or _FILLER.match(sentence):
                check.status, check.reason = "removed", "no content of its own"
            elif sentence.rstrip(". ").endswith(":"):
                check.status, check.reason = "removed", "an introduction with nothing after it"
            elif sentence.rstrip().endswith("?") or (
                    not re.match(r"(?i)(?:yes|no)\b", sentence)  # "Yes, you can ..." answers by its polarity
                    and len(words & set(tokenize(question))) >= self.thresholds.echo * len(words)):
                check.status, check.reason = "removed", "repeats the question"
            elif len(words & known) / len(words) < self.thresholds.words:
                unknown = sorted(words - known)[:4]
                check.status, check.reason = "removed", f"words not in the evidence: {', '.join(unknown)}"
            elif sims[i, best] < self.thresholds.cosine:
                check.status, check.reason = "removed", f"not close to any evidence sentence ({sims[i, best]:.2f})"
            elif bool(_NEGATION.search(sentence)) != bool(_NEGATION.search(texts[best])) and not any(
                    bool(_NEGATION.search(sentence)) == bool(_NEGATION.search(t)) and sims[i, j] >= self.thresholds.cosine
                    for j, t in enumerate(texts)):
                check.status, check.reason = "removed", "negation differs from the evidence"
            elif restates(sentence, texts[best], self.thresholds.restate):
                check.status, check.reason = "restated", f"the quote [{cites[0]}] says the same"
            out.append(check)
        return out
