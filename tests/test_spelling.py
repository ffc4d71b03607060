"""Spelling correction of queries (index/spelling.py): the real word list, a real index, the real bank pack."""

from __future__ import annotations

import pytest

from index.search import Searcher
from index.spelling import Speller, english_words, word_counts
from index.store import IndexStore, build_index
from tests.conftest import run_cli
from ui.app import render_details

DOCS = ("Your routing number for direct deposit is 021000555. A stolen debit card can be frozen in the app. "
        "Visiting hours are 8:00 a.m. to 8:00 p.m. Northbridge charges no overdraft fee under $50.")


@pytest.fixture(scope="module")
def speller() -> Speller:
    return Speller(word_counts([DOCS]))


def test_the_english_word_list_ships_with_the_package():
    words = english_words()
    assert len(words) > 100_000 and {"thank", "favorite", "math", "pills"} <= set(words)


@pytest.mark.parametrize("typed, meant", [
    ("What ruting numbr do I give for direct deposit?", "What routing number do I give for direct deposit?"),
    ("my stolne deibt card", "my stolen debit card"),
    ("Visiitng houurs?", "Visiting hours?"),          # capitals kept, a swap and a doubled letter
    ("Northbrige overdarft fee", "Northbridge overdraft fee"),
    ("can i send mony to my prople", "can i send mony to my people"),  # "people": an English word, not theirs
])
def test_misspelled_words_become_the_documents_words(speller, typed, meant):
    assert speller.correct(typed) == meant


@pytest.mark.parametrize("text", [
    "thank you, my moms card was texted to a scam artist",  # English words and their endings, typed as meant
    "dont know why it isnt there, whats going on",       # contractions without the apostrophe
    "the ATM and the IRAs",                               # acronyms
    "card 4412-8876 on 3/4, ok?",                         # digits, short words
    "Henoch-Schönlein purpura, cuánto cuesta",            # words with accents
    "can I pay with Zelle, do you take Humana",           # capitalised names no document holds
    "",
])
def test_words_typed_as_meant_are_kept(speller, text):
    assert speller.correct(text) == text and speller.corrections(text) == {}


def test_a_message_typed_in_capitals_is_corrected_to_the_documents_words():
    """In capitals every word looks like an acronym or a name: such a message is read in lower case, its
    misspellings become the documents' words in capitals, and nothing becomes a word the documents lack."""
    speller = Speller(word_counts([DOCS]), english_words())
    assert speller.correct("HOW DO I FREEZE A STOLLEN DEBBIT CARD?") == "HOW DO I FREEZE A STOLEN DEBIT CARD?"
    assert speller.corrections("WHATS THE ROUTNG NUMBER") == {"ROUTNG": "ROUTING"}
    assert speller.correct("CAN I PAY WITH ZELLE") == "CAN I PAY WITH ZELLE"  # a name: no English guess
    assert speller.correct("the ATM fee") == "the ATM fee"  # an acronym in a message in lower case


def test_a_four_letter_word_only_when_one_document_word_fits():
    english = english_words()
    assert Speller({"hours": 3, "money": 2}, english).correct("visiting hurs, mney") == "visiting hours, money"
    assert Speller({"hours": 3, "house": 2}, english).correct("the hous") == "the hous"  # hours or house?
    assert Speller({"surgical": 3, "sure": 2}, english).correct("med surg floor") == "med surg floor"  # clipped


def test_two_document_words_typed_as_one_are_split():
    words = word_counts(["Report a lost debit card. Your routing number. Online banking."])
    speller = Speller(words)
    assert speller.correct("my debitcard, the routingnumber") == "my debit card, the routing number"
    assert speller.correct("Onlinebanking") == "Online banking"
    assert speller.correct("metformin") == "metformin"  # no split into document words: kept


def test_shorthand_is_written_out_and_correction_is_idempotent(speller):
    once = speller.correct("need my acct info for an appt tmrw, visiitng hrs?")
    assert once == "need my account info for an appointment tomorrow, visiting hours?"
    assert speller.correct(once) == once
    assert speller.corrections("visiitng hrs") == {"visiitng": "visiting", "hrs": "hours"}


def test_without_a_word_list_nothing_is_changed():
    assert Speller(word_counts([DOCS]), english={}).correct("stolne deibt card") == "stolne deibt card"


def test_search_meets_the_documents_despite_typos(tmp_path, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "wires.md").write_text("# Wire transfers\n\nAn outgoing international wire costs $45.\n")
    (docs / "cards.md").write_text("# Lost cards\n\nFreeze a stolen debit card in the app.\n")
    build_index([str(docs)], tmp_path / "idx", embedder, progress=False)
    store = IndexStore.open(tmp_path / "idx")
    on, off = Searcher(store, embedder), Searcher(store, embedder, spelling=False)
    assert on.correct("internatinal wirre") == "international wire"
    assert [h.source for h in on.search("internatinal wirre", k=1, mode="bm25")] == ["wires.md"]
    assert off.search("internatinal wirre", k=1, mode="bm25") == []  # no word meets BM25 as typed
    assert off.correct("internatinal wirre") == "internatinal wirre"
    shown = run_cli("index", "query", str(tmp_path / "idx"), "internatinal wirre", "--mode", "bm25", "-k", "1")
    assert shown.returncode == 0, shown.stderr
    assert "searched for: international wire" in shown.stdout and "wires.md" in shown.stdout
    typed = run_cli("index", "query", str(tmp_path / "idx"), "internatinal wirre", "--mode", "bm25", "--no-spelling")
    assert typed.returncode == 0 and "no relevant passages" in typed.stdout and "searched for" not in typed.stdout


def test_a_question_with_typos_is_answered_like_the_clean_one(bank_bot):
    clean = bank_bot.respond("What routing number do I give my employer for direct deposit?")
    typed = bank_bot.respond("What ruting numbeer do I give my emplyer for direct depositt?")
    assert not typed.refused and "021555013" in clean.answer
    assert "021555013" in typed.answer
    assert typed.query.startswith("What routing number do I give my employer for direct deposit")
    assert typed.corrections == {"ruting": "routing", "numbeer": "number", "emplyer": "employer",
                                 "depositt": "deposit"} and clean.corrections == {}
    assert "Read as: <i>ruting</i> → routing" in render_details(typed)  # the UI says how it read the message
