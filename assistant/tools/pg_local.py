"""A throwaway PostgreSQL server for the tests and `make bench-serve`: initdb + pg_ctl on a temporary
directory, a free loopback port, its unix socket in the same directory; stopped and deleted at the end.
Not for production: fsync is off and every local connection is trusted.

    server = PostgresServer.start()          # PostgresUnavailable when no server binaries are found
    url = server.new_database()              # postgresql://postgres@127.0.0.1:PORT/audit_1, empty
    server.stop()

The binaries come from $PATH or the distribution's /usr/lib/postgresql/<version>/bin (newest first).
initdb refuses to run as root, so as root the server runs as the `postgres` user, owner of the directory.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from assistant.tools import free_port

_NEEDED = ("initdb", "pg_ctl", "postgres")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bin_dir() -> Path:
    """The folder holding initdb, pg_ctl and postgres."""
    candidates = []
    if found := shutil.which("pg_ctl"):
        candidates.append(Path(found).parent)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True,
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    candidates += [*versions, Path("/usr/local/pgsql/bin")]
    for folder in candidates:
        if all((folder / name).is_file() for name in _NEEDED):
            return folder
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl, postgres) on $PATH or in "
                              "/usr/lib/postgresql/*/bin: install the distribution's postgresql package "
                              "to run the PostgreSQL audit tests")



class PostgresServer:
    def __init__(self, bin_dir: Path, root: Path, port: int, run_as: str | None):
        self.bin_dir, self.root, self.port, self.run_as = bin_dir, root, port, run_as
        self._names = itertools.count(1)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @classmethod
    def start(cls) -> PostgresServer:
        bin_dir = find_bin_dir()
        run_as = "postgres" if os.geteuid() == 0 else None
        # /tmp: short (a socket path has a length limit) and open to the postgres user ($TMPDIR may not be)
        root = Path(tempfile.mkdtemp(prefix="ra-pg-", dir="/tmp" if run_as else None))
        if run_as:
            try:
                account = pwd.getpwnam(run_as)
            except KeyError as exc:
                shutil.rmtree(root)
                raise RuntimeError("running as root, and initdb refuses root: the server runs as "
                                   "the `postgres` user, which this machine lacks (useradd postgres)") from exc
            os.chown(root, account.pw_uid, account.pw_gid)
        server = None
        try:
            server = cls(bin_dir, root, free_port(), run_as)
            server._run("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--no-locale", "--no-sync")
            for _ in range(3):  # another process may take the free port before the server binds it
                if server._pg_ctl_start():
                    return server
                server.port = free_port()
            raise RuntimeError(f"PostgreSQL did not start; its log:\n{server.log()}")
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / program), *args]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode and program == "initdb":
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def _pg_ctl_start(self) -> bool:
        # fsync off: the tests check what concurrent clients write, not power loss (the server's own job)
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                   "-c fsync=off -c max_connections=50 -c shared_buffers=16MB")
        done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                         "-o", options, "start")
        return done.returncode == 0

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser, outside a transaction (CREATE DATABASE, ALTER ROLE, ...)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = f"audit_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
