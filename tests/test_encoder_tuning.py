"""The evidence encoder tuned on a pack's own documents: its pairs, its training, its cache, its setting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assistant.answering import encoder_tuning
from assistant.answering.encoder_tuning import TuneSettings, ensure_evidence_encoder, training_pairs
from assistant.llm.models import cache_dir
from assistant.packs import load_pack


def _records(bot) -> list[dict]:
    store = bot.searcher.store
    return list(store.chunks(range(len(store))).values())


@pytest.fixture(scope="module")
def tuned_bot(data_dir, bank_bot):
    """The bank assistant in quote mode, `--evidence-encoder tuned` (the default; tuned once per machine: about
    2.5 min on 2 cores)."""
    from assistant import Assistant, AssistantConfig

    return Assistant(AssistantConfig(domain="bank", data_dir=data_dir, answer_mode="quote", evidence_encoder="tuned"),
                     embedder=bank_bot.embedder)


def test_pairs_come_from_the_faq_questions_and_the_headings(bank_bot):
    pairs = training_pairs(_records(bank_bot))
    assert len(pairs) > 500 and len(set(pairs)) == len(pairs)
    asked = {q for q, _ in pairs}
    # a FAQ entry is paired under its own question, a document's sentence under its title and headings
    assert any(q == "How much can I send with QuickPay?" and "$2,500 per day" in s for q, s in pairs)
    assert any("›" in q for q in asked)
    assert all(len(s.split()) >= 4 for _, s in pairs)


def test_records_without_headings_or_sentences_give_no_pairs():
    assert training_pairs([{"text": "", "title": "Empty"}, {"text": "Too short.", "title": "T"}]) == []
    pairs = training_pairs([{"text": "Q: Is there a fee?\nA: No, wires you receive are free of charge.",
                             "title": "Faq", "headings": None}])
    assert pairs == [("Is there a fee?", "No, wires you receive are free of charge.")]


def test_the_tuned_encoder_ranks_the_documents_sentences_under_their_headings_better(tuned_bot):
    """Tuning is contrastive on (heading or FAQ question, sentence) pairs: afterwards each pair's sentence is
    found among all of the pack's sentences from its question more often than with the base encoder."""
    tuned, base = tuned_bot.evidence_embedder, tuned_bot.embedder
    assert tuned is not base and tuned.name != base.name
    pairs = training_pairs(_records(tuned_bot))
    sentences = sorted({s for _, s in pairs})
    sample = pairs[::7]
    found = {}
    for name, encoder in (("base", base), ("tuned", tuned)):
        vectors = encoder.encode(sentences)
        questions = encoder.encode([q for q, _ in sample])
        best = np.argsort(-(questions @ vectors.T), axis=1)[:, :5]
        found[name] = np.mean([sentences.index(s) in row for (_, s), row in zip(sample, best, strict=True)])
    assert found["tuned"] > found["base"] + 0.05, found


