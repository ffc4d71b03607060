"""PII redaction for everything the assistant writes down: logs, the audit log, handoff tickets.

Each value found is replaced by its kind's tag, so a redacted text still reads naturally
("my card [CARD] was stolen"):

    CARD      payment card numbers with any separator (Luhn check from python-stdnum)
    ACCOUNT   card-length numbers failing the Luhn check, long bare numbers, and numbers after an
              account, customer, member, policy, insurance or subscriber cue
    IBAN      IBANs, compact, spaced or hyphenated (checksum and country format from python-stdnum)
    SSN       US social security and taxpayer numbers with any separator (python-stdnum's rules)
    CVV EXPIRY PIN PASSWORD   values after their cue words, and an expiry and code written right
              after a card number
    PHONE     phone numbers a region could dial (phonenumbers); toll-free and premium-rate numbers
              belong to organisations and are kept
    EMAIL     e-mail addresses
    IP        IPv4 addresses (personal data under the GDPR; earlier read as phone numbers)
    DOB       dates of birth in any written form, next to a birth cue
    DATE      other full dates more than ten years old (recent and future ones, appointments and
              transactions, are what a reviewer needs, and are kept)
    MRN       medical-record, hospital and NHS numbers, patient references
    NAME      names after "I'm", "my name is", "this is", a title, a relative ("my son Oliver"), or
              in a sign-off
    ADDRESS   street addresses, PO boxes, UK postcodes, US state + ZIP, what follows "I live at"

Strings the institution publishes itself (its phone lines, branch addresses, routing number) can be
passed as `allow` (see `public_numbers`), so answers quoting them stay readable in the audit log.

Every pattern runs on user text under the GIL, so each is linear on any input: quantifiers are
bounded, no two alternatives match the same text, each pattern that scans the whole text begins with
a character (not a lookbehind or an optional part) so that `re` can skip ahead, and what a pattern
cannot decide cheaply (checksums, dialling plans, calendar dates, name-like words) is checked in
code. One unbounded `+` was enough for a 100,000-character message to stall the server for 46 s;
`python -m assistant.tools.redact_eval --part timing` measures the worst case now.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn as stdnum_luhn
from stdnum.us import itin as stdnum_itin
from stdnum.us import ssn as stdnum_ssn

# A detector yields (tag, start, end); tag None claims the span as not personal (an order number,
# an appointment date, a toll-free line) so that no later detector masks part of it.
Span = tuple[str | None, int, int]

_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@dataclass(frozen=True)
class Doc:
    """A message and its ASCII-lower-cased copy (same length, same offsets). Cue words are matched on
    the copy, case-sensitively: a case-insensitive alternation is about ten times slower in `re`."""

    text: str
    low: str

    @classmethod
    def of(cls, text: str) -> Doc:
        return cls(text, text.translate(_LOWER))


def _word_start(low: str, i: int) -> bool:
    return i == 0 or not (low[i - 1].isalnum() or low[i - 1] == "_")


def _cues(pattern: re.Pattern, low: str) -> Iterator[re.Match]:
    """Matches of a cue pattern that begin a word. The check is made here rather than by a leading
    `\\b`, which would stop `re` from skipping ahead to the cue's first letters."""
    for m in pattern.finditer(low):
        if _word_start(low, m.start()):
            yield m


# A number starts where no word, amount or longer dotted/dashed number goes on before it...
_NB = r"(?<![\w+$£€¥])(?<!\w[.\-/,])"


def _starting(first: str) -> str:
    """`first` (one character's pattern) where a number may start. Patterns that scan the whole text
    begin with a character, not a lookbehind, so that `re` can skip ahead to where they may match."""
    return rf"{first}(?<![\w+$£€¥]{first})(?<!\w[.\-/,]{first})"


_NBD = _starting(r"\d")  # a digit that starts a number
# ...and ends where none goes on after it (a sentence's full stop or comma may follow).
_NA = r"(?!\w|[.\-/,]\d)"


def luhn_ok(digits: str) -> bool:
    return stdnum_luhn.is_valid(digits)


def iban_ok(text: str) -> bool:
    return stdnum_iban.is_valid(text)


