"""The audit log on each engine: SQLite (the default) and PostgreSQL (`--audit-url`, a real server that the
tests start): several processes writing at once lose nothing, `audit export` reads either, and a wrong URL or
a dropped connection is one line that says what to check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.compliance.audit import AuditLog, AuditStoreError, TurnRecord
from assistant.config import AssistantConfig
from tests.conftest import ROOT, run_cli

PROCESSES, TURNS = 4, 50

# One writer process: opens the log, says it is ready, waits for "go", then writes its turns from two threads,
# each turn first as `streaming` (its first text shown) and then completed under the same id, with feedback.
WRITER = """
import sys, threading
from assistant.compliance.audit import AuditLog, TurnRecord

target, name, turns = sys.argv[1], sys.argv[2], int(sys.argv[3])
log = AuditLog(target)
print("ready", flush=True)
sys.stdin.readline()

def write(numbers):
    for n in numbers:
        tag = f"{name} turn {n}"
        turn = TurnRecord(session_id=name, domain="bank", message=f"question from {tag}", intent=None,
                          intent_confidence=None, action="answer", answer="first words", status="streaming")
        log.record(turn)
        turn.answer, turn.status = f"answer for {tag}", "ok"
        log.record(turn)
        log.feedback(turn.id, 1, f"feedback on {tag}")

threads = [threading.Thread(target=write, args=(range(i, turns, 2),)) for i in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
log.close()
print("done", flush=True)
"""


def test_several_processes_writing_at_once_lose_nothing(audit_target):
    AuditLog(audit_target).close()  # the tables exist before the writers race (they also cope without)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(audit_target), f"p{i}", str(TURNS)], cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(PROCESSES)]
    try:
        for w in writers:  # all connected before any writes: the writes overlap
            assert w.stdout.readline().strip() == "ready", w.stderr.read()
        for w in writers:
            w.stdin.write("go\n")
            w.stdin.flush()
        for w in writers:
            out, err = w.communicate(timeout=300)
            assert w.returncode == 0 and out.strip() == "done", err[-2000:]
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
    log = AuditLog(audit_target)
    turns = {r["id"]: r for r in log.turns()}
    assert len(turns) == PROCESSES * TURNS
    assert {r["status"] for r in turns.values()} == {"ok"}
    assert all(r["answer"] == r["message"].replace("question from", "answer for") for r in turns.values())
    feedback = log.feedback_rows()
    assert len(feedback) == PROCESSES * TURNS
    assert {f["turn_id"] for f in feedback} == set(turns)  # one on every turn
    for f in feedback:  # and each on its own turn
        assert f["comment"].removeprefix("feedback on ") == turns[f["turn_id"]]["message"].removeprefix(
            "question from ")


def test_audit_export_reads_either_store(audit_target):
    log = AuditLog(audit_target)
    first = log.record(TurnRecord(session_id="s1", domain="bank", message="call me on 617-555-0199",
                                  intent="contact", intent_confidence=0.9, action="answer", answer="Sure.",
                                  user="alice", latency={"total_ms": 12.0}))
    log.record(TurnRecord(session_id="s2", domain="hospital", message="visiting hours?", intent=None,
                          intent_confidence=None, action="answer", answer="9 to 5", status="cancelled"))
    ticket = log.open_ticket("s1", "bank", "button", "wants a person")
    flag = ["--audit-url", audit_target] if isinstance(audit_target, str) else ["--db", str(audit_target)]
    done = run_cli("assistant", "audit", "export", *flag, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows == list(log.turns())
    assert rows[0]["id"] == first and rows[0]["message"] == "call me on [PHONE]" and rows[0]["user"] == "alice"
    assert rows[0]["latency"] == {"total_ms": 12.0} and rows[1]["status"] == "cancelled"
    done = run_cli("assistant", "audit", "export", "--db", str(audit_target), "--tickets", timeout=120)
    assert done.returncode == 0 and json.loads(done.stdout)["id"] == ticket, done.stderr


def test_a_wrong_url_is_one_line_that_says_what_to_check(postgres):
    with pytest.raises(AuditStoreError, match="cannot connect .*check that PostgreSQL runs there") as caught:
        AuditLog("postgresql://audit:s3cret@127.0.0.1:1/audit")
    assert "\n" not in str(caught.value) and "s3cret" not in str(caught.value)  # the password is not shown
    with pytest.raises(AuditStoreError, match='database "missing" does not exist'):
        AuditLog(postgres.url("missing"))
    with pytest.raises(AuditStoreError, match="not one libpq reads"):
        AuditLog("postgresql://u@h/d?no_such_option=1")
    with pytest.raises(ValueError, match="--audit-url takes postgresql://"):
        AssistantConfig(audit_url="mysql://db/audit")
    done = run_cli("assistant", "audit", "export", "--audit-url", "postgresql://nobody@127.0.0.1:1/audit",
                   timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: audit store"), done.stderr


def test_a_dropped_connection_is_replaced_or_said_in_one_line(postgres):
    url = postgres.new_database()
    AuditLog(url).close()  # the tables, created by their owner
    database = url.rsplit("/", 1)[1]
    postgres.admin("CREATE ROLE clerk LOGIN")
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:  # the least a writer needs
        conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO clerk")
    log = AuditLog(postgres.url(database, user="clerk"))
    log.event("first")

    def drop() -> None:  # what a server restart or a failover does to the connection
        postgres.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'clerk'")

    drop()
    log.event("after a drop")  # a new connection, on the spot
    postgres.admin("ALTER ROLE clerk NOLOGIN")  # and now no new one can be opened
    drop()
    with pytest.raises(AuditStoreError, match="connection was lost and a new one failed") as caught:
        log.event("lost")
    assert "\n" not in str(caught.value) and "check that PostgreSQL runs there" in str(caught.value)
    postgres.admin("ALTER ROLE clerk LOGIN")
    log.event("back")
    assert [e["kind"] for e in log.events()] == ["first", "after a drop", "back"]


def test_the_audit_url_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("RA_AUDIT_URL", "postgresql://audit@db.internal/assistant")
    assert AssistantConfig.load(data_dir=tmp_path).audit_target == "postgresql://audit@db.internal/assistant"
    monkeypatch.delenv("RA_AUDIT_URL")
    assert AssistantConfig.load(data_dir=tmp_path).audit_target == Path(tmp_path) / "audit.sqlite"
    from assistant.__main__ import config_from, parser

    args = parser().parse_args(["ask", "hi", "--audit-url", "postgresql://audit@db.internal/assistant"])
    assert config_from(args).audit_url == "postgresql://audit@db.internal/assistant"
    from ui.__main__ import parser as ui_parser

    assert ui_parser().parse_args(["--audit-url", "postgresql://a@b/c"]).audit_url == "postgresql://a@b/c"