def test_the_tuned_encoder_gives_a_second_opinion_unless_told_not_to(data_dir, bank_bot, tuned_bot):
    from dataclasses import replace

    from assistant import Assistant, AssistantConfig
    from assistant.answering.evidence import (
        JUDGED_WEIGHTS,
        TUNED_ENCODER_WEIGHTS,
        EvidenceWeights,
    )
    from index.errors import SettingError

    plain = Assistant(AssistantConfig(domain="bank", data_dir=data_dir, answer_mode="quote", evidence_encoder="base"),
                      embedder=bank_bot.embedder)
    assert plain.second_opinion is None and plain.evidence_embedder is plain.embedder
    assert bank_bot.second_opinion is not None  # the default
    assert tuned_bot.selector.embedder is tuned_bot.embedder
    # the shipped mix; with the larger context encoder, the answerable model that takes the second opinion's
    # probability as one of its terms (without it, the second opinion can only add doubt)
    large = tuned_bot.selector.context_embedder is not tuned_bot.embedder
    # (with the bank pack's own flag threshold for it, pack.yaml `calibration`)
    judged = replace(JUDGED_WEIGHTS, **tuned_bot.pack.calibration[JUDGED_WEIGHTS.model])
    assert tuned_bot.selector.weights == (judged if large else EvidenceWeights())
    assert tuned_bot.selector.judge is (tuned_bot.second_opinion if large else None)
    assert plain.selector.judge is None and plain.selector.weights.judge_coef == 0
    assert tuned_bot.second_opinion.embedder is tuned_bot.evidence_embedder
    assert "evidence-encoders" in tuned_bot.evidence_embedder.spec
    assert tuned_bot.second_opinion.weights == TUNED_ENCODER_WEIGHTS  # its own answerable model
    again = Assistant(AssistantConfig(domain="bank", data_dir=data_dir, answer_mode="quote", evidence_encoder="tuned"),
                      embedder=bank_bot.embedder)
    assert again.evidence_embedder is tuned_bot.evidence_embedder  # one loaded model per process
    # a question the documents answer word for word: both opinions agree, the answer is given as such
    response = again.respond("What's the SWIFT code for an incoming international wire?")
    assert "NBFBUS33" in response.answer and response.answer.startswith("From *") and not response.caveat
    # the second opinion only ever adds doubt: what it doubts is the closest the documents come, never refused
    pet = "Do you offer pet insurance for my dog?"
    pool = tuned_bot.searcher.search(pet, k=12, min_score=0.2)
    assert tuned_bot.second_opinion.doubts(pet, pool)
    if large:  # as a term of the model: its doubt lowers the selector's own probability
        selector = tuned_bot.selector
        ranked = selector.score(pet, pool)
        probability = selector.answerable(pet, ranked, pool)
        doubted = tuned_bot.second_opinion.probability(pet, pool)
        assert doubted < tuned_bot.second_opinion.weights.flag_prob
        expected = 1 / (1 + np.exp(-(np.dot(selector.features(pet, ranked, pool), JUDGED_WEIGHTS.answerable_coef)
                                     + JUDGED_WEIGHTS.answerable_bias + JUDGED_WEIGHTS.judge_coef * doubted)))
        assert probability == pytest.approx(expected)
        assert probability < selector.weights.flag_prob
        assert selector.assess(pet, pool).flagged or not selector.assess(pet, pool).evidence
    assert not tuned_bot.second_opinion.doubts("What is the SWIFT code for incoming international wires?",
                                               tuned_bot.searcher.search("SWIFT code incoming international wire",
                                                                         k=12, min_score=0.2))
    with pytest.raises(SettingError, match="--evidence-encoder must be one of tuned, base"):
        AssistantConfig(evidence_encoder="finetuned")


def test_a_new_data_directory_reuses_the_cached_encoder(tmp_path, tuned_bot, monkeypatch):
    """Tuned once per set of pack documents: another data directory on the machine takes the user cache's copy,
    and a pack whose documents give too few pairs keeps the base encoder without tuning anything."""
    def no_tuning(*args, **kwargs):
        raise AssertionError("tuned again although a cached encoder exists")

    monkeypatch.setattr(encoder_tuning, "tune", no_tuning)
    records = _records(tuned_bot)
    again = ensure_evidence_encoder(tuned_bot.pack, tuned_bot.embedder, records, tmp_path / "another")
    assert Path(again.spec).parent == cache_dir() / "evidence-encoders"
    assert Path(again.spec).name == Path(tuned_bot.evidence_embedder.spec).name
    # other settings are another encoder: nothing cached, and five chunks are too few to tune on
    small = ensure_evidence_encoder(load_pack("bank"), tuned_bot.embedder, records[:5], tmp_path / "another",
                                    settings=TuneSettings(steps=61))
    assert small is tuned_bot.embedder


def test_nowhere_to_save_the_encoder_is_said_before_tuning(tmp_path, bank_bot, monkeypatch):
    from index.errors import SettingError

    def no_tuning(*args, **kwargs):
        raise AssertionError("tuned although the result could not be saved")

    monkeypatch.setattr(encoder_tuning, "tune", no_tuning)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    with pytest.raises(SettingError, match="cannot save the bank pack's evidence encoder.*writable"):
        ensure_evidence_encoder(bank_bot.pack, bank_bot.embedder, _records(bank_bot), blocker / "data")