def _digit_count(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


# --- e-mail, IBAN, card, SSN ------------------------------------------------------------------

# Found from its domain; the local part before the @ is measured in code (at most 64 characters).
_EMAIL_DOMAIN = re.compile(r"@[\w\-]{1,63}(?:\.[\w\-]{1,63}){1,8}")

# Compact, or 4-character groups joined by one repeated separator; trailing words are trimmed by the
# checksum (`IBAN GB82 WEST 1234 5698 7654 32 for me`). Matched on the lower-cased copy.
_IBAN = re.compile(r"[a-z](?<![\w\-][a-z])[a-z]\d{2}(?:[a-z0-9]{11,30}|( {1,2}|-)[a-z0-9]{4}"
                   r"(?:\1[a-z0-9]{1,4}){1,8})(?!\w)")

_CARD_SEP = r"( {1,3}|[./]| ?- ?)"
_CARD = re.compile(_NBD + r"(?:\d{12,18}"
                   rf"|\d{{3}}{_CARD_SEP}\d{{4}}\1\d{{4}}\1\d{{4}}(?:\1\d{{3}})?"
                   rf"|\d{{3}}{_CARD_SEP}\d{{6}}\2\d{{4,5}}"
                   r"|\d{7} \d{8})" + _NA)
_MMYY = r"(?:0?[1-9]|1[0-2])[ \t]{0,2}[/\-.][ \t]{0,2}(?:20)?\d{2}"
# An expiry and a security code typed straight after the card number, with or without their cues.
_CARD_TAIL = re.compile(r"[ \t,;]{1,3}(?:(?:exp\w{0,8}\.?|valid\s{1,3}thru)[ \t:]{0,3})?"
                        rf"({_MMYY})(?!\d|[/\-]\d)"
                        r"(?:[ \t,;]{1,3}(?:(?:cvv2?|cvc2?|cid|code)[ \t:]{0,3})?(\d{3,4})" + _NA + ")?")

_SSN = re.compile(_NBD + r"\d{2}( {1,3}|[./]| ?- ?)\d{2}\1\d{4}" + _NA)
_SSN_CUE = re.compile(r"(?:ssn|ss#|social(?:\s{1,3}security)?(?:\s{1,3}(?:number|no\.?|#))?"
                      r"|tax\s{1,3}id|itin|tin)(?![a-z])")
_SSN_LOOSE = re.compile(_NB + r"\d{3}[ \-./]{0,3}\d{2}[ \-./]{0,3}\d{4}" + _NA)


def _local_part_char(ch: str) -> bool:
    return ch.isalnum() or ch in "._+'-"


def _emails(doc: Doc, r: Redactor) -> Iterator[Span]:
    text = doc.text
    for m in _EMAIL_DOMAIN.finditer(text):
        at = start = m.start()
        while start > 0 and at - start < 64 and _local_part_char(text[start - 1]):
            start -= 1
        if start < at and (start == 0 or not _local_part_char(text[start - 1])):
            yield "EMAIL", start, m.end()


def _ibans(doc: Doc, r: Redactor) -> Iterator[Span]:
    for m in _IBAN.finditer(doc.low):
        candidate, sep = m.group(0), m.group(1)
        parts = candidate.split(sep) if sep else [candidate]
        for n in range(len(parts), 1 if sep else 0, -1):
            prefix = sep.join(parts[:n]) if sep else candidate
            if stdnum_iban.is_valid(prefix.upper()):
                yield "IBAN", m.start(), m.start() + len(prefix)
                break
        else:
            # IBAN-shaped with a bad checksum: a mistyped IBAN is still someone's account.
            if sep is None or len(parts) >= 4:
                compact = re.sub(r"[ \-]", "", candidate)
                if _digit_count(compact) >= 8 and len(compact) >= 15:
                    yield "ACCOUNT", m.start(), m.end()


def _cards(doc: Doc, r: Redactor) -> Iterator[Span]:
    for m in _CARD.finditer(doc.text):
        if not stdnum_luhn.is_valid(re.sub(r"\D", "", m.group(0))):
            yield "ACCOUNT", m.start(), m.end()  # a mistyped card, or an account number
            continue
        yield "CARD", m.start(), m.end()
        tail = _CARD_TAIL.match(doc.low, m.end())
        if tail:
            yield "EXPIRY", *tail.span(1)
            if tail.group(2):
                yield "CVV", *tail.span(2)


def _ssns(doc: Doc, r: Redactor) -> Iterator[Span]:
    for m in _SSN.finditer(doc.text):
        digits = re.sub(r"\D", "", m.group(0))
        if stdnum_ssn.is_valid(digits) or stdnum_itin.is_valid(digits):
            yield "SSN", m.start(), m.end()
    for span in _near(doc, _SSN_CUE, _SSN_LOOSE, ahead=24, behind=0):
        yield "SSN", *span


# --- values after a cue word ------------------------------------------------------------------

def _near(doc: Doc, cue: re.Pattern, value: re.Pattern, ahead: int, behind: int,
          every: bool = False) -> Iterator[tuple[int, int]]:
    """Spans of `value` (matched on the lower-cased copy) starting within `ahead` characters after
    each `cue`, else the nearest ending within `behind` characters before it. The windows are
    bounded, so each cue costs the same however long the text."""
    text, n = doc.low, len(doc.low)
    for c in _cues(cue, text):
        lo, hi = c.end(), min(n, c.end() + ahead)
        found = False
        for v in value.finditer(text, lo, min(n, hi + 32)):  # slack: a value is never cut short
            if v.start() >= hi:
                break
            found = True
            yield v.span()
            if not every:
                break
        if not found and behind:
            before = list(value.finditer(text, max(0, c.start() - behind), c.start()))
            if before:
                yield before[-1].span()


_ON_THE_CARD = r"\s{1,3}on\s{1,3}the\s{1,3}(?:back|front)"
_CVV_CUE = re.compile(r"(?:cvv2?|cvc2?|cid|csc|cvn|sec\.?\s{1,3}(?:code|number|no)|security\s{1,3}(?:code|number|no)"
                      r"|verification\s{1,3}(?:code|value|number)"
                      rf"|digits?{_ON_THE_CARD}|numbers?{_ON_THE_CARD}|code{_ON_THE_CARD}"
                      rf"|three[\s\-]{{1,3}}(?:digits?|numbers?){_ON_THE_CARD}|3[\s\-]{{1,3}}(?:digits?|numbers?){_ON_THE_CARD}"
                      rf"|four[\s\-]{{1,3}}(?:digits?|numbers?){_ON_THE_CARD}|4[\s\-]{{1,3}}(?:digits?|numbers?){_ON_THE_CARD}"
                      r"|three[\s\-]{1,3}digit\s{1,3}(?:security\s{1,3})?code|3[\s\-]{1,3}digit\s{1,3}(?:security\s{1,3})?code"
                      r"|four[\s\-]{1,3}digit\s{1,3}(?:security\s{1,3})?code|4[\s\-]{1,3}digit\s{1,3}(?:security\s{1,3})?code)"
                      r"(?![a-z])")
_CVV_VALUE = re.compile(_NB + r"\d{3,4}" + _NA)
_EXPIRY_CUE = re.compile(r"(?:exp(?:iry|iration|ires|ired|\.)?(?:\s{1,3}date)?"
                         r"|valid\s{1,3}(?:thru|through|until|to)|good\s{1,3}(?:thru|through))(?![a-z])")
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)(?![a-z])\.?")
_EXPIRY_VALUE = re.compile(rf"{_NB}(?:{_MMYY}|(?:0[1-9]|1[0-2])\d{{2}}|{_MONTH}[ \t,]{{1,3}}['’]?(?:20)?\d{{2}})"
                           + _NA)
