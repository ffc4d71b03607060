"""`make eval`'s measures on the real pipeline (quote mode, so no LLM time): the pack's eval set, with its
"document removed" check, and the customer-phrased sets through the same code as the dev report."""

from __future__ import annotations

import dataclasses
import json

import pytest

from assistant import Assistant, AssistantConfig
from assistant.tools.evaluate import _Hiding, evaluate, evaluate_dev, sources_holding


@pytest.fixture(scope="module")
def quote_bot(data_dir, bank_bot):
    return Assistant(AssistantConfig(domain="bank", data_dir=data_dir, answer_mode="quote"),
                     generator=bank_bot.generator, embedder=bank_bot.embedder)


def _shares(report) -> dict[str, float]:
    return {f.name: getattr(report, f.name) for f in dataclasses.fields(report)
            if isinstance(getattr(report, f.name), float) and not f.name.endswith(("_ms", "seconds", "_per_s"))}


def test_a_removed_document_is_hidden_from_every_search(quote_bot):
    question = json.loads((quote_bot.pack.root / "eval" / "questions.jsonl").read_text().splitlines()[0])
    hidden = sources_holding(quote_bot.searcher.store, question["expected"]) | {question["source"]}
    assert question["source"] in hidden
    searcher = quote_bot.searcher
    before = quote_bot.respond(question["question"])
    assert {s.source for s in before.sources} & hidden
    quote_bot.searcher = _Hiding(searcher, hidden)
    try:
        after = quote_bot.respond(question["question"])
    finally:
        quote_bot.searcher = searcher
    assert not {s.source for s in after.sources} & hidden
    assert after.refused  # every document holding "4:00 p.m." hidden: the no-answer reply, not a guess


def test_eval_and_customer_phrased_reports(quote_bot):
    report = evaluate(quote_bot, limit=3, progress=False)
    assert (report.questions, report.unanswerable, report.removed) == (3, 3, 3)
    assert all(0.0 <= v <= 1.0 for v in _shares(report).values())
    assert report.answer_has_fact > 0 and report.latency_p50_ms > 0
    dump: list = []
    fit = evaluate_dev(quote_bot, limit=3, progress=False, dump=dump, split="fit")
    assert (fit.questions, fit.unanswerable, fit.answer_mode) == (3, 3, "quote")
    assert all(0.0 <= v <= 1.0 for v in _shares(fit).values())
    assert fit.source_in_pool >= fit.source_in_top2 and fit.fact_in_pool >= fit.fact_in_evidence
    assert len(dump) >= 6 and {"question", "refused", "caveat"} <= set(dump[0])


def test_the_customer_phrased_report_with_typos(quote_bot):
    from index.noisy import with_typos

    text = "whats the monthly maintenance fee on everyday checking"
    slipped = with_typos(text, 2)
    assert slipped == with_typos(text, 2) != text  # seeded: the same slips every run
    changed = [(a, b) for a, b in zip(text.split(), slipped.split(), strict=True) if a != b]
    assert len(changed) == 2 and all(len(a) >= 5 for a, _ in changed)
    dump: list = []
    typed = evaluate_dev(quote_bot, limit=3, progress=False, dump=dump, split="fit", typos=2)
    asked = [json.loads(line)["question"] for line in
             (quote_bot.pack.root / "fit" / "questions.jsonl").read_text().splitlines()[:3]]
    assert typed.typos == 2 and "with 2 typos" in typed.table()
    assert typed.pairs == 1 and "two questions in one message" in typed.table()  # questions 1 and 2, joined
    assert [d["question"] for d in dump if d["kind"] == "fit-two_questions"] == [
        f"{with_typos(asked[0], 2).rstrip(' ?.')}? Also, {with_typos(asked[1], 2)}"]
    assert [d["question"] for d in dump[:3]] == [with_typos(q, 2) for q in asked] != asked
    assert all(0.0 <= v <= 1.0 for v in _shares(typed).values())


def test_the_customer_phrased_report_typed_in_other_styles(quote_bot):
    from index.noisy import in_style

    text = "What's the SWIFT code, for an incoming wire?"
    assert in_style(text, "no-punctuation") == "whats the swift code for an incoming wire"
    greeted = in_style(text, "greeting")
    assert greeted == in_style(text, "greeting") and text in greeted  # seeded, the question kept whole
    told = in_style(text, "context")
    assert told == in_style(text, "context") and told.endswith(" " + text) and len(told) > len(text) + 10
    with pytest.raises(ValueError, match="unknown style"):
        in_style(text, "shouting")
    asked = [json.loads(line)["question"] for line in
             (quote_bot.pack.root / "fit" / "questions.jsonl").read_text().splitlines()[:3]]
    for style in ("no-punctuation", "greeting", "context"):
        dump: list = []
        typed = evaluate_dev(quote_bot, limit=3, progress=False, dump=dump, split="fit", style=style)
        assert typed.style == style and f"typed: {style}" in typed.table()
        assert [d["question"] for d in dump[:3]] == [in_style(q, style) for q in asked]
        assert all(0.0 <= v <= 1.0 for v in _shares(typed).values())
