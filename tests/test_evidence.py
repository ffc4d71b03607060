"""Evidence-first answers on the real packs, the real index and the real bundled models."""

from __future__ import annotations

import re

import numpy as np

from assistant.answering.compose import compose, quote
from assistant.answering.evidence import (
    Evidence,
    EvidenceSelector,
    asked_kinds,
    channel_missing,
    opposite_instead,
    places_missing,
    row_missing,
    term_missing,
    terms,
    units,
    units_with_heads,
)
from assistant.answering.verify import (
    SentenceCheck,
    dropped_qualifiers,
    misplaced_figures,
    restates,
    strip_labels,
)
from assistant.compliance.audit import AuditLog
from assistant.llm.generate import GenerationSettings
from assistant.packs import PACKS_DIR
from assistant.understanding.routing import asks_about, asks_for_action


def test_units_rejoin_wrapped_lines_and_read_tables():
    text = ("## Daily limits\n\n| Transaction type | Daily limit |\n|---|---|\n| ATM cash withdrawals | $1,000 |\n\n"
            "Contact Estate Services at\n1-800-555-0175 or write to P.O. Box 4430, Hartwell.\n- Free: balance inquiries")
    got = units(text)
    assert "ATM cash withdrawals: $1,000" in got
    assert "Contact Estate Services at 1-800-555-0175 or write to P.O. Box 4430, Hartwell." in got
    assert not any(u.startswith(("#", "|")) for u in got)
    # a line that ends on "p.m." goes on when the next one starts in lower case (a PDF's line break)
    assert units("A nurse will call between 2:00 p.m.\nand 6:00 p.m., to confirm.\nOpen 8 a.m. to 5 p.m.\n"
                 "Closed on Sundays.") == ["A nurse will call between 2:00 p.m. and 6:00 p.m., to confirm.",
                                        "Open 8 a.m. to 5 p.m.", "Closed on Sundays."]


def test_rows_of_an_html_table_are_units_of_their_own():
    """An HTML table reads as lines "cell | cell" without a border: each row is one unit, never glued to the row
    above because that one was long (the ICU's visiting hours had been read as the end of the general units' row)."""
    text = ("Unit | Location | Hours | Visitors at the bedside\n"
            "General inpatient units (medical/surgical) | Main Tower, Floors 6 to 8 | 8:00 a.m. to 8:00 p.m. daily | "
            "2 at a time\n"
            "Intensive Care Unit (ICU) and Cardiac ICU | Main Tower, Floor 3 | 9:00 a.m. to 9:00 p.m. daily; visits "
            "pause 7:00 to 7:30 p.m. for nursing shift change | 2 at a time; no visitors under age 12\n"
            "Children under 12 may not visit the ICU.")
    got = units(text)
    assert "General inpatient units (medical/surgical): Main Tower, Floors 6 to 8: 8:00 a.m. to 8:00 p.m. daily: 2 at a time" in got
    assert any(u.startswith("Intensive Care Unit (ICU) and Cardiac ICU: Main Tower, Floor 3: 9:00 a.m.") for u in got)
    assert got[-1] == "Children under 12 may not visit the ICU."


def test_a_unit_knows_the_heading_in_capitals_it_comes_under():
    text = ("meal, charged to a card.\n\nGIFT SHOP\nLocation: Main Tower lobby, Floor 1.\nHours: Monday to Friday "
            "9:00 a.m. to 7:00 p.m.; Saturday and Sunday\n10:00 a.m. to 4:00 p.m.\n\nCHAPEL AND SPIRITUAL CARE\n"
            "The Interfaith Chapel is open 24 hours a day.")
    got = dict(units_with_heads(text))
    assert got["Hours: Monday to Friday 9:00 a.m. to 7:00 p.m.; Saturday and Sunday 10:00 a.m. to 4:00 p.m."] == "GIFT SHOP"
    assert got["The Interfaith Chapel is open 24 hours a day."] == "CHAPEL AND SPIRITUAL CARE"
    assert got["meal, charged to a card."] == ""  # a passage cut mid-section: no heading over it


def test_a_table_cell_or_a_banner_in_capitals_is_not_a_heading():
    # a PDF table row wrapped over two lines, and the capitals banner of a privacy notice
    text = ("FEES\nCopy of a statement: $5 each.\nOutgoing international wire (cut-off 2:00 p.m.\nET) $45\n"
            "Incoming wire: $15 each.\nTHIS NOTICE DESCRIBES HOW MEDICAL INFORMATION ABOUT YOU MAY BE USED AND\n"
            "DISCLOSED. PLEASE REVIEW IT CAREFULLY.\nWe will notify you within 60 days of a breach.")
    got = dict(units_with_heads(text))
    assert got["Incoming wire: $15 each."] == "FEES"
    assert got["We will notify you within 60 days of a breach."] == "FEES"


def test_rows_of_a_price_table_from_a_pdf_are_units_of_their_own():
    # pypdf gives a table row per line, with no full stop to end it, and a price alone on a line after a cell
    # cut over two lines
    text = ("Overdraft and returned items\nOverdraft fee when the account is overdrawn by $50 or less at the end of "
            "the\nbusiness day\n$0\nReturned item (NSF) fee - item declined or returned unpaid $0\nOverdraft "
            "Protection transfer from linked savings or money market $10 per day a transfer is made\nDeposited item "
            "returned (a check you deposited is returned unpaid) $12 per item\nATM withdrawals are paid into "
            "overdraft only if you have opted in to Debit Card Overdraft Service.")
    assert units(text) == [
        "Overdraft and returned items",
        "Overdraft fee when the account is overdrawn by $50 or less at the end of the business day $0",
        "Returned item (NSF) fee - item declined or returned unpaid $0",
        "Overdraft Protection transfer from linked savings or money market $10 per day a transfer is made",
        "Deposited item returned (a check you deposited is returned unpaid) $12 per item",
        "ATM withdrawals are paid into overdraft only if you have opted in to Debit Card Overdraft Service."]
    # prose wrapped at a width still reads as one sentence
    assert units("A stop payment costs $30\nper request and lasts six months.") == [
        "A stop payment costs $30 per request and lasts six months."]


