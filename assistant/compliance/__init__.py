"""Compliance: PII redaction, the audit trail (SQLite, PostgreSQL), prompt-injection screening, safety rules."""
