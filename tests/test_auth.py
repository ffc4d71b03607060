"""Pilot logins, end to end over HTTP: password hashes and the users file (ui/auth.py), and the Guard
(ui/guard.py) in front of a real Gradio app on a loopback port: throttling and lockout, the audit rows,
session expiry and logout, security headers, and queue routes that only the owning session may use.

The app under the Guard is a small Blocks app whose answer streams for a few seconds, so that a cancel
can arrive while it runs; the chat app itself is driven through the same Guard in test_ui_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time

import gradio as gr
import httpx
import pytest

from assistant.tools import free_port as _free_port
from ui.auth import ScryptCost, UsersError, hash_password, load_users, rehash_file, verify_password
from ui.guard import GuardSettings, guarded_launch, login_audit

# ------------------------------------------------------------------------------- hashes and the file


def test_scrypt_hash_round_trip_with_a_salt_per_hash():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert re.fullmatch(r"\$scrypt\$ln=15,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}", first)
    assert first != second  # a fresh salt each time
    assert verify_password(first, "correct horse") and verify_password(second, "correct horse")
    assert not verify_password(first, "correct horsE") and not verify_password(first, "")
    cheap = hash_password("pw", ScryptCost(log2_n=10, r=4, p=2))
    assert cheap.startswith("$scrypt$ln=10,r=4,p=2$") and verify_password(cheap, "pw")


def test_old_forms_still_log_in_with_warnings(tmp_path):
    f = tmp_path / "users.txt"
    f.write_text("# staff\n"
                 f"alice:{hash_password('a-pass')}\n"
                 f"bob:sha256:{hashlib.sha256(b's3cret').hexdigest()}\n"
                 "carol:pa#ss:word\n\n")
    users = load_users(f, env={"RA_UI_USERS": "dave:d-pass"})
    assert len(users) == 4
    assert [users.verify(n, p).ok for n, p in [("alice", "a-pass"), ("bob", "s3cret"), ("carol", "pa#ss:word"),
                                               ("dave", "d-pass")]] == [True] * 4
    assert users.verify("bob", "s3cret").legacy == "sha256" and users.verify("carol", "pa#ss:word").legacy == "clear"
    assert users.verify("alice", "wrong").reason == "wrong password"
    assert users.verify("mallory", "a-pass").reason == "unknown user" and not users.verify("", "").ok
    assert "pa#ss" not in repr(users.accounts)  # clear passwords are hashed on load
    warnings = "\n".join(users.warnings())
    assert "unsalted SHA-256 line(s) (bob)" in warnings and "next login" in warnings
    assert f"rehash-users {f}" in warnings and "(carol)" in warnings
    assert "RA_UI_USERS: 1 password(s) written in clear (dave)" in warnings


def test_no_users_means_no_login():
    assert len(load_users(None, env={})) == 0


@pytest.mark.parametrize("text, message", [
    ("alice\n", "expected 'name:\\$scrypt\\$"),
    ("bob:sha256:abc\n", "entry 1: a sha256 digest is 64 hex characters"),
    ("carol:$scrypt$ln=15,r=8$abc$def\n", "entry 1: a scrypt hash reads"),
    ("dan:$scrypt$ln=40,r=8,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5\n", "outside ln 10..22"),
    ("# only a comment\n", "names no user"),
])
def test_bad_users_file_says_what_is_wrong(tmp_path, text, message):
    f = tmp_path / "users.txt"
    f.write_text(text)
    with pytest.raises(UsersError, match=message):
        load_users(f, env={})


def test_missing_users_file(tmp_path):
    with pytest.raises(UsersError, match="cannot read the users file"):
        load_users(tmp_path / "absent.txt", env={})


def test_rehash_users_rewrites_clear_passwords_and_says_what_it_left(tmp_path, capsys):
    from ui.__main__ import main

    f = tmp_path / "users.txt"
    digest = hashlib.sha256(b"b-pass").hexdigest()
    f.write_text(f"# pilot staff\nalice:a-pass\nbob:sha256:{digest}\n\ncarol:{hash_password('c-pass')}\n")
    f.chmod(0o640)
    assert main(["rehash-users", str(f)]) == 0
    out = capsys.readouterr().out
    assert "1 password(s) written in clear now scrypt hashes (alice)" in out
    assert "1 unsalted SHA-256 line(s) left (bob)" in out and "without the password" in out
    lines = f.read_text().splitlines()
    assert lines[0] == "# pilot staff" and lines[3] == "" and lines[2] == f"bob:sha256:{digest}"
    assert lines[1].startswith("alice:$scrypt$") and "a-pass" not in f.read_text()
    assert f.stat().st_mode & 0o777 == 0o640
    users = load_users(f, env={})
    assert users.verify("alice", "a-pass").ok and users.verify("bob", "b-pass").ok and users.warnings() == [
        f"{f}: 1 unsalted SHA-256 line(s) (bob): each is rewritten as scrypt at that user's next login"]
    assert rehash_file(f).rehashed == []  # nothing left in clear


def test_hash_password_command_prints_a_scrypt_line(monkeypatch, capsys):
    from ui.__main__ import main

    answers = iter(["s3cret pass", "s3cret pass"])
    monkeypatch.setattr("builtins.input", lambda prompt: "nurse.jane")
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    assert main(["hash-password"]) == 0
    line = capsys.readouterr().out.strip()
    name, _, stored = line.partition(":")
    assert name == "nurse.jane" and stored.startswith("$scrypt$ln=15,r=8,p=1$")
    assert verify_password(stored, "s3cret pass")
    answers = iter(["one", "two"])
    assert main(["hash-password"]) == 2 and "differ" in capsys.readouterr().err


def test_security_settings_name_the_flag():
    assert GuardSettings.parse(["session_idle_minutes=15", "frame_ancestors=https://huggingface.co", ""]) == \
        GuardSettings(session_idle_minutes=15.0, frame_ancestors="https://huggingface.co")
    for bad, message in [(["lockout_after=0"], "--security lockout_after must be a positive"),
                         (["backoff_after=20"], "backoff_after"), (["nope=1"], "NAME one of"),
                         (["frame_ancestors=evil.com; script-src *"], "frame_ancestors"),
                         (["session_idle_minutes=soon"], "is not a number")]:
        with pytest.raises(ValueError, match=message):
            GuardSettings.parse(bad)


# --------------------------------------------------------------------------- a guarded app over HTTP

STEPS, STEP_S = 30, 0.1



class GuardedApp:
    """A Gradio app with a streaming answer, launched on loopback behind the Guard, with its audit log."""

    def __init__(self, tmp_path, users: str, settings: GuardSettings | None = None, env_users: str = ""):
        def count(message: str):
            for i in range(STEPS):
                time.sleep(STEP_S)
                yield f"{message} {i}"

        with gr.Blocks() as demo:
            box, out = gr.Textbox(), gr.Textbox()
            box.submit(count, box, out, api_name="chat")
        demo.queue()
        self.users_file = tmp_path / "users.txt"
        self.users_file.write_text(users)
        self.audit = login_audit(tmp_path / "audit.sqlite")
        self.trigger = box._id
        launch = guarded_launch(settings or GuardSettings(),
                                load_users(self.users_file, env={"RA_UI_USERS": env_users} if env_users else {}),
                                self.audit)
        self.port = _free_port()
        demo.launch(server_name="127.0.0.1", server_port=self.port, prevent_thread_lock=True, quiet=True, **launch)
        self.demo, self.url = demo, f"http://127.0.0.1:{self.port}"

    def client(self, address: str | None = None, cookies=None) -> httpx.Client:
        """A browser stand-in; `address` arrives as X-Forwarded-For, which uvicorn honours from 127.0.0.1."""
        headers = {"x-forwarded-for": address} if address else {}
        return httpx.Client(base_url=self.url, headers=headers, cookies=cookies, timeout=60)

    def login(self, name: str, password: str, address: str | None = None) -> tuple[httpx.Client, httpx.Response]:
        client = self.client(address)
        return client, client.post("/login", data={"username": name, "password": password})

    def events(self, kind: str | None = None) -> list[dict]:
        return self.audit.events(kind)

    def join(self, client: httpx.Client, session_hash: str, message: str = "hi") -> str:
        r = client.post("/gradio_api/queue/join", json={"data": [message], "fn_index": 0, "trigger_id": self.trigger,
                                                         "session_hash": session_hash, "event_data": None})
        assert r.status_code == 200, r.text
        return r.json()["event_id"]

    def close(self) -> None:
        self.demo.close()

    def __enter__(self) -> GuardedApp:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Stream(threading.Thread):
    """Reads a session's queue/data stream until its answer completes; keeps every update and the end."""

    def __init__(self, client: httpx.Client, session_hash: str):
        super().__init__(daemon=True)
        self.client, self.session_hash = client, session_hash
        self.outputs: list[str] = []
        self.completed: dict | None = None
        self.started = threading.Event()

    def run(self):
        with self.client.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.session_hash}) as r:
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_generating":  # the first one whole, then diffs
                    self.outputs.append(msg["output"]["data"][0])
                    self.started.set()
                if msg.get("msg") == "process_completed":
                    self.completed = msg
                    self.started.set()
                    return


