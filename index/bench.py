"""`make bench-index`: retrieval quality, build throughput and query latency, as Markdown tables.

    python -m index.bench [--data ../shared/data/medquad_dev] [--part quality,build,latency]
                          [--sizes 1000,10000,100000] [--queries 200] [--json FILE]
    python -m index.bench --part quality [--fit] [--noisy index/devsets/medquad_noisy.jsonl]
    python -m index.bench --store milvus [--store-size 100000] [--milvus-uri FILE.db|http://host:19530]

Quality: Recall@5 / MRR@10 / nDCG@10 for bm25, dense, hybrid with the fixed 50/50 fusion, the
adaptive hybrid (the default) and hybrid+rerank when a reranker is configured, on all MedQuAD dev
questions, plus reciprocal-rank fusion as the naive baseline. Then the same modes on sets nothing was
fitted on: the odd-numbered questions as written, the same rewritten in a consumer's voice by
index/noisy.py, and the hand-written consumer messages of index/devsets/. `--fit` refits the adaptive
fusion on the even-numbered questions first (index/fit_fusion.py) and reports with the new parameters.
Build: chunks/s for sentence-transformers and the int8 ONNX encoder side by side on the same
300-character chunks, and a full index build. Latency: p50/p95 per query including the query
embedding, exact flat vs HNSW, at each size; larger sizes are made from the real chunk vectors plus noise.
Stores (`--store milvus`, `make bench-index STORE=milvus`): FAISS and Milvus side by side. nDCG@10 per mode on
MedQuAD dev with the same vectors (the FAISS index copied into Milvus), then at `--store-size` chunks (as in
latency) the store's build rate (writing chunks whose vectors are known: the part of a build that differs;
embedding is the same for both) and query p50/p95 per mode, with Milvus / FAISS ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from index.embed import Embedder
from index.evaluate import doc_metrics, evaluate, format_table, load_questions
from index.fit_fusion import grid_table, run_fit
from index.noisy import noisy_questions
from index.quiet import quiet_libraries
from index.rerank import reranker_available, resolve_reranker
from index.search import FEATURES, FusionConfig, Searcher
from index.store import HNSW_THRESHOLD, IndexStore, build_index, make_vector_index

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "medquad_dev"
NOISY_DEVSET = Path(__file__).resolve().parent / "devsets" / "medquad_noisy.jsonl"


def query_times(searcher, queries: list[str], mode: str, k: int = 5) -> list[float]:
    """Milliseconds per query, sorted (one search each, as a user would send them)."""
    times = []
    for q in queries:
        started = time.perf_counter()
        searcher.search(q, k=k, mode=mode)
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)


def bench_cache() -> Path:
    from index.onnx_embed import cache_dir

    return cache_dir() / "bench"


def medquad_index(data: Path, embedder: Embedder) -> tuple[IndexStore, dict]:
    """Build (or reuse, incrementally) the MedQuAD dev index; returns it and the build report."""
    out = bench_cache() / "medquad-index"
    report = build_index([str(data / "docs")], out, embedder, progress=True)
    return IndexStore.open(out), {"chunks": report.chunks, "embedded": report.chunks_embedded,
                                  "seconds": round(report.seconds, 1)}


def ambiguity_ceiling(data: Path, questions: list[dict]) -> tuple[int, float]:
    """Questions whose exact text heads a section in more than one document, and the best nDCG@10
    any retriever can expect when it cannot tell those documents apart (ties broken at random)."""
    heads: dict[str, set[str]] = {}
    for doc in (data / "docs").glob("*.md"):
        for line in doc.read_text(encoding="utf-8").splitlines():
            if line.startswith("## "):
                heads.setdefault(" ".join(line[3:].lower().split()), set()).add(doc.name)
    values, ambiguous = [], 0
    for q in questions:
        docs = heads.get(" ".join(q["question"].lower().split()), set())
        m = len(docs) if set(q["relevant"]) & docs else 1
        ambiguous += m > 1
        values.append(statistics.mean(1 / math.log2(p + 1) for p in range(1, min(m, 10) + 1)))
    return ambiguous, statistics.mean(values)


def rrf_metrics(searcher: Searcher, questions: list[dict], k: int = 60) -> dict[str, float]:
    """Reciprocal-rank fusion of the bm25 and dense rankings (the naive baseline)."""
    per = []
    for start in range(0, len(questions), 256):
        part = [q["question"] for q in questions[start:start + 256]]
        dense = searcher.search_many(part, k=50, mode="dense")
        bm25 = searcher.search_many(part, k=50, mode="bm25")
        for q, d, b in zip(questions[start:start + 256], dense, bm25, strict=True):
            scores: dict[str, float] = {}
            sources: dict[str, str] = {}
            for ranking in (d, b):
                for rank, hit in enumerate(ranking):
                    scores[hit.chunk_id] = scores.get(hit.chunk_id, 0) + 1 / (k + rank + 1)
                    sources[hit.chunk_id] = hit.source
            ranked = sorted(scores, key=lambda c: -scores[c])
            per.append(doc_metrics([sources[c] for c in ranked], set(q["relevant"])))
    return {key: statistics.mean(m[key] for m in per) for key in per[0]}


def heldout_sets(args, questions: list[dict]) -> dict[str, list[dict]]:
    """Question sets nothing was fitted on: odd-numbered questions as written and rewritten by
    index/noisy.py, and the hand-written consumer messages (when the file is there)."""
    odd = questions[1::2]
    sets = {"clean odd": odd, "noisy odd (generated)": noisy_questions(odd)}
    if args.noisy.is_file():
        sets["noisy hand-written"] = load_questions(args.noisy)
    else:
        print(f"(no hand-written noisy set at {args.noisy}: pass --noisy FILE to add it)")
    return sets


def part_quality(args, embedder: Embedder, results: dict) -> None:
    store, build = medquad_index(args.data, embedder)
    questions = load_questions(args.data / "questions.jsonl")
    reranker = resolve_reranker() if reranker_available() else None
    adaptive = run_fit(Searcher(store, embedder), args.data) if args.fit else FusionConfig()
    searcher = Searcher(store, embedder, reranker=reranker, fusion=adaptive)
    fixed = Searcher(store, embedder, fusion=FusionConfig(adaptive=False))
    modes = ["bm25", "dense", "hybrid"] + (["hybrid+rerank"] if reranker else [])
    evals = evaluate(searcher, questions, modes)
    evals.insert(2, replace(evaluate(fixed, questions, ["hybrid"])[0], mode="hybrid-fixed"))
    rrf = rrf_metrics(searcher, questions)
    ambiguous, ceiling = ambiguity_ceiling(args.data, questions)
    print(f"\n## Retrieval quality: MedQuAD dev, {len(questions)} questions, {build['chunks']} chunks\n")
    print(format_table(evals))
    print(f"{'rrf (k=60)':<16}{rrf['recall@5']:>10.4f}{rrf['mrr@10']:>10.4f}{rrf['ndcg@10']:>10.4f}")
    print(f"\n{ambiguous} questions head a section in more than one document; a retriever that cannot tell "
          f"those apart can expect at most nDCG@10 {ceiling:.4f}.")
    typed = Searcher(store, embedder, fusion=adaptive, spelling=False)
    heldout = {name: heldout_quality(searcher, fixed, qs, typed)
               for name, qs in heldout_sets(args, questions).items()}
    print("\n## Held out (the fusion was fitted on even-numbered questions): nDCG@10 / Recall@5 / MRR@10\n")
    print(heldout_table(heldout))
    print(f"\nadaptive fusion: bias {searcher.fusion.bias}, coefs {searcher.fusion.coefs} ({', '.join(FEATURES)})")
    if not reranker:
        print("(no reranker configured: set RA_RERANKER to a cross-encoder to add hybrid+rerank)")
    results["quality"] = {"questions": len(questions), "index": build,
                          "modes": [r.to_dict() for r in evals],
                          "rrf": {k: round(v, 4) for k, v in rrf.items()},
                          "ambiguous_questions": ambiguous, "ndcg_ceiling": round(ceiling, 4),
                          "heldout": heldout, "fusion": asdict(searcher.fusion),
                          "reranker": reranker.spec if reranker else None}


HELDOUT_MODES = {"bm25": "bm25", "dense": "dense", "hybrid-fixed": "hybrid, fixed 0.5",
                 "hybrid": "hybrid, adaptive (default)", "bm25-typed": "bm25, no spelling correction",
                 "dense-typed": "dense, no spelling correction",
                 "hybrid-typed": "hybrid, adaptive, no spelling correction"}


def heldout_quality(searcher: Searcher, fixed: Searcher, questions: list[dict], typed: Searcher) -> dict:
    """Metrics per mode on one set (also searched as typed, without spelling correction), the adaptive
    gain over the best single mode (paired standard error), and the best any per-query weight could do
    (each question's best weight on the grid, in hindsight)."""
    runs = evaluate(searcher, questions, ["bm25", "dense", "hybrid"])
    runs.insert(2, replace(evaluate(fixed, questions, ["hybrid"])[0], mode="hybrid-fixed"))
    runs += [replace(r, mode=f"{r.mode}-typed") for r in evaluate(typed, questions, ["bm25", "dense", "hybrid"])]
    by_mode = {r.mode: r for r in runs}
    best = max(("bm25", "dense"), key=lambda m: by_mode[m].metrics["ndcg@10"])
    gain = np.array([a["ndcg@10"] - b["ndcg@10"] for a, b in
                     zip(by_mode["hybrid"].per_question, by_mode[best].per_question, strict=True)])
    oracle = float(grid_table(searcher, questions).ndcg.max(1).mean())
    return {"questions": len(questions),
            "modes": {m: {k: round(v, 4) for k, v in r.metrics.items()} for m, r in by_mode.items()},
            "best_single": best, "adaptive_gain_ndcg": round(float(gain.mean()), 4),
            "adaptive_gain_se": round(float(gain.std() / math.sqrt(len(gain))), 4),
            "oracle_weight_ndcg": round(oracle, 4)}


def heldout_table(heldout: dict[str, dict]) -> str:
    names = list(heldout)
    lines = ["| mode | " + " | ".join(f"{n} ({heldout[n]['questions']})" for n in names) + " |",
             "|---" * (len(names) + 1) + "|"]
    for mode, label in HELDOUT_MODES.items():
        cells = [heldout[n]["modes"][mode] for n in names]
        lines.append(f"| {label} | " + " | ".join(f"{c['ndcg@10']:.4f} / {c['recall@5']:.4f} / {c['mrr@10']:.4f}"
                                                  for c in cells) + " |")
    lines.append("| adaptive − best single mode (nDCG@10 ± s.e.) | " + " | ".join(
        f"{heldout[n]['adaptive_gain_ndcg']:+.4f} ± {heldout[n]['adaptive_gain_se']:.4f} vs {heldout[n]['best_single']}"
        for n in names) + " |")
    lines.append("| best weight per question, in hindsight (nDCG@10 bound) | " + " | ".join(
        f"{heldout[n]['oracle_weight_ndcg']:.4f}" for n in names) + " |")
    return "\n".join(lines)


def chunks_300(data: Path, n: int) -> list[str]:
    texts = []
    for doc in sorted((data / "docs").glob("*.md")):
        body = doc.read_text(encoding="utf-8")
        texts += [body[i:i + 300] for i in range(0, len(body) - 300, 300)]
        if len(texts) >= n:
            break
    return texts[:n]


def part_build(args, embedder: Embedder, results: dict) -> None:
    texts = chunks_300(args.data, args.build_chunks)
    rows = []
    for backend in ("torch", "onnx-int8"):
        enc = Embedder(spec=embedder.spec, backend=backend)
        enc.encode(texts[:32])  # load and warm up outside the clock
        started = time.perf_counter()
        vectors = enc.encode(texts)
        seconds = time.perf_counter() - started
        rows.append({"backend": backend, "chunks": len(texts), "chunks_per_s": round(len(texts) / seconds, 1),
                     "vectors": vectors})
    agreement = (rows[0]["vectors"] * rows[1]["vectors"]).sum(1)
    for r in rows:
        r.pop("vectors")
    ratio = rows[1]["chunks_per_s"] / rows[0]["chunks_per_s"]
    docs = sorted((args.data / "docs").glob("*.md"))[: args.build_docs]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "docs"
        src.mkdir()
        for d in docs:
            (src / d.name).write_bytes(d.read_bytes())
        report = build_index([str(src)], Path(tmp) / "idx", Embedder(spec=embedder.spec, backend="onnx-int8"),
                             progress=False)
    full = {"docs": len(docs), "chunks": report.chunks, "seconds": round(report.seconds, 1),
            "chunks_per_s": round(report.chunks / report.seconds, 1)}
    results["build"] = {"encoders": rows, "speedup": round(ratio, 2),
                        "cosine_int8_vs_fp32": {"mean": round(float(agreement.mean()), 4),
                                                "min": round(float(agreement.min()), 4)},
                        "full_build_default_chunking": full}
    print(f"\n## Build throughput: {len(texts)} chunks of 300 characters, 2 CPU threads\n")
    print("| encoder | chunks/s |\n|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['chunks_per_s']} |")
    print(f"\nint8 ONNX / sentence-transformers: {ratio:.2f}x; cosine between their vectors: mean "
          f"{agreement.mean():.4f}, min {agreement.min():.4f}")
    print(f"Full build (read, chunk at 200 tokens, embed, BM25, write) of {len(docs)} documents: "
          f"{report.chunks} chunks in {report.seconds:.1f} s = {full['chunks_per_s']} chunks/s")


def synthetic(vectors: np.ndarray, texts: list[str], size: int, rng) -> tuple[np.ndarray, list[str]]:
    """`size` vectors and texts: the real ones, then noisy copies of them (renormalised)."""
    reps = math.ceil(size / len(vectors))
    out = [vectors]
    for _ in range(reps - 1):
        noisy = vectors + rng.normal(0, 0.03, vectors.shape).astype(np.float32)
        out.append(noisy / np.linalg.norm(noisy, axis=1, keepdims=True))
    return np.ascontiguousarray(np.concatenate(out)[:size]), (texts * reps)[:size]


class SyntheticStore:
    """Just enough of IndexStore for Searcher, over in-memory vectors and texts."""

    def __init__(self, vectors: np.ndarray, texts: list[str], kind: str, dimension: int):
        from index.bm25 import BM25Index
        from index.store import Manifest

        started = time.perf_counter()
        self.vectors = make_vector_index(vectors, kind)
        self.build_seconds = time.perf_counter() - started
        self.bm25 = BM25Index.build(texts)
        self.texts = texts
        self.manifest = Manifest(embedder="bundled", dimension=dimension, chunk_size=200, chunk_overlap=40,
                                 n_chunks=len(texts), n_files=0, index_type=kind)

    def __len__(self) -> int:
        return len(self.texts)

    search_vectors = IndexStore.search_vectors
    cosines = IndexStore.cosines

    def hidden_rows(self, session: str | None) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)  # no uploads here

    def chunks(self, rows) -> dict[int, dict]:
        return {int(r): {"chunk_id": str(r), "source": f"doc{r}", "title": "", "text": self.texts[int(r)],
                         "page": None, "headings": [], "content_hash": str(r)} for r in rows}


