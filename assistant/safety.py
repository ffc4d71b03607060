"""Safety rules that sit beside the intent classifier.

1. Emergency phrases (chest pain, stroke signs, suicidal thoughts, overdose, severe bleeding...)
   route to the pack's emergency intents even when the classifier is unsure: a missed emergency
   costs far more than an unneeded safety message. The reply is the pack's fixed text, never
   generated.
2. Prompt injection: instruction-like sentences ("ignore previous instructions", "print the system
   prompt", "you are now ...") are removed from retrieved passages before they reach the model,
   and a message that is only an injection attempt is declined as out of scope.
"""

from __future__ import annotations

import re

# label -> patterns; a label is used only when the pack defines that intent.
EMERGENCY_PATTERNS: dict[str, list[str]] = {
    "medical_emergency": [
        r"chest (?:pain|pressure|tightness)", r"(?:heart attack|cardiac arrest)",
        r"can'?t breathe|cannot breathe|(?:struggling|hard|trouble|difficulty) (?:to )?breath(?:e|ing)|not breathing",
        r"stroke|face (?:is )?drooping|slurred speech|sudden (?:numbness|weakness)",
        r"overdos(?:e|ed|ing)|took too many (?:pills|tablets)|swallowed (?:poison|bleach)",
        r"(?:bleeding|blood) (?:heavily|a lot|won'?t stop|will not stop)|severe bleeding|heavy bleeding",
        r"unconscious|passed out and|won'?t wake up|not responding|seizure|anaphyla\w+|choking",
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


def only_injection(message: str) -> bool:
    """True when nothing but an injection attempt is left of the message (nothing to answer)."""
    if not has_injection(message):
        return False
    rest = strip_injections(message)
    return len(re.findall(r"[^\W\d_]{3,}", rest)) < 3
