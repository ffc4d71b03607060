"""The FAISS index on disk: build, query, incremental update, bad input, crash safety, embedder mismatch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from index.embed import ModelSpecError, resolve_embedder
from index.search import Searcher
from index.store import IndexError_, IndexStore, build_index
from tests.conftest import ROOT, run_cli

CORPUS = {
    "wires.md": "# Wire transfers\n\n## Fees\n\nAn outgoing international wire costs $45. Domestic wires cost $25.\n",
    "hours.txt": "Branch hours\n\nBranches open Monday to Friday 9:00 a.m. to 5:00 p.m. and Saturday until 1:00 p.m.\n",
    "cards.html": "<html><body><main><h1>Lost cards</h1><p>Freeze a lost card in the app or call the 24/7 card line "
                  "1-800-555-0143.</p></main></body></html>",
}


@pytest.fixture
def corpus(tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    for name, text in CORPUS.items():
        (src / name).write_text(text, encoding="utf-8")
    return src


def test_build_and_query_finds_the_right_document(corpus, tmp_path, embedder):
    report = build_index([str(corpus)], tmp_path / "idx", embedder, progress=False)
    assert report.files_indexed == 3 and not report.skipped
    searcher = Searcher(IndexStore.open(tmp_path / "idx"), embedder)
    for question, source in [("how much is an international wire", "wires.md"),
                             ("are you open on saturday", "hours.txt"),
                             ("I lost my debit card", "cards.html")]:
        hits = searcher.search(question, k=3)
        assert hits[0].source == source, (question, hits)
        assert hits[0].score > hits[-1].score or len(hits) == 1


def test_unrelated_query_is_below_threshold(corpus, tmp_path, embedder):
    from index.search import DEFAULT_MIN_SCORE

    build_index([str(corpus)], tmp_path / "idx", embedder, progress=False)
    searcher = Searcher(IndexStore.open(tmp_path / "idx"), embedder)
    assert searcher.search("who won the football world cup in 1998", k=3, min_score=DEFAULT_MIN_SCORE) == []


def test_incremental_rebuild_reembeds_only_changed_files(corpus, tmp_path, embedder):
    out = tmp_path / "idx"
    build_index([str(corpus)], out, embedder, progress=False)
    (corpus / "hours.txt").write_text("Branch hours\n\nBranches now open Sundays 10:00 a.m. to 2:00 p.m.\n")
    (corpus / "cards.html").unlink()
    report = build_index([str(corpus)], out, embedder, progress=False)
    assert (report.files_indexed, report.files_reused, report.files_removed) == (1, 1, 1)
    assert report.chunks_embedded == 1
    store = IndexStore.open(out)
    assert {f["source"] for f in store.files().values()} == {"wires.md", "hours.txt"}
    hits = Searcher(store, embedder).search("sunday opening hours", k=1)
    assert "Sundays" in hits[0].text


def test_bad_files_are_skipped_and_the_rest_indexed(corpus, tmp_path):
    (corpus / "empty.md").write_bytes(b"")
    (corpus / "binary.txt").write_bytes(b"\x00\xff" * 100)
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    result = run_cli("index", "build", str(corpus), "--out", str(tmp_path / "idx"), "--quiet")
    assert result.returncode == 1, result.stderr  # exit code says something was skipped
    assert "indexed 3 file(s)" in result.stdout
    for name in ("empty.md", "binary.txt", "broken.pdf"):
        assert f"skipped {name}:" in result.stdout
    stats = json.loads(run_cli("index", "stats", str(tmp_path / "idx")).stdout)
    assert stats["files"] == 3


def test_embedder_mismatch_is_a_clear_error(corpus, tmp_path, embedder):
    build_index([str(corpus)], tmp_path / "idx", embedder, progress=False)
    with pytest.raises(IndexError_, match="built with embedder 'bundled'"):
        IndexStore.open(tmp_path / "idx", embedder="sentence-transformers/all-mpnet-base-v2")


def test_unknown_embedder_spec(tmp_path):
    with pytest.raises(ModelSpecError, match="no-such-org/no-such-embedder"):
        resolve_embedder("no-such-org/no-such-embedder")
    result = run_cli("index", "build", str(tmp_path), "--out", str(tmp_path / "i"), "--embedder", str(tmp_path / "nope"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: embedder spec")


def test_killed_build_leaves_previous_index_loadable(corpus, tmp_path, embedder):
    out = tmp_path / "idx"
    build_index([str(corpus)], out, embedder, progress=False)
    before = IndexStore.open(out).version
    big = corpus / "big"
    big.mkdir()
    for i in range(400):
        (big / f"doc{i}.md").write_text(f"# Doc {i}\n\n" + f"Policy text {i} about fees and accounts. " * 40)
    proc = subprocess.Popen([sys.executable, "-m", "index", "build", str(corpus), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = ""
    while "Batches" not in seen:  # the embedding progress bar: the build is midway
        char = proc.stderr.read(1)
        assert char, f"build ended before it could be killed: {seen[-500:]}"
        seen += char
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    store = IndexStore.open(out)
    assert store.version == before
    assert Searcher(store, embedder).search("international wire fee", k=1)[0].source == "wires.md"
    # the next build cleans up and succeeds
    report = build_index([str(corpus)], out, embedder, progress=False)
    assert report.files_indexed == 400 and not list((out / "versions").glob(".tmp-*"))