@pytest.fixture
def app(tmp_path):
    guarded = GuardedApp(tmp_path, "alice:alice-pass\nbob:bob-pass\n")
    yield guarded
    guarded.close()


def _statuses(responses) -> list[int]:
    return [r.status_code for r in responses]


def test_fifty_wrong_passwords_back_off_after_five(app):
    client = app.client()
    started = time.monotonic()
    answers = [client.post("/login", data={"username": "alice", "password": f"guess-{i}"}) for i in range(50)]
    # before: 50 answers of 400 in 0.8 s, every password checked; now 5 checks, then "wait" (1 s, doubling)
    if time.monotonic() - started < 1.0:
        assert _statuses(answers) == [400] * 5 + [429] * 45
    else:  # a slow machine let the first wait run out: one more check, then waiting again
        assert _statuses(answers)[:5] == [400] * 5 and _statuses(answers).count(400) <= 7
    assert answers[5].headers["retry-after"] == "1" and "Too many failed logins" in answers[5].json()["detail"]
    # the right password is not even looked at while the name waits
    assert client.post("/login", data={"username": "alice", "password": "alice-pass"}).status_code == 429
    failed = app.events("login_failed")
    assert len(failed) == _statuses(answers).count(400)
    assert {(e["user"], e["detail"]["reason"], e["detail"]["address"]) for e in failed} == {
        ("alice", "wrong password", "127.0.0.1")}
    refused = app.events("login_refused")
    assert 1 <= len(refused) <= 3 and refused[0]["detail"]["reason"] == "name backing off"
    assert not any("guess-" in json.dumps(e) or "alice-pass" in json.dumps(e) for e in app.events())