def test_a_dotted_leader_table_row_is_one_unit():
    text = ("Key times\n\n  Acknowledgment of your complaint ............ within 2 business days\n"
            "  Final response (target) ..................... within 15 business days\n")
    assert units(text) == ["Acknowledgment of your complaint: within 2 business days",
                           "Final response (target): within 15 business days"]


def test_a_figure_on_its_own_line_under_a_colon_joins_the_sentence():
    text = ("## Our routing number\n\nOur routing number (also called the ABA number) is:\n\n**021555013**\n\n"
            "Use this routing number for:\n\n- direct deposit of your paycheck;\n\n24/7 GRAB-AND-GO MARKET\n\n"
            "Open all day.\n")
    assert units(text) == ["Our routing number (also called the ABA number) is: 021555013",
                           "Use this routing number for:", "direct deposit of your paycheck;", "Open all day."]
    # the bank's own document: the number was dropped (one word is not a unit), so no evidence held it
    doc = (PACKS_DIR / "bank" / "docs" / "direct_deposit_routing_number.md").read_text(encoding="utf-8")
    assert any("ABA number" in u and u.endswith("021555013") for u in units(doc))


def test_asked_kinds():
    assert asked_kinds("how much is an international wire")
    assert not asked_kinds("tell me about checking accounts")
    durations = asked_kinds("how many days do i have before it rolls over")
    for fact in ("a 10-day grace period", "1 to 2 pay cycles", "allow 3 business days", "2-3 weeks"):
        assert any(k.search(fact) for k in durations), fact
    assert not any(k.search("at 4:00 p.m.") for k in durations)
    assert any(k.search("call the 24/7 Nurse Advice Line") for k in asked_kinds("when can i call the nurse line"))
    times = asked_kinds("what's the latest i can send a wire today")
    for fact in ("Outgoing domestic wire: $30: 4:00 p.m.: Same business day", "open 8:00 a.m. to 8:00 p.m. daily",
                 "we stop registering at 7:30 p.m.", "until 9pm", "from 9 am"):
        assert any(k.search(fact) for k in times), fact  # "p.m." written with its dots, however it is followed
    assert not any(k.search("I am 9 and a half") for k in times)
    # closing an account is not a time of day; closing time is
    assert not any(k.search("before 8:00 p.m. ET") for k in asked_kinds("can i just close my checking thru the app"))
    assert any(k.search("until 5:00 p.m.") for k in asked_kinds("what time do you close on saturday"))
    assert any(k.search("at least 3 business days before") for k in asked_kinds("how far ahead do i have to ask"))
    pays = asked_kinds("I'm on Premier. Does the checking part actually pay any interest, and if so what?")
    assert any(k.search("Interest: 0.05% APY") for k in pays) and not any(k.search("Fee: $25") for k in pays)
    dates = asked_kinds("visiting in january, do i need a mask?")  # a month or a holiday asks for a date
    for fact in ("During respiratory virus season, December 1 to March 31, masks are required",
                 "Closed on New Year's Day, Thanksgiving Day and Christmas Day."):
        assert any(k.search(fact) for k in dates), fact
    assert not any(k.search("You may bring one guest.") for k in dates)
    rates = asked_kinds("is there any interest on the payment plan?")  # "no interest" answers it, as "free" a price
    for fact in ("payment plans with no interest, no fees", "an interest-free payment plan", "Variable rate: 7.24% APR"):
        assert any(k.search(fact) for k in rates), fact
    addresses = asked_kinds("What is the address of the Millbrook Riverside branch?")
    for fact in ("Millbrook Riverside: 1450 River Road, Millbrook, CT 06110", "to P.O. Box 4410, Riverton, OH"):
        assert any(k.search(fact) for k in addresses), fact
    for other in ("The drive-up window is open Monday to Friday 8:30 a.m.", "call 1-800-555-0122"):
        assert not any(k.search(other) for k in addresses), other  # a number is not an address
    # the customer's own address is the topic, not what is asked; "when" takes a length of time too
    when = asked_kinds("updated my mailing address in the app, when does that kick in")
    assert any(k.search("Mailing address changes take effect within 1 business day.") for k in when)
    assert not any(k.search("1450 River Road") for k in when)


def test_compounds_match_however_they_are_spelled():
    assert {"wifi", "email", "copay"} <= set(terms("Free guest Wi-Fi; e-mail us about your co-pay"))
    assert {"wifi", "email", "copay"} <= set(terms("whats the wifi, can i email about my copay"))
    assert terms("no compounds here") == ["compound", "here"]  # nothing added without a hyphen


def test_wifi_meets_wi_fi_in_the_hospital_documents(hospital_bot):
    """"wifi" in the question, "Wi-Fi" in the documents: the words meet, and the network's sentence ranks first."""
    question = "whats the wifi network called"
    pool = hospital_bot._find_evidence(question, [], hospital_bot.config)[2]
    ranked = hospital_bot.selector.score(question, pool)
    assert "StBrigids-Guest" in ranked[0][2] and ranked[0][3]["lexical"] > 0


def test_a_sentence_that_qualifies_the_best_one_comes_with_it(hospital_bot):
    """The rule and its exception: "a pre-op nurse will call you 1 business day before" is not quoted without
    "If your surgery is on a Monday, we call on the Friday before." """
    found = hospital_bot._find_evidence("my knee surgery is on a monday, when is the pre-op nurse going to call me",
                                        [], hospital_bot.config)[1]
    texts = [e.text for e in found.evidence]
    assert "business day before" in texts[0] and any("Friday before" in t for t in texts[1:]), texts


def test_selectors_of_one_encoder_share_their_sentence_vectors(bank_bot):
    """Another Assistant on the same encoder (another pack, a UI settings variant) reuses the vectors already
    computed; an encoder run another way keeps its own."""
    from index.embed import Embedder

    other = EvidenceSelector(bank_bot.embedder)
    text = "Free guest Wi-Fi is available throughout the campus."
    vector = bank_bot.selector._vectors([text])[0]
    assert other._cache is bank_bot.selector._cache and text in other._cache
    assert np.array_equal(other._vectors([text])[0], vector)
    assert EvidenceSelector(Embedder(backend="torch"))._cache is not other._cache


