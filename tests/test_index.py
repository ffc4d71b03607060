"""The FAISS index on disk: build, query, incremental update, bad input, crash safety, embedder mismatch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
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


def test_files_an_older_reader_cut_are_read_again(corpus, tmp_path, embedder):
    """Unchanged files are reused only when the same reader cut them: after a change to how documents are
    read (index.ingest.READER_VERSION), the next build reads every file again instead of keeping chunks
    the new reader would not make."""
    import json

    from index.ingest import READER_VERSION

    out = tmp_path / "idx"
    build_index([str(corpus)], out, embedder, progress=False)
    assert IndexStore.open(out).manifest.reader_version == READER_VERSION
    manifest = out / "versions" / (out / "CURRENT").read_text().strip() / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "reader_version": READER_VERSION - 1}))
    report = build_index([str(corpus)], out, embedder, progress=False)
    assert (report.files_indexed, report.files_reused) == (3, 0)
    assert IndexStore.open(out).manifest.reader_version == READER_VERSION
    again = build_index([str(corpus)], out, embedder, progress=False)
    assert (again.files_indexed, again.files_reused) == (0, 3)


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
    while "Batches" not in seen and "embedding" not in seen:  # the embedding progress bar: midway
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


def test_every_mode_finds_the_document_and_hits_carry_scores(corpus, tmp_path, embedder):
    build_index([str(corpus)], tmp_path / "idx", embedder, progress=False)
    store = IndexStore.open(tmp_path / "idx")
    assert (store.path / "bm25" / "vocab.json").is_file() and store.manifest.index_type == "flat"
    searcher = Searcher(store, embedder)
    for mode in ("bm25", "dense", "hybrid"):
        hits = searcher.search("international wire fee", k=3, mode=mode)
        assert hits[0].source == "wires.md", (mode, hits)
        assert hits[0].dense_score > 0.3
    hybrid = searcher.search("1-800-555-0143", k=3, mode="bm25")
    assert hybrid[0].source == "cards.html" and hybrid[0].bm25_score > 0
    assert searcher.search("zzzz qqqq", k=3, mode="bm25") == []
    with pytest.raises(ValueError, match="unknown search mode"):
        searcher.search("wire", mode="fuzzy")


def test_chinese_documents_are_searchable(tmp_path, embedder):
    src = tmp_path / "zh"
    src.mkdir()
    (src / "guahao.txt").write_text("门诊预约挂号须知\n\n预约挂号请携带身份证和医保卡。门诊时间为周一至周五上午八点到下午五点。",
                                    encoding="gb18030")
    (src / "parking.txt").write_text("停车服务\n\n医院地下停车场二十四小时开放，每小时收费五元。", encoding="utf-8")
    build_index([str(src)], tmp_path / "idx", embedder, progress=False)
    searcher = Searcher(IndexStore.open(tmp_path / "idx"), embedder)
    assert searcher.search("挂号需要带什么证件", k=1, mode="bm25")[0].source == "guahao.txt"
    assert searcher.search("停车收费", k=1, mode="hybrid")[0].source == "parking.txt"


def test_hnsw_index_matches_flat(corpus, tmp_path, embedder):
    build_index([str(corpus)], tmp_path / "hnsw", embedder, progress=False, index_type="hnsw")
    store = IndexStore.open(tmp_path / "hnsw")
    assert store.manifest.index_type == "hnsw"
    hits = Searcher(store, embedder).search("are you open on saturday", k=2, mode="dense")
    assert hits[0].source == "hours.txt"


def test_readers_keep_their_version_during_an_update(corpus, tmp_path, embedder):
    out = tmp_path / "idx"
    build_index([str(corpus)], out, embedder, progress=False)
    reader = Searcher(IndexStore.open(out), embedder)
    (corpus / "wires.md").write_text("# Wire transfers\n\nWires are no longer offered.\n")
    build_index([str(corpus)], out, embedder, progress=False)
    assert "$45" in reader.search("international wire fee", k=1)[0].text  # the old version still answers
    fresh = Searcher(IndexStore.open(out), embedder)
    assert "no longer" in fresh.search("international wire fee", k=1)[0].text


def test_add_and_remove_commands(corpus, tmp_path):
    out = str(tmp_path / "idx")
    assert run_cli("index", "build", str(corpus), "--out", out, "--quiet").returncode == 0
    extra = tmp_path / "more"
    extra.mkdir()
    (extra / "mortgage.md").write_text("# Mortgages\n\nFixed-rate mortgages run 15 or 30 years.\n")
    added = run_cli("index", "add", out, str(extra), "--quiet")
    assert added.returncode == 0, added.stderr
    assert "indexed 1 file(s)" in added.stdout
    stats = json.loads(run_cli("index", "stats", out, "--files").stdout)
    assert stats["indexed_files"] == ["cards.html", "hours.txt", "mortgage.md", "wires.md"]
    removed = run_cli("index", "remove", out, "hours.txt")
    assert removed.returncode == 0 and "removed 1" in removed.stdout, removed.stderr
    stats = json.loads(run_cli("index", "stats", out, "--files").stdout)
    assert stats["indexed_files"] == ["cards.html", "mortgage.md", "wires.md"]
    missing = run_cli("index", "remove", out, "nothing-like-this.md")
    assert missing.returncode == 2 and missing.stderr.startswith("error: nothing in the index matches")
    assert json.loads(run_cli("index", "stats", out).stdout)["files"] == 3  # nothing lost


def test_batch_queries_and_eval_commands(corpus, tmp_path):
    out = str(tmp_path / "idx")
    run_cli("index", "build", str(corpus), "--out", out, "--quiet")
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"qid": "a", "text": "international wire fee"}\n{"qid": "b", "text": "open on saturday"}\n')
    result = run_cli("index", "query", out, "--queries", str(queries), "-k", "2", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["qid"] for r in lines] == ["a", "b"]
    assert lines[0]["hits"][0]["source"] == "wires.md" and lines[1]["hits"][0]["source"] == "hours.txt"
    assert set(lines[0]["hits"][0]) >= {"source", "title", "page", "chunk_id", "score", "text"}
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"question": "How much is an international wire?", "relevant": ["wires.md"]}\n'
                         '{"question": "What is the card line number?", "relevant": ["cards.html"]}\n')
    result = run_cli("index", "eval", out, "--questions", str(questions), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["mode"] for r in report["results"]] == ["bm25", "dense", "hybrid"]
    assert all(r["recall@5"] == 1.0 and r["ndcg@10"] > 0.6 for r in report["results"])
    table = run_cli("index", "eval", out, "--questions", str(questions))
    assert "nDCG@10" in table.stdout and "hybrid" in table.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no relevant list"}\n')
    result = run_cli("index", "eval", out, "--questions", str(bad))
    assert result.returncode == 2 and "line 1" in result.stderr


def test_rerank_without_a_reranker_is_a_clear_error(corpus, tmp_path):
    out = str(tmp_path / "idx")
    run_cli("index", "build", str(corpus), "--out", out, "--quiet")
    result = run_cli("index", "query", out, "wire fee", "--rerank", env={"RA_RERANKER": ""})
    assert result.returncode == 2 and "no reranker model configured" in result.stderr


def test_rerank_with_a_local_cross_encoder(corpus, tmp_path, embedder):
    """Plumbing with a real cross-encoder built from the bundled encoder's weights (its head is untrained,
    so this checks that candidates are re-scored and reordered, not that the order is better)."""
    from sentence_transformers import CrossEncoder

    from index.rerank import resolve_reranker

    model_dir = tmp_path / "cross"
    CrossEncoder(embedder.path, num_labels=1).save(str(model_dir))
    build_index([str(corpus)], tmp_path / "idx", embedder, progress=False)
    searcher = Searcher(IndexStore.open(tmp_path / "idx"), embedder, reranker=resolve_reranker(str(model_dir)))
    hits = searcher.search("international wire fee", k=3, rerank=True)
    assert len(hits) == 3 and all(h.rerank_score is not None and 0 <= h.rerank_score <= 1 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_onnx_and_torch_backends_agree(embedder):
    from index.embed import Embedder

    texts = ["How much is an international wire?", "Visiting hours are 8 a.m. to 8 p.m.", "门诊预约挂号"]
    torch_vectors = Embedder(backend="torch").encode(texts)
    onnx_vectors = Embedder(backend="onnx-int8").encode(texts)
    assert onnx_vectors.shape == torch_vectors.shape
    assert ((onnx_vectors * torch_vectors).sum(1) > 0.97).all()


def test_onnx_vector_does_not_depend_on_the_other_texts(embedder):
    """Dynamic int8 quantization scales by the whole batch: a text's vector must not change with the texts it is
    encoded with, or the same question could get another answer depending on what was embedded before it."""
    from index.embed import Embedder

    encoder = Embedder(backend="onnx-int8")
    text = "Free guest Wi-Fi is available throughout the campus."
    alone = encoder.encode([text])[0]
    long_company = ["A much longer sentence with many more tokens than the first, so that a shared batch would be "
                    "padded to its length and the activations' range would change. " * 3] * 5
    for batch in ([text, *long_company], [*long_company, text, "short"]):
        vectors = encoder.encode(batch)
        assert np.allclose(vectors[batch.index(text)], alone, atol=1e-6)


def test_two_encoders_exported_at_once_in_one_process_both_work(tmp_path, monkeypatch, embedder):
    """A new assistant exports its intent encoder while another's warm-up thread exports its evidence encoder:
    torch.onnx keeps global state, and two exports at once failed in a CI run ("GLOBALS.in_onnx_export must be
    False"). The overlap is a matter of timing (without the lock this test passed here too): a guard that both
    exports end well and agree, not a reproduction."""
    import shutil
    import threading

    from index.embed import Embedder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing exported yet
    copy = tmp_path / "a-copy-of-the-encoder"
    shutil.copytree(embedder.path, copy)
    encoders = [Embedder(backend="onnx-int8"), Embedder(spec=str(copy), backend="onnx-int8")]
    text = "How much is an international wire?"
    vectors, errors = [None, None], []

    def encode(i: int) -> None:
        try:
            vectors[i] = encoders[i].encode([text])[0]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=encode, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert np.allclose(vectors[0], vectors[1], atol=1e-5)
    assert len(list((tmp_path / "cache" / "regulated-assistant" / "onnx").glob("*/model_int8.onnx"))) == 2


@pytest.mark.parametrize("config, expected", [
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, "mean"),
    ({"pooling_mode_cls_token": True}, "cls"),
    ({"pooling_mode": "mean"}, "mean"),  # the newer sentence-transformers layout
    ({"pooling_mode": ["cls"]}, "cls"),
    ({"pooling_mode": "max"}, None),  # not computed by the ONNX path: fall back to torch
    ({}, None),
])
def test_onnx_pooling_mode_reads_old_and_new_configs(tmp_path, config, expected):
    from index.onnx_embed import pooling_mode

    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(config))
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    assert pooling_mode(tmp_path) == expected


def test_a_model_saved_by_sentence_transformers_6_gives_its_length_without_loading_it(embedder, tmp_path):
    """Its sentence_bert_config.json has no max_seq_length: the tokenizer's limit is read instead, and the ONNX
    back end never loads the sentence-transformers model for that one number."""
    import shutil

    from index.embed import Embedder, _tokenizer_limit

    model = tmp_path / "st6-model"
    shutil.copytree(embedder.path, model)
    (model / "sentence_bert_config.json").write_text(json.dumps({"module_output_name": "token_embeddings"}))
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 200}))
    saved = Embedder(spec=str(model), backend="onnx-int8")
    assert saved.max_tokens == 200 and "model" not in saved.__dict__
    # transformers' "no limit" placeholder is not a limit: the model itself is asked then
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": int(1e30)}))
    assert _tokenizer_limit(model) is None


def test_keyword_search_meets_a_hyphenated_word_written_as_one(corpus, tmp_path, embedder):
    """"wifi" finds "Wi-Fi" and "e-mail" finds "email"; an index saved before compounds were indexed is read
    again from its chunks when opened, so an upgrade needs no rebuild."""
    (corpus / "amenities.txt").write_text("Amenities\n\nFree guest Wi-Fi: network StBrigids-Guest, no password.\n"
                                          "Send questions by email to help@example.org.\n")
    build_index([str(corpus)], tmp_path / "idx", embedder, progress=False)
    store = IndexStore.open(tmp_path / "idx")
    searcher = Searcher(store, embedder)
    for query in ("wifi", "e-mail"):
        hits = searcher.search(query, k=3, mode="bm25")
        assert hits and hits[0].source == "amenities.txt", (query, hits)
    (store.path / "bm25" / "tokenizer.json").unlink()  # as an earlier version saved it
    vocab = json.loads((store.path / "bm25" / "vocab.json").read_text())
    (store.path / "bm25" / "vocab.json").write_text(json.dumps({k: v for k, v in vocab.items() if k != "wifi"}))
    reopened = IndexStore.open(tmp_path / "idx")
    assert reopened.bm25.tokenizer_version == 2 and "wifi" in reopened.bm25.vocab
    assert Searcher(reopened, embedder).search("wifi", k=3, mode="bm25")[0].source == "amenities.txt"
