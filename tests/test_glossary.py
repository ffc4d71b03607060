"""The pack glossary: everyday words for the documents' terms (assistant/understanding/glossary.py)."""

from __future__ import annotations

import pytest

from assistant.packs import load_pack
from assistant.understanding.glossary import Glossary
from index.errors import SettingError

SAMPLE = "term,also\npediatrics,children's|childrens|kids floor\nrouting number,ABA number|aba\n"


def test_a_message_with_an_everyday_word_gets_the_term():
    glossary = Glossary.parse(SAMPLE)
    assert len(glossary) == 2
    assert glossary.terms_for("how many of us can be on the Childrens floor at once?") == ["pediatrics"]
    assert glossary.terms_for("what are the hours on the children\u2019s floor") == ["pediatrics"]
    assert glossary.expand("whats your ABA number") == "whats your ABA number (routing number)"


def test_no_term_added_when_the_message_names_it_or_only_shares_part_of_a_word():
    glossary = Glossary.parse(SAMPLE)
    assert glossary.expand("is the aba routing number on my checks?") == "is the aba routing number on my checks?"
    assert glossary.terms_for("my kids are with me") == []  # "kids floor" is the phrase, not "kids"
    assert glossary.terms_for("abacus") == []
    assert Glossary().expand("anything") == "anything"


def test_phrases_match_as_customers_write_them():
    """Hyphens, plurals, possessives and quotes do not hide a phrase; the longest phrase at a place wins; an
    amount is not an emergency number; the term named in any of these forms is not added again."""
    glossary = Glossary.parse("term,also\natm,cash machine\ncut-off time,deadline\nrouting number,aba\n"
                              "overdraft coverage,bounce protection\nreturned item,bounce|bounced\n911,112|999\n"
                              "x-ray,radiograph\n")
    assert glossary.terms_for("do the cash machines near me charge?") == ["atm"]
    assert glossary.terms_for("is the atm's screen broken? the cash machine ate my card") == []
    assert glossary.terms_for("what is an \u2018ABA\u2019 number") == ["routing number"]
    assert glossary.terms_for("what's the cut off time, the deadline for wires") == []  # named without the hyphen
    assert glossary.terms_for("what is bounce protection") == ["overdraft coverage"]  # not also "returned item"
    assert glossary.terms_for("I paid $112 last week and my bill says 999.00") == []
    assert glossary.terms_for("in europe i would call 112") == ["911"]
    assert glossary.terms_for("an x\u2011ray, a radiograph") == []  # a non-breaking hyphen
    assert Glossary.parse("term,also\nwi-fi,wifi\n").expand("is there wifi") == "is there wifi (wi-fi)"


def test_the_pack_glossaries_leave_ordinary_messages_alone():
    """A broad everyday word ("kids", "dead", "salary") would send an ordinary question to another topic."""
    bank = Glossary.read(load_pack("bank").root / "glossary.csv")
    hospital = Glossary.read(load_pack("hospital").root / "glossary.csv")
    for text in ("my card is dead, can I get a new one?", "what salary do I need for a mortgage",
                 "what is the interpretation of this fee", "my kids are with me, can we come in together?"):
        assert bank.terms_for(text) == [], text
    for text in ("can my kids visit the ICU?", "can my child come to the ICU with me", "I paid $112, is that right?",
                 "my bill says 999.00", "can my pals visit tonight", "what is the interpretation of my results",
                 "is there wireless charging in the rooms", "where do I check in at reception"):
        assert hospital.terms_for(text) == [], text
    assert hospital.terms_for("where is the kids floor") == ["pediatrics"]
    assert hospital.terms_for("how much is an ER visit") == ["emergency department"]


@pytest.mark.parametrize(("text", "message"), [
    ("pediatrics,children\n", "first line must be the header"),
    ("", "first line must be the header"),
    ("term,also\nnicu,\"baby icu|scbu\natm,cash machine\n", "line 2: .*quote"),  # a quote never closed
    ("term,also\n" + "atm,cash machine\n" * 5001, "more than 5000 rows; the file is rejected"),
    ("term,also\npediatrics\n", "line 2: expected two columns"),
    ("term,also\npediatrics,kids,extra\n", "line 2: expected two columns"),
    ("term,also\n,kids\n", "line 2: a term and at least one other word"),
    ("term,also\npediatrics,pediatrics\n", "line 2: a term and at least one other word"),
])
def test_a_malformed_glossary_names_the_line_to_fix(text, message):
    with pytest.raises(SettingError, match=message):
        Glossary.parse(text)


