"""Build, update, query and evaluate document indexes.

    python -m index build SRC... --out DIR [--embedder bundled] [--chunk-size 200] [--chunk-overlap 40]
    python -m index add DIR SRC...          add or refresh files, keep the rest
    python -m index remove DIR NAME...      drop files (by the name shown in results, or a path)
    python -m index query DIR "TEXT" [-k 10] [--mode hybrid|dense|bm25] [--rerank] [--json]
    python -m index query DIR --queries FILE.jsonl [-k 10] [--mode ...] --json
    python -m index eval DIR --questions FILE.jsonl [--modes bm25,dense,hybrid] [--json]
    python -m index stats DIR
    python -m index uploads DIR [--json]    uploads: who, when, private (waiting for approval) or shared
    python -m index quarantine DIR [--json] passages flagged as prompt injection, never quoted as evidence
    python -m index approve DIR ID... --by NAME [--replace] [--audit FILE]   into the shared index
    python -m index reject DIR ID... --by NAME [--audit FILE]                dropped, file deleted

`--store milvus --milvus-uri URI` (or $RA_STORE, $RA_MILVUS_URI) keeps the index in Milvus instead of
FAISS files (index/milvus_store.py; `pip install -e ".[milvus]"`): URI is a Milvus Lite file (./milvus.db)
or a server (http://host:19530), and DIR names the collection (its last part). When DIR is a path, `build`
leaves DIR/milvus.json saying where the index is, so later commands and the assistant need no flags.

    python -m index build docs/ --out data/indexes/bank --store milvus --milvus-uri ./milvus.db
    python -m index query bank "card fees" --store milvus --milvus-uri http://milvus:19530

`build` and `add` take `--limit NAME=VALUE` (repeatable) to change what one file may cost to read
(index/limits.py), e.g. `--limit max_pages=500 --limit max_entry_bytes=20MB`.

Exit codes: 0 done, 1 done but some files were skipped, 2 the command could not run (the message
says why).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from index.chunk import ChunkConfig
from index.embed import EMBED_BACKENDS, resolve_embedder
from index.errors import SettingError, run_cli
from index.evaluate import evaluate, format_table, load_questions, read_jsonl
from index.limits import IngestLimits
from index.milvus_store import STORES, location_for, write_pointer
from index.rerank import default_reranker_spec, reranker_available, resolve_reranker
from index.search import MODES, Searcher
from index.store import (
    INDEX_TYPES,
    IndexStore,
    add_to_index,
    build_index,
    remove_from_index,
)


def _embedder(args: argparse.Namespace, store: IndexStore | None = None):
    spec = args.embedder or (store.manifest.embedder if store else "bundled")
    return resolve_embedder(spec, backend=args.embed_backend)


def _where(args: argparse.Namespace, index: str):
    """The index argument as the stores take it: a directory (FAISS, or one holding milvus.json), or with
    --store milvus a MilvusLocation."""
    if getattr(args, "store", None) == "milvus":
        return location_for(index, args.milvus_uri)
    return index


def _searcher(args: argparse.Namespace) -> Searcher:
    store = IndexStore.open(_where(args, args.index), embedder=args.embedder)
    reranker = resolve_reranker(args.reranker) if (args.rerank or args.reranker) else None
    return Searcher(store, _embedder(args, store), reranker=reranker, spelling=not args.no_spelling)


def cmd_build(args: argparse.Namespace) -> int:
    chunking = ChunkConfig(chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap)
    where = _where(args, args.out)
    report = build_index(args.sources, where, _embedder(args), chunking, progress=not args.quiet,
                         index_type=args.index_type, limits=IngestLimits.parse(args.limit), screen=not args.no_screen)
    print(report.summary())
    if where is not args.out:
        print(f"stored in {where}")
        if "/" in args.out or Path(args.out).is_dir():
            print(f"wrote {write_pointer(args.out, where)}: commands and the assistant on {args.out} use it")
    return 1 if report.skipped else 0


def cmd_add(args: argparse.Namespace) -> int:
    where = _where(args, args.index)
    store = IndexStore.open(where, embedder=args.embedder)
    embedder = _embedder(args, store)
    store.close()
    report = add_to_index(where, args.sources, embedder, progress=not args.quiet,
                          limits=IngestLimits.parse(args.limit))
    print(report.summary())
    return 1 if report.skipped else 0


def cmd_remove(args: argparse.Namespace) -> int:
    where = _where(args, args.index)
    store = IndexStore.open(where)
    embedder = _embedder(args, store)
    store.close()
    report = remove_from_index(where, args.names, embedder, progress=False)
    print(report.summary())
    return 0


def _hit_json(hit) -> dict:
    return {"source": hit.source, "title": hit.title, "page": hit.page, "chunk_id": hit.chunk_id,
            "score": hit.score, "dense_score": hit.dense_score, "bm25_score": hit.bm25_score,
            "rerank_score": hit.rerank_score, "headings": hit.headings, "text": hit.text}


def _read_queries(path: str) -> list[tuple[str, str]]:
    queries = []
    for number, record in read_jsonl(path, "queries file"):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise SettingError(f"{path}, line {number}: needs {{\"qid\", \"text\"}}")
        queries.append((str(record.get("qid", number)), record["text"]))
    return queries


def cmd_query(args: argparse.Namespace) -> int:
    if (args.text is None) == (args.queries is None):
        raise SettingError("give either a query TEXT or --queries FILE.jsonl")
    searcher = _searcher(args)
    if args.queries:
        queries = _read_queries(args.queries)
        for start in range(0, len(queries), 512):
            part = queries[start:start + 512]
            results = searcher.search_many([t for _, t in part], k=args.k, min_score=args.min_score,
                                           mode=args.mode, rerank=args.rerank)
            for (qid, _), hits in zip(part, results, strict=True):
                print(json.dumps({"qid": qid, "hits": [_hit_json(h) for h in hits]}, ensure_ascii=False))
        return 0
    hits = searcher.search(args.text, k=args.k, min_score=args.min_score, mode=args.mode, rerank=args.rerank)
    searched = searcher.correct(args.text)
    if args.json:
        print(json.dumps({"query": args.text, "searched": searched, "mode": args.mode,
                          "hits": [_hit_json(h) for h in hits]}, ensure_ascii=False))
        return 0
    if searched != args.text:
        print(f"searched for: {searched}")
    if not hits:
        print("no relevant passages")
    for rank, hit in enumerate(hits, start=1):
        where = f" p.{hit.page}" if hit.page else ""
        snippet = " ".join(hit.text.split())[:160]
        print(f"{rank:>2}. {hit.score:.3f}  {hit.source}{where}  {hit.title}\n    {snippet}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    questions = load_questions(args.questions)
    if args.limit:
        questions = questions[: args.limit]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()] if args.modes else list(
        ("bm25", "dense", "hybrid", *(("hybrid+rerank",) if reranker_available(args.reranker) else ())))
    for mode in modes:
        if mode.removesuffix("+rerank") not in MODES:
            raise SettingError(f"unknown mode '{mode}': use {', '.join(MODES)}, optionally with +rerank")
    args.rerank = any(m.endswith("+rerank") for m in modes)
    results = evaluate(_searcher(args), questions, modes)
    if args.json:
        print(json.dumps({"questions": len(questions), "results": [r.to_dict() for r in results]}))
    else:
        print(f"{len(questions)} questions, document-level metrics")
        print(format_table(results))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    store = IndexStore.open(_where(args, args.index))
    m = store.manifest
    info = {"version": store.version, "embedder": m.embedder, "dimension": m.dimension,
            "chunks": m.n_chunks, "files": m.n_files, "chunk_size": m.chunk_size,
            "chunk_overlap": m.chunk_overlap, "index_type": m.index_type, "format_version": m.format_version,
            "sources": m.sources}
    if getattr(store, "location", None) is not None:
        info["store"] = str(store.location)
    if args.files:
        info["indexed_files"] = sorted(f["source"] for f in store.files().values())
    print(json.dumps(info, indent=2))
    return 0


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


def cmd_uploads(args: argparse.Namespace) -> int:
    from index.uploads import list_uploads

    records = list_uploads(args.index)
    if args.json:
        print(json.dumps([{"id": r.id, **r.__dict__} for r in records], indent=2))
        return 0
    if not records:
        print("no uploads")
    for r in records:
        by = r.user or (f"session {r.session}" if r.session else "unknown")
        approved = f"  approved by {r.approved_by} {_when(r.approved_at)}" if r.approved_by else ""
        print(f"{r.id}  {r.status:<7}  {r.source}  by {by}  {_when(r.uploaded_at)}{approved}")
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    store = IndexStore.open(_where(args, args.index))
    marks = store.quarantined()
    rows = store.db.execute("SELECT content_hash, source, chunk_id, text FROM chunks ORDER BY row").fetchall()
    found = []
    for digest, source, chunk_id, text in rows:
        for start, end, score in marks.get(digest, []):
            found.append({"source": source, "chunk_id": chunk_id, "score": score, "text": " ".join(text[int(start):int(end)].split())})
    if args.json:
        print(json.dumps({"screened_by": store.manifest.screened_by, "quarantined": found}, indent=2))
        return 0
    if not store.manifest.screened_by:
        print(f"{args.index} was written without injection screening: rebuild it (python -m index build) to mark "
              "its passages; until then the assistant screens each passage as it reads it")
        return 0
    if not found:
        print(f"nothing quarantined ({len(rows)} chunks screened by {store.manifest.screened_by})")
    for item in found:
        print(f"{item['score']:.2f}  {item['source']}  {item['chunk_id']}\n      {item['text']}")
    return 0


def _audit_log(args: argparse.Namespace):
    """The audit log approvals go to: --audit (a file or a postgresql:// URL), else $RA_AUDIT_URL, else the one
    of the data folder holding the index."""
    from assistant.compliance.audit import AuditLog, AuditStoreError

    target = args.audit or os.environ.get("RA_AUDIT_URL")
    index = Path(args.index).resolve()
    if not target and index.parent.name == "indexes":  # DATA/indexes/<pack>, the assistant's layout
        target = index.parent.parent / "audit.sqlite"
    if not target:
        raise SettingError(f"{index} is not in an assistant data folder (DATA/indexes/NAME): "
                         "say where to record the decision with --audit FILE")
    try:
        return AuditLog(target)
    except AuditStoreError as exc:  # this command's errors are ValueErrors: one line, no traceback
        raise SettingError(str(exc)) from exc


def cmd_review(args: argparse.Namespace) -> int:
    from index.uploads import approve_uploads, reject_uploads

    audit = _audit_log(args)
    where = _where(args, args.index)
    store = IndexStore.open(where)
    embedder = _embedder(args, store)
    store.close()
    if args.command == "approve":
        records = approve_uploads(where, args.ids, embedder, by=args.by, replace_shared=args.replace)
    else:
        records = reject_uploads(where, args.ids, embedder)
    done = {"approve": "approved", "reject": "rejected"}[args.command]
    for r in records:
        audit.event(f"upload_{done}", user=args.by, session_id=r.session, domain=Path(args.index).name,
                    detail={"id": r.id, "source": r.source, "uploaded_by": r.user, "uploaded_at": r.uploaded_at,
                            "sha256": r.sha256})
        print(f"{done} {r.source} ({r.id}, uploaded by {r.user or r.session}); recorded in {audit.where}")
    audit.close()
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m index", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def store_args(sp):
        sp.add_argument("--store", default=os.environ.get("RA_STORE") or None, choices=STORES,
                        help="faiss: files in the index directory; milvus: a collection named after it, at "
                             "--milvus-uri (default: $RA_STORE, else what the directory holds)")
        sp.add_argument("--milvus-uri", default=os.environ.get("RA_MILVUS_URI"),
                        help="a Milvus Lite file (./milvus.db) or server (http://host:19530); default $RA_MILVUS_URI")

    def model_args(sp, embedder_help="defaults to the one the index was built with"):
        sp.add_argument("--embedder", default=None, help=embedder_help)
        sp.add_argument("--embed-backend", default="auto", choices=EMBED_BACKENDS,
                        help="auto: int8 ONNX on CPU where it applies, else sentence-transformers")
        store_args(sp)

    b = sub.add_parser("build", help="index files and folders (incremental: unchanged files are reused)")
    b.add_argument("sources", nargs="+", help="files or directories (recursive)")
    b.add_argument("--out", required=True, help="index directory")
    model_args(b, "`bundled` (default), a local directory or a Hugging Face id")
    b.add_argument("--chunk-size", type=int, default=ChunkConfig.chunk_size, help="tokens per chunk")
    b.add_argument("--chunk-overlap", type=int, default=ChunkConfig.chunk_overlap, help="tokens shared by neighbours")
    b.add_argument("--index-type", default="auto", choices=INDEX_TYPES,
                   help="auto: exact flat below 20,000 chunks, HNSW above")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                   help="what one file may cost to read, e.g. max_pages=500 (index/limits.py; repeatable)")
    b.add_argument("--no-screen", action="store_true",
                   help="skip prompt-injection screening (the assistant then screens passages as it reads them)")
    b.set_defaults(func=cmd_build)

    a = sub.add_parser("add", help="add or refresh files in an index, keeping the rest")
    a.add_argument("index")
    a.add_argument("sources", nargs="+")
    model_args(a)
    a.add_argument("--quiet", action="store_true")
    a.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE", help="as for build")
    a.set_defaults(func=cmd_add)

    r = sub.add_parser("remove", help="drop files from an index")
    r.add_argument("index")
    r.add_argument("names", nargs="+", help="source names as shown in results, paths, or folders")
    model_args(r)
    r.set_defaults(func=cmd_remove)

    def search_args(sp):
        sp.add_argument("--mode", default="hybrid", choices=MODES)
        sp.add_argument("--rerank", action="store_true", help="rerank the top candidates with a cross-encoder")
        sp.add_argument("--reranker", default=default_reranker_spec(),
                        help="cross-encoder directory or hub id (default: $RA_RERANKER)")
        sp.add_argument("--no-spelling", action="store_true",
                        help="search queries as typed (default: misspelled words are corrected to the index's words)")
        model_args(sp)

    q = sub.add_parser("query", help="search an index (one query, or a JSONL batch with --queries)")
    q.add_argument("index")
    q.add_argument("text", nargs="?")
    q.add_argument("--queries", help='JSONL file of {"qid", "text"}; writes one JSONL result per query')
    q.add_argument("-k", type=int, default=10)
    q.add_argument("--min-score", type=float, default=0.0, help="drop hits whose cosine is below this")
    q.add_argument("--json", action="store_true")
    search_args(q)
    q.set_defaults(func=cmd_query)

    e = sub.add_parser("eval", help="Recall@5, MRR@10, nDCG@10 per search mode on a questions file")
    e.add_argument("index")
    e.add_argument("--questions", required=True, help='JSONL of {"question", "relevant": [file names]}')
    e.add_argument("--modes", default=None, help="comma-separated, e.g. bm25,dense,hybrid,hybrid+rerank")
    e.add_argument("--limit", type=int, default=0, help="only the first N questions")
    e.add_argument("--json", action="store_true")
    search_args(e)
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("stats", help="what an index holds")
    s.add_argument("index")
    s.add_argument("--files", action="store_true", help="list the indexed files")
    store_args(s)
    s.set_defaults(func=cmd_stats)

    u = sub.add_parser("uploads", help="uploaded documents: who, when, private or shared")
    u.add_argument("index")
    u.add_argument("--json", action="store_true")
    u.set_defaults(func=cmd_uploads)

    qu = sub.add_parser("quarantine", help="passages flagged as prompt injection (never quoted as evidence)")
    qu.add_argument("index")
    qu.add_argument("--json", action="store_true")
    store_args(qu)
    qu.set_defaults(func=cmd_quarantine)

    for name, what in (("approve", "move private uploads into the shared index (audited)"),
                       ("reject", "drop private uploads from the index and delete their files (audited)")):
        v = sub.add_parser(name, help=what)
        v.add_argument("index")
        v.add_argument("ids", nargs="+", help="upload ids (or their first 4+ characters) or names, as `uploads` lists")
        v.add_argument("--by", required=True, help="the administrator deciding (recorded in the audit log)")
        v.add_argument("--audit", default=None,
                       help="audit log: a file or a postgresql:// URL (default: $RA_AUDIT_URL, else "
                            "DATA/audit.sqlite for an index at DATA/indexes/NAME)")
        if name == "approve":
            v.add_argument("--replace", action="store_true", help="replace a shared upload of the same name")
        model_args(v)
        v.set_defaults(func=cmd_review)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