_PIN_CUE = re.compile(r"(?:pin(?:\s{1,3}(?:number|no\.?|code|#))?|passcode|pass\s{1,3}code"
                      r"|access\s{1,3}code)(?![a-z])")
_PIN_VALUE = re.compile(_NB + r"\d{4,6}" + _NA)
_PASSWORD = re.compile(r"(?:password|passwd|pwd|passphrase)\s{0,3}(?:is|was|:|=)\s{0,3}([^\s]{4,64})")


def _card_secrets(doc: Doc, r: Redactor) -> Iterator[Span]:
    for span in _near(doc, _CVV_CUE, _CVV_VALUE, ahead=24, behind=16):
        yield "CVV", *span
    for span in _near(doc, _EXPIRY_CUE, _EXPIRY_VALUE, ahead=24, behind=0):
        yield "EXPIRY", *span
    for span in _near(doc, _PIN_CUE, _PIN_VALUE, ahead=30, behind=24, every=True):
        yield "PIN", *span
    for m in _cues(_PASSWORD, doc.low):
        secret = doc.text[m.start(1):m.end(1)].rstrip(".,;")
        # "my password is expired": a plain lower-case word is not the password
        if not secret.isalpha() or not secret.islower():
            yield "PASSWORD", m.start(1), m.start(1) + len(secret)


# --- dates --------------------------------------------------------------------------------------

_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?(?!\d)"
_YEAR = r"(?:['’]?\d{2}|(?:19|20)\d{2})(?!\d|:\d)"
_NUMERIC_DATE = re.compile(rf"({_NBD}\d{{0,3}})([/.\-])(\d{{1,2}})\2(\d{{2,4}})" + _NA)
_COMPACT_DATE = re.compile(_NB + r"(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])" + _NA)  # after a cue only
# Dates with a month name are found from the month (on the lower-cased copy), then the day and year
# around it: 14-Mar-1985, March 14th, 1985, the 2nd of July 1939, May 1960.
_MONTH_WORD = re.compile(r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]{0,6}")
_MONTH_NAMES = frozenset("jan january feb february mar march apr april may jun june jul july aug august sep sept "
                         "september oct october nov november dec december".split())
_DAY_BEFORE = re.compile(rf"(?<![\w.]){_DAY}(?:\s{{1,3}}of)?[\s\-/.,]{{1,3}}$")
_AFTER_MONTH = re.compile(rf"\.?[\s\-/.,]{{1,3}}(?:(?P<d>{_DAY})(?:,?[\s\-/.,]{{1,3}}(?P<y>{_YEAR}))?|(?P<y2>{_YEAR}))")
_YEAR_AFTER = re.compile(rf"\.?[\s\-/.,]{{1,3}}(?P<y>{_YEAR})")
_DOB_CUE = re.compile(r"(?:date\s{1,3}of\s{1,3}birth|d\.?\s?o\.?\s?b|birth\s{0,2}date|birthday|b-?day|born)"
                      r"(?![a-z])")


@dataclass(frozen=True)
class _Date:
    start: int
    end: int
    year: int | None  # None: not written
    four_digit_year: bool
    has_day: bool


def _year(text: str | None, this_year: int) -> tuple[int | None, bool]:
    """The year written (two digits: the latest not after this year) and whether it had four digits."""
    if not text:
        return None, False
    digits = text.lstrip("'’")
    if len(digits) == 4:
        return int(digits), True
    year = this_year // 100 * 100 + int(digits)
    return (year - 100 if year > this_year else year), False


def _dates(doc: Doc, this_year: int, lo: int = 0, hi: int | None = None) -> Iterator[_Date]:
    """Dates written in `text[lo:hi]`, numeric or with a month name, full or partial."""
    hi = len(doc.text) if hi is None else hi
    for m in _NUMERIC_DATE.finditer(doc.text, lo, hi):
        a, b, c = m.group(1), m.group(3), m.group(4)
        if len(a) == 4:
            year, month, day = a, int(b), int(c)
        elif len(a) <= 2 and len(c) in (2, 4):
            year, first, second = c, int(a), int(b)
            month, day = (first, second) if first <= 12 else (second, first)
        else:
            continue
        if 1 <= month <= 12 and 1 <= day <= 31:
            y, four = _year(year, this_year)
            if not four or 1900 <= y <= 2099:
                yield _Date(m.start(), m.end(), y, four, True)
    low = doc.low
    for m in _MONTH_WORD.finditer(low, lo, hi):
        if m.group() not in _MONTH_NAMES or not _word_start(low, m.start()):
            continue
        day = _DAY_BEFORE.search(low, max(0, m.start() - 16), m.start())
        if day:
            after = _YEAR_AFTER.match(low, m.end())
            start, end, has_day = day.start(), after.end() if after else m.end(), True
            written = after.group("y") if after else None
        else:
            after = _AFTER_MONTH.match(low, m.end())
            if after is None:
                continue
            start, end, has_day = m.start(), after.end(), after.group("d") is not None
            written = after.group("y") or after.group("y2")
        y, four = _year(written, this_year)
        if y is not None and four and not 1900 <= y <= 2099:
            continue
        yield _Date(start, end, y, four, has_day)


