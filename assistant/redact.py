"""PII redaction for everything the assistant writes down: logs, the audit log, handoff tickets.

Our own recognisers (Presidio needs spaCy models from the internet): payment card numbers
(Luhn-checked), IBANs (mod-97-checked), US social security numbers, account numbers, phone
numbers, e-mail addresses, dates of birth (and other full dates), medical-record numbers.
Each match is replaced by a tag such as `[CARD]`, so a redacted text still reads naturally.

Strings the institution publishes itself (its phone numbers, its routing number) can be passed as
`allow`, so answers quoting them stay readable in the audit log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_SEP = r"[ \-.]?"


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_prefix(text: str) -> str | None:
    """The longest valid IBAN at the start of `text`, cutting whole space-separated groups."""
    parts = text.split(" ")
    for n in range(len(parts), 0, -1):
        candidate = " ".join(parts[:n])
        if iban_ok(candidate):
            return candidate
    return None


def iban_ok(text: str) -> bool:
    compact = re.sub(r"\s", "", text).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", compact):
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


_MONTHS = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
           r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_DATE = (
    r"(?:\d{1,2}[/.\-]\d{1,2}[/.\-](?:19|20)\d{2}"  # 03/14/1985, 14.03.1985
    r"|(?:19|20)\d{2}[/.\-]\d{1,2}[/.\-]\d{1,2}"  # 1985-03-14
    rf"|{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:19|20)\d{{2}}"  # March 14, 1985
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS},?\s+(?:19|20)\d{{2}})"  # 14 March 1985
)

# (tag, pattern, validator, group to mask) in the order they are applied; earlier rules win overlaps.
_RULES: list[tuple[str, re.Pattern, object, int]] = [
    ("EMAIL", re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE), None, 0),
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b", re.IGNORECASE),
     _iban_prefix, 0),
    ("CARD", re.compile(r"(?<![\d-])\d(?:[ \-]?\d){12,18}(?![\d-])"),
     lambda m: luhn_ok(re.sub(r"\D", "", m)), 0),
    # a card-length digit run that fails the Luhn check (a mistyped card, an account): still masked
    ("ACCOUNT", re.compile(r"(?<![\d+-])\d(?:[ \-]?\d){11,18}(?![\d-])"), None, 0),
    ("SSN", re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}([ \-])(?!00)\d{2}\1(?!0000)\d{4}(?!\d)"), None, 0),
    ("SSN", re.compile(r"(?i)(?:ssn|social\s+security(?:\s+(?:number|no\.?|#))?)\s*(?:is|:|#|=)?\s*(\d{9})\b"), None, 1),
    ("DOB", re.compile(rf"(?i)(?:date\s+of\s+birth|d\.?o\.?b\.?|born(?:\s+on)?|birth\s*date|birthday)"
                       rf"\s*(?:is|was|:|-)?\s*({_DATE})"), None, 1),
    ("DATE", re.compile(rf"(?i)\b{_DATE}\b"), None, 0),
    ("PHONE", re.compile(r"(?<![\w+])(?:\+?\d{1,3}[ \-.]?)?(?:\(\d{2,4}\)[ \-.]?|\d{2,4}[ \-.])\d{3,4}[ \-.]?\d{3,4}"
                         r"(?:\s*(?:x|ext\.?)\s*\d{1,5})?(?!\w)"), None, 0),
    ("ACCOUNT", re.compile(r"(?<![\w-])\d{8,17}(?![\w-])"), None, 0),  # a bare long number
]


# A cue word makes any number-like token near it (same clause, either side) that kind of PII.
_CUES = [
    ("MRN", re.compile(r"(?i)\b(?:mrn|medical\s+record|patient\s+(?:id|number|no)|hospital\s+number|chart\s+number)")),
    ("ACCOUNT", re.compile(r"(?i)\b(?:account|acct|a/c|member\s+(?:number|no|id)|policy\s+number|customer\s+(?:number|id))")),
]
_ID_TOKEN = re.compile(r"(?<![\w-])(?:[A-Za-z]{1,3}-?)?\d(?:[\d \-]{2,20}\d)?(?![\w-])")
_CUE_WINDOW = 60


@dataclass
class Finding:
    tag: str
    start: int
    end: int
    text: str


class Redactor:
    """Find and mask PII. `allow` lists public strings (the institution's own numbers) to keep."""

    def __init__(self, allow: Iterable[str] = ()):
        self.allow = {re.sub(r"\D", "", a) or a for a in allow if a}

    def find(self, text: str) -> list[Finding]:
        taken: list[tuple[int, int]] = []
        found: list[Finding] = []

        def add(tag: str, start: int, end: int) -> None:
            value = text[start:end]
            if (re.sub(r"\D", "", value) or value) in self.allow:
                return
            if any(start < e and s < end for s, e in taken):
                return
            taken.append((start, end))
            found.append(Finding(tag, start, end, value))

        for tag, pattern, check, group in _RULES[:-1]:  # the bare-number rule goes last, after the cues
            for match in pattern.finditer(text):
                start, end = match.span(group)
                if check is not None:
                    result = check(text[start:end])
                    if not result:
                        continue
                    if isinstance(result, str):
                        end = start + len(result)
                add(tag, start, end)
        for tag, cue in _CUES:
            for match in cue.finditer(text):
                lo, hi = max(0, match.start() - _CUE_WINDOW), min(len(text), match.end() + _CUE_WINDOW)
                for token in _ID_TOKEN.finditer(text, lo, hi):
                    if sum(ch.isdigit() for ch in token.group()) >= 5:
                        add(tag, *token.span())
        tag, pattern, _, group = _RULES[-1]
        for match in pattern.finditer(text):
            add(tag, *match.span(group))
        return sorted(found, key=lambda f: f.start)

    def redact(self, text: str | None) -> str | None:
        if not text:
            return text
        out, cursor = [], 0
        for f in self.find(text):
            out.append(text[cursor:f.start])
            out.append(f"[{f.tag}]")
            cursor = f.end
        out.append(text[cursor:])
        return "".join(out)


def public_numbers(texts: Iterable[str]) -> set[str]:
    """Phone and other numbers printed in an institution's own documents: public, not PII."""
    numbers: set[str] = set()
    phone = next(pattern for tag, pattern, *_ in _RULES if tag == "PHONE")
    for text in texts:
        numbers |= {m.group(0) for m in phone.finditer(text)}
        numbers |= set(re.findall(r"(?<![\w-])\d{8,17}(?![\w-])", text))
    return numbers
