"""Serve the assistant over HTTP: settings, API tokens, and the uvicorn process(es).

    python -m assistant serve --tokens-file tokens.txt                       # every built-in pack, port 8000
    python -m assistant serve --host 0.0.0.0 --port 8000 --tokens-file tokens.txt \
        --domain bank --domain /srv/packs/clinic --workers 2                  # two processes, one port

The tokens file holds one API token per line, or `name:token` so that the name is written to the audit
log as the user who asked; lines starting with `#` are comments. A token is at least 16 characters:

    # contact-centre platform
    ivr:7f3c1e9a0b5d4c2e8f6a1b3c5d7e9f0a
    web-widget:Zq8Lr2Vn5Tx1Wm4Ky7Hb3Jd6Gf9Cs0Ap

Every worker process loads the packs' models itself and opens the same index and audit log under the
data directory (`--data-dir`, default $RA_DATA_DIR): the index is read-only while serving and the audit
log is SQLite in WAL mode, which several processes write safely (or PostgreSQL with --audit-url, which
workers on several machines share). With --workers N a small supervisor
starts N processes, each listening on the port through its own SO_REUSEPORT socket (the kernel spreads
connections over them), starts a new one when one dies, and stops them all, gracefully, on SIGTERM or
Ctrl-C. The routes are in assistant/serving/api.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from assistant.config import AssistantConfig
from index.errors import SettingError, UserError

CONFIG_ENV = "RA_SERVE_CONFIG"  # how the parent hands its settings to the worker processes it starts
MIN_TOKEN_CHARS = 16


class TokensError(UserError, ValueError):
    """The tokens file cannot be used; the message names the file, the line and what to change."""


class ApiTokens:
    """Bearer tokens and the name each one is audited under. Tokens are kept only as SHA-256 digests, so a
    lookup compares digests (no timing signal about the token itself) and a memory dump shows no token."""

    def __init__(self, names: dict[str, str]):
        self._names = names  # sha256 hex of the token -> user name

    @classmethod
    def parse(cls, text: str, where: str = "tokens file") -> ApiTokens:
        names: dict[str, str] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, token = line.partition(":")
            if not sep:
                name, token = "", line
            name, token = name.strip(), token.strip()
            if sep and not name:
                raise TokensError(f"{where}, line {number}: a name goes before the colon ('name:token')")
            if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
                raise TokensError(f"{where}, line {number}: a token is at least {MIN_TOKEN_CHARS} characters "
                                  "without spaces (make one with: python -c 'import secrets; print(secrets.token_hex(16))')")
            digest = hashlib.sha256(token.encode()).hexdigest()
            if digest in names:
                raise TokensError(f"{where}, line {number}: this token is already on an earlier line")
            names[digest] = name or f"token:{digest[:8]}"
        if not names:
            raise TokensError(f"{where} holds no token: add lines 'name:token' (one per client)")
        return cls(names)

    @classmethod
    def load(cls, path: str | Path) -> ApiTokens:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokensError(f"cannot read the tokens file {path}: {exc}") from exc
        return cls.parse(text, str(path))

    def user(self, token: str) -> str | None:
        """The name a token is audited under, or None when it is not one of ours."""
        return self._names.get(hashlib.sha256(token.encode()).hexdigest())

    def __len__(self) -> int:
        return len(self._names)


@dataclass
class ServeConfig:
    """How the API runs; `assistant` holds the answer settings shared by every pack."""

    tokens_file: str
    domains: list[str]  # pack names or pack directories; the request's `model` picks one
    assistant: AssistantConfig = field(default_factory=AssistantConfig)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1  # processes sharing the port, each with its own models
    threads: int = 8  # answers worked on at once in one process (the LLM still writes one at a time)
    max_pending: int = 64  # requests in one process, running or waiting; more are refused with 503
    max_request_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if not self.domains:
            raise SettingError("--domain: name at least one pack to serve")
        if not 1 <= self.port <= 65535:
            raise SettingError(f"--port must be between 1 and 65535 (got {self.port})")
        if self.workers < 1 or self.threads < 1:
            raise SettingError("--workers and --threads must be at least 1")
        if self.max_pending < self.threads:
            raise SettingError(f"--max-pending ({self.max_pending}) must be at least --threads ({self.threads})")
        if self.max_request_bytes < 1024:
            raise SettingError("--max-request-kb must be at least 1")
        if isinstance(self.assistant, dict):
            self.assistant = AssistantConfig(**self.assistant)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))


def worker_app():
    """uvicorn's app factory in each worker process: the settings come from the parent through one variable."""
    from assistant.serving.api import create_app
    from index.quiet import quiet_libraries

    quiet_libraries()
    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise RuntimeError(f"{CONFIG_ENV} is not set: start the API with `python -m assistant serve`")
    return create_app(ServeConfig.from_json(text))


