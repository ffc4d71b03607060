"""Routing rules that sit after the intent classifier: asking about a process is not asking for it.

The classifier labels a message by topic: "how long does a complaint take?" and "I want to complain"
are both `complaint`. Only the second should open a ticket. A message that asks about a flow's or a
handoff's topic is answered from the documents, with the flow or the person offered beside the answer;
a flow or a ticket starts only when the user asks for that action, states the situation the flow is
for ("I lost my card"), or asks for a person. Emergencies are decided before any of this (safety.py).
"""

from __future__ import annotations

import re

from assistant.understanding.condense import _CONTINUES, _PRONOUN, content_words

# the user asks us to do something, or says what happened to them
_REQUEST = re.compile(
    r"\b(?:i\s*(?:'d| would)\s+like\s+to\s+(?!know\b)|i\s+(?:want|wanna|need)\s+(?:to\s+)?(?!know\b|to\s+know\b)|"
    r"i\s+wish\s+to|let\s+me\s+(?:talk|speak|file|make|report)|please\s+(?:connect|transfer|put|file|open|"
    r"cancel|freeze|block|report|change|update|help)|help\s+me\s+(?:to\s+)?(?:file|make|report|change|update|"
    r"cancel|freeze|block|talk|reach)|(?:can|could|may)\s+i\s+(?:please\s+)?(?:talk|speak|chat)\s+(?:to|with)|"
    r"(?:can|could|would)\s+you\s+(?:please\s+)?(?:connect|transfer|put|file|open|cancel|freeze|block|"
    r"report|change|update)|connect\s+me|get\s+me\s+(?:a|an|someone)|transfer\s+me|"
    r"(?:real|live|actual)\s+(?:person|human|agent)\s*(?:please|now|!)|^\s*(?:agent|human|representative|"
    r"operator)\b)",
    re.IGNORECASE,
)
# a situation the flow exists for, told in the first person ("my card was stolen", "I lost my wallet")
_SITUATION = re.compile(
    r"\b(?:i(?:'ve| have)?\s+(?:just\s+)?(?:lost|misplaced|can't find|cannot find)|"
    r"my\s+(?:\w+\s+){0,3}(?:was|got|has been|have been|is|are)\s+(?:\w+\s+)?"
    r"(?:lost|stolen|missing|hacked|compromised|taken)|someone\s+(?:stole|took|used|hacked|is using|has)|"
    r"(?:stolen|lost)\s+(?:my|the)\s+|i\s+(?:see|saw|found|notice[d]?|have)\s+(?:a\s+|an\s+|some\s+)?"
    r"(?:charges?|transactions?|payments?|withdrawals?)\s+(?:i|that i)\s+(?:didn't|did not|don't))",
    re.IGNORECASE,
)
# a clause that asks how something works: it starts with a question word (after a greeting or filler)
_QUESTION = re.compile(
    r"^\s*(?:(?:hi|hello|hey|ok|okay|so|and|but|also|quick question|question|worst case|lol)[,:!.\s-]+)*"
    r"(?:how|what|when|where|which|why|who|is|are|do|does|did|will|would|should|can|could|may|was|"
    r"if|whats|what's|hows|how's)\b",
    re.IGNORECASE,
)
# a clause that asks what, how, when...: "what documents do I need to change my name" asks about a need
_WH_QUESTION = re.compile(
    r"^\s*(?:(?:hi|hello|hey|ok|okay|so|and|but|also|quick question|question|lol)[,:!.\s-]+)*"
    r"(?:how|what|whats|what's|hows|how's|when|where|which|why|who)\b",
    re.IGNORECASE,
)
# a question asked indirectly: "can you tell me how...", "I'd like to know what...", "I was wondering if..."; asking
# to be told about a flow's topic is not asking for the flow, unless it asks for a person ("if I could speak to")
_INDIRECT = re.compile(
    r"^\s*(?:(?:hi|hello|hey|ok|okay|so|and|but|also|quick question|question|lol)[,:!.\s-]+)*(?:please\s+)?"
    r"(?:(?:can|could|would|will)\s+(?:you|u|someone|somebody)\s+(?:please\s+)?(?:tell|explain|show)(?:\s+me)?|"
    r"(?:can|could|would|will)\s+(?:you|u)\s+(?:please\s+)?let\s+me\s+know|tell\s+me|explain|let\s+me\s+know|"
    r"i\s*(?:'d|would)\s+like\s+to\s+know|i\s+(?:want|wanna|need)\s+(?:to\s+)?know|i\s*(?:was|am|'m|m)\s+wondering|"
    r"wondering|do\s+(?:you|u)\s+know|any\s+idea|i\s+(?:don't|dont|do not)\s+(?:know|understand))\s+"
    r"(?:\w+\s+){0,2}?(?:how|what|whats|what's|when|where|which|why|who|if|whether)\b",
    re.IGNORECASE,
)
_PERSON = re.compile(r"\b(?:talk|speak|chat)\s+(?:to|with)\b", re.IGNORECASE)
# a what/how/when... question typed inside a message without punctuation ("left my wallet in an uber its
# 2am who do i even call"): the question word, at most two words, an auxiliary verb, then its subject, or
# "how long/much/many..."; an indirect question ("unhappy with how my issue was handled", "a complaint about
# how long discharge took") puts the subject first or follows "about", and does not count
_EMBEDDED_QUESTION = re.compile(
    r"(?<!\babout )(?<!\bwith )(?<!\bknow )\b(?:how|what|whats|what's|when|where|which|who|why)"
    r"(?:\s+[\w'$]+){0,2}?\s+(?:do|does|did|is|are|was|were|can|could|should|would|will)\s+"
    r"(?:i|you|u|we|they|it|he|she|that|this|these|those|my|your|our|the|a|an|there|someone|anyone)\b"
    r"|(?<!\babout )(?<!\bwith )(?<!\bknow )\bhow\s+(?:long|much|many|soon|often|far|early|late)\b"
    r"|\b(?:is|are)\s+there\b",
    re.IGNORECASE,
)
# where a message splits into clauses: punctuation, or a conjunction that starts a new one
# or a dash between spaces ("different thing - is it possible to ...")
_CLAUSES = re.compile(r"[,.;:!?]+\s*|\s+[-–—]{1,2}\s+|\s+(?:but|so|and then)\s+", re.IGNORECASE)