def test_evidence_selection_on_real_pack_questions(bank_bot, hospital_bot):
    for bot, question, fact in [
        (bank_bot, "How much does it cost to send an international wire?", "$45"),
        (bank_bot, "whats the routing number i give my job for direct deposit", "021555013"),
        (hospital_bot, "what number do i call for the pharmacy refill line", None),
    ]:
        query, found, pool = bot._find_evidence(question, [], bot.config)
        evidence = found.evidence
        assert query == question and len(pool) > 2
        assert 1 <= len(evidence) <= bot.selector.weights.max_items
        assert all(e.score >= evidence[-1].score for e in evidence)
        if fact:
            assert any(fact in e.text for e in evidence), [e.text for e in evidence]


def test_unanswered_in_domain_question_is_refused_or_flagged(bank_bot):
    """A near-miss (business checking; the documents cover personal checking only) is never answered as if
    the documents said so: refused, or its closest evidence shown as such, with nothing generated."""
    response = bank_bot.respond("Do you offer business checking accounts for an LLC?")
    if response.refused:
        assert not response.evidence and response.answer == bank_bot.pack.reply("no_answer")
    else:
        assert response.caveat and response.evidence
        assert response.answer.startswith(bank_bot.not_exact_reply())
        assert {s["status"] for s in response.sentences} == {"quoted"}
        assert response.stats["new_tokens"] == 0


def test_invented_figure_is_removed(bank_bot):
    """A real generation told to invent a fee: the verifier removes that sentence, the quote stays."""
    evidence = bank_bot._find_evidence("How much does it cost to send an international wire?", [],
                                       bank_bot.config)[1].evidence
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Repeat this sentence exactly: A wire transfer costs $99.50."}]
    text = "".join(bank_bot.generator.stream(messages, GenerationSettings(max_new_tokens=40)))
    assert "99.50" in text, text
    checks = bank_bot.verifier.check(text, "How much is a wire?", [(e.n, e.text) for e in evidence])
    invented = [c for c in checks if "99.50" in c.text]
    assert invented and all(c.status == "removed" and "figure" in c.reason for c in invented)
    answer, statuses = compose(checks, evidence)
    assert "99.50" not in answer and "$45" in answer
    assert any(s.status == "quoted" for s in statuses)


def test_figure_said_of_something_else():
    evidence = ["An outgoing domestic wire costs $30 and an outgoing international wire costs $45.",
                "Branches: Monday to Friday 9:00 a.m. to 5:00 p.m., Saturday 9:00 a.m. to 1:00 p.m., closed Sunday."]
    assert misplaced_figures("An international wire costs $30.", evidence, "") == ["$30"]
    assert misplaced_figures("An international wire costs $45.", evidence, "") == []
    assert misplaced_figures("On Sunday branches open at 9:00 a.m.", evidence, "")
    assert not misplaced_figures("On Saturday branches open at 9:00 a.m.", evidence, "")


def test_figure_without_the_qualifier_that_tells_it_apart():
    evidence = ["Incoming international wire: $20.", "Outgoing international wire: $45."]
    assert dropped_qualifiers("An international wire costs $20.", evidence) == ["$20"]
    assert dropped_qualifiers("It costs $20.", evidence, "how much is an international wire?") == ["$20"]
    assert dropped_qualifiers("An incoming international wire costs $20.", evidence) == []
    assert dropped_qualifiers("It costs $20.", evidence, "What do you charge for an incoming international wire?") == []
    # a shortened label that fits no other figure is still that figure
    cards = ["Expedited delivery in 2 business days costs $25.", "Standard delivery in 7 to 10 business days is free."]
    assert dropped_qualifiers("Expedited delivery costs $25.", cards) == []


def test_copied_labels_and_restatements():
    labels = ["Wire Transfers › Fees", "Wire Transfers"]
    assert strip_labels("Wire Transfers › Fees: An incoming wire costs $15.", labels) == "An incoming wire costs $15."
    assert strip_labels("Yes. Wire Transfers: It is free.", labels) == "Yes. It is free."
    assert strip_labels("Our wire transfers are free.", labels) == "Our wire transfers are free."
    assert restates("Incoming wires cost $15.", "An incoming domestic wire costs $15.")
    assert not restates("Incoming wires cost $20.", "An incoming domestic wire costs $15.")
    assert not restates("Wires cost $15.", "An incoming domestic wire sent from abroad costs $15 on weekdays.")


def test_restated_sentence_left_to_the_quote():
    evidence = [Evidence(n=1, text="An outgoing international wire costs $45.", source="faq.csv", title="Faq",
                         section="Wires", score=0.7)]
    checks = [SentenceCheck("An outgoing international wire costs $45.", "restated", "the quote [1] says the same",
                            cites=(1,)),
              SentenceCheck("You can send it online.", "verified", cites=(1,))]
    answer, statuses = compose(checks, evidence)
    assert answer.startswith("You can send it online [1].") and answer.count("$45") == 1
    assert [s.status for s in statuses] == ["verified", "quoted", "restated"]


def test_quote_fallback_when_nothing_survives():
    evidence = [Evidence(n=1, text="An outgoing international wire costs $45.", source="faq.csv", title="Faq",
                         section="How much does it cost to send a wire?", score=0.7)]
    answer, statuses = compose([SentenceCheck("It is free.", "removed", "words not in the evidence")], evidence)
    assert answer == quote(evidence)
    assert answer.startswith("From *Faq › How much does it cost to send a wire?*:") and answer.endswith("[1]")
    assert [s.status for s in statuses] == ["quoted", "removed"]


def test_answer_json_shows_evidence_and_sentence_status(bank_bot):
    response = bank_bot.respond("How much does it cost to send an international wire?")
    data = response.to_dict()
    assert data["answer_mode"] == "evidence" and not data["refused"] and not data["caveat"]
    assert data["evidence"] and {"n", "text", "source"} <= set(data["evidence"][0])
    assert data["sentences"] and all(s["status"] in ("verified", "restated", "quoted", "removed")
                                     for s in data["sentences"])
    plain = re.sub(r"\s*\[\d+\]", "", response.answer)
    shown = [s for s in data["sentences"] if s["status"] in ("verified", "quoted")]
    assert shown and all(s["text"].rstrip(".?!;,") in plain for s in shown)
    assert response.answer.index("From *") >= 0  # the document's own words always stay in the answer
    assert "$45" in response.answer


