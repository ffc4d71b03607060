"""Shared fixtures: real bundled models, real FAISS indexes in temporary directories, no network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched from the hub in tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _name in ("RA_OPENAI_BASE_URL", "RA_BACKEND", "RA_MODEL", "RA_EMBEDDER", "RA_ADAPTER", "RA_DEVICE", "RA_DOMAIN",
              "RA_GGUF_QUANT", "RA_GROUNDING", "RA_ANSWER_MODE", "RA_AUDIT_URL", "RA_SETTINGS"):
    os.environ.pop(_name, None)  # a developer's own settings must not leak in

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if not cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def embedder():
    from index.embed import resolve_embedder

    return resolve_embedder("bundled")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Indexes for the whole session live here, built fresh from the packs."""
    return tmp_path_factory.mktemp("ra-data")


@pytest.fixture(scope="session")
def bank_bot(data_dir):
    from assistant import Assistant, AssistantConfig

    return Assistant(AssistantConfig(domain="bank", data_dir=data_dir))


@pytest.fixture(scope="session")
def hospital_bot(data_dir, bank_bot):
    from assistant import Assistant, AssistantConfig

    return Assistant(AssistantConfig(domain="hospital", data_dir=data_dir), generator=bank_bot.generator,
                     embedder=bank_bot.embedder)


def raw_bytes(paths) -> bytes:
    """The files' bytes, read by a child process. Reading a live SQLite file here would drop this process's
    locks on it: POSIX releases every lock a process holds on a file when any descriptor of that process to
    the file is closed, and another process (a CLI test) could then checkpoint the WAL under the open
    connections, which then fail with "disk I/O error"."""
    code = "import sys\nfor p in sys.argv[1:]:\n    sys.stdout.buffer.write(open(p, 'rb').read())"
    return subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, check=True).stdout


def run_cli(*args: str, env: dict | None = None, input: str | None = None, timeout: int = 600):
    """Run `python -m ...` the way a user would; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=full_env, input=input,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (assistant/tools/pg_local.py); skipped where no server binaries exist."""
    from assistant.tools.pg_local import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def audit_target(request, tmp_path):
    """Where an AuditLog writes, once per engine: a SQLite file, then an empty PostgreSQL database's URL."""
    if request.param == "sqlite":
        return tmp_path / "audit.sqlite"
    return request.getfixturevalue("postgres").new_database()
