"""The index in Milvus, against a real Milvus Lite database in a temporary folder (index/milvus_store.py).

    .venv/bin/python -m pytest tests/test_milvus.py

Same documents, same embedder and the same searcher as the FAISS tests: build, query in every mode, add,
remove, update by content hash, the errors a user meets, and the assistant answering from Milvus.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from index.milvus_store import (
    MilvusLocation,
    MilvusStore,
    MilvusStoreError,
    location_for,
    write_pointer,
)
from index.search import Searcher
from index.store import (
    IndexError_,
    IndexStore,
    add_to_index,
    build_index,
    remove_from_index,
    update_index,
)
from tests.conftest import ROOT, run_cli

# index.milvus_store imports pymilvus only when it connects: the module loads without it, the tests need it
pytest.importorskip("pymilvus", reason="pymilvus is not installed: pip install -e \".[milvus]\" (make install does)")

BANK_DOCS = ROOT / "assistant" / "packs" / "bank" / "docs"
FIRST = ["debit_cards.md", "lost_stolen_cards.md", "direct_deposit_routing_number.md", "checking_accounts.md"]
QUESTIONS = [  # (question, the document that answers it)
    ("What routing number do I give my employer for direct deposit?", "direct_deposit_routing_number.md"),
    ("I lost my debit card, what should I do?", "lost_stolen_cards.md"),
    ("What is the monthly fee on a checking account?", "checking_accounts.md"),
]


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    for name in FIRST:
        shutil.copy(BANK_DOCS / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory, docs, embedder):
    """One Milvus Lite collection and one FAISS index built from the same four documents."""
    where = tmp_path_factory.mktemp("milvus")
    location = MilvusLocation(uri=str(where / "milvus.db"), collection="bank_docs")
    report = build_index([str(docs)], location, embedder, progress=False)
    faiss_dir = where / "faiss"
    build_index([str(docs)], faiss_dir, embedder, progress=False)
    return location, report, faiss_dir


def test_build_stores_chunks_vectors_and_bm25_in_the_collection(built):
    location, report, faiss_dir = built
    assert report.files_indexed == len(FIRST) and report.chunks == report.chunks_embedded > 0
    store = IndexStore.open(location, embedder="bundled")
    assert isinstance(store, MilvusStore)
    faiss = IndexStore.open(faiss_dir)
    assert len(store) == len(faiss) == report.chunks
    assert {f["source"] for f in store.files().values()} == set(FIRST)
    assert store.manifest.screened_by  # screened for prompt injection as it was written
    assert store.content_hashes() == faiss.content_hashes()


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_each_mode_finds_the_answering_document(built, embedder, mode):
    location, _, _ = built
    searcher = Searcher(IndexStore.open(location), embedder)
    for question, source in QUESTIONS:
        hits = searcher.search(question, k=3, mode=mode)
        # in the top 3: "debit card" puts debit_cards.md first for a lost card in bm25 and hybrid, on FAISS too
        assert source in [h.source for h in hits], (mode, question, [h.source for h in hits])
        assert all(0 < h.dense_score <= 1 for h in hits)  # every hit carries its cosine, as on FAISS
    if mode == "bm25":
        assert hits[0].bm25_score > 0


def test_dense_results_match_faiss(built, embedder):
    """Exact search over the same vectors: the same passages with the same cosines."""
    location, _, faiss_dir = built
    milvus = Searcher(IndexStore.open(location), embedder)
    faiss = Searcher(IndexStore.open(faiss_dir), embedder)
    for question, _ in QUESTIONS:
        ours = milvus.search(question, k=5, mode="dense")
        theirs = faiss.search(question, k=5, mode="dense")
        assert [h.chunk_id for h in ours] == [h.chunk_id for h in theirs]
        assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], abs=1e-3)


def test_copy_from_faiss_keeps_vectors_and_records(built, embedder, tmp_path):
    """A FAISS index moved into Milvus (what the bench compares): same files, marks and dense results."""
    from index.milvus_store import copy_from

    _, _, faiss_dir = built
    faiss = IndexStore.open(faiss_dir)
    location = MilvusLocation(uri=str(tmp_path / "copy.db"), collection="copied")
    copy_from(faiss, location)
    copied = IndexStore.open(location)
    assert len(copied) == len(faiss) and copied.files() == faiss.files()
    assert copied.manifest.screened_by == faiss.manifest.screened_by
    assert copied.quarantined() == faiss.quarantined()
    question = QUESTIONS[0][0]
    ours = Searcher(copied, embedder).search(question, k=5, mode="dense")
    theirs = Searcher(faiss, embedder).search(question, k=5, mode="dense")
    assert [h.chunk_id for h in ours] == [h.chunk_id for h in theirs]


def test_min_score_applies_to_the_cosine_in_every_mode(built, embedder):
    location, _, _ = built
    searcher = Searcher(IndexStore.open(location), embedder)
    for mode in ("dense", "bm25", "hybrid"):
        assert searcher.search("What is the weather like on Mars?", k=5, mode=mode, min_score=0.6) == []


def test_add_update_by_content_hash_and_remove(tmp_path, docs, embedder):
    location = MilvusLocation(uri=str(tmp_path / "m.db"), collection="updates")
    folder = tmp_path / "docs"
    shutil.copytree(docs, folder)
    first = build_index([str(folder)], location, embedder, progress=False)

    again = build_index([str(folder)], location, embedder, progress=False)
    assert (again.files_reused, again.files_indexed, again.chunks_embedded) == (len(FIRST), 0, 0)
    assert again.chunks == first.chunks

    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(BANK_DOCS / "credit_cards.html", extra / "credit_cards.html")
    added = add_to_index(location, [str(extra)], embedder, progress=False)
    store = IndexStore.open(location)
    new = len(store.rows_for_path(str((extra / "credit_cards.html").resolve())))
    assert added.files_indexed == 1 and added.chunks_embedded == new > 0
    assert added.chunks == first.chunks + new == len(store)
    hits = Searcher(store, embedder).search("How many points per dollar does the Travel Rewards Visa earn on airfare?", k=3)
    assert hits[0].source == "credit_cards.html"

    # one paragraph appended to a document: only the chunks that changed are embedded again
    changed = folder / "checking_accounts.md"
    before = len(store.rows_for_path(str(changed.resolve())))
    changed.write_text(changed.read_text() + "\n\n## Branch coffee\n\nEvery branch serves free coffee on Fridays.\n")
    updated = add_to_index(location, [str(folder)], embedder, progress=False)
    store = IndexStore.open(location)
    after = len(store.rows_for_path(str(changed.resolve())))
    assert updated.files_indexed == 1 and updated.files_reused == len(FIRST) - 1
    assert 0 < updated.chunks_embedded < after, (updated.chunks_embedded, before, after)
    assert len(store) == first.chunks + new - before + after
    hit = Searcher(store, embedder).search("Which day is there free coffee in the branch?", k=1, mode="bm25")[0]
    assert hit.source == "checking_accounts.md" and "coffee" in hit.text

    removed = remove_from_index(location, ["credit_cards.html"], embedder, progress=False)
    store = IndexStore.open(location)
    assert removed.files_removed == 1 and len(store) == removed.chunks == first.chunks - before + after
    assert "credit_cards.html" not in {f["source"] for f in store.files().values()}
    hits = Searcher(store, embedder).search("How many points per dollar does the Travel Rewards Visa earn on airfare?", k=5, mode="bm25")
    assert all(h.source != "credit_cards.html" for h in hits)
    with pytest.raises(IndexError_, match="nothing in the index matches"):
        remove_from_index(location, ["credit_cards.html"], embedder, progress=False)


def test_searcher_follows_another_writer(tmp_path, docs, embedder):
    """A worker's Searcher sees a document another process added, as with FAISS versions."""
    location = MilvusLocation(uri=str(tmp_path / "m.db"), collection="shared")
    build_index([str(docs)], location, embedder, progress=False)
    searcher = Searcher(IndexStore.open(location), embedder)
    held = searcher.store.version
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(BANK_DOCS / "credit_cards.html", extra / "credit_cards.html")
    add_to_index(location, [str(extra)], embedder, progress=False)
    assert searcher.refresh().version != held
    assert searcher.search("How many points per dollar does the Travel Rewards Visa earn on airfare?", k=1)[0].source == "credit_cards.html"