def _birth_dates(doc: Doc, r: Redactor) -> Iterator[Span]:
    n = len(doc.text)
    for cue in _cues(_DOB_CUE, doc.low):
        hi = min(n, cue.end() + 60)
        ahead = [d for d in _dates(doc, r.today.year, cue.end(), hi)
                 if d.start < cue.end() + 30 and (d.has_day or d.year is not None)]
        ahead += [_Date(*m.span(), None, True, True) for m in _COMPACT_DATE.finditer(doc.text, cue.end(), hi)
                  if m.start() < cue.end() + 30]
        if ahead:
            first = min(ahead, key=lambda d: d.start)
            yield "DOB", first.start, first.end
        behind = [d for d in _dates(doc, r.today.year, max(0, cue.start() - 24), cue.start()) if d.has_day]
        if behind:
            last = max(behind, key=lambda d: d.end)
            yield "DOB", last.start, last.end


def _other_dates(doc: Doc, r: Redactor) -> Iterator[Span]:
    for d in _dates(doc, r.today.year):
        if d.has_day and d.four_digit_year and d.year is not None and d.year <= r.today.year - 10:
            yield "DATE", d.start, d.end
        elif d.has_day and d.year is not None:
            yield None, d.start, d.end  # an appointment, a transaction: keep it readable


# --- record, member and account numbers ---------------------------------------------------------

# On the lower-cased copy: a number, maybe after a short letter prefix (h-4829137, rb4471298), or a
# code of letters and digits in hyphenated groups (a Medicare number, 1eg4-te5-mk73).
_ID_TOKEN = (r"(?<![\w\-])(?:(?:[a-z]{1,4}-?)?\d(?:[\d \-]{2,20}\d)?"
             r"|[a-z0-9]{1,12}(?:-[a-z0-9]{1,12}){1,4})(?![\w\-])")
_ID = re.compile(_ID_TOKEN)
_MRN_CUE = (r"(?:mrn|medical\s{1,3}record(?:\s{1,3}(?:number|no|#))?|chart\s{1,3}(?:number|no)"
            r"|patient\s{1,3}(?:id|number|no|#|ref(?:erence)?|identifier)"
            r"|hospital\s{1,3}(?:number|no|id)|nhs\s{1,3}(?:number|no))(?![a-z])")
_ACCOUNT_CUE = (r"(?:accounts?|acct|a/c|member(?:ship)?\s{1,3}(?:number|no|id|#)"
                r"|policy\s{1,3}(?:number|no|#)|customer\s{1,3}(?:number|no|id)"
                r"|client\s{1,3}(?:number|no|id)|insurance\s{1,3}(?:id|number|no)|medicare|medicaid"
                r"|subscriber\s{1,3}(?:id|number|no))(?![a-z])")
# what may stand between a cue and its value: "member ID is", "account no.:", "acct #"
_FILLER = r"[ \t:#=\-]{0,3}(?:(?:is|was|number|no\.?|id|#)[ \t:#=\-]{1,3}){0,3}"
_MRN_NEAR = re.compile(rf"{_MRN_CUE}{_FILLER}({_ID_TOKEN})")
_ACCOUNT_NEAR = re.compile(rf"{_ACCOUNT_CUE}{_FILLER}({_ID_TOKEN})")
_MRN_CUE_RE = re.compile(_MRN_CUE)
_ACCOUNT_CUE_RE = re.compile(_ACCOUNT_CUE)
_CUE_WINDOW = 60


def _labelled_ids(doc: Doc, r: Redactor) -> Iterator[Span]:
    """A number right after its label: 'MRN 00482913', 'member ID is XKJ448812901'."""
    for tag, pattern in (("MRN", _MRN_NEAR), ("ACCOUNT", _ACCOUNT_NEAR)):
        for m in _cues(pattern, doc.low):
            if _digit_count(m.group(1)) >= 5:
                yield tag, *m.span(1)


def _ids_near_cues(doc: Doc, r: Redactor) -> Iterator[Span]:
    """Any number-like token in the same stretch as a cue, either side ('my MRN, it is ...')."""
    n = len(doc.low)
    for tag, cue in (("MRN", _MRN_CUE_RE), ("ACCOUNT", _ACCOUNT_CUE_RE)):
        for c in _cues(cue, doc.low):
            for token in _ID.finditer(doc.low, max(0, c.start() - _CUE_WINDOW), min(n, c.end() + _CUE_WINDOW)):
                if _digit_count(token.group()) >= 5:
                    yield tag, *token.span()


# Order, invoice, tracking, case and payment references, product codes, and the bank identifiers
# printed on every cheque (sort code, routing number, SWIFT): not personal.
_REFERENCE = re.compile(
    r"(?:order|invoice|inv|tracking|confirmation|transaction|ticket|case|sku|item|product|model|serial"
    r"|promo|coupon|voucher|booking|ref(?:erence)?|sort\s{1,3}code|routing|aba|swift|bic)"
    r"(?:\s{1,3}(?:number|no\.?|num|code|id))?[ \t]{0,3}[:#]?[ \t]{0,3}"
    r"(?<![\w\-])([a-z0-9][\w\-]{0,30})(?![\w\-])")
_PERSONAL_BEFORE = ("patient", "member", "customer", "client")  # "patient ref" is a record number


def _references(doc: Doc, r: Redactor) -> Iterator[Span]:
    for m in _cues(_REFERENCE, doc.low):
        before = doc.low[max(0, m.start() - 10):m.start()].rstrip()
        if any(ch.isdigit() for ch in m.group(1)) and not before.endswith(_PERSONAL_BEFORE):
            yield None, *m.span(1)