def test_a_spreadsheet_export_and_blank_rows_are_read():
    glossary = Glossary.parse("\ufeffterm,also,\n\n\npediatrics,kids floor,\n" + "\n" * 6000 + "atm,cash machine\n")
    assert glossary.entries == (("pediatrics", ("kids floor",)), ("atm", ("cash machine",)))
    with pytest.raises(SettingError, match="line 3: expected two columns"):
        Glossary.parse('term,also\nnicu,"baby icu, preemie unit"\nbad row,a,b\n')
    with pytest.raises(SettingError, match="line 2: a cell runs over several lines"):
        Glossary.parse('term,also\nnicu,"baby icu|\npreemie unit"\natm,cash machine\n')
    with pytest.raises(SettingError, match="expected .term, .everyday word"):
        Glossary((("pediatrics", "kids"),))  # a string where a tuple of words belongs


def test_a_glossary_file_is_read_and_a_missing_or_binary_one_handled(tmp_path):
    assert len(Glossary.read(tmp_path / "glossary.csv")) == 0
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(SettingError, match="not a file"):
        Glossary.read(tmp_path / "folder.csv")
    (tmp_path / "glossary.csv").write_text("\ufeff" + SAMPLE, encoding="utf-8")  # as a spreadsheet saves it
    assert Glossary.read(tmp_path / "glossary.csv").terms_for("whats your aba") == ["routing number"]
    (tmp_path / "glossary.csv").write_bytes(b"term,also\n\xff\xfe\x00bad")
    with pytest.raises(SettingError, match="not UTF-8"):
        Glossary.read(tmp_path / "glossary.csv")


@pytest.mark.parametrize("domain", ["bank", "hospital"])
def test_every_pack_term_is_written_as_its_documents_write_it(domain):
    """A glossary term the documents never use would add a word the search cannot meet."""
    from index.ingest import load_document

    pack = load_pack(domain)
    glossary = Glossary.read(pack.root / "glossary.csv")
    assert len(glossary) >= 30
    documents = [load_document(p) for p in sorted(pack.docs_dir.iterdir())]
    read = " ".join(f"{d.title} {' '.join(s.headings)} {s.text}" for d in documents for s in d.sections)
    read = " ".join(read.lower().replace("\u2019", "'").split())
    missing = [term for term, _ in glossary.entries if term not in read]
    assert not missing, missing


def test_an_everyday_word_finds_the_documents_sentence_and_confidence_stays_on_the_customers_words(bank_bot):
    """"bounced" is what the fee schedule calls a returned item: with the glossary the $12 fee for a deposited check
    returned unpaid is in the evidence; without it the evidence is stop payments and the NSF fee. How sure the
    evidence is does not move: the added term is in the documents by construction."""
    question = "somebody's check bounced after I deposited it - what's your charge?"
    glossary = bank_bot.glossary
    assert "returned item" in glossary.terms_for(question)
    with_terms = bank_bot._find_evidence(question, [], bank_bot.config)[1]
    try:
        bank_bot.glossary = Glossary()
        without = bank_bot._find_evidence(question, [], bank_bot.config)[1]
    finally:
        bank_bot.glossary = glossary
    assert any("$12" in e.text and "returned" in e.text for e in with_terms.evidence)
    assert not any("$12" in e.text for e in without.evidence)
    assert with_terms.probability == without.probability
    # what was searched for the evidence, and how the customer's own words scored (an off-topic message is
    # answered only on those): kept beside the evidence
    assert with_terms.searched.endswith("(returned item)") and without.searched == ""
    assert with_terms.own_score == without.evidence[0].score
    response = bank_bot.respond(question)
    assert "$12" in response.answer
    assert response.query.endswith("(returned item)")  # the reviewer sees what was searched


def test_the_glossary_setting_turns_it_off(data_dir, bank_bot):
    from assistant import Assistant, AssistantConfig

    bot = Assistant(AssistantConfig(domain="bank", data_dir=data_dir, glossary=False, answer_mode="quote"),
                    embedder=bank_bot.embedder)
    assert len(bot.glossary) == 0
    assert AssistantConfig.load(env={"RA_GLOSSARY": "off"}).glossary is False


def test_spelling_correction_leaves_the_glossarys_own_words_alone(bank_bot):
    """"zelle" and "venmo" are names the documents lack on purpose: corrected, they became "belle" and "venom"
    and the glossary never saw them. A misspelling the glossary lists for its own term is still corrected."""
    glossary = Glossary.parse("term,also\nquickpay,zelle|venmo\nprescription,perscription\n")
    fixes = {"zelle": "belle", "venmo": "venom", "perscription": "prescription", "quickpay": "quickpay"}
    assert glossary.spelling_exceptions(lambda w: fixes.get(w, w)) == {"zelle", "venmo"}
    assert {"zelle", "venmo"} <= bank_bot.searcher.keep
    read = bank_bot.read("can i send money with zelle or venmo")
    assert "zelle" in read and "venmo" in read, read
    assert bank_bot.read("whats the quikpay limit") != "whats the quikpay limit"  # other words are still corrected
