"""Follow-up questions become standalone search queries (assistant/understanding/condense.py)."""

from assistant.understanding.condense import (
    condense,
    content_words,
    is_followup,
    points_back,
    stands_alone,
)

WIRE = "How much does it cost to send an international wire?"


def test_first_question_is_searched_as_asked():
    assert condense(WIRE, []) == WIRE
    assert condense("  What is   the CD rate? ", None) == "What is the CD rate?"


def test_elliptical_followup_gains_the_previous_topic():
    query = condense("And a domestic one?", [(WIRE, "It costs $45 [1].")])
    assert "domestic" in query and "wire" in query and "international" in query
    assert not query.lower().startswith("and")


def test_pronoun_is_replaced_by_the_topic():
    query = condense("What's the cut-off time for it?", [(WIRE, "...")])
    assert query.startswith("What's the cut-off time for ")
    assert " it" not in f" {query.lower()} ".replace("it's", "")
    assert "wire" in query


def test_new_question_mid_conversation_is_left_alone():
    message = "What documents do I need to open a checking account?"
    assert not is_followup(message)
    assert condense(message, [(WIRE, "...")]) == message


def test_existential_there_is_not_a_pronoun():
    assert not is_followup("Are there any fees for closing a savings account early?")
    assert is_followup("Is there a fee?")  # too few words of its own to stand alone


def test_chains_keep_the_topic_of_the_first_question():
    history = [("What is the minimum down payment for a first-time homebuyer?", "5% [1]."),
               ("Do I need insurance if I put down less than that?", "Yes, PMI [1].")]
    query = condense("When is it removed?", history)
    assert "insurance" in query and "removed" in query and "homebuyer" in query


def test_topic_words_are_bounded_and_not_repeated():
    long_question = " ".join(f"word{i}" for i in range(30)) + "?"
    query = condense("And for auto loans?", [(long_question, "...")])
    assert query.split().count("auto") == 1
    assert len(query.split()) <= len("for auto loans".split()) + 8


def test_content_words_drop_question_words():
    assert content_words("How long is a MyBrigid activation code valid?") == ["mybrigid", "activation", "code",
                                                                              "valid"]


def test_forced_condensation_adds_the_topic_to_a_standalone_message():
    history = [("what are the visiting hours for the icu", "...")]
    message = "can my 8 year old come with me?"
    assert condense(message, history) == message  # reads as a question of its own
    forced = condense(message, history, force=True)
    assert forced.startswith("can my 8 year old come with me") and "icu" in forced and "visiting" in forced
    assert condense(message, [], force=True) == message  # nothing earlier: nothing to add


def test_a_pronoun_that_points_back_is_told_from_a_dummy_one():
    for back in ("what time does it close on sundays?", "what hours are they there?", "how much does it cost?",
                 "is it free?", "can i pay it online"):
        assert points_back(back), back
    for dummy in ("how much does it cost to send money to canada", "is it possible to pay my bill in cash",
                  "does it take long to get a new card", "is it ok if my husband comes",
                  "what about for a joint account"):  # an opener without a pronoun: condensed, also searched alone
        assert not points_back(dummy), dummy
    assert "where's" not in condense("what time does it close on sundays?", [("where's the gift shop", "")])


def test_a_question_with_only_a_dummy_pronoun_stands_alone():
    for alone in ("how much does it cost to get a copy of an old statement?", "is it possible to pay my bill in cash",
                  "is it free to get a new debit card if mine got stolen?"):
        assert stands_alone(alone), alone
    for leaning in ("what time does it close on sundays?", "how much does that cost?", "and on weekends?",
                    "saturday too?", "what about for a joint account", "how long does it take to arrive",
                    "ok and if it's going abroad?"):
        assert not stands_alone(leaning), leaning


def test_a_filler_word_before_the_opener_still_opens_a_followup():
    message = "ok and if hes in there like a week, is there anything cheaper"
    assert is_followup(message)
    condensed = condense(message, [("how much is it to park in the garage for a whole day?", "")])
    assert "garage" in condensed and not condensed.lower().startswith("ok")


def test_a_followup_that_points_back_is_searched_with_the_earlier_topic_only(hospital_bot):
    """Alone, "it" in "what time does it close on sundays?" is whatever closes on Sundays: the appointment line
    scored higher than the gift shop, and the strongest reading won."""
    first = "where's the gift shop in the hospital"
    history = [(first, hospital_bot.respond(first, answer_mode="quote").answer)]
    response = hospital_bot.respond("what time does it close on sundays?", history, answer_mode="quote")
    assert "gift shop" in response.query.lower() and "10:00 a.m. to 4:00 p.m." in response.answer, response.answer


def test_only_unsure_evidence_is_searched_again_with_the_earlier_topic(bank_bot):
    """The retry with the earlier topic depends on how sure the evidence is, never on how cautiously it is shown:
    a stricter `caution` flags more answers but pulls no more new questions back to the earlier topic."""
    from dataclasses import replace

    from assistant.answering.evidence import Evidence, Selection

    item = Evidence(n=1, text="Customer Service: 1-800-555-0142, Sunday 10:00 a.m. to 4:00 p.m.", source="a.md",
                    title="Phone numbers", section="Hours", score=0.7)
    weights = bank_bot.selector.weights
    relaxed, standard, strict = (weights.flag_threshold(level) for level in ("relaxed", "standard", "strict"))
    assert relaxed < standard < strict
    config = bank_bot.config
    between = (relaxed + standard) / 2
    assert bank_bot._unsure(Selection([], 0.0, False), config)  # nothing found
    assert bank_bot._unsure(Selection([item], relaxed - 0.01, True), config)  # unsure at every level
    # flagged only because the answer is shown cautiously: it stands on its own
    assert not bank_bot._unsure(Selection([item], between, True), config)
    assert not bank_bot._unsure(Selection([item], (standard + strict) / 2, True), replace(config, caution="strict"))
    # sure enough, but flagged for what it says (another place, another product): searched again
    assert bank_bot._unsure(Selection([item], strict + 0.01, True), config)
    assert not bank_bot._unsure(Selection([item], strict + 0.01, False), config)