_ACCOUNT_GROUPED = re.compile(_NBD + r"\d{1,5}( {1,3}|-)\d{2,6}(?:\1\d{1,6}){0,4}" + _NA)
_ACCOUNT_BARE = re.compile(_NBD + r"\d{7,16}" + _NA)


def _grouped_accounts(doc: Doc, r: Redactor) -> Iterator[Span]:
    for m in _ACCOUNT_GROUPED.finditer(doc.text):
        if 12 <= _digit_count(m.group(0)) <= 19:
            yield "ACCOUNT", m.start(), m.end()


def _bare_numbers(doc: Doc, r: Redactor) -> Iterator[Span]:
    for m in _ACCOUNT_BARE.finditer(doc.text):
        yield "ACCOUNT", m.start(), m.end()


# --- phone numbers ------------------------------------------------------------------------------

_PHONE = re.compile(rf"(?:{_starting(r'[+]')}(?:\(\d{{1,4}}\)|\d{{1,15}})|{_starting(r'[(]')}\d{{1,4}}\)|{_NBD}\d{{0,14}})"
                    r"(?:(?:[ ]{1,2}|\.|[ ]?-[ ]?)(?:\(\d{1,4}\)|\d{1,6})){0,6}"
                    + _NA + r"(?:[ \t]{0,2}(?:x|ext\.?|extension)[ \t]{0,2}\d{1,5}(?!\d))?")
_DIGIT_RUN = re.compile(r"\d+")
_PHONE_EXTENSION = re.compile(r"\s*(?:x|ext\.?|extension)\s*\d+$")
_PHONE_CUE = re.compile(r"(?:phone|cell|mobile|mob|tel|telephone|call|text|reach|landline|whatsapp|fax|contact"
                        r"|ring|ph)(?![a-z])")
_ORGANISATION_LINES = {phonenumbers.PhoneNumberType.TOLL_FREE, phonenumbers.PhoneNumberType.PREMIUM_RATE,
                       phonenumbers.PhoneNumberType.SHARED_COST, phonenumbers.PhoneNumberType.UAN}


@lru_cache(maxsize=4096)
def _dialling(number: str, regions: tuple[str, ...]) -> str | None:
    """'possible', 'local' (needs an area code), 'organisation' (toll-free, premium...) or None."""
    international = number.startswith("+") or number.startswith("00")
    if number.startswith("00"):
        number = "+" + number[2:]
    best = None
    for region in (None,) if international else regions:
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            continue
        reason = phonenumbers.is_possible_number_with_reason(parsed)
        if reason == phonenumbers.ValidationResult.IS_POSSIBLE:
            if (phonenumbers.is_valid_number(parsed) and phonenumbers.number_type(parsed) in _ORGANISATION_LINES
                    and _grouped_as_dialled(number, parsed)):
                return "organisation"
            return "possible"
        if reason == phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY:
            best = "local"
    return best


def _grouped_as_dialled(number: str, parsed: phonenumbers.PhoneNumber) -> bool:
    """Whether `number` is grouped as its country writes it (1-800-555-0142, 0800 123 4567): an account
    number that happens to start 800 (8007-839251) is not a toll-free line."""
    groups = _DIGIT_RUN.findall(number)
    national = _DIGIT_RUN.findall(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL))
    international = _DIGIT_RUN.findall(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL))
    return groups == international or groups[-len(national):] == national


_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")


def _phones(doc: Doc, r: Redactor) -> Iterator[Span]:
    for m in _PHONE.finditer(doc.low):
        candidate = m.group(0)
        groups = _DIGIT_RUN.findall(candidate)
        if _IPV4.fullmatch(candidate.strip()) and all(int(g) <= 255 for g in groups):
            yield "IP", m.start(), m.end()  # an address, personal data too, but no phone number
            continue
        digits = "".join(groups)
        international = candidate.startswith("+") or (digits.startswith("00") and len(groups) > 1)
        if len(groups) == 1 and not international and "(" not in candidate:
            continue  # a bare number is an account's business
        if not 7 <= len(digits) <= 15 or (len(groups) == 2 and "." in candidate):
            continue  # too short or long, or a decimal
        kind = _dialling(_PHONE_EXTENSION.sub("", candidate) if "x" in candidate else candidate, r.regions)
        if kind == "organisation":
            yield None, m.start(), m.end()
        elif kind == "possible" or (kind == "local" and any(
                _word_start(doc.low, c.start()) for c in _PHONE_CUE.finditer(doc.low, max(0, m.start() - 32), m.start()))):
            yield "PHONE", m.start(), m.end()


# --- names --------------------------------------------------------------------------------------

