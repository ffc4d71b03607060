"""What stands between the network and the Gradio app.

    demo.launch(**guarded_launch(GuardSettings(), users, login_audit(audit_path)), server_name=...)

On every response: a Content-Security-Policy (scripts only from the app, with a per-page nonce for
Gradio's own inline scripts, no inline script or handler attribute of anyone else's; nothing loaded from
elsewhere; `frame-ancestors 'none'` unless `frame_ancestors` names who may embed the app),
X-Frame-Options DENY, X-Content-Type-Options nosniff and Referrer-Policy same-origin.

With logins on (users given):
- Login gate: scrypt checks (ui/auth.py), two at a time; after `backoff_after` failures for a name (or
  `address_backoff_after` for a client address) each further try must wait, doubling from
  `backoff_base_s`; at `lockout_after` (`address_lockout_after`) the name (address) is locked out for
  `lockout_minutes`. A try that comes too early is refused with 429 and Retry-After, without looking at
  the password. Every login, failure, refusal, logout and expiry goes to the audit log (`events` table)
  with the client address and a reason, never a password; a name that is not a user is recorded as a
  per-process fingerprint (`unknown:1a2b...`), in case it is a password typed in the wrong box.
- Sessions: Gradio keeps logins in `App.tokens` (cookie token -> name) and never drops one. Here a
  token ends after `session_idle_minutes` without a request or `session_max_hours` after the login,
  and Gradio's `/logout` ends it for good (the browser's cookie no longer opens anything). A new login
  from a browser ends the session it had. Cookies are SameSite=Lax unless the app may be framed.
- Routes: without a live session only the login page and its static files answer; everything else
  (Gradio leaves `/gradio_api/cancel`, `/reset`, `/heartbeat`, `/stream` and others open) gets 401.
  Queue work belongs to the session that started it: a Gradio session hash is claimed by the first
  login session to use it, event ids by the session whose request created them, and `cancel`, `reset`,
  `queue/data`, `heartbeat`, `stream` and `call/.../{event_id}` for someone else's are refused (403,
  audited).

Client addresses: the TCP peer (uvicorn already honours X-Forwarded-For from 127.0.0.1), or with
`proxy_hops=N` the N-th address from the right of X-Forwarded-For, for N trusted proxies in front.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import math
import re
import secrets
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request

from index.errors import SettingError
from ui.auth import Users

# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class GuardSettings:
    """Login throttling, session lifetimes and framing; `python -m ui --security NAME=VALUE` sets a field."""

    backoff_after: int = 5  # failed logins for one name before each further try must wait
    backoff_base_s: float = 1.0  # the first wait; doubled at each further failure
    backoff_max_s: float = 60.0
    lockout_after: int = 10  # failed logins for one name that lock it out
    lockout_minutes: float = 15.0  # for this long; failures older than this are forgotten
    address_backoff_after: int = 15  # the same per client address: colleagues behind one NAT share it
    address_lockout_after: int = 30
    session_idle_minutes: float = 30.0  # a login ends after this long without a request
    session_max_hours: float = 8.0  # and this long after it began, however busy
    frame_ancestors: str = ""  # CSP sources that may frame the app, space-separated ("" = nobody)
    proxy_hops: int = 0  # trusted proxies in front that append to X-Forwarded-For

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "frame_ancestors":
                for source in value.split():
                    if not re.fullmatch(r"'self'|https?://[A-Za-z0-9*][A-Za-z0-9.*-]*(:\d+)?|https:", source):
                        raise SettingError(f"--security frame_ancestors: {source!r} is not a source such as "
                                         "https://huggingface.co or 'self'")
            elif f.name == "proxy_hops":
                if not isinstance(value, int) or not 0 <= value <= 5:
                    raise SettingError(f"--security proxy_hops must be 0 to 5 (got {value!r})")
            elif not value > 0:
                raise SettingError(f"--security {f.name} must be a positive number (got {value!r})")
        if self.backoff_after > self.lockout_after or self.address_backoff_after > self.address_lockout_after:
            raise SettingError("--security backoff_after (address_backoff_after) must not be above lockout_after "
                             "(address_lockout_after)")

    @classmethod
    def parse(cls, overrides: list[str] | None, base: GuardSettings | None = None) -> GuardSettings:
        """Settings from `NAME=VALUE` strings (the CLI's `--security`, or RA_UI_SECURITY split at commas)."""
        values = asdict(base or cls())
        kinds = {f.name: f.type for f in fields(cls)}
        for item in filter(str.strip, overrides or []):
            name, sep, raw = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in kinds:
                raise SettingError(f"--security takes NAME=VALUE with NAME one of {', '.join(kinds)} (got {item!r})")
            raw = raw.strip()
            if kinds[name] == "str":
                values[name] = raw
                continue
            try:
                values[name] = int(raw) if kinds[name] == "int" else float(raw)
            except ValueError:
                raise SettingError(f"--security {name}: {raw!r} is not a number") from None
        return cls(**values)

    @property
    def lockout_s(self) -> float:
        return self.lockout_minutes * 60

    @property
    def idle_s(self) -> float:
        return self.session_idle_minutes * 60

    @property
    def max_s(self) -> float:
        return self.session_max_hours * 3600


def content_security_policy(settings: GuardSettings, nonce: str | None = None, sandbox: bool = False) -> str:
    """The CSP header: Gradio's page needs its own scripts (plus a nonce for its inline ones), string
    evaluation (Gradio 6's HTML component renders its template with `new Function`, so 'unsafe-eval';
    injected <script> elements and event-handler attributes still do not run) and inline styles (Svelte
    sets style attributes); nothing is loaded from elsewhere."""
    script = f"'self' 'nonce-{nonce}' 'unsafe-eval'" if nonce else "'self' 'unsafe-eval'"
    directives = [
        "default-src 'self'", f"script-src {script}", "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:", "media-src 'self' data: blob:", "font-src 'self' data:",
        "connect-src 'self'", "worker-src 'self' blob:", "object-src 'none'", "base-uri 'self'",
        "form-action 'self'", f"frame-ancestors {settings.frame_ancestors or chr(39) + 'none' + chr(39)}",
    ]
    if sandbox:  # a served upload opened on its own runs no script and reaches no cookie
        directives.append("sandbox")
    return "; ".join(directives)


# ------------------------------------------------------------------------------------------ logins


class Throttle:
    """Failed logins per name and per client address, and how long the next try must wait."""

    def __init__(self, settings: GuardSettings, clock=time.monotonic):
        self.settings = settings
        self.clock = clock
        self._failures: dict[str, dict[str, deque[float]]] = {"name": {}, "address": {}}
        self._refused: dict[tuple[str, str], list] = {}  # (name, address) -> [until, refusals without a row]
        self._calls = 0

    def _limits(self, kind: str) -> tuple[int, int]:
        s = self.settings
        return (s.backoff_after, s.lockout_after) if kind == "name" else (s.address_backoff_after,
                                                                          s.address_lockout_after)

    def _until(self, kind: str, key: str, now: float) -> tuple[float, str]:
        """When the next try for this key may go (0 for at once), and why it must wait."""
        queue = self._failures[kind].get(key)
        while queue and queue[0] <= now - self.settings.lockout_s:
            queue.popleft()
        if not queue:
            return 0.0, ""
        backoff_after, lockout_after = self._limits(kind)
        if len(queue) >= lockout_after:
            return queue[-1] + self.settings.lockout_s, f"{kind} locked out"
        if len(queue) >= backoff_after:
            delay = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (len(queue) - backoff_after))
            return queue[-1] + delay, f"{kind} backing off"
        return 0.0, ""

    def wait(self, name: str, address: str) -> tuple[float, str, float]:
        """Seconds before the next try for this name from this address (0 when it may go now), why, and
        the moment it may."""
        now = self.clock()
        until, why = max(self._until("name", name, now), self._until("address", address, now))
        return max(0.0, until - now), why if until > now else "", until

    def failures(self, name: str) -> int:
        return len(self._failures["name"].get(name, ()))

    def begin(self, name: str, address: str) -> tuple[float, str, float]:
        """Admit a try or not: (wait, why, stamp). A refused try (wait > 0) may go at `stamp`. An admitted
        one counts as a failure until `succeeded(..., stamp)`, so tries running at once cannot all slip
        under the limit."""
        wait, why, until = self.wait(name, address)
        if wait > 0:
            return wait, why, until
        now = self.clock()
        for kind, key in (("name", name), ("address", address)):
            self._failures[kind].setdefault(key, deque()).append(now)
        self._calls += 1
        if self._calls % 256 == 0:
            self._sweep(now)
        return 0.0, "", now

    def succeeded(self, name: str, address: str, ticket: float) -> None:
        self._failures["name"].pop(name, None)
        queue = self._failures["address"].get(address)
        if queue and ticket in queue:
            queue.remove(ticket)

    def refused(self, name: str, address: str, until: float) -> int | None:
        """Note a refused try that must wait until `until`. Returns the earlier refusals not yet in the
        audit log when this one should get a row (the first of each waiting period), None when it is only
        counted: a flood of tries against a locked name costs one row per period, not one per request."""
        entry = self._refused.get((name, address))
        if entry and entry[0] == until:
            entry[1] += 1
            return None
        earlier = entry[1] if entry else 0
        self._refused[(name, address)] = [until, 0]
        return earlier

    def unreported(self, name: str, address: str) -> int:
        """Refusals counted but given no row of their own; cleared by asking."""
        entry = self._refused.pop((name, address), None)
        return entry[1] if entry else 0

    def _sweep(self, now: float) -> None:
        for table in self._failures.values():
            for key in [k for k, q in table.items() if not q or q[-1] <= now - self.settings.lockout_s]:
                del table[key]
        for key in [k for k, (until, _) in self._refused.items() if until < now - self.settings.lockout_s]:
            del self._refused[key]