def test_quote_mode_needs_no_llm(data_dir, bank_bot):
    from assistant import Assistant, AssistantConfig

    bot = Assistant(AssistantConfig(domain="bank", data_dir=data_dir, answer_mode="quote"),
                    embedder=bank_bot.embedder)
    response = bot.respond("What's the SWIFT code for an incoming international wire?")
    assert "generator" not in bot.__dict__  # the LLM was never loaded
    assert "NBFBUS33" in response.answer and response.answer.startswith("From *")


def test_process_questions_are_answered_requests_start_the_flow(bank_bot):
    assert asks_about("how long does it take to get an answer to a complaint?")
    assert not asks_about("I want to file a complaint about the branch manager")
    assert asks_for_action("my card was stolen this morning")
    asked = bank_bot.respond("How long does it take to get an answer to a complaint?")
    assert asked.action == "answer" and asked.offer == "complaint" and asked.ticket is None
    assert "15 business days" in asked.answer or "2 business days" in asked.answer
    wanted = bank_bot.respond("I want to file a complaint about how I was treated at the branch")
    assert wanted.action == "handoff" and wanted.ticket
    lost = bank_bot.respond("I lost my debit card on the train")
    assert lost.action == "flow"


def test_a_need_inside_a_what_question_asks_about_the_process(bank_bot):
    """"what do I need to bring" asks what the process requires; "I need to" alone or "can you" asks for it."""
    assert asks_about("just got married, what paperwork do i need to bring to change my last name")
    assert not asks_about("I need to change my last name on my accounts")
    assert not asks_about("can you please freeze my card, what happens after that")
    asked = bank_bot.respond("I'm getting divorced and going back to my maiden name, what do I need to bring "
                             "to update it on my accounts?")
    assert asked.action == "answer" and asked.offer == "update_contact_details" and asked.evidence
    wanted = bank_bot.respond("I want to change the last name on my account")
    assert wanted.action == "flow"


def test_saying_what_you_mean_to_do_beside_a_question_asks_the_question(hospital_bot):
    """"I'd like to <verb>" is a request only for what a flow or a person does (file, report, talk, book...) or
    a thing ("I need a new card"); with another verb beside a question it says what the user means to do."""
    filming = ("I'd like to film my moms doctor explaining her treatment on my phone so I can show my brother. "
               "is that ok")
    assert asks_about(filming)
    assert asks_about("Which government agency supervises Northbridge? I'd like to go over your heads about this.")
    assert asks_about("i want to go to the ER, where do i park?")
    for wanted in ("I want to file a complaint, how long will it take?", "i need a new card, how long does it take",
                   "i need to see a doctor today, when are you open", "I want to close my account",
                   "i wanna complain about my bill. who do i call"):
        assert not asks_about(wanted), wanted
    response = hospital_bot.respond(filming)
    assert response.action == "answer" and response.ticket is None  # a complaint ticket was opened before


def test_a_question_typed_without_punctuation_is_still_a_question(bank_bot):
    """Customers often type no commas or question marks: the question inside is found by its word order."""
    assert asks_about("left my wallet in an uber and my card is gone its 2am who do i even call right now")
    assert asks_about("just got married and want my new last name on my accounts what paperwork do i need to bring")
    assert asks_about("not happy with how you handled my complaint is there anyone higher up i can talk to")
    # an indirect question (subject first) is not one; a request or a situation alone still starts the action
    assert not asks_about("I am unhappy with how my issue was handled")
    assert not asks_about("i want to file a complaint about how long my refund took")
    assert asks_about("sent in a complaint last week how long until i get something in writing back")
    assert asks_for_action("my card was stolen")
    asked = bank_bot.respond("im in rome and somebody pickpocketed my debit card what number do i call from over here")
    assert asked.action == "answer" and asked.offer == "lost_stolen_card" and asked.ticket is None
    assert "1-800" in asked.answer or "+1" in asked.answer



def test_a_question_asked_indirectly_is_answered(bank_bot, hospital_bot):
    """"I'd like to know...", "can you tell me how..." ask to be told about a process, not for it to start."""
    for asked in ("I'd like to know how to dispute a charge", "please tell me how to block my card",
                  "I want to know what happens after I file a complaint",
                  "im wondering whether there is a fee to close my account"):
        assert asks_about(asked), asked
    assert not asks_about("I'd like to dispute a charge on my statement")
    assert not asks_about("i was wondering if i could speak to a manager")  # asks for a person
    told = bank_bot.respond("I'd like to know what happens after I file a complaint")
    assert told.action == "answer" and told.offer == "complaint" and told.ticket is None and told.evidence
    told = hospital_bot.respond("I'd like to know how to make a complaint about my care")
    assert told.action == "answer" and told.ticket is None and told.evidence
    person = bank_bot.respond("i was wondering if i could speak to a manager")
    assert person.action == "handoff" and person.ticket

def test_greetings_and_thanks_around_a_question_are_set_aside(hospital_bot, data_dir):
    from assistant.understanding.pleasantries import strip_pleasantries

    assert strip_pleasantries("hi there! can my 10 year old visit the ICU? thanks so much 🙏") == \
        "can my 10 year old visit the ICU?"
    assert strip_pleasantries("Hello, good morning. What is the routing number? Thank you in advance") == \
        "What is the routing number?"
    for kept in ("hi", "thanks!", "thank you for your help", "Hiking trails near the hospital?"):
        assert strip_pleasantries(kept) == kept  # nothing left but the pleasantry, or not a greeting at all
    message = "hi there! if you guys get hacked and my info leaks how soon do you have to tell me? thanks so much 🙏"
    plain = hospital_bot.respond("if you guys get hacked and my info leaks how soon do you have to tell me?")
    wrapped = hospital_bot.respond(message, session_id="pleasantries")
    assert wrapped.action == "answer" and wrapped.intent != "greeting"
    assert [e["text"] for e in wrapped.evidence] == [e["text"] for e in plain.evidence] and wrapped.evidence
    rows = [r for r in AuditLog(data_dir / "audit.sqlite").turns() if r["session_id"] == "pleasantries"]
    assert rows[0]["message"].startswith("hi there!")  # the audit keeps what was typed


def test_emergency_stays_rule_first(hospital_bot):
    response = hospital_bot.respond("what are your visiting hours, my dad has crushing chest pain right now")
    assert response.action == "emergency" and not response.evidence