def test_lockout_after_ten_failures_refuses_even_the_right_password(tmp_path):
    settings = GuardSettings(backoff_base_s=0.01, backoff_max_s=0.05, lockout_minutes=1)
    with GuardedApp(tmp_path, "alice:alice-pass\n", settings) as app:
        client = app.client()
        answers = []
        for i in range(50):
            answers.append(client.post("/login", data={"username": "alice", "password": f"guess-{i}"}))
            time.sleep(0.06)  # longer than any backoff here: only the lockout stops a try
        assert _statuses(answers) == [400] * 10 + [429] * 40
        right = app.client("198.51.100.7").post("/login", data={"username": "alice", "password": "alice-pass"})
        assert right.status_code == 429 and 55 <= int(right.headers["retry-after"]) <= 60
        failed = app.events("login_failed")
        assert [e["detail"]["failures"] for e in failed] == list(range(1, 11))
        assert failed[-1]["detail"]["locked_for_s"] == 60 and "locked_for_s" not in failed[-2]["detail"]
        refused = app.events("login_refused")  # one row for the lockout, not one per refused request
        assert [(e["user"], e["detail"]["reason"]) for e in refused] == [("alice", "name locked out")] * 2
        assert {e["detail"]["address"] for e in refused} == {"127.0.0.1", "198.51.100.7"}


def test_tries_at_once_cannot_slip_under_the_limit(app):
    def attempt(i):
        with app.client() as client:
            results[i] = client.post("/login", data={"username": "bob", "password": f"guess-{i}"}).status_code

    results = [0] * 20
    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [400] * 5 + [429] * 15