def test_private_upload_is_searched_only_by_its_session(tmp_path, docs, embedder):
    from index.store import UploadRecord

    location = MilvusLocation(uri=str(tmp_path / "m.db"), collection="uploads")
    build_index([str(docs)], location, embedder, progress=False)
    upload = tmp_path / "up" / "fees.md"
    upload.parent.mkdir()
    upload.write_text("# Overdraft coupons\n\nThe overdraft coupon waives one overdraft fee per year.\n")
    key = str(upload.resolve())
    record = UploadRecord(path=key, source="uploads/fees.md", user=None, session="s1", uploaded_at=0.0,
                          status="private")
    update_index(location, embedder, None, add=[str(upload.parent)], keep_others=True, uploads={key: record},
                 progress=False)
    searcher = Searcher(IndexStore.open(location), embedder)
    question = "overdraft coupon waives a fee"
    assert searcher.search(question, k=1, mode="bm25", session="s1")[0].source == "fees.md"
    for mode in ("dense", "bm25", "hybrid"):
        assert all(h.source != "fees.md" for h in searcher.search(question, k=5, mode=mode, session="s2"))


def test_missing_collection_is_a_one_line_error(built):
    location, _, _ = built
    missing = MilvusLocation(uri=location.uri, collection="not_built")
    assert not IndexStore.exists(missing)
    with pytest.raises(MilvusStoreError, match="no index in Milvus collection 'not_built'.*python -m index build"):
        IndexStore.open(missing)
    # a Lite file is held by one process at a time: the CLI opens its own
    other = str(Path(location.uri).with_name("other.db"))
    result = run_cli("index", "query", "not_built", "fees", "--store", "milvus", "--milvus-uri", other)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr, result.stderr
    assert "no index in Milvus collection 'not_built'" in result.stderr


