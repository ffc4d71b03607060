"""Uploads on a real index on disk: hostile files refused without losing anything, every upload attributed,
private to its session until an administrator approves it (index/uploads.py, `python -m index approve`)."""

from __future__ import annotations

import json
import shutil

import pytest

from assistant.compliance.audit import AuditLog
from index.limits import MB, IngestLimits
from index.search import Searcher
from index.store import IndexError_, IndexStore, build_index
from index.uploads import (
    Uploader,
    UploadSettings,
    add_uploads,
    approve_uploads,
    list_uploads,
    reject_uploads,
)
from tests.conftest import run_cli
from tests.hostile import docx_bomb, docx_with_entries, wide_xlsx

ZEPHYR = "When do branches close on Zephyr Day?"


@pytest.fixture(scope="module")
def base_index(tmp_path_factory, embedder):
    """A small bank index, built once; each test works on its own copy."""
    root = tmp_path_factory.mktemp("bank")
    docs = root / "docs"
    docs.mkdir()
    (docs / "hours.md").write_text("# Branch hours\n\nBranches open 9am to 5pm on weekdays.\n")
    (docs / "wires.md").write_text("# Wire transfers\n\nAn international wire costs $45.\n")
    build_index([str(docs)], root / "indexes" / "bank", embedder, progress=False)
    return root


@pytest.fixture
def data(base_index, tmp_path):
    """DATA/indexes/bank (the assistant's layout), DATA/uploads/bank, and a folder of files to upload."""
    shutil.copytree(base_index / "indexes", tmp_path / "indexes")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "zephyr.md").write_text("# Zephyr Day\n\nOn Zephyr Day all branches close at noon.\n")
    return tmp_path


def paths(data):
    return data / "indexes" / "bank", data / "uploads" / "bank"


def sources(searcher: Searcher, session: str | None = None) -> list[str]:
    return [h.source for h in searcher.search(ZEPHYR, k=2, session=session)]


def test_hostile_uploads_are_refused_and_the_index_keeps_what_it_had(data, embedder, tmp_path):
    index_dir, shared = paths(data)
    before = IndexStore.open(index_dir)
    hostile = [docx_bomb(tmp_path / "bomb.docx", inflated_mb=8), wide_xlsx(tmp_path / "wide.xlsx"),
               docx_with_entries(tmp_path / "crowded.docx", 2_100)]
    settings = UploadSettings(limits=IngestLimits(max_entry_bytes=2 * MB))
    report = add_uploads(index_dir, shared, hostile, embedder, Uploader("mallory", "s-m"), settings)
    reasons = dict(report.rejected)
    assert report.added == [] and set(reasons) == {"bomb.docx", "wide.xlsx", "crowded.docx"}
    assert "limit max_entry_bytes = 2.0 MB" in reasons["bomb.docx"]
    assert "declared columns: 16,384 (limit max_columns" in reasons["wide.xlsx"]
    assert "limit max_entries = 2,000" in reasons["crowded.docx"]
    after = IndexStore.open(index_dir)
    assert after.version == before.version and not shared.exists()  # nothing written, nothing lost
    assert [h.source for h in Searcher(after, embedder).search("international wire fee", k=1)] == ["wires.md"]
    # a good file in the same upload still goes in, and the earlier documents stay
    mixed = add_uploads(index_dir, shared, [hostile[0], data / "in" / "zephyr.md"], embedder,
                        Uploader("mallory", "s-m"), settings)
    assert mixed.added == ["zephyr.md"] and [n for n, _ in mixed.rejected] == ["bomb.docx"]
    assert sorted(IndexStore.open(index_dir).files()) == sorted([*before.files(), mixed.records[0].path])


