"""Adaptive hybrid fusion on a real index (the hospital pack's documents), its fit, the noisy rewrites."""

from __future__ import annotations

import numpy as np
import pytest

from index import noisy
from index.bm25 import tokenize
from index.fit_fusion import GRID, GridTable, fit_logistic, mean_ndcg
from index.noisy import noisy_question, noisy_questions
from index.search import FEATURES, MODES, FusionConfig, Searcher
from index.store import IndexStore, build_index
from tests.conftest import ROOT, run_cli

HOSPITAL_DOCS = ROOT / "assistant" / "packs" / "hospital" / "docs"
SHORT = "ICU visiting hours"
LONG = ("hi, my mom is 72 and she was admitted last week after a fall, we live about an hour away and i work "
        "nights so its hard to get there. my brother and i are trying to work out when we can come see her in "
        "the intensive care unit, what are the visitng hours there?")


@pytest.fixture(scope="module")
def store(tmp_path_factory, embedder) -> IndexStore:
    out = tmp_path_factory.mktemp("fusion") / "idx"
    build_index([str(HOSPITAL_DOCS)], out, embedder, progress=False)
    return IndexStore.open(out)


def test_adaptive_weight_leans_on_dense_for_a_long_noisy_message(store, embedder):
    searcher = Searcher(store, embedder)
    short, long = searcher.hybrid_candidates([SHORT, LONG])
    assert short.features[0] < long.features[0]  # log_terms
    assert searcher.fusion.weight(long.features) > searcher.fusion.weight(short.features) + 0.1
    fixed = FusionConfig(adaptive=False)
    assert fixed.weight(long.features) == fixed.weight(short.features) == 0.5
    for query in (SHORT, LONG):
        assert "visiting_hours.html" in [h.source for h in searcher.search(query, k=3)], query


def test_every_mode_is_deterministic_and_finds_the_document(store, embedder):
    adaptive, fixed = Searcher(store, embedder), Searcher(store, embedder, fusion=FusionConfig(adaptive=False))
    for mode in MODES:
        first = adaptive.search("fasting before a lipid panel", k=5, mode=mode)
        again = Searcher(store, embedder).search("fasting before a lipid panel", k=5, mode=mode)
        assert [(h.chunk_id, h.score) for h in first] == [(h.chunk_id, h.score) for h in again], mode
        assert first[0].source == "lab_and_imaging_preparation.md", (mode, first)
    assert fixed.search("fasting before a lipid panel", k=1)[0].source == "lab_and_imaging_preparation.md"
    assert adaptive.search_many([LONG, "", SHORT], k=2)[1] == []


def test_dense_weight_one_gives_the_dense_ranking(store, embedder):
    all_dense = Searcher(store, embedder, fusion=FusionConfig(adaptive=False, dense_weight=1.0))
    for query in (SHORT, LONG, "how do I pay my bill in installments"):
        assert ([h.chunk_id for h in all_dense.search(query, k=8)]
                == [h.chunk_id for h in all_dense.search(query, k=8, mode="dense")]), query


def test_features_are_bounded_and_a_one_word_query_is_fully_covered(store, embedder):
    searcher = Searcher(store, embedder)
    for cand in searcher.hybrid_candidates([SHORT, LONG, "parking"]):
        assert cand.features.shape == (len(FEATURES),)
        assert 0 <= cand.features[1] <= 1 and 0 <= cand.features[2] <= 1 + 1e-6
    (one,) = searcher.hybrid_candidates(["parking"])
    assert one.features[2] == pytest.approx(1.0, abs=1e-5)  # the best chunk is that term's best chunk
    assert store.bm25.ceiling(tokenize("zzzz qqqq")) == 0.0


def test_fusion_config_names_what_is_wrong():
    with pytest.raises(ValueError, match=r"coefs needs 3 values.*log_terms"):
        FusionConfig(coefs=(1.0,))
    with pytest.raises(ValueError, match=r"dense_weight must be in \[0, 1\]"):
        FusionConfig(dense_weight=1.5)


def test_fit_recovers_a_known_rule():
    """Questions with a positive first feature are best served by dense, the rest by BM25."""
    rng = np.random.default_rng(0)
    features = rng.normal(0, 1, (300, 3))
    dense_side = features[:, 0] > 0
    ndcg = np.where(dense_side[:, None], GRID[None, :], 1 - GRID[None, :])  # the more weight the better / worse
    table = GridTable(features, ndcg)
    bias, coefs = fit_logistic(table, starts=2)
    weights = 1 / (1 + np.exp(-(bias + features @ coefs)))
    assert mean_ndcg(table, weights) > 0.85 > 0.5 == mean_ndcg(table, np.full(300, 0.5))
    assert np.mean((weights > 0.5) == dense_side) > 0.95
    assert fit_logistic(table, starts=2)[1].tolist() == coefs.tolist()


def test_noisy_rewrites_are_seeded_lay_and_lower_case():
    questions = [{"question": "What are the symptoms of Adult Acute Lymphoblastic Leukemia ?", "relevant": ["a.md"]},
                 {"question": "How to diagnose Rheumatoid Arthritis ?", "relevant": ["b.md"], "qtype": "exams"},
                 {"question": "What is (are) Gout ?", "relevant": ["c.md"]}]
    first, again = noisy_questions(questions), noisy_questions(questions)
    assert first == again
    assert noisy_questions(questions, seed=1) != first
    for clean, rewrite in zip(questions, first, strict=True):
        assert rewrite["relevant"] == clean["relevant"] and rewrite.get("qtype") == clean.get("qtype")
        assert rewrite["question"] == rewrite["question"].lower() != clean["question"].lower()
    # over many seeds: the template's wording is replaced, and every rewrite carries a typo
    rewrites = [noisy_question(questions[0]["question"], seed) for seed in range(40)]
    assert not any("what are the symptoms of" in r for r in rewrites)
    pools = [*noisy._BACKGROUND, *noisy._CLOSING, *(r for _, rs in noisy._TEMPLATES for r in rs),
             "adult acute lymphoblastic leukemia"]
    known = {w.strip(".,?!'") for text in pools for w in text.replace("{x}", "").lower().split()}
    assert sum(any(w.strip(".,?!'") not in known for w in r.split()) for r in rewrites) >= 36


def test_fit_command_says_where_the_data_should_be(tmp_path):
    result = run_cli("index.fit_fusion", "--data", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no MedQuAD dev set" in result.stderr and "--data" in result.stderr
