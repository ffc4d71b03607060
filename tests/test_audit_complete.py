"""Every turn leaves exactly one audit row, whatever became of it: finished, cancelled by the caller,
failed, or cut short by a killed process; with the user's name; purge and erasure are audited."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from assistant.compliance.audit import AuditLog
from tests.conftest import ROOT

QUESTION = "How much does it cost to send an international wire?"


def rows_for(where, session: str) -> list[dict]:
    """A session's turns in a data directory's audit.sqlite, or in a file or PostgreSQL URL given as such."""
    target = where / "audit.sqlite" if isinstance(where, Path) and where.is_dir() else where
    return [r for r in AuditLog(target).turns() if r["session_id"] == session]


@pytest.fixture(params=["sqlite", "postgres"])
def audited_bot(request, bank_bot, data_dir):
    """The bank assistant and where it audits: the session's own (SQLite in the data directory), or the same
    assistant writing to a fresh PostgreSQL database (a shallow copy: its models and index, another store;
    building a second Assistant would cost half a minute here)."""
    if request.param == "sqlite":
        return bank_bot, data_dir / "audit.sqlite"
    url = request.getfixturevalue("postgres").new_database()
    bot = copy.copy(bank_bot)
    bot.audit = AuditLog(url, bank_bot.audit.redactor)
    return bot, url


def test_a_finished_turn_has_one_row_with_its_user(bank_bot, data_dir):
    response = bank_bot.respond(QUESTION, session_id="done-1", user="alice", answer_mode="evidence")
    rows = rows_for(data_dir, "done-1")
    assert len(rows) == 1, rows
    assert rows[0]["status"] == "ok" and rows[0]["user"] == "alice" and rows[0]["id"] == response.turn_id
    assert rows[0]["answer"] and rows[0]["error"] is None


def test_a_turn_the_caller_stops_reading_is_recorded_as_cancelled(bank_bot, data_dir):
    stream = bank_bot.stream(QUESTION, session_id="cancel-1", user="bob", answer_mode="evidence")
    first = next(stream)  # the quoted evidence, shown before the model writes
    assert not first.done and "$" in first.answer
    assert [r["status"] for r in rows_for(data_dir, "cancel-1")] == ["streaming"]
    stream.close()  # what a closed tab or a cancel does to the generator
    rows = rows_for(data_dir, "cancel-1")
    assert len(rows) == 1 and rows[0]["status"] == "cancelled" and rows[0]["user"] == "bob"
    assert rows[0]["id"] == first.turn_id and "From *" in rows[0]["answer"]  # what the customer saw


class FailingServer(ThreadingHTTPServer):
    """An OpenAI-compatible server that lists a model, then fails every completion (a back end dying
    mid-conversation): a real HTTP server on loopback."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                body = json.dumps({"object": "list", "data": [{"id": "served-model", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                return None

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_a_failed_turn_is_recorded_with_its_error_class(bank_bot, data_dir):
    server = FailingServer()
    try:
        from assistant import Assistant, AssistantConfig

        broken = Assistant(AssistantConfig(domain="bank", data_dir=data_dir, backend="openai", answer_mode="evidence",
                                           base_url=f"http://127.0.0.1:{server.server_port}/v1", retries=0,
                                           request_timeout=10), embedder=bank_bot.embedder)
        stream = broken.stream(QUESTION, session_id="error-1")
        first = next(stream)  # the quote shows; then the back end fails
        with pytest.raises(Exception) as caught:
            next(stream)
    finally:
        server.shutdown()
    rows = rows_for(data_dir, "error-1")
    assert len(rows) == 1 and rows[0]["status"] == "error"
    assert rows[0]["error"] == type(caught.value).__name__ == "GenerationError"
    assert caught.value.turn_id == rows[0]["id"] == first.turn_id  # the reference the UI shows instead
    assert "From *" in rows[0]["answer"]  # what the customer saw before the failure


def test_a_killed_process_leaves_the_turn_it_was_answering(bank_bot, data_dir):
    script = (
        "import os, signal\n"
        "from assistant import Assistant, AssistantConfig\n"
        f"bot = Assistant(AssistantConfig(domain='bank', data_dir={str(data_dir)!r}, answer_mode='evidence'))\n"
        f"stream = bot.stream({QUESTION!r}, session_id='killed-1')\n"
        "first = next(stream)  # the quote is on screen; the answer is being written when the process dies\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    rows = rows_for(data_dir, "killed-1")
    assert len(rows) == 1 and rows[0]["status"] == "streaming" and "From *" in rows[0]["answer"]


def test_erasure_and_purge_remove_rows_and_are_themselves_audited(audited_bot):
    bot, target = audited_bot
    bot.respond("What is the routing number?", session_id="erase-me")
    turn = rows_for(target, "erase-me")[0]["id"]
    bot.feedback(turn, 1, "thanks")  # what the UI's thumbs call
    log = AuditLog(target)
    counts = log.erase("erase-me", by="dpo")
    assert counts["turns"] == 1 and counts["feedback"] == 1 and not rows_for(target, "erase-me")
    erased = log.events("audit_erase")[-1]
    assert erased["user"] == "dpo" and "erase-me" not in str(erased["detail"])
    before = len(list(log.turns()))
    purged = log.purge(time.time() - 365 * 86400, by="dpo")  # nothing a year old: nothing goes
    assert purged["turns"] == 0 and len(list(log.turns())) == before
    assert log.events("audit_purge")[-1]["detail"]["turns"] == 0


def test_purge_and_erase_from_the_command_line(bank_bot, data_dir):
    from tests.conftest import run_cli

    bank_bot.respond("What is the routing number?", session_id="cli-erase")
    db = str(data_dir / "audit.sqlite")
    done = run_cli("assistant", "audit", "erase", "--session", "cli-erase", "--db", db, "--by", "dpo")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["turns"] == 1 and not rows_for(data_dir, "cli-erase")
    done = run_cli("assistant", "audit", "purge", "--before", "2000-01-01", "--db", db, "--by", "dpo")
    assert done.returncode == 0 and json.loads(done.stdout)["turns"] == 0, done.stderr
    kinds = [e["kind"] for e in AuditLog(db).events()]
    assert "audit_erase" in kinds and "audit_purge" in kinds