def test_dummy_pronoun_question_is_a_new_topic(bank_bot):
    history = [("What routing number do I give my employer for direct deposit?",
                bank_bot.respond("What routing number do I give my employer for direct deposit?").answer)]
    query, found, _ = bank_bot._find_evidence(
        "how much does it cost to send money to my sister in another country by wire", history, bank_bot.config)
    evidence = found.evidence
    assert "routing" not in query.lower() and "deposit" not in query.lower()
    assert evidence and any("$45" in e.text or "international" in e.text.lower() for e in evidence)


def test_dummy_pronoun_question_is_judged_on_its_own_words(bank_bot):
    """With the earlier topic put in place of its dummy "it", the question scored higher on the card's own sentences
    ("Expedited delivery ... costs $25") than alone on the statement copies' fee: each reading's best sentence is
    now scored against the message as written."""
    first = "how do i activate my new debit card"
    history = [(first, bank_bot.respond(first, answer_mode="quote").answer)]
    message = "how much does it cost to get a copy of an old statement?"
    query, found, _ = bank_bot._find_evidence(message, history, bank_bot.config)
    assert query == message, query
    assert found.evidence and "$5 each" in found.evidence[0].text, [e.text for e in found.evidence]


def test_real_followup_keeps_the_topic(bank_bot):
    first = "How do I send an international wire?"
    history = [(first, bank_bot.respond(first).answer)]
    query, found, _ = bank_bot._find_evidence("is there a fee for that?", history, bank_bot.config)
    evidence = found.evidence
    assert query != "is there a fee for that?" and "wire" in query.lower()
    assert evidence and any("$45" in e.text for e in evidence), [e.text for e in evidence]


def test_followup_without_a_pronoun_finds_the_earlier_topic(hospital_bot):
    # no pronoun, no "and": the message alone finds no sure answer, so it is searched again with the topic
    first = "what are the visiting hours for the icu"
    history = [(first, hospital_bot.respond(first).answer)]
    response = hospital_bot.respond("can my 8 year old come with me?", history)
    assert response.action == "answer" and not response.refused
    assert "icu" in response.query.lower()
    assert any("under 12" in e["text"] and "ICU" in e["text"] for e in response.evidence), response.evidence


def test_a_new_question_that_stands_alone_keeps_its_own_answer(hospital_bot):
    first = "how do i get a copy of my medical records on a cd"
    history = [(first, hospital_bot.respond(first).answer)]
    alone = hospital_bot.respond("What are the Urgent Care hours?")
    after = hospital_bot.respond("What are the Urgent Care hours?", history)
    assert after.query == "What are the Urgent Care hours?"
    assert [e["text"] for e in after.evidence] == [e["text"] for e in alone.evidence]


def test_a_sentence_that_leans_on_the_one_before_brings_it(hospital_bot):
    # "On other holidays ..." alone would read as if the pharmacy were open on Christmas Day
    first = "where is the outpatient pharmacy"
    history = [(first, hospital_bot.respond(first).answer)]
    response = hospital_bot.respond("is it open on christmas?", history)
    texts = [e["text"] for e in response.evidence]
    assert "Closed on New Year's Day, Thanksgiving Day and Christmas Day." in texts, texts
    other = next(i for i, t in enumerate(texts) if t.startswith("On other holidays"))
    assert texts[other - 1].startswith("Closed on New Year's Day")  # read in the documents' order


def test_a_place_the_evidence_does_not_name_is_only_the_closest_match(hospital_bot):
    unit = Evidence(n=1, text="Outpatient clinics: Monday to Friday 8:00 a.m. to 5:00 p.m.", source="x.md",
                    title="Hours", section="Clinics", score=0.7)
    assert places_missing("what are the hours of the physical therapy clinic", unit) == ["therapy", "physical"]
    assert places_missing("when are your outpatient clinics open", unit) == []
    assert places_missing("what time do the labs open, bringing my son for labs", unit) == []  # no name before
    # the name after the place word: a town ("a branch in new haven"), a lot's letter
    branch = Evidence(n=1, text="Northbridge Federal Bank has three branches in Connecticut.", source="b.html",
                      title="Branch Locations", section="", score=0.7)
    assert places_missing("is there a northbridge branch in new haven? just moved there", branch) == ["new", "haven"]
    assert places_missing("is the branch in hartwell open saturday", branch) == ["hartwell"]  # one word of a town
    assert places_missing("is there a branch in the area", branch) == []
    lot = Evidence(n=1, text="Emergency Department: Lot A on North Drive, next to the Emergency entrance.",
                   source="p.md", title="Parking", section="Where to park", score=0.7)
    assert places_missing("where is lot b? the emergency lot was full", lot) == ["lot b"]
    assert places_missing("where is lot a", lot) == []
    response = hospital_bot.respond("what are the hours of the physical therapy clinic")
    assert response.caveat or response.refused or response.action != "answer", response.answer
    lot_b = hospital_bot.respond("where is lot b? the emergency lot was full", answer_mode="quote")
    assert lot_b.caveat or lot_b.refused, lot_b.answer
    pharmacy = hospital_bot.respond("What are the Outpatient Pharmacy's weekend hours?")
    assert not pharmacy.caveat and "9:00 a.m. to 5:00 p.m." in pharmacy.answer


def test_a_rule_for_every_place_of_a_kind_covers_the_one_named():
    """"All three branches are open ..." answers for the Fairhaven branch and "your first visit with a new clinic"
    for the cardiology clinic; a sentence about another named place, or about a group that is not every place
    ("General inpatient units"), still does not. Words that describe rather than name ("my old pharmacy", "a
    government office") are not names."""
    def unit(text):
        return Evidence(n=1, text=text, source="x.md", title="Hours", section="", score=0.7)

    assert places_missing("is the fairhaven branch open saturdays?",
                          unit("All three branches are open Monday to Friday 9:00 a.m. to 5:00 p.m.")) == []
    assert places_missing("first time at the new cardiology clinic, how early should i show up",
                          unit("Arrive 30 minutes early for your first visit with a new clinic.")) == []
    assert places_missing("what are the physical therapy clinic's hours",
                          unit("The Urgent Care clinic is open every day 8:00 a.m. to 8:00 p.m.")) == ["therapy", "physical"]
    assert places_missing("visiting hours on the psych unit",
                          unit("General inpatient units (medical/surgical): 8:00 a.m. to 8:00 p.m.")) == ["psych"]
    assert places_missing("how long to move my prescriptions from my old pharmacy",
                          unit("Transfers usually take 1 business day.")) == []
    assert places_missing("is there a government office i can complain to",
                          unit("You may also file a complaint with the Office for Civil Rights.")) == []