def test_one_address_trying_many_names_is_locked_out(tmp_path):
    settings = GuardSettings(address_backoff_after=3, address_lockout_after=4, backoff_base_s=0.01,
                             backoff_max_s=0.05)
    with GuardedApp(tmp_path, "alice:alice-pass\n", settings) as app:
        sprayer = app.client("203.0.113.77")
        answers = []
        for name in ["admin", "root", "test", "guest", "alice"]:
            answers.append(sprayer.post("/login", data={"username": name, "password": "alice-pass"}))
            time.sleep(0.06)
        assert _statuses(answers) == [400] * 4 + [429]  # alice's right password, from that address
        _, ok = app.login("alice", "alice-pass", "198.51.100.7")  # from elsewhere she logs in
        assert ok.status_code == 200
        failed = app.events("login_failed")
        assert [e["detail"]["address"] for e in failed] == ["203.0.113.77"] * 4  # kept, not masked as a phone
        assert all(re.fullmatch(r"unknown:[0-9a-f]{12}", e["user"]) for e in failed)  # typed names not stored
        assert {e["detail"]["reason"] for e in failed} == {"unknown user"}
        assert app.events("login_refused")[0]["detail"]["reason"] == "address locked out"
        [login] = app.events("login")
        assert (login["user"], login["detail"]["address"]) == ("alice", "198.51.100.7")


def test_sha256_line_is_rehashed_at_the_next_login(tmp_path):
    digest = hashlib.sha256(b"carol-pass").hexdigest()
    env_digest = hashlib.sha256(b"dave-pass").hexdigest()
    with GuardedApp(tmp_path, f"# staff\ncarol:sha256:{digest}\n", env_users=f"dave:sha256:{env_digest}") as app:
        assert app.login("carol", "carol-pass")[1].status_code == 200
        assert app.users_file.read_text().startswith("# staff\ncarol:$scrypt$ln=15,r=8,p=1$")
        [first, *_] = app.events("login")
        assert first["detail"]["legacy_hash"] == "sha256"
        assert [e["user"] for e in app.events("password_rehashed")] == ["carol"]
        assert app.login("carol", "carol-pass")[1].status_code == 200  # the new hash is the one checked
        assert "legacy_hash" not in app.events("login")[-1]["detail"]
        assert app.login("dave", "dave-pass")[1].status_code == 200  # RA_UI_USERS cannot be rewritten
        assert [e["user"] for e in app.events("password_rehashed")] == ["carol"]


def test_idle_session_expires(tmp_path):
    with GuardedApp(tmp_path, "alice:alice-pass\n", GuardSettings(session_idle_minutes=1 / 60)) as app:
        client, r = app.login("alice", "alice-pass")
        assert r.status_code == 200 and client.get("/config").status_code == 200
        time.sleep(0.5)
        assert client.get("/config").status_code == 200  # a request keeps it alive
        time.sleep(1.3)
        assert client.get("/config").status_code == 401
        assert client.get("/gradio_api/info").status_code == 401
        assert app.demo.server_app.tokens == {}  # ended in Gradio too, not only refused here
        [expired] = app.events("session_expired")
        assert (expired["user"], expired["detail"]["reason"]) == ("alice", "idle")


def test_session_ends_at_its_absolute_limit_however_busy(tmp_path):
    with GuardedApp(tmp_path, "alice:alice-pass\n", GuardSettings(session_max_hours=2 / 3600)) as app:
        client, _ = app.login("alice", "alice-pass")
        began = time.monotonic()
        while client.get("/config").status_code == 200:
            assert time.monotonic() - began < 5
            time.sleep(0.2)
        assert 1.8 <= time.monotonic() - began
        assert app.events("session_expired")[0]["detail"]["reason"] == "absolute"


def test_logout_ends_the_session_for_good(app):
    client, _ = app.login("alice", "alice-pass")
    kept = dict(client.cookies)
    assert client.get("/config").status_code == 200
    assert client.get("/logout").status_code == 302
    replay = app.client(cookies=kept)  # the old cookie, sent again after logging out
    assert replay.get("/config").status_code == 401 and replay.get("/gradio_api/info").status_code == 401
    [logout] = app.events("logout")
    assert (logout["user"], logout["detail"]["sessions_ended"]) == ("alice", 1)


def test_a_new_login_ends_the_browsers_previous_session(app):
    client, _ = app.login("alice", "alice-pass")
    old = dict(client.cookies)
    assert client.post("/login", data={"username": "alice", "password": "alice-pass"}).status_code == 200
    assert dict(client.cookies) != old
    assert app.client(cookies=old).get("/config").status_code == 401
    assert client.get("/config").status_code == 200


