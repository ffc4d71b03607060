"""Slots for scripted flows, filled from the customer's own words (never invented).

A slot the message does not give is left out, and the pack's reply shows its fallback text.
"""

from __future__ import annotations

import re

_LAST4 = re.compile(r"(?i)(?:ending|ends|last\s+(?:4|four)(?:\s+digits)?)\s*(?:in|with|is|are|:)?\s*(\d{4})\b")
_WEEKDAY = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_MONTH = (r"(?:january|february|march|april|may|june|july|august|september|october|november|december|"
          r"jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)")
_DATE = re.compile(
    rf"(?i)\b(?:(?:this|next|on)\s+{_WEEKDAY}|{_WEEKDAY}|tomorrow|today|next\s+week|this\s+week|"
    rf"(?:on\s+)?{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?|(?:on\s+)?(?:the\s+)?\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH})\b"
)
_AFFIRMATIVE = re.compile(r"(?i)^\s*(?:yes|yeah|yep|yup|sure|please|ok(?:ay)?|please do|yes please|go ahead|"
                          r"connect me|that would help|i would like that|i'd like that)\b[\s.!]*")


def extract_slots(message: str) -> dict[str, str]:
    slots: dict[str, str] = {}
    if m := _LAST4.search(message):
        slots["card_last4"] = f"your card ending in {m.group(1)}"
    if m := _DATE.search(message):
        when = m.group(0).strip()
        when = re.sub(r"(?i)^on\s+", "", when)
        slots["date"] = when if when.lower() in {"today", "tomorrow"} else f"for {when}"
    return slots


def is_affirmative(message: str) -> bool:
    """A short yes to an offer ("yes please", "sure, connect me")."""
    return bool(_AFFIRMATIVE.match(message)) and len(message.split()) <= 6
