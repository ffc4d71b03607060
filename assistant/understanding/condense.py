"""Follow-up questions rewritten into standalone search queries, before retrieval.

"And a domestic one?" after "How much does it cost to send an international wire?" searches for
"a domestic international wire cost". The rules run in microseconds and never invent words: a
follow-up keeps all of its own words and gains the topic words of the conversation's previous
(itself condensed) question, with a pronoun ("it", "that", "them") replaced by that topic. A message
that reads as a new question is searched as it is.

Why rules and not the LLM: the bundled 135M model rewrites poorly and would add a second generation
(about a second on 2 CPU cores) before every answer. `make eval` measures the rules against searching
the message alone on the packs' follow-up sets (eval/followups.jsonl).
"""

from __future__ import annotations

import re

# words that open a follow-up: "and for auto loans?", "what about Sunday?"
_OPENER = re.compile(
    r"^\s*(?:(?:and|but|also|plus|so|ok(?:ay)?|then)\b[\s,]*)*"
    r"(?:(?:what|how)\s+about|what\s+if|same\s+(?:for|with)|and\s+for|and\s+in|and\s+on|and\s+the|and\s+a|and)?\b",
    re.IGNORECASE)
# "ok and if he's in there a week?": a filler word may come first
_CONTINUES = re.compile(r"^\s*(?:(?:ok(?:ay)?|so|then|alright)\b[\s,]*)?"
                        r"(?:and|but|also|plus|what about|how about|what if|same for|same with)\b", re.I)
# pronouns that point back at the previous topic; "there" only where it is not "is there"/"are there"
_PRONOUN = re.compile(r"\b(it|its|that|this|them|they|those|these|one|ones)\b", re.IGNORECASE)
_REPLACEABLE = re.compile(r"\b(it|that|this|them|those|these)\b(?!\s+(?:is|are|was|were)\b\s*\?)", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’&$%.-]*[A-Za-z0-9%$]|[A-Za-z0-9$]")

STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between
both but by can could did do does doing done down during each few for from further get gets getting got had
has have having he her here hers herself him himself his how i if in into is it its itself just let like me
mine more most my myself no nor not now of off on once one ones only or other our ours ourselves out over own
please same she should so some such than thank thanks that the their theirs them themselves then there these
they this those through to too under until up us very was way we were what when where which while who whom
why will with would you your yours yourself yourselves ok okay also plus much many long soon quickly need
want know tell say said take takes tell use used i'm i've i'd you're it's what's how's that's there's dont
don't can't cannot isn't aren't wasn't won't doesn't didn't where's who's when's why's whats wheres hows whos whens
""".split())

MAX_TOPIC_WORDS = 8


def content_words(text: str) -> list[str]:
    """The message's words that carry its topic, in order, without repeats (lower-cased)."""
    seen: list[str] = []
    for word in _WORD.findall(text):
        low = word.lower().strip(".")
        if low and low not in STOPWORDS and low not in seen:
            seen.append(low)
    return seen


def is_followup(message: str) -> bool:
    """True when the message leans on what came before: an opener ("and", "what about"), a pronoun in
    a short message, or too few words of its own to stand alone."""
    words = _WORD.findall(message)
    own = content_words(message)
    if _CONTINUES.match(message):
        return True
    pronoun = _PRONOUN.search(re.sub(r"(?i)\b(?:is|are|was|were)\s+there\b", "", message))
    if pronoun and len(words) <= 14:
        return True
    return len(own) <= 1 and len(words) <= 6


# "it" / "that" that point at nothing: "how much does it cost to send...", "is it possible to...", "is it ok"
_DUMMY = re.compile(
    r"\b(?:it|that)\s+(?:\w+\s+){0,3}?to\s+[a-z]+|\b(?:is|was|would|will)\s+it\s+(?:be\s+)?(?:possible|ok|okay|"
    r"alright|true|safe|necessary|required|normal|worth|better|easier|hard|too)\b(?!\?)|\bit(?:'s| is)\s+(?:possible|"
    r"ok|okay|alright|true|safe|necessary|required|normal|worth|better|too)\b(?!\?)|\bdoes\s+it\s+(?:matter|make)\b",
    re.IGNORECASE)


def points_back(message: str) -> bool:
    """A follow-up whose pronoun stands for something said earlier ("what time does it close on sundays?",
    "what hours are they there?"), not a dummy one ("how much does it cost to send money abroad?")."""
    if not is_followup(message):
        return False
    rest = _DUMMY.sub(" ", re.sub(r"(?i)\b(?:is|are|was|were)\s+there\b", "", message))
    return bool(_PRONOUN.search(rest))


def stands_alone(message: str) -> bool:
    """A question whose only pronoun is a dummy one ("how much does it cost to get a copy of a statement?",
    "is it possible to ..."): it reads as a follow-up by its pronoun, but its grammar needs nothing said before."""
    if _CONTINUES.match(message) or len(content_words(message)) < 3:
        return False
    text = re.sub(r"(?i)\b(?:is|are|was|were)\s+there\b", "", message)
    return bool(_PRONOUN.search(text)) and not _PRONOUN.search(_DUMMY.sub(" ", text))


def condense(message: str, history: list[tuple[str, str]] | None, *, force: bool = False) -> str:
    """A standalone search query for `message`, given earlier (user, assistant) turns. With `force`, the
    message gains the earlier topic even when it does not read as a follow-up ("can my 8 year old come
    with me?" after a question about ICU visiting hours): for a caller that also searches the message
    alone and keeps the stronger evidence."""
    previous = ""
    for user, _bot in history or []:  # each earlier question condensed against the one before it
        previous = _condense_one(user, previous)
    return _condense_one(message, previous, force=force)


def _condense_one(message: str, previous: str, *, force: bool = False) -> str:
    message = " ".join(message.split())
    if not previous or not (force or is_followup(message)):
        return message
    own = set(content_words(message))
    topic = [w for w in content_words(previous) if w not in own][:MAX_TOPIC_WORDS]
    if not topic:
        return message
    phrase = " ".join(topic)
    body = _OPENER.sub("", message, count=1).strip() or message
    if _REPLACEABLE.search(body):
        return _REPLACEABLE.sub(phrase, body, count=1)
    return f"{body.rstrip('?.! ')} {phrase}".strip()
