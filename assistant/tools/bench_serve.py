"""Load on the HTTP API: concurrent chats against several worker processes that share one FAISS index
and one audit store, SQLite or PostgreSQL (`make bench-serve`).

    python -m assistant.tools.bench_serve [--chats 32] [--workers 2] [--domain bank] [--answer-mode evidence]
                                    [--audit sqlite|postgres] [--audit-url postgresql://...]
                                    [--timeout 600] [--data-dir DIR] [--json runs/bench-serve.json]

`--audit postgres` starts a throwaway PostgreSQL server from the machine's binaries (assistant/tools/pg_local.py)
for the run; `--audit-url` uses one that is already running (an empty database is best: the count is of
this run's turn ids, so older rows do no harm).

It starts `python -m assistant serve --workers W` on a free loopback port with a new token (indexes and
audit log in a fresh directory unless --data-dir), waits until /readyz has said "ready" from every
worker, then sends all the chats at once, each on its own connection, every other one streamed. The
questions are the pack's customer-phrased dev set. Latency is from sending a chat to its last byte.
Afterwards it reads the audit log: every answered turn must be recorded exactly once, under the
token's user name. The whole run is bounded by --timeout. A temporary directory is removed after a clean
run and kept (with the server's log) after one with errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from assistant.config import ANSWER_MODES
from assistant.packs import load_pack
from assistant.tools import free_port, stop


def questions(domain: str, n: int) -> list[str]:
    """The pack's customer-phrased dev questions (its examples when it has none), repeated up to n."""
    pack = load_pack(domain)
    path = pack.root / "dev" / "questions.jsonl"
    found = [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()] \
        if path.is_file() else list(pack.examples)
    if not found:
        raise SystemExit(f"error: pack {domain} has no dev/questions.jsonl and no examples to ask")
    return [found[i % len(found)] for i in range(n)]


def wait_ready(url: str, workers: int, proc: subprocess.Popen, deadline: float) -> set[int]:
    """Poll /readyz on new connections until `workers` different processes have answered ready."""
    ready: set[int] = set()
    while len(ready) < workers:
        if proc.poll() is not None:
            raise SystemExit(f"error: the server exited with code {proc.returncode} while starting (see its log)")
        if time.time() > deadline:
            raise SystemExit(f"error: only {len(ready)} of {workers} workers were ready before the time limit")
        try:
            reply = httpx.get(f"{url}/readyz", timeout=5)
            if reply.status_code == 200:
                ready.add(reply.json()["worker"])
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.3)
    return ready


async def chat(client: httpx.AsyncClient, url: str, domain: str, question: str, stream: bool, n: int) -> dict:
    body = {"model": domain, "messages": [{"role": "user", "content": question}], "stream": stream,
            "session_id": f"bench-{n}"}
    started = time.perf_counter()
    result = {"n": n, "stream": stream, "turn_id": None, "error": None, "worker": None}
    try:
        if stream:
            final = None
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as reply:
                result["worker"] = reply.headers.get("x-worker")
                if reply.status_code != 200:
                    result["error"] = f"HTTP {reply.status_code}: {(await reply.aread())[:200]!r}"
                else:
                    async for line in reply.aiter_lines():
                        if line.startswith("data:") and line[5:].strip() != "[DONE]":
                            data = json.loads(line[5:])
                            if "error" in data:
                                result["error"] = data["error"]["message"]
                            if "ttfb_ms" not in result:
                                result["ttfb_ms"] = (time.perf_counter() - started) * 1000
                            final = data.get("assistant", {}).get("turn_id") or final
                    result["turn_id"] = final
        else:
            reply = await client.post(f"{url}/v1/chat/completions", json=body)
            result["worker"] = reply.headers.get("x-worker")
            if reply.status_code != 200:
                result["error"] = f"HTTP {reply.status_code}: {reply.text[:200]}"
            else:
                result["turn_id"] = reply.json()["assistant"]["turn_id"]
    except httpx.HTTPError as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    if result["error"] is None and not result["turn_id"]:
        result["error"] = "no turn id in the reply"
    result["ms"] = (time.perf_counter() - started) * 1000
    return result


async def send_all(url: str, token: str, domain: str, asked: list[str], timeout: float) -> list[dict]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=len(asked), max_keepalive_connections=0)  # one connection each
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=timeout) as client:
        return await asyncio.gather(*(chat(client, url, domain, q, n % 2 == 0, n) for n, q in enumerate(asked)))


