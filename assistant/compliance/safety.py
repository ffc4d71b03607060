"""Safety rules that sit beside the intent classifier.

1. Emergency phrases (chest pain, stroke signs, suicidal thoughts, overdose, severe bleeding...)
   route to the pack's emergency intents even when the classifier is unsure: a missed emergency
   costs far more than an unneeded safety message. The reply is the pack's fixed text, never
   generated.
2. Prompt injection. In documents, sentences that address the assistant are marked when they are
   indexed and cut out of retrieved passages before evidence is selected (assistant/compliance/injection.py).
   A message that is an injection attempt is declined as out of scope: the phrase rules below catch
   the common forms ("ignore previous instructions", "print the system prompt", "you are now ..."),
   and with the detector (`InjectionDetector`) any wording of a request for the hidden text (the
   system prompt, the passages, "word for word the text you were given"), a persona set-up or an
   instruction override is caught too.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from assistant.compliance.injection import InjectionDetector

# label -> patterns; a label is used only when the pack defines that intent.
EMERGENCY_PATTERNS: dict[str, list[str]] = {
    "medical_emergency": [
        r"chest (?:pain|pressure|tightness)", r"(?:heart attack|cardiac arrest)",
        r"can'?t breathe|cannot breathe|(?:struggling|hard|trouble|difficulty) (?:to )?breath(?:e|ing)|not breathing",
        r"stroke|face (?:is )?drooping|slurred speech|sudden (?:numbness|weakness)",
        r"overdos(?:e|ed|ing)|took too many (?:pills|tablets)|swallowed (?:poison|bleach)",
        # "I took a whole bottle of my sleeping pills": the classifier was split between crisis and emergency
        r"(?:took|swallowed|ate|taken)\s+(?:a\s+|the\s+|an\s+)?(?:whole|entire|full)\s+(?:bottle|pack|packet|box|"
        r"jar|strip)\b",
        # a baby gone floppy or hard to wake ("my baby has a fever of 104 and is really floppy" was out of scope);
        # a baby's fever alone asks where to go ("is she too young for urgent care?") and is answered
        r"(?:baby|infant|newborn)\b[^.!?]{0,60}?\b(?:floppy|limp|won'?t wake|not waking|hard to wake|"
        r"turning blue|not breathing)",
        r"(?:bleeding|blood) (?:heavily|a lot|won'?t stop|will not stop)|severe bleeding|heavy bleeding",
        r"unconscious|passed out and|won'?t wake up|not responding|seizure|anaphyla\w+|choking",
        # swelling that closes the airway, a collapse, and the blue of too little oxygen
        r"throat\W+(?:\w+\W+){0,4}?(?:closing|clos(?:es|ed) up|swell\w*|swollen)|(?:tongue|lips?) (?:is |are )?(?:swell\w*|swollen)",
        r"collapsed|(?:turning|turned|going) blue|(?:lips|face) (?:is |are |look |looks )?blue",
    ],
    "mental_health_crisis": [
        r"suicid\w*", r"kill(?:ing)? my ?self", r"end(?:ing)? my (?:own )?life", r"want to die",
        r"(?:hurt|harm)(?:ing)? my ?self", r"self[- ]harm", r"no reason to live",
        r"better off (?:dead|without me)",
    ],
}
_EMERGENCY = {label: re.compile(r"\b(?:" + "|".join(p) + r")", re.IGNORECASE)
              for label, p in EMERGENCY_PATTERNS.items()}

_INJECTION = re.compile(
    r"(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|the\s+|your\s+)?(?:previous|prior|above|earlier|"
    r"preceding|system)?\s*(?:instructions?|prompts?|rules?|directions?|guidelines?)"
    r"|(?:print|show|reveal|repeat|output|display|tell me|what is|what's)\s+(?:me\s+)?(?:your|the)\s+"
    r"(?:system\s+prompt|initial\s+prompt|hidden\s+(?:prompt|instructions)|instructions)"
    r"|\byou\s+are\s+now\s+(?:a|an|in)\b|\bact\s+as\s+(?:a|an)\s+(?:different|unrestricted|jailbroken)"
    r"|\b(?:developer|dan|jailbreak)\s+mode\b|\bnew\s+instructions?\s*:",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")


def emergency_intent(message: str, known_intents: set[str]) -> str | None:
    """The emergency intent a message plainly signals, if the pack has it."""
    for label, pattern in _EMERGENCY.items():
        if label in known_intents and pattern.search(message):
            return label
    return None


def has_injection(text: str) -> bool:
    return bool(_INJECTION.search(text))


def strip_injections(text: str) -> str:
    """The text without the sentences that try to instruct the model."""
    kept = [s for s in _SENTENCE.findall(text) if not _INJECTION.search(s)]
    return " ".join(part.strip() for part in kept if part.strip())


def asks_for_hidden_text(message: str, detector: InjectionDetector) -> bool:
    """True when the message asks for what the customer must not see (the system prompt, the retrieved
    passages, "the text you were given", word for word or not), sets up a persona or overrides the
    instructions, in any wording (the detector's message model)."""
    return has_injection(message) or detector.is_injection_message(message)


def only_injection(message: str, detector: InjectionDetector | None = None) -> bool:
    """True when the message is to be declined as an injection attempt: with `detector`, whenever it asks
    for the hidden text or tries to take the assistant over (asks_for_hidden_text); without, when nothing
    but a phrase-rule injection is left of it (nothing to answer)."""
    if detector is not None and detector.is_injection_message(message):
        return True
    if not has_injection(message):
        return False
    rest = strip_injections(message)
    return len(re.findall(r"[^\W\d_]{3,}", rest)) < 3
