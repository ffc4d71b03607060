"""Pilot logins: users from a file (`--users FILE`, `RA_UI_USERS_FILE`) or an environment variable
(`RA_UI_USERS="alice:secret,bob:sha256:<hex>"`).

One user per line (lines starting with `#` are comments): `name:password`, or `name:sha256:<hex digest of the
password>` so that the file need not hold passwords in clear. `python -m ui hash-password` prints
such a line. When any user is configured, Gradio asks for a login before any page or API route works.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path


class UsersError(ValueError):
    """The users file or variable cannot be used; the message says which line and why."""


def _parse(lines: list[str], where: str) -> dict[str, str]:
    users: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):  # whole-line comments only: a password may hold '#'
            continue
        name, sep, secret = line.partition(":")
        name = name.strip()
        if not sep or not name or not secret:
            raise UsersError(f"{where}, entry {number}: expected 'name:password' or 'name:sha256:HEX'")
        if secret.startswith("sha256:"):
            digest = secret[len("sha256:"):].strip().lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise UsersError(f"{where}, entry {number}: a sha256 digest is 64 hex characters")
            users[name] = f"sha256:{digest}"
        else:
            users[name] = f"sha256:{hash_password(secret)}"
    return users


def hash_password(password: str) -> str:
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def load_users(users_file: str | Path | None = None, env: dict[str, str] | None = None) -> dict[str, str]:
    """name -> "sha256:HEX" from the file and/or the variable; empty when neither is set."""
    env = os.environ if env is None else env
    users: dict[str, str] = {}
    path = users_file or env.get("RA_UI_USERS_FILE")
    if path:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsersError(f"cannot read the users file {path}: {exc}") from exc
        users.update(_parse(text.splitlines(), str(path)))
        if not users:
            raise UsersError(f"the users file {path} names no user: add lines 'name:password'")
    if env.get("RA_UI_USERS"):
        users.update(_parse(env["RA_UI_USERS"].split(","), "RA_UI_USERS"))
    return users


def checker(users: dict[str, str]):
    """Gradio's auth callable: (username, password) -> bool, in constant time per comparison."""

    def check(username: str, password: str) -> bool:
        stored = users.get(username or "")
        given = f"sha256:{hash_password(password or '')}"
        return stored is not None and hmac.compare_digest(stored, given)

    return check