# Words that follow "I'm", "this is", "my name is" without being a name.
_NOT_NAMES = frozenset("""
a an the i me my mine you your we our us he she it they them his her their this that these those
not no yes so very really just still also only even too quite almost already always never ever again
and or but if then than because as at in on of for to from with without by about into over under up
down out off here there now today tonight tomorrow yesterday currently actually finally probably
am is are was were be been being have has had do does did will would can could shall should may might must
sorry happy glad afraid worried concerned confused unsure sure certain fine ok okay good great well
unhappy upset angry frustrated annoyed disappointed desperate anxious scared nervous stressed tired sick ill
unwell pregnant allergic disabled elderly old young new retired married single divorced
widowed unemployed self employed interested able unable trying calling writing looking having getting
going wondering hoping asking moving travelling traveling struggling waiting working staying planning
thinking reaching contacting enquiring inquiring following reporting requesting applying paying using
seeing regarding locked stuck lost done back away home abroad overseas outside inside late early
due behind ready responsible eligible entitled signed registered enrolled covered insured booked
scheduled charged billed missing furious curious aware keen about around
customer client patient member user caller guardian parent carer caregiver owner holder executor
mother father mom mum dad son daughter wife husband partner brother sister friend child baby
mr mrs ms miss mx dr doctor prof sir madam st saint
please thanks thank hello hi hey dear regards best cheers sincerely kind bye goodbye welcome
bank hospital clinic team support department office service services insurance credit union company
one two three four five first second last next other another same different
spelled spelt wrong correct incorrect misspelled shown showing listed
monday tuesday wednesday thursday friday saturday sunday january february march april june july august
september october november december christmas easter
american canadian mexican british english irish scottish welsh french german italian spanish portuguese
dutch polish russian ukrainian chinese japanese korean indian pakistani african australian european asian
muslim jewish catholic protestant hindu sikh buddhist vegan vegetarian asthmatic epileptic autistic
dyslexic diabetic deaf blind
""".split())
# A name-like run followed by one of these is an organisation ("this is Northbridge Federal Bank").
_ORGANISATION_WORDS = frozenset({"bank", "hospital", "clinic", "team", "support", "department", "office",
                                 "services", "insurance", "union", "pharmacy", "surgery", "centre", "center",
                                 "group", "ltd", "inc", "llc", "plc", "assistant", "branch"})
_NAME_SUFFIX_EXCEPTIONS = frozenset({"alfred", "mildred", "winifred", "jared", "sterling", "manning",
                                     "fielding", "channing", "harding", "browning", "golding", "keating",
                                     "downing", "reed", "ted", "fred", "ed", "emily", "kelly", "holly"})
_PARTICLES = frozenset({"van", "von", "de", "der", "den", "da", "das", "del", "della", "di", "du", "la",
                        "le", "bin", "binti", "al", "el", "ibn", "ter", "ten"})
_RELATIVES = (r"husband|wife|son|daughter|mother|mom|mum|father|dad|partner|brother|sister|child|baby"
              r"|grandmother|grandfather|grandma|grandpa|granddaughter|grandson|aunt|uncle|niece|nephew"
              r"|fianc[eé]e?|spouse|friend|carer|caregiver|neighbou?r")
_CUE_END = r"(?![\w'’])[ \t]{0,3}[:,\-]?[ \t]{0,3}"
# Cues after which a name may be typed in lower case ("my name is anna kowalski").
_NAME_STRONG = re.compile(
    r"(?:my\s{1,3}(?:full\s{1,3}|first\s{1,3}|last\s{1,3}|sur|maiden\s{1,3})?name(?:['’]s|\s{1,3}is)"
    r"|name(?:\s{0,2}[:=]|\s{1,2}-(?=\s))|surname(?:\s{0,2}[:=]|\s{1,2}-(?=\s))"
    r"|name\s{1,3}on\s{1,3}(?:the|my)\s{1,3}\w{1,12}\s{1,3}is|in\s{1,3}the\s{1,3}name\s{1,3}of"
    r"|account\s{1,3}holder\s{0,2}(?:is|:))" + _CUE_END)
# Cues after which only a capitalised word is taken for a name ("I'm Sarah", not "I'm locked out").
_NAME_WEAK = re.compile(
    r"(?:i\s{0,2}['’]\s{0,2}m|i\s{1,3}am|im|this\s{1,3}is|it['’]s|call\s{1,3}me|the\s{1,3}patient\s{1,3}is"
    r"|patient\s{1,3}is"
    rf"|on\s{{1,3}}behalf\s{{1,3}}of(?:\s{{1,3}}my\s{{1,3}}(?:{_RELATIVES}))?|my\s{{1,3}}(?:late\s{{1,3}})?(?:{_RELATIVES}))"
    + _CUE_END)
_TITLE = re.compile(r"(?:Mr|Mrs|Ms|Miss|Mx|Mister)\.?" + _CUE_END)  # on the text itself: case matters
_SIGN_OFF = re.compile(
    r"(?:thanks|thank\s{1,3}you|many\s{1,3}thanks|regards|kind\s{1,3}regards|best\s{1,3}regards"
    r"|warm\s{1,3}regards|best\s{1,3}wishes|best|cheers|sincerely|signed|yours\s{1,3}(?:sincerely|truly|faithfully))"
    r"[ \t]{0,3}[,.!\-–—]?[ \t]{0,3}\n?[ \t]{0,3}")
_DASH_SIGNATURE = re.compile(r"\n[ \t]{0,3}[\-–—]{1,2}[ \t]{0,3}")  # "— Maria" on a line of its own
_LINE_START = re.compile(r"(?:^|[\n.!?])[ \t]{0,3}$")
_NAME_TOKEN = re.compile(r"[^\W\d_][\w'’\-]{0,30}")
_NAME_GAP = re.compile(r"[ \t]{1,2}")
_LINE_END = re.compile(r"[ \t.]{0,5}(?:\n|$)")


def _name_at(text: str, pos: int, strong: bool) -> tuple[int, int] | None:
    """The span of a name starting at `pos`: up to four words, stopping at the first that is not one."""
    start, end, words = pos, None, 0
    while words < 4:
        token = _NAME_TOKEN.match(text, pos)
        if token is None:
            break
        word = token.group()
        for possessive in ("'s", "’s"):
            if word.endswith(possessive):
                word = word[:-2]
        low = word.lower()
        particle = words > 0 and low in _PARTICLES
        if not particle and not _looks_like_name(word, strong):
            if low in _ORGANISATION_WORDS:
                return None
            break
        if not particle:
            end = token.start() + len(word)
        words += 1
        gap = _NAME_GAP.match(text, token.start() + len(word))
        if gap is None or len(word) != len(token.group()):
            break
        pos = gap.end()
    return (start, end) if end is not None else None


