"""Pilot logins: who may log in, and how their passwords are kept.

    python -m ui --users users.txt          # or RA_UI_USERS_FILE=users.txt, or RA_UI_USERS='alice:...,bob:...'
    python -m ui hash-password              # asks for a name and a password, prints a users-file line
    python -m ui rehash-users users.txt     # rewrites passwords written in clear as scrypt hashes

One user per line (`#` starts a comment line). A password is kept as a salted scrypt hash in the PHC
string format, one random 16-byte salt per user:

    alice:$scrypt$ln=15,r=8,p=1$<salt, base64>$<key, base64>

Two older forms still work, with a warning at start-up: `name:sha256:<hex>` (unsalted SHA-256, which a
GPU guesses at billions a second) and `name:password` in clear. `rehash-users` turns clear passwords into
scrypt hashes. A SHA-256 digest cannot become a scrypt hash without the password, so such a line is
rewritten the next time its user logs in, when the users file is writable by the server; otherwise
replace it with a line from `hash-password`. A clear password that itself starts with `$scrypt$` or
`sha256:` would be read as a hash: write it hashed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from index.errors import UserError


class UsersError(UserError, ValueError):
    """The users file or variable cannot be used; the message says which line and why."""


# ------------------------------------------------------------------------------------------- hashes

@dataclass(frozen=True)
class ScryptCost:
    """scrypt's work factors: N = 2**log2_n, block size r, parallelism p.

    2**15 x 8 takes 32 MiB and about 0.1 s of one core per check: slow for a guesser with a stolen file,
    fast enough for a person logging in. The cost is written into each hash, so raising it later
    leaves existing lines valid.
    """

    log2_n: int = 15
    r: int = 8
    p: int = 1

    def __post_init__(self):
        if not 10 <= self.log2_n <= 22 or not 1 <= self.r <= 32 or not 1 <= self.p <= 16:
            raise UsersError(f"scrypt cost ln={self.log2_n},r={self.r},p={self.p} is outside "
                             "ln 10..22, r 1..32, p 1..16")

    @property
    def maxmem(self) -> int:
        return 128 * self.r * (2**self.log2_n + self.p + 2) + 2**20


_PHC = re.compile(r"\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, cost: ScryptCost, length: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=2**cost.log2_n, r=cost.r, p=cost.p,
                          maxmem=cost.maxmem, dklen=length)


def hash_password(password: str, cost: ScryptCost | None = None) -> str:
    """A new salted scrypt hash of `password` in PHC form: `$scrypt$ln=15,r=8,p=1$<salt>$<key>`."""
    cost = cost or ScryptCost()
    salt = secrets.token_bytes(16)
    key = _scrypt(password, salt, cost, 32)
    return f"$scrypt$ln={cost.log2_n},r={cost.r},p={cost.p}${_b64(salt)}${_b64(key)}"


def _parse_phc(encoded: str) -> tuple[ScryptCost, bytes, bytes]:
    match = _PHC.fullmatch(encoded)
    if not match:
        raise UsersError("a scrypt hash reads $scrypt$ln=N,r=R,p=P$SALT$KEY (base64 without padding)")
    cost = ScryptCost(int(match[1]), int(match[2]), int(match[3]))
    salt, key = _unb64(match[4]), _unb64(match[5])
    if len(salt) < 8 or len(key) < 16:
        raise UsersError("a scrypt hash needs a salt of at least 8 bytes and a key of at least 16")
    return cost, salt, key


def verify_password(encoded: str, password: str) -> bool:
    """Whether `password` matches a `$scrypt$...` hash; the keys are compared in constant time."""
    cost, salt, key = _parse_phc(encoded)
    return hmac.compare_digest(_scrypt(password, salt, cost, len(key)), key)


def _sha256(password: str) -> str:
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


@cache
def _decoy() -> str:
    """A hash nobody's password matches: unknown names cost the same scrypt work as known ones."""
    return hash_password(secrets.token_urlsafe(16))


# -------------------------------------------------------------------------------------------- users

@dataclass
class Account:
    """One user: the hash checked at login, where it came from, and how that line is written there."""

    name: str
    stored: str  # "$scrypt$..." or "sha256:<hex>"
    origin: str  # the users file's path, or "RA_UI_USERS"
    written_as: str  # "scrypt", "sha256" or "clear": the form of the line in `origin`


@dataclass
class Verdict:
    ok: bool
    reason: str  # "ok", "unknown user" or "wrong password"
    legacy: str | None = None  # "sha256" or "clear" when the account's line uses an old form


def _read_secret(secret: str) -> tuple[str, str]:
    """(stored hash, written_as) for the text after `name:`."""
    if secret.startswith("$scrypt$"):
        _parse_phc(secret)
        return secret, "scrypt"
    if secret.startswith("sha256:"):
        digest = secret[len("sha256:"):].strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise UsersError("a sha256 digest is 64 hex characters")
        return f"sha256:{digest}", "sha256"
    return hash_password(secret), "clear"


def _parse(lines: list[str], where: str) -> dict[str, Account]:
    accounts: dict[str, Account] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):  # whole-line comments only: a password may hold '#'
            continue
        name, sep, secret = line.partition(":")
        name = name.strip()
        if not sep or not name or not secret:
            raise UsersError(f"{where}, entry {number}: expected 'name:$scrypt$...' (from `python -m ui "
                             "hash-password`), 'name:sha256:HEX' or 'name:password'")
        try:
            stored, written_as = _read_secret(secret)
        except UsersError as exc:
            raise UsersError(f"{where}, entry {number}: {exc}") from None
        accounts[name] = Account(name, stored, where, written_as)
    return accounts


