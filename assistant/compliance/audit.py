"""The audit log and handoff tickets: one record per turn, PII redacted, in SQLite or PostgreSQL.

    AuditLog("~/.local/share/regulated-assistant/audit.sqlite")      # the default: SQLite in WAL mode
    AuditLog("postgresql://audit@db.internal:5432/assistant")        # `--audit-url` / $RA_AUDIT_URL

Besides turns, `event()` records what happens around them (an upload, a refused file, an approval),
with who did it: kind, user name, session, domain and a JSON detail, redacted like the rest.

Every record is committed (SQLite: synchronous=FULL; PostgreSQL: its own commit) before the answer is
returned to the caller, so a process killed right after answering has already written it. Messages,
answers and ticket summaries pass through the Redactor first; nothing unredacted is stored.

AuditLog holds what a record means (redaction, statuses, JSON fields); a store runs its SQL on one
engine: `SQLiteStore` below, `PostgresStore` in assistant/compliance/audit_postgres.py (the `postgres` extra).
Both have the same tables and columns; the SQL is written once, with `?` placeholders.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from assistant.compliance.redact import Redactor
from index.errors import SettingError, UserError

# the one schema: PostgreSQL's is this with its types (audit_postgres.postgres_schema)
SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (
    id TEXT PRIMARY KEY,
    time REAL NOT NULL,
    session_id TEXT,
    domain TEXT,
    message TEXT,
    intent TEXT,
    intent_confidence REAL,
    action TEXT,
    retrieved TEXT,          -- JSON: [{chunk_id, source, score, content_hash}]
    model TEXT,
    adapter TEXT,
    prompt_hash TEXT,
    answer TEXT,
    confidence REAL,
    grounded INTEGER,
    latency TEXT,            -- JSON: {intent_ms, retrieval_ms, generation_ms, check_ms, total_ms}
    ticket TEXT,
    status TEXT,             -- ok, streaming (started, never finished: the process died), cancelled, error
    error TEXT,              -- the exception's class when status is error
    "user" TEXT              -- the login name, when logins are on
);
CREATE INDEX IF NOT EXISTS turns_time ON turns(time);
CREATE TABLE IF NOT EXISTS tickets (
    id TEXT PRIMARY KEY,
    time REAL NOT NULL,
    session_id TEXT,
    domain TEXT,
    reason TEXT,
    summary TEXT,
    status TEXT NOT NULL DEFAULT 'open'
);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    time REAL NOT NULL,
    kind TEXT NOT NULL,      -- upload, upload_refused, upload_approved, upload_rejected, ...
    "user" TEXT,
    session_id TEXT,
    domain TEXT,
    detail TEXT              -- JSON object
);
CREATE INDEX IF NOT EXISTS events_time ON events(time);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    turn_id TEXT NOT NULL,
    rating INTEGER NOT NULL,  -- +1 thumbs up, -1 thumbs down
    comment TEXT
);
"""


@dataclass
class TurnRecord:
    session_id: str | None
    domain: str
    message: str
    intent: str | None
    intent_confidence: float | None
    action: str | None
    retrieved: list[dict] = field(default_factory=list)
    model: str | None = None
    adapter: str | None = None
    prompt_hash: str | None = None
    answer: str = ""
    confidence: float | None = None
    grounded: bool | None = None
    latency: dict[str, float] = field(default_factory=dict)
    ticket: str | None = None
    status: str = "ok"  # ok, streaming, cancelled, error
    error: str | None = None
    user: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: float = field(default_factory=time.time)


TURN_STATUSES = ("ok", "streaming", "cancelled", "error")
_ADDED_COLUMNS = {"turns": ("status TEXT", "error TEXT", '"user" TEXT')}  # logs written before these existed
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class AuditStoreError(UserError, OSError):
    """The audit store cannot be opened or reached; the message is one line that says what to check."""


class AuditStore(Protocol):
    """What AuditLog needs from an engine. SQL uses `?` placeholders and quotes "user"; callers serialise
    calls (AuditLog holds a lock), so a store need not be thread-safe itself."""

    where: str  # the file or the URL (without its password), for messages

    def execute(self, sql: str, params: Sequence = (), *, retry: bool = True) -> int:
        """Run one statement and commit it; returns the rows it changed. `retry=False` for a statement
        that must not run twice (an insert without its own id) should the connection drop mid-way."""

    def query(self, sql: str, params: Sequence = ()) -> list[dict]:
        """The rows of one SELECT, as dicts by column name."""

    def transaction(self, statements: list[tuple[str, Sequence]]) -> list[int]:
        """Run the statements in one transaction, all or none; returns each one's changed rows."""

    def close(self) -> None:
        """Let go of the file or the connection."""