@dataclass
class LoginAttempt:
    """One POST to /login, as the Guard saw it; the gate fills in who logged in."""

    address: str
    user: str | None = None


_ATTEMPT: ContextVar[LoginAttempt | None] = ContextVar("ra_login_attempt", default=None)


class LoginGate:
    """Gradio's `auth` callable (`gate.check`), with the throttle in front and the audit log behind."""

    def __init__(self, users: Users, settings: GuardSettings, audit, clock=time.monotonic):
        self.users = users
        self.settings = settings
        self.audit = audit
        self.throttle = Throttle(settings, clock)
        self.sessions = Sessions(settings, clock)
        self._hashing = asyncio.Semaphore(2)  # scrypt takes 32 MiB and ~0.1 s of a core: two at a time
        self._fingerprint_key = secrets.token_bytes(16)

    def shown_name(self, name: str) -> str:
        """How a typed name appears in the audit log: as is for a user, else a fingerprint."""
        if name in self.users:
            return name
        digest = hmac.new(self._fingerprint_key, name.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"unknown:{digest[:12]}"

    async def event(self, kind: str, user: str | None, address: str | None, **detail) -> None:
        await asyncio.to_thread(self.audit.event, kind, user=user, detail={"address": address, **detail})

    async def check(self, username: str, password: str) -> bool:
        attempt = _ATTEMPT.get() or LoginAttempt("unknown")
        name, address = (username or "").strip(), attempt.address
        shown = self.shown_name(name)
        wait, why, stamp = self.throttle.begin(name, address)
        if wait > 0:
            earlier = self.throttle.refused(name, address, stamp)
            if earlier is not None:
                await self.event("login_refused", shown, address, reason=why, retry_after_s=math.ceil(wait),
                                 more_refused=earlier)
            raise HTTPException(status_code=429, headers={"Retry-After": str(math.ceil(wait))},
                                detail=f"Too many failed logins: try again in {_duration(wait)}.")
        async with self._hashing:
            verdict = await asyncio.to_thread(self.users.verify, name, password)
        extra = {"more_refused": n} if (n := self.throttle.unreported(name, address)) else {}
        if verdict.ok:
            self.throttle.succeeded(name, address, stamp)
            attempt.user = name
            if verdict.legacy:
                extra["legacy_hash"] = verdict.legacy
            await self.event("login", name, address, **extra)
            if verdict.legacy and await asyncio.to_thread(self.users.upgrade, name, password):
                await self.event("password_rehashed", name, address, was=verdict.legacy)
            return True
        locked, why, _ = self.throttle.wait(name, address)
        if "locked out" in why:
            extra["locked_for_s"] = math.ceil(locked)
        await self.event("login_failed", shown, address, reason=verdict.reason,
                         failures=self.throttle.failures(name), **extra)
        return False


def _duration(seconds: float) -> str:
    return f"{math.ceil(seconds)} s" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"


# ---------------------------------------------------------------------------------------- sessions


@dataclass
class _Session:
    user: str
    started: float
    seen: float
    hashes: set[str] = field(default_factory=set)  # Gradio session hashes this login claimed
    events: set[str] = field(default_factory=set)  # queue event ids its requests created


class Sessions:
    """Login sessions by cookie token: when each began and was last used, and the queue work it owns."""

    def __init__(self, settings: GuardSettings, clock=time.monotonic):
        self.settings = settings
        self.clock = clock
        self._by_token: dict[str, _Session] = {}
        self._hash_owner: dict[str, str] = {}
        self._event_owner: dict[str, str] = {}

    def start(self, token: str, user: str) -> None:
        now = self.clock()
        self._by_token[token] = _Session(user, now, now)

    def expiry(self, token: str, user: str) -> str | None:
        """"idle" or "absolute" when the session has run out, else None (and it counts as used now)."""
        session = self._by_token.get(token)
        if session is None:  # a token Gradio made before this guard saw its login
            self.start(token, user)
            return None
        now = self.clock()
        if now - session.started >= self.settings.max_s:
            return "absolute"
        if now - session.seen >= self.settings.idle_s:
            return "idle"
        session.seen = now
        return None

    def expired(self) -> list[tuple[str, str, str]]:
        """(token, user, reason) of every session that has run out, without touching the others."""
        now, s = self.clock(), self.settings
        return [(t, x.user, "absolute" if now - x.started >= s.max_s else "idle")
                for t, x in self._by_token.items() if now - x.started >= s.max_s or now - x.seen >= s.idle_s]

    def end(self, token: str) -> _Session | None:
        session = self._by_token.pop(token, None)
        if session:
            for h in session.hashes:
                self._hash_owner.pop(h, None)
            for e in session.events:
                self._event_owner.pop(e, None)
        return session

    def forget_gone(self, alive) -> list[_Session]:
        """End the sessions whose token Gradio no longer holds (its /logout removed them)."""
        return [s for t in [t for t in self._by_token if t not in alive] if (s := self.end(t))]

    def claim(self, token: str, session_hash: str) -> bool:
        """Whether this login may use a Gradio session hash: the first login to use one owns it."""
        owner = self._hash_owner.setdefault(session_hash, token)
        if owner == token and token in self._by_token:
            self._by_token[token].hashes.add(session_hash)
        return owner == token

    def owns_hash(self, token: str, session_hash: str) -> bool:
        return self._hash_owner.get(session_hash) == token

    def add_event(self, token: str, event_id: str) -> None:
        """Record an event id as this login's; it is also the session hash of a `call/` request sent
        without one."""
        if token in self._by_token and self._event_owner.setdefault(event_id, token) == token:
            self._by_token[token].events.add(event_id)
            self.claim(token, event_id)

    def owns_event(self, token: str, event_id: str) -> bool:
        return self._event_owner.get(event_id) == token


# ------------------------------------------------------------------------------------------- guard

# what the login page needs, and the startup call `demo.launch` makes to itself without a cookie
_PUBLIC = {"/", "/login", "/login/", "/logout", "/favicon.ico", "/theme.css", "/robots.txt", "/manifest.json",
           "/pwa_icon", "/gradio_api/login_check", "/gradio_api/login_check/", "/gradio_api/startup-events"}
_PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon/")
_CALL_POST = re.compile(r"/gradio_api/(?:call/v2|call|run|api)/[^/]+/?")
_CALL_GET = re.compile(r"/gradio_api/call(?:/v2)?/[^/]+/([^/]+)/?")
_STREAM_EVENT = re.compile(r"/gradio_api/stream/([^/]+)(?:/close)?/?")
_STREAM_HASH = re.compile(r"/gradio_api/stream/([^/]+)/.+")
_HEARTBEAT = re.compile(r"/gradio_api/heartbeat/([^/]+)/?")
_FILES = ("/gradio_api/file=", "/gradio_api/file/", "/file=")


def client_address(scope: dict, proxy_hops: int = 0) -> str:
    peer = (scope.get("client") or ("unknown",))[0] or "unknown"
    if proxy_hops <= 0:
        return peer
    forwarded = [a.strip() for name, value in scope.get("headers", []) if name == b"x-forwarded-for"
                 for a in value.decode("latin-1").split(",") if a.strip()]
    return forwarded[-proxy_hops] if len(forwarded) >= proxy_hops else peer


def _path(scope: dict) -> str:
    path, root = scope.get("path", "/"), scope.get("root_path", "")
    return (path[len(root):] or "/") if root and path.startswith(root) else path


async def _buffered(receive):
    """Read the whole request body; returns it and a `receive` that hands it on to the app."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b"", receive
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body, given = b"".join(chunks), False

    async def replay():
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def _json(body: bytes) -> dict:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def _answer(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware inside Gradio's app: headers always; with a LoginGate, sessions and route checks."""

    def __init__(self, app, settings: GuardSettings, gate: LoginGate | None = None):
        self.app = app
        self.settings = settings
        self.gate = gate
        self.sessions = gate.sessions if gate else None
        self._next_sweep = 0.0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and self.gate is not None and await self._live_user(scope) is None:
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _path(scope)
        send = self._with_headers(scope, path, send)
        if self.gate is None:
            await self.app(scope, receive, send)
            return
        await self._guarded(scope, path, receive, send)

    # ---- headers

    def _with_headers(self, scope: dict, path: str, send):
        page = scope["method"] == "GET" and not path.startswith(("/gradio_api/", "/assets/", "/static/",
                                                                              "/file="))
        nonce = secrets.token_urlsafe(18) if page else None
        policy = content_security_policy(self.settings, nonce, sandbox=path.startswith(_FILES)).encode()
        extra = [(b"content-security-policy", policy), (b"x-content-type-options", b"nosniff"),
                 (b"referrer-policy", b"same-origin")]
        if not self.settings.frame_ancestors:
            extra.append((b"x-frame-options", b"DENY"))
        names = {name for name, _ in extra}
        held: dict = {}

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": headers + extra}
                content_type = dict(headers).get(b"content-type", b"")
                if nonce and content_type.startswith(b"text/html"):
                    held["start"], held["body"] = message, []  # add the nonce once the whole page is here
                    return
            elif message["type"] == "http.response.body" and "start" in held:
                held["body"].append(message.get("body", b""))
                if message.get("more_body"):
                    return
                page_html = re.sub(rb"<script(?=[\s>])", b'<script nonce="' + nonce.encode() + b'"',
                                   b"".join(held.pop("body")))
                start = held.pop("start")
                start["headers"] = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"] + [
                    (b"content-length", str(len(page_html)).encode())]
                await send(start)
                message = {"type": "http.response.body", "body": page_html}
            await send(message)

        return send_with_headers

    # ---- sessions

    @staticmethod
    def _token(scope: dict) -> str | None:
        """The login token in the request's cookies, read the way Gradio reads it."""
        app = scope["app"]
        cookies = Request(scope).cookies
        return cookies.get(f"access-token-{app.cookie_id}") or cookies.get(f"access-token-unsecure-{app.cookie_id}")

    async def _live_user(self, scope: dict) -> str | None:
        """The logged-in user, or None; a session that has run out is ended here (and audited)."""
        app, token = scope["app"], self._token(scope)
        user = app.tokens.get(token) if token else None
        if user is None:
            return None
        reason = self.sessions.expiry(token, user)
        if reason:
            await self._end(app, token, user, reason, scope)
            return None
        return user

    async def _end(self, app, token: str, user: str, reason: str, scope: dict) -> None:
        app.tokens.pop(token, None)
        self.sessions.end(token)
        await self.gate.event("session_expired", user, client_address(scope, self.settings.proxy_hops),
                              reason=reason)

    async def _sweep(self, scope: dict) -> None:
        """Once a minute: end run-out sessions nobody uses any more, forget those Gradio dropped."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60
        app = scope["app"]
        for token, user, reason in self.sessions.expired():
            await self._end(app, token, user, reason, scope)
        self.sessions.forget_gone(app.tokens)

    async def _guarded(self, scope, path, receive, send):
        app, method = scope["app"], scope["method"]
        address = client_address(scope, self.settings.proxy_hops)
        await self._sweep(scope)
        user = await self._live_user(scope)
        token = self._token(scope) if user else None
        if path in ("/login", "/login/") and method == "POST":
            await self._login(scope, receive, send, token, address)
            return
        if path == "/logout":
            await self.app(scope, receive, send)
            ended = self.sessions.forget_gone(app.tokens)
            if user:
                await self.gate.event("logout", user, address, sessions_ended=len(ended))
            return
        if user is None:
            if path in _PUBLIC or path.startswith(_PUBLIC_PREFIXES):
                await self.app(scope, receive, send)
            else:
                await _answer(send, 401, "Not authenticated: log in first.")
            return
        refusal, receive, new_event = await self._owned(scope, path, method, token, receive)
        if refusal:
            await self.gate.event("request_refused", user, address, route=path, reason=refusal)
            await _answer(send, 403, f"Refused: {refusal}.")
            return
        if new_event:
            send = self._recording_event(token, send)
        await self.app(scope, receive, send)

    async def _owned(self, scope, path, method, token, receive) -> tuple[str | None, object, bool]:
        """Why this request touches another session's queue work (None when it does not), the receive
        to pass on, and whether its answer carries a new event id to record."""
        s = self.sessions
        if method == "POST" and (path == "/gradio_api/queue/join" or _CALL_POST.fullmatch(path)):
            body, receive = await _buffered(receive)
            session_hash = _json(body).get("session_hash")
            if isinstance(session_hash, str) and not s.claim(token, session_hash):
                return "the session hash belongs to another login", receive, False
            return None, receive, path == "/gradio_api/queue/join" or path.startswith("/gradio_api/call/")
        if method == "POST" and path.rstrip("/") in ("/gradio_api/cancel", "/gradio_api/reset"):
            body, receive = await _buffered(receive)
            data = _json(body)
            session_hash, event_id = data.get("session_hash"), data.get("event_id")
            if path.startswith("/gradio_api/cancel") and not (isinstance(session_hash, str)
                                                               and s.owns_hash(token, session_hash)):
                return "cancel of a session this login did not start", receive, False
            if not (isinstance(event_id, str) and s.owns_event(token, event_id)):
                return "an event this login did not start", receive, False
            return None, receive, False
        if method == "GET" and path == "/gradio_api/queue/data":
            session_hash = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash") or [""])[0]
            ok = s.claim(token, session_hash)
            return (None if ok else "the session hash belongs to another login"), receive, False
        if (match := _HEARTBEAT.fullmatch(path)) or (method == "GET" and (match := _STREAM_HASH.fullmatch(path))):
            ok = s.claim(token, match[1])
            return (None if ok else "the session hash belongs to another login"), receive, False
        if (method == "GET" and (match := _CALL_GET.fullmatch(path))) or (
                method == "POST" and (match := _STREAM_EVENT.fullmatch(path))):
            ok = s.owns_event(token, match[1])
            return (None if ok else "an event this login did not start"), receive, False
        return None, receive, False

    def _recording_event(self, token: str, send):
        """Hold a small JSON answer until its event id is recorded as this login's, then pass it on."""
        held: dict = {}

        async def record(message):
            if message["type"] == "http.response.start":
                held["start"], held["body"] = message, []
                return
            if message["type"] == "http.response.body" and "start" in held:
                held["body"].append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = b"".join(held.pop("body"))
                event_id = _json(body).get("event_id")
                if isinstance(event_id, str):
                    self.sessions.add_event(token, event_id)
                await send(held.pop("start"))
                message = {**message, "body": body}
            await send(message)

        return record

    async def _login(self, scope, receive, send, old_token: str | None, address: str):
        app = scope["app"]
        attempt = LoginAttempt(address)
        lax = not self.settings.frame_ancestors

        async def capture(message):
            if message["type"] == "http.response.start" and message["status"] == 200 and attempt.user:
                headers = []
                for name, value in message.get("headers", []):
                    if name.lower() == b"set-cookie":
                        cookie = value.decode("latin-1")
                        key, _, rest = cookie.partition("=")
                        if key == f"access-token-{app.cookie_id}":
                            self.sessions.start(rest.split(";", 1)[0], attempt.user)
                        if lax:  # nobody frames the app: no cross-site request carries the login
                            cookie = re.sub(r";\s*samesite=\w+", "", cookie, flags=re.I) + "; SameSite=lax"
                        value = cookie.encode("latin-1")
                    headers.append((name, value))
                message = {**message, "headers": headers}
                if old_token and old_token in app.tokens:
                    app.tokens.pop(old_token, None)
                    self.sessions.end(old_token)
            await send(message)

        reset = _ATTEMPT.set(attempt)
        try:
            await self.app(scope, receive, capture)
        finally:
            _ATTEMPT.reset(reset)