def part_latency(args, embedder: Embedder, results: dict) -> None:
    store, _ = medquad_index(args.data, embedder)
    rows = [r for r, in store.db.execute("SELECT row FROM chunks ORDER BY row")]
    base = store.vectors.reconstruct_n(0, len(rows))
    texts = [t for t, in store.db.execute("SELECT text FROM chunks ORDER BY row")]
    questions = [q["question"] for q in load_questions(args.data / "questions.jsonl")][: args.queries]
    rng = np.random.default_rng(0)
    embedder.encode(questions[:4])
    table = []
    for size in args.sizes:
        vectors, corpus = synthetic(base, texts, size, rng)
        qvecs = embedder.encode(questions)
        exact = None
        for kind in ("flat", "hnsw"):
            syn = SyntheticStore(vectors, corpus, kind, vectors.shape[1])
            searcher = Searcher(syn, embedder)
            _, found = syn.search_vectors(qvecs, 10)
            if kind == "flat":
                exact = found
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)]))
            for mode in ("dense", "hybrid"):
                times = query_times(searcher, questions, mode)
                row = {"chunks": size, "index": kind, "mode": mode, "p50_ms": round(statistics.median(times), 2),
                       "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2), "recall@10_vs_flat": round(recall, 4),
                       "index_build_s": round(syn.build_seconds, 2)}
                table.append(row)
    results["latency"] = table
    print(f"\n## Query latency: {len(questions)} MedQuAD questions, k=5, query embedding included\n")
    print("| chunks | index | mode | p50 ms | p95 ms | recall@10 vs flat | index build s |\n|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['chunks']:,} | {r['index']} | {r['mode']} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['recall@10_vs_flat']} | {r['index_build_s']} |")