def open_store(target: str | Path) -> AuditStore:
    """A SQLite file path, or a postgresql:// URL."""
    if isinstance(target, str) and target.startswith(POSTGRES_SCHEMES):
        from assistant.compliance.audit_postgres import PostgresStore

        return PostgresStore(target)
    if isinstance(target, str) and "://" in target:
        raise AuditStoreError(f"audit store {target.split('://')[0]}://...: give a SQLite file path or a "
                              "postgresql://user@host:port/database URL (--audit-url, $RA_AUDIT_URL)")
    return SQLiteStore(Path(target))


class SQLiteStore:
    """One SQLite file in WAL mode: several threads and processes may write it at once."""

    def __init__(self, path: Path):
        self.path = path
        self.where = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as exc:
            raise AuditStoreError(f"audit log {path}: {exc}: check that its folder exists and this user may "
                                  "write there (--data-dir, --db)") from exc
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        for table, columns in _ADDED_COLUMNS.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for column in columns:
                if column.split()[0].strip('"') not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    def execute(self, sql: str, params: Sequence = (), *, retry: bool = True) -> int:
        return self._db.execute(sql, params).rowcount

    def query(self, sql: str, params: Sequence = ()) -> list[dict]:
        cur = self._db.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, values, strict=True)) for values in cur.fetchall()]

    def transaction(self, statements: list[tuple[str, Sequence]]) -> list[int]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            counts = [db.execute(sql, params).rowcount for sql, params in statements]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return counts

    def close(self) -> None:
        self._db.close()


