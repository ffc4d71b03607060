"""The chat UI end to end: the real app in its own process, driven by headless Chromium (Debian's
package) through Playwright. `make test` installs both; without a Chromium binary these tests skip.

Set RA_SCREENSHOT=PATH to also save a screenshot of the main screen (the README's picture).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from assistant.tools import free_port as _free_port
from assistant.tools import stop
from tests.conftest import ROOT

CHROMIUM = next((p for p in (os.environ.get("RA_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p), None)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary: `apt-get install chromium` (make test does)"),
    pytest.mark.timeout(900),
]


BOT = "#chat [data-testid='bot']"



class Server:
    """`python -m ui` in a subprocess on a free loopback port; stopped at the end."""

    def __init__(self, data_dir: Path, *args: str, env: dict | None = None, log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        full_env = {**os.environ, "RA_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "ui", "--port", str(self.port), *args], cwd=ROOT,
                                     env=full_env, stdout=log.open("w"), stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 300) -> Server:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the UI exited early:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return self
            except urllib.error.HTTPError:  # 401 and the like: it is up
                return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"the UI did not start in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        stop(self.proc, 20)


@pytest.fixture(scope="module")
def ui_data(data_dir, bank_bot, hospital_bot, tmp_path_factory) -> Path:
    """A copy of the session's data folder (both packs' indexes and classifiers already built), so
    that uploads and feedback here leave the other tests' index alone."""
    target = tmp_path_factory.mktemp("ui-data") / "data"
    shutil.copytree(data_dir, target, ignore=shutil.ignore_patterns("audit.sqlite*"))
    return target


@pytest.fixture(scope="module")
def server(ui_data, tmp_path_factory):
    srv = Server(ui_data, log=tmp_path_factory.mktemp("ui") / "server.log").wait()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(120_000)
    pg.goto(server.url)
    pg.locator("#message textarea").wait_for()
    yield pg
    context.close()


def ask(page, question: str, timeout: float = 180) -> str:
    """Type a question, press Enter, watch the answer stream in; returns the final bot message text.

    Also asserts that the answer grew in several steps (it streamed) unless it was a fixed reply.
    """
    bots = page.locator(BOT)
    before = bots.count()
    page.locator("#message textarea").fill(question)
    page.locator("#message textarea").press("Enter")
    deadline = time.time() + timeout
    seen: list[str] = []
    while time.time() < deadline:
        if bots.count() > before:
            text = bots.last.inner_text().strip()
            if text and (not seen or seen[-1] != text):
                seen.append(text)
            details = page.locator("#details").inner_text()
            if "Thinking" not in details and text and text != "…":
                break
        time.sleep(0.05)
    else:
        raise AssertionError(f"no complete answer within {timeout} s; saw {seen[-3:]}")
    page.wait_for_timeout(300)
    return bots.last.inner_text().strip()