def test_private_upload_is_searched_only_by_its_session_until_approved(data, embedder):
    index_dir, shared = paths(data)
    report = add_uploads(index_dir, shared, [data / "in" / "zephyr.md"], embedder, Uploader("alice", "s-alice"))
    assert report.private and report.added == ["zephyr.md"]
    record = report.records[0]
    assert (record.user, record.session, record.status, record.source) == ("alice", "s-alice", "private",
                                                                          "uploads/zephyr.md")
    assert record.uploaded_at > 0 and len(record.sha256) == 64
    assert ".private" in record.path and not (shared / "uploads").exists()

    searcher = Searcher(IndexStore.open(index_dir), embedder)
    assert sources(searcher, "s-alice")[0] == "uploads/zephyr.md"
    assert "uploads/zephyr.md" not in sources(searcher, "s-bob")
    assert "uploads/zephyr.md" not in sources(searcher)  # no session: the shared index only
    hidden = searcher.search("Zephyr Day noon", k=5, mode="bm25", session="s-bob")
    assert all(h.source != "uploads/zephyr.md" for h in hidden)  # not by keywords either
    assert "zephyr" not in searcher.store.speller().words  # nor as a word typos are corrected to

    listed = run_cli("index", "uploads", str(index_dir), "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["status"] == "private"
    approved = run_cli("index", "approve", str(index_dir), record.id[:6], "--by", "carol")
    assert approved.returncode == 0, approved.stderr
    assert "approved uploads/zephyr.md" in approved.stdout

    assert "uploads/zephyr.md" not in sources(searcher, "s-bob")  # a Searcher keeps its version ...
    searcher.refresh()  # ... until told to follow the live one
    assert sources(searcher, "s-bob")[0] == "uploads/zephyr.md" and sources(searcher)[0] == "uploads/zephyr.md"
    assert "zephyr" in searcher.store.speller().words
    [now] = list_uploads(index_dir)
    assert (now.status, now.approved_by, now.user) == ("shared", "carol", "alice")
    assert (shared / "uploads" / "zephyr.md").is_file() and not list((data / "uploads" / ".private").rglob("*.md"))
    events = AuditLog(data / "audit.sqlite").events("upload_approved")
    assert [(e["user"], e["session_id"], e["detail"]["uploaded_by"]) for e in events] == [("carol", "s-alice", "alice")]


def test_reject_drops_the_upload_and_its_file(data, embedder):
    index_dir, shared = paths(data)
    report = add_uploads(index_dir, shared, [data / "in" / "zephyr.md"], embedder, Uploader(None, "s-anon"))
    kept = report.records[0].path
    [dropped] = reject_uploads(index_dir, ["zephyr.md"], embedder)
    assert dropped.path == kept and list_uploads(index_dir) == []
    assert not any(data.joinpath("uploads").rglob("zephyr.md"))
    assert "uploads/zephyr.md" not in sources(Searcher(IndexStore.open(index_dir), embedder), "s-anon")


def test_a_pending_upload_stays_private_through_a_rebuild(data, embedder, base_index):
    index_dir, shared = paths(data)
    add_uploads(index_dir, shared, [data / "in" / "zephyr.md"], embedder, Uploader("alice", "s-alice"))
    build_index([str(base_index / "docs")], index_dir, embedder, progress=False)  # a full rebuild of the pack
    searcher = Searcher(IndexStore.open(index_dir), embedder)
    assert sources(searcher, "s-alice")[0] == "uploads/zephyr.md"
    assert "uploads/zephyr.md" not in sources(searcher, "s-bob")
    assert [r.status for r in list_uploads(index_dir)] == ["private"]


def test_shared_uploads_setting_restores_the_old_behaviour(data, embedder):
    index_dir, shared = paths(data)
    report = add_uploads(index_dir, shared, [data / "in" / "zephyr.md"], embedder, Uploader("alice", None),
                         UploadSettings(private=False))
    assert not report.private and report.records[0].status == "shared"
    assert (shared / "uploads" / "zephyr.md").is_file()
    assert sources(Searcher(IndexStore.open(index_dir), embedder), "s-anyone")[0] == "uploads/zephyr.md"
    with pytest.raises(ValueError, match="a private upload belongs to a session"):
        add_uploads(index_dir, shared, [data / "in" / "zephyr.md"], embedder, Uploader("alice", None))


def test_approval_does_not_replace_a_shared_document_unless_asked(data, embedder):
    index_dir, shared = paths(data)
    first = add_uploads(index_dir, shared, [data / "in" / "zephyr.md"], embedder, Uploader("a", "s-a"))
    (data / "in" / "zephyr.md").write_text("# Zephyr Day\n\nOn Zephyr Day branches stay open until 3pm.\n")
    second = add_uploads(index_dir, shared, [data / "in" / "zephyr.md"], embedder, Uploader("b", "s-b"))
    approve_uploads(index_dir, [first.records[0].id], embedder, by="carol")
    with pytest.raises(IndexError_, match="a shared document of that name exists"):
        approve_uploads(index_dir, [second.records[0].id], embedder, by="carol")
    [done] = approve_uploads(index_dir, [second.records[0].id], embedder, by="carol", replace_shared=True)
    assert done.user == "b" and "3pm" in (shared / "uploads" / "zephyr.md").read_text()
    assert [r.status for r in list_uploads(index_dir)] == ["shared"]