class AuditLog:
    """Append-only audit store shared by the CLI, the UI and the API (thread-safe): a SQLite file path,
    or a postgresql:// URL for a store that several machines share."""

    def __init__(self, target: str | Path, redactor: Redactor | None = None):
        self.redactor = redactor or Redactor()
        self._lock = threading.Lock()
        self._store = open_store(target)
        self.path: Path | None = getattr(self._store, "path", None)  # the SQLite file; None for PostgreSQL
        self.where = self._store.where  # the file, or the URL without its password

    def record(self, turn: TurnRecord) -> str:
        """Write a turn; a turn already recorded under the same id (its provisional row, written when its
        first text was shown) is replaced, so every turn has exactly one row, whatever became of it."""
        if turn.status not in TURN_STATUSES:
            raise ValueError(f"turn status {turn.status!r}: use one of {', '.join(TURN_STATUSES)}")
        r = self.redactor.redact
        row = asdict(turn)
        row.update(message=r(turn.message), answer=r(turn.answer), retrieved=json.dumps(turn.retrieved),
                   latency=json.dumps({k: round(v, 1) for k, v in turn.latency.items()}),
                   grounded=None if turn.grounded is None else int(turn.grounded))
        names = list(row)
        columns = ", ".join(f'"{n}"' for n in names)
        updates = ", ".join(f'"{n}" = excluded."{n}"' for n in names if n not in ("id", "time"))
        with self._lock:
            self._store.execute(f"INSERT INTO turns ({columns}) "
                                f"VALUES ({', '.join('?' * len(names))}) ON CONFLICT(id) DO UPDATE SET {updates}",
                                [row[n] for n in names])
        return turn.id

    def purge(self, before: float, *, by: str | None = None) -> dict[str, int]:
        """Delete turns (with their feedback), tickets and events older than `before` (retention); the purge
        itself is recorded as an event, which is kept."""
        with self._lock:
            counts = self._delete("time < ?", "time < ?", "time < ? AND kind NOT LIKE 'audit_%'", before)
        self.event("audit_purge", user=by, detail={"before": datetime.fromtimestamp(before, UTC).isoformat(),
                                                   **counts})
        return counts

    def erase(self, session_id: str, *, by: str | None = None) -> dict[str, int]:
        """Delete everything recorded for one session (right to erasure); the erasure is recorded as an
        event naming the session's digest, not the session."""
        with self._lock:
            counts = self._delete("session_id = ?", "session_id = ?", "session_id = ? AND kind NOT LIKE 'audit_%'",
                                  session_id)
        digest = hashlib.sha256(session_id.encode()).hexdigest()[:16]
        self.event("audit_erase", user=by, detail={"session_sha256": digest, **counts})
        return counts

    def _delete(self, turns_where: str, tickets_where: str, events_where: str, value) -> dict[str, int]:
        feedback, turns, tickets, events = self._store.transaction([
            (f"DELETE FROM feedback WHERE turn_id IN (SELECT id FROM turns WHERE {turns_where})", (value,)),
            (f"DELETE FROM turns WHERE {turns_where}", (value,)),
            (f"DELETE FROM tickets WHERE {tickets_where}", (value,)),
            (f"DELETE FROM events WHERE {events_where}", (value,)),
        ])
        return {"turns": turns, "feedback": feedback, "tickets": tickets, "events": events}

    def open_ticket(self, session_id: str | None, domain: str, reason: str, summary: str) -> str:
        """Create a handoff ticket; returns its number, e.g. HO-20261126-3F9A2C."""
        ticket = f"HO-{datetime.now(UTC):%Y%m%d}-{uuid.uuid4().hex[:6].upper()}"
        with self._lock:  # the id is ours, so a retry after a dropped connection cannot write it twice
            self._store.execute("INSERT INTO tickets (id, time, session_id, domain, reason, summary) "
                                "VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING",
                                (ticket, time.time(), session_id, domain, reason, self.redactor.redact(summary)))
        return ticket

    def event(self, kind: str, *, user: str | None = None, session_id: str | None = None,
              domain: str | None = None, detail: dict | None = None) -> str:
        """Record something that happened outside a turn; string values in `detail` are redacted."""
        clean = {k: self.redactor.redact(v) if isinstance(v, str) and not _system_value(k) else v
                 for k, v in (detail or {}).items()}
        event_id = uuid.uuid4().hex
        with self._lock:
            self._store.execute('INSERT INTO events (id, time, kind, "user", session_id, domain, detail) '
                                "VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING",
                                (event_id, time.time(), kind, user, session_id, domain, json.dumps(clean)))
        return event_id

    def events(self, kind: str | None = None) -> list[dict]:
        """Recorded events, oldest first (only those of `kind` when given)."""
        with self._lock:
            if kind is None:
                rows = self._store.query("SELECT * FROM events ORDER BY time")
            else:
                rows = self._store.query("SELECT * FROM events WHERE kind = ? ORDER BY time", (kind,))
        for row in rows:
            row["detail"] = json.loads(row["detail"] or "{}")
        return rows

    def feedback(self, turn_id: str, rating: int, comment: str | None = None) -> None:
        if rating not in (1, -1):
            raise SettingError("rating is +1 (helpful) or -1 (not helpful)")
        with self._lock:  # one statement: the turn cannot be erased between the check and the insert
            added = self._store.execute(
                "INSERT INTO feedback (time, turn_id, rating, comment) SELECT ?, ?, ?, ? "
                "WHERE EXISTS (SELECT 1 FROM turns WHERE id = ?)",
                (time.time(), turn_id, rating, self.redactor.redact(comment), turn_id), retry=False)
        if not added:
            raise SettingError(f"no answer with id {turn_id} in the audit log")

    def turns(self, since: float | None = None) -> Iterator[dict]:
        with self._lock:
            rows = self._store.query("SELECT * FROM turns WHERE time >= ? ORDER BY time", (since or 0,))
        for row in rows:
            row["retrieved"] = json.loads(row["retrieved"] or "[]")
            row["latency"] = json.loads(row["latency"] or "{}")
            row["time"] = datetime.fromtimestamp(row["time"], UTC).isoformat(timespec="milliseconds")
            yield row

    def tickets(self) -> list[dict]:
        with self._lock:
            return self._store.query("SELECT * FROM tickets ORDER BY time")

    def feedback_rows(self) -> list[dict]:
        with self._lock:
            return self._store.query("SELECT * FROM feedback ORDER BY id")

    def export(self, fmt: str = "jsonl", since: float | None = None) -> str:
        rows = list(self.turns(since))
        if fmt == "jsonl":
            return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if fmt == "csv":
            out = io.StringIO()
            if rows:
                writer = csv.DictWriter(out, fieldnames=list(rows[0]))
                writer.writeheader()
                for r in rows:
                    writer.writerow({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in r.items()})
            return out.getvalue()
        raise SettingError(f"unknown export format '{fmt}': use jsonl or csv")

    def close(self) -> None:
        with self._lock:
            self._store.close()


def _system_value(key: str) -> bool:
    """Detail fields the system generates (ids, digests): never personal data, and a hex id can look like
    an account number to the redactor."""
    return key == "id" or key.endswith(("_id", "sha256"))


def parse_since(value: str | None) -> float | None:
    """An ISO date/time (2026-11-26 or 2026-11-26T10:00) or a relative age (30m, 24h, 7d)."""
    if not value:
        return None
    units = {"m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return time.time() - int(value[:-1]) * units[value[-1]]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise SettingError(f"--since takes an ISO date or time (2026-11-26T10:00) or an age like 24h: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