def part_stores(args, embedder: Embedder, results: dict) -> None:
    part_stores_quality(args, embedder, results)
    part_stores_speed(args, embedder, results)


def _bench_uri(args, tmp: str, name: str) -> str:
    # one Lite file per part: pymilvus's connection to an in-process Lite server left idle for minutes (while
    # FAISS works) was refused on reuse once ("too_many_pings"); a fresh file starts a fresh server
    return args.milvus_uri or str(Path(tmp) / f"{name}.db")


def part_stores_quality(args, embedder: Embedder, results: dict) -> None:
    from index.milvus_store import MilvusLocation, copy_from

    store, build = medquad_index(args.data, embedder)
    questions = load_questions(args.data / "questions.jsonl")
    tmp = tempfile.TemporaryDirectory(prefix="bench-milvus-")
    uri = _bench_uri(args, tmp.name, "quality")
    medquad = MilvusLocation(uri=uri, collection="bench_medquad")
    copy_from(store, medquad, progress=True)
    milvus = IndexStore.open(medquad)
    modes = ["dense", "bm25", "hybrid"]
    quality = {}
    for name, opened in (("faiss", store), ("milvus", milvus)):
        quality[name] = {r.mode: r.to_dict() for r in evaluate(Searcher(opened, embedder), questions, modes)}
    print(f"\n## Stores: MedQuAD dev, {len(questions)} questions, {build['chunks']} chunks, the same vectors "
          f"(Milvus at {'a server' if '://' in uri else 'Milvus Lite'}; hybrid: FAISS adaptive fusion, Milvus "
          "hybrid_search)\n")
    print("| mode | FAISS nDCG@10 | Milvus nDCG@10 | difference |\n|---|---|---|---|")
    for mode in modes:
        a, b = quality["faiss"][mode]["ndcg@10"], quality["milvus"][mode]["ndcg@10"]
        print(f"| {mode} | {a:.4f} | {b:.4f} | {b - a:+.4f} |")
    results["stores_quality"] = {"milvus": "server" if "://" in uri else "lite", "questions": len(questions),
                                 "chunks": build["chunks"], "ndcg@10": quality}
    milvus.close()
    tmp.cleanup()


