"""Load test of the chat UI through its API (`make bench-ui`).

Starts `python -m ui` on a free loopback port, then with gradio_client (one client per chat, so each
is its own browser-like session):
1. time to first token on screen: one chat alone, short questions, submit -> first streamed update
   that carries answer text; printed beside the in-process figure for the same questions (baseline);
2. N concurrent chats (default 16), each asking two questions, the second a follow-up: latency p50 /
   p95 per answer, errors, answers per minute; beside it the same questions asked one at a time.

    python -m ui.bench [--chats 16] [--json runs/ui-bench.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHORT = ["What is the routing number?", "When are branches open on Saturday?", "How much is a domestic wire?",
         "What is the overdraft fee?", "How do I order checks?", "What is the ATM limit?"]
CONVERSATIONS = [
    ("How much does it cost to send an international wire?", "And a domestic one?"),
    ("What are the branch hours on Saturday?", "What about Sunday?"),
    ("What is the current rate on a 12-month CD?", "And what's the penalty for early withdrawal?"),
    ("What is the daily ATM withdrawal limit on my debit card?", "Can I raise it?"),
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(concurrency: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = _port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "ui", "--port", str(port), "--concurrency", str(concurrency)],
                            cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the UI exited:\n{log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the UI did not start within 10 minutes")


def _text(content) -> str:
    """A chat message's text, whichever shape the client returns (string, {"text"}, or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("value") or "")
    if isinstance(content, list):
        return "".join(_text(part) for part in content)
    return ""


def ask(client, message: str, chat: list, domain: str = "bank") -> tuple[float, float, list]:
    """One question through the app's /chat endpoint: (seconds to first answer text, total, new chat)."""
    started = time.perf_counter()
    first = None
    job = client.submit(message, chat, domain, 2, 0.0, 160, "none (base model)", api_name="/chat")
    for update in job:
        history = update[0] if isinstance(update, list | tuple) else update
        if first is None and history and history[-1].get("role") == "assistant":
            text = _text(history[-1].get("content")).strip()
            if text and text != "…":
                first = time.perf_counter() - started
    result = job.result()
    total = time.perf_counter() - started
    return first if first is not None else total, total, result[0]


def first_token(url: str, rounds: int) -> dict:
    from gradio_client import Client

    client = Client(url, verbose=False)
    ask(client, "hello", [])  # warm-up
    ttfts, totals = [], []
    for i in range(rounds):
        t, total, _ = ask(Client(url, verbose=False), SHORT[i % len(SHORT)], [])
        ttfts.append(t)
        totals.append(total)
    return {"rounds": rounds, "ttft_p50_s": round(float(np.median(ttfts)), 3),
            "ttft_max_s": round(float(max(ttfts)), 3), "answer_p50_s": round(float(np.median(totals)), 3)}


def in_process_first_token(rounds: int) -> dict:
    """The same questions straight through Assistant.stream (no web stack): the baseline."""
    from assistant.config import AssistantConfig
    from assistant.pipeline import Assistant

    bot = Assistant(AssistantConfig(domain="bank"))
    bot.respond("hello")
    ttfts, actions = [], []
    for i in range(rounds):
        started = time.perf_counter()
        first = None
        for response in bot.stream(SHORT[i % len(SHORT)]):  # read to the end: generation finishes cleanly
            if first is None and response.answer.strip():
                first = time.perf_counter() - started
        ttfts.append(first)
        actions.append(response.action)
    return {"ttft_p50_s": round(float(np.median(ttfts)), 3), "actions": actions}


def concurrent(url: str, chats: int) -> dict:
    from gradio_client import Client

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(chats)

    def run(i: int) -> None:
        try:
            client = Client(url, verbose=False)
        except Exception as exc:
            with lock:
                errors.append(f"chat {i}: connect: {exc}")
            barrier.abort()
            return
        first, second = CONVERSATIONS[i % len(CONVERSATIONS)]
        with contextlib.suppress(threading.BrokenBarrierError):  # a chat failed to connect: start anyway
            barrier.wait(timeout=120)
        chat: list = []
        for message in (first, second):
            try:
                _, total, chat = ask(client, message, chat)
                with lock:
                    latencies.append(total)
            except Exception as exc:  # every failure is counted and reported
                with lock:
                    errors.append(f"chat {i}: {type(exc).__name__}: {exc}")
                return

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(chats)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"chats": chats, "answers": len(latencies), "errors": len(errors), "error_examples": errors[:5],
            "p50_s": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
            "p95_s": round(float(np.percentile(latencies, 95)), 2) if latencies else None,
            "wall_s": round(wall, 1), "answers_per_min": round(len(latencies) / wall * 60, 1)}


def sequential(url: str) -> dict:
    from gradio_client import Client

    times = []
    for first, second in CONVERSATIONS:
        client = Client(url, verbose=False)  # one session per conversation, as in the concurrent run
        chat: list = []
        for message in (first, second):
            _, total, chat = ask(client, message, chat)
            times.append(total)
    return {"answers": len(times), "p50_s": round(float(np.median(times)), 2),
            "answers_per_min": round(len(times) / sum(times) * 60, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ui.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--chats", type=int, default=16, help="concurrent chats (default 16)")
    p.add_argument("--rounds", type=int, default=10, help="short questions for the first-token figure")
    p.add_argument("--concurrency", type=int, default=4, help="the app's --concurrency")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from index.quiet import quiet_libraries

    quiet_libraries()
    log = Path(tempfile.mkdtemp(prefix="ra-ui-bench-")) / "server.log"
    proc, url = start_server(args.concurrency, log)
    try:
        print(f"app at {url} (log {log})", flush=True)
        ttft = first_token(url, args.rounds)
        print(f"first token through the UI: {ttft}", flush=True)
        alone = sequential(url)
        print(f"one chat at a time: {alone}", flush=True)
        load = concurrent(url, args.chats)
        print(f"{args.chats} concurrent chats: {load}", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    baseline = in_process_first_token(args.rounds)
    print(f"first token in process (no web stack): {baseline}", flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    print(f"\n## UI ({time.strftime('%Y-%m-%d')}, {machine}, app concurrency {args.concurrency})\n")
    print("| measure | value |\n|---|---|")
    print(f"| first token on screen, p50 / max of {ttft['rounds']} short questions | "
          f"{ttft['ttft_p50_s']:.2f} s / {ttft['ttft_max_s']:.2f} s (in process: {baseline['ttft_p50_s']:.2f} s) |")
    print(f"| one chat at a time: answer p50 | {alone['p50_s']:.1f} s ({alone['answers_per_min']} answers/min) |")
    print(f"| {load['chats']} concurrent chats: answer p50 / p95 | {load['p50_s']} s / {load['p95_s']} s "
          f"({load['answers_per_min']} answers/min) |")
    print(f"| errors | {load['errors']} of {load['answers'] + load['errors']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": machine,
                                         "first_token": ttft, "in_process": baseline, "sequential": alone,
                                         "concurrent": load}, indent=2))
    return 1 if load["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
