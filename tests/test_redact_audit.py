"""PII redaction (generated cases and edge cases) and the audit log (durable, redacted), in SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from assistant.compliance.audit import AuditLog, TurnRecord, parse_since
from assistant.compliance.redact import Redactor, iban_ok, luhn_ok, public_numbers
from assistant.tools.redact_eval import evaluate
from tests.conftest import ROOT, raw_bytes


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")


@pytest.mark.parametrize(("text", "expected"), [
    ("card 4111 1111 1111 1111 please", "card [CARD] please"),
    ("card 4111 1111 1111 1112 please", "card [ACCOUNT] please"),  # fails Luhn: masked, not as a card
    ("IBAN GB82 WEST 1234 5698 7654 32 for me", "IBAN [IBAN] for me"),
    ("my ssn is 123-45-6789", "my ssn is [SSN]"),
    ("write to jane.doe+bank@example.co.uk today", "write to [EMAIL] today"),
    ("DOB: March 14, 1985", "DOB: [DOB]"),
    ("MRN 00482913 is wrong", "MRN [MRN] is wrong"),
    ("12345678901 is my account", "[ACCOUNT] is my account"),
    ("call me on (617) 555-0199", "call me on [PHONE]"),
    ("The wire fee is $45.00; cut-off 4:00 p.m.", "The wire fee is $45.00; cut-off 4:00 p.m."),
])
def test_redaction_cases(text, expected):
    assert Redactor().redact(text) == expected


def test_institution_numbers_stay_readable():
    redactor = Redactor(allow=public_numbers(["Call 1-800-555-0142; routing number 021555013."]))
    assert redactor.redact("call 1-800-555-0142, routing 021555013") == "call 1-800-555-0142, routing 021555013"
    assert redactor.redact("my cell is 617-555-0199") == "my cell is [PHONE]"


def test_recall_on_generated_cases_and_false_positives():
    report = evaluate(n=800, seed=11)
    assert report.cases == 800
    assert report.recall >= 0.99, report.misses[:5]
    assert all(n == 100 for _, n in report.by_type.values())
    assert report.benign >= 100
    assert report.benign_flagged / report.benign <= 0.02


def stored_bytes(target) -> bytes:
    """Everything the store holds, as bytes: the SQLite files, or every PostgreSQL row as text."""
    if not str(target).startswith("postgresql://"):
        return raw_bytes(sorted(target.parent.glob(target.name + "*")))
    import psycopg

    with psycopg.connect(target) as conn:
        return "".join(row[0] for table in ("turns", "tickets", "events", "feedback")
                       for row in conn.execute(f"SELECT {table}::text FROM {table}")).encode()


def stored_messages(target) -> list[tuple[str]]:
    """The turns' messages, read past AuditLog: sqlite3 on the file, or psycopg on the database."""
    if not str(target).startswith("postgresql://"):
        return sqlite3.connect(target).execute("SELECT message FROM turns").fetchall()
    import psycopg

    with psycopg.connect(target) as conn:
        return conn.execute("SELECT message FROM turns").fetchall()


def test_audit_log_redacts_and_exports(audit_target):
    log = AuditLog(audit_target)
    turn = TurnRecord(session_id="s1", domain="bank", message="my card 4111 1111 1111 1111 was stolen",
                      intent="lost_stolen_card", intent_confidence=0.97, action="flow",
                      retrieved=[{"chunk_id": "abc", "score": 0.8, "content_hash": "h"}], model="m",
                      answer="Freeze card 4111 1111 1111 1111 now", confidence=0.9,
                      latency={"intent_ms": 3.0, "total_ms": 10.0})
    turn_id = log.record(turn)
    ticket = log.open_ticket("s1", "bank", "handoff", "Customer jane@example.com wants a call on 617-555-0199")
    log.feedback(turn_id, 1, "great, my email is jane@example.com")
    assert ticket.startswith("HO-")
    raw = stored_bytes(audit_target)
    assert b"[CARD]" in raw
    for secret in (b"4111 1111", b"jane@example.com", b"617-555-0199"):
        assert secret not in raw
    rows = [json.loads(line) for line in log.export("jsonl").splitlines()]
    assert rows[0]["message"] == "my card [CARD] was stolen" and rows[0]["retrieved"][0]["chunk_id"] == "abc"
    assert "[EMAIL]" in log.tickets()[0]["summary"] and "[EMAIL]" in log.feedback_rows()[0]["comment"]
    assert log.export("csv").startswith("id,time,session_id")
    with pytest.raises(ValueError, match="no answer with id"):
        log.feedback("nope", 1)
    assert parse_since("24h") < parse_since("1h")
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday-ish")


def test_audit_record_survives_kill_right_after_writing(audit_target):
    code = (
        "import os, signal, sys\n"
        "from assistant.compliance.audit import AuditLog, TurnRecord\n"
        f"log = AuditLog({str(audit_target)!r})\n"
        "log.record(TurnRecord(session_id='k', domain='bank', message='hello', intent=None, "
        "intent_confidence=None, action='answer', answer='hi'))\n"
        "print('written', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9 and "written" in proc.stdout
    assert stored_messages(audit_target) == [("hello",)]
