"""Greetings, thanks and emoji around a question, set aside before it is classified and searched.

"hi there! can my 10 year old visit the ICU? thanks so much 🙏" asks the same as the question alone, but
the greeting pulls the intent classifier towards small talk and every word of it moves the message's
embedding away from the documents' sentences. On the packs' fit/ and eval/ answerable questions, wrapping
each in a greeting and a thank-you cost the hospital pack 5 of 80 answers that state the fact, two of them
answered with a hello. The words are set aside only when a question of at least three words remains: a
message that is only "hi" or "thanks" is still small talk. The audit log keeps what was typed.
"""

from __future__ import annotations

import re
import unicodedata

_OPENING = re.compile(
    r"^\s*(?:(?:hi|hello|hey|hiya|howdy|greetings|good\s+(?:morning|afternoon|evening|day)|yo|dear\s+\w+)"
    r"(?:\s+(?:there|all|team|guys|folks|again))?\b|sorry\s+to\s+bother\s+(?:you)?|quick\s+question|"
    r"(?:i\s+)?hope\s+you(?:'re|\s+are)\s+(?:well|doing\s+well|having\s+a\s+good\s+day))\s*[,!.:;-]*\s*",
    re.IGNORECASE)
_CLOSING = re.compile(
    r"[\s,.!;:-]*(?:(?:thanks|thank\s+you|thx|ty|tysm|cheers|much\s+appreciated|appreciate\s+it|"
    r"(?:i\s+)?appreciate\s+(?:the|your|any)\s+help|(?:thanks\s+)?in\s+advance)"
    r"(?:\s+(?:so|very)\s+much|\s+a\s+lot|\s+in\s+advance|\s+again|\s+(?:for\s+(?:the|your|any)\s+help))?"
    r"|have\s+a\s+(?:good|great|nice)\s+(?:one|day|night))[\s,.!]*$",
    re.IGNORECASE)
_EMOTICON = re.compile(r"(?:^|(?<=\s))[:;=]-?[)(DPp3](?=\s|$)")  # ":)", ";-)", ":D"
MIN_WORDS = 3


def _without_symbols(text: str) -> str:
    """Emoji and other pictographs removed ("🙏", "😊"); letters, digits and punctuation kept."""
    return "".join(" " if unicodedata.category(c) in ("So", "Sk", "Cs") or c == "\ufe0f" else c for c in text)


def strip_pleasantries(message: str) -> str:
    """The message without an opening greeting, a closing thank-you and emoji; as it is when less than
    MIN_WORDS words would remain."""
    text = " ".join(_EMOTICON.sub(" ", _without_symbols(message)).split())
    for _ in range(3):  # "hi there! good morning, ..." / "... thanks! have a nice day"
        text = _OPENING.sub("", text, count=1)
        text = _CLOSING.sub("", text, count=1).strip()
    return text if len(re.findall(r"\w+", text)) >= MIN_WORDS else message
