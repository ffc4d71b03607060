"""Search an index: dense (FAISS), BM25 (bm25s), tuned hybrid fusion, optional cross-encoder rerank.

Hybrid search takes the top `depth` candidates of each retriever, scores every candidate with both
(exact cosine from the stored vectors, BM25 from the keyword index), scales the BM25 scores by the
query's best BM25 score and mixes the two with a fixed weight. The weight, depth and scaling were
tuned on the MedQuAD development questions (see `make bench-index` and the README); reciprocal-rank
fusion came out below dense search alone there.

Every hit carries its dense cosine; `min_score` applies to it, so "nothing relevant" means the same
thing in every mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from index.embed import Embedder
from index.rerank import Reranker
from index.store import IndexStore

# Cosine similarity below which a passage is taken as unrelated to the query. Chosen on the bundled
# embedder: on-topic policy questions score 0.40-0.75 against their passage, unrelated chit-chat < 0.25.
DEFAULT_MIN_SCORE = 0.30
MODES = ("hybrid", "dense", "bm25")


@dataclass
class FusionConfig:
    """How hybrid search mixes dense and BM25 scores (tuned on MedQuAD dev; see module doc)."""

    dense_weight: float = 0.5
    depth: int = 50
    rerank_depth: int = 20
    rerank_weight: float = 0.7  # share of the final score taken by the cross-encoder


@dataclass
class Hit:
    chunk_id: str
    source: str
    title: str
    text: str
    score: float
    page: int | None = None
    headings: list[str] = field(default_factory=list)
    content_hash: str = ""
    dense_score: float = 0.0
    bm25_score: float = 0.0
    rerank_score: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class Searcher:
    """Query one index with the embedder it was built with."""

    def __init__(self, store: IndexStore, embedder: Embedder, reranker: Reranker | None = None,
                 fusion: FusionConfig | None = None):
        if store.manifest.embedder != embedder.name:
            raise ValueError(
                f"index was built with embedder '{store.manifest.embedder}', not '{embedder.name}'"
            )
        self.store, self.embedder, self.reranker = store, embedder, reranker
        self.fusion = fusion or FusionConfig()

    def search(self, query: str, k: int = 5, min_score: float = 0.0, mode: str = "hybrid",
               rerank: bool = False, exclude: set[str] | None = None) -> list[Hit]:
        """Top-k passages with dense score >= min_score, best first, one per distinct text.

        `exclude` drops hits from those sources (as if the documents were not indexed; evaluation uses it).
        """
        return self.search_many([query], k=k, min_score=min_score, mode=mode, rerank=rerank, exclude=exclude)[0]

    def search_many(self, queries: Sequence[str], k: int = 5, min_score: float = 0.0,
                    mode: str = "hybrid", rerank: bool = False, exclude: set[str] | None = None) -> list[list[Hit]]:
        """Search several queries at once: one batched embedding call, then per-query fusion."""
        if mode not in MODES:
            raise ValueError(f"unknown search mode '{mode}': choose one of {', '.join(MODES)}")
        if rerank and self.reranker is None:
            raise ValueError("reranking asked for but no reranker is configured (--reranker or RA_RERANKER)")
        results: list[list[Hit]] = [[] for _ in queries]
        live = [i for i, q in enumerate(queries) if q.strip()]
        if not live or len(self.store) == 0:
            return results
        vectors = self.embedder.encode([queries[i] for i in live])
        depth = min(len(self.store), max(self.fusion.depth, 3 * k, k + 10))
        dense_scores, dense_rows = self.store.search_vectors(vectors, depth)
        for n, i in enumerate(live):
            ranked = self._rank(queries[i], vectors[n], dense_rows[n], dense_scores[n], depth, mode)
            if rerank:
                ranked = self._rerank(queries[i], ranked)
            results[i] = self._hits(ranked, k, min_score, exclude)
        return results

    def _rank(self, query: str, vector: np.ndarray, dense_rows: np.ndarray, dense_scores: np.ndarray,
              depth: int, mode: str) -> list[tuple[int, float, float, float]]:
        """Candidates as (row, fused score, dense cosine, bm25), best first."""
        keep = dense_rows >= 0
        dense_rows, dense_scores = dense_rows[keep], dense_scores[keep]
        bm25_all = self.store.bm25.scores(query) if mode != "dense" else None
        if mode == "dense":
            return [(int(r), float(s), float(s), 0.0) for r, s in zip(dense_rows, dense_scores, strict=True)]
        top = np.argpartition(-bm25_all, min(depth, len(bm25_all)) - 1)[:depth]
        top = top[bm25_all[top] > 0]
        if mode == "bm25":
            order = top[np.argsort(-bm25_all[top], kind="stable")]
            cosines = self.store.cosines(vector, order)
            return [(int(r), float(bm25_all[r]), float(c), float(bm25_all[r]))
                    for r, c in zip(order, cosines, strict=True)]
        rows = np.union1d(dense_rows, top)
        cosines = self.store.cosines(vector, rows)
        bm25 = bm25_all[rows]
        scale = float(bm25_all.max())
        bm25_norm = bm25 / scale if scale > 0 else bm25
        w = self.fusion.dense_weight
        fused = w * cosines + (1 - w) * bm25_norm
        order = np.argsort(-fused, kind="stable")
        return [(int(rows[j]), float(fused[j]), float(cosines[j]), float(bm25[j])) for j in order]

    def _rerank(self, query: str, ranked: list[tuple[int, float, float, float]]) -> list[tuple]:
        head = ranked[: self.fusion.rerank_depth]
        records = self.store.chunks(r for r, *_ in head)
        texts = [records[r]["text"] for r, *_ in head]
        scores = self.reranker.score(query, texts)
        top = max((s for _, s, *_ in head), default=1.0) or 1.0
        w = self.fusion.rerank_weight
        mixed = [(r, w * float(rs) + (1 - w) * s / top, d, b, float(rs))
                 for (r, s, d, b), rs in zip(head, scores, strict=True)]
        mixed.sort(key=lambda t: -t[1])
        return mixed + [(*t, None) for t in ranked[self.fusion.rerank_depth:]]

    def _hits(self, ranked: list[tuple], k: int, min_score: float, exclude: set[str] | None = None) -> list[Hit]:
        wanted = [t for t in ranked if t[2] >= min_score]
        wanted = wanted if exclude else wanted[: max(3 * k, k + 10)]
        records = self.store.chunks(t[0] for t in wanted)
        hits: list[Hit] = []
        seen: set[str] = set()
        for row, score, dense, bm25, *rest in wanted:
            record = records[row]
            if record["content_hash"] in seen or (exclude and record["source"] in exclude):
                continue
            seen.add(record["content_hash"])
            hits.append(Hit(chunk_id=record["chunk_id"], source=record["source"], title=record["title"],
                            text=record["text"], score=round(score, 4), page=record["page"],
                            headings=record["headings"], content_hash=record["content_hash"],
                            dense_score=round(dense, 4), bm25_score=round(bm25, 4),
                            rerank_score=round(rest[0], 4) if rest and rest[0] is not None else None))
            if len(hits) == k:
                break
        return hits