def _clauses(message: str) -> list[str]:
    """The message cut at punctuation and conjunctions, and before a question typed without punctuation."""
    clauses = []
    for clause in _CLAUSES.split(message[:2000]):
        starts = [m.start() for m in _EMBEDDED_QUESTION.finditer(clause) if m.start() > 0]
        clauses += [clause[a:b] for a, b in zip([0, *starts], [*starts, len(clause)], strict=True)]
    return [clause for clause in clauses if clause.strip()]


# "I'd like to / I want to / I need to" + a word: a request for what a flow or a person does only with one of
# these verbs, or for a thing ("I need a new card"); with another verb beside a question ("I'd like to film my
# mom's doctor... is that ok?", "Which agency supervises you? I'd like to go over your heads") the user says
# what they mean to do, and the question is what to answer
_WANT = re.compile(r"(?:i\s*(?:'d| would)\s+like\s+to|i\s+(?:want|wanna|need)(?:\s+to)?|i\s+wish\s+to)\s+([a-z]+)",
                   re.IGNORECASE)
_ASKS_TO = frozenset(
    "file make lodge submit raise report complain dispute escalate talk speak chat connect cancel close freeze "
    "block lock unblock replace order update change reset correct fix open start book schedule reschedule "
    "request get see reach contact stop remove add transfer".split()
    + "a an the my our some another new someone somebody".split())


def _requests(clause: str, asks: bool) -> bool:
    """The clause asks us to act: an explicit request, or "I want to <an action verb>"; when the message also
    asks a question (`asks`), "I'd like to <another verb>" only says what the user means to do."""
    for match in _REQUEST.finditer(clause):
        want = _WANT.match(clause, match.start())
        if not asks or want is None or want.group(1).lower() in _ASKS_TO:
            return True
    return False


def requests_action(message: str) -> bool:
    """Some clause asks us to do something ("I want to file a complaint", "can you freeze my card"); a need
    inside a what/how question ("what paperwork do I need to bring") asks about the process instead."""
    clauses = _clauses(message)
    asks = any(_QUESTION.match(clause) or _indirect(clause) for clause in clauses)
    return any(_requests(clause, asks) and not _WH_QUESTION.match(clause) and not _indirect(clause)
               for clause in clauses)


def _indirect(clause: str) -> bool:
    """A question asked indirectly ("can you tell me how to block my card"), not a request for a person."""
    return bool(_INDIRECT.match(clause)) and not _PERSON.search(clause)


def asks_for_action(message: str) -> bool:
    """The user asks for the action itself, or reports the situation it is for."""
    return requests_action(message) or bool(_SITUATION.search(message))


def asks_question(message: str) -> bool:
    """Some clause of the message is a question: "i moved to florida, is the routing number different"."""
    if message.rstrip().endswith("?"):
        return True
    return any(_QUESTION.match(clause) or _indirect(clause) for clause in _clauses(message))


