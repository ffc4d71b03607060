"""Openers without a question ("can you help me?") and "are you a real person?" (assistant/understanding/openers.py)."""

from __future__ import annotations

from assistant.understanding.openers import asks_if_bot, conversation_move, opens_without_question


def test_asking_if_the_assistant_is_a_person():
    for asked in ("are you a real person?", "Are you a bot?", "am i talking to a human or a bot", "is this an AI?",
                  "r u a robot", "is this automated", "hi, are you a real person or not?", "am i chatting with a real person"):
        assert asks_if_bot(asked), asked
    for other in ("are you open on saturday", "is this a real email from you", "is this a scam",
                  "is it real that you charge for paper statements", "I want to talk to a real person"):
        assert not asks_if_bot(other), other


def test_a_message_that_only_says_a_question_is_coming():
    for opener in ("can you help me?", "I need help with something", "I have a question about my account",
                   "question about a charge", "hi i have a quick question", "what can you do?", "help",
                   "i was hoping you could help me", "got a question"):
        assert opens_without_question(opener), opener
    for asked in ("can you help me find my routing number", "I need help paying my bill", "I have a problem with my card",
                  "question about the wire cutoff time, when is it", "can you help me with my math homework",
                  "I need help from a real agent regarding my account"):
        assert not opens_without_question(asked), asked


def test_the_assistant_says_it_is_automated_and_offers_a_person(bank_bot, hospital_bot):
    for bot, asked in ((bank_bot, "are you a real person?"), (hospital_bot, "am i talking to a human")):
        told = bot.respond(asked)
        assert told.action == "smalltalk" and told.ticket is None and not told.evidence
        assert "automated assistant" in told.answer and "not a person" in told.answer
        assert bot.pack.assistant_name in told.answer and "talk to a person" in told.answer
    # a pack can word it itself
    bank_bot.pack.replies["bot_disclosure"] = "I'm a virtual assistant for {institution}."
    try:
        assert bank_bot.respond("r u a bot").answer == "I'm a virtual assistant for Northbridge Federal Bank."
    finally:
        del bank_bot.pack.replies["bot_disclosure"]


def test_an_opener_gets_the_greeting_not_a_decline(bank_bot, hospital_bot):
    greeting = bank_bot.pack.reply("greeting")
    for asked in ("I need help with something", "can you help me?", "question about a charge"):
        opened = bank_bot.respond(asked)  # were: out of scope, "You're very welcome!", a refusal
        assert opened.action == "smalltalk" and opened.answer == greeting, (asked, opened.answer)
    assert hospital_bot.respond("I need some help").answer == hospital_bot.pack.reply("greeting")
    # a topic the documents clearly answer is still answered
    topic = bank_bot.respond("I have a question about overdraft fees")
    assert topic.action == "answer" and "$32" in topic.answer
    # however short: two words the classifier took for a goodbye
    short = hospital_bot.respond("tty number?")
    assert short.action == "answer" and "711" in short.answer, short.answer
    for thanks in ("ok thanks", "bye now", "lol ok"):
        assert hospital_bot.respond(thanks).action == "smalltalk", thanks


def test_moves_in_a_chat_under_way():
    for text, move in (("one more question", "ask_more"), ("I have another question", "ask_more"), ("ok also", "ask_more"),
                       ("hold on", "wait"), ("one sec", "wait"), ("that's wrong", "not_helpful"),
                       ("that didn't answer my question", "not_helpful"), ("no thats not what i asked", "not_helpful")):
        assert conversation_move(text, history=True) == move, text
        assert conversation_move(text, history=False) is None  # a first message is read as usual
    for text in ("wait, is there a fee for that?", "another question: what's the routing number?", "that's great",
                 "it's wrong that you charge me", "also what's the swift code"):
        assert conversation_move(text, history=True) is None, text


def test_a_chat_that_pauses_asks_for_more_and_disagrees(bank_bot):
    """Were: the previous answer again, a goodbye ("hold on"), a goodbye ("that's wrong")."""
    history: list[tuple[str, str]] = []

    def say(text):
        response = bank_bot.respond(text, history, session_id="moves")
        history.append((text, response.answer))
        return response

    say("how do I send an international wire?")
    more = say("one more question")
    assert more.action == "smalltalk" and more.answer == "Of course. What would you like to know?"
    fee = say("is there a fee for that?")  # "one more question" is no topic: the wire still is
    assert "wire" in fee.query.lower() and "question" not in fee.query.lower() and "$45" in fee.answer
    assert say("hold on").answer.startswith("Take your time")
    sorry = say("that's wrong")
    assert sorry.action == "smalltalk" and "sorry" in sorry.answer.lower() and "person" in sorry.answer
    person = say("yes please")  # the person just offered
    assert person.action == "handoff" and person.ticket


def test_a_question_read_as_small_talk_gets_the_documents_not_a_greeting(hospital_bot, monkeypatch):
    """"does st brigids have a fertility clinic or do ivf" was classified as a greeting, the documents had no
    sure answer for it, and the greeting came back in reply; a question of substance now gets the no-answer
    reply (or the closest the documents come, said so), while small talk stays small talk."""
    from assistant.understanding.intents import Prediction

    greeting = Prediction(label="greeting", confidence=0.9, top=[("greeting", 0.9)])
    monkeypatch.setattr(hospital_bot, "classify", lambda message, history=None: greeting)
    question = hospital_bot.route("does st brigids have a fertility clinic or do ivf")
    assert question.action == "answer"
    response = hospital_bot.respond("does st brigids have a fertility clinic or do ivf", answer_mode="quote")
    assert response.action == "answer" and (response.refused or response.caveat), response.answer
    assert "welcome" not in response.answer.lower()
    for small in ("hello how r u", "hi there, can you help me?", "good morning!"):
        assert hospital_bot.route(small).action == "smalltalk", small


def test_a_question_after_a_dash_is_a_question():
    from assistant.understanding.routing import asks_question

    assert asks_question("different thing - is it possible to do one of those on-demand video visits for my kid")
    assert asks_question("separate thing – is it possible to pay my bill in person")
    assert not asks_question("a $5 - $10 fee")