class Users:
    """The accounts that may log in, checked in constant time; legacy lines upgraded on a good login."""

    def __init__(self, accounts: dict[str, Account], path: Path | None = None):
        self.accounts = accounts
        self.path = path
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.accounts)

    def __contains__(self, name: object) -> bool:
        return name in self.accounts

    def verify(self, name: str, password: str) -> Verdict:
        """Check a login. Every call runs one scrypt, so an unknown name takes as long as a known one."""
        account = self.accounts.get(name or "")
        password = password or ""
        if account is None:
            verify_password(_decoy(), password)
            return Verdict(False, "unknown user")
        legacy = None if account.written_as == "scrypt" else account.written_as
        if account.stored.startswith("sha256:"):
            verify_password(_decoy(), password)
            ok = hmac.compare_digest(account.stored, f"sha256:{_sha256(password)}")
        else:
            ok = verify_password(account.stored, password)
        return Verdict(ok, "ok" if ok else "wrong password", legacy)

    def file_writable(self) -> bool:
        if self.path is None:
            return False
        target = self.path.resolve()
        return os.access(target, os.W_OK) and os.access(target.parent, os.W_OK)

    def upgrade(self, name: str, password: str) -> bool:
        """After a good login with an old-form line: rewrite that line in the users file as scrypt.

        False when the account came from RA_UI_USERS, the file is not writable, or its line changed.
        """
        account = self.accounts.get(name)
        if account is None or account.written_as == "scrypt" or self.path is None \
                or account.origin != str(self.path) or not self.file_writable():
            return False
        with self._lock:
            new = hash_password(password)
            if not _rewrite(self.path, lambda n, secret: n == name and _matches(secret, password) and new):
                return False
            self.accounts[name] = Account(name, new, account.origin, "scrypt")
        return True

    def warnings(self) -> list[str]:
        """What an operator should hear at start-up about old-form lines."""
        out = []
        by_form: dict[tuple[str, str], list[str]] = {}
        for a in self.accounts.values():
            if a.written_as != "scrypt":
                by_form.setdefault((a.origin, a.written_as), []).append(a.name)
        for (origin, form), names in sorted(by_form.items()):
            who = ", ".join(sorted(names))
            in_file = self.path is not None and origin == str(self.path)
            if form == "clear" and in_file:
                out.append(f"{origin}: {len(names)} password(s) written in clear ({who}): run "
                           f"`python -m ui rehash-users {origin}`")
            elif form == "clear":
                out.append(f"{origin}: {len(names)} password(s) written in clear ({who}): put lines from "
                           "`python -m ui hash-password` in the variable instead")
            elif in_file and self.file_writable():
                out.append(f"{origin}: {len(names)} unsalted SHA-256 line(s) ({who}): each is rewritten as "
                           "scrypt at that user's next login")
            else:
                out.append(f"{origin}: {len(names)} unsalted SHA-256 line(s) ({who}) that cannot be rewritten "
                           "here: replace them with lines from `python -m ui hash-password`")
        return out


def _matches(secret: str, password: str) -> bool:
    """Whether an old-form secret (clear or sha256:HEX) is this password."""
    if secret.startswith("sha256:"):
        return hmac.compare_digest(secret[len("sha256:"):].strip().lower(), _sha256(password))
    return not secret.startswith("$scrypt$") and hmac.compare_digest(secret.encode(), password.encode())


def _rewrite(path: Path, new_secret) -> list[str]:
    """Rewrite the users file in place (same mode, atomic rename); `new_secret(name, secret)` returns the
    replacement hash for a line or a false value to keep it. Returns the names rewritten."""
    target = path.resolve()
    lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
    done = []
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, secret = line.partition(":")
        replacement = sep and new_secret(name.strip(), secret)
        if replacement:
            lines[i] = f"{name.strip()}:{replacement}" + ("\n" if raw.endswith("\n") else "")
            done.append(name.strip())
    if done:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(lines), encoding="utf-8")
        os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        os.replace(tmp, target)
    return done


@dataclass
class RehashReport:
    rehashed: list[str]  # clear passwords now scrypt hashes
    left: list[str]  # unsalted SHA-256 lines: they need the password


def rehash_file(path: str | Path) -> RehashReport:
    """Rewrite every clear password in a users file as a scrypt hash; SHA-256 lines are left as they are."""
    path = Path(path)
    try:
        accounts = _parse(path.read_text(encoding="utf-8").splitlines(), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsersError(f"cannot read the users file {path}: {exc}") from exc

    def scrypt_for_clear(name: str, secret: str) -> str | None:
        if secret.startswith(("$scrypt$", "sha256:")):
            return None
        return hash_password(secret)

    try:
        rehashed = _rewrite(path, scrypt_for_clear)
    except OSError as exc:
        raise UsersError(f"cannot rewrite the users file {path}: {exc}") from exc
    return RehashReport(rehashed, sorted(a.name for a in accounts.values() if a.written_as == "sha256"))


def load_users(users_file: str | Path | None = None, env: dict[str, str] | None = None) -> Users:
    """The accounts from the file and/or the variable (the variable wins for a name in both); empty when
    neither is set. Clear passwords are hashed here: only hashes stay in memory."""
    env = os.environ if env is None else env
    accounts: dict[str, Account] = {}
    path = users_file or env.get("RA_UI_USERS_FILE")
    if path:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsersError(f"cannot read the users file {path}: {exc}") from exc
        accounts.update(_parse(text.splitlines(), str(path)))
        if not accounts:
            raise UsersError(f"the users file {path} names no user: add lines from `python -m ui hash-password`")
    if env.get("RA_UI_USERS"):
        accounts.update(_parse(env["RA_UI_USERS"].split(","), "RA_UI_USERS"))
    return Users(accounts, Path(path) if path else None)