def _looks_like_name(word: str, strong: bool) -> bool:
    low = word.lower()
    if low in _NOT_NAMES or any(ch.isdigit() for ch in word):
        return False
    if len(low) >= 6 and low.endswith(("ous", "ful", "able", "ible", "ish")):
        return False  # adjectives: "I'm Jewish", "This is Ridiculous"
    if word[0].isupper():
        return len(word) == 1 or any(ch.islower() for ch in word[1:])  # not SHOUTING
    # lower case only after "my name is" and the like, and not a participle ("my name is spelled")
    return strong and (low in _NAME_SUFFIX_EXCEPTIONS or not low.endswith(("ing", "ed", "ly")))


def _at_line_start(text: str, i: int) -> bool:
    return _LINE_START.search(text, max(0, i - 4), i) is not None


def _names(doc: Doc, r: Redactor) -> Iterator[Span]:
    text = doc.text
    for pattern, strong in ((_NAME_STRONG, True), (_NAME_WEAK, False)):
        for m in _cues(pattern, doc.low):
            span = _name_at(text, m.end(), strong)
            if span:
                yield "NAME", *span
    for m in _TITLE.finditer(text):
        span = _name_at(text, m.end(), strong=False) if _word_start(doc.low, m.start()) else None
        if span:
            yield "NAME", *span
    sign_offs = [m.end() for m in _SIGN_OFF.finditer(doc.low) if _at_line_start(text, m.start())]
    sign_offs += [m.end() for m in _DASH_SIGNATURE.finditer(text)]
    for end in sign_offs:
        span = _name_at(text, end, strong=False)
        if span and _LINE_END.match(text, span[1]):
            yield "NAME", *span


# --- addresses ----------------------------------------------------------------------------------

def _any_case(words: str) -> str:
    """An alternation of each word as written in lower case, Title case or UPPER case."""
    return "|".join(f"{w}|{w.capitalize()}|{w.upper()}" for w in words.split())


_STREET_TYPES = _any_case("street st road rd avenue ave av boulevard blvd lane ln drive dr court ct place pl way "
                          "terrace ter close crescent cres parkway pkwy highway hwy circle cir square sq trail trl "
                          "walk gardens gdns grove hill mews row green rise vale loop pike alley path plaza wharf quay")
# a house number (12, 221B, 5/12); the lookbehind comes after the first digit so that `re` can skip
# ahead to digits
_HOUSE = r"\d(?<![\w$£€.,/\-]\d)\d{0,4}+[A-Za-z]?+(?:[\-/]\d{1,5}+[A-Za-z]?+)?+,?+[ \t]{1,3}+"
_STREET = re.compile(
    _HOUSE + r"(?:(?:(?:[A-Z][\w'’.\-]{0,24}+|\d{1,3}+(?:st|nd|rd|th))[ \t]{1,3}+){1,4}?"
    rf"(?:{_STREET_TYPES})(?![\w'’])\.?"
    # street type first: 73 Rue de la Paix, 12 Via Roma
    r"|(?:Rue|rue|Via|Calle|Avenida|Piazza|Chemin|Quai|Allée|Place|Avenue)[ \t]{1,3}"
    r"(?:(?:de|la|le|du|des|del|della|di|da)[ \t]{1,3}){0,2}[A-Z][\w'’\-]{1,24})")
_US_STATES = frozenset("AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV "
                       "NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY".split())
_STATE_ZIP = r"[A-Z]{2}[ \t]{1,3}\d{5}(?:-\d{4})?(?!\d)"
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]?[ \t]{0,2}\d[ABD-HJLNP-UW-Z]{2}(?!\w)"
_POSTCODE = re.compile(r"[A-Z](?:[A-Z]?\d[A-Z\d]?[ \t]{0,2}\d[ABD-HJLNP-UW-Z]{2}(?!\w)"  # UK postcode, or
                       r"|(?P<zip>[A-Z][ \t]{1,3}\d{5}(?:-\d{4})?(?!\d)))")  # US state + ZIP
_PLACE = r"[A-Z][\w'’\-]{1,24}(?:[ \t]{1,2}[A-Z][\w'’\-]{1,24}){0,2}"
_PLACE_BEFORE = re.compile(_PLACE + r",?[ \t]{1,3}$")
_ADDRESS_TAIL = re.compile(
    r",?[ \t]{1,3}(?:(?:apt|Apt|APT|apartment|Apartment|unit|Unit|suite|Suite|ste|Ste|flat|Flat|floor|Floor|#)"
    r"\.?[ \t]{0,2}[\w\-]{1,6}"
    rf"|{_PLACE},?[ \t]{{1,3}}(?:{_STATE_ZIP}|{_UK_POSTCODE})|{_STATE_ZIP}|{_UK_POSTCODE}"
    r"|(?:NW|NE|SW|SE|N|S|E|W)(?!\w))")
_UNIT_BEFORE = re.compile(r"(?:apt|apartment|unit|suite|flat)\.?[ \t]{0,2}[\w\-]{1,6},?[ \t]{1,3}$")  # lower-cased
_PO_BOX = re.compile(r"p\.?[ \t]?o\.?[ \t]{0,2}box[ \t]{1,3}\d{1,6}(?!\d)")  # lower-cased
_ADDRESS_CUE = re.compile(
    r"(?:live\s{1,3}(?:at|on)|address\s{0,3}(?:is|was|:|=|-)|moved\s{1,3}to|resid(?:e|ing)\s{1,3}at"
    r"|send\s{1,3}(?:(?:it|them|(?:the|my)\s{1,3}\w{1,12})\s{1,3})?to|mail\s{1,3}(?:(?:it|them|(?:the|my)\s{1,3}\w{1,12})\s{1,3})?to"
    r"|post\s{1,3}(?:(?:it|them|(?:the|my)\s{1,3}\w{1,12})\s{1,3})?to|deliver\s{1,3}(?:(?:it|them|(?:the|my)\s{1,3}\w{1,12})\s{1,3})?to)"
    r"(?![a-z])[ \t]{0,3}[:\-]?[ \t]{0,3}")