def test_security_headers_on_every_response(app):
    anonymous = app.client()
    client, login = app.login("alice", "alice-pass")
    page = anonymous.get("/")
    answers = [page, anonymous.get("/config"), anonymous.post("/gradio_api/cancel", json={}),
               anonymous.post("/login", data={"username": "x", "password": "y"}), login,
               client.get("/gradio_api/info"), client.get("/no-such-page"), anonymous.get("/theme.css")]
    for r in answers:
        csp = r.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, (r.url, csp)
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"
    # Gradio's inline scripts run by nonce; nothing else inline does
    nonce = re.search(r"'nonce-([^']+)'", page.headers["content-security-policy"])[1]
    scripts = re.findall(r"<script\b[^>]*>", page.text)
    assert scripts and all(f'nonce="{nonce}"' in tag for tag in scripts)
    assert "'unsafe-inline'" not in page.headers["content-security-policy"].split("script-src")[1].split(";")[0]
    assert "samesite=lax" in login.headers["set-cookie"].lower()
    assert "samesite=none" not in login.headers["set-cookie"].lower()


def test_framing_can_be_allowed_for_a_space(tmp_path):
    with GuardedApp(tmp_path, "alice:alice-pass\n", GuardSettings(frame_ancestors="https://huggingface.co")) as app:
        r = app.client().get("/")
        assert "frame-ancestors https://huggingface.co" in r.headers["content-security-policy"]
        assert "x-frame-options" not in r.headers


def test_routes_refuse_requests_without_a_login(app):
    anonymous = app.client()
    job = {"session_hash": "s1", "fn_index": 0, "event_id": "e1"}
    refused = [anonymous.post("/gradio_api/cancel", json=job), anonymous.post("/gradio_api/reset", json=job),
               anonymous.get("/gradio_api/heartbeat/s1"), anonymous.get("/gradio_api/queue/data?session_hash=s1"),
               anonymous.post("/gradio_api/queue/join", json={**job, "data": ["hi"]}),
               anonymous.post("/gradio_api/upload", files={"files": ("a.txt", b"x")}),
               anonymous.get("/gradio_api/file=/etc/hostname"), anonymous.post("/gradio_api/call/chat", json={"data": ["hi"]}),
               anonymous.get("/gradio_api/info"), anonymous.get("/config"), anonymous.post("/gradio_api/stream/e1")]
    assert _statuses(refused) == [401] * len(refused)
    assert anonymous.get("/").status_code == 200  # the login page and its files still load
    assert anonymous.get("/gradio_api/startup-events").status_code == 200


def test_cancel_of_another_users_answer_is_refused(app):
    alice, _ = app.login("alice", "alice-pass")
    bob, _ = app.login("bob", "bob-pass")
    event_id = app.join(alice, "alice-tab")
    stream = Stream(app.client(cookies=alice.cookies), "alice-tab")
    stream.start()
    assert stream.started.wait(30)
    job = {"session_hash": "alice-tab", "fn_index": 0, "event_id": event_id}
    # before: answered {"success": true} without a login and stopped alice's answer
    assert app.client().post("/gradio_api/cancel", json=job).status_code == 401
    attempts = [bob.post("/gradio_api/cancel", json=job), bob.post("/gradio_api/reset", json={"event_id": event_id}),
                bob.get("/gradio_api/queue/data", params={"session_hash": "alice-tab"}),
                bob.get("/gradio_api/heartbeat/alice-tab")]
    assert _statuses(attempts) == [403] * 4
    stream.join(STEPS * STEP_S + 30)
    assert stream.completed["success"] and stream.completed["output"]["data"] == [f"hi {STEPS - 1}"]  # to the end
    assert len(stream.outputs) == STEPS
    refused = app.events("request_refused")
    assert [e["user"] for e in refused] == ["bob"] * 4
    assert refused[0]["detail"]["route"] == "/gradio_api/cancel"


def test_own_cancel_still_works(app):
    alice, _ = app.login("alice", "alice-pass")
    event_id = app.join(alice, "alice-tab", "again")
    stream = Stream(app.client(cookies=alice.cookies), "alice-tab")
    stream.start()
    assert stream.started.wait(30)
    r = alice.post("/gradio_api/cancel", json={"session_hash": "alice-tab", "fn_index": 0, "event_id": event_id})
    assert r.status_code == 200
    stream.join(30)
    assert stream.completed is not None and len(stream.outputs) < STEPS  # stopped early
    assert stream.completed["output"].get("data") != [f"again {STEPS - 1}"]
    assert app.events("request_refused") == []