def test_caution_moves_only_the_flag_threshold(bank_bot):
    """A stricter setting shows more evidence as "the closest the documents come", never less, and changes
    nothing else: the same evidence, the same probability. Customer-phrased fit/ questions, answerable and not."""
    from dataclasses import replace

    questions = ["whats the rate on a 48 month cd",  # the FAQ lists 6 to 60 months, not 48
                 "is there a fee if my savings account sits inactive for a year",
                 "how much does it cost to order a new box of checks",
                 "need someone who does sign language for my mortgage meeting at the branch next week, how far "
                 "ahead do i have to ask for that?",
                 "what's the daily limit for taking cash out at an atm with my debit card"]
    flagged: dict[str, list[bool]] = {}
    found: dict[str, list] = {}
    for level in ("relaxed", "standard", "cautious", "strict"):
        config = replace(bank_bot.config, caution=level, answer_mode="quote")
        for q in questions:
            _, selection, _ = bank_bot._find_evidence(q, [], config)
            flagged.setdefault(q, []).append(selection.flagged)
            found.setdefault(q, []).append(([e.text for e in selection.evidence], round(selection.probability, 6)))
            threshold = bank_bot.selector.weights.flag_threshold(level)
            if selection.evidence and selection.probability < threshold:
                assert selection.flagged, (level, q)
    for q in questions:
        assert len(set(map(str, found[q]))) == 1, q  # the evidence and its probability do not depend on caution
        assert flagged[q] == sorted(flagged[q]), (q, flagged[q])  # once flagged, flagged at every stricter level
    counts = [sum(f[i] for f in flagged.values()) for i in range(4)]
    assert counts[3] > counts[1], counts  # strict catches near-misses that standard lets through
    assert not flagged[questions[-1]][1]  # a plainly answered question is not flagged at the default
    response = bank_bot.respond(questions[0], caution="strict", answer_mode="quote")  # a per-call setting
    assert response.caveat and "closest" in response.answer.lower(), response.answer


def test_a_fax_or_email_asked_for_must_be_in_the_evidence(hospital_bot):
    phone = Evidence(n=1, text="Call the Billing Office at 1-800-555-0192, Monday to Friday 8:00 a.m. to 5:00 p.m.",
                     source="billing.html", title="Billing", section="Questions about your bill", score=0.7)
    fax = Evidence(n=2, text="Fax: 1-800-555-0194.", source="records.md", title="Records", section="Requests",
                   score=0.6)
    assert channel_missing("what's the fax number for the billing office", [phone])
    assert not channel_missing("what's the fax number for medical records", [phone, fax])
    assert channel_missing("is there an email for the billing office I can write to instead of calling", [phone])
    assert not channel_missing("what number do i call about my bill", [phone])  # a phone number asked: it is there
    response = hospital_bot.respond("is there an email for the billing office I can write to instead of calling",
                                    answer_mode="quote")
    assert response.caveat or response.refused, response.answer  # the phone number is only the closest answer
    records = hospital_bot.respond("whats the fax number to send in the records release form", answer_mode="quote")
    assert "1-800-555-0194" in records.answer and not records.caveat


def test_a_term_the_documents_do_not_offer_is_only_the_closest_answer(bank_bot):
    rates = Evidence(n=1, text="As of November 3, 2025: 6 months 4.00% APY, 12 months 4.25% APY, 18 months 4.10% APY, "
                     "24 months 3.90% APY and 60 months 3.50% APY.", source="faq.csv", title="Faq",
                     section="What are your current CD rates?", score=0.8)
    assert term_missing("whats the rate on a 48 month cd", [rates])
    assert term_missing("rate for a 3-year CD?", [rates])  # 36 months: not listed
    assert not term_missing("rate on an 18 mo cd?", [rates])
    assert not term_missing("what's the rate on a 1 year cd", [rates])  # 12 months
    assert not term_missing("what are your cd rates", [rates])  # no term asked
    one = Evidence(n=1, text="There is a $25 fee if the account is closed within 90 days of opening.", source="faq.csv",
                   title="Faq", section="How do I close my account?", score=0.8)
    assert not term_missing("opened a checking 2 months ago, is there a fee to close it", [one])  # no list of terms
    # a term that names a product is also looked for in the evidence's passage (the rate table beside it)
    deposit = Evidence(n=1, text="The minimum opening deposit for any CD is $1,000 .", source="cds.html",
                       title="Savings", section="Certificates of Deposit (CDs)", score=0.7)
    table = ["Term | APY\n6 months | 4.00%\n12 months | 4.25%\n18 months | 4.10%"]
    assert term_missing("do you do a 3 month CD and what does it pay", [deposit], table)
    assert not term_missing("whats the minimum for a 12 month cd", [deposit], table)
    assert not term_missing("got the card 2 months ago, how long before an increase", [deposit], table)  # a time
    response = bank_bot.respond("whats the rate on a 48 month cd", answer_mode="quote")
    assert response.caveat or response.refused, response.answer
    answered = bank_bot.respond("whats the rate on an 18 month cd", answer_mode="quote")
    assert "4.10%" in answered.answer and not answered.caveat, answered.answer