def audit_counts(target: Path | str, turn_ids: list[str], user: str) -> dict:
    """How often each answered turn is in the audit store (a SQLite file or a PostgreSQL URL), and how many
    of them name the token's user."""
    if isinstance(target, str):
        import psycopg

        with psycopg.connect(target) as conn:
            rows = Counter(r[0] for r in conn.execute("SELECT id FROM turns"))
            named = {r[0] for r in conn.execute('SELECT id FROM turns WHERE "user" = %s', (user,))}
    else:
        con = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
        try:
            rows = Counter(r[0] for r in con.execute("SELECT id FROM turns"))
            named = {r[0] for r in con.execute("SELECT id FROM turns WHERE user = ?", (user,))}
        finally:
            con.close()
    return {"once": sum(rows[t] == 1 for t in turn_ids), "missing": sum(rows[t] == 0 for t in turn_ids),
            "duplicated": sum(rows[t] > 1 for t in turn_ids), "with_user": sum(t in named for t in turn_ids)}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m assistant.tools.bench_serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--chats", type=int, default=32, help="chats sent at once")
    p.add_argument("--workers", type=int, default=2, help="API worker processes")
    p.add_argument("--domain", default="bank")
    p.add_argument("--answer-mode", default="evidence", choices=ANSWER_MODES)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole run, start-up included")
    p.add_argument("--data-dir", default=None, help="indexes and audit log (default: a fresh temporary directory)")
    p.add_argument("--audit", default="sqlite", choices=("sqlite", "postgres"),
                   help="postgres: a throwaway PostgreSQL server started for this run (or --audit-url)")
    p.add_argument("--audit-url", default=None, help="a running PostgreSQL audit store: postgresql://user@host/db")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.chats < 1 or args.workers < 1:
        p.error("--chats and --workers must be at least 1")
    deadline = time.time() + args.timeout
    asked = questions(args.domain, args.chats)
    postgres, audit_url = None, args.audit_url
    if args.audit == "postgres" and not audit_url:
        from assistant.tools.pg_local import PostgresServer, PostgresUnavailable

        try:
            postgres = PostgresServer.start()
        except PostgresUnavailable as exc:
            raise SystemExit(f"error: {exc}") from None
        audit_url = postgres.new_database()
    try:
        return _run(args, asked, deadline, audit_url)
    finally:
        if postgres:
            postgres.stop()


def _run(args: argparse.Namespace, asked: list[str], deadline: float, audit_url: str | None) -> int:
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="ra-bench-serve-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    tokens = data_dir / "bench-tokens.txt"
    tokens.write_text(f"bench:{token}\n")
    tokens.chmod(0o600)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = data_dir / "bench-serve.log"
    load = os.getloadavg()[0]
    print(f"starting {args.workers} workers on {url} ({args.domain}, {args.answer_mode}); data {data_dir}; "
          f"log {log_path}", flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "assistant", "serve", "--port", str(port), "--tokens-file", str(tokens),
             "--domain", args.domain, "--workers", str(args.workers), "--answer-mode", args.answer_mode,
             "--data-dir", str(data_dir), "--threads", str(max(8, args.chats)),
             "--max-pending", str(max(64, args.chats)), *(["--audit-url", audit_url] if audit_url else [])],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        try:
            t0 = time.time()
            ready = wait_ready(url, args.workers, proc, deadline)
            start_s = time.time() - t0
            print(f"{len(ready)} workers ready after {start_s:.0f} s; sending {args.chats} chats at once", flush=True)
            started = time.perf_counter()
            try:
                results = asyncio.run(asyncio.wait_for(send_all(url, token, args.domain, asked, args.timeout),
                                                       max(1.0, deadline - time.time())))
            except TimeoutError:
                raise SystemExit(f"error: the chats did not finish within --timeout {args.timeout:.0f} s") from None
            wall = time.perf_counter() - started
        finally:
            stop(proc, 60)
    ok = [r for r in results if r["error"] is None]
    errors = [r for r in results if r["error"] is not None]
    audit = audit_counts(audit_url or data_dir / "audit.sqlite", [r["turn_id"] for r in ok], "bench")
    served = Counter(r["worker"] for r in ok)
    latencies = [r["ms"] for r in ok]
    ttfb = [r["ttfb_ms"] for r in ok if r["stream"] and "ttfb_ms" in r]
    report = {
        "chats": args.chats, "workers": args.workers, "domain": args.domain, "answer_mode": args.answer_mode,
        "audit": "postgresql" if audit_url else "sqlite",
        "answered": len(ok), "errors": len(errors), "error_messages": sorted({r["error"] for r in errors})[:5],
        "wall_s": round(wall, 2), "chats_per_s": round(len(ok) / wall, 2) if wall else 0.0,
        "p50_ms": round(percentile(latencies, 0.50)), "p95_ms": round(percentile(latencies, 0.95)),
        "max_ms": round(max(latencies)) if latencies else None,
        "stream_first_byte_p50_ms": round(percentile(ttfb, 0.50)) if ttfb else None,
        "audited_once": audit["once"], "audit_missing": audit["missing"], "audit_duplicated": audit["duplicated"],
        "audited_with_user": audit["with_user"], "answers_per_worker": sorted(served.values(), reverse=True),
        "startup_s": round(start_s, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} at start",
        "date": time.strftime("%Y-%m-%d"),
    }
    rows = [("chats answered", f"{len(ok)} of {args.chats}"), ("errors", str(len(errors))),
            ("wall time", f"{wall:.1f} s"), ("throughput", f"{report['chats_per_s']:.2f} chats/s"),
            ("latency p50", f"{report['p50_ms'] / 1000:.2f} s"), ("latency p95", f"{report['p95_ms'] / 1000:.2f} s"),
            ("first byte p50 (streamed)", f"{report['stream_first_byte_p50_ms'] / 1000:.2f} s" if ttfb else "-"),
            ("audited exactly once", f"{audit['once']} of {len(ok)} turns"),
            ("audited with the token's user", f"{audit['with_user']} of {len(ok)} turns"),
            ("answers per worker", " + ".join(str(v) for v in report["answers_per_worker"]))]
    print(f"\n{args.chats} concurrent chats, {args.workers} workers, {args.domain}, answer mode {args.answer_mode}, "
          f"audit in {report['audit']} "
          f"({report['machine']}; start-up {start_s:.0f} s)")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    for message in report["error_messages"]:
        print(f"  error: {message}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    clean = not errors and audit["once"] == len(ok) == audit["with_user"]
    if clean and not args.data_dir:
        shutil.rmtree(data_dir)
    elif not clean:
        print(f"kept for a look: {data_dir} (server log, audit log)")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
