"""Offline tools, never imported at run time: evaluation, fitting of shipped weights, benchmarks, a throwaway PostgreSQL."""

import socket


def free_port() -> int:
    """A loopback port no one listens on now (for the servers the benchmarks and tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc, grace_s: float = 60) -> None:
    """End a server process: SIGTERM, `grace_s` seconds to finish, then SIGKILL."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
