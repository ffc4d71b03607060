"""Messages that open a chat without asking anything yet, and questions about who is answering.

"can you help me?", "I need help with something" and "I have a question about my account" say that a
question is coming. Classified by topic they were declined as out of scope, thanked ("You're very
welcome!") or searched and refused; they now get the pack's greeting, which says what the assistant can
help with and asks the question (a message with a topic the documents clearly answer, "I have a question
about overdraft fees", is still answered: small talk is searched first, see `Assistant.route`).

In a chat already under way, three more moves get a fixed reply instead of being classified (they were
thanked, said goodbye to, or answered with the previous answer again): "one more question" asks for it,
"hold on" is waited for, and "that's wrong" / "that didn't answer my question" gets an apology, a request
to put it another way and a person offered (`conversation_move`).

"are you a real person?" is answered truthfully, whatever the classifier says: the customer is told they
are talking to an automated assistant and can ask for a person. Bot-disclosure rules (such as
California's B.O.T. Act and the EU AI Act's transparency duty) expect that answer to be given plainly.
"""

from __future__ import annotations

import re

_FILLER = r"^\s*(?:(?:hi|hello|hey|ok|okay|so|um|wait|sorry|excuse\s+me|quick\s+question|lol)[,:!.\s-]+)*"
_WHAT = r"(?:a\s+|an\s+)?(?:real\s+|actual\s+|live\s+)?(?:person|human(?:\s+being)?|people|bot|robot|ai|a\.i\.?|"\
        r"machine|computer|chat\s*bot|program|automated(?:\s+\w+)?|real)"
_BOT = re.compile(
    _FILLER + r"(?:(?:are|r)\s+(?:you|u|ya)|am\s+i\s+(?:talking|chatting|speaking|texting|writing)\s+(?:to|with)|"
    r"is\s+(?:this|that|it)|is\s+this\s+chat)\s+(?:even\s+|really\s+|just\s+)?" + _WHAT +
    r"(?:\s+or\s+(?:a\s+|an\s+)?(?:real\s+)?(?:person|human|bot|robot|ai|machine|computer|not))?[\s?!.]*$",
    re.IGNORECASE)
_OPENER = re.compile(
    _FILLER + r"(?:i\s+(?:was\s+)?(?:hoping|wondering\s+if)\s+(?:you|u|someone)\s+(?:can|could)\s+help(?:\s+me)?|"
    r"(?:can|could|would)\s+(?:you|u|someone|somebody|anyone)\s+(?:please\s+)?(?:help|assist)(?:\s+me)?|"
    r"(?:i\s+)?(?:need|want|would\s+like|'d\s+like)\s+(?:some\s+)?(?:help|assistance)|"
    r"(?:i\s+)?(?:have|got|'ve\s+got)\s+(?:a\s+|an\s+|some\s+)?(?:quick\s+|few\s+|couple\s+(?:of\s+)?|small\s+)?"
    r"(?:questions?|query|inquiry|enquiry)|(?:a\s+)?(?:quick\s+)?(?:questions?|query|inquiry|enquiry)|"
    r"what\s+(?:can|do)\s+(?:you|u)\s+(?:do|help\s+(?:me\s+)?with|know)|how\s+(?:can|do)\s+(?:you|u)\s+help|help)"
    r"(?:\s+(?:out|please|pls|me|for\s+you|with\s+(?:something|a\s+question|an\s+issue)|about\s+(?:[\w'-]+\s*){1,4}))*"
    r"[\s?!.]*$",
    re.IGNORECASE)


def asks_if_bot(message: str) -> bool:
    """The customer asks whether they are talking to a person or a machine ("are you a real person?",
    "am i chatting with a bot", "is this automated")."""
    return bool(_BOT.match(message))


def opens_without_question(message: str) -> bool:
    """The message only says a question or a request for help is coming ("can you help me?", "I have a
    quick question", "question about my bill", "what can you do?")."""
    return len(message) <= 120 and bool(_OPENER.match(message))


_MORE = re.compile(
    _FILLER + r"(?:(?:i\s+)?(?:have|got)\s+)?(?:(?:just\s+)?(?:one|1)\s+more|another|a\s+(?:second|follow[-\s]?up|"
    r"different)|(?:a\s+)?few\s+more|more)\s+(?:question|questions|thing|things|q|qs)(?:\s+(?:for\s+you|please))?"
    r"[\s?!.:]*$|^\s*(?:ok(?:ay)?\s+)?(?:and\s+)?also[\s?!.:]*$",
    re.IGNORECASE)
_WAIT = re.compile(
    _FILLER + r"(?:hold\s+on|hang\s+on|wait(?:\s+a\s+(?:sec|second|minute|moment))?|one\s+(?:sec|second|moment|"
    r"minute)|just\s+a\s+(?:sec|second|minute|moment)|give\s+me\s+a\s+(?:sec|second|minute|moment)|brb|be\s+right\s+"
    r"back)(?:\s+(?:please|pls))?[\s!.]*$",
    re.IGNORECASE)
_NOT_HELPFUL = re.compile(
    _FILLER + r"(?:(?:no[,.!]?\s+)?(?:that(?:'s|s|\s+is)|this(?:'s|\s+is)|it(?:'s|s|\s+is))\s+(?:wrong|not\s+(?:right|"
    r"correct|true|what\s+i\s+(?:asked|meant|need(?:ed)?))|incorrect|not\s+helpful|unhelpful|useless)|"
    r"(?:that|this|it|you)\s+(?:didn't|didnt|did\s+not|don't|dont|do\s+not|doesn't|doesnt)\s+(?:answer|help|"
    r"understand)(?:\s+(?:my\s+question|me|at\s+all|the\s+question))*|(?:you(?:'re|\s+are)\s+)?not\s+"
    r"(?:helpful|helping)|(?:that's|thats|that\s+is)\s+not\s+(?:it|what\s+i\s+asked)|wrong\s+answer)"
    r"[\s!.?]*$",
    re.IGNORECASE)


def conversation_move(message: str, history: bool) -> str | None:
    """After earlier turns: `ask_more` ("one more question"), `wait` ("hold on") or `not_helpful` ("that's
    wrong", "that didn't answer my question"); None for anything else, and always on a first message."""
    if not history or len(message) > 80:
        return None
    for name, pattern in (("ask_more", _MORE), ("wait", _WAIT), ("not_helpful", _NOT_HELPFUL)):
        if pattern.match(message):
            return name
    return None