# ------------------------------------------------------------------------------------------ wiring


class _KeepAddresses:
    """The audit log's redactor for login events: a client address is what a security log must keep
    (the PII redactor reads some IPv4 addresses as phone numbers); everything else is redacted as usual."""

    def __init__(self, redactor):
        self.redactor = redactor

    def redact(self, text: str) -> str:
        try:
            ipaddress.ip_address(text)
            return text
        except ValueError:
            return self.redactor.redact(text)


def login_audit(path: str | Path):
    """The audit log (the same SQLite file as the answers') that login events are written to."""
    from assistant.compliance.audit import AuditLog
    from assistant.compliance.redact import Redactor

    return AuditLog(path, _KeepAddresses(Redactor()))


def guarded_launch(settings: GuardSettings, users: Users | None = None, audit=None) -> dict:
    """Keyword arguments for `demo.launch` that put the Guard in front of every route, and the login gate
    behind Gradio's login form when there are users (their events go to `audit`)."""
    if users and audit is None:
        raise ValueError("logins need an audit log: pass login_audit(path)")
    gate = LoginGate(users, settings, audit) if users else None
    return {"auth": gate.check if gate else None,
            "app_kwargs": {"middleware": [Middleware(Guard, settings=settings, gate=gate)]},
            # the page must come from this process, with its headers: Gradio's Node renderer is not guarded
            "ssr_mode": False}
