"""Measure a domain pack end to end on its own question sets (`python -m assistant eval`, `make eval`).

Answerable questions (eval/questions.jsonl) check retrieval, citations and answers against the expected
facts. Two unanswerable sets check the grounding check: the pack's own in-domain questions its documents
do not cover (eval/unanswerable.jsonl), and every answerable question asked again with the documents
that hold its expected fact hidden from retrieval ("document removed"). For those, an answer counts as
handled when it is refused (the fixed no-information reply) or flagged (shown with a caveat).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from assistant.pipeline import Assistant
from assistant.understanding.condense import condense
from index.noisy import in_style, with_typos


@dataclass
class EvalReport:
    domain: str
    questions: int
    retrieved_source: float  # the expected document is among the passages given to the model
    cited_fact: float  # a cited passage contains the expected fact
    answer_has_fact: float  # the answer text itself states the expected fact
    unanswerable: int
    declined_unanswerable: float  # refused: the fixed no-information reply instead of a generated answer
    flagged_unanswerable: float  # refused or shown with a caveat
    removed: int  # answerable questions asked with their documents hidden
    refused_removed: float
    flagged_removed: float
    refused_answerable: float  # answerable questions wrongly refused
    caveat_answerable: float  # answerable questions answered with a caveat
    followups: int  # follow-up questions asked after an earlier turn (eval/followups.jsonl)
    followup_retrieved_alone: float  # expected document retrieved when the follow-up is searched as it is
    followup_retrieved_concat: float  # ... searched with the previous question glued in front (the old way)
    followup_retrieved: float  # ... searched as condensed by assistant.understanding.condense (what the assistant does)
    followup_answered: float  # end to end: routed to an answer whose passages include the expected document
    check_p50_ms: float
    latency_p50_ms: float
    latency_p95_ms: float
    ttft_p50_ms: float
    decode_tokens_per_s: float
    seconds: float

    def table(self) -> str:
        rows = [
            ("answerable questions", f"{self.questions}" + (f" (each message with {self.typos} typos)"
                                                            if self.typos else "")),
            ("expected document retrieved (top-k)", f"{self.retrieved_source:.0%}"),
            ("a cited passage holds the fact", f"{self.cited_fact:.0%}"),
            ("the answer states the fact", f"{self.answer_has_fact:.0%}"),
            ("answerable: wrongly refused / with caveat", f"{self.refused_answerable:.0%} / {self.caveat_answerable:.0%}"),
            ("unanswerable: refused / refused or flagged",
             f"{self.declined_unanswerable:.0%} / {self.flagged_unanswerable:.0%} of {self.unanswerable}"),
            ("document removed: refused / refused or flagged",
             f"{self.refused_removed:.0%} / {self.flagged_removed:.0%} of {self.removed}"),
            ("follow-ups: expected document retrieved (alone / after previous / condensed)",
             f"{self.followup_retrieved_alone:.0%} / {self.followup_retrieved_concat:.0%} / "
             f"{self.followup_retrieved:.0%} of {self.followups}"),
            ("follow-ups answered from the expected document", f"{self.followup_answered:.0%}"),
            ("grounding check p50", f"{self.check_p50_ms:.0f} ms"),
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


class _Hiding:
    """A searcher that behaves as if some documents were not indexed."""

    def __init__(self, inner, exclude: set[str]):
        self.inner, self.exclude = inner, exclude

    def search(self, *args, **kwargs):
        return self.inner.search(*args, exclude=self.exclude, **kwargs)

    def search_many(self, *args, **kwargs):  # the evidence pool's search
        return self.inner.search_many(*args, exclude=self.exclude, **kwargs)

    def __getattr__(self, name: str):  # everything else (store, refresh, ...) is the real searcher's
        return getattr(self.inner, name)


def sources_holding(store, facts: list[str]) -> set[str]:
    """Every indexed document whose text contains one of the facts."""
    out: set[str] = set()
    for fact in facts:
        rows = store.db.execute(
            "SELECT DISTINCT source FROM chunks WHERE instr(lower(text), ?) > 0", (fact.lower(),))
        out |= {r for (r,) in rows}
    return out


def _features(response, kind: str, question: str, domain: str = "") -> dict:
    return {"kind": kind, "domain": domain, "question": question, "confidence": response.confidence,
            "refused": response.refused, "grounded": response.grounded,
            "caveat": response.caveat, "support": response.support, "intent": response.intent,
            "action": response.action, "intent_confidence": response.intent_confidence,
            "checks": response.checks, "answer": response.answer[:300]}


def followup_scores(bot: Assistant, items: list[dict], progress: bool = True) -> dict[str, float]:
    """Retrieval of the expected document for follow-ups under three query strategies, and end to end."""
    counts = dict.fromkeys(("alone", "concat", "condensed", "answered"), 0)
    config = bot.config
    for q in tqdm(items, desc=f"{bot.pack.name} follow-ups", disable=not progress):
        history: list[tuple[str, str]] = [(h, "") for h in q["history"]]
        queries = {"alone": q["question"], "concat": f"{q['history'][-1]} {q['question']}",
                   "condensed": condense(q["question"], history)}
        for name, query in queries.items():
            hits = bot.searcher.search(query, k=config.top_k, min_score=config.min_score, mode=config.search_mode)
            counts[name] += any(h.source == q["source"] for h in hits)
        turns = []
        for earlier in q["history"]:  # the conversation as it happened: real answers in the history
            turns.append((earlier, bot.respond(earlier, turns).answer))
        response = bot.respond(q["question"], turns)
        counts["answered"] += response.action == "answer" and any(s.source == q["source"] for s in response.sources)
    n = max(len(items), 1)
    return {name: value / n for name, value in counts.items()}


def evaluate(bot: Assistant, limit: int | None = None, progress: bool = True,
             dump: list | None = None) -> EvalReport:
    started = time.time()
    answerable = _read_jsonl(bot.pack.root / "eval" / "questions.jsonl")[:limit]
    unanswerable = _read_jsonl(bot.pack.root / "eval" / "unanswerable.jsonl")[:limit]
    retrieved = cited = stated = declined = flagged = refused_ok = caveat_ok = 0
    removed_refused = removed_flagged = 0
    latencies, ttfts, checks = [], [], []
    tokens = decode_seconds = 0.0
    dump = dump if dump is not None else []
    for q in tqdm(answerable, desc=f"{bot.pack.name} answerable", disable=not progress):
        response = bot.respond(q["question"])
        dump.append(_features(response, "answerable", q["question"], bot.pack.name))
        facts = [f.lower() for f in q["expected"]]
        retrieved += any(s.source == q["source"] for s in response.sources)
        cited += any(s.cited and any(f in s.text.lower() for f in facts) for s in response.sources)
        stated += any(f in response.answer.lower() for f in facts) and not response.refused
        refused_ok += response.refused
        caveat_ok += response.caveat
        latencies.append(response.latency_ms["total"])
        if "check" in response.latency_ms:
            checks.append(response.latency_ms["check"])
        if "ttft" in response.latency_ms:
            ttfts.append(response.latency_ms["ttft"])
            tokens += response.stats.get("new_tokens", 0)
            decode_seconds += response.stats.get("decode_ms", 0.0) / 1000
    for q in tqdm(unanswerable, desc=f"{bot.pack.name} unanswerable", disable=not progress):
        response = bot.respond(q["question"])
        dump.append(_features(response, "unanswerable", q["question"], bot.pack.name))
        declined += response.refused or not response.grounded
        flagged += response.refused or not response.grounded or response.caveat
    searcher = bot.searcher
    try:
        for q in tqdm(answerable, desc=f"{bot.pack.name} document removed", disable=not progress):
            bot.searcher = _Hiding(searcher, sources_holding(searcher.store, q["expected"]) | {q["source"]})
            response = bot.respond(q["question"])
            dump.append(_features(response, "removed", q["question"], bot.pack.name))
            removed_refused += response.refused or not response.grounded
            removed_flagged += response.refused or not response.grounded or response.caveat
    finally:
        bot.searcher = searcher
    followups = _read_jsonl(bot.pack.root / "eval" / "followups.jsonl")[:limit]
    follow = followup_scores(bot, followups, progress)
    n = max(len(answerable), 1)
    u = max(len(unanswerable), 1)
    return EvalReport(
        domain=bot.pack.name, questions=len(answerable), retrieved_source=retrieved / n, cited_fact=cited / n,
        answer_has_fact=stated / n, unanswerable=len(unanswerable), declined_unanswerable=declined / u,
        flagged_unanswerable=flagged / u, removed=len(answerable), refused_removed=removed_refused / n,
        flagged_removed=removed_flagged / n, refused_answerable=refused_ok / n, caveat_answerable=caveat_ok / n,
        followups=len(followups), followup_retrieved_alone=follow["alone"],
        followup_retrieved_concat=follow["concat"], followup_retrieved=follow["condensed"],
        followup_answered=follow["answered"], check_p50_ms=_percentile(checks, 50),
        latency_p50_ms=_percentile(latencies, 50), latency_p95_ms=_percentile(latencies, 95),
        ttft_p50_ms=_percentile(ttfts, 50),
        decode_tokens_per_s=tokens / decode_seconds if decode_seconds else 0.0, seconds=time.time() - started,
    )


@dataclass
class DevReport:
    """`make eval` on a pack's customer-phrased dev set (dev/, written from the documents only, never fitted on)."""

    domain: str
    answer_mode: str
    caution: str  # how sure evidence must be to be given as the answer (AssistantConfig.caution)
    typos: int  # slips of the keyboard put into each message (0: as written)
    questions: int
    style: str  # how each message was typed (index/noisy.py STYLES): as written, without punctuation, greeted
    stated: float  # the answer states an expected fact (and was not refused)
    confidently_wrong: float  # answered without caveat or refusal, and no expected fact in it
    caveat: float
    refused: float  # answerable questions refused (no-answer reply, or not routed to an answer)
    source_in_top2: float  # retrieval: the expected document in the top 2 passages (what the old path read)
    source_in_pool: float  # ... among the pool_k passages evidence selection looks at
    fact_in_pool: float  # an expected fact occurs in the pool's passages
    fact_in_evidence: float  # ... in the selected evidence sentences
    llm_kept: float  # evidence mode: answered questions where at least one generated sentence was verified
    llm_removed: float  # evidence mode: generated sentences removed by the verifier (share of all generated)
    generated_sentences: int  # generated sentences checked (verified + removed), answerable questions
    unanswerable: int
    unanswerable_handled: float  # refused, flagged with a caveat, or not answered from documents
    followups: int
    followup_stated: float  # a real follow-up, answered with its fact
    new_topics: int
    new_topic_stated: float  # a new question with a dummy pronoun after an earlier turn, answered with its fact
    pairs: int  # two answerable questions asked in one message ("...? Also, ...")
    pairs_both_stated: float  # ... answered with both facts
    pairs_caveat: float
    intents: int
    intent_accuracy: float  # the classifier's label
    action_accuracy: float  # what the assistant does (answer, flow, handoff, emergency, smalltalk, out_of_scope)
    emergency_recall: float
    ttft_p50_ms: float  # time until the first answer text (the quoted evidence in evidence mode)
    latency_p50_ms: float
    seconds: float

    def table(self) -> str:
        rows = [
            ("answerable questions", f"{self.questions}" + (f" (each message with {self.typos} typos)"
                                                            if self.typos else "")
             + (f" (typed: {self.style})" if self.style != "as-written" else "")
             + (f" (caution: {self.caution})" if self.caution != "standard" else "")),
            ("the answer states the fact", f"{self.stated:.0%}"),
            ("confidently wrong", f"{self.confidently_wrong:.0%}"),
            ("caveat / refused (answerable)", f"{self.caveat:.0%} / {self.refused:.0%}"),
            ("retrieval: document in top 2 / in pool; fact in pool / in evidence",
             f"{self.source_in_top2:.0%} / {self.source_in_pool:.0%}; {self.fact_in_pool:.0%} / "
             f"{self.fact_in_evidence:.0%}"),
            ("LLM: answers with a verified sentence / generated sentences removed",
             f"{self.llm_kept:.0%} / {self.llm_removed:.0%} of {self.generated_sentences}"
             if self.answer_mode == "evidence" else "n/a (evidence mode only)"),
            ("unanswerable refused or flagged", f"{self.unanswerable_handled:.0%} of {self.unanswerable}"),
            ("follow-ups stated / new topics stated",
             f"{self.followup_stated:.0%} of {self.followups} / {self.new_topic_stated:.0%} of {self.new_topics}"),
            ("two questions in one message: both facts stated / caveat",
             f"{self.pairs_both_stated:.0%} / {self.pairs_caveat:.0%} of {self.pairs}"),
            ("intent accuracy / action accuracy / emergency recall",
             f"{self.intent_accuracy:.0%} / {self.action_accuracy:.0%} / {self.emergency_recall:.0%} "
             f"of {self.intents}" if self.intents else "n/a (no intents.jsonl in this set)"),
            ("time to first text p50 / total p50", f"{self.ttft_p50_ms / 1000:.2f} s / {self.latency_p50_ms / 1000:.2f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

    def to_dict(self) -> dict:
        return asdict(self)


def _states(response, facts: list[str]) -> bool:
    text = " ".join(response.answer.lower().split())
    return not response.refused and response.action == "answer" and any(" ".join(f.lower().split()) in text
                                                                         for f in facts)


def evaluate_dev(bot: Assistant, limit: int | None = None, progress: bool = True,
                 dump: list | None = None, split: str = "dev", typos: int = 0,
                 style: str = "as-written") -> DevReport:
    """The customer-phrased dev set, end to end: answers, retrieval at each stage, follow-ups, routing.

    `split="fit"` runs the same measures on the fitting set (for trying a change before reporting on dev).
    `typos=N` puts N seeded slips of the keyboard into every message first (index/noisy.py: a letter
    swapped, dropped, doubled or a neighbouring key), to measure how the answers hold up to typing;
    `style` types every message without punctuation or wrapped in a greeting and a thank-you first."""
    started = time.time()
    root = bot.pack.root / split
    answerable = _read_jsonl(root / "questions.jsonl")[:limit]
    unanswerable = _read_jsonl(root / "unanswerable.jsonl")[:limit]
    dialogues = _read_jsonl(root / "followups.jsonl")[:limit]
    intents = _read_jsonl(root / "intents.jsonl")[:limit]
    if typos or style != "as-written":
        slip = lambda text: with_typos(in_style(text, style), typos)  # noqa: E731
        answerable = [{**q, "question": slip(q["question"])} for q in answerable]
        unanswerable = [{**q, "question": slip(q["question"])} for q in unanswerable]
        dialogues = [{**q, "question": slip(q["question"]), "history": [slip(h) for h in q["history"]]}
                     for q in dialogues]
        intents = [{**q, "text": slip(q["text"])} for q in intents]
    dump = dump if dump is not None else []
    config = bot.config
    c = dict.fromkeys(("stated", "wrong", "caveat", "refused", "top2", "pool", "fact_pool", "fact_ev", "answered",
                       "kept", "verified", "removed"), 0)
    ttfts, latencies = [], []
    norm = lambda t: " ".join(t.lower().split())  # noqa: E731
    for q in tqdm(answerable, desc=f"{bot.pack.name} {split} answerable", disable=not progress):
        facts = [norm(f) for f in q["expected"]]
        _, found, pool = bot._find_evidence(q["question"], [], config)
        evidence = found.evidence
        top2 = bot.searcher.search(q["question"], k=2, min_score=config.min_score, mode=config.search_mode)
        c["top2"] += any(h.source == q["source"] for h in top2)
        c["pool"] += any(h.source == q["source"] for h in pool)
        c["fact_pool"] += any(f in norm(h.text) for h in pool for f in facts)
        c["fact_ev"] += any(f in norm(e.text) for e in evidence for f in facts)
        response = bot.respond(q["question"])
        stated = _states(response, facts)
        refused = response.refused or response.action != "answer"
        c["stated"] += stated
        c["refused"] += refused
        c["caveat"] += response.caveat
        c["wrong"] += not stated and not refused and not response.caveat
        if not refused:  # what the LLM's own sentences came to (quoted evidence sentences are not generated)
            statuses = [s["status"] for s in response.sentences]
            c["answered"] += 1
            c["kept"] += "verified" in statuses or "restated" in statuses
            c["verified"] += statuses.count("verified") + statuses.count("restated")
            c["removed"] += statuses.count("removed")
        latencies.append(response.latency_ms["total"])
        if "ttft" in response.latency_ms:
            ttfts.append(response.latency_ms["ttft"])
        dump.append({**_features(response, f"{split}-answerable", q["question"], bot.pack.name), "stated": stated})
    handled = 0
    for q in tqdm(unanswerable, desc=f"{bot.pack.name} {split} unanswerable", disable=not progress):
        response = bot.respond(q["question"])
        handled += response.refused or response.caveat or response.action != "answer"
        dump.append(_features(response, f"{split}-unanswerable", q["question"], bot.pack.name))
    kinds = {"followup": [0, 0], "new_topic": [0, 0]}
    for q in tqdm(dialogues, desc=f"{bot.pack.name} {split} dialogues", disable=not progress):
        turns: list[tuple[str, str]] = []
        for earlier in q["history"]:
            turns.append((earlier, bot.respond(earlier, turns).answer))
        response = bot.respond(q["question"], turns)
        kind = kinds[q.get("kind", "followup")]
        kind[0] += 1
        kind[1] += _states(response, q.get("expected", []))
        dump.append(_features(response, f"{split}-{q.get('kind', 'followup')}", q["question"], bot.pack.name))
    # two questions in one message, as customers write them: consecutive answerable questions joined
    pair_both = pair_caveat = 0
    pairs = list(zip(answerable[0::2], answerable[1::2], strict=False))
    for a, b in tqdm(pairs, desc=f"{bot.pack.name} {split} two questions", disable=not progress):
        text = f"{a['question'].rstrip(' ?.')}? Also, {b['question']}"
        response = bot.respond(text)
        both = all(_states(response, [norm(f) for f in q["expected"]]) for q in (a, b))
        pair_both += both
        pair_caveat += response.caveat
        dump.append({**_features(response, f"{split}-two_questions", text, bot.pack.name), "stated": both})
    label_ok = action_ok = emergencies = caught = 0
    for q in tqdm(intents, desc=f"{bot.pack.name} {split} intents", disable=not progress):
        route = bot.route(q["text"], [], config)
        label_ok += route.prediction.label == q["label"]
        action_ok += route.action == q["action"]
        if q["action"] == "emergency":
            emergencies += 1
            caught += route.action == "emergency"
    n, u, i = max(len(answerable), 1), max(len(unanswerable), 1), max(len(intents), 1)
    return DevReport(
        domain=bot.pack.name, answer_mode=config.answer_mode, caution=config.caution, typos=typos, style=style, questions=len(answerable),
        stated=c["stated"] / n,
        confidently_wrong=c["wrong"] / n, caveat=c["caveat"] / n, refused=c["refused"] / n,
        source_in_top2=c["top2"] / n, source_in_pool=c["pool"] / n, fact_in_pool=c["fact_pool"] / n,
        fact_in_evidence=c["fact_ev"] / n, llm_kept=c["kept"] / max(c["answered"], 1),
        llm_removed=c["removed"] / max(c["verified"] + c["removed"], 1),
        generated_sentences=c["verified"] + c["removed"], unanswerable=len(unanswerable), unanswerable_handled=handled / u,
        followups=kinds["followup"][0], followup_stated=kinds["followup"][1] / max(kinds["followup"][0], 1),
        new_topics=kinds["new_topic"][0], new_topic_stated=kinds["new_topic"][1] / max(kinds["new_topic"][0], 1),
        pairs=len(pairs), pairs_both_stated=pair_both / max(len(pairs), 1),
        pairs_caveat=pair_caveat / max(len(pairs), 1),
        intents=len(intents), intent_accuracy=label_ok / i, action_accuracy=action_ok / i,
        emergency_recall=caught / emergencies if emergencies else 1.0, ttft_p50_ms=_percentile(ttfts, 50),
        latency_p50_ms=_percentile(latencies, 50), seconds=time.time() - started,
    )