_ADDRESS_END = re.compile(  # lower-cased
    r"\n|[?!;]|\.(?:\s|$)|\s\(|,?\s{1,3}(?:and|but|so|because|please|thanks|thank|since|until|if|or|last|next"
    r"|yesterday|today|recently|ago|can|could|is|was|call|phone|tel|mobile|cell|email|e-mail|dob|born"
    r"|ssn|card|account|i|my|that['’]s|that)(?![\w'’])")
_ADDRESS_SPAN = 90


def _addresses(doc: Doc, r: Redactor) -> Iterator[Span]:
    text, low, n = doc.text, doc.low, len(doc.text)
    spans: list[tuple[int, int]] = []
    for m in _cues(_ADDRESS_CUE, low):
        start = m.end()
        stop = _ADDRESS_END.search(low, start, min(n, start + _ADDRESS_SPAN))
        segment = text[start:stop.start() if stop else min(n, start + _ADDRESS_SPAN)].rstrip(" ,.-")
        if any(ch.isdigit() for ch in segment) and re.search(r"[^\W\d_]{2}", segment):
            spans.append((start, start + len(segment)))
    for m in _STREET.finditer(text):
        start, end = m.span()
        unit = _UNIT_BEFORE.search(low, max(0, start - 24), start)
        if unit and _word_start(low, unit.start()):
            start = unit.start()
        for _ in range(4):
            tail = _ADDRESS_TAIL.match(text, end)
            if tail is None:
                break
            end = tail.end()
        spans.append((start, end))
    for m in _cues(_PO_BOX, low):
        spans.append(m.span())
    for m in _POSTCODE.finditer(text):
        state = m.group()[:2] if m.group("zip") else None
        if not _word_start(low, m.start()) or (state is not None and state not in _US_STATES):
            continue
        place = _PLACE_BEFORE.search(text, max(0, m.start() - 64), m.start())
        spans.append((place.start() if place else m.start(), m.end()))
    # one address found several ways is one span
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1] + 2:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in merged:
        yield "ADDRESS", start, end


# --- the redactor -------------------------------------------------------------------------------

# Applied in this order; a span already claimed (masked or kept) is not masked again by a later one.
DETECTORS: tuple[tuple[str, Callable[[Doc, Redactor], Iterable[Span]]], ...] = (
    ("email", _emails),
    ("iban", _ibans),
    ("card", _cards),
    ("ssn", _ssns),
    ("card_secrets", _card_secrets),
    ("dob", _birth_dates),
    ("labelled_ids", _labelled_ids),
    ("references", _references),
    ("name", _names),
    ("address", _addresses),
    ("other_dates", _other_dates),
    ("phone", _phones),
    ("grouped_accounts", _grouped_accounts),
    ("ids_near_cues", _ids_near_cues),
    ("bare_numbers", _bare_numbers),
)

# Every pattern that runs over user text, for the linear-time tests and benchmark.
PATTERNS: dict[str, re.Pattern] = {name: value for name, value in globals().items()
                                   if isinstance(value, re.Pattern)}

_NUMBER_TAGS = frozenset({"CARD", "ACCOUNT", "SSN", "CVV", "EXPIRY", "PIN", "PHONE", "MRN", "DOB", "DATE", "IP"})


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _words(text: str) -> str:
    return " ".join(re.findall(r"[^\W_]+", text.casefold()))


@dataclass
class Finding:
    tag: str
    start: int
    end: int
    text: str


class Redactor:
    """Find and mask PII. `allow` lists public strings (the institution's own numbers and addresses)
    to keep; `regions` are where numbers without a country code are dialled; `today` dates 'recent'."""

    def __init__(self, allow: Iterable[str] = (), regions: Iterable[str] = ("US", "GB"),
                 today: dt.date | None = None):
        allow = [a for a in allow if a]
        self.allow_digits = {_digits(a) for a in allow if _digits(a) and not re.search(r"[^\W\d_]", a)}
        self.allow_words = [f" {_words(a)} " for a in allow if _words(a)]
        self.regions = tuple(regions)
        self.today = today or dt.date.today()

    def _public(self, tag: str, value: str) -> bool:
        if not self.allow_digits and not self.allow_words:
            return False
        if tag in _NUMBER_TAGS:
            return _digits(value) in self.allow_digits
        key = f" {_words(value)} "
        return key.strip() != "" and any(key in allowed for allowed in self.allow_words)

    def find(self, text: str) -> list[Finding]:
        doc = Doc.of(text)
        claimed = bytearray(len(text))  # 1 where a span is already masked or kept
        found: list[Finding] = []
        for _, detect in DETECTORS:
            for tag, start, end in detect(doc, self):
                if start >= end or claimed.find(1, start, end) != -1:
                    continue
                claimed[start:end] = b"\x01" * (end - start)
                value = text[start:end]
                if tag is not None and not self._public(tag, value):
                    found.append(Finding(tag, start, end, value))
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
    """Values in an institution's own texts (its phone lines, addresses, e-mail, routing number) that
    the redactor would mask: they are public, and passed back as `allow`."""
    redactor = Redactor()
    return {f.text for text in texts for f in redactor.find(text)}