def test_a_price_list_without_the_thing_asked_about_is_only_the_closest_answer(hospital_bot):
    def row(text: str) -> Evidence:
        return Evidence(n=1, text=text, source="prices.md", title="Price Estimates", section="Sample self-pay prices",
                        score=0.7)
    prices = [row("MRI brain without contrast: $640."), row("CT abdomen and pelvis with contrast: $520."),
              row("Established patient office visit: $120.")]
    assert row_missing("how much is an mri of the knee self pay", prices)
    assert row_missing("what's the self-pay price for an echocardiogram", prices)
    assert not row_missing("how much is a brain MRI without insurance", prices)
    assert not row_missing("what does an office visit cost for an established patient", prices)
    forms = [row("Forms completed for you (disability, FMLA, school): $15 per form."), row("Paper copies: $5.")]
    assert not row_missing("is there a fee for the hospital to fill out my FMLA paperwork", forms)
    assert not row_missing("where do i get an mri of the knee", prices)  # no price asked
    # a hyphenated word is one word of a row's name: "x-ray" alone does not name "Chest X-ray, 2 views"
    images = [row("Chest X-ray, 2 views: $95."), row("CT abdomen and pelvis with contrast: $520.")]
    assert row_missing("how much would an x-ray of my ankle be if i pay myself", images)
    assert not row_missing("how much is a chest x-ray if i pay cash", images)
    assert not row_missing("how much is a chest xray", images)
    sentence = Evidence(n=1, text="A 15-day extension costs 0.125% of the loan amount.", source="mortgages.md",
                        title="Home Loans", section="Fees and rate lock", score=0.8)
    assert not row_missing("what does it cost to extend my rate lock", [sentence, row("Rate lock: 60 days free."),
                                                                         row("Origination fee: $995.")])
    response = hospital_bot.respond("how much is an mri of the knee if i pay myself", answer_mode="quote")
    assert response.caveat or response.refused, response.answer


def test_the_opposite_of_what_is_asked_is_only_the_closest_answer(bank_bot):
    limit = Evidence(n=1, text="You can withdraw up to $1,000 per day at ATMs and make up to $5,000 in purchases per day.",
                     source="faq.csv", title="Faq", section="What is the daily ATM withdrawal limit on my debit card?",
                     score=0.8)
    assert opposite_instead("whats the most cash i can deposit at one of your atms in a day", [limit])
    assert not opposite_instead("how much cash can i take out of an atm in a day", [limit])
    assert not opposite_instead("whats the most i can withdraw with my debit card", [limit])
    both = Evidence(n=1, text="Cash deposits at our ATMs are available at once; withdrawals are limited to $1,000.",
                    source="atm.md", title="ATMs", section="Limits", score=0.8)
    assert not opposite_instead("can i deposit cash at your atms", [both])
    response = bank_bot.respond("whats the most cash i can deposit at one of your atms in a day", answer_mode="quote")
    assert response.caveat or response.refused, response.answer
    # the opposite in the headings: a debit card's ATM limit for a credit card's cash advance limit
    debit = Evidence(n=1, text="ATM cash withdrawals: $1,000.", source="debit_cards.md",
                     title="Your Northbridge Visa Debit Card", section="Daily limits", score=0.8)
    assert opposite_instead("what's the cash advance limit on my credit card?", [debit])
    assert not opposite_instead("what's the daily atm limit on my debit card?", [debit])
    # a teller's counter is not an ATM: the ATM limit is not the answer to how much a teller pays out
    assert opposite_instead("whats the most cash i can withdraw from a teller in one day", [limit])
    assert not opposite_instead("how much can i take out at the atm", [limit])
    # end to end, "what's the cash advance limit on my credit card?" was flagged by this rule while its best sentence
    # was the debit card's limit; since the larger context encoder its best sentence is the cash advance *fee*, shown
    # as sure: a near-miss lost (README, "A larger encoder for the sentence in its context")


def test_confidence_bands_follow_the_active_weights(bank_bot):
    w = bank_bot.selector.weights  # the UI's badge colours come from these, not from numbers of its own
    assert bank_bot.confidence_level(w.flag_prob) == "high"
    assert bank_bot.confidence_level((w.flag_prob + w.answerable_prob) / 2) == "medium"
    assert bank_bot.confidence_level(w.answerable_prob - 0.01) == "low"
    assert bank_bot.confidence_level(None) == "neutral"


def test_a_message_that_asks_several_questions_is_split_into_them():
    from assistant.understanding.routing import question_parts

    assert question_parts("my cd matures next week. how many days do i have before it rolls over? also, whats "
                          "the swift code for an incoming wire?") == [
        "my cd matures next week. how many days do i have before it rolls over?",  # the background stays
        "whats the swift code for an incoming wire?"]
    assert question_parts("how much is the wire fee and what time is the cutoff for domestic wires") == [
        "how much is the wire fee", "what time is the cutoff for domestic wires"]
    assert question_parts("is there a nurse i can call at 3am? Also, whats the hospital's street address, need it "
                          "for my gps") == ["is there a nurse i can call at 3am?",  # "it" is the address: its own
                                            "whats the hospital's street address, need it for my gps"]
    assert len(question_parts("who do i complain to? Also, sent in a complaint last week, how long until i hear "
                              "back")) == 2  # a question after background, without a question mark
    for one in ("i moved to florida. is the routing number different?",
                "is the pharmacy open on sundays? what hours",  # an afterthought
                "can i get something notarized at the branch and is there a charge",  # leans on the first
                "is there an inpatient psych unit and what are visiting hours there",
                "What is the monthly maintenance fee on Everyday Checking and how do I avoid it?"):
        assert question_parts(one) == [one]


def test_a_question_after_statements_is_also_read_without_them():
    from assistant.understanding.routing import shorter_readings

    assert shorter_readings("We just moved here last month. i reported a weird charge on monday. when will i hear "
                            "back?") == ["i reported a weird charge on monday. when will i hear back?",
                                         "when will i hear back?"]
    assert shorter_readings("how much is a wire? we need it today.") == []  # opens with its question
    assert shorter_readings("My wife usually does this. thanks") == []  # asks nothing
    assert shorter_readings("Sorry. is it?") == []  # too short to search alone
    # a question that points back at the statement is not read without it
    assert shorter_readings("my husbands insurance through his new job is Pinnacle Direct HMO. can i still see my "
                            "doctors at st brigids with that") == []


def test_a_question_that_points_back_keeps_its_statement(hospital_bot):
    response = hospital_bot.respond("my husbands insurance through his new job is Pinnacle Direct HMO. can i still "
                                    "see my doctors at st brigids with that", answer_mode="quote")
    assert "out of network" in response.answer, response.answer  # not the privacy notice's "treatment" sentence


def test_a_sentence_of_context_does_not_hide_a_followup(bank_bot):
    first = "How do I send an international wire?"
    history = [(first, bank_bot.respond(first).answer)]
    query, found, _ = bank_bot._find_evidence("I tried finding it on your website but got lost. is there a fee "
                                              "for that?", history, bank_bot.config)
    assert "wire" in query.lower() and "website" not in query.lower()
    assert found.evidence and any("$45" in e.text for e in found.evidence), [e.text for e in found.evidence]