def part_stores_speed(args, embedder: Embedder, results: dict) -> None:
    from index.chunk import Chunk
    from index.milvus_store import MilvusLocation, write_all
    from index.store import Manifest

    store, _ = medquad_index(args.data, embedder)
    questions = load_questions(args.data / "questions.jsonl")
    modes = ["dense", "bm25", "hybrid"]
    tmp = tempfile.TemporaryDirectory(prefix="bench-milvus-")
    uri = _bench_uri(args, tmp.name, "speed")
    rows = [r for r, in store.db.execute("SELECT row FROM chunks ORDER BY row")]
    base = store.vectors.reconstruct_n(0, len(rows))
    texts = [t for t, in store.db.execute("SELECT text FROM chunks ORDER BY row")]
    vectors, corpus = synthetic(base, texts, args.store_size, np.random.default_rng(0))
    kind = "hnsw" if args.store_size >= HNSW_THRESHOLD else "flat"
    queries = [q["question"] for q in questions][: args.queries]
    timing: dict[str, dict] = {}
    for name in ("faiss", "milvus"):
        started = time.perf_counter()
        if name == "faiss":
            opened = SyntheticStore(vectors, corpus, kind, vectors.shape[1])  # vectors + BM25, in memory
        else:
            location = MilvusLocation(uri=uri, collection="bench_synthetic")
            kept = [(Chunk(text=t, source=f"doc{i}", title=""), v, f"doc{i}")
                    for i, (t, v) in enumerate(zip(corpus, vectors, strict=True))]
            manifest = Manifest(embedder=embedder.name, dimension=vectors.shape[1], chunk_size=200, chunk_overlap=40,
                                n_chunks=len(kept), n_files=len(kept), index_type=kind)
            write_all(location, kept, manifest, progress=True)
            opened = IndexStore.open(location)
        seconds = time.perf_counter() - started
        searcher = Searcher(opened, embedder)
        row = {"build_s": round(seconds, 1), "chunks_per_s": round(len(corpus) / seconds, 1)}
        for mode in modes:
            searcher.search(queries[0], k=5, mode=mode)  # warm
            times = query_times(searcher, queries, mode)
            row[mode] = {"p50_ms": round(statistics.median(times), 2),
                         "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2)}
        timing[name] = row
    f, m = timing["faiss"], timing["milvus"]
    print(f"\n## Stores at {len(corpus):,} chunks ({kind}; {len(queries)} queries, k=5, query embedding included)\n")
    print("| | FAISS | Milvus | Milvus / FAISS |\n|---|---|---|---|")
    print(f"| build (write chunks with known vectors), chunks/s | {f['chunks_per_s']} | {m['chunks_per_s']} | "
          f"{m['chunks_per_s'] / f['chunks_per_s']:.2f}x |")
    for mode in modes:
        print(f"| {mode} query p50 / p95 ms | {f[mode]['p50_ms']} / {f[mode]['p95_ms']} | {m[mode]['p50_ms']} / "
              f"{m[mode]['p95_ms']} | {m[mode]['p50_ms'] / f[mode]['p50_ms']:.2f}x |")
    results["stores_speed"] = {"milvus": "server" if "://" in uri else "lite", "size": len(corpus), "index": kind,
                               "queries": len(queries), "timing": timing}
    opened.close()
    tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m index.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a folder like ../shared/data/medquad_dev")
    p.add_argument("--part", default=None,
                   help="quality,build,latency (the default); stores (= stores-quality,stores-speed: the "
                        "default with --store milvus)")
    p.add_argument("--store", default="faiss", choices=("faiss", "milvus"),
                   help="milvus: compare the Milvus store with FAISS (part stores)")
    p.add_argument("--store-size", type=int, default=100_000, help="chunks for the stores part's build and latency")
    p.add_argument("--milvus-uri", default=None, help="a Milvus server to use (default: a Milvus Lite file in /tmp)")
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--queries", type=int, default=200, help="questions timed per latency row")
    p.add_argument("--build-chunks", type=int, default=1500)
    p.add_argument("--build-docs", type=int, default=60)
    p.add_argument("--noisy", type=Path, default=NOISY_DEVSET, help="hand-written noisy questions (JSONL)")
    p.add_argument("--fit", action="store_true",
                   help="refit the adaptive fusion on even-numbered questions first and report with it")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    quiet_libraries()
    if not (args.data / "questions.jsonl").is_file():
        print(f"skipped: no MedQuAD dev set at {args.data} (pass --data)")
        return 0
    embedder = Embedder()
    print(f"embedder: {embedder.spec} ({embedder.resolved_backend})")
    results: dict = {"embedder_backend": embedder.resolved_backend}
    parts = {"quality": part_quality, "build": part_build, "latency": part_latency, "stores": part_stores,
             "stores-quality": part_stores_quality, "stores-speed": part_stores_speed}
    args.part = args.part or ("stores" if args.store == "milvus" else "quality,build,latency")
    for name in args.part.split(","):
        parts[name.strip()](args, embedder, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