def asks_about(message: str) -> bool:
    """A question about a process or policy rather than a request to start it. A situation told beside a
    question ("someone stole my card, how much could I lose?") is answered, the flow offered with it; an
    explicit request ("please block my card", "I want to file a complaint") starts the action."""
    return asks_question(message) and not requests_action(message)


# where one message asks a second question: after a sentence's end, at "also", or at "and" + a question word
_PART_BREAK = re.compile(r"(?<=[?!.])\s+|\s*;\s*|,?\s+(?:and\s+)?also[,:]?\s+|,?\s+and\s+(?=(?:what|how|when|where|"
                         r"which|who|is there|are there|do you|does|can i|could i|will)\b)", re.IGNORECASE)
_ALSO = re.compile(r"^(?:and\s+)?also[,:]?\s+", re.IGNORECASE)
# "what are the visiting hours there?", "how many can you charge in a day?": the topic is in the question before
_BACK_THERE = re.compile(r"\bthere\s*[?.!]*$|\bhow\s+many\s+(?:can|do|does|will|would|should|could|are|is)\b",
                         re.IGNORECASE)
MIN_PART_WORDS = 4  # "and on Saturday?" or "what hours" lean on the question before: not a question of their own


def leans_on_previous(part: str) -> bool:
    """An opener ("and what about..."), "there" or "how many can..." pointing back, or a pronoun in a question
    with at most two words of its own ("what does it cost", "how do I avoid it?"); "whats the street address,
    need it for my gps" stands alone."""
    own = content_words(part)
    if _CONTINUES.match(part) or _BACK_THERE.search(part) or len(own) <= 1:
        return True
    return bool(_PRONOUN.search(part)) and len(own) <= 2


_SENTENCE_END = re.compile(r"(?<=[?!.])\s+")
# "...with that", "for it", "that one": the question points back at what was told before it
_POINTS_BACK = re.compile(r"\b(?:with|for|about|on|of|in|under|through|from|by|to)\s+(?:that|it|this|them|those|these)\b"
                          r"(?!\s+(?:is|are|was|were|will|would|does|do|did|can|could|should|has|have)\b)|\bthat\s+one\b",
                          re.IGNORECASE)


def shorter_readings(message: str, points_back: bool = False) -> list[str]:
    """The message without the statements told before its question, one more dropped each time ("We just moved
    here. i reported a charge on monday. when will i hear back?" -> "i reported a charge on monday. when will i
    hear back?", "when will i hear back?"); none when it opens with its question or asks none, or for a question
    that points back at a statement ("my new plan is Pinnacle Direct HMO. can i still see my doctors with that"),
    unless `points_back` (after earlier turns, what it points at may be their topic). A statement may hold the
    topic, so these are searched beside the whole message, never instead of it."""
    sentences = [s for s in _SENTENCE_END.split(message[:2000].strip()) if s]
    first = next((n for n, sentence in enumerate(sentences) if asks_question(sentence)), 0)
    readings = [" ".join(sentences[n:]) for n in range(1, first + 1)]
    return [r for r in readings if len(re.findall(r"\w+", r)) >= MIN_PART_WORDS
            and (points_back or not _POINTS_BACK.search(r))]


def question_parts(message: str) -> list[str]:
    """The separate questions a message asks, each with the background told before it ("my cd matures next
    week. how many days do i have before it rolls over? also, what's the swift code for an incoming wire?"
    -> two); the message whole when it asks one question (or none)."""
    parts: list[str] = []
    background: list[str] = []
    for piece in (_ALSO.sub("", p.strip()) for p in _PART_BREAK.split(message[:2000])):
        if not piece:
            continue
        words = len(re.findall(r"\w+", piece))
        if asks_question(piece) and words >= MIN_PART_WORDS:  # "sent a complaint last week, how long until..."
            parts.append(" ".join([*background, piece]))
            background = []
        elif parts and not background and not _QUESTION.match(piece) and words < MIN_PART_WORDS + 3:
            parts[-1] = f"{parts[-1]} {piece}"  # "is the pharmacy open sundays? what hours": an afterthought
        else:
            background.append(piece)
    if background and parts:
        parts[-1] = " ".join([parts[-1], *background])
    # a question that leans on the one before ("...notarized, and is there a charge", "what are the visiting
    # hours there", "how do I avoid it?") is not a question of its own: it stays with that one
    merged: list[str] = []
    for part in parts:
        if merged and leans_on_previous(part):
            merged[-1] = f"{merged[-1]} {part}"
        else:
            merged.append(part)
    return merged if len(merged) > 1 else [message]