def audit_rows(data_dir: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(data_dir / "audit.sqlite") as db:
        return db.execute(sql).fetchall()


def test_question_streams_an_answer_with_sources(page):
    streamed: list[str] = []
    page.expose_function("ra_record", lambda text: streamed.append(text))
    page.evaluate("""() => { new MutationObserver(() => {
        const bots = document.querySelectorAll('#chat [data-testid="bot"]');
        if (bots.length) window.ra_record(bots[bots.length - 1].innerText);
    }).observe(document.querySelector('#chat'), {subtree: true, childList: true, characterData: true}); }""")
    answer = ask(page, "What routing number do I give my employer for direct deposit?")
    assert answer and answer != "…"
    distinct = {t.strip() for t in streamed if t.strip() and t.strip() != "…"}
    # the quoted evidence shows first; a verified lead sentence, when the model writes one, then joins it
    # (the order of updates is checked in tests/test_assistant.py::test_answer_streams_before_it_is_complete)
    assert distinct and all("From " in t for t in distinct), distinct
    details = page.locator("#details")
    assert details.locator(".ra-source").count() >= 1
    assert "direct_deposit_routing_number.md" in details.inner_text()
    assert re.search(r"intent: \w+", details.inner_text())
    assert re.search(r"confidence \d+%", details.inner_text())
    assert "Evidence and checks" in details.inner_text()
    assert details.locator(".ra-sentence").count() >= 1
    assert "021555013" in details.locator(".ra-evidence").inner_text() + answer
    if os.environ.get("RA_SCREENSHOT"):
        page.screenshot(path=os.environ["RA_SCREENSHOT"], full_page=False)


def test_thumbs_up_is_stored_with_the_audit_record(page, ui_data):
    ask(page, "What is the daily ATM withdrawl limit on my debit card?")
    # the panel says how a misspelled word was read; the audit keeps what the customer typed
    assert "Read as: withdrawl → withdrawal" in page.locator("#details .ra-read-as").inner_text()
    page.locator("#feedback-comment textarea").fill("clear answer, thanks")
    bot = page.locator(BOT).last
    bot.hover()
    page.locator("#chat button[aria-label='Like'], #chat button[title='Like']").last.click()
    page.locator("#feedback-status").get_by_text("saved").wait_for()
    rows = audit_rows(ui_data, "SELECT f.rating, f.comment, t.message FROM feedback f JOIN turns t "
                               "ON t.id = f.turn_id ORDER BY f.id DESC LIMIT 1")
    assert rows == [(1, "clear answer, thanks", "What is the daily ATM withdrawl limit on my debit card?")]


def test_talk_to_a_person_creates_a_ticket(page, ui_data):
    page.locator("#handoff").click()
    page.locator("#details .ra-ticket").wait_for()
    ticket = re.search(r"HO-\d{8}-\w+", page.locator("#details").inner_text()).group(0)
    assert ticket in page.locator("#chat").inner_text()
    assert audit_rows(ui_data, f"SELECT count(*) FROM tickets WHERE id = '{ticket}'") == [(1,)]


def test_emergency_reply_stands_out(page):
    page.locator("#domain input").click()
    page.get_by_role("option", name="hospital").click()
    page.wait_for_timeout(500)
    answer = ask(page, "My father has crushing chest pain and can't breathe")
    assert "EMERGENCY" in answer and "911" in answer
    assert page.locator("#details .ra-emergency").is_visible()


def test_upload_a_document_then_ask_about_it(page, tmp_path, ui_data):
    doc = tmp_path / "holiday_notice.md"
    doc.write_text("# Holiday closures\n\nAll Northbridge branches close early at 1:00 p.m. on Zephyr Day, "
                   "the bank's founding anniversary on 14 March. Online banking stays available.\n")
    bad = tmp_path / "scan.pdf"
    bad.write_bytes(b"\x00\x01 this is not a pdf \xff" * 50)
    page.locator("#upload-panel").get_by_text("Add documents to this domain").click()
    page.locator("#upload-files input[type=file]").set_input_files([str(doc), str(bad)])
    page.locator("#upload-button").click()
    status = page.locator("#upload-status")
    status.get_by_text("Added 1 document").wait_for(timeout=180_000)
    assert "scan.pdf" in status.inner_text() and "Not added" in status.inner_text()
    answer = ask(page, "What time do branches close on Zephyr Day?")
    assert "uploads/holiday_notice.md" in page.locator("#details").inner_text()
    assert "1:00" in answer or "1 p.m" in answer.lower()
    assert not (ui_data / "uploads" / "bank" / "uploads" / "scan.pdf").exists()


def test_login_guards_pages_and_api(browser, ui_data, tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("# pilot staff\nnurse.jane:correct horse battery\n")
    srv = Server(ui_data, "--users", str(users), "--no-warm-up", log=tmp_path / "auth.log").wait()
    try:
        for route in ("/config", "/gradio_api/info", "/gradio_api/queue/status"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(srv.url + route, timeout=10)
            assert err.value.code in (401, 403), route
        cancel = urllib.request.Request(srv.url + "/gradio_api/cancel", method="POST", headers={
            "content-type": "application/json"}, data=b'{"session_hash": "s", "fn_index": 0, "event_id": "e"}')
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(cancel, timeout=10)
        assert err.value.code == 401
        context = browser.new_context()
        pg = context.new_page()
        console: list[str] = []
        pg.on("console", lambda m: console.append(m.text))
        page = pg.goto(srv.url)
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        pg.get_by_label("username").fill("nurse.jane")
        pg.get_by_label("password").fill("wrong")
        pg.get_by_role("button", name="Login").click()
        pg.get_by_text("Incorrect").wait_for(timeout=30_000)
        assert pg.locator("#message").count() == 0
        pg.get_by_label("username").fill("nurse.jane")
        pg.get_by_label("password").fill("correct horse battery")
        pg.get_by_role("button", name="Login").click()
        pg.locator("#message textarea").wait_for(timeout=60_000)
        # the page works under the CSP: the browser reported nothing it refused to run or load
        assert not [m for m in console if "Content Security Policy" in m], console
        kept = context.cookies()
        pg.locator("#logout").click()
        pg.get_by_label("username").wait_for(timeout=30_000)
        context.close()
        again = browser.new_context()  # the cookie from before the logout opens nothing any more
        again.add_cookies(kept)
        pg = again.new_page()
        pg.goto(srv.url)
        pg.get_by_label("username").wait_for(timeout=30_000)
        assert pg.locator("#message").count() == 0
        again.close()
        kinds = [k for (k,) in audit_rows(ui_data, "SELECT kind FROM events WHERE kind IN "
                                                   "('login', 'login_failed', 'logout') ORDER BY time")]
        assert kinds[-3:] == ["login_failed", "login", "logout"]
    finally:
        srv.stop()