def test_each_question_of_a_message_is_answered_or_said_unanswered(bank_bot):
    both = bank_bot.respond("What's the routing number for direct deposit? Also, what's the SWIFT code for an "
                            "incoming international wire?", session_id="parts")
    assert both.action == "answer" and not both.caveat and not both.refused
    assert "021555013" in both.answer and "NBFBUS33" in both.answer and len(both.evidence) >= 2
    # "what SWIFT code does someone overseas need to wire me money?" finds first the line on the recipient bank's
    # SWIFT code (what to give when sending): shown as the closest the documents come, with our code among it
    near = bank_bot.respond("What's the routing number for direct deposit? Also, what SWIFT code does someone "
                            "overseas need to wire me money?")
    assert near.caveat and "021555013" in near.answer and "NBFBUS33" in near.answer
    part = bank_bot.respond("What's the routing number for direct deposit? Also, do you sell gold coins?")
    assert "021555013" in part.answer
    assert "couldn't find an answer to “do you sell gold coins?”" in part.answer
    # a question the documents come close to is shown with what they say, said so (never as the answer)
    close = bank_bot.respond("What's the routing number for direct deposit? Also, can I buy bitcoin in the app?")
    assert "021555013" in close.answer and close.caveat
    assert "For “can I buy bitcoin in the app?”: I couldn't find an answer to exactly this" in close.answer


def test_a_doubtful_question_of_several_is_shown_apart_from_the_answers(hospital_bot):
    """One question answered, the other only "the closest the documents come": the answer comes first, as
    an answer; the doubtful one follows with that said (and the response carries the caveat)."""
    response = hospital_bot.respond("Hi, can I visit my mom in the ICU? What are the visiting hours?")
    assert response.action == "answer" and response.caveat and not response.refused
    doubtful = response.answer.index("For “can I visit my mom in the ICU?”: I couldn't find an answer to exactly")
    assert response.answer.index("8:00 a.m. to 8:00 p.m.") < doubtful  # the sure answer first
    assert "under 12" in response.answer[doubtful:]  # ... then the closest the documents come
    assert len(response.sentences) >= len(response.evidence) and all(s["n"] for s in response.evidence)


def test_several_questions_none_answered_for_sure_each_get_their_closest_evidence(hospital_bot):
    """Neither question is answered for sure: each is shown with the closest the documents come, said so,
    instead of the whole message refused (it was, though each question alone got its evidence)."""
    message = ("i drive a lifted pickup, will it fit in your parking garage? Also, whats the wifi network called? "
               "need to get my laptop online while im sitting with my mom")
    response = hospital_bot.respond(message)
    assert response.action == "answer" and response.caveat and not response.refused
    assert response.answer.startswith(hospital_bot.not_exact_reply())
    later = response.answer.index("For “whats the wifi network called?")
    assert "6 feet 8 inches" in response.answer[:later] and "StBrigids-Guest" in response.answer[later:]
    assert {s["status"] for s in response.sentences} == {"quoted"}  # nothing generated from doubtful evidence


def test_a_rare_question_word_the_evidence_lacks_brings_the_sentence_that_holds_it(hospital_bot):
    """The Nurse Advice Line and 911 scored above the Rapid Response line for a patient getting worse on a
    ward; "worse", among the index's rarest words and in none of them, brings the sentence that holds it."""
    question = ("my husband is getting worse in his room and the nurses arent coming, is there some emergency "
                "number inside the hospital")
    query, found, pool = hospital_bot._find_evidence(question, [], hospital_bot.config)
    texts = [e.text for e in found.evidence]
    assert any("7777" in t for t in texts), texts
    assert len(texts) <= hospital_bot.selector.weights.max_items and not found.flagged
    # a rare word the chosen sentences already hold brings nothing more
    ranked = hospital_bot.selector.score(question, pool)
    rapid = [row for row in ranked if "7777" in row[2]]
    assert hospital_bot.selector._with_named(question, rapid, ranked, pool) == rapid


def test_how_much_notice_asks_for_a_length_of_time(bank_bot):
    from assistant.answering.evidence import _AMOUNT, _DURATION

    assert asked_kinds("how much notice do you guys need?") == [_DURATION]
    assert asked_kinds("how much time do i have to file a dispute") == [_DURATION]
    assert _AMOUNT in asked_kinds("how much does it cost to order checks")
    response = bank_bot.respond("Im deaf and I have an appointment coming up to sign mortgage paperwork. I want a "
                                "sign language interpreter there, how much notice do you guys need?",
                                answer_mode="quote")
    assert "3 business days" in response.answer and not response.caveat, response.answer


def test_statements_before_a_question_are_kept_unless_dropping_them_finds_much_better_evidence(hospital_bot,
                                                                                              monkeypatch):
    """The question without the statements told before it must beat the whole message by READING_MARGIN: a near
    tie goes to the reading that keeps what the customer told. "How I call the hospital?" alone meets the 911
    sentence, the whole message the TTY relay line (with MiniLM alone a near tie, 0.699 against 0.697; with the
    larger context encoder 0.046 apart, past the margin: README, "A larger encoder")."""
    from assistant import pipeline

    whole, alone = "I am deaf, use TTY. How I call the hospital?", "How I call the hospital?"
    config = hospital_bot.config
    w = hospital_bot._strongest([whole], config, None)
    a = hospital_bot._strongest([alone], config, None)
    assert any("711" in e.text for e in w[2].evidence) and not any("711" in e.text for e in a[2].evidence)
    assert a[0] > w[0]  # alone, the question meets its sentences more closely
    for margin, kept in ((a[0] - w[0] + 0.01, whole), (max(0.0, a[0] - w[0] - 0.01), alone)):
        monkeypatch.setattr(pipeline, "READING_MARGIN", margin)
        assert hospital_bot._strongest([whole, alone], config, None, shorter={alone})[1] == kept
    monkeypatch.setattr(pipeline, "READING_MARGIN", a[0] - w[0] + 0.01)
    response = hospital_bot.respond(whole, answer_mode="quote")
    assert "711" in response.answer, response.answer
