"""Uploads parsed in a child process: capped in memory and time, and the server's threads keep running."""

from __future__ import annotations

import os
import threading
import time

from index.ingest import IngestError
from index.limits import MB, IngestLimits
from index.sandbox import KILL_GRACE_S, ParserSandbox
from tests.hostile import docx_bomb, wide_xlsx


def test_isolated_parser_refuses_bombs_with_bounded_memory_and_keeps_serving(tmp_path):
    bomb = docx_bomb(tmp_path / "bomb.docx", inflated_mb=8)
    sheet = wide_xlsx(tmp_path / "wide.xlsx")
    big = tmp_path / "big.txt"
    big.write_bytes(b"plain words " * (4 * MB))  # 48 MB of text: more than the 64 MB cap once decoded
    good = tmp_path / "good.md"
    good.write_text("# Hours\n\nOpen 9 to 5.\n")
    with ParserSandbox(IngestLimits(max_entry_bytes=2 * MB, max_memory_bytes=64 * MB)) as sandbox:
        out = sandbox.load_many([bomb, sheet, big, good])
        assert out[bomb].limit == "max_entry_bytes" and out[sheet].limit == "max_columns"
        assert out[big].limit == "max_memory_bytes" and "max_memory_bytes = 64.0 MB" in str(out[big])
        assert out[good].sections[0].text == "Open 9 to 5."  # the child (or its replacement) still parses
        assert sandbox.peak_rss_bytes < 200 * MB  # ~65 MB at rest, +48 MB read before the cap stops it
        assert sandbox.child_pids and os.getpid() not in sandbox.child_pids


def test_a_parse_past_its_time_is_killed_and_never_holds_up_other_threads(tmp_path):
    page = tmp_path / "huge.html"
    page.write_text("<html><body>" + "".join(f"<p>item {i} <b>b</b> <i>i</i></p>" for i in range(150_000))
                    + "</body></html>")
    gaps: list[float] = []
    stop = threading.Event()

    def ticker() -> None:  # stands in for another user's answer stream
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    warm = tmp_path / "warm.md"
    warm.write_text("# Warm\n\nup\n")
    with ParserSandbox(IngestLimits(max_seconds=0.5)) as sandbox:
        sandbox.load(warm)  # the child starts before the clock runs
        thread = threading.Thread(target=ticker)
        thread.start()
        started = time.perf_counter()
        outcome = sandbox.load_many([page])[page]
        elapsed = time.perf_counter() - started
        stop.set()
        thread.join()
    assert isinstance(outcome, IngestError) and outcome.limit == "max_seconds", outcome
    assert "parse time" in str(outcome)
    assert elapsed < 0.5 + KILL_GRACE_S + 1.0
    assert max(gaps) < 0.1, f"another thread waited {max(gaps):.3f} s"
