"""The HTTP API (assistant/serving/api.py) on a real server: `python -m assistant serve --workers 2` on a loopback
port, with the bundled models, real FAISS indexes and the SQLite audit log in a temporary directory. The
answer mode is quote (the LLM is not what these tests are about). Clients: the `openai` package, httpx,
and the project's own openai back end.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from assistant.serving.api import Message, conversation, history_of, produce
from assistant.serving.serve import ApiTokens, TokensError, worker_environment
from assistant.tools import free_port, stop
from assistant.tools.bench_serve import wait_ready
from tests.conftest import ROOT, run_cli

openai = pytest.importorskip("openai", reason='the openai package is a test dependency: pip install -e ".[dev]"')

WIRE = "How much does an international wire transfer cost?"
ALICE = "alice-0123456789abcdef0123"
BARE = "bare-token-fedcba9876543210"


@dataclass
class Server:
    url: str
    data_dir: Path
    log: Path
    workers: set[int] = field(default_factory=set)

    def audit(self, sql: str, *params) -> list[dict]:
        con = sqlite3.connect(f"file:{self.data_dir / 'audit.sqlite'}?mode=ro", uri=True)
        con.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in con.execute(sql, params)]
        finally:
            con.close()

    def turn(self, turn_id: str) -> dict:
        rows = self.audit("SELECT * FROM turns WHERE id = ?", turn_id)
        assert len(rows) == 1, f"turn {turn_id} has {len(rows)} audit rows"
        return rows[0]


def prepare(data_dir: Path, embedder, warmed=()) -> None:
    """Build the packs' indexes here and make sure their intent models are trained (once per machine: the
    user cache keeps them), so that the two workers only load them; the evidence vectors the session's
    assistants (`warmed`) saved are copied here, so that the workers read them back instead of embedding every
    sentence of both packs at once (assistant/answering/unit_vectors.py)."""
    import shutil

    from assistant.packs import load_pack
    from assistant.pipeline import ensure_classifier, ensure_index, uploads_root

    for domain in ("bank", "hospital"):
        pack = load_pack(domain)
        ensure_classifier(pack, embedder, data_dir)
        ensure_index(pack, embedder, data_dir / "indexes" / domain, uploads=uploads_root(data_dir, pack))
    for bot in warmed:
        if bot.warming is not None:
            bot.warming.join(600)
        saved = bot.config.data_dir / "unit-vectors" / bot.pack.name
        if saved.is_dir():
            shutil.copytree(saved, data_dir / "unit-vectors" / bot.pack.name, dirs_exist_ok=True)


@pytest.fixture(scope="module")
def api(tmp_path_factory, embedder, bank_bot, hospital_bot):
    root = tmp_path_factory.mktemp("api")
    tokens = root / "tokens.txt"
    tokens.write_text(f"# test clients\nalice:{ALICE}\n{BARE}\n")
    tokens.chmod(0o600)
    port = free_port()
    server = Server(url=f"http://127.0.0.1:{port}", data_dir=root / "data", log=root / "serve.log")
    prepare(server.data_dir, embedder, warmed=(bank_bot, hospital_bot))
    with open(server.log, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "assistant", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--tokens-file", str(tokens), "--domain", "bank", "--domain", "hospital", "--workers", "2",
             "--answer-mode", "quote", "--data-dir", str(server.data_dir)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        try:  # both workers ready: each answers /readyz with its process id
            server.workers = wait_ready(server.url, 2, proc, time.time() + 300)
        except SystemExit as exc:
            pytest.fail(f"{exc}\n{server.log.read_text()[-3000:]}")
        yield server
    finally:
        stop(proc, 90)


@pytest.fixture
def client(api):
    return openai.OpenAI(base_url=f"{api.url}/v1", api_key=ALICE, max_retries=0, timeout=120)


def chat(api, body: dict, token: str = ALICE) -> httpx.Response:
    return httpx.post(f"{api.url}/v1/chat/completions", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {token}"})


# ------------------------------------------------------------------------------- pure logic


def test_tokens_file_lines():
    tokens = ApiTokens.parse("# comment\n\nivr: 0123456789abcdef0123 \nfedcba9876543210fedc\n")
    assert len(tokens) == 2 and tokens.user("0123456789abcdef0123") == "ivr"
    digest = hashlib.sha256(b"fedcba9876543210fedc").hexdigest()[:8]
    assert tokens.user("fedcba9876543210fedc") == f"token:{digest}" and tokens.user("nope") is None


@pytest.mark.parametrize("text, message", [
    ("", "holds no token"),
    ("# only a comment\n", "holds no token"),
    ("alice:short\n", "line 1: a token is at least 16"),
    (":0123456789abcdef0123\n", "a name goes before the colon"),
    ("a:0123456789abcdef0123\nb:0123456789abcdef0123\n", "line 2: this token is already"),
])
def test_tokens_file_errors_name_the_line(text, message):
    with pytest.raises(TokensError, match=message):
        ApiTokens.parse(text)


def test_openai_messages_become_the_pipelines_history():
    messages = [Message(role="system", content="be brief"), Message(role="assistant", content="Hello!"),
                Message(role="user", content="fee for a wire?"), Message(role="assistant", content="$45 [1]"),
                Message(role="user", content=[{"type": "text", "text": "and a"}, {"type": "text", "text": "domestic one?"}])]
    question, history = conversation(messages)
    assert question == "and a\ndomestic one?" and history == [("", "Hello!"), ("fee for a wire?", "$45 [1]")]
    assert history_of([Message(role="user", content="a"), Message(role="user", content="b")]) == [("a", ""), ("b", "")]


def test_the_quote_is_passed_on_before_the_answer_is_written():
    from assistant.pipeline import Response

    passed_on = threading.Event()

    class Writer:  # Assistant.stream's shape: the quoted evidence first, the final answer after the LLM
        def stream(self, message, history, *, session_id, user):
            yield Response(answer="“quote” [1]", evidence=[{"n": 1, "text": "quote"}])
            assert passed_on.wait(10), "the quote was held back until the answer was written"
            yield Response(answer="answer [1]", done=True)

    items = []

    def put(item):
        items.append(item)
        if item[0] == "partial":
            passed_on.set()

    produce(Writer(), "q", [], "s-1", "alice", put)
    assert [kind for kind, _ in items] == ["partial", "done"], items
    assert items[1][1].answer == "answer [1]"


def test_serve_refuses_a_missing_tokens_file(tmp_path, capsys):
    from assistant.__main__ import main

    assert main(["serve", "--tokens-file", str(tmp_path / "missing.txt")]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot read the tokens file {tmp_path / 'missing.txt'}")


# ------------------------------------------------------------------------------- the server


def test_health_and_readiness_need_no_token(api):
    health = httpx.get(f"{api.url}/healthz").json()
    assert health["status"] == "ok" and health["worker"] in api.workers
    ready = httpx.get(f"{api.url}/readyz").json()
    assert ready["status"] == "ready" and set(ready["packs"]) == {"bank", "hospital"}
    assert all(p["chunks"] > 0 and p["index_version"] for p in ready["packs"].values())


def test_models_are_the_packs(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["bank", "hospital"]
    assert models[0].owned_by and all(m.model_extra["ready"] for m in models)


def test_openai_client_chat_with_sources_and_audit(api, client):
    reply = client.chat.completions.create(model="bank", messages=[
        {"role": "system", "content": "Answer as a pirate."}, {"role": "user", "content": WIRE}])
    content = reply.choices[0].message.content
    extra = reply.model_extra["assistant"]
    assert reply.choices[0].finish_reason == "stop" and reply.model == "bank" and reply.object == "chat.completion"
    assert "$45" in content and extra["action"] == "answer" and not extra["refused"]
    assert extra["sources"] and extra["sources"][0]["source"] == "faq.csv" and extra["sources"][0]["cited"]
    assert extra["evidence"] and "$45" in " ".join(e["text"] for e in extra["evidence"])
    assert 0.0 < extra["confidence"] <= 1.0 and extra["intent"] and extra["session_id"].startswith("api-")
    row = api.turn(extra["turn_id"])
    assert (row["user"], row["domain"], row["session_id"], row["answer"]) == (
        "alice", "bank", extra["session_id"], content)


def test_openai_client_streaming(api, client):
    chunks = list(client.chat.completions.create(
        model="bank", messages=[{"role": "user", "content": WIRE}], stream=True,
        stream_options={"include_usage": True}, extra_body={"session_id": "s-stream-1"}))
    with_text = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content]
    opening = chunks[0].model_extra["assistant"]
    assert opening["stage"] == "evidence" and opening["evidence"] and with_text[0] > 0  # evidence before text
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason == "stop")
    extra = final.model_extra["assistant"]
    assert "$45" in content and chunks[-1].usage is not None and not chunks[-1].choices
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    row = api.turn(extra["turn_id"])
    assert (row["session_id"], row["answer"], row["user"]) == ("s-stream-1", content, "alice")


def test_the_conversation_so_far_is_used(client):
    first = client.chat.completions.create(model="bank", messages=[{"role": "user", "content": WIRE}])
    reply = client.chat.completions.create(model="bank", extra_body={"session_id": "s-follow"}, messages=[
        {"role": "user", "content": WIRE},
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "and a domestic one?"}])
    query = reply.model_extra["assistant"]["query"]
    assert "wire" in query.lower() and query != "and a domestic one?"
    assert reply.model_extra["assistant"]["corrections"] == {}
    typed = client.chat.completions.create(model="bank", messages=[
        {"role": "user", "content": "how much is an internatinal wire"}])
    assert typed.model_extra["assistant"]["corrections"] == {"internatinal": "international"}


def test_handoff_by_message_and_by_endpoint(api):
    said = chat(api, {"model": "bank", "messages": [{"role": "user", "content": "I want to talk to a person"}]})
    extra = said.json()["assistant"]
    assert extra["action"] == "handoff" and extra["ticket"].startswith("HO-") and extra["ticket"] in said.json()[
        "choices"][0]["message"]["content"]
    reply = httpx.post(f"{api.url}/v1/handoff", headers={"Authorization": f"Bearer {ALICE}"}, json={
        "session_id": "s-handoff", "model": "hospital", "reason": "billing dispute, call me on 555-201-3344",
        "messages": [{"role": "user", "content": "my bill is wrong"}, {"role": "assistant", "content": "Sorry"}]})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["ticket"].startswith("HO-") and body["ticket"] in body["message"] and body["model"] == "hospital"
    ticket = api.audit("SELECT * FROM tickets WHERE id = ?", body["ticket"])[0]
    assert (ticket["session_id"], ticket["domain"]) == ("s-handoff", "hospital")
    assert "my bill is wrong" in ticket["summary"] and "billing dispute" in ticket["summary"]
    assert "555-201-3344" not in ticket["summary"]  # redacted like every summary
    row = api.turn(body["turn_id"])
    assert (row["action"], row["ticket"], row["user"]) == ("handoff", body["ticket"], "alice")


def test_feedback_attaches_to_its_turn(api):
    turn_id = chat(api, {"model": "bank", "messages": [{"role": "user", "content": WIRE}]}).json()["assistant"]["turn_id"]
    headers = {"Authorization": f"Bearer {ALICE}"}
    reply = httpx.post(f"{api.url}/v1/feedback", headers=headers,
                       json={"turn_id": turn_id, "rating": -1, "comment": "wrong fee, mail me at jo@example.com"})
    assert reply.status_code == 200 and reply.json()["status"] == "recorded"
    rows = api.audit("SELECT * FROM feedback WHERE turn_id = ?", turn_id)
    assert len(rows) == 1 and rows[0]["rating"] == -1 and "jo@example.com" not in rows[0]["comment"]
    missing = httpx.post(f"{api.url}/v1/feedback", headers=headers, json={"turn_id": "0" * 32, "rating": 1})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "turn_not_found"
    bad = httpx.post(f"{api.url}/v1/feedback", headers=headers, json={"turn_id": turn_id, "rating": 5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rating"


def test_a_valid_token_is_needed(api):
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/feedback"),
                         ("POST", "/v1/handoff")):
        reply = httpx.request(method, f"{api.url}{path}", json={})
        assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer", path
        assert reply.json()["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{api.url}/v1", api_key="not-a-token-of-ours", max_retries=0).models.list()
    reply = chat(api, {"model": "bank", "messages": [{"role": "user", "content": WIRE}]}, token=BARE)
    assert reply.status_code == 200
    digest = hashlib.sha256(BARE.encode()).hexdigest()[:8]
    assert api.turn(reply.json()["assistant"]["turn_id"])["user"] == f"token:{digest}"


def test_bad_requests_are_refused_in_openais_error_shape(api, client):
    with pytest.raises(openai.NotFoundError, match="use one of bank, hospital"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": WIRE}])
    cases = [
        ({"model": "bank", "messages": [{"role": "assistant", "content": "Hi"}]}, 400, "must be the user's"),
        ({"model": "bank", "messages": [{"role": "user", "content": "  "}]}, 400, "empty"),
        ({"model": "bank", "n": 2, "messages": [{"role": "user", "content": WIRE}]}, 400, "n must be 1"),
        ({"model": "bank", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
         400, "only text content"),
        ({"model": "bank", "messages": [{"role": "user", "content": "x" * 300_000}]}, 413, "larger than"),
    ]
    for body, status, message in cases:
        reply = chat(api, body)
        assert reply.status_code == status and message in reply.json()["error"]["message"], reply.text
    form = httpx.post(f"{api.url}/v1/chat/completions", data={"model": "bank"},
                      headers={"Authorization": f"Bearer {ALICE}"})
    assert form.status_code == 400 and "JSON object" in form.json()["error"]["message"]


def test_the_projects_openai_backend_talks_to_the_api(api):
    from assistant.llm.generate import GenerationError
    from assistant.llm.openai_backend import OpenAIGenerator

    with pytest.raises(GenerationError, match="refused the request"):
        OpenAIGenerator(f"{api.url}/v1", "bank", key="not-a-token-of-ours", retries=0)
    result = run_cli("assistant", "generate", WIRE, "--backend", "openai", "--base-url", f"{api.url}/v1",
                     "--model", "bank", "--json", env={"RA_OPENAI_API_KEY": ALICE}, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert "$45" in out["text"] and out["backend"] == "openai" and out["model"] == "bank"


def test_concurrent_chats_are_each_audited_once(api):
    questions = [WIRE, "What are your branch hours?", "How do I report a lost card?", "What is the overdraft fee?"]

    def one(n: int) -> tuple[str, str]:
        body = {"model": "bank", "stream": n % 2 == 0, "session_id": f"s-load-{n}",
                "messages": [{"role": "user", "content": questions[n % len(questions)]}]}
        with httpx.Client(timeout=180, headers={"Authorization": f"Bearer {ALICE}"}) as http:  # a connection each
            with http.stream("POST", f"{api.url}/v1/chat/completions", json=body) as reply:
                assert reply.status_code == 200
                text = reply.read().decode()
                worker = reply.headers["x-worker"]
        if body["stream"]:
            events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and "[DONE]" not in line]
            return next(e["assistant"]["turn_id"] for e in events if e["choices"] and e["choices"][0]["finish_reason"]), worker
        return json.loads(text)["assistant"]["turn_id"], worker

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answered = list(pool.map(one, range(8)))
    turn_ids = [t for t, _ in answered]
    assert len(set(turn_ids)) == 8
    assert {int(w) for _, w in answered} <= api.workers
    for n, turn_id in enumerate(turn_ids):
        row = api.turn(turn_id)  # exactly one row each
        assert row["session_id"] == f"s-load-{n}" and row["answer"]


def test_bench_serve_two_workers_on_one_postgresql_audit_store(tmp_path, embedder, postgres, bank_bot, hospital_bot):
    """`make bench-serve` with PostgreSQL: 2 worker processes, one FAISS index, one PostgreSQL audit store;
    every answered chat is audited exactly once, under the token's user."""
    prepare(tmp_path / "data", embedder, warmed=(bank_bot, hospital_bot))
    url = postgres.new_database()
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "assistant.tools.bench_serve", "--chats", "8", "--workers", "2", "--answer-mode", "quote",
         "--audit-url", url, "--data-dir", str(tmp_path / "data"), "--timeout", "400", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=500, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["audit"] == "postgresql" and report["workers"] == 2
    assert report["answered"] == 8 and report["errors"] == 0
    assert report["audited_once"] == 8 and report["audit_missing"] == 0 and report["audit_duplicated"] == 0
    assert report["audited_with_user"] == 8 and sum(report["answers_per_worker"]) == 8


def test_workers_share_the_cores_out_among_their_llamacpp_threads(monkeypatch):
    """`serve --workers N`: each worker's llama.cpp gets cores // N threads, unless RA_LLAMA_THREADS is set."""
    from assistant.llm import llamacpp

    monkeypatch.delenv("RA_LLAMA_THREADS", raising=False)
    monkeypatch.setattr(llamacpp, "available_cores", lambda: 8)
    assert worker_environment(2)["RA_LLAMA_THREADS"] == "4"
    assert worker_environment(16)["RA_LLAMA_THREADS"] == "1"
    assert "RA_LLAMA_THREADS" not in worker_environment(1)
    monkeypatch.setenv("RA_LLAMA_THREADS", "3")
    assert worker_environment(2)["RA_LLAMA_THREADS"] == "3"