@pytest.mark.parametrize(("uri", "says"), [
    ("http://127.0.0.1:1", "cannot connect to Milvus at http://127.0.0.1:1"),
    ("/no/such/folder/m.db", "the file's folder must exist"),
    ("milvus.sqlite", "ends in .db"),
    ("ftp://host:19530", "use http://HOST:PORT"),
])
def test_bad_uri_is_a_one_line_error(uri, says):
    result = run_cli("index", "stats", "bank", "--store", "milvus", "--milvus-uri", uri)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr, result.stderr
    assert says in result.stderr


def test_store_milvus_without_uri_says_which_flag():
    result = run_cli("index", "stats", "bank", "--store", "milvus", env={"RA_MILVUS_URI": ""})
    assert result.returncode == 2 and "--milvus-uri" in result.stderr and "Traceback" not in result.stderr


def test_dropped_connection_is_a_one_line_error(tmp_path, docs, embedder):
    """The engine goes away under an open store (Milvus Lite's server is stopped, as a server crash would)."""
    from milvus_lite.server_manager import server_manager_instance

    location = MilvusLocation(uri=str(tmp_path / "gone.db"), collection="gone")
    build_index([str(docs)], location, embedder, progress=False)
    searcher = Searcher(IndexStore.open(location), embedder)
    assert searcher.search("debit card", k=1)
    server_manager_instance.release_server(location.uri)
    with pytest.raises(MilvusStoreError, match="lost the connection to Milvus") as caught:
        searcher.search("debit card", k=1)
    assert "\n" not in str(caught.value)


def test_cli_build_add_query_eval_stats_remove(tmp_path, docs):
    db = tmp_path / "cli.db"
    flags = ["--store", "milvus", "--milvus-uri", str(db)]
    out = tmp_path / "indexes" / "bank"
    result = run_cli("index", "build", str(docs), "--out", str(out), "--quiet", *flags)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "milvus.json").read_text())["collection"] == "bank"

    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(BANK_DOCS / "credit_cards.html", extra / "credit_cards.html")
    result = run_cli("index", "add", "bank", str(extra), "--quiet", *flags)  # by collection name, no pointer
    assert result.returncode == 0 and "indexed 1 file(s)" in result.stdout, result.stderr

    result = run_cli("index", "query", str(out), "How many points per dollar does the Travel Rewards Visa earn on airfare?", "--json", "-k", "2")
    assert result.returncode == 0, result.stderr  # the pointer in the folder is enough
    assert json.loads(result.stdout)["hits"][0]["source"] == "credit_cards.html"

    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps({"question": q, "relevant": [s]}) for q, s in QUESTIONS))
    result = run_cli("index", "eval", str(out), "--questions", str(questions), "--json", "--modes", "dense,bm25,hybrid")
    assert result.returncode == 0, result.stderr
    scores = {r["mode"]: r["ndcg@10"] for r in json.loads(result.stdout)["results"]}
    # three questions on five documents (bm25 ranks debit_cards.md first for a lost card): the wiring, not the
    # quality, which `make bench-index STORE=milvus` measures on MedQuAD
    assert set(scores) == {"dense", "bm25", "hybrid"} and scores["dense"] == 1.0 and min(scores.values()) > 0.5, scores

    result = run_cli("index", "stats", "bank", *flags)
    assert result.returncode == 0 and json.loads(result.stdout)["files"] == len(FIRST) + 1
    result = run_cli("index", "remove", str(out), "credit_cards.html")
    assert result.returncode == 0 and "removed 1" in result.stdout, result.stderr


def test_location_rules():
    assert location_for("data/indexes/my-docs", "http://h:19530").collection == "my_docs"
    assert Path(location_for("x", "rel/m.db").uri).is_absolute()
    with pytest.raises(MilvusStoreError, match="collection name"):
        MilvusLocation(uri="http://h:19530", collection="9 bad")


def test_assistant_answers_from_the_pack_on_milvus(tmp_path):
    """The assistant's data folder points at Milvus: it builds the pack there and answers with a citation."""
    from assistant import Assistant, AssistantConfig

    index_dir = tmp_path / "data" / "indexes" / "bank"
    write_pointer(index_dir, MilvusLocation(uri=str(tmp_path / "assistant.db"), collection="bank"))
    bot = Assistant(AssistantConfig(domain="bank", data_dir=tmp_path / "data", answer_mode="quote"))
    assert isinstance(bot.searcher.store, MilvusStore) and len(bot.searcher.store) > 100
    assert not (index_dir / "CURRENT").exists()  # no FAISS files: the chunks are in the collection
    response = bot.respond("What routing number do I give my employer for direct deposit?")
    cited = [s for s in response.sources if s.cited]
    assert response.grounded and cited, response.answer
    assert any("021555013" in s.text for s in cited), (response.answer, cited)
