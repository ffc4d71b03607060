"""Parse untrusted files in a child process, under a memory cap and a wall-clock timeout.

    from index.sandbox import ParserSandbox
    with ParserSandbox(IngestLimits(max_seconds=30)) as sandbox:
        outcome = sandbox.load_many(paths)      # {path: Document, or the IngestError saying why not}

A hostile upload then costs a child process, not the server: the child's address space is capped
(RLIMIT_AS at `IngestLimits.max_memory_bytes` above what it holds after start-up), a parse still running
`KILL_GRACE_S` after `max_seconds` is killed, and while a file is parsed the server's own threads (other
users' answer streams) never wait for the GIL. One child serves a batch of files; one that is killed or
dies is replaced for the next file.

The child is this module run as `python -m index.sandbox` (started here, not by hand). It reads the
limits and then one request per line on stdin and answers one JSON line each on its original stdout:
JSON and never pickle, so a child subverted by a file cannot run code in the server.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from index.ingest import Document, IngestError, Section, load_document
from index.limits import IngestLimits

KILL_GRACE_S = 2.0  # the child stops itself at max_seconds between pages and rows; this covers one long call
START_TIMEOUT_S = 60.0
_ROOT = Path(__file__).resolve().parent.parent  # where `index` is importable from


class ParserSandbox:
    """A child process that parses files for this process; thread-safe, one file at a time."""

    def __init__(self, limits: IngestLimits | None = None):
        self.limits = limits or IngestLimits()
        self.peak_rss_bytes = 0  # the largest peak resident memory a child reported (for measurements)
        self.child_pids: list[int] = []
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> ParserSandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def load(self, path: str | Path) -> Document:
        """One file's Document; raises IngestError with the reason it was refused."""
        outcome = self.load_many([path])[Path(path)]
        if isinstance(outcome, IngestError):
            raise outcome
        return outcome

    def load_many(self, paths: list[str | Path]) -> dict[Path, Document | IngestError]:
        with self._lock:
            return {Path(p): self._parse(Path(p)) for p in paths}

    def close(self) -> None:
        with self._lock:
            self._stop()

    # -------------------------------------------------------------------------------------------- parent

    def _parse(self, path: Path) -> Document | IngestError:
        try:
            proc = self._child()
        except OSError as exc:
            raise RuntimeError(f"cannot start the isolated parser ({exc})") from exc
        try:
            proc.stdin.write((json.dumps({"path": str(path.resolve())}) + "\n").encode())
            proc.stdin.flush()
        except BrokenPipeError:
            return self._died()
        line = self._read_line(proc, self.limits.max_seconds + KILL_GRACE_S, self._reply_cap())
        if line is None:
            self._stop()
            lim = self.limits
            return IngestError(f"refused: parse time: more than {lim.max_seconds:g} s "
                               f"(limit {lim.describe('max_seconds')})", limit="max_seconds")
        if not line:
            return self._died()
        reply = json.loads(line)
        self.peak_rss_bytes = max(self.peak_rss_bytes, int(reply.get("peak_rss_kb", 0)) * 1024)
        if not reply.get("ok"):
            return IngestError(str(reply.get("reason")), limit=reply.get("limit"))
        return _decode(reply["document"])

    def _reply_cap(self) -> int:
        # a Document is at most max_text_chars of text; JSON escapes a character in up to 12 bytes
        return 12 * self.limits.max_text_chars + (1 << 20)

    def _child(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
        proc = subprocess.Popen([sys.executable, "-m", "index.sandbox"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0, env=env)
        self._proc = proc
        proc.stdin.write((json.dumps(asdict(self.limits)) + "\n").encode())
        proc.stdin.flush()
        ready = self._read_line(proc, START_TIMEOUT_S, 1 << 16)
        if not ready:
            self._stop()
            raise OSError("the parser process did not start")
        self.child_pids.append(json.loads(ready)["ready"])
        return proc

    @staticmethod
    def _read_line(proc: subprocess.Popen, timeout: float, cap: int) -> bytes | None:
        """One reply line; b"" when the child ended, None when it did not answer in time (or too much)."""
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        data = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], left)  # waits without the GIL
            if not readable:
                continue
            piece = os.read(fd, 1 << 20)
            if not piece:
                return b""
            data += piece
            if data.endswith(b"\n"):
                return bytes(data)
            if len(data) > cap:
                return None

    def _died(self) -> IngestError:
        code = self._stop()
        how = (f"signal {signal.Signals(-code).name}" if code is not None and code < 0 and -code in
               signal.valid_signals() else f"exit code {code}")
        lim = self.limits
        return IngestError(f"refused: the parser process ended ({how}); a file that needs more than "
                           f"{lim.describe('max_memory_bytes')} of memory ends it this way",
                           limit="max_memory_bytes")

    def _stop(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
        for stream in (proc.stdin, proc.stdout):
            stream.close()
        return code


def _encode(doc: Document) -> dict:
    return {"source": doc.source, "title": doc.title,
            "sections": [{"text": s.text, "headings": s.headings, "page": s.page} for s in doc.sections]}


def _decode(data: dict) -> Document:
    sections = [Section(text=str(s["text"]), headings=[str(h) for h in s["headings"]],
                        page=int(s["page"]) if s["page"] is not None else None) for s in data["sections"]]
    return Document(source=str(data["source"]), title=str(data["title"]), sections=sections)


# --------------------------------------------------------------------------------------------------- child

def _status_kb(field: str) -> int:
    """A size from /proc/self/status, in kB (VmSize: mapped now; VmHWM: peak resident since exec)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def _cap_memory(budget: int) -> None:
    """Limit the address space to what the process maps now plus `budget` bytes."""
    mapped = _status_kb("VmSize") * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = mapped + budget if hard == resource.RLIM_INFINITY else min(hard, mapped + budget)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _serve() -> None:
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the replies
    limits = IngestLimits(**json.loads(sys.stdin.readline()))
    import bs4  # noqa: F401  (every parser loaded before the cap: imports are not the file's cost)
    import charset_normalizer  # noqa: F401
    import docx  # noqa: F401
    import openpyxl  # noqa: F401
    import pypdf  # noqa: F401

    _cap_memory(limits.max_memory_bytes)
    replies.write((json.dumps({"ready": os.getpid()}) + "\n").encode())
    for line in sys.stdin:
        path = json.loads(line)["path"]
        try:
            reply = {"ok": True, "document": _encode(load_document(path, limits))}
            data = json.dumps(reply)
        except IngestError as exc:
            data = json.dumps({"ok": False, "reason": str(exc), "limit": exc.limit})
        except MemoryError:
            data = json.dumps({"ok": False, "limit": "max_memory_bytes", "reason":
                               f"refused: parsing needed more memory than allowed "
                               f"(limit {limits.describe('max_memory_bytes')})"})
        peak = _status_kb("VmHWM")  # not ru_maxrss: that can still hold the forking parent's peak
        replies.write((data[:-1] + f', "peak_rss_kb": {peak}}}\n').encode())


if __name__ == "__main__":
    _serve()