def check(config: ServeConfig) -> ApiTokens:
    """What can be wrong before any model loads (tokens, packs, the model spec): one clear error now,
    rather than workers that never become ready."""
    from assistant.llm.backends import choose_backend
    from assistant.llm.models import resolve_llm_dir
    from assistant.packs import load_pack

    tokens = ApiTokens.load(config.tokens_file)
    mode = Path(config.tokens_file).stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"warning: {config.tokens_file} can be read by other users of this machine: chmod 600 it",
              file=sys.stderr)
    names: dict[str, str] = {}
    for spec in config.domains:
        name = load_pack(spec).name
        if name in names:
            raise SettingError(f"--domain {spec} and --domain {names[name]} are both packs named '{name}'")
        names[name] = spec
    a = config.assistant
    if choose_backend(a.backend, model=a.model, adapter=a.adapter, device=a.device, base_url=a.base_url) != "openai":
        resolve_llm_dir(a.model, convert=False)
    return tokens


def serve(config: ServeConfig) -> int:
    tokens = check(config)
    os.environ[CONFIG_ENV] = config.to_json()  # read by worker_app() in every process started below
    print(f"serving {', '.join(config.domains)} on http://{config.host}:{config.port}/v1 "
          f"({config.workers} worker process(es), {len(tokens)} token(s)); /readyz answers 200 once the "
          "models are loaded", file=sys.stderr, flush=True)
    if config.workers == 1:
        import uvicorn

        uvicorn.run("assistant.serving.serve:worker_app", factory=True, host=config.host, port=config.port,
                    timeout_graceful_shutdown=GRACE_S, log_level="info")
        return 0
    if not hasattr(socket, "SO_REUSEPORT"):
        raise SettingError("--workers above 1 needs SO_REUSEPORT (Linux): run one process per port behind "
                         "a load balancer instead")
    return supervise(config)


GRACE_S = 60  # seconds a stopping worker gives the answers in progress


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket in the port's SO_REUSEPORT group: with one per worker the kernel spreads new connections
    over the workers. (uvicorn's own --workers shares one socket, and then whichever process wakes first
    accepts most of a burst.)"""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def run_worker(host: str, port: int, parent: int) -> None:
    """One worker process of `serve --workers N` (started by supervise() in a session of its own, so that
    Ctrl-C reaches only the supervisor): its own socket, uvicorn, and the app from worker_app()."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    def follow_parent() -> None:  # a supervisor killed outright must not leave workers serving
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=follow_parent, daemon=True).start()
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
    config = uvicorn.Config("assistant.serving.serve:worker_app", factory=True, host=host, port=port,
                            timeout_graceful_shutdown=GRACE_S, log_level="info")
    uvicorn.Server(config).run(sockets=[sock])


def worker_environment(workers: int) -> dict[str, str]:
    """The environment of each worker: the machine's cores shared out among the workers' llama.cpp threads
    (`RA_LLAMA_THREADS`, unless set already). Each worker running llama.cpp on every core made them wait for
    each other (llama.cpp's threads spin while they wait)."""
    from assistant.llm.llamacpp import available_cores

    env = dict(os.environ)
    if workers > 1 and not env.get("RA_LLAMA_THREADS", "").strip():
        env["RA_LLAMA_THREADS"] = str(max(1, available_cores() // workers))
    return env


def supervise(config: ServeConfig) -> int:
    """Start the worker processes, start a new one for any that dies, stop them all on SIGTERM or Ctrl-C."""
    import subprocess

    from uvicorn.config import STARTUP_FAILURE

    try:
        listening_socket(config.host, config.port).close()  # the port is free for us: fail here if not
    except OSError as exc:
        raise SettingError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    code = f"from assistant.serving.serve import run_worker; run_worker({config.host!r}, {config.port}, {os.getpid()})"

    env = worker_environment(config.workers)

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", code], start_new_session=True, env=env)

    workers = [start() for _ in range(config.workers)]
    status = 0
    while not stop.wait(0.5):
        for i, proc in enumerate(workers):
            if proc.poll() is None:
                continue
            if proc.returncode == STARTUP_FAILURE:
                print(f"error: worker {proc.pid} could not start (its log is above); stopping",
                      file=sys.stderr, flush=True)
                status = 1
                stop.set()
                break
            print(f"worker {proc.pid} exited with code {proc.returncode}; starting another", file=sys.stderr,
                  flush=True)
            workers[i] = start()
    for proc in workers:
        if proc.poll() is None:
            proc.terminate()
    for proc in workers:
        try:
            proc.wait(GRACE_S + 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return status
