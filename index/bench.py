"""`make bench-index`: retrieval quality, build throughput and query latency, as Markdown tables.

    python -m index.bench [--data ../shared/data/medquad_dev] [--part quality,build,latency]
                          [--sizes 1000,10000,100000] [--queries 200] [--json FILE]
    python -m index.bench --part quality [--fit] [--noisy index/devsets/medquad_noisy.jsonl]

Quality: Recall@5 / MRR@10 / nDCG@10 for bm25, dense, hybrid with the fixed 50/50 fusion, the
adaptive hybrid (the default) and hybrid+rerank when a reranker is configured, on all MedQuAD dev
questions, plus reciprocal-rank fusion as the naive baseline. Then the same modes on sets nothing was
fitted on: the odd-numbered questions as written, the same rewritten in a consumer's voice by
index/noisy.py, and the hand-written consumer messages of index/devsets/. `--fit` refits the adaptive
fusion on the even-numbered questions first (index/fit_fusion.py) and reports with the new parameters.
Build: chunks/s for sentence-transformers and the int8 ONNX encoder side by side on the same
300-character chunks, and a full index build. Latency: p50/p95 per query including the query
embedding, exact flat vs HNSW, at each size; larger sizes are made from the real chunk vectors plus noise.
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
from index.store import IndexStore, build_index, make_vector_index

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "medquad_dev"
NOISY_DEVSET = Path(__file__).resolve().parent / "devsets" / "medquad_noisy.jsonl"


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
    heldout = {name: heldout_quality(searcher, fixed, qs) for name, qs in heldout_sets(args, questions).items()}
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
                 "hybrid": "hybrid, adaptive (default)"}


def heldout_quality(searcher: Searcher, fixed: Searcher, questions: list[dict]) -> dict:
    """Metrics per mode on one set, the adaptive gain over the best single mode (paired standard error),
    and the best any per-query weight could do (each question's best weight on the grid, in hindsight)."""
    runs = evaluate(searcher, questions, ["bm25", "dense", "hybrid"])
    runs.insert(2, replace(evaluate(fixed, questions, ["hybrid"])[0], mode="hybrid-fixed"))
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
                times = []
                for q in questions:
                    started = time.perf_counter()
                    searcher.search(q, k=5, mode=mode)
                    times.append((time.perf_counter() - started) * 1000)
                times.sort()
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m index.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a folder like ../shared/data/medquad_dev")
    p.add_argument("--part", default="quality,build,latency")
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
    parts = {"quality": part_quality, "build": part_build, "latency": part_latency}
    for name in args.part.split(","):
        parts[name.strip()](args, embedder, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
