"""PII redaction: the security review's reproductions, each kind, the labelled test sets, and linear
time on adversarial 100,000-character input (scaling, not a fixed budget: the 100 ms target is
measured by `python -m assistant.tools.redact_eval`)."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from assistant.compliance.redact import DETECTORS, PATTERNS, Doc, Redactor, public_numbers
from assistant.tools.redact_eval import (
    HELD_OUT_SET,
    LABELLED_SET,
    adversarial_inputs,
    evaluate_labelled,
    main,
)

TODAY = dt.date(2026, 11, 30)


def redact(text: str) -> str:
    return Redactor(today=TODAY).redact(text)


# What the review found stored as typed, and what the redactor missed or only partly masked.
@pytest.mark.parametrize(("text", "expected"), [
    ("the cvv is 382", "the cvv is [CVV]"),
    ("card 4111 1111 1111 1111 exp 09/27", "card [CARD] exp [EXPIRY]"),
    ("card expiry 11/2028", "card expiry [EXPIRY]"),
    ("my PIN is 4821", "my PIN is [PIN]"),
    ("I'm Sarah Connolly and I can't log in", "I'm [NAME] and I can't log in"),
    ("my name is anna kowalski", "my name is [NAME]"),
    ("I live at 12 Baker Street, London NW1 6XE", "I live at [ADDRESS]"),
    ("send it to 45 Elm St., Apt 4B, Springfield, IL 62704", "send it to [ADDRESS]"),
    ("DOB 3/14/85", "DOB [DOB]"),
    ("date of birth: 14/03/85", "date of birth: [DOB]"),
    ("patient ref H-4829137", "patient ref [MRN]"),
    ("ssn 123  45  6789", "ssn [SSN]"),
    ("ssn 123.45.6789", "ssn [SSN]"),
    ("my card 4111/1111/1111/1111", "my card [CARD]"),
    ("born on 14-Mar-1985", "born on [DOB]"),
    ("IBAN GB82-WEST-1234-5698-7654-32 please", "IBAN [IBAN] please"),
])
def test_review_reproductions_are_masked(text, expected):
    assert redact(text) == expected


# What held in the review, and must keep holding.
@pytest.mark.parametrize(("text", "expected"), [
    ("card 4111111111111111", "card [CARD]"),
    ("IBAN GB82 WEST 1234 5698 7654 32 for me", "IBAN [IBAN] for me"),
    ("ssn 123 45 6789", "ssn [SSN]"),
    ("call me on (617) 555-0199", "call me on [PHONE]"),
    ("write to jane.doe+bank@example.co.uk today", "write to [EMAIL] today"),
    ("DOB: March 14, 1985", "DOB: [DOB]"),
    ("MRN 00482913 is wrong", "MRN [MRN] is wrong"),
])
def test_what_held_still_holds(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    # card secrets, with and without cue words
    ("4000 0566 5566 5556 09/28 771 - does it work abroad?", "[CARD] [EXPIRY] [CVV] - does it work abroad?"),
    ("The 3 digits on the back are 739", "The 3 digits on the back are [CVV]"),
    ("expiration date: Jan 2027", "expiration date: [EXPIRY]"),
    ("Is 9024 a safe PIN?", "Is [PIN] a safe PIN?"),
    ("password: Summer2024!", "password: [PASSWORD]"),
    ("my password is expired", "my password is expired"),
    # numbers with a label, either side of it
    ("member ID is XKJ448812901", "member ID is [ACCOUNT]"),
    ("Medicare number 1EG4-TE5-MK73", "Medicare number [ACCOUNT]"),
    ("NHS number 943 476 5919", "NHS number [MRN]"),
    ("acct #4458-2231-09 shows a fee", "acct #[ACCOUNT] shows a fee"),
    # dialled like a phone number, so masked as one; not kept as a toll-free line (not grouped as one)
    ("8007-839251 is my account no.", "[PHONE] is my account no."),
    # names
    ("my husband, Marcus Bell, is in ward 4B", "my husband, [NAME], is in ward 4B"),
    ("I am Mr. Samuel Okafor's daughter", "I am Mr. [NAME]'s daughter"),
    ("The card was stolen.\n\nKind regards,\nFiona McAllister", "The card was stolen.\n\nKind regards,\n[NAME]"),
    ("I'm locked out", "I'm locked out"),
    ("I'm Jewish and need kosher meals", "I'm Jewish and need kosher meals"),
    ("this is Northbridge Federal Bank calling", "this is Northbridge Federal Bank calling"),
    # addresses
    ("Flat 3, 22 Queen's Road, Bristol BS8 1QU", "[ADDRESS]"),
    ("please use PO Box 7781 for statements", "please use [ADDRESS] for statements"),
    ("Home address: 73 Rue de la Paix, Paris", "Home address: [ADDRESS]"),
    ("Can I deposit 3 checks at the ATM on Main Street?", "Can I deposit 3 checks at the ATM on Main Street?"),
    # dates: a birth date in any form; other dates only when long past
    ("1992-11-03 is my date of birth", "[DOB] is my date of birth"),
    ("I was born in May 1960", "I was born in [DOB]"),
    ("I opened the account on 3 March 2001", "I opened the account on [DATE]"),
    ("Can I book an appointment for December 3, 2026 at 10:30?",
     "Can I book an appointment for December 3, 2026 at 10:30?"),
    ("the scan is on 12.05.2027", "the scan is on 12.05.2027"),
    # look-alikes that are not personal
    ("I was charged $1,234.56 twice", "I was charged $1,234.56 twice"),
    ("my order #10029384 never shipped", "my order #10029384 never shipped"),
    ("sort code 20-00-00 account 55779911", "sort code 20-00-00 account [ACCOUNT]"),
    ("I called 1-888-555-0123 from the letter", "I called 1-888-555-0123 from the letter"),
    ("version 2.3.14 of the app", "version 2.3.14 of the app"),
    ("my blood pressure was 120/80", "my blood pressure was 120/80"),
])
def test_kinds_and_look_alikes(text, expected):
    assert redact(text) == expected


def test_institution_contacts_stay_readable_and_customers_do_not():
    from assistant.packs import load_pack

    pack = load_pack("bank")
    redactor = Redactor(allow=public_numbers([*pack.contacts.values(), *pack.replies.values()]))
    kept = "Is the branch at 200 Harbor Street open? I called 860-555-0111; email complaints@northbridgebank.example"
    assert redactor.redact(kept) == kept
    assert redactor.redact("I live at 14 Harbor Street, call 860-555-0199") == "I live at [ADDRESS], call [PHONE]"


def test_labelled_set_recall_and_false_positives():
    report = evaluate_labelled(LABELLED_SET)
    assert report.values >= 150 and report.clean >= 80
    assert report.caught / report.values >= 0.97, report.misses
    assert all(c / n >= 0.85 for c, n in report.by_kind.values()), report.by_kind
    assert report.clean_flagged <= 1, report.false_positives


def test_held_out_set_recall_and_false_positives():
    report = evaluate_labelled(HELD_OUT_SET)
    assert report.values >= 80 and report.clean >= 30
    assert report.caught / report.values >= 0.95, report.misses
    assert report.clean_flagged <= 1, report.false_positives


def test_eval_command_writes_json(tmp_path, capsys):
    out = tmp_path / "redact.json"
    assert main(["--part", "labelled", "--json", str(out)]) == 0
    assert main(["--part", "timing", "--length", "2000"]) == 0
    printed = capsys.readouterr().out
    assert "recall" in printed and "CPU ms" in printed and "'a@'" in printed
    results = json.loads(out.read_text())
    assert set(results["labelled"]["by_kind"]) >= {"card", "cvv", "expiry", "pin", "name", "address", "dob", "mrn"}
    assert results["held_out"]["values"] >= 80


# --- linear time ------------------------------------------------------------------------------------

SHAPES = ["a", "1", "a@", "1 ", "1-", "a.", "12 ", "a@a.", "mixed", "PII message"]
SMALL, LARGE = adversarial_inputs(10_000), adversarial_inputs(100_000)


def _cpu_ms(fn, text: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        fn(text)
        best = min(best, time.process_time() - start)
    return best * 1000


def _quadratic(fn) -> list[str]:
    """Inputs on which 10x the text took far more than 10x the time, or over 2 s. A 1 ms floor keeps
    timer noise on near-instant runs from reading as growth."""
    slow = []
    for shape in SHAPES:
        small, large = _cpu_ms(fn, SMALL[shape]), _cpu_ms(fn, LARGE[shape])
        if large > 30 * max(small, 1.0) or large > 2000:
            slow.append(f"{shape!r}: {small:.1f} ms at 10k, {large:.1f} ms at 100k")
    return slow


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_each_pattern_is_linear(name):
    pattern = PATTERNS[name]
    slow = _quadratic(lambda text: sum(1 for _ in pattern.finditer(text)))
    assert not slow, slow


@pytest.mark.parametrize("name", [name for name, _ in DETECTORS])
def test_each_detector_is_linear(name):
    detect = dict(DETECTORS)[name]
    redactor = Redactor()
    slow = _quadratic(lambda text: list(detect(Doc.of(text), redactor)))
    assert not slow, slow


def test_whole_redactor_is_linear():
    redactor = Redactor()
    slow = _quadratic(redactor.redact)
    assert not slow, slow


def test_the_reviewed_stall_is_gone():
    """100,000 characters of `a` or `1` took 27 s and 46 s."""
    redactor = Redactor()
    for text in ("a" * 100_000, "1" * 100_000):
        start = time.process_time()
        assert redactor.redact(text) == text
        assert time.process_time() - start < 2.0


def test_findings_do_not_overlap_on_dense_input():
    text = LABELLED_SET.read_text(encoding="utf-8") * 3
    findings = Redactor().find(text)
    assert findings and all(a.end <= b.start for a, b in zip(findings, findings[1:], strict=False))


def test_an_ip_address_is_masked_as_an_address_not_a_phone_number():
    from assistant.compliance.redact import Redactor

    text = Redactor().redact("login from 203.0.113.77 failed, my router is 192.168.1.254")
    assert text == "login from [IP] failed, my router is [IP]"
